"""The user authentication mode on the real server, with tokens from `trioshop token`."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.helpers import run_trioshop
from trioshop.testing.server import running_server

SECRET = "e2e-secret-0123456789abcdef012345"


def test_tokens_from_the_cli_open_only_their_users_cart() -> None:
    """`trioshop token alice` opens alice's cart on a server run with the secret; no token: 401."""
    env = {"TRIOSHOP_AUTH_SECRET": SECRET}
    minted = run_trioshop("token", "alice", env=env)
    assert minted.returncode == 0, minted.stderr
    token = minted.stdout.strip()
    with running_server("--memory", env=env) as server:
        with httpx.Client(base_url=server.base_url, timeout=10) as http:
            add = {"sku": "KB-002", "quantity": 1}
            refused = http.post("/api/cart/alice/items", json=add)
            assert refused.status_code == 401
            assert refused.headers["WWW-Authenticate"].startswith("Bearer")
            mine = {"Authorization": f"Bearer {token}"}
            assert http.post("/api/cart/alice/items", json=add, headers=mine).status_code == 200
            assert http.get("/api/cart/bob", headers=mine).status_code == 403
            assert http.get("/api/cart/alice", headers=mine).json()["total"] == 149.99
        assert server.terminate() == 0


def test_unusable_auth_options_are_refused_before_start(tmp_path: Path) -> None:
    """A short secret or an unreadable key file: exit 2 with one line, nothing listens."""
    short = run_trioshop("run", "--memory", "--auth-secret", "short")
    assert short.returncode == 2
    assert "32" in short.stderr and "Traceback" not in short.stderr
    missing = run_trioshop("run", "--memory", "--auth-public-key", str(tmp_path / "nope.pem"))
    assert missing.returncode == 2
    assert "cannot read" in missing.stderr and "Traceback" not in missing.stderr
    assert "listening" not in short.stdout + missing.stdout
