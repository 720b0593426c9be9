"""PostgreSQL restarted under load, on a private server: a node answers 503 + Retry-After while
it is down, is not ready, recovers by itself, and loses or invents nothing."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import attrs
import httpx
import pytest

from tests.helpers import REGISTRY_DIR, required
from trioshop.testing.server import free_port, running_server

USERS = [f"u{n}" for n in range(8)]


def _unavailable(reason: str) -> NoReturn:
    """Skip with *reason*; fail when ``CI`` is set."""
    required(reason, ci_message=f"a private PostgreSQL is required in CI: {reason}", pytrace=False)


@attrs.define
class PrivatePostgres:
    """A PostgreSQL server of this test's own (initdb + pg_ctl): it may be stopped at will."""

    bin: Path
    data: Path
    port: int

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def ctl(self, *args: str) -> None:
        command = [str(self.bin / "pg_ctl"), "-D", str(self.data), "-w", *args]
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=True, capture_output=True, timeout=60)

    def start(self) -> None:
        options = f"-p {self.port} -k {self.data} -c listen_addresses=127.0.0.1 -c fsync=off"
        self.ctl("-o", options, "-l", str(self.data / "log"), "start")

    def stop(self) -> None:
        self.ctl("-m", "fast", "stop")


@pytest.fixture
def postgres() -> Iterator[PrivatePostgres]:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb")) or [shutil.which("initdb")]
    if not found or found[-1] is None:
        _unavailable("no initdb to run a private PostgreSQL (apt-get install postgresql)")
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        _unavailable("running as root without runuser")
    bin_dir = Path(str(found[-1])).parent
    scratch = Path(tempfile.mkdtemp(prefix="trioshop-pg-", dir="/tmp"))
    data = scratch / "data"
    try:
        scratch.chmod(0o755)
        data.mkdir()
        if os.geteuid() == 0:
            shutil.chown(data, "postgres", "postgres")
        init = [str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust"]
        if os.geteuid() == 0:
            init = ["runuser", "-u", "postgres", "--", *init]
        subprocess.run(init, check=True, capture_output=True, timeout=120)
        server = PrivatePostgres(bin_dir, data, free_port())
        server.start()
        try:
            yield server
        finally:
            subprocess.run(
                ["runuser", "-u", "postgres", "--", str(bin_dir / "pg_ctl"), "-D", str(data),
                 "-m", "immediate", "stop"] if os.geteuid() == 0 else
                [str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                capture_output=True, timeout=60, check=False,
            )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


@attrs.define
class Shopper:
    """Adds keyboards for a few users, one request after another, until told to stop."""

    http: httpx.Client
    answers: list[tuple[str, int, str, float, str | None]] = attrs.field(factory=list)
    stop: threading.Event = attrs.field(factory=threading.Event)

    def run(self) -> None:
        n = 0
        while not self.stop.is_set():
            user = USERS[n % len(USERS)]
            n += 1
            started = time.monotonic()
            reply = self.http.post(f"/api/cart/{user}/items", json={"sku": "KB-002"})
            self.answers.append((
                user, reply.status_code, reply.text, time.monotonic() - started,
                reply.headers.get("Retry-After"),
            ))

    def count(self, status: int) -> int:
        return sum(1 for answer in self.answers if answer[1] == status)


def until(condition: object, what: str, timeout: float = 60.0) -> None:
    """Keep acting (each check is a request) until *condition*() holds."""
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"still waiting for {what}"


def test_database_restart_under_load(postgres: PrivatePostgres, tmp_path: Path) -> None:
    """PostgreSQL down: 503 with Retry-After, never a 500 or a hang; back: it recovers alone."""
    # While down, /readyz is 503 too. Once back, every acknowledged add is there and no
    # refused one appeared.
    with running_server("--registry", str(REGISTRY_DIR), "--database", postgres.url) as node:
        http = httpx.Client(base_url=node.base_url, timeout=30)
        probe = httpx.Client(base_url=node.base_url, timeout=30)
        shopper = Shopper(http)
        worker = threading.Thread(target=shopper.run)
        worker.start()
        try:
            until(lambda: shopper.count(200) >= 30, "adds before the outage")
            postgres.stop()
            until(lambda: probe.get("/readyz").status_code == 503, "/readyz to say not ready")
            down = len(shopper.answers)
            until(lambda: shopper.count(503) >= 10, "503s while the database is down")
            postgres.start()
            until(lambda: probe.get("/readyz").status_code == 200, "the node to recover")
            back = shopper.count(200)
            until(lambda: shopper.count(200) >= back + 30, "adds after the outage")
        finally:
            shopper.stop.set()
            worker.join(timeout=60)
        statuses = Counter(answer[1] for answer in shopper.answers)
        assert set(statuses) <= {200, 503, 504}, statuses
        assert statuses[503] >= 10 and len(shopper.answers) > down
        for _, status, text, seconds, retry_after in shopper.answers:
            assert seconds < 15, "a request hung past its deadlines"
            if status == 503:
                assert retry_after is not None
            if status == 504:
                assert "may have been applied" in text or "nothing was changed" in text
        for user in USERS:
            mine = [a for a in shopper.answers if a[0] == user]
            acknowledged = sum(1 for a in mine if a[1] == 200)
            maybe = sum(1 for a in mine if a[1] == 504 and "may have been applied" in a[2])
            items = http.get(f"/api/cart/{user}").json()["items"]
            quantity = items[0]["quantity"] if items else 0
            # Every acknowledged add is there; a 503'd one never is; a maybe may be.
            assert acknowledged <= quantity <= acknowledged + maybe, (user, Counter(
                a[1] for a in mine
            ))
        assert node.terminate() == 0
    traced = [line for line in node.lines if "Traceback" in line]
    assert not traced, traced[0][:3000]
