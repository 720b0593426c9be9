"""``trioshop run``: its options, its Settings, and the exit code of a node's run."""

from __future__ import annotations

import argparse
import os
import sys
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import attrs
import trio

from trioshop import logs
from trioshop.cli.options import (
    DATABASE_ENV,
    LOG_LEVELS,
    add_admin_token,
    add_registry,
    bind_address,
    count,
    database_url,
    default_of,
    idle_seconds,
    ip_address,
    leaves,
    load_registry_or_explain,
    ratio,
    redis_url,
    seconds,
    stream_name,
)
from trioshop.cli.options import otel_exporter as otel_exporter_option
from trioshop.config import DEFAULT_DATA_DIR, EVENTS_REDIS_ENV, OTEL_EXPORTER_ENV, Settings
from trioshop.http.auth import SECRET_ENV, UserAuth
from trioshop.http.serving import LifespanFailed, bind_sockets
from trioshop.node import bound_address, hypercorn_config, serve_node
from trioshop.store.dirlock import DataDirInUse, lock_data_dir
from trioshop.telemetry_sdk import process_tracing


def add_run_command(commands: Any) -> None:
    """The ``run`` subcommand on *commands* (``add_subparsers()``'s result)."""
    run = commands.add_parser("run", help="serve the shop over HTTP")
    add_registry(run)
    run.add_argument(
        "--bind", type=bind_address,
        help="HOST:PORT to listen on (default: the registry's http.service address)",
    )
    run.add_argument(
        "--node-id", metavar="ID",
        help="this node's name in the X-Served-By header of every answer (default: the bind "
        "address as given, HOST:PORT, with the port it got when PORT is 0)",
    )
    run.add_argument(
        "--read-timeout", type=seconds, default=default_of("read_timeout"),
        help="seconds a request waits for its cart's reply (default: %(default)s)",
    )
    run.add_argument(
        "--checkout-timeout", type=seconds, default=default_of("checkout_timeout"),
        help="seconds a checkout waits for its cart's reply (default: %(default)s)",
    )
    run.add_argument(
        "--max-live-carts", type=count, default=default_of("max_live_carts"),
        help="live cart actors at most; beyond, adds answer 503 (default: %(default)s)",
    )
    run.add_argument(
        "--data-dir",
        help=f"folder of the SQLite database; one server at a time (default: {DEFAULT_DATA_DIR}"
        f", unless ${DATABASE_ENV} is set)",
    )
    run.add_argument(
        "--database", type=database_url, metavar="URL",
        help="postgresql://user@host:port/db (add ?options=-csearch_path%%3DNAME for a schema): "
        "the PostgreSQL store many nodes can share, instead of SQLite in --data-dir "
        f"(default: ${DATABASE_ENV} unless --memory or --data-dir is given, else SQLite)",
    )
    run.add_argument(
        "--database-pool", type=count, default=default_of("database_pool_size"), metavar="N",
        help="PostgreSQL connections (and worker threads) of this node (default: %(default)s)",
    )
    run.add_argument(
        "--outbox-claim-timeout", type=seconds, default=default_of("outbox_claim_timeout"),
        metavar="S",
        help="PostgreSQL: seconds before an order a dead node claimed goes to another node "
        "(default: %(default)s)",
    )
    run.add_argument(
        "--memory", action="store_true",
        help="keep everything in memory: nothing survives a restart (benchmarks, demos); "
        "--memory, --data-dir and --database exclude each other",
    )
    run.add_argument(
        "--cart-idle", type=idle_seconds, default=default_of("cart_idle_timeout"),
        help="seconds without a message before a cart is passivated (0: never; "
        "default: %(default)s)",
    )
    run.add_argument(
        "--connection-idle", type=seconds, default=default_of("idle_connection_timeout"),
        help="seconds before an HTTP connection that sends nothing between requests is closed "
        "(default: %(default)s)",
    )
    add_admin_token(run, "without one, loopback clients asking for localhost only")
    run.add_argument(
        "--trusted-proxy", type=ip_address, action="append", default=[], metavar="ADDR",
        dest="trusted_proxies",
        help="a proxy in front whose X-Forwarded-For names the client (repeatable; default: "
        "none, the header is ignored)",
    )
    user_auth = run.add_mutually_exclusive_group()
    user_auth.add_argument(
        "--auth-secret", default=os.environ.get(SECRET_ENV), metavar="SECRET",
        help="require a bearer JWT signed HS256 with SECRET on every user's cart and order "
        f"route (default: ${SECRET_ENV}; none: user routes are open)",
    )
    user_auth.add_argument(
        "--auth-public-key", metavar="FILE",
        help="require a bearer JWT verified with this PEM public key (RSA: RS256, EC: ES256)",
    )
    run.add_argument(
        "--sqlite-synchronous", default=default_of("sqlite_synchronous"),
        choices=["NORMAL", "FULL"],
        help="FULL survives power loss; NORMAL survives process crashes only "
        "(default: %(default)s)",
    )
    run.add_argument(
        "--events-redis", type=redis_url, default=os.environ.get(EVENTS_REDIS_ENV) or None,
        metavar="URL",
        help="redis://host:port/db: publish every order to a Redis stream too (default: "
        f"${EVENTS_REDIS_ENV}; none: orders stay inside the shop)",
    )
    run.add_argument(
        "--events-stream", type=stream_name, default=default_of("events_stream"),
        metavar="NAME",
        help="the Redis stream orders are published to (default: %(default)s)",
    )
    run.add_argument(
        "--events-maxlen", type=count, default=default_of("events_maxlen"), metavar="N",
        help="entries the stream keeps, about (XADD MAXLEN ~; default: %(default)s)",
    )
    run.add_argument(
        "--otel-exporter", type=otel_exporter_option,
        default=os.environ.get(OTEL_EXPORTER_ENV) or None,
        metavar="console|otlp-file:PATH|otlp:URL",
        help=f"trace requests, actors, store batches and services with OpenTelemetry, to the "
        f"console, a file of OTLP JSON lines or an OTLP/HTTP collector (default: "
        f"${OTEL_EXPORTER_ENV}; none: off)",
    )
    run.add_argument(
        "--otel-sample-ratio", type=ratio, default=default_of("otel_sample_ratio"),
        metavar="R",
        help="share of new traces sampled, 0 to 1; a request with a traceparent follows its "
        "parent's choice (default: %(default)s)",
    )
    run.add_argument(
        "--log-level", default="info", choices=LOG_LEVELS,
        help="least severe level logged (default: %(default)s)",
    )
    run.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    store = _store_choice(args)
    if store is None:
        return 2
    try:
        # An explicit --auth-public-key wins over a secret from the environment.
        secret = None if args.auth_public_key else args.auth_secret
        auth = UserAuth.from_options(secret=secret, public_key_file=args.auth_public_key)
    except ValueError as exc:
        print(f"trioshop run: error: {exc}", file=sys.stderr)
        return 2
    logs.configure(args.log_level.upper())
    registry = load_registry_or_explain(args.registry)
    if registry is None:
        return 1
    bind = args.bind or registry.http_service.bind
    data_dir, database = store
    settings = Settings(
        read_timeout=args.read_timeout,
        checkout_timeout=args.checkout_timeout,
        max_live_carts=args.max_live_carts,
        cart_idle_timeout=args.cart_idle or None,
        idle_connection_timeout=args.connection_idle,
        data_dir=data_dir,
        database_url=database,
        database_pool_size=args.database_pool,
        outbox_claim_timeout=args.outbox_claim_timeout,
        sqlite_synchronous=args.sqlite_synchronous,
        admin_token=args.admin_token or None,
        trusted_proxies=args.trusted_proxies,
        events_redis=args.events_redis,
        events_stream=args.events_stream,
        events_maxlen=args.events_maxlen,
        otel_exporter=args.otel_exporter,
        otel_sample_ratio=args.otel_sample_ratio,
    )
    config = hypercorn_config(settings, bind)
    with ExitStack() as held:
        try:
            if data_dir is not None and database is None:  # one server per SQLite folder
                held.enter_context(lock_data_dir(Path(data_dir)))
        except (DataDirInUse, OSError) as exc:
            print(f"trioshop: cannot use --data-dir {data_dir}: {exc}", file=sys.stderr)
            return 1
        try:  # the port is taken before the shop starts: nothing to undo if it is in use
            sockets = bind_sockets(config)
        except OSError as exc:
            print(f"trioshop: cannot listen on {bind}: {exc}; choose another --bind",
                  file=sys.stderr)
            return 1
        for sock in sockets:
            held.enter_context(sock)
        settings = attrs.evolve(settings, node_id=args.node_id or bound_address(bind, sockets))
        try:  # exported and flushed from the SDK's own thread; shut down after the node's run
            held.enter_context(process_tracing(settings))
        except OSError as exc:
            print(f"trioshop: cannot write traces to {settings.otel_exporter}: {exc}; choose "
                  "a writable otlp-file:PATH", file=sys.stderr)
            return 1
        try:
            trio.run(serve_node, registry, settings, config, sockets, auth)
        except KeyboardInterrupt:
            return _interrupted()
        except BaseExceptionGroup as group:
            interrupted, rest = group.split(KeyboardInterrupt)
            if interrupted is not None and rest is None:
                return _interrupted()
            problem = _startup_problem(group)
            if problem is None:
                raise
            print(f"trioshop: {problem}", file=sys.stderr)
            return 1
    return 0


def _store_choice(args: argparse.Namespace) -> tuple[str | None, str | None] | None:
    """(data_dir, database_url) from --memory, --data-dir, --database and $TRIOSHOP_DATABASE;
    ``None`` (after saying why on stderr) when more than one was given or the variable is bad.

    The variable is the default of --database only: an explicit --memory or --data-dir wins.
    """
    given = [name for name, value in (
        ("--memory", args.memory), ("--data-dir", args.data_dir), ("--database", args.database),
    ) if value]
    if len(given) > 1:
        print(
            f"trioshop run: error: {' and '.join(given)} given together: give one of "
            "--memory, --data-dir and --database", file=sys.stderr,
        )
        return None
    if args.memory:
        return None, None
    if args.data_dir is not None:
        return args.data_dir, None
    database = args.database or os.environ.get(DATABASE_ENV) or None
    if database is not None and not args.database:
        try:
            database_url(database)
        except argparse.ArgumentTypeError as exc:
            print(f"trioshop run: error: ${DATABASE_ENV}: {exc}", file=sys.stderr)
            return None
    return (None if database else DEFAULT_DATA_DIR), database


def _interrupted() -> int:
    """A second Ctrl-C during a graceful shutdown: stop at once, say so, no traceback."""
    print("trioshop: interrupted before the graceful shutdown finished", file=sys.stderr)
    return 130  # 128 + SIGINT, as shells report it


def _startup_problem(group: BaseExceptionGroup[BaseException]) -> str | None:
    """A one-line explanation when *group* is only a failed start, else ``None``."""
    matched, rest = group.split(LifespanFailed)
    if matched is None or rest is not None:
        return None
    return "; ".join(
        f"the shop could not start: {failure}"
        for failure in leaves(matched) if isinstance(failure, LifespanFailed)
    )
