"""What the cluster tests share: HAProxy (skipped without it, failed under CI), a registry."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

from tests.helpers import REGISTRY_DIR


@pytest.fixture(autouse=True)
def needs_haproxy() -> None:
    """Every test here runs a real HAProxy."""
    if shutil.which("haproxy") is None:
        if os.environ.get("CI"):
            pytest.fail("haproxy is required in CI (apt-get install haproxy)", pytrace=False)
        pytest.skip("haproxy is not installed (apt-get install haproxy)")


@pytest.fixture(scope="module")
def ample_registry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shipped registry with plenty of every product: no answer is out of stock."""
    folder = tmp_path_factory.mktemp("ample") / "registry"
    shutil.copytree(REGISTRY_DIR, folder)
    products = folder / "products.yaml"
    products.write_text(re.sub(r"stock: \d+", "stock: 1000000", products.read_text()))
    return folder


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shipped registry with 20 monitors and plenty of everything else."""
    folder = tmp_path_factory.mktemp("cluster") / "registry"
    shutil.copytree(REGISTRY_DIR, folder)
    products = folder / "products.yaml"
    text = re.sub(r"stock: \d+", "stock: 1000000", products.read_text())
    products.write_text(text.replace("sku: MON-004\n    price: 599.99\n    stock: 1000000",
                                      "sku: MON-004\n    price: 599.99\n    stock: 20"))
    return folder
