"""Error answers: one shape (``{"detail": [{"field": ..., "message": ...}]}``) for every status.

Handlers never echo request headers, and an unexpected exception is answered with a generic
message (its traceback goes to the log, which holds no keys: they are never in a local name
that logging formats).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from pydantic_core import ErrorDetails
from starlette.exceptions import HTTPException as StarletteHTTPException

from refund_worker.api.schemas import FieldError
from refund_worker.errors import BrokerUnavailable, DatabaseUnavailable

log = logging.getLogger(__name__)

#: Seconds a client should wait before retrying a 503.
RETRY_AFTER_SECONDS = 5
#: An unknown field's name is echoed cut to this many characters (it may be a megabyte long).
MAX_FIELD_NAME = 64

_VALUE_ERROR = re.compile(
    r"^(?:Value error, )?(?P<field>[a-z_][a-z0-9_./]*): (?P<message>.+)$", re.S
)


class ApiError(Exception):
    """Raised by handlers to answer an error: a status, its problems and extra headers."""

    def __init__(
        self,
        status_code: int,
        errors: Sequence[FieldError],
        *,
        headers: Mapping[str, str] | None = None,
        refund_id: str | None = None,
    ) -> None:
        super().__init__(status_code, [error.message for error in errors])
        self.status_code = status_code
        self.errors = list(errors)
        self.headers = dict(headers or {})
        self.refund_id = refund_id

    @classmethod
    def one(
        cls,
        status_code: int,
        message: str,
        field: str | None = None,
        **kwargs: Any,
    ) -> ApiError:
        """An error with a single problem."""
        return cls(status_code, [FieldError(field=field, message=message)], **kwargs)


def field_errors(
    errors: Iterable[ErrorDetails], *, skip_location_parts: int = 0
) -> list[FieldError]:
    """One ``FieldError`` per pydantic error; the field is the dotted location.

    A model-level rule ("items: each order_item_id may appear only once") has no location;
    its field is taken from the message's ``field:`` prefix.
    """
    found: list[FieldError] = []
    for error in errors:
        location = ".".join(_shown(part) for part in error["loc"][skip_location_parts:])
        message = error["msg"]
        if not location:
            matched = _VALUE_ERROR.match(message)
            if matched is not None:
                location, message = matched["field"], matched["message"]
            elif message.startswith("Value error, "):
                message = message.removeprefix("Value error, ")
        found.append(FieldError(field=location or None, message=message))
    return found


def _shown(part: str | int) -> str:
    text = str(part)
    return text if len(text) <= MAX_FIELD_NAME else text[:MAX_FIELD_NAME] + "..."


def validation_errors(exc: ValidationError) -> list[FieldError]:
    """The ``FieldError`` list of a pydantic ``ValidationError``."""
    return field_errors(exc.errors(include_url=False, include_input=False))


def error_response(
    status_code: int,
    errors: Sequence[FieldError],
    *,
    headers: Mapping[str, str] | None = None,
    refund_id: str | None = None,
) -> JSONResponse:
    """The JSON answer for an error."""
    content: dict[str, Any] = {"detail": [error.model_dump() for error in errors]}
    if refund_id is not None:
        content["refund_id"] = refund_id
    return JSONResponse(content, status_code=status_code, headers=dict(headers or {}))


async def _api_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return error_response(exc.status_code, exc.errors, headers=exc.headers, refund_id=exc.refund_id)


async def _http_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    return error_response(
        exc.status_code, [FieldError(field=None, message=str(exc.detail))], headers=exc.headers
    )


async def _request_validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    # Locations start with where the value came from: ("query", "limit"), ("path", ...).
    return error_response(422, field_errors(exc.errors(), skip_location_parts=1))


async def _database_unavailable(_: Request, exc: Exception) -> JSONResponse:
    log.warning("database unavailable: %s", exc)
    return error_response(
        503,
        [FieldError(field=None, message="the database is unavailable; retry shortly")],
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


async def _publish_failed(_: Request, exc: Exception) -> JSONResponse:
    return error_response(
        503,
        [
            FieldError(
                field=None,
                message=(
                    "the broker is unreachable: what was accepted is stored and the sweeper will "
                    "queue it; send the same request again (same idempotency key) for its receipt"
                ),
            )
        ],
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
    log.error("unexpected %s", type(exc).__name__, exc_info=exc)
    return error_response(500, [FieldError(field=None, message="internal error")])


def install_error_handlers(app: FastAPI) -> None:
    """Answer every error in the one shape."""
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _request_validation_error)
    app.add_exception_handler(DatabaseUnavailable, _database_unavailable)
    app.add_exception_handler(BrokerUnavailable, _publish_failed)
    app.add_exception_handler(Exception, _unexpected)
