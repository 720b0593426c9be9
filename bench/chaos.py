"""Chaos run: the seed's shopping scenario through HAProxy while nodes die by ``kill -9``.

    python bench/chaos.py                              # 60 s, 3 nodes, 30 users, kill every 5 s
    python bench/chaos.py --seconds 20 --kill-every 4  # the short version CI runs
    python bench/chaos.py --users 40 --nodes 4 --json
    python bench/chaos.py --database "postgresql://postgres@db:5432/shop?options=-csearch_path%3Dx"
    python bench/chaos.py --keep-schema                # keep the fresh schema to look at it

Starts ``trioshop cluster`` (HAProxy in front of --nodes nodes) on one PostgreSQL schema (by
default a fresh ``chaos_<random>`` schema on the local server, dropped at the end), with the
shipped catalog at 1,000,000 units of everything except monitors (MON-004: --small-stock, 100),
so that an oversell would show. --users virtual users each loop the seed's flow (load.py): browse
the products, add 1-3 random SKUs with quantity 1-2, view the cart, check out, pause; each
iteration is a new user id. Every --kill-every seconds a random node that is up is killed with
SIGKILL (never the last one up); the cluster starts it again.

Every add and checkout carries an ``Idempotency-Key`` of its own, kept across retries. A request
is retried (same key, backoff 0.2 s doubling to 1 s, --retries times) after a transport error,
a 502 (the proxy lost the node mid-request), a 503 or a 504 (either "nothing was changed" or
"the change may have been applied: retry with the same Idempotency-Key"); it counts as failed
only when its last attempt fails too. 409 (out of stock) is a refusal, not a failure.

At the end, from the database and the cluster's log lines:

- no acknowledged add lost: each one's key is in ``add_keys``, and every user's cart plus order
  hold at least what was acknowledged, at most that plus the adds whose outcome is unknown;
  every applied add (``add_keys``) is in the cart or the order; views showed every acked add;
- every acknowledged order is stored with the lines it was answered with; one order per user;
- no unit oversold: no stock below 0, and for each SKU stock at start - sold == stock now;
- every order has a status from each service (waits for the outbox, --settle seconds at most);
  its ``DELIVERY package dispatched`` and ``EMAIL sent`` lines appear at least once, more than
  once only when the node that printed the earlier one was killed before the next one.

The report gives requests, failed count and share (goal: < 1 %) with their reasons, retried
attempts by reason, kills, latency (p50/p95/p99 per logical request, retries included) and each
data check. The exit status is 1 when a data check fails or failed requests reach 1 %, 2 when
the run cannot start (no haproxy, no PostgreSQL).
"""

from __future__ import annotations

import argparse
import calendar
import itertools
import json
import os
import random
import re
import secrets
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import attrs
import httpx
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.load import GROUPS, REGISTRY, SKUS, log, percentile
from trioshop.registry import load_registry
from trioshop.testing.postgres import DEFAULT_URL, scratch_schema, with_schema
from trioshop.testing.registry import registry_with_stock
from trioshop.testing.server import ClusterProcess, free_port

FAILED_GOAL = 0.01  # failed requests / requests, after retries
AMPLE_STOCK = 1_000_000
SMALL_SKU = "MON-004"
CLIENT_TIMEOUT = 20.0  # above the server's checkout timeout plus its settle timeout (5 + 10 s)
STOP_GRACE = 30.0  # how long virtual users get to finish their iteration once told to stop
# Passed to every node: a dead node's outbox claims move on after 5 s, not 30 (longer than a
# live node takes to handle a batch it claimed, or its claim would expire too).
NODE_ARGS = "--outbox-claim-timeout 5"

NODE_EXITED = re.compile(r'event="node exited" node=(\S+) pid=(\d+) code=(-?\d+)')
DISPATCHED = re.compile(
    r'^ts=(\S+) .*event="DELIVERY package dispatched for user [^"]*" order_id=(\w+).* node=(\S+)$'
)
EMAILED = re.compile(r'^ts=(\S+) .*event="EMAIL sent to [^"]*" order_id=(\w+).* node=(\S+)$')
ACCESS = re.compile(r"event=request .*status=(\d+)")
PROBLEM = re.compile(r"level=(error|critical)|Traceback")

Lines = dict[str, int]  # SKU -> quantity


# -- setup: registry, schema, cluster ---------------------------------------------------


def chaos_registry(folder: Path, small_stock: int) -> dict[str, int]:
    """Copy the registry to *folder*: every stock at :data:`AMPLE_STOCK`, monitors at
    *small_stock*. Returns the stock per SKU as written."""
    registry_with_stock(REGISTRY, folder, AMPLE_STOCK, {SMALL_SKU: small_stock})
    stock = {product.sku: product.stock for product in load_registry(folder).products}
    if set(stock) != set(SKUS):
        raise RuntimeError(f"expected the SKUs {SKUS} in {REGISTRY}, found {sorted(stock)}")
    return stock


def log_time(stamp: str) -> float:
    """Unix time of a log line's ``ts`` (``2026-11-25T10:00:00.123Z``)."""
    whole, _, millis = stamp.rstrip("Z").partition(".")
    return calendar.timegm(time.strptime(whole, "%Y-%m-%dT%H:%M:%S")) + int(millis or 0) / 1000


# -- the cluster's nodes and the killer ---------------------------------------------------


@attrs.define
class Kill:
    at: float  # unix time
    node: str
    pid: int


@attrs.define
class Nodes:
    """Follows the cluster's output: each node's current pid, and which ones we killed."""

    cluster: ClusterProcess
    pids: dict[str, int] = attrs.Factory(dict)
    killed: set[int] = attrs.Factory(set)
    starts: int = 0
    _seen: int = 0

    def update(self) -> None:
        self.cluster.drain()
        lines = self.cluster.lines
        for line in lines[self._seen:]:
            if match := ClusterProcess.NODE_STARTED.search(line):
                self.pids[match.group(1)] = int(match.group(2))
                self.starts += 1
        self._seen = len(lines)

    def up(self) -> list[str]:
        return sorted(node for node, pid in self.pids.items() if pid not in self.killed)


def kill_nodes(
    nodes: Nodes, began: float, every: float, stop: threading.Event, rng: random.Random,
    kills: list[Kill],
) -> None:
    """Every *every* seconds from *began* (monotonic), SIGKILL a random node that is up,
    never the last one up."""
    next_kill = began + every
    while not stop.wait(0.05):
        nodes.update()
        if time.monotonic() < next_kill:
            continue
        up = nodes.up()
        if len(up) < 2:
            continue  # wait for a restart: one node must stay
        node = rng.choice(up)
        pid = nodes.pids[node]
        nodes.killed.add(pid)
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        kills.append(Kill(time.time(), node, pid))
        log(f"  kill -9 {node} (pid {pid}); up before: {', '.join(up)}")
        next_kill = time.monotonic() + every
    nodes.update()


# -- the shoppers -------------------------------------------------------------------------


@attrs.define
class Add:
    key: str
    sku: str
    quantity: int


@attrs.define
class Shopper:
    """One user id's history as the client saw it."""

    user_id: str
    acked: list[Add] = attrs.Factory(list)  # answered 200
    unknown: list[Add] = attrs.Factory(list)  # failed after retries: applied or not
    checkout_key: str = ""
    order: dict[str, Any] | None = None  # the acknowledged order
    checkout_unknown: bool = False
    view_mismatch: str | None = None


@attrs.define
class Ledger:
    """Every logical request, attempt, retry and failure of the run (thread-safe)."""

    lock: threading.Lock = attrs.Factory(threading.Lock)
    latencies: dict[str, list[float]] = attrs.Factory(lambda: {g: [] for g in GROUPS})
    failed: dict[str, int] = attrs.Factory(lambda: dict.fromkeys(GROUPS, 0))
    attempts: int = 0
    failures: Counter[str] = attrs.Factory(Counter)
    retries: Counter[str] = attrs.Factory(Counter)
    refusals: Counter[str] = attrs.Factory(Counter)
    shoppers: list[Shopper] = attrs.Factory(list)

    def retried(self, reason: str) -> None:
        with self.lock:
            self.attempts += 1
            self.retries[reason] += 1

    def done(self, group: str, seconds: float, failure: str | None, refusal: str | None) -> None:
        with self.lock:
            self.attempts += 1
            self.latencies[group].append(seconds)
            if failure is not None:
                self.failed[group] += 1
                self.failures[f"{group}: {failure}"] += 1
            if refusal is not None:
                self.refusals[f"{group}: {refusal}"] += 1


@attrs.frozen
class Answer:
    status: int  # 0: no answer after the retries
    body: Any
    reason: str  # "" when 2xx


def explain(status: int, message: str) -> str:
    """A short, stable reason for an answer or a transport error (numbers and users masked)."""
    text = re.sub(r"<[^>]+>", " ", message)
    text = re.sub(r"chaos-[\w.:-]+", "<user>", text)
    text = " ".join(re.sub(r"\d+", "N", text).split())[:150]
    if status == 0:
        if "Server disconnected without sending a response" in text:
            # HAProxy's way of saying 502 on a keep-alive connection's later request: it closes
            # the client connection without an answer, so that the client may retry.
            text += " (proxy: the node died mid-request)"
        return text
    hints = {
        502: " (proxy: the node died mid-request)",
        503: " (proxy: no node up)" if "No server is available" in text else "",
    }
    return f"{status} {text}{hints.get(status, '')}"


def retryable(status: int) -> bool:
    """Transport errors, 502, 503 and 504 (both kinds: see docs/http-api.md) are retried."""
    return status in (0, 502, 503, 504)


class VirtualUser:
    """One shopper thread with its own keep-alive connection to the proxy."""

    def __init__(
        self, number: int, base_url: str, ledger: Ledger, args: argparse.Namespace, run_id: str
    ) -> None:
        self.number = number
        self.ledger = ledger
        self.retries = args.retries
        self.think_scale = args.think_scale
        self.rng = random.Random(f"{args.seed}-{number}")
        self.prefix = f"chaos-{run_id}-{number}"
        self.http = httpx.Client(base_url=base_url, timeout=CLIENT_TIMEOUT)

    def think(self, seconds: float) -> None:
        if self.think_scale > 0:
            time.sleep(seconds * self.think_scale)

    def call(
        self, group: str, method: str, path: str, body: Any = None, key: str | None = None,
        refused: tuple[int, ...] = (409,),
    ) -> Answer:
        """One logical request: retried after retryable failures, with the same key."""
        started = time.perf_counter()
        headers = {} if key is None else {"Idempotency-Key": key}
        request_id = key or secrets.token_hex(6)  # attempt N is "<key>.N" in the access log
        for attempt in range(self.retries + 1):
            headers["X-Request-ID"] = f"{request_id}.{attempt}"
            try:
                response = self.http.request(method, path, json=body, headers=headers)
            except httpx.TransportError as exc:
                status, payload = 0, None
                reason = explain(0, f"{type(exc).__name__}: {exc}")
            else:
                status = response.status_code
                try:
                    payload = response.json()
                except ValueError:
                    payload = None
                if 200 <= status < 300:
                    self.ledger.done(group, time.perf_counter() - started, None, None)
                    return Answer(status, payload, "")
                message = payload.get("error", "") if isinstance(payload, dict) else response.text
                reason = explain(status, str(message))
            if not retryable(status) or attempt == self.retries:
                break
            self.ledger.retried(f"{group}: {reason}")
            time.sleep(min(0.2 * 2**attempt, 1.0) * (0.75 + self.rng.random() / 2))
        seconds = time.perf_counter() - started
        if status in refused:
            self.ledger.done(group, seconds, None, reason)
            return Answer(status, payload, reason)
        self.ledger.done(group, seconds, reason, None)
        return Answer(0 if retryable(status) else status, payload, reason)

    def run(self, stop: threading.Event) -> None:
        iteration = 0
        try:
            while not stop.is_set():
                self.iteration(Shopper(f"{self.prefix}-{iteration}"))
                iteration += 1
        finally:
            self.http.close()

    def iteration(self, shopper: Shopper) -> None:
        """The seed's flow for one user id: browse, add 1-3 items, view, check out, pause."""
        with self.ledger.lock:
            self.ledger.shoppers.append(shopper)
        user = shopper.user_id
        self.call("browse", "GET", "/api/products")
        self.think(0.5)
        for n in range(self.rng.randint(1, 3)):
            add = Add(f"{user}:add{n}", self.rng.choice(SKUS), self.rng.randint(1, 2))
            answer = self.call(
                "add", "POST", f"/api/cart/{user}/items",
                {"sku": add.sku, "quantity": add.quantity}, key=add.key,
            )
            if answer.status == 200:
                shopper.acked.append(add)
            elif answer.status != 409:  # anything but a refusal may have been applied
                shopper.unknown.append(add)
            self.think(0.3)
        view = self.call("view", "GET", f"/api/cart/{user}")
        if view.status == 200:
            shopper.view_mismatch = mismatch(shopper, quantities(view.body["items"]), "view")
        self.think(0.5)
        if shopper.acked or shopper.unknown:
            shopper.checkout_key = f"{user}:checkout"
            # An empty cart is a fair answer only when no add is known to have been applied.
            empty_ok = (400,) if not shopper.acked else ()
            answer = self.call(
                "checkout", "POST", f"/api/cart/{user}/checkout", key=shopper.checkout_key,
                refused=(409, *empty_ok),
            )
            if answer.status == 200:
                shopper.order = answer.body["order"]
            elif answer.status not in (400, 409):  # those placed nothing
                shopper.checkout_unknown = True
            self.think(0.5)
        self.think(1.0)


def quantities(items: list[dict[str, Any]]) -> Lines:
    found: Lines = Counter()
    for item in items:
        found[item["sku"]] += item["quantity"]
    return found


def bounds(shopper: Shopper) -> tuple[Lines, Lines]:
    """Per SKU: the quantity acknowledged, and that plus the adds of unknown outcome."""
    low: Lines = Counter()
    for add in shopper.acked:
        low[add.sku] += add.quantity
    high = Counter(low)
    for add in shopper.unknown:
        high[add.sku] += add.quantity
    return low, high


def mismatch(shopper: Shopper, held: Lines, what: str) -> str | None:
    """Why *held* is not between what was acknowledged and that plus unknowns (None: it is)."""
    low, high = bounds(shopper)
    for sku in sorted(set(low) | set(high) | set(held)):
        if not low[sku] <= held.get(sku, 0) <= high[sku]:
            return (f"{shopper.user_id} {sku}: {what} holds {held.get(sku, 0)}, "
                    f"acknowledged {low[sku]}, unknown outcome {high[sku] - low[sku]}")
    return None


# -- the database and the logs ------------------------------------------------------------


@attrs.define
class Snapshot:
    """What the database holds, for this run's users."""

    stock: dict[str, int]
    sold: Lines  # over every order of the schema
    carts: dict[str, Lines]
    orders: dict[str, list[tuple[str, Lines]]]  # user -> [(order_id, lines)]
    add_keys: dict[str, dict[str, tuple[str, int]]]  # user -> key -> (sku, quantity)
    outbox: dict[str, dict[str, str | None]]  # order_id -> service -> status
    services: list[str]


def _lines(text: str) -> Lines:
    found: Lines = Counter()
    for sku, _title, _price, quantity in json.loads(text):
        found[sku] += quantity
    return found


def read_database(url: str, prefix: str) -> Snapshot:
    like = f"{prefix}%"
    with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
        stock = dict(conn.execute("SELECT sku, available FROM stock").fetchall())
        sold: Lines = Counter()
        orders: dict[str, list[tuple[str, Lines]]] = defaultdict(list)
        for order_id, user, lines in conn.execute(
            "SELECT order_id, user_id, lines::text FROM orders ORDER BY placed"
        ):
            sold.update(_lines(lines))
            if user.startswith(prefix):
                orders[user].append((order_id, _lines(lines)))
        carts = {
            user: _lines(lines) for user, lines in conn.execute(
                "SELECT user_id, lines::text FROM carts WHERE user_id LIKE %s", (like,)
            )
        }
        add_keys: dict[str, dict[str, tuple[str, int]]] = defaultdict(dict)
        for user, key, line in conn.execute(
            "SELECT user_id, key, line::text FROM add_keys WHERE user_id LIKE %s", (like,)
        ):
            sku, _title, _price, quantity = json.loads(line)[0]
            add_keys[user][key] = (sku, quantity)
        outbox: dict[str, dict[str, str | None]] = defaultdict(dict)
        for order_id, service, status in conn.execute(
            "SELECT b.order_id, b.service, b.status FROM outbox b "
            "JOIN orders o USING (order_id) WHERE o.user_id LIKE %s", (like,)
        ):
            outbox[order_id][service] = status
        services = [row[0] for row in conn.execute("SELECT name FROM services ORDER BY name")]
    return Snapshot(stock, sold, carts, dict(orders), dict(add_keys), dict(outbox), services)


def outbox_pending(snapshot: Snapshot) -> int:
    """Order-service pairs without a status yet (a missing row counts as pending)."""
    return sum(
        1 for orders in snapshot.orders.values() for order_id, _ in orders
        for service in snapshot.services
        if snapshot.outbox.get(order_id, {}).get(service) is None
    )


def wait_for_outbox(url: str, prefix: str, settle: float) -> tuple[Snapshot, float]:
    """Poll until every order of the run has every service's status, or *settle* seconds."""
    started = time.monotonic()
    while True:
        snapshot = read_database(url, prefix)
        waited = time.monotonic() - started
        if not outbox_pending(snapshot) or waited >= settle:
            return snapshot, waited
        time.sleep(0.5)


@attrs.define
class Check:
    name: str
    ok: bool
    detail: str


def check_adds(shoppers: list[Shopper], db: Snapshot) -> list[Check]:
    acked = sum(len(s.acked) for s in shoppers)
    missing_keys: list[str] = []
    short: list[str] = []
    unaccounted: list[str] = []
    lost_units = extra_units = 0
    for shopper in shoppers:
        user = shopper.user_id
        keys = db.add_keys.get(user, {})
        missing_keys += [add.key for add in shopper.acked if add.key not in keys]
        held: Lines = Counter(db.carts.get(user, {}))
        for _order_id, lines in db.orders.get(user, []):
            held.update(lines)
        low, high = bounds(shopper)
        for sku in set(low) | set(high) | set(held):
            lost_units += max(0, low[sku] - held[sku])
            extra_units += max(0, held[sku] - high[sku])
        if problem := mismatch(shopper, held, "cart + order"):
            short.append(problem)
        applied: Lines = Counter()
        for sku, quantity in keys.values():
            applied[sku] += quantity
        if +applied != +held:
            unaccounted.append(f"{user}: applied adds {dict(applied)}, held {dict(held)}")
    views = [s.view_mismatch for s in shoppers if s.view_mismatch]
    unknown = sum(len(s.unknown) for s in shoppers)
    resolved = sum(
        1 for s in shoppers for add in s.unknown if add.key in db.add_keys.get(s.user_id, {})
    )
    return [
        Check("acknowledged adds lost", not missing_keys and not lost_units,
              f"{len(missing_keys)} keys missing and {lost_units} units short of {acked} "
              f"acknowledged adds" + (f"; e.g. {(missing_keys + short)[:3]}" if short or
                                      missing_keys else "")),
        Check("adds applied more than once or never asked", not extra_units,
              f"{extra_units} units beyond acknowledged + unknown-outcome adds "
              f"({unknown} adds of unknown outcome, {resolved} of them applied)"),
        Check("every applied add is in the cart or the order", not unaccounted,
              f"{len(unaccounted)} users differ" + (f"; e.g. {unaccounted[:3]}"
                                                    if unaccounted else "")),
        Check("views showed every acknowledged add", not views,
              f"{len(views)} views differ" + (f"; e.g. {views[:3]}" if views else "")),
    ]


def check_orders(shoppers: list[Shopper], db: Snapshot) -> list[Check]:
    stored = {order_id: (user, lines) for user, orders in db.orders.items()
              for order_id, lines in orders}
    acked = [s for s in shoppers if s.order is not None]
    missing: list[str] = []
    for shopper in acked:
        assert shopper.order is not None
        found = stored.get(shopper.order["order_id"])
        if found != (shopper.user_id, quantities(shopper.order["items"])):
            missing.append(f"{shopper.order['order_id']} of {shopper.user_id}: stored {found}")
    doubled = [user for user, orders in db.orders.items() if len(orders) > 1]
    unknown = [s for s in shoppers if s.checkout_unknown]
    placed = sum(1 for s in unknown if s.user_id in db.orders)
    return [
        Check("acknowledged orders stored as answered", not missing,
              f"{len(acked) - len(missing)} of {len(acked)}"
              + (f"; e.g. {missing[:3]}" if missing else "")),
        Check("one order per user (checkout retries placed none twice)", not doubled,
              f"{len(doubled)} users with more than one order; {len(unknown)} checkouts of "
              f"unknown outcome, {placed} of them placed"),
    ]


def check_stock(initial: dict[str, int], start: Snapshot, end: Snapshot) -> list[Check]:
    wrong = []
    for sku in sorted(set(initial) | set(end.stock)):
        sold = end.sold[sku] - start.sold[sku]
        expected = start.stock.get(sku, 0) - sold
        if end.stock.get(sku, 0) < 0 or end.stock.get(sku, 0) != expected:
            wrong.append(f"{sku}: {start.stock.get(sku, 0)} - {sold} sold != "
                         f"{end.stock.get(sku, 0)} available")
    small_sold = end.sold[SMALL_SKU]
    small = initial[SMALL_SKU]
    return [
        Check("no unit oversold (stock at start - sold == available, none below 0)",
              not wrong and small_sold <= small,
              f"{SMALL_SKU}: {small_sold} of {small} sold, {end.stock.get(SMALL_SKU)} left"
              + (f"; {wrong}" if wrong else "")),
    ]


def service_lines(lines: list[str], pattern: re.Pattern[str]) -> dict[str, list[tuple[float, str]]]:
    """order_id -> [(log time, node)] of the lines matching *pattern*."""
    found: dict[str, list[tuple[float, str]]] = defaultdict(list)
    for line in lines:
        if match := pattern.search(line):
            found[match.group(2)].append((log_time(match.group(1)), match.group(3)))
    return found


def check_services(
    db: Snapshot, waited: float, lines: list[str], kills: list[Kill]
) -> tuple[list[Check], dict[str, Any]]:
    orders = [order_id for user_orders in db.orders.values() for order_id, _ in user_orders]
    pending = outbox_pending(db)
    checks = [Check(
        "every order has a status from every service",
        not pending and len(db.services) >= 2,
        f"{len(orders)} orders x {db.services}: {pending} pending after {waited:.1f} s",
    )]
    killed: dict[str, list[float]] = defaultdict(list)
    for kill in kills:
        killed[kill.node].append(kill.at)
    duplicates: dict[str, Any] = {}
    for name, pattern in (("DELIVERY package dispatched", DISPATCHED), ("EMAIL sent", EMAILED)):
        seen = service_lines(lines, pattern)
        never = [order_id for order_id in orders if not seen.get(order_id)]
        explained = unexplained = 0
        examples: list[str] = []
        for order_id in orders:
            times = sorted(seen.get(order_id, []))
            for (at, node), (following, _) in itertools.pairwise(times):
                # The earlier handling's node died before the order was handled again.
                if any(at <= k <= following for k in killed[node]):
                    explained += 1
                else:
                    unexplained += 1
                    examples.append(f"{order_id} by {node} at {at:.3f}, again at {following:.3f}")
        duplicates[name] = {"explained_by_kill": explained, "unexplained": unexplained}
        checks.append(Check(
            f"'{name}' logged for every order, repeated only after a kill",
            not never and not unexplained,
            f"{len(orders) - len(never)} of {len(orders)} orders; {explained} repeated because "
            f"their node was killed before acknowledging, {unexplained} otherwise"
            + (f"; e.g. {(never + examples)[:3]}" if never or examples else ""),
        ))
    return checks, duplicates


def server_report(lines: list[str], kills: list[Kill]) -> dict[str, Any]:
    statuses: Counter[str] = Counter()
    problems: list[str] = []
    exits: list[str] = []
    killed = {kill.pid for kill in kills}
    for line in lines:
        if match := ACCESS.search(line):
            statuses[match.group(1)] += 1
        elif match := NODE_EXITED.search(line):
            if int(match.group(2)) not in killed:
                exits.append(line)
        elif PROBLEM.search(line):
            problems.append(line)
    return {
        "answers_by_status": dict(sorted(statuses.items())),
        "unexpected_exits": exits,
        "error_lines": len(problems),
        "first_error_lines": [line[:400] for line in problems[:5]],
    }


# -- the run ------------------------------------------------------------------------------


def summary(ledger: Ledger, wall: float) -> dict[str, Any]:
    def block(latencies: list[float], failed: int) -> dict[str, Any]:
        return {
            "requests": len(latencies), "failed": failed,
            "rate_per_s": round(len(latencies) / wall, 1) if wall else 0.0,
            "p50_ms": round(percentile(latencies, 50) * 1000, 1),
            "p95_ms": round(percentile(latencies, 95) * 1000, 1),
            "p99_ms": round(percentile(latencies, 99) * 1000, 1),
            "max_ms": round(max(latencies, default=0.0) * 1000, 1),
        }

    every = [x for group in GROUPS for x in ledger.latencies[group]]
    failed = sum(ledger.failed.values())
    overall = block(every, failed)
    overall["failed_pct"] = round(100 * failed / len(every), 3) if every else 0.0
    overall["attempts"] = ledger.attempts
    overall["retried_attempts"] = sum(ledger.retries.values())
    return {
        "overall": overall,
        "groups": {g: block(ledger.latencies[g], ledger.failed[g]) for g in GROUPS},
        "failures": dict(ledger.failures.most_common()),
        "retries": dict(ledger.retries.most_common()),
        "refusals": dict(ledger.refusals.most_common()),
    }


def run_chaos(args: argparse.Namespace) -> dict[str, Any]:
    """Run the chaos scenario as *args* say; the report (see :func:`print_report`)."""
    run_id = secrets.token_hex(3)
    with tempfile.TemporaryDirectory() as scratch:
        initial = chaos_registry(Path(scratch) / "registry", args.small_stock)
        with _database(args) as url:
            cluster = ClusterProcess(
                "--nodes", str(args.nodes), "--database", url,
                "--bind", f"127.0.0.1:{free_port()}", "--registry", str(Path(scratch) / "registry"),
                "--node-args", f"{NODE_ARGS} {args.node_args}".strip(),
            )
            cluster.start()
            try:
                report = _drive(args, cluster, url, run_id, initial)
            finally:
                if cluster.process is not None and cluster.process.poll() is None:
                    report_exit = cluster.stop()
                    if report_exit == -9:
                        log("the cluster did not stop cleanly: killed")
                else:
                    report_exit = cluster.process.returncode if cluster.process else None
            report["cluster_exit"] = report_exit
    return report


@contextmanager
def _database(args: argparse.Namespace) -> Iterator[str]:
    if args.database:
        yield args.database
        return
    with scratch_schema(DEFAULT_URL, "chaos", keep=args.keep_schema) as schema:
        url = with_schema(DEFAULT_URL, schema)
        log(f"fresh schema: {url}")
        try:
            yield url
        finally:
            if args.keep_schema:
                log(f"kept schema {schema}")


def _drive(
    args: argparse.Namespace, cluster: ClusterProcess, url: str, run_id: str,
    initial: dict[str, int],
) -> dict[str, Any]:
    prefix = f"chaos-{run_id}-"
    log(f"cluster ready at {cluster.base_url}: {args.nodes} nodes; {args.users} users for "
        f"{args.seconds:g} s, kill -9 every {args.kill_every:g} s")
    start = read_database(url, prefix)
    nodes = Nodes(cluster)
    nodes.update()
    starts_before = nodes.starts
    ledger = Ledger()
    stop_load, stop_kills = threading.Event(), threading.Event()
    kills: list[Kill] = []
    rng = random.Random(args.seed)
    users = [VirtualUser(n, cluster.base_url, ledger, args, run_id) for n in range(args.users)]
    threads = [threading.Thread(target=u.run, args=(stop_load,), daemon=True) for u in users]
    began, began_wall = time.monotonic(), time.time()
    killer = threading.Thread(
        target=kill_nodes, args=(nodes, began, args.kill_every, stop_kills, rng, kills),
        daemon=True,
    )
    for n, thread in enumerate(threads):  # spread the first requests over half a second
        thread.start()
        time.sleep(0.5 / max(1, args.users) if n else 0)
    if args.kill_every > 0:
        killer.start()
    time.sleep(max(0.0, args.seconds - (time.monotonic() - began)))
    stop_kills.set()
    stop_load.set()
    if killer.is_alive():
        killer.join()
    deadline = time.monotonic() + STOP_GRACE
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    wall = time.monotonic() - began
    stragglers = sum(thread.is_alive() for thread in threads)
    log(f"load done in {wall:.1f} s ({len(kills)} kills); waiting for the outbox")

    end, waited = wait_for_outbox(url, prefix, args.settle)
    # The services log before they acknowledge: give the forwarded lines a moment to arrive.
    time.sleep(0.5)
    nodes.update()
    lines = list(cluster.lines)
    with ledger.lock:
        shoppers = list(ledger.shoppers)
    checks = [
        *check_adds(shoppers, end),
        *check_orders(shoppers, end),
        *check_stock(initial, start, end),
    ]
    service_checks, duplicates = check_services(end, waited, lines, kills)
    checks += service_checks
    stats = summary(ledger, wall)
    data_ok = all(check.ok for check in checks)
    goal_met = stats["overall"]["failed_pct"] < 100 * FAILED_GOAL
    killed_nodes = Counter(kill.node for kill in kills)
    return {
        "config": {
            "seconds": args.seconds, "nodes": args.nodes, "users": args.users,
            "kill_every": args.kill_every, "retries": args.retries,
            "think_scale": args.think_scale, "small_stock": args.small_stock,
            "seed": args.seed, "node_args": f"{NODE_ARGS} {args.node_args}".strip(),
        },
        "wall_s": round(wall, 1),
        "users_stuck_at_end": stragglers,
        "requests": stats,
        "kills": {
            "count": len(kills), "by_node": dict(sorted(killed_nodes.items())),
            "restarts_seen": nodes.starts - starts_before,
            "at_s": [round(k.at - began_wall, 1) for k in kills],
        },
        "orders": {
            "acknowledged": sum(1 for s in shoppers if s.order is not None),
            "stored": sum(len(o) for o in end.orders.values()),
            "users": len(shoppers),
            "outbox_wait_s": round(waited, 1),
            "handled_again_after_kill": duplicates,
        },
        "checks": [attrs.asdict(check) for check in checks],
        "server": server_report(lines, kills),
        "data_ok": data_ok,
        "failed_goal_met": goal_met,
        "passed": data_ok and goal_met,
    }


# -- the report ---------------------------------------------------------------------------


def print_report(report: dict[str, Any]) -> None:
    config, requests = report["config"], report["requests"]
    overall = requests["overall"]
    print(f"\nchaos run: {config['seconds']:g} s, {config['nodes']} nodes behind HAProxy, "
          f"{config['users']} users, kill -9 every {config['kill_every']:g} s "
          f"(wall {report['wall_s']} s)")
    verdict = "PASS" if report["failed_goal_met"] else "FAIL"
    print(f"requests   {overall['requests']} ({overall['rate_per_s']}/s, {overall['attempts']} "
          f"attempts, {overall['retried_attempts']} retried); failed after retries "
          f"{overall['failed']} = {overall['failed_pct']:.3f} %  (goal < 1 %: {verdict})")
    print(f"latency    p50 {overall['p50_ms']} ms  p95 {overall['p95_ms']} ms  "
          f"p99 {overall['p99_ms']} ms  max {overall['max_ms']} ms (per request, retries included)")
    print(f"  {'group':9s} {'requests':>8s} {'failed':>6s} {'p50 ms':>7s} {'p95 ms':>7s}")
    for group, row in requests["groups"].items():
        print(f"  {group:9s} {row['requests']:8d} {row['failed']:6d} {row['p50_ms']:7.1f} "
              f"{row['p95_ms']:7.1f}")
    for title, counts in (("failed requests by reason (last attempt)", requests["failures"]),
                          ("retried attempts by reason", requests["retries"]),
                          ("refused as expected (not failures)", requests["refusals"])):
        print(f"{title}:" + ("" if counts else " none"))
        for reason, count in counts.items():
            print(f"  {count:5d}  {reason}")
    kills = report["kills"]
    print(f"kills      {kills['count']} {kills['by_node']} at {kills['at_s']} s; "
          f"node starts seen {kills['restarts_seen']}")
    orders = report["orders"]
    print(f"orders     {orders['acknowledged']} acknowledged, {orders['stored']} stored, "
          f"{orders['users']} user ids; outbox settled in {orders['outbox_wait_s']} s")
    print("data checks:")
    for check in report["checks"]:
        print(f"  {'PASS' if check['ok'] else 'FAIL'}  {check['name']}: {check['detail']}")
    server = report["server"]
    print(f"server     answers by status {server['answers_by_status']}; "
          f"{len(server['unexpected_exits'])} unexpected node exits; "
          f"{server['error_lines']} error lines; cluster exit {report['cluster_exit']}")
    for line in server["unexpected_exits"][:5] + server["first_error_lines"]:
        print(f"    {line}")
    print(f"result     {'PASS' if report['passed'] else 'FAIL'} (data "
          f"{'intact' if report['data_ok'] else 'CHECKS FAILED'}, failed requests "
          f"{overall['failed_pct']:.3f} %)")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=60.0, help="length of the load")
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--users", type=int, default=30, help="virtual users (threads)")
    parser.add_argument("--kill-every", type=float, default=5.0, metavar="S",
                        help="seconds between kills (0: no kills)")
    parser.add_argument("--database", metavar="URL",
                        help="PostgreSQL URL of an empty schema (default: a fresh schema on "
                        f"{DEFAULT_URL}, dropped at the end)")
    parser.add_argument("--keep-schema", action="store_true",
                        help="do not drop the fresh schema at the end")
    parser.add_argument("--retries", type=int, default=4, help="retries of a failed request")
    parser.add_argument("--think-scale", type=float, default=1.0,
                        help="multiply every think time (0: none)")
    parser.add_argument("--small-stock", type=int, default=100,
                        help=f"{SMALL_SKU} units (everything else: {AMPLE_STOCK})")
    parser.add_argument("--settle", type=float, default=60.0,
                        help="seconds to wait at most for every order's service statuses")
    parser.add_argument("--node-args", default="", help="more `trioshop run` options")
    parser.add_argument("--seed", type=int, default=1, help="random seed (users, kills)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    if args.nodes < 1 or args.users < 1 or args.seconds <= 0:
        parser.error("--nodes, --users and --seconds must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if shutil.which("haproxy") is None:
        log("haproxy is not installed (Debian/Ubuntu: apt-get install haproxy)")
        return 2
    try:
        report = run_chaos(args)
    except psycopg.OperationalError as exc:
        log(f"no PostgreSQL: {exc}".strip())
        return 2
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_report(report)
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
