"""Shared fixtures: the shipped registry, a writable copy of it, and an in-process app."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.helpers import REGISTRY_DIR, ShopClient, open_shop_client
from trioshop.registry import Registry, load_registry


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
