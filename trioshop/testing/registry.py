"""Registry copies for tests and benchmarks: the shipped catalog with the stock they need."""

from __future__ import annotations

import re
import shutil
from collections.abc import Mapping
from pathlib import Path

# A product's stock line, after its sku line (the shipped files write sku, price, stock).
_PRODUCT_STOCK = re.compile(r"(?m)^(\s*sku:\s*(\S+)\s*\n(?:\s*price:.*\n)?\s*stock:\s*)\d+\s*$")


def registry_with_stock(
    source: Path, folder: Path, stock: int, overrides: Mapping[str, int] | None = None
) -> Path:
    """Copy the registry folder *source* to *folder* with every product's stock at *stock*,
    or at ``overrides[sku]``; returns *folder*. Raises :class:`RuntimeError` if a SKU in
    *overrides* (or any product at all) was not found."""
    shutil.copytree(source, folder)
    wanted = dict(overrides or {})
    seen: set[str] = set()

    def restock(match: re.Match[str]) -> str:
        seen.add(match.group(2))
        return f"{match.group(1)}{wanted.get(match.group(2), stock)}"

    for path in sorted(folder.glob("*.yaml")):
        text, count = _PRODUCT_STOCK.subn(restock, path.read_text())
        if count:
            path.write_text(text)
    missing = set(wanted) - seen
    if not seen or missing:
        raise RuntimeError(f"no product stock line found for {sorted(missing) or 'any SKU'}")
    return folder
