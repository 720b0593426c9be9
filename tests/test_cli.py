"""Tests of the command line: `trioshop check`, and `trioshop run` refusing what it cannot run."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import REGISTRY_DIR, run_trioshop
from trioshop.testing.server import running_server


def test_check_accepts_the_shipped_registry() -> None:
    """`trioshop check` exits 0 and summarises a valid registry."""
    result = run_trioshop("check", "--registry", str(REGISTRY_DIR))
    assert result.returncode == 0, result.stderr
    assert "5 products, 3 services" in result.stdout
    assert "service relay runs only when events_redis is set" in result.stdout


def test_check_names_file_and_entry_at_fault(registry_copy: Path) -> None:
    """A broken registry exits non-zero with the file and entry in the message."""
    products = registry_copy / "products.yaml"
    products.write_text(products.read_text().replace("sku: HP-005", "sku: 5"))
    result = run_trioshop("check", "--registry", str(registry_copy))
    assert result.returncode == 1
    assert f"{products}: entry 'app:product.headphones'" in result.stderr
    assert "field 'sku' must be a non-empty string" in result.stderr


def test_check_reports_unimportable_callables(registry_copy: Path) -> None:
    """A service naming a function that does not exist is refused by check."""
    processes = registry_copy / "processes.yaml"
    processes.write_text(processes.read_text().replace(
        "trioshop.shop.notifier:run", "trioshop.shop.notifier:missing"
    ))
    result = run_trioshop("check", "--registry", str(registry_copy))
    assert result.returncode == 1
    assert "entry 'app:notifier' (process.service)" in result.stderr
    assert "has no attribute 'missing'" in result.stderr


def test_check_lists_import_errors_with_structural_ones(registry_copy: Path) -> None:
    """A registry broken in its YAML, its structure and its code: check lists all, a line each."""
    products = registry_copy / "products.yaml"
    products.write_text(products.read_text().replace("sku: HP-005", "sku: 5"))
    processes = registry_copy / "processes.yaml"
    processes.write_text(processes.read_text().replace(
        "trioshop.shop.notifier:run", "trioshop.shop.notifier:missing"
    ))
    (registry_copy / "zz.yaml").write_text("version: 1\nnamespace: x\nentries: [\n  - a: b\n")
    result = run_trioshop("check", "--registry", str(registry_copy))
    assert result.returncode == 1
    header, *lines = result.stderr.splitlines()
    assert header == f"trioshop: invalid registry {registry_copy}:"
    assert len(lines) == 3, result.stderr
    assert "field 'sku' must be a non-empty string" in lines[0]
    assert "has no attribute 'missing'" in lines[2]
    assert f"{registry_copy / 'zz.yaml'}: invalid YAML at line 4, column 3:" in lines[1]


def test_bind_with_an_empty_host_listens_on_every_interface() -> None:
    """`--bind :PORT`, the registry's own form, is accepted and means all interfaces."""
    with running_server("--registry", str(REGISTRY_DIR), "--memory", "--bind", ":0") as server:
        assert server.base_url.startswith("http://0.0.0.0:")
        assert server.terminate() == 0


def test_help_names_every_command_in_plain_text() -> None:
    """`trioshop --help` names run, check, token and cluster, with no reStructuredText."""
    result = run_trioshop("--help")
    assert result.returncode == 0
    for command in ("run", "check", "token", "cluster"):
        assert command in result.stdout
    assert "``" not in result.stdout


def test_run_with_an_invalid_registry_exits_1(registry_copy: Path) -> None:
    """`trioshop run` on a broken registry fails like any failed start: exit 1, the problem."""
    products = registry_copy / "products.yaml"
    products.write_text(products.read_text().replace("stock: 50", "stock: -1"))
    result = run_trioshop(
        "run", "--registry", str(registry_copy), "--memory", "--bind", "127.0.0.1:0"
    )
    assert result.returncode == 1
    assert "entry 'app:product.laptop'" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("--log-level", "foo"),
        ("--max-live-carts", "0"),
        ("--read-timeout", "-1"),
        ("--checkout-timeout", "nan"),
        ("--cart-idle", "-5"),
        ("--connection-idle", "0"),
        ("--bind", "127.0.0.1:99999"),
        ("--bind", "nohost"),
        ("--events-stream", ""),
        ("--events-redis", "http://localhost:6379"),
        ("--events-maxlen", "0"),
        ("--otel-exporter", "jaeger"),
        ("--otel-exporter", "otlp:localhost:4318"),
        ("--otel-sample-ratio", "1.5"),
        ("--otel-sample-ratio", "nan"),
    ],
)
def test_run_refuses_bad_option_values(option: str, value: str) -> None:
    """A bad option value is refused before anything starts: exit 2, one line naming it."""
    result = run_trioshop("run", "--memory", option, value)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [result.stderr.strip()]
    assert result.stderr.startswith(f"trioshop run: error: argument {option}")
    assert "Traceback" not in result.stderr
    assert "listening" not in result.stdout


def test_cluster_without_haproxy_or_database_says_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`trioshop cluster` refuses in one line: no database (exit 2), no haproxy (exit 1)."""
    monkeypatch.delenv("TRIOSHOP_DATABASE", raising=False)
    env = {"PATH": str(tmp_path)}  # an empty PATH: no haproxy on it
    base = ("cluster", "--nodes", "2")
    no_database = run_trioshop(*base, env=env, timeout=None)
    assert no_database.returncode == 2
    assert "--database URL" in no_database.stderr
    no_proxy = run_trioshop(
        *base, "--database", "postgresql://postgres@127.0.0.1:5432/test", env=env
    )
    assert no_proxy.returncode == 1
    assert "apt-get install haproxy" in no_proxy.stderr
    assert "Traceback" not in no_proxy.stderr and "node started" not in no_proxy.stdout
