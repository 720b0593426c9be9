"""What ``trioshop cluster`` was asked for, where its nodes listen, and its errors."""

from __future__ import annotations

import shlex
import socket
from collections.abc import Sequence
from pathlib import Path

import attrs


class ClusterError(RuntimeError):
    """The cluster cannot run (no haproxy, a node that cannot start); the message says why."""


class NodeStartError(ClusterError):
    """A node's process exited, or did not serve in time, before it served; with its reason."""

    def __init__(self, node: str, reason: str) -> None:
        super().__init__(f"node {node} could not start: {reason}")
        self.node = node
        self.reason = reason


@attrs.frozen
class ClusterConfig:
    """What ``trioshop cluster`` was asked for."""

    nodes: int
    bind: str  # the proxy's HOST:PORT
    database: str
    registry: str
    config_path: Path  # where the HAProxy configuration is written
    node_args: tuple[str, ...] = ()  # more ``trioshop run`` options for every node
    # Given to every node in its environment (never on its command line, which ps shows).
    admin_token: str | None = attrs.field(default=None, repr=False)
    api_prefix: str = "/api"  # the registry's http.router prefix: where the proxy finds users


# Where the nodes listen and where HAProxy connects to them from: the one peer whose
# X-Forwarded-For a node believes.
NODE_HOST = "127.0.0.1"


def free_ports(count: int) -> list[int]:
    """*count* distinct free TCP ports on the loopback interface."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for each in sockets:
            each.bind((NODE_HOST, 0))
        return [each.getsockname()[1] for each in sockets]
    finally:
        for each in sockets:
            each.close()



def node_arguments(text: str) -> Sequence[str]:
    """``--node-args`` split like a shell would."""
    return shlex.split(text)
