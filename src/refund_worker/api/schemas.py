"""The HTTP API's own bodies: errors, batch results, lists, replay and health.

The refund request itself is ``refund_worker.schemas.RefundRequest``; receipts and views are
``RefundReceipt`` and ``RefundView`` from there too, so the API and the CLI show the same thing.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, StrictBool, StringConstraints

from refund_worker.schemas import (
    RefundReceipt,
    RefundSummary,
)

#: Refunds per ``POST /v1/refunds:batch``.
MAX_BATCH = 1000
#: Rows per ``GET /v1/refunds``.
MAX_LIST_LIMIT = 500
DEFAULT_LIST_LIMIT = 50


class FieldError(BaseModel):
    """One problem: the field it is about (dotted path, ``null`` when about no field), and why."""

    field: str | None
    message: str


class ErrorBody(BaseModel):
    """Every error answer: one entry per problem found."""

    detail: list[FieldError]
    #: On 409: the refund that already holds the idempotency key.
    refund_id: str | None = None


class BatchItemResult(BaseModel):
    """What became of one element of a batch, at the same index."""

    index: int
    result: Literal["accepted", "duplicate", "invalid", "conflict"]
    receipt: RefundReceipt | None = None
    errors: list[FieldError] | None = None


class BatchResponse(BaseModel):
    """One result per element, in order, and counts."""

    accepted: int
    duplicates: int
    rejected: int
    results: list[BatchItemResult]


class RefundList(BaseModel):
    """Refunds, newest first."""

    refunds: list[RefundSummary]
    limit: int


ReplayReason = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True,
        min_length=1,
        max_length=500,
        pattern=r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f]*$",
    ),
]


class ReplayRequest(BaseModel):
    """Why a person replays a failed refund (kept in its events), and what to replay."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    reason: ReplayReason
    #: Replay the failed customer email of a succeeded refund instead of the refund.
    notifications: StrictBool = False


class Health(BaseModel):
    """Whether the database and the broker answer."""

    database: Literal["ok", "down"]
    broker: Literal["ok", "down", "unchecked"]
