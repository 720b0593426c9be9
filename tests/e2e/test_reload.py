"""Reloading a registry whose code is broken, on the real server: refused, and it lives on."""

from __future__ import annotations

import os
import re
import signal
from pathlib import Path

import httpx

from tests.helpers import run_trioshop
from trioshop.testing.server import running_server


def test_broken_code_is_refused_by_check_reload_and_sighup(
    tmp_path: Path, registry_copy: Path
) -> None:
    """Code raising at import: check exits 1, admin reload 422, SIGHUP logs, no trace anywhere."""
    code = tmp_path / "code"
    code.mkdir()
    (code / "exploding.py").write_text("raise RuntimeError('boom at import')\n")
    env = {"PYTHONPATH": os.pathsep.join([str(code), os.environ.get("PYTHONPATH", "")])}
    with running_server("--memory", "--registry", str(registry_copy), env=env) as server:
        processes = registry_copy / "processes.yaml"
        processes.write_text(
            processes.read_text().replace("trioshop.shop.notifier:run", "exploding:run")
        )
        checked = run_trioshop("check", "--registry", str(registry_copy), env=env)
        assert checked.returncode == 1
        assert "RuntimeError: boom at import" in checked.stderr
        assert "Traceback" not in checked.stderr

        with httpx.Client(base_url=server.base_url, timeout=10) as client:
            refused = client.post("/api/admin/registry/reload")
            assert refused.status_code == 422
            assert "boom at import" in refused.json()["error"]
            assert server.process is not None
            server.process.send_signal(signal.SIGHUP)
            server.wait_for_line(re.compile(r"registry reload refused.*boom at import"))
            assert client.get("/api/products").status_code == 200
            assert client.get("/healthz").status_code == 200
        assert server.terminate() == 0
    assert "Traceback" not in server.output()
