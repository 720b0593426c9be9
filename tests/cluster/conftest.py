"""What the cluster tests share: HAProxy (skipped without it, failed under CI), a registry."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.helpers import REGISTRY_DIR, required
from trioshop.testing.registry import registry_with_stock


@pytest.fixture(autouse=True)
def needs_haproxy() -> None:
    """Every test here runs a real HAProxy."""
    if shutil.which("haproxy") is None:
        required(
            "haproxy is not installed (apt-get install haproxy)",
            ci_message="haproxy is required in CI (apt-get install haproxy)",
            pytrace=False,
        )


@pytest.fixture(scope="module")
def ample_registry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shipped registry with plenty of every product: no answer is out of stock."""
    folder = tmp_path_factory.mktemp("ample") / "registry"
    return registry_with_stock(REGISTRY_DIR, folder, 1_000_000)


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shipped registry with 20 monitors and plenty of everything else."""
    folder = tmp_path_factory.mktemp("cluster") / "registry"
    return registry_with_stock(REGISTRY_DIR, folder, 1_000_000, {"MON-004": 20})
