"""The chaos run, short: shoppers through HAProxy while nodes are killed with kill -9."""

from __future__ import annotations

from bench.chaos import parse_args, print_report, run_chaos
from tests.postgres import fresh_schema


def test_kill_nine_loses_no_data_and_fails_under_one_percent() -> None:
    """20 s of shopping with a node killed every 4 s: nothing lost or oversold, < 1 % failed."""
    with fresh_schema() as database:
        report = run_chaos(parse_args([
            "--seconds", "20", "--kill-every", "4", "--users", "20", "--database", database,
        ]))
    print_report(report)  # shown when the test fails
    failed = [check for check in report["checks"] if not check["ok"]]
    assert not failed, failed
    assert report["kills"]["count"] >= 3
    assert report["requests"]["overall"]["failed_pct"] < 1.0, report["requests"]["failures"]
    assert report["cluster_exit"] == 0
