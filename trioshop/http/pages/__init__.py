"""The storefront (``/``) and the ops page (``/ops``): HTML, CSS and JS shipped in ``static/``."""

from __future__ import annotations

import hashlib
import html
import json
from importlib import resources
from typing import Any

import attrs
from quart import Blueprint, Response, request

from trioshop import events
from trioshop.domain.money import CURRENCY
from trioshop.http.admin import check_admin_access, check_same_origin, request_client
from trioshop.http.errors import ApiError
from trioshop.http.live import OPS_COOKIE, OPS_COOKIE_PATH, LiveFeed, check_ops_access

CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
}
# Everything a page loads comes from this server: no CDN, no inline script or style.
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    # Not "no-referrer": under it a browser sends "Origin: null" with the sign-in form, which
    # the admin guard must refuse as it refuses other sites (see check_same_origin).
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-cache",
}


@attrs.frozen(kw_only=True)
class Asset:
    """One file, read once when the app is built: its bytes, type and entity tag."""

    body: bytes
    content_type: str
    etag: str

    @classmethod
    def of(cls, name: str, body: bytes) -> Asset:
        suffix = name[name.rfind("."):]
        return cls(
            body=body, content_type=CONTENT_TYPES[suffix],
            etag=hashlib.sha256(body).hexdigest()[:20],
        )


REQUIRED = (
    "storefront.html", "ops.html", "signin.html", "style.css", "dom.js", "storefront.js", "ops.js"
)


def load_assets() -> dict[str, Asset]:
    """Every file of ``static/`` (which the package ships), by name.

    Raises ``RuntimeError`` naming what is missing if the installed package lacks them (a
    wheel built without its package data).
    """
    folder = resources.files(__package__).joinpath("static")
    assets = {
        entry.name: Asset.of(entry.name, entry.read_bytes())
        for entry in (folder.iterdir() if folder.is_dir() else ())
        if entry.is_file() and entry.name[entry.name.rfind("."):] in CONTENT_TYPES
    }
    missing = [name for name in REQUIRED if name not in assets]
    if missing:
        raise RuntimeError(
            f"trioshop is installed without its page files ({', '.join(missing)} in "
            "trioshop/http/pages/static): reinstall it from a build that includes package data"
        )
    return assets


# In JSON inside a <script> element these would let a string end the element or open a comment;
# escaped, they are the same JSON.
_SCRIPT_ESCAPES = str.maketrans({"<": "\\u003c", ">": "\\u003e", "&": "\\u0026"})


def script_json(value: Any) -> str:
    """*value* as JSON to place inside ``<script type="application/json">`` unescaped."""
    return json.dumps(value, separators=(",", ":")).translate(_SCRIPT_ESCAPES)


def render(template: Asset, *, data: Any = None, **values: str) -> Asset:
    """*template* with each ``{{name}}`` replaced by its HTML-escaped value, and ``{{data}}``
    by *data* as JSON for a script element (see :func:`script_json`)."""
    text = template.body.decode()
    for name, value in values.items():
        text = text.replace("{{" + name + "}}", html.escape(value))
    text = text.replace("{{data}}", script_json(data))
    return Asset.of("page.html", text.encode())


def answer(asset: Asset, status: int = 200) -> Response:
    """*asset* with the page headers; 304 when the client's copy is current."""
    if status == 200 and asset.etag in request.if_none_match:
        response = Response("", status=304)
    else:
        response = Response(asset.body, status=status, content_type=asset.content_type)
    response.headers.update(PAGE_HEADERS)
    response.set_etag(asset.etag)
    return response


def page_routes(
    api_prefix: str, admin_token: str | None, live: LiveFeed, *, user_auth: bool
) -> Blueprint:
    """``GET /`` (public; its token panel only with *user_auth*), ``GET /ops`` (guarded like
    the admin API; it carries *live*'s current snapshot, so its figures show before the
    stream connects), ``POST /ops/session`` (the ops sign-in form, when an admin token is set)
    and ``GET /pages/<file>``."""
    pages = Blueprint("pages", __name__)
    assets = load_assets()
    ops_event_names = json.dumps(events.OPS_PAGE)  # what ops.js reads by role
    storefront = render(
        assets["storefront.html"], api_prefix=api_prefix, currency=CURRENCY,
        token_box="" if user_auth else "hidden",
    )

    def denied(error: ApiError, message: str | None = None) -> Response:
        """A person gets the sign-in page (or why not); a program gets the JSON error."""
        if not request.accept_mimetypes.accept_html:
            raise error
        page = render(
            assets["signin.html"], message=message or error.message,
            form_state="" if admin_token else "hidden",
        )
        response = answer(page, error.status)
        response.headers.update(error.headers)
        response.headers["Cache-Control"] = "no-store"
        return response

    @pages.get("/")
    async def storefront_page() -> Response:
        return answer(storefront)

    @pages.get("/ops")
    async def ops_page() -> Response:
        try:
            check_ops_access(admin_token)
        except ApiError as error:
            return denied(error, "Sign in with the server's admin token to watch this node.")
        response = answer(
            render(assets["ops.html"], data=live.snapshot(), event_names=ops_event_names)
        )
        response.headers["Cache-Control"] = "no-store"
        return response

    @pages.post("/ops/session")
    async def sign_in() -> Response:
        """Check the admin token typed into the sign-in form; keep it in an HttpOnly cookie.
        A form posted from another site's page is a 403 (see ``check_same_origin``)."""
        host = request.headers.get("Host", "")
        check_same_origin(request.method, request.headers.get("Origin"), host)
        token = (await request.form).get("token", "").strip()
        if admin_token:
            try:
                check_admin_access(admin_token, f"Bearer {token}", request_client(), host)
            except ApiError as error:
                return denied(
                    error, "That token does not match this server's admin token. Try again."
                )
        response = Response("", status=303, headers={"Location": "/ops"})
        if admin_token:
            response.set_cookie(
                OPS_COOKIE, token, path=OPS_COOKIE_PATH, httponly=True, samesite="Strict",
                secure=request.scheme == "https",
            )
        return response

    @pages.get("/pages/<name>")
    async def asset(name: str) -> Response:
        found = assets.get(name)
        if found is None or name.endswith(".html"):
            raise ApiError(404, f"Not found: /pages/{name}")
        return answer(found)

    return pages
