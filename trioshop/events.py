"""The names of the log events something else reads: the ops page, the cluster, tests, benches.

Each name is the ``event`` field of one log line, written here once; the code logs it, and
readers match it through :func:`trioshop.logs.event_field`, never as typed text.
"""

from __future__ import annotations

# A node's lifecycle (logger trioshop.server and trioshop.shop).
SHOP_STARTED = "shop started"
LISTENING = "listening"
SHUTDOWN_REQUESTED = "shutdown requested"
STOPPED = "stopped"
REGISTRY_RELOADED = "registry reloaded"
REGISTRY_RELOAD_REFUSED = "registry reload refused, the previous registry keeps serving"
REGISTRY_RELOAD_CANCELLED = "registry reload cancelled: the server is stopping"
APP_SHUTDOWN_FAILED = "app shutdown failed"

# One HTTP request (logger trioshop.access).
REQUEST = "request"

# Actors and services (the ops page's actor list and categories read these).
CART_CREATED = "cart created"
CART_RESTORED = "cart restored"
CART_ENDED = "cart ended"
ITEM_ADDED = "item added"
ACTOR_CRASHED = "actor crashed"
SERVICE_CRASHED = "service crashed"
ORDER_HANDLED = "order handled"
# A service leaves the rest of its claimed batch (WARNING): the claim is about to run out.
CLAIM_RUNNING_OUT = "service claim running out"
CHECKOUT_COMPLETED = "checkout completed"
# The orders relay to Redis Streams (logger trioshop.relay): an outage begins, and ends.
RELAY_WAITING = "relay waiting for redis"
RELAY_PUBLISHING_AGAIN = "relay publishing again"

# The live feed.
LIVE_VIEWER_CUT = "live viewer cut"

# The cluster (logger trioshop.cluster).
CLUSTER_READY = "cluster ready"
CLUSTER_STOPPED = "cluster stopped"
NODE_STARTED = "node started"
NODE_EXITED = "node exited"
NODE_RESTARTED = "node restarted"
NODE_RESTART_FAILED = "node restart failed"
ROLLING_RESTART_DONE = "rolling restart done"
ROLLING_RESTART_STOPPED = "rolling restart stopped"
PROXY_STARTED = "proxy started"
PROXY_EXITED = "proxy exited"
HEALTH_CHECKS_NOT_PRINTED = "health checks not printed"

# What the ops page's script reads by role (passed to it in the page, not typed in it).
OPS_PAGE = {
    "cartCreated": CART_CREATED,
    "cartRestored": CART_RESTORED,
    "cartEnded": CART_ENDED,
    "actorCrashed": ACTOR_CRASHED,
    "orderHandled": ORDER_HANDLED,
}
