"""What the trioshop commands share: the values their options accept (each refused in one
line), and loading the registry."""

from __future__ import annotations

import argparse
import math
import os
import sys
from typing import Any, NoReturn

import attrs

from trioshop.config import (
    ADMIN_TOKEN_ENV,
    DEFAULT_REGISTRY,
    IPAddress,
    Settings,
    parse_exporter,
    parse_ip,
)
from trioshop.registry import Registry, RegistryError
from trioshop.registry.entries import listen_address
from trioshop.shop import load_runnable_registry

LOG_LEVELS = ["debug", "info", "warning", "error"]
DATABASE_ENV = "TRIOSHOP_DATABASE"


class OneLineErrors(argparse.ArgumentParser):
    """An argument parser that refuses a bad command line in one line on stderr, exit 2:
    ``trioshop run: error: argument --bind: ...`` (``--help`` shows the usage)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def default_of(name: str) -> Any:
    """The default of a :class:`Settings` field: the command line states no figure of its own."""
    return attrs.fields_dict(Settings)[name].default


def seconds(text: str) -> float:
    """A positive, finite number of seconds."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}")
    return value


def idle_seconds(text: str) -> float:
    """A non-negative number of seconds; 0 turns passivation off."""
    try:
        return 0.0 if float(text) == 0 else seconds(text)
    except (ValueError, argparse.ArgumentTypeError):
        raise argparse.ArgumentTypeError(
            f"expected 0 (never) or a positive number of seconds, got {text!r}"
        ) from None


def count(text: str) -> int:
    """A positive whole number."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {text!r}")
    return value


def bind_address(text: str) -> str:
    """``HOST:PORT`` or ``:PORT`` (all interfaces) with a port from 0 (any free one) to 65535;
    returned as ``HOST:PORT``."""
    _, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise argparse.ArgumentTypeError(
            f"expected HOST:PORT or :PORT with a port from 0 to 65535, got {text!r}"
        )
    return listen_address(text)


def secret_file(path: str) -> str:
    """The first line of the file at *path*, stripped: a token kept out of the process list."""
    try:
        with open(path, encoding="utf-8") as file:
            secret = file.readline().strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise argparse.ArgumentTypeError(f"cannot read {path!r}: {exc}") from None
    if not secret:
        raise argparse.ArgumentTypeError(f"{path!r} holds no token on its first line")
    return secret


def admin_token(text: str) -> str:
    """A non-empty admin token: an empty one is a mistake, never "no token"."""
    if not text.strip():
        raise argparse.ArgumentTypeError(
            f"the admin token is empty: give a token, or leave out --admin-token and unset "
            f"{ADMIN_TOKEN_ENV} for loopback-only admin access"
        )
    return text


def add_admin_token(parser: argparse.ArgumentParser, default_help: str) -> None:
    """``--admin-token`` (default ``$TRIOSHOP_ADMIN_TOKEN``) or ``--admin-token-file``."""
    admin = parser.add_mutually_exclusive_group()
    admin.add_argument(
        "--admin-token", type=admin_token, default=os.environ.get(ADMIN_TOKEN_ENV),
        help=f"bearer token for /api/admin/* and /ops (default: ${ADMIN_TOKEN_ENV}; "
        f"{default_help})",
    )
    admin.add_argument(
        "--admin-token-file", type=secret_file, dest="admin_token", metavar="FILE",
        help="read the admin token from FILE instead (keeps it out of the process list)",
    )


def ip_address(text: str) -> IPAddress:
    """An IPv4 or IPv6 address (parsed as :class:`~trioshop.config.Settings` does)."""
    try:
        return parse_ip(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def database_url(text: str) -> str:
    """A ``postgresql://`` (or ``postgres://``) URL."""
    if not text.startswith(("postgresql://", "postgres://")):
        raise argparse.ArgumentTypeError(
            f"expected a URL such as postgresql://user@host:5432/db, got {text!r}"
        )
    return text


def redis_url(text: str) -> str:
    """A ``redis://``, ``rediss://`` or ``unix://`` URL."""
    if not text.startswith(("redis://", "rediss://", "unix://")):
        raise argparse.ArgumentTypeError(
            f"expected a URL such as redis://127.0.0.1:6379/0, got {text!r}"
        )
    return text


def stream_name(text: str) -> str:
    """A Redis stream's name: any non-empty text."""
    if not text:
        raise argparse.ArgumentTypeError("expected a stream name such as trioshop.orders")
    return text


def otel_exporter(text: str) -> str:
    """``console``, ``otlp-file:PATH`` or ``otlp:URL`` (as :func:`~trioshop.config.parse_exporter`
    reads it)."""
    try:
        parse_exporter(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def ratio(text: str) -> float:
    """A number from 0 to 1."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number from 0 to 1, got {text!r}")
    return value


def add_registry(parser: argparse.ArgumentParser) -> None:
    """``--registry DIR``."""
    parser.add_argument(
        "--registry", default=DEFAULT_REGISTRY, help="registry folder (default: %(default)s)"
    )


def load_registry_or_explain(folder: str) -> Registry | None:
    """The runnable registry in *folder*, or ``None`` after listing its problems on stderr,
    one line each."""
    try:
        return load_runnable_registry(folder)
    except RegistryError as exc:
        problems = exc.problems
    print(f"trioshop: invalid registry {folder}:", file=sys.stderr)
    for problem in problems:
        print(f"  {problem}", file=sys.stderr)
    return None


def leaves(error: BaseException) -> list[BaseException]:
    """The exceptions inside *error*, however deep its groups nest."""
    if isinstance(error, BaseExceptionGroup):
        return [leaf for inner in error.exceptions for leaf in leaves(inner)]
    return [error]
