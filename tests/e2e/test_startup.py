"""The real `trioshop run` starting: what a good start says, and refusals in one line on
stderr, exit 1 or 2, nothing served."""

from __future__ import annotations

import re
import socket
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.helpers import REGISTRY_DIR, run_trioshop
from trioshop import events
from trioshop.logs import event_field, event_pattern
from trioshop.testing.server import running_server

# The port-in-use start used to crash now and then (a segmentation fault: the SQLite store was
# closed while a service's read thread still ran): this many starts catch it.
BUSY_PORT_STARTS = 20


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A loopback port some other socket listens on for the whole test."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        yield taken.getsockname()[1]


def _refused(result: subprocess.CompletedProcess[str], code: int = 1) -> str:
    """The one ``trioshop`` line of a refused start, after checking nothing else was said."""
    assert result.returncode == code, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("trioshop"), result.stderr
    for unwanted in ("Traceback", "Lifespan failure", event_field(events.LISTENING)):
        assert unwanted not in result.stdout + result.stderr
    return lines[0]


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return run_trioshop("run", "--registry", str(REGISTRY_DIR), *args, env=env)


def test_busy_port_refuses_every_time_before_the_shop_starts(
    busy_port: int, tmp_path: Path
) -> None:
    """A port in use: exit 1 and one line, every time, and the shop never starts."""
    for _ in range(BUSY_PORT_STARTS):
        result = _run("--data-dir", str(tmp_path), "--bind", f"127.0.0.1:{busy_port}")
        line = _refused(result)
        assert f"cannot listen on 127.0.0.1:{busy_port}" in line
        assert "shop started" not in result.stdout


def test_unusable_data_dir_refuses_in_one_line(tmp_path: Path) -> None:
    """A --data-dir that cannot be created: exit 1, one line naming it."""
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    line = _refused(_run("--data-dir", str(blocker / "data"), "--bind", "127.0.0.1:0"))
    assert str(blocker / "data") in line


def test_database_from_a_newer_trioshop_refuses_in_one_line(tmp_path: Path) -> None:
    """A SQLite database at a newer schema version: exit 1, one line saying so."""
    with sqlite3.connect(tmp_path / "trioshop.sqlite3") as conn:
        conn.execute("PRAGMA user_version = 999")
    line = _refused(_run("--data-dir", str(tmp_path), "--bind", "127.0.0.1:0"))
    assert "the shop could not start" in line
    assert "schema version 999" in line


def test_second_server_on_one_data_dir_refuses(tmp_path: Path) -> None:
    """A second server on a --data-dir in use exits 1 naming the first one's pid."""
    with running_server(
        "--registry", str(REGISTRY_DIR), "--data-dir", str(tmp_path)
    ) as first:
        assert first.process is not None
        line = _refused(_run("--data-dir", str(tmp_path), "--bind", "127.0.0.1:0"))
        assert f"pid {first.process.pid}" in line
        assert first.terminate() == 0
    # Once the first has stopped the folder is free again.
    with running_server("--registry", str(REGISTRY_DIR), "--data-dir", str(tmp_path)) as again:
        assert again.terminate() == 0


@pytest.mark.parametrize(
    "options",
    [
        ("--memory", "--database", "postgresql://postgres@127.0.0.1:5432/test"),
        ("--memory", "--data-dir", "somewhere"),
        ("--data-dir", "somewhere", "--database", "postgresql://postgres@127.0.0.1:5432/test"),
    ],
)
def test_two_store_options_are_refused(options: tuple[str, ...]) -> None:
    """--memory, --data-dir and --database together: exit 2, one line, nothing started."""
    line = _refused(_run(*options, "--bind", "127.0.0.1:0"), code=2)
    assert "give one of --memory, --data-dir and --database" in line


def test_data_dir_wins_over_the_database_environment_variable(tmp_path: Path) -> None:
    """With $TRIOSHOP_DATABASE set, an explicit --data-dir still runs on SQLite there."""
    with running_server(
        "--registry", str(REGISTRY_DIR), "--data-dir", str(tmp_path),
        env={"TRIOSHOP_DATABASE": "postgresql://nobody@127.0.0.1:1/none"},
    ) as server:
        store = re.escape(str(tmp_path))
        server.wait_for_line(event_pattern(events.SHOP_STARTED, rf".* store={store}"))
        assert server.terminate() == 0


def test_listening_line_names_the_pid_and_the_bound_port() -> None:
    """A start on port 0 logs its OS pid and real port, and answers as the real address."""
    with running_server("--registry", str(REGISTRY_DIR), "--memory") as server:
        assert server.process is not None
        line = server.wait_for_line(event_pattern(events.LISTENING, r" .*")).group(0)
        assert f"pid={server.process.pid}" in line
        host, port = server.address
        served_by = httpx.get(f"{server.base_url}/healthz", timeout=10).headers["X-Served-By"]
        assert served_by == f"{host}:{port}"
        assert server.terminate() == 0
