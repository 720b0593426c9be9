"""The pages and the live stream in process (QuartTrio test client): guard, stream, overflow."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio

from tests.browser.sse import Frame, FrameBuffer
from tests.helpers import ShopClient, open_shop_client
from trioshop.config import Settings
from trioshop.http.auth import UserAuth
from trioshop.http.live import LiveFeed
from trioshop.registry import Registry

HTML = {"Accept": "text/html,application/xhtml+xml"}
AUTH_SECRET = "live-app-secret-0123456789abcdef01"  # a user-auth secret (32 bytes or more)


class Stream:
    """One open ``GET /ops/stream`` of the test client, read frame by frame."""

    def __init__(self, connection: Any) -> None:
        self.connection = connection
        self.buffer = FrameBuffer()
        self.ready: list[Frame] = []
        self.ended = False

    async def next(self) -> Frame | None:
        """The next frame, or ``None`` once the server ended the body."""
        while not self.ready:
            try:
                chunk = await self.connection.receive()
            except trio.EndOfChannel:
                self.ended = True
                return None
            self.ready.extend(self.buffer.feed(chunk))
        return self.ready.pop(0)

    async def until(self, wanted: Any) -> list[Frame]:
        """Frames up to and including the first for which ``wanted(frame)`` holds."""
        seen: list[Frame] = []
        with trio.fail_after(10):
            while True:
                frame = await self.next()
                assert frame is not None, f"the stream ended before the frame wanted: {seen}"
                seen.append(frame)
                if wanted(frame):
                    return seen

    async def rest(self) -> list[Frame]:
        """Every frame until the server ends the stream."""
        seen: list[Frame] = []
        with trio.fail_after(10):
            while (frame := await self.next()) is not None:
                seen.append(frame)
        return seen


@asynccontextmanager
async def open_stream(
    client: ShopClient, headers: dict[str, str] | None = None, client_ip: str = "127.0.0.1"
) -> AsyncIterator[Stream]:
    connection = client.client.request(
        "/ops/stream", method="GET", headers=headers or {},
        scope_base={"client": (client_ip, 50000)},
    )
    # Leaving a stream the server has not ended cancels it, as a client going away does (the
    # test client would otherwise wait for the end of a body that never ends).
    with trio.CancelScope() as scope:
        async with connection as open_connection:
            await open_connection.send_complete()
            stream = Stream(open_connection)
            yield stream
            if not stream.ended:
                scope.cancel()


def feed(client: ShopClient) -> LiveFeed:
    live: LiveFeed = client.app.extensions["trioshop.live"]
    return live


def is_log(event: str) -> Any:
    return lambda frame: frame.event == "log" and frame.data["event"] == event


@pytest.fixture(autouse=True)
def info_logs(caplog: pytest.LogCaptureFixture) -> None:
    """The feed shows what is logged: log trioshop's info events, as ``trioshop run`` does."""
    caplog.set_level(logging.INFO, logger="trioshop")


async def test_the_storefront_and_its_files_come_from_the_package(
    shop_client: ShopClient,
) -> None:
    """``/`` is the storefront page (with the API prefix); its CSS and JS are served, cacheable."""
    status, _, headers = await shop_client.request("GET", "/")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert "script-src 'self'" in headers["Content-Security-Policy"]
    page = await (await shop_client.client.get("/")).get_data(as_text=True)
    assert '<meta name="trioshop-api" content="/api">' in page
    assert 'src="/pages/storefront.js"' in page and "http" not in page.split("<body")[0]
    for name, kind in [("style.css", "text/css"), ("storefront.js", "text/javascript"),
                       ("ops.js", "text/javascript")]:
        status, _, headers = await shop_client.request("GET", f"/pages/{name}")
        assert status == 200 and headers["Content-Type"].startswith(kind)
        again, _, _ = await shop_client.request(
            "GET", f"/pages/{name}", headers={"If-None-Match": headers["ETag"]}
        )
        assert again == 304
    status, body, _ = await shop_client.request("GET", "/pages/nothing.js")
    assert status == 404 and body == {"error": "Not found: /pages/nothing.js"}
    status, _, _ = await shop_client.request("GET", "/pages/ops.html")
    assert status == 404  # pages are served at their routes only (the ops page is guarded)


async def test_the_storefront_says_its_currency_and_whether_it_needs_tokens(
    registry: Registry,
) -> None:
    """The storefront names the currency of its prices; its token panel is hidden unless the
    server authenticates users."""
    async with open_shop_client(registry) as client:
        page = await (await client.client.get("/")).get_data(as_text=True)
        assert '<meta name="trioshop-currency" content="USD">' in page
        assert '<details class="panel" id="token-box" hidden>' in page
    async with open_shop_client(registry, auth=UserAuth.from_secret(AUTH_SECRET)) as client:
        page = await (await client.client.get("/")).get_data(as_text=True)
        assert '<details class="panel" id="token-box" >' in page


async def test_the_ops_page_carries_its_first_snapshot(registry: Registry) -> None:
    """``/ops`` embeds the snapshot the stream would send, as JSON no value can end early."""
    node = "n</script><!--"
    async with open_shop_client(registry, Settings(node_id=node)) as client:
        status, _, _ = await client.request(
            "POST", "/api/cart/ann/items", json={"sku": "HP-005", "quantity": 1}
        )
        assert status == 200
        answer = await client.client.get("/ops", scope_base={"client": ("127.0.0.1", 50000)})
        page = await answer.get_data(as_text=True)
    found = re.search(
        r'<script id="first-snapshot" type="application/json">(.*?)</script>', page, re.S
    )
    assert found is not None and "<" not in found.group(1)
    first = json.loads(found.group(1))
    assert first["node"] == node and first["actors"]["live"] == 1
    assert [actor["name"] for actor in first["actor_list"]] == ["cart:ann"]
    assert {"per_second", "p95_ms", "rate_now"} <= set(first["requests"])


async def test_ops_answers_loopback_only_without_a_token(shop_client: ShopClient) -> None:
    """No admin token: the page and its stream answer loopback clients; others get 403."""
    status, _, headers = await shop_client.request("GET", "/ops")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    status, body, _ = await shop_client.request("GET", "/ops", client="10.1.2.3")
    assert status == 403 and "loopback" in body["error"]
    status, _, headers = await shop_client.request(
        "GET", "/ops", client="10.1.2.3", headers=HTML
    )
    assert status == 403 and headers["Content-Type"].startswith("text/html")
    status, body, _ = await shop_client.request("GET", "/ops/stream", client="10.1.2.3")
    assert status == 403 and "loopback" in body["error"]


async def test_ops_with_a_token_takes_the_header_or_the_sign_in_cookie(
    registry: Registry,
) -> None:
    """With --admin-token: 401 (a sign-in form for a person); the form sets an HttpOnly cookie."""
    async with open_shop_client(registry, Settings(admin_token="s3cret")) as client:
        status, body, headers = await client.request("GET", "/ops")
        assert status == 401 and headers["WWW-Authenticate"].startswith("Bearer")
        assert "Admin API needs" in body["error"]
        page = await client.client.get("/ops", headers=HTML)
        assert page.status_code == 401
        assert 'action="/ops/session"' in await page.get_data(as_text=True)
        status, _, _ = await client.request("GET", "/ops/stream")
        assert status == 401

        wrong = await client.client.post("/ops/session", form={"token": "guess"}, headers=HTML)
        assert wrong.status_code == 401
        assert "does not match" in await wrong.get_data(as_text=True)
        right = await client.client.post("/ops/session", form={"token": "s3cret"})
        assert right.status_code == 303 and right.headers["Location"] == "/ops"
        cookie = right.headers["Set-Cookie"]
        assert re.match(r"trioshop_ops=s3cret;", cookie)
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/ops" in cookie

        signed_in = {"Cookie": "trioshop_ops=s3cret"}
        for path in ["/ops"]:
            status, _, _ = await client.request("GET", path, headers=signed_in, client="10.9.9.9")
            assert status == 200
        bearer = {"Authorization": "Bearer s3cret"}
        status, _, _ = await client.request("GET", "/ops", headers=bearer, client="10.9.9.9")
        assert status == 200
        async with open_stream(client, signed_in, client_ip="10.9.9.9") as stream:
            hello = await stream.until(lambda f: f.event == "hello")
            assert hello[-1].data["epoch"] == feed(client).hub.epoch


async def test_the_stream_carries_events_and_snapshots(shop_client: ShopClient) -> None:
    """Cart events arrive as they are logged; a snapshot a second lists the live actors."""
    async with open_stream(shop_client) as stream:
        first = await stream.until(lambda f: f.event == "hello")
        assert first[0].retry == 1000
        assert first[-1].id == f"{feed(shop_client).hub.epoch}-{first[-1].data['position']}"
        status, _, _ = await shop_client.add("ann", "KB-002", 2)
        assert status == 200
        created = await stream.until(is_log("cart created"))
        assert created[-1].data["fields"]["user_id"] == "ann"
        added = await stream.until(is_log("item added"))
        assert added[-1].data["fields"] == {
            "user_id": "ann", "pid": created[-1].data["fields"]["pid"], "sku": "KB-002",
            "quantity": 2,
        }
        assert all(frame.data["logger"] != "trioshop.access" for frame in added)
        snapshot = (await stream.until(lambda f: f.event == "snapshot"))[-1].data
        assert snapshot["actors"]["live"] == 1
        assert [a["name"] for a in snapshot["actor_list"]] == ["cart:ann"]
        assert {s["name"] for s in snapshot["services"]} == {"delivery", "notifier"}
        assert snapshot["live"]["viewers"] == 1

        status, _, _ = await shop_client.request("POST", "/api/cart/ann/checkout")
        assert status == 200
        wanted = {"checkout completed", "cart ended", "DELIVERY scheduling", "EMAIL sent to ann"}
        seen: dict[str, Frame] = {}

        def all_seen(frame: Frame) -> bool:
            if frame.event == "log" and frame.data["event"] in wanted:
                seen[frame.data["event"]] = frame
            return seen.keys() == wanted

        await stream.until(all_seen)
        assert seen["cart ended"].data["fields"]["reason"] == "stopped"


async def test_a_stream_ends_before_the_idle_deadline_and_resumes_losing_nothing(
    registry: Registry,
) -> None:
    """Each stream says bye and ends before --connection-idle; Last-Event-ID resumes exactly."""
    settings = Settings(idle_connection_timeout=0.4)  # streams of 0.3 s
    async with open_shop_client(registry, settings) as client:
        async with open_stream(client) as stream:
            frames = await stream.rest()
        assert frames[-1].event == "bye"
        last_id = [f.id for f in frames if f.id is not None][-1]

        for user in ["bea", "cid", "dan"]:  # while no stream is open
            status, _, _ = await client.add(user, "HP-005")
            assert status == 200

        async with open_stream(client, {"Last-Event-ID": last_id}) as stream:
            frames = await stream.rest()
        logs = [f for f in frames if f.event == "log"]
        position = next(f for f in frames if f.event == "hello").data["position"]
        assert [f.seq for f in logs] == list(range(position + 1, position + 1 + len(logs)))
        assert str(position) == last_id.rsplit("-", 1)[1]
        added = [f.data["fields"]["user_id"] for f in logs if f.data["event"] == "item added"]
        assert added == ["bea", "cid", "dan"]
        assert not any(f.event in ("gap", "dropped") for f in frames)


async def test_an_overflowing_viewer_is_told_and_counted(shop_client: ShopClient) -> None:
    """Events beyond a viewer's buffer are dropped for it, said in a frame, counted in /metrics."""
    hub = feed(shop_client).hub
    async with open_stream(shop_client) as stream:
        await stream.until(lambda f: f.event == "hello")
        start = hub.published
        for n in range(hub.viewer_capacity + 25):  # no checkpoint: the viewer cannot keep up
            hub.publish({"event": "burst", "fields": {"n": n}})
        frames = await stream.until(lambda f: f.event == "dropped")
        bursts = [f for f in frames if f.event == "log" and f.data["event"] == "burst"]
        assert len(bursts) == hub.viewer_capacity
        assert frames[-1].data == {
            "count": 25, "from_seq": start + hub.viewer_capacity + 1,
            "to_seq": start + hub.viewer_capacity + 25,
        }
    metrics = await (await shop_client.client.get("/metrics")).get_data(as_text=True)
    assert "trioshop_live_events_dropped_total 25.0" in metrics


async def test_viewers_beyond_the_limit_are_asked_to_retry(shop_client: ShopClient) -> None:
    """Live viewers are bounded: one more gets 503 with Retry-After."""
    feed(shop_client).hub.max_viewers = 1
    async with open_stream(shop_client) as stream:
        await stream.until(lambda f: f.event == "hello")
        status, body, headers = await shop_client.request("GET", "/ops/stream")
        assert status == 503 and headers["Retry-After"] == "5"
        assert body == {"error": "Too many live viewers, retry shortly"}
    status, _, _ = await shop_client.request("GET", "/ops")
    assert status == 200
