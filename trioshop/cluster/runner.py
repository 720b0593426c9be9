"""Running a cluster: its nodes, then HAProxy in front of them, and their rolling restart."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import attrs
import trio

from trioshop import events
from trioshop.cluster.config import NODE_HOST, ClusterConfig, ClusterError, free_ports
from trioshop.cluster.haproxy import Backend, haproxy_config
from trioshop.cluster.node import Node
from trioshop.cluster.proxy import Proxy, haproxy_path
from trioshop.cluster.proxy_admin import ProxyAdmin
from trioshop.cluster.supervision import cancel_when_set
from trioshop.logs import log_event

logger = logging.getLogger("trioshop.cluster")

# A rolling restart waits up to DRAIN_TIMEOUT for a drained node's requests in flight to
# finish, up to READY_TIMEOUT for the restarted node to be up at the proxy (its checks need
# two passes), and asks the proxy every PROXY_STATE_POLL seconds meanwhile.
DRAIN_TIMEOUT = 30.0
READY_TIMEOUT = 30.0
PROXY_STATE_POLL = 0.1


@attrs.define(eq=False)
class Cluster:
    """N nodes and the proxy in front of them; create it, then :meth:`run` it."""

    config: ClusterConfig
    _nodes: list[Node] = attrs.field(factory=list)
    _proxy: Proxy | None = None
    _admin: ProxyAdmin | None = None
    _rolling: trio.Lock = attrs.field(factory=trio.Lock)

    async def run(
        self, stop: trio.Event, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Start the nodes, then the proxy in front of them; run until *stop* is set.

        Ready once the proxy accepts connections. *stop* set during startup stops what
        started. The nesting is the shutdown order: the proxy stops accepting and finishes its
        requests first, then the nodes stop (each drains too). Raises :class:`ClusterError`
        (:class:`NodeStartError`: with the node's reason) when a node or the proxy cannot
        start.
        """
        config = self.config
        haproxy_path()  # fail before starting anything
        ports = free_ports(config.nodes)
        backends = [
            Backend(f"n{number}", number, f"{NODE_HOST}:{port}")
            for number, port in enumerate(ports, start=1)
        ]
        admin_socket = config.config_path.with_name("haproxy-admin.sock")
        config.config_path.write_text(
            haproxy_config(config.bind, backends, str(admin_socket), config.api_prefix)
        )
        proxy = self._proxy = Proxy(config)
        async with trio.open_nursery() as nodes:
            async with trio.open_nursery() as front:
                front.start_soon(cancel_when_set, stop, front.cancel_scope)
                for backend in backends:
                    node = Node(config, backend)
                    self._nodes.append(node)
                    await nodes.start(node.run)
                await front.start(proxy.run)
                self._admin = ProxyAdmin(str(admin_socket))
                log_event(logger, events.CLUSTER_READY, nodes=config.nodes, bind=config.bind)
                task_status.started()
            nodes.cancel_scope.cancel()
        log_event(logger, events.CLUSTER_STOPPED)

    def hurry(self) -> None:
        """Stop without waiting for the proxy's requests to finish (a second Ctrl-C)."""
        if self._proxy is not None:
            self._proxy.hurry.set()

    async def rolling_restart(self) -> None:
        """Restart every node, one at a time, without failing a request.

        Each node is drained at the proxy first (no new requests; its users go to the other
        nodes, which reload their carts from the database), and stopped only once no request
        is in flight on it; it stops gracefully (its carts are durable already), starts,
        and is taken back only once ready, and the next node waits until the proxy sees it
        up. A restart already under way makes another request wait for it. Raises
        :class:`NodeStartError` when a node does not start again (the restart stops there;
        the node is back in the proxy's rotation, taken once its checks pass, and retried
        with backoff), :class:`ClusterError` before the cluster is ready.
        """
        admin = self._admin
        if admin is None:
            raise ClusterError("the cluster is not ready yet")
        async with self._rolling:
            log_event(logger, "rolling restart started", nodes=len(self._nodes))
            for node in self._nodes:
                name = node.backend.name
                await admin.set_state(name, "drain")

                async def idle(name: str = name) -> bool:
                    return not int((await admin.server(name)).get("scur") or 0)

                async def up(name: str = name) -> bool:
                    return (await admin.server(name)).get("status", "").startswith("UP")

                await _poll_proxy(idle, DRAIN_TIMEOUT, f"node {name} still had requests in flight")
                await admin.set_state(name, "maint")
                try:
                    await node.restart()
                finally:  # its checks keep it out until it serves again
                    await admin.set_state(name, "ready")
                await _poll_proxy(up, READY_TIMEOUT, f"the proxy did not see node {name} up")
                log_event(logger, events.NODE_RESTARTED, node=name)
            log_event(logger, events.ROLLING_RESTART_DONE, nodes=len(self._nodes))


async def _poll_proxy(
    condition: Callable[[], Awaitable[bool]], timeout: float, failure: str
) -> None:
    """Ask the proxy until *condition* holds; :class:`ClusterError` (*failure*, after
    *timeout* seconds) if it does not.

    Polling, because the state lives in another process that pushes no notice of it.
    """
    with trio.move_on_after(timeout):
        while True:
            if await condition():
                return
            await trio.sleep(PROXY_STATE_POLL)
    raise ClusterError(f"{failure} after {timeout:g} s")
