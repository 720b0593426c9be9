"""The trioshop command: run serves the shop over HTTP, check validates a registry folder,
token prints a bearer token for local testing, cluster runs nodes behind HAProxy."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from trioshop.cli.cluster import add_cluster_command
from trioshop.cli.options import OneLineErrors, add_registry, count, load_registry_or_explain
from trioshop.cli.run import add_run_command
from trioshop.http.auth import DEFAULT_TTL_SECONDS, SECRET_ENV, mint_token


def build_parser() -> argparse.ArgumentParser:
    """The ``trioshop`` command line: run, cluster, token and check."""
    parser = OneLineErrors(
        prog="trioshop", description=__doc__,
        epilog="'trioshop COMMAND --help' lists the options of one command.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    add_run_command(commands)
    add_cluster_command(commands)

    token = commands.add_parser(
        "token", help="print an HS256 bearer token for a user, for local testing"
    )
    token.add_argument("user_id", metavar="USER_ID")
    token.add_argument(
        "--secret", default=os.environ.get(SECRET_ENV),
        help=f"the server's --auth-secret (default: ${SECRET_ENV})",
    )
    token.add_argument(
        "--ttl", type=count, default=DEFAULT_TTL_SECONDS,
        help="seconds the token stays valid (default: %(default)s)",
    )
    token.set_defaults(handler=_token)

    check = commands.add_parser("check", help="validate a registry folder and exit")
    add_registry(check)
    check.set_defaults(handler=_check)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command *argv* (default: ``sys.argv``) names; returns its exit code."""
    args = build_parser().parse_args(argv)
    return int(args.handler(args))


def _token(args: argparse.Namespace) -> int:
    if args.secret is None:
        print(f"trioshop: pass --secret SECRET or set {SECRET_ENV}", file=sys.stderr)
        return 2
    try:
        print(mint_token(args.secret, args.user_id, args.ttl))
    except ValueError as exc:
        print(f"trioshop: {exc}", file=sys.stderr)
        return 2
    return 0


def _check(args: argparse.Namespace) -> int:
    registry = load_registry_or_explain(args.registry)
    if registry is None:
        return 1
    print(
        f"registry {args.registry} is valid: {len(registry)} entries, "
        f"{len(registry.products)} products, {len(registry.services)} services"
    )
    for service in registry.services:
        if service.enabled_by is not None:
            print(f"service {service.name} runs only when {service.enabled_by} is set")
    return 0
