"""Every error answer is ``{"error": message}`` with a fitting 4xx/5xx status; never a stack."""

from __future__ import annotations

import logging
from typing import Any

from quart import Quart, Response, jsonify
from werkzeug.exceptions import HTTPException

from trioshop.http.shapes import ERROR
from trioshop.logs import log_event
from trioshop.runtime import ActorCrashed, ActorTimeout, MailboxFull, TooManyActors
from trioshop.store import OutcomeUnknown, StoreError

logger = logging.getLogger("trioshop.http")


class ApiError(Exception):
    """Raised by a handler to answer *status* with ``{"error": message}`` (and *headers*)."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    response: Response = jsonify(ERROR.render(None, error=message))
    response.status_code = status
    response.headers.update(headers or {})
    return response


def timeout_message(what: str, error: ActorTimeout) -> str:
    """*what* timed out, and whether a change can have happened (see ``Ticket``)."""
    if error.maybe_applied is None:  # a read, or nothing the caller could have changed
        return what
    if error.maybe_applied:
        return (
            f"{what}; the change may have been applied: retry with the same Idempotency-Key"
        )
    return f"{what}; nothing was changed"


_HTTP_MESSAGES = {
    404: "Not found",
    405: "Method not allowed",
    413: "Request body too large",
}


def register_error_handlers(app: Quart, *, retry_after: int, max_body_bytes: int) -> None:
    """Map API, runtime and HTTP errors to JSON answers; anything unexpected is a logged 500."""
    busy = {"Retry-After": str(retry_after)}

    @app.errorhandler(ApiError)
    async def api_error(error: ApiError) -> Response:
        return error_response(error.status, error.message, error.headers)

    @app.errorhandler(MailboxFull)
    async def mailbox_full(error: MailboxFull) -> Response:
        return error_response(503, "Cart is busy, retry shortly", busy)

    @app.errorhandler(TooManyActors)
    async def too_many_carts(error: TooManyActors) -> Response:
        return error_response(503, "Too many active carts, retry shortly", busy)

    @app.errorhandler(ActorTimeout)
    async def timeout(error: ActorTimeout) -> Response:
        return error_response(504, timeout_message("Cart process did not respond", error))

    @app.errorhandler(ActorCrashed)
    async def crashed(error: ActorCrashed) -> Response:
        # The cart's in-memory state is gone; a retry reaches a fresh cart.
        return error_response(503, "Cart process failed and was reset, retry", busy)

    @app.errorhandler(OutcomeUnknown)
    async def outcome_unknown(error: OutcomeUnknown) -> Response:
        log_event(logger, "store outcome unknown", logging.WARNING, error=str(error))
        return error_response(
            504, "Storage did not confirm the change; it may have been applied: retry with the "
            "same Idempotency-Key",
        )

    @app.errorhandler(StoreError)
    async def store_unavailable(error: StoreError) -> Response:
        log_event(logger, "store unavailable", logging.WARNING, error=str(error))
        return error_response(503, "Storage is unavailable, retry shortly", busy)

    @app.errorhandler(HTTPException)
    async def http_error(error: HTTPException) -> Response:
        status = error.code or 500
        message = _HTTP_MESSAGES.get(status, error.name)
        if status == 413:
            message = f"Request body too large (limit {max_body_bytes} bytes)"
        headers: dict[str, Any] = {}
        if status == 405 and error.valid_methods:  # type: ignore[attr-defined]
            headers["Allow"] = ", ".join(error.valid_methods)  # type: ignore[attr-defined]
        return error_response(status, message, headers)

    @app.errorhandler(Exception)
    async def unexpected(error: Exception) -> Response:
        log_event(logger, "unhandled error", logging.ERROR, error=repr(error), exc_info=error)
        return error_response(500, "Internal server error")
