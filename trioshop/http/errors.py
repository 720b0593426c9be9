"""Every error answer is ``{"error": message}`` with a fitting 4xx/5xx status, one table
saying which for each exception; never a stack."""

from __future__ import annotations

import logging
from typing import Any

import attrs
from quart import Quart, Response, jsonify, request
from werkzeug.exceptions import HTTPException

from trioshop.domain import (
    CartEmpty,
    IdempotencyKeyReused,
    InsufficientStock,
    ItemNotInCart,
    NoActiveCart,
)
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


@attrs.frozen(kw_only=True)
class Answer:
    """How a route answers one exception class: ``status`` with ``{"error": message}``.

    ``message`` is a template given the exception's text as ``{error}`` and the route's path
    parameters (e.g. ``{sku}``); an :class:`ActorTimeout`'s message also says whether the
    change can have happened. ``busy`` adds ``Retry-After``; ``log`` names the warning logged
    with the exception's text. ``description`` is what the OpenAPI document says of it.
    """

    status: int
    description: str
    message: str = "{error}"
    busy: bool = False
    log: str | None = None


BUSY = "The cart or the store is busy; retry after Retry-After"

# How every route answers these exceptions, unless ROUTE_ANSWERS says otherwise for it.
ANSWERS: dict[type[Exception], Answer] = {
    NoActiveCart: Answer(
        status=400, message="No active cart for this user", description="No active cart"
    ),
    CartEmpty: Answer(status=400, message="Cart is empty", description="Empty cart"),
    InsufficientStock: Answer(status=409, description="More than the stock on hand"),
    IdempotencyKeyReused: Answer(
        status=422, description="Idempotency-Key already used by another user"
    ),
    MailboxFull: Answer(
        status=503, message="Cart is busy, retry shortly", description=BUSY, busy=True
    ),
    TooManyActors: Answer(
        status=503, message="Too many active carts, retry shortly", description=BUSY, busy=True
    ),
    # The cart's in-memory state is gone; a retry reaches a fresh cart.
    ActorCrashed: Answer(
        status=503, message="Cart process failed and was reset, retry", description=BUSY,
        busy=True,
    ),
    ActorTimeout: Answer(
        status=504, message="Cart process did not respond",
        description="The cart did not answer in time",
    ),
    OutcomeUnknown: Answer(
        status=504, log="store outcome unknown",
        message="Storage did not confirm the change; it may have been applied: retry with the "
        "same Idempotency-Key",
        description="The store did not confirm the change",
    ),
    StoreError: Answer(
        status=503, message="Storage is unavailable, retry shortly", description=BUSY,
        busy=True, log="store unavailable",
    ),
}

_NOT_IN_CART = Answer(status=404, message="Item not in cart: {sku}", description="Item not in cart")
# Per route (Quart endpoint name): where it means something else by the same exception.
ROUTE_ANSWERS: dict[str, dict[type[Exception], Answer]] = {
    "api.checkout": {
        ActorTimeout: Answer(
            status=504, message="Checkout timed out", description="Checkout timed out"
        ),
    },
    "api.remove_item": {NoActiveCart: _NOT_IN_CART, ItemNotInCart: _NOT_IN_CART},
}


def answer_for(error: type[Exception], endpoint: str | None = None) -> Answer | None:
    """How *endpoint* answers an *error*: its own entry for the class or its nearest base,
    else the shared one; ``None`` for an exception no table names (a 500)."""
    for table in (ROUTE_ANSWERS.get(endpoint or "", {}), ANSWERS):
        for cls in error.__mro__:
            if cls in table:
                return table[cls]
    return None


_HTTP_MESSAGES = {
    404: "Not found",
    405: "Method not allowed",
    413: "Request body too large",
}


def register_error_handlers(app: Quart, *, retry_after: int, max_body_bytes: int) -> None:
    """Map API, runtime and HTTP errors to JSON answers (:data:`ANSWERS`, with the
    per-route :data:`ROUTE_ANSWERS`); anything unexpected is a logged 500."""
    busy = {"Retry-After": str(retry_after)}

    @app.errorhandler(ApiError)
    async def api_error(error: ApiError) -> Response:
        return error_response(error.status, error.message, error.headers)

    async def tabled(error: Exception) -> Response:
        answer = answer_for(type(error), request.endpoint)
        if answer is None:  # e.g. a route's own exception raised by another route
            return await unexpected(error)
        if answer.log is not None:
            log_event(logger, answer.log, logging.WARNING, error=str(error))
        message = answer.message.format_map({"error": str(error), **(request.view_args or {})})
        if isinstance(error, ActorTimeout):
            message = timeout_message(message, error)
        return error_response(answer.status, message, busy if answer.busy else None)

    handled = set(ANSWERS).union(*ROUTE_ANSWERS.values())
    for error_class in sorted(handled, key=lambda cls: cls.__qualname__):
        app.register_error_handler(error_class, tabled)

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
