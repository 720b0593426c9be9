"""The trioshop command: run serves the shop over HTTP, check validates a registry folder,
token prints a bearer token for local testing, cluster runs nodes behind HAProxy."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import tempfile
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path

import attrs
import trio

from trioshop import logs
from trioshop.cli_options import (
    DATABASE_ENV,
    LOG_LEVELS,
    OneLineErrors,
    add_admin_token,
    bind_address,
    count,
    database_url,
    default_of,
    idle_seconds,
    ip_address,
    seconds,
)
from trioshop.cluster.proxy_admin import ProxyAdminError
from trioshop.cluster.runner import (
    Cluster,
    ClusterConfig,
    ClusterError,
    NodeStartError,
    node_arguments,
)
from trioshop.config import DEFAULT_DATA_DIR, DEFAULT_REGISTRY, Settings
from trioshop.http.auth import DEFAULT_TTL_SECONDS, SECRET_ENV, UserAuth, mint_token
from trioshop.http.serving import LifespanFailed, bind_sockets
from trioshop.logs import log_event
from trioshop.node import bound_address, hypercorn_config, serve_node
from trioshop.registry import Registry, RegistryError
from trioshop.shop import load_runnable_registry
from trioshop.store.dirlock import DataDirInUse, lock_data_dir

logger = logging.getLogger("trioshop.server")


def _load(folder: str) -> Registry | None:
    try:
        return load_runnable_registry(folder)
    except RegistryError as exc:
        problems = exc.problems
    print(f"trioshop: invalid registry {folder}:", file=sys.stderr)
    for problem in problems:
        print(f"  {problem}", file=sys.stderr)
    return None


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
    registry = _load(args.registry)
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
        node_id = args.node_id or bound_address(bind, sockets)
        try:
            trio.run(serve_node, registry, attrs.evolve(settings, node_id=node_id), config,
                     sockets, auth)
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
        f"the shop could not {'start' if failure.phase == 'startup' else 'stop cleanly'}: "
        f"{failure}" for failure in _leaves(matched) if isinstance(failure, LifespanFailed)
    )


def _cluster(args: argparse.Namespace) -> int:
    logs.configure("INFO")
    if args.database is None:
        print(
            "trioshop cluster: the nodes need a shared PostgreSQL database: pass --database URL "
            f"or set {DATABASE_ENV}", file=sys.stderr,
        )
        return 2
    registry = _load(args.registry)
    if registry is None:
        return 1
    with tempfile.TemporaryDirectory(prefix="trioshop-cluster-") as scratch:
        config = ClusterConfig(
            nodes=args.nodes,
            bind=args.bind or registry.http_service.bind,
            database=args.database,
            registry=args.registry,
            config_path=Path(args.config or Path(scratch) / "haproxy.cfg"),
            node_args=tuple(node_arguments(args.node_args)),
            admin_token=args.admin_token,
            api_prefix=registry.router.prefix,
        )
        try:
            trio.run(_run_cluster, config)
        except (ClusterError, BaseExceptionGroup) as exc:
            failures = _leaves(exc)
            if not all(isinstance(f, ClusterError) for f in failures):
                raise
            print(f"trioshop cluster: {failures[0]}", file=sys.stderr)
            return 1
    return 0


def _leaves(error: BaseException) -> list[BaseException]:
    """The exceptions inside *error*, however deep its groups nest."""
    if isinstance(error, BaseExceptionGroup):
        return [leaf for inner in error.exceptions for leaf in _leaves(inner)]
    return [error]


async def _run_cluster(config: ClusterConfig) -> None:
    """The cluster until SIGINT or SIGTERM, which stop it cleanly, during startup too: the
    proxy stops accepting and finishes its requests, then the nodes stop (a second signal
    stops the proxy without waiting for its requests). SIGHUP restarts its nodes one at a
    time (see ``Cluster.rolling_restart``)."""
    stop = trio.Event()
    cluster = Cluster(config)
    # Listening before anything starts: a signal during startup stops what started.
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as signals:

        async def watch_signals() -> None:
            async with trio.open_nursery() as restarts:
                async for signum in signals:
                    name = signal.Signals(signum).name
                    if signum == signal.SIGHUP:
                        if not stop.is_set():
                            restarts.start_soon(_rolling_restart, cluster)
                    elif stop.is_set():
                        log_event(logger, "cluster stop hurried", signal=name)
                        cluster.hurry()
                    else:
                        log_event(logger, "cluster stop requested", signal=name)
                        stop.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch_signals)
            await cluster.run(stop)
            nursery.cancel_scope.cancel()


async def _rolling_restart(cluster: Cluster) -> None:
    """A rolling restart; one that cannot go on is logged, with the node and its reason."""
    try:
        await cluster.rolling_restart()
    except NodeStartError as exc:
        log_event(
            logger, "rolling restart stopped", logging.ERROR, node=exc.node, reason=exc.reason
        )
    except (ClusterError, ProxyAdminError) as exc:
        log_event(logger, "rolling restart stopped", logging.ERROR, error=str(exc))


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
    registry = _load(args.registry)
    if registry is None:
        return 1
    print(
        f"registry {args.registry} is valid: {len(registry)} entries, "
        f"{len(registry.products)} products, {len(registry.services)} services"
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineErrors(
        prog="trioshop", description=__doc__,
        epilog="'trioshop COMMAND --help' lists the options of one command.",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="serve the shop over HTTP")
    run.add_argument(
        "--registry", default=DEFAULT_REGISTRY, help="registry folder (default: %(default)s)"
    )
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
        "--log-level", default="info", choices=LOG_LEVELS,
        help="least severe level logged (default: %(default)s)",
    )
    run.set_defaults(handler=_run)

    cluster = commands.add_parser(
        "cluster", help="run N nodes on one PostgreSQL database behind HAProxy"
    )
    cluster.add_argument(
        "--nodes", type=count, default=os.cpu_count() or 1,
        help="how many trioshop nodes (default: the number of cores, %(default)s)",
    )
    cluster.add_argument(
        "--database", type=database_url, default=os.environ.get(DATABASE_ENV),
        metavar="URL", help="the PostgreSQL database every node shares (default: "
        f"${DATABASE_ENV}; required)",
    )
    cluster.add_argument(
        "--bind", type=bind_address,
        help="HOST:PORT the proxy listens on (default: the registry's http.service address)",
    )
    cluster.add_argument(
        "--registry", default=DEFAULT_REGISTRY, help="registry folder (default: %(default)s)"
    )
    cluster.add_argument(
        "--config", metavar="FILE",
        help="where to write the HAProxy configuration (default: a temporary file)",
    )
    cluster.add_argument(
        "--node-args", default="", metavar="ARGS",
        help="more 'trioshop run' options for every node, as one string "
        "(e.g. \"--outbox-claim-timeout 5\")",
    )
    add_admin_token(
        cluster, "given to every node in its environment; without one, admin and ops answer "
        "clients on this machine only",
    )
    cluster.set_defaults(handler=_cluster)

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
    check.add_argument(
        "--registry", default=DEFAULT_REGISTRY, help="registry folder (default: %(default)s)"
    )
    check.set_defaults(handler=_check)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.handler(args))


if __name__ == "__main__":
    sys.exit(main())
