"""Shared fixtures: the shipped registry, a writable copy of it, and an in-process app."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.helpers import REGISTRY_DIR, ShopClient, open_shop_client
from trioshop.registry import Registry, load_registry

TESTS_DIR = Path(__file__).parent
# What is marked slow, by folder or file under tests/: each test runs real servers, clusters,
# PostgreSQL restarts or a browser (seconds to minutes). `make test-fast` (-m "not slow")
# leaves them out and runs the rest in under a minute; `make test` runs everything.
SLOW = ("e2e/", "cluster/", "browser/test_pages.py", "browser/test_live_stream.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark the tests under SLOW with the ``slow`` marker."""
    for item in items:
        path = item.path
        if path.is_relative_to(TESTS_DIR) and (
            path.relative_to(TESTS_DIR).as_posix().startswith(SLOW)
        ):
            item.add_marker(pytest.mark.slow)


@pytest.fixture
def registry() -> Registry:
    return load_registry(REGISTRY_DIR)


@pytest.fixture
def registry_copy(tmp_path: Path) -> Path:
    """A writable copy of the shipped registry folder."""
    folder = tmp_path / "registry"
    shutil.copytree(REGISTRY_DIR, folder)
    return folder


@pytest.fixture
async def shop_client(registry: Registry) -> AsyncIterator[ShopClient]:
    async with open_shop_client(registry) as client:
        yield client
