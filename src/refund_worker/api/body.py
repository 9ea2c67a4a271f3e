"""Reading request bodies: the size limit is enforced while reading, then JSON is parsed.

``Content-Length`` only lets a too-large request be refused before any of it is read; the count
that matters is of the bytes actually received, which also covers chunked bodies.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request

from refund_worker.api.errors import ApiError
from refund_worker.schemas import load_json


def _too_large(limit: int) -> ApiError:
    return ApiError.one(413, f"the request body is larger than {limit} bytes", field=None)


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, or 413 as soon as more than ``limit`` bytes were declared or received."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    chunks: list[bytes] = []
    received = 0
    async for chunk in request.stream():
        received += len(chunk)
        if received > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def parse_json(body: bytes) -> Any:
    """The JSON document in ``body``; 400 when it is not JSON.

    Numbers with a fraction become ``Decimal`` (never a float), so money keeps every digit;
    ``NaN`` and ``Infinity`` are refused as the JSON standard does, and so is a key given twice
    in one object (``{"order_id": 9, "order_id": 1}`` is not read as order 1).
    """
    if not body.strip():
        raise ApiError.one(400, "malformed JSON: the body is empty")
    try:
        return load_json(body)
    except RecursionError:
        raise ApiError.one(400, "malformed JSON: nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, bad UTF-8, NaN/Infinity
        raise ApiError.one(400, f"malformed JSON: {exc}") from None
