"""The HAProxy configuration that keeps each user on one node: written once, here."""

from __future__ import annotations

import json

import attrs

from trioshop.config import Settings
from trioshop.http.shapes import ERROR

# Probes of /readyz: a node that fails two in a row (1 s) leaves, one that passes two returns.
HEALTH_CHECK_PATH = "/readyz"
CHECK_INTERVAL = "500ms"
CHECK_FALL = 2
CHECK_RISE = 2

# What a client gets when no node passes its checks (a database outage): the API's own 503.
NO_NODE_MESSAGE = "No node is ready to serve this request (is the store down?), retry shortly"
RETRY_AFTER_SECONDS = attrs.fields(Settings).retry_after_seconds.default


def no_node_body() -> str:
    """The JSON body of the proxy's 503, in the API's error shape."""
    body = json.dumps(ERROR.render(None, error=NO_NODE_MESSAGE))
    assert "'" not in body, "the body is single-quoted in the configuration"
    return body


def user_field(api_prefix: str) -> int:
    """The position of the user id among the ``/``-separated fields of a cart path under
    *api_prefix* (the registry's ``http.router``): 4 in ``/api/cart/{user_id}``."""
    return len([part for part in api_prefix.split("/") if part]) + 3


@attrs.frozen
class Backend:
    """One trioshop node as the proxy sees it: a fixed name and numeric id, and its address."""

    name: str
    id: int
    address: str  # HOST:PORT


def haproxy_config(
    bind: str,
    backends: list[Backend],
    admin_socket: str = "/run/haproxy/admin.sock",
    api_prefix: str = "/api",
) -> str:
    """The configuration for a proxy on *bind* in front of *backends* serving the API under
    *api_prefix*, with its reasons; its runtime API listens on *admin_socket*."""
    field = user_field(api_prefix)
    no_node = (
        "http-error status 503 content-type application/json "
        f"hdr Retry-After {RETRY_AFTER_SECONDS} string '{no_node_body()}'"
    )
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
    # No node ready (all fail /readyz): the API's JSON 503, not HAProxy's HTML page.
    {no_node}

frontend shop
    bind {bind}
    # The nodes see every connection come from here; this header (replacing any the client
    # sent) tells them who the client is. They believe it from this proxy only
    # (trioshop run --trusted-proxy).
    http-request set-header X-Forwarded-For %[src]
    default_backend nodes

backend nodes
    # The user id is field {field} of {api_prefix}/cart/{{user_id}}/... and
    # {api_prefix}/users/{{user_id}}/...; url_dec makes "u@x" and "u%40x" one user (without it,
    # 69 of 100 such users split).
    # Consistent hashing: a node leaving or joining moves only its share of the users.
    balance hash path,field({field},/),url_dec
    hash-type consistent
    # Fixed server ids: every proxy built from this file maps users to nodes alike.
    # Readiness, not health: a failure all nodes share (a broken notifier) must not eject
    # them all; /readyz is 503 only when this node cannot serve carts.
    option httpchk GET {HEALTH_CHECK_PATH}
    http-check expect status 200
    default-server inter {CHECK_INTERVAL} fall {CHECK_FALL} rise {CHECK_RISE} check
{servers}
"""
