"""Magento's REST error bodies, as the simulator sends them.

Magento answers every failure with a JSON object (docs/magento.md §9.2)::

    {"message": "<template with %1 or %name placeholders>",
     "parameters": [...] or {...},     # only when the template has placeholders
     "errors": [{"message": ..., "parameters": {...}}]}   # only aggregate input errors

Placeholders are left in ``message``; ``parameters`` is a list for positional ``%1`` and an
object for named ``%fieldName``/``%resources``. Messages built by concatenation (the
"Creditmemo Document Validation Error(s):" form) and type-conversion errors arrive rendered.
"""

from __future__ import annotations

import json
import secrets
from typing import Any

ROUTE_NOT_FOUND = "Request does not match any route."
ENTITY_NOT_FOUND = "The entity that was requested doesn't exist. Verify the entity and try again."
NOT_AUTHORIZED = "The consumer isn't authorized to access %resources."
ID_NEEDED = "An ID is needed. Set the ID and try again."
DECODING_ERROR = "Decoding error."
REQUIRED = '"%fieldName" is required. Enter and try again.'
NOT_SUPPORTED = '"%fieldName" is not supported. Correct the field name and try again.'
MANY_INPUT_ERRORS = "One or more input exceptions have occurred."
DOCUMENT_VALIDATION = "Creditmemo Document Validation Error(s):\n"
INTERNAL_ERROR = "Internal Error. Details are available in Magento log file. Report ID: webapi-%s"

Parameters = list[Any] | dict[str, Any] | None


class MagentoError(Exception):
    """Raised anywhere in the simulator to answer with a Magento error body and status."""

    def __init__(
        self,
        status: int,
        message: str,
        parameters: Parameters = None,
        *,
        errors: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.parameters = parameters
        self.errors = errors
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        """The JSON object Magento would send."""
        out: dict[str, Any] = {"message": self.message}
        if self.errors:
            out["errors"] = self.errors
        if self.parameters:
            out["parameters"] = self.parameters
        return out

    def rendered(self) -> str:
        """The message with its placeholders filled in (what a client should show)."""
        return render(self.message, self.parameters)


def render(message: str, parameters: Parameters) -> str:
    """Substitute ``%1``/``%name`` placeholders the way Magento's Phrase renderer does."""
    if isinstance(parameters, dict):
        for key in sorted(parameters, key=len, reverse=True):
            message = message.replace(f"%{key}", str(parameters[key]))
    elif isinstance(parameters, list):
        for index in range(len(parameters), 0, -1):
            message = message.replace(f"%{index}", str(parameters[index - 1]))
    return message


def route_not_found() -> MagentoError:
    return MagentoError(404, ROUTE_NOT_FOUND)


def entity_not_found() -> MagentoError:
    return MagentoError(404, ENTITY_NOT_FOUND)


def not_authorized(resource: str) -> MagentoError:
    return MagentoError(401, NOT_AUTHORIZED, {"resources": resource})


def id_needed() -> MagentoError:
    return MagentoError(400, ID_NEEDED)


def decoding_error() -> MagentoError:
    return MagentoError(400, DECODING_ERROR)


def required(*field_names: str) -> MagentoError:
    """One missing parameter, or Magento's aggregate form for several."""
    if len(field_names) == 1:
        return MagentoError(400, REQUIRED, {"fieldName": field_names[0]})
    errors = [{"message": REQUIRED, "parameters": {"fieldName": name}} for name in field_names]
    return MagentoError(400, MANY_INPUT_ERRORS, errors=errors)


def not_supported(upper_camel_field: str) -> MagentoError:
    return MagentoError(400, NOT_SUPPORTED, {"fieldName": upper_camel_field})


def document_validation(messages: list[str]) -> MagentoError:
    """RefundOrder/RefundInvoice validators: every message at once, fully rendered."""
    return MagentoError(400, DOCUMENT_VALIDATION + "\n".join(messages))


def internal_error() -> MagentoError:
    return MagentoError(500, INTERNAL_ERROR % secrets.token_hex(7)[:13])


def dumps(payload: Any) -> bytes:
    """Compact UTF-8 JSON, as Magento sends it."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
