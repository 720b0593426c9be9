"""Who may watch the node: the admin API's rule, with the token also accepted from a cookie."""

from __future__ import annotations

from quart import request

from trioshop.http.admin import check_admin_request

# Set by the ops sign-in form (POST /ops/session): a browser cannot send a bearer header on
# a page load or an EventSource, so the token travels in this HttpOnly cookie instead.
OPS_COOKIE = "trioshop_ops"
OPS_COOKIE_PATH = "/ops"


def check_ops_access(admin_token: str | None) -> None:
    """Raise the admin API's 401 or 403 ``ApiError`` unless this request may see ``/ops``.

    The ``Authorization`` header wins; without one, the sign-in cookie stands for it. The
    client address, ``Host`` and ``Origin`` rules are the admin API's.
    """
    authorization = request.headers.get("Authorization")
    cookie = request.cookies.get(OPS_COOKIE)
    if authorization is None and admin_token and cookie:
        authorization = f"Bearer {cookie}"
    check_admin_request(admin_token, authorization)
