"""The store fixtures: one open store of each backend (memory, SQLite, PostgreSQL)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.store.support import BACKENDS, Opener, backend_opener
from trioshop.store import Store


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Opener]:
    """How to open a store of each backend, seeded with INITIAL_STOCK."""
    with backend_opener(request.param, tmp_path) as opener:
        yield opener


@pytest.fixture
async def store(backend: Opener) -> AsyncIterator[Store]:
    """An open store of each backend, seeded with INITIAL_STOCK, empty otherwise."""
    async with backend() as opened:
        yield opened
