"""``trioshop cluster``: N nodes on one PostgreSQL database behind HAProxy, until a signal."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any

import trio

from trioshop import events, logs
from trioshop.cli.options import (
    DATABASE_ENV,
    add_admin_token,
    add_registry,
    bind_address,
    count,
    database_url,
    leaves,
    load_registry_or_explain,
)
from trioshop.cluster.config import ClusterConfig, ClusterError, NodeStartError, node_arguments
from trioshop.cluster.proxy_admin import ProxyAdminError
from trioshop.cluster.runner import Cluster
from trioshop.logs import log_event

logger = logging.getLogger("trioshop.server")


def add_cluster_command(commands: Any) -> None:
    """The ``cluster`` subcommand on *commands* (``add_subparsers()``'s result)."""
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
    add_registry(cluster)
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


def _cluster(args: argparse.Namespace) -> int:
    logs.configure("INFO")
    if args.database is None:
        print(
            "trioshop cluster: the nodes need a shared PostgreSQL database: pass --database URL "
            f"or set {DATABASE_ENV}", file=sys.stderr,
        )
        return 2
    registry = load_registry_or_explain(args.registry)
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
            failures = leaves(exc)
            if not all(isinstance(f, ClusterError) for f in failures):
                raise
            print(f"trioshop cluster: {failures[0]}", file=sys.stderr)
            return 1
    return 0


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
            logger, events.ROLLING_RESTART_STOPPED, logging.ERROR, node=exc.node, reason=exc.reason
        )
    except (ClusterError, ProxyAdminError) as exc:
        log_event(logger, events.ROLLING_RESTART_STOPPED, logging.ERROR, error=str(exc))
