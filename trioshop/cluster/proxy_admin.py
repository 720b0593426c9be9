"""HAProxy's runtime API over its admin socket: drain a node, take it back, read its state."""

from __future__ import annotations

import csv

import attrs
import trio

# HAProxy answers a command at once; a socket that does not is a stuck proxy.
COMMAND_TIMEOUT = 5.0


class ProxyAdminError(RuntimeError):
    """The proxy's admin socket refused or did not answer a command."""


@attrs.frozen
class ProxyAdmin:
    """Commands to one HAProxy through its ``stats socket ... level admin``."""

    socket_path: str
    backend: str = "nodes"

    async def command(self, line: str) -> str:
        """Send one command and return the proxy's whole answer."""
        with trio.move_on_after(COMMAND_TIMEOUT):
            try:
                stream = await trio.open_unix_socket(self.socket_path)
            except OSError as exc:
                raise ProxyAdminError(f"cannot reach {self.socket_path}: {exc}") from exc
            async with stream:
                await stream.send_all(line.encode() + b"\n")
                answer = bytearray()
                async for chunk in stream:
                    answer += chunk
            return answer.decode(errors="replace")
        raise ProxyAdminError(f"{line!r} got no answer within {COMMAND_TIMEOUT:g} s")

    async def set_state(self, server: str, state: str) -> None:
        """``ready``, ``drain`` (no new requests) or ``maint`` (out of rotation)."""
        answer = await self.command(f"set server {self.backend}/{server} state {state}")
        if answer.strip():
            raise ProxyAdminError(f"set {server} {state}: {answer.strip()}")

    async def server(self, server: str) -> dict[str, str]:
        """The proxy's statistics row of *server*: ``scur`` (requests in flight on it),
        ``status`` (``UP``, ``DOWN``, ``DRAIN``, ``MAINT``...) and the rest."""
        rows = csv.DictReader((await self.command("show stat")).lstrip("# ").splitlines())
        for row in rows:
            if row.get("pxname") == self.backend and row.get("svname") == server:
                return row
        raise ProxyAdminError(f"the proxy has no server {self.backend}/{server}")
