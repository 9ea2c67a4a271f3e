"""Turning Magento's answers into refund-worker exceptions: the one place retries are decided.

Pure functions, no I/O. docs/magento.md §9.2 (error body) and §9.3 (status codes); STYLE habit 5.
"""

from __future__ import annotations

import json
import math
import re
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from refund_worker.errors import (
    MagentoAuthError,
    MagentoNotFound,
    MagentoRateLimited,
    MagentoRejected,
    MagentoUnavailable,
    RefundWorkerError,
)

__all__ = [
    "ACL_RESOURCES",
    "AUTH_HINT",
    "OUTCOME_UNKNOWN_TAIL",
    "describe",
    "error_for_response",
    "error_for_transport",
    "error_text",
    "fill_placeholders",
    "is_write",
    "parse_retry_after",
    "snippet",
    "transport_error_text",
]

#: Every ACL resource the worker's integration (or admin role) needs (docs/magento.md §0).
ACL_RESOURCES: tuple[str, ...] = (
    "Magento_Sales::sales_invoice",
    "Magento_Sales::creditmemo",
    "Magento_Sales::sales_creditmemo",
    "Magento_Sales::actions_view",
)

#: Added to every 401/403 message: the two usual causes are an ACL gap and a bearer token the
#: shop silently ignores (§11.1).
AUTH_HINT = (
    "the integration needs the ACL resources "
    + ", ".join(ACL_RESOURCES)
    + "; an integration access token used as a bearer token also needs Stores > Configuration > "
    'Services > OAuth > Consumer Settings > "Allow OAuth Access Tokens to be used as standalone '
    'Bearer tokens" (oauth/consumer/enable_integration_as_bearer) set to Yes'
)

SNIPPET_LENGTH = 200

#: Appended to messages when a POST/PUT may have been committed before it failed.
OUTCOME_UNKNOWN_TAIL = "; Magento may have committed it, reconcile before retrying"

_WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})

# Errors raised before a single byte of the request reached Magento: safe to send again.
_NOT_SENT: tuple[type[httpx.TransportError], ...] = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.PoolTimeout,
    httpx.UnsupportedProtocol,
)

_POSITIONAL = re.compile(r"%(\d+)")
_TAG = re.compile(r"<[^>]*>")
_SCRIPT_OR_STYLE = re.compile(r"<(script|style)\b.*?</\1\s*>", re.IGNORECASE | re.DOTALL)
_WHITESPACE = re.compile(r"\s+")


def is_write(method: str) -> bool:
    """True for methods that may change Magento's state, where a lost answer leaves it unknown."""
    return method.upper() in _WRITE_METHODS


def _as_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return str(int(value))
    if isinstance(value, int | float):
        return str(value)
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def fill_placeholders(message: str, parameters: Any) -> str:
    """Substitute Magento's placeholders: ``%1``, ``%2`` from a list, ``%name`` from an object.

    Placeholders without a matching parameter are left as they are, as Magento does.
    """
    if isinstance(parameters, list):
        values = parameters

        def positional(match: re.Match[str]) -> str:
            index = int(match.group(1)) - 1
            if 0 <= index < len(values):
                return _as_text(values[index])
            return match.group(0)

        return _POSITIONAL.sub(positional, message)
    if isinstance(parameters, dict) and parameters:
        named = {str(key): value for key, value in parameters.items()}
        # Longest name first, so "%fieldName" is not eaten by a parameter called "field".
        alternatives = "|".join(re.escape(key) for key in sorted(named, key=len, reverse=True))
        return re.sub(f"%({alternatives})", lambda match: _as_text(named[match.group(1)]), message)
    return message


def snippet(text: str, limit: int = SNIPPET_LENGTH) -> str:
    """A short one-line excerpt of a non-JSON body (e.g. a proxy's HTML error page)."""
    text = _SCRIPT_OR_STYLE.sub(" ", text)
    text = _TAG.sub(" ", text)
    text = _WHITESPACE.sub(" ", text).strip()
    if not text:
        return "(empty response body)"
    if len(text) > limit:
        return text[: limit - 1].rstrip() + "…"
    return text


def _fill_error_object(error: Any) -> str | None:
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        return fill_placeholders(error["message"], error.get("parameters"))
    if isinstance(error, str):
        return error
    return None


def error_text(body: bytes) -> str:
    """The filled-in text of a Magento error body (§9.2), or a short snippet of anything else.

    For an aggregate error (``errors`` list) each sub-error's filled-in message follows the main
    message on its own line, the way Magento itself joins validation messages. ``trace`` (developer
    mode) is left out.
    """
    raw = body.decode("utf-8", errors="replace")
    try:
        payload = json.loads(raw)
    except ValueError:
        return snippet(raw)
    message = _fill_error_object(payload) if isinstance(payload, dict) else None
    if message is None:
        return snippet(raw)
    lines = [message]
    sub_errors = payload.get("errors")
    if isinstance(sub_errors, list):
        for sub_error in sub_errors:
            text = _fill_error_object(sub_error)
            if text and text not in lines:
                lines.append(text)
    return "\n".join(lines)


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or an HTTP-date.

    ``None`` when the header is missing or unreadable; a date in the past gives ``0.0``.
    """
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return max(seconds, 0.0) if math.isfinite(seconds) else None
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # "-0000" in the header: UTC by RFC 5322
        when = when.replace(tzinfo=UTC)
    current = now if now is not None else datetime.now(UTC)
    return max((when - current).total_seconds(), 0.0)


def describe(operation: str, subject: str | None) -> str:
    """``"order_refund for order 5"``: how exception messages name the failed call."""
    return f"{operation} for {subject}" if subject else operation


def error_for_response(
    response: httpx.Response,
    *,
    operation: str,
    subject: str | None = None,
    now: datetime | None = None,
) -> RefundWorkerError:
    """Map a non-2xx answer to the exception the caller must raise.

    400 and other 4xx → MagentoRejected; 404 → MagentoNotFound; 401/403 → MagentoAuthError;
    429 → MagentoRateLimited; 5xx → MagentoUnavailable (outcome unknown for POST/PUT). Anything
    else that is not a success (a 3xx: ``base_url`` points at the wrong place) → MagentoRejected.
    """
    status = response.status_code
    text = error_text(response.content)
    prefix = describe(operation, subject)
    context: dict[str, Any] = {"http_status": status, "magento_message": text}
    if status == 404:
        return MagentoNotFound(f"{prefix}: Magento does not know it (404): {text}", **context)
    if status in (401, 403):
        return MagentoAuthError(
            f"{prefix}: Magento refused our credentials ({status}): {text.rstrip('.')}. "
            f"Check that {AUTH_HINT}",
            **context,
        )
    if status == 429:
        retry_after = parse_retry_after(response.headers.get("Retry-After"), now=now)
        wait = "" if retry_after is None else f", retry after {retry_after:g}s"
        return MagentoRateLimited(
            f"{prefix}: Magento is rate limiting us (429){wait}: {text}",
            retry_after=retry_after,
            **context,
        )
    if status >= 500:
        outcome_unknown = is_write(response.request.method)
        tail = OUTCOME_UNKNOWN_TAIL if outcome_unknown else ""
        return MagentoUnavailable(
            f"{prefix}: Magento failed ({status}): {text}{tail}",
            outcome_unknown=outcome_unknown,
            **context,
        )
    if 400 <= status < 500:
        return MagentoRejected(f"{prefix}: Magento rejected it ({status}): {text}", **context)
    return MagentoRejected(
        f"{prefix}: unexpected HTTP status {status} (is the base URL right?): {text}", **context
    )


def transport_error_text(exc: Exception) -> str:
    """``"<ExceptionClass>: <text>"`` for a failure without a response."""
    detail = str(exc)
    return f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__


def error_for_transport(
    exc: httpx.HTTPError,
    *,
    method: str,
    operation: str,
    subject: str | None = None,
) -> MagentoUnavailable:
    """Map an httpx failure without a usable response to MagentoUnavailable.

    The outcome is unknown when the request may have reached Magento (read/write timeout,
    dropped connection, ...) and the method can change state; a connect or pool failure means the
    request was never sent.
    """
    outcome_unknown = is_write(method) and not isinstance(exc, _NOT_SENT)
    tail = OUTCOME_UNKNOWN_TAIL if outcome_unknown else ""
    return MagentoUnavailable(
        f"{describe(operation, subject)}: Magento could not be reached "
        f"({transport_error_text(exc)}){tail}",
        outcome_unknown=outcome_unknown,
    )
