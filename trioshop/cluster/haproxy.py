"""The HAProxy configuration that keeps each user on one node: written once, here."""

from __future__ import annotations

import attrs

# Probes of /readyz: a node that fails two in a row (1 s) leaves, one that passes two returns.
CHECK_INTERVAL = "500ms"
CHECK_FALL = 2
CHECK_RISE = 2


@attrs.frozen
class Backend:
    """One trioshop node as the proxy sees it: a fixed name and numeric id, and its address."""

    name: str
    id: int
    address: str  # HOST:PORT


def haproxy_config(
    bind: str, backends: list[Backend], admin_socket: str = "/run/haproxy/admin.sock"
) -> str:
    """The configuration for a proxy on *bind* in front of *backends*, with its reasons; its
    runtime API listens on *admin_socket*."""
    servers = "\n".join(
        f"    server {b.name} {b.address} id {b.id}" for b in backends
    )
    return f"""\
# trioshop behind HAProxy: every request of one user goes to one node, so the node that holds
# the user's cart actor serves it. Correctness never depends on this (cart writes are
# conditional on versions, stock is a conditional decrement, outbox rows are claimed with
# SKIP LOCKED), but a user bouncing between nodes would make every request reload and
# conflict.

global
    # Connections at once; HAProxy needs two file descriptors each (ulimit -n).
    maxconn 4096
    # The runtime API: a rolling restart drains a node here, then takes it back.
    stats socket {admin_socket} mode 600 level admin

defaults
    mode http
    timeout connect 2s
    timeout client 60s
    timeout server 60s
    # Live views (server-sent events) stay open far longer than a request.
    timeout tunnel 1h
    timeout http-keep-alive 30s
    # A request whose connection to a node is refused (the node died) goes to another node
    # at once, on the first retry ("redispatch 1"; plain "redispatch" waits for the last
    # retry: measured, 1 s instead of 2-6 ms); a request already sent is never re-sent (it
    # may have been applied: clients retry with an Idempotency-Key).
    option redispatch 1
    retries 2

frontend shop
    bind {bind}
    default_backend nodes

backend nodes
    # The user id is the 4th field of /api/cart/{{user_id}}/... and /api/users/{{user_id}}/...;
    # url_dec makes "u@x" and "u%40x" one user (without it, 69 of 100 such users split).
    # Consistent hashing: a node leaving or joining moves only its share of the users.
    balance hash path,field(4,/),url_dec
    hash-type consistent
    # Fixed server ids: every proxy built from this file maps users to nodes alike.
    # Readiness, not health: a failure all nodes share (a broken notifier) must not eject
    # them all; /readyz is 503 only when this node cannot serve carts.
    option httpchk GET /readyz
    http-check expect status 200
    default-server inter {CHECK_INTERVAL} fall {CHECK_FALL} rise {CHECK_RISE} check
{servers}
"""
