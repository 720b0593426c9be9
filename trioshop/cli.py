"""The ``trioshop`` command: ``run`` serves the shop with hypercorn, ``check`` checks a registry."""

from __future__ import annotations

import argparse
import gc
import ipaddress
import logging
import math
import os
import signal
import socket
import sys
import tempfile
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import attrs
import trio
from hypercorn.config import Config as HypercornConfig

from trioshop import logs
from trioshop.cluster.proxy_admin import ProxyAdminError
from trioshop.cluster.runner import (
    Cluster,
    ClusterConfig,
    ClusterError,
    NodeStartError,
    node_arguments,
)
from trioshop.config import ADMIN_TOKEN_ENV, DEFAULT_DATA_DIR, DEFAULT_REGISTRY, Settings
from trioshop.http import create_app
from trioshop.http.app import ShopLifetime
from trioshop.http.auth import DEFAULT_TTL_SECONDS, SECRET_ENV, UserAuth, mint_token
from trioshop.http.connection_close import CloseAfterLastAnswer
from trioshop.http.serving import LifespanFailed, bind_sockets, quiet_startup_traceback, serve
from trioshop.logs import log_event
from trioshop.registry import Registry, RegistryError
from trioshop.shop import load_runnable_registry
from trioshop.store.dirlock import DataDirInUse, lock_data_dir

logger = logging.getLogger("trioshop.server")

# Per request the stack allocates a few hundred container objects; at Python's default (700)
# the young generation is collected every couple of requests.
GC_GEN0_THRESHOLD = 20_000


def _load(folder: str) -> Registry | None:
    try:
        return load_runnable_registry(folder)
    except RegistryError as exc:
        problems = exc.problems
    print(f"trioshop: invalid registry {folder}:", file=sys.stderr)
    for problem in problems:
        print(f"  {problem}", file=sys.stderr)
    return None


async def _reload(lifetime: ShopLifetime) -> None:
    """SIGHUP: reload the registry; a refused one is logged and the old one keeps serving."""
    shop = lifetime.shop
    if shop is None:
        log_event(logger, "registry reload skipped: the shop is not running", logging.WARNING)
        return
    try:
        await shop.reload_from_disk()
    except RegistryError as exc:
        log_event(
            logger, "registry reload refused, the previous registry keeps serving",
            logging.ERROR, problems=" | ".join(exc.problems),
        )
    except Exception as exc:  # e.g. the store refused the new stock: the server stays up
        log_event(
            logger, "registry reload failed, the previous registry keeps serving",
            logging.ERROR, error=f"{type(exc).__name__}: {exc}",
        )


async def _watch_signals(
    shutdown: trio.Event,
    lifetime: ShopLifetime,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """SIGHUP reloads the registry; the first SIGINT or SIGTERM sets *shutdown*; a second
    one raises :class:`KeyboardInterrupt` here, ending a slow graceful shutdown at once.

    Ready once the handlers are installed; runs until cancelled. The second signal is raised
    from this task on purpose: left to Trio's default handler, the interrupt lands in
    whichever task is running, and hypercorn's serve() swallows one raised in its tasks.
    """
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as signals:
        task_status.started()
        async for signum in signals:
            if signum == signal.SIGHUP:
                if not shutdown.is_set():
                    await _reload(lifetime)
                continue
            if shutdown.is_set():
                raise KeyboardInterrupt
            log_event(logger, "shutdown requested", signal=signal.Signals(signum).name)
            shutdown.set()


def _hypercorn_config(settings: Settings, bind: str) -> HypercornConfig:
    config = HypercornConfig()
    config.bind = [bind]
    config.accesslog = None  # trioshop writes its own access log line per request
    config.errorlog = logging.getLogger("hypercorn.error")
    config.graceful_timeout = settings.shutdown_timeout
    # No read deadline of hypercorn's: it would also run while a request is handled.
    # trioshop.http.serving closes connections idle between requests instead.
    config.read_timeout = None
    return config


async def _serve(
    registry: Registry,
    settings: Settings,
    config: HypercornConfig,
    sockets: list[socket.socket],
    auth: UserAuth | None,
) -> None:
    """Start the shop, then serve on *sockets* (bound) until SIGINT or SIGTERM.

    A failed start raises :class:`LifespanFailed` (its traceback only logged at DEBUG) before
    any connection is accepted or ``listening`` is logged.
    """
    app = create_app(registry, settings, auth=auth)
    shutdown = trio.Event()
    async with trio.open_nursery() as nursery:
        await nursery.start(_watch_signals, shutdown, app.extensions["trioshop"])
        # quart-trio cancels hypercorn's close after an HTTP/1.0 or Connection: close answer,
        # leaving the socket open: see trioshop/http/connection_close.py.
        served = CloseAfterLastAnswer(app)
        live = app.extensions["trioshop.live"]

        async def stop_serving() -> None:
            await shutdown.wait()
            live.hub.close()  # end /ops streams now: hypercorn would wait for them

        async def serving(*, task_status: trio.TaskStatus[list[str]]) -> None:
            await serve(
                served, config, sockets, idle_timeout=settings.idle_connection_timeout,
                shutdown_trigger=stop_serving, task_status=task_status,
            )
            nursery.cancel_scope.cancel()  # drained: the signal watcher is done too

        with quiet_startup_traceback(app.logger):
            binds = await nursery.start(serving)
        # Everything built at startup (registry, app, routes) lives until exit: keep it out of
        # the cyclic collector's way, and collect the young generation less often.
        gc.freeze()
        gc.set_threshold(GC_GEN0_THRESHOLD, *gc.get_threshold()[1:])
        log_event(logger, "listening", urls=",".join(binds))
        # serve() returns after draining requests and running the lifespan shutdown.
    log_event(logger, "stopped")


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
        node_id=args.node_id or bind,
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
    config = _hypercorn_config(settings, bind)
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
        try:
            trio.run(_serve, registry, settings, config, sockets, auth)
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
            _database_url(database)
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
            "or set TRIOSHOP_DATABASE", file=sys.stderr,
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


def _default(name: str) -> Any:
    """The default of a :class:`Settings` field: the command line states no figure of its own."""
    return attrs.fields_dict(Settings)[name].default


def _seconds(text: str) -> float:
    """A positive, finite number of seconds."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}")
    return value


def _idle_seconds(text: str) -> float:
    """A non-negative number of seconds; 0 turns passivation off."""
    try:
        return 0.0 if float(text) == 0 else _seconds(text)
    except (ValueError, argparse.ArgumentTypeError):
        raise argparse.ArgumentTypeError(
            f"expected 0 (never) or a positive number of seconds, got {text!r}"
        ) from None


def _count(text: str) -> int:
    """A positive whole number."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {text!r}")
    return value


def _bind(text: str) -> str:
    """``HOST:PORT`` with a port from 0 (any free one) to 65535."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise argparse.ArgumentTypeError(
            f"expected HOST:PORT with a port from 0 to 65535, got {text!r}"
        )
    return text


def _secret_file(path: str) -> str:
    """The first line of the file at *path*, stripped: a token kept out of the process list."""
    try:
        with open(path, encoding="utf-8") as file:
            secret = file.readline().strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise argparse.ArgumentTypeError(f"cannot read {path!r}: {exc}") from None
    if not secret:
        raise argparse.ArgumentTypeError(f"{path!r} holds no token on its first line")
    return secret


def _admin_token(text: str) -> str:
    """A non-empty admin token: an empty one is a mistake, never "no token"."""
    if not text.strip():
        raise argparse.ArgumentTypeError(
            f"the admin token is empty: give a token, or leave out --admin-token and unset "
            f"{ADMIN_TOKEN_ENV} for loopback-only admin access"
        )
    return text


def _add_admin_token(parser: argparse.ArgumentParser, default_help: str) -> None:
    """``--admin-token`` (default ``$TRIOSHOP_ADMIN_TOKEN``) or ``--admin-token-file``."""
    admin = parser.add_mutually_exclusive_group()
    admin.add_argument(
        "--admin-token", type=_admin_token, default=os.environ.get(ADMIN_TOKEN_ENV),
        help=f"bearer token for /api/admin/* and /ops (default: ${ADMIN_TOKEN_ENV}; "
        f"{default_help})",
    )
    admin.add_argument(
        "--admin-token-file", type=_secret_file, dest="admin_token", metavar="FILE",
        help="read the admin token from FILE instead (keeps it out of `ps`)",
    )


def _ip_address(text: str) -> str:
    """An IPv4 or IPv6 address."""
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected an IP address such as 127.0.0.1, got {text!r}"
        ) from None


def _database_url(text: str) -> str:
    """A ``postgresql://`` (or ``postgres://``) URL."""
    if not text.startswith(("postgresql://", "postgres://")):
        raise argparse.ArgumentTypeError(
            f"expected a URL such as postgresql://user@host:5432/db, got {text!r}"
        )
    return text


LOG_LEVELS = ["debug", "info", "warning", "error"]
DATABASE_ENV = "TRIOSHOP_DATABASE"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="trioshop", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="serve the shop over HTTP")
    run.add_argument(
        "--registry", default=DEFAULT_REGISTRY, help="registry folder (default: %(default)s)"
    )
    run.add_argument(
        "--bind", type=_bind,
        help="HOST:PORT to listen on (default: the registry's http.service address)",
    )
    run.add_argument(
        "--node-id", metavar="ID",
        help="this node's name in the X-Served-By header of every answer (default: the bind "
        "address as given, HOST:PORT)",
    )
    run.add_argument(
        "--read-timeout", type=_seconds, default=_default("read_timeout"),
        help="seconds a request waits for its cart's reply (default: %(default)s)",
    )
    run.add_argument(
        "--checkout-timeout", type=_seconds, default=_default("checkout_timeout"),
        help="seconds a checkout waits for its cart's reply (default: %(default)s)",
    )
    run.add_argument(
        "--max-live-carts", type=_count, default=_default("max_live_carts"),
        help="live cart actors at most; beyond, adds answer 503 (default: %(default)s)",
    )
    run.add_argument(
        "--data-dir",
        help=f"folder of the SQLite database; one server at a time (default: {DEFAULT_DATA_DIR}"
        f", unless ${DATABASE_ENV} is set)",
    )
    run.add_argument(
        "--database", type=_database_url, metavar="URL",
        help="postgresql://user@host:port/db (add ?options=-csearch_path%%3DNAME for a schema): "
        "the PostgreSQL store many nodes can share, instead of SQLite in --data-dir "
        f"(default: ${DATABASE_ENV} unless --memory or --data-dir is given, else SQLite)",
    )
    run.add_argument(
        "--database-pool", type=_count, default=_default("database_pool_size"), metavar="N",
        help="PostgreSQL connections (and worker threads) of this node (default: %(default)s)",
    )
    run.add_argument(
        "--outbox-claim-timeout", type=_seconds, default=_default("outbox_claim_timeout"),
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
        "--cart-idle", type=_idle_seconds, default=_default("cart_idle_timeout"),
        help="seconds without a message before a cart is passivated (0: never; "
        "default: %(default)s)",
    )
    run.add_argument(
        "--connection-idle", type=_seconds, default=_default("idle_connection_timeout"),
        help="seconds before an HTTP connection that sends nothing between requests is closed "
        "(default: %(default)s)",
    )
    _add_admin_token(run, "without one, loopback clients asking for localhost only")
    run.add_argument(
        "--trusted-proxy", type=_ip_address, action="append", default=[], metavar="ADDR",
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
        "--sqlite-synchronous", default=_default("sqlite_synchronous"), choices=["NORMAL", "FULL"],
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
        "--nodes", type=_count, default=os.cpu_count() or 1,
        help="how many trioshop nodes (default: the number of cores, %(default)s)",
    )
    cluster.add_argument(
        "--database", type=_database_url, default=os.environ.get("TRIOSHOP_DATABASE"),
        metavar="URL", help="the PostgreSQL database every node shares (default: "
        "$TRIOSHOP_DATABASE; required)",
    )
    cluster.add_argument(
        "--bind", type=_bind,
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
    _add_admin_token(
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
        "--ttl", type=_count, default=DEFAULT_TTL_SECONDS,
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
