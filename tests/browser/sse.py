"""Reading Server-Sent Events in tests: frames parsed from bytes, from any source of chunks."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import attrs


@attrs.frozen
class Frame:
    """One SSE frame: its event name, JSON data, id and retry (each ``None`` when absent)."""

    event: str | None
    data: Any
    id: str | None
    retry: int | None

    @property
    def seq(self) -> int:
        return int(self.data["seq"])


def parse_frame(block: str) -> Frame:
    fields: dict[str, str] = {}
    for line in block.split("\n"):
        if not line or line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        fields[name] = value[1:] if value.startswith(" ") else value
    data = json.loads(fields["data"]) if "data" in fields else None
    retry = int(fields["retry"]) if "retry" in fields else None
    return Frame(fields.get("event"), data, fields.get("id"), retry)


class FrameBuffer:
    """Collects chunks and hands out each complete frame once."""

    def __init__(self) -> None:
        self._text = ""

    def feed(self, chunk: bytes) -> Iterator[Frame]:
        self._text += chunk.decode()
        while "\n\n" in self._text:
            block, self._text = self._text.split("\n\n", 1)
            yield parse_frame(block)
