"""The ASGI app: HTTP intake for order systems that are not written in Python.

It is a thin adapter over ``intake`` (the same validation and idempotency as ``enqueue_refund``),
``queries`` and ``replay``. Sync or async, deliberately:

* the intake and queries are synchronous SQLAlchemy, so they never run on the event loop: reads
  are plain ``def`` handlers (FastAPI runs them in its thread pool);
* handlers that take a body are ``async``: they check the key, then read the body on the loop
  with the size limit (before any parsing), then hand the blocking work to the thread pool
  (batch, replay) or to the intake coalescer's threads (single refunds, see ``coalesce``);
* the key check and ``/healthz`` (which waits on its checks in the thread pool) are ``async``.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Header, Query, Request, Security
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from pydantic import ValidationError
from pydantic.json_schema import models_json_schema
from starlette.concurrency import run_in_threadpool

from refund_worker import __version__, intake, queries
from refund_worker.api.body import parse_json, read_body
from refund_worker.api.coalesce import IntakeCoalescer
from refund_worker.api.console import mount_console
from refund_worker.api.errors import ApiError, install_error_handlers
from refund_worker.api.errors import validation_errors as _validation_errors
from refund_worker.api.health import (
    CHECK_TIMEOUT_SECONDS,
    Check,
    RedisPing,
    database_check,
    default_broker_check,
    run_check,
)
from refund_worker.api.keys import KeyRing
from refund_worker.api.schemas import (
    DEFAULT_LIST_LIMIT,
    MAX_BATCH,
    MAX_LIST_LIMIT,
    BatchItemResult,
    BatchResponse,
    ErrorBody,
    FieldError,
    Health,
    RefundList,
    ReplayRequest,
)
from refund_worker.db import Database
from refund_worker.errors import BrokerUnavailable, IdempotencyConflict, InvalidRefund
from refund_worker.exporter import StateCollector, state_registry, token_matches
from refund_worker.intake import IntakeRejection
from refund_worker.publishing import GuardedPublisher, Publisher
from refund_worker.queries import refund_view, to_view
from refund_worker.replay import RefundFilter, replay, select_refunds
from refund_worker.schemas import (
    INCREMENT_ID_PATTERN,
    MAX_ENTITY_ID,
    MAX_INCREMENT_ID,
    RefundReceipt,
    RefundRequest,
    RefundStatus,
    RefundSummary,
    RefundView,
)
from refund_worker.settings import ApiKey, Settings

log = logging.getLogger(__name__)

#: Bodies up to this size are parsed and validated on the event loop.
INLINE_PARSE_BYTES = 16 * 1024
_MAX_KEY_LENGTH = 255

# -- wiring ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ApiContext:
    """What the handlers use; one per app, kept in ``app.state``."""

    database: Database
    publisher: Publisher
    intake: IntakeCoalescer
    keys: KeyRing
    max_body_bytes: int
    database_check: Check
    broker_check: Check | None
    metrics: CollectorRegistry
    metrics_token: str | None
    #: The shops a key's requests may name (settings.shops_for).
    shops_for: Callable[[ApiKey], list[str]]


def _context(request: Request) -> ApiContext:
    context = request.app.state.refund_api
    assert isinstance(context, ApiContext)
    return context


async def context(request: Request) -> ApiContext:
    """The app's ``ApiContext`` (a dependency)."""
    return _context(request)


Context = Annotated[ApiContext, Depends(context)]

# -- authentication ----------------------------------------------------------------------------

bearer = HTTPBearer(
    auto_error=False,
    scheme_name="apiKey",
    bearerFormat="rwk_...",
    description="An API key made by `refund-worker api-key NAME --role producer|operator`.",
)


async def authenticated(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)],
) -> ApiKey:
    """The holder of the presented key; 401 when there is none or it is unknown."""
    holder = _context(request).keys.holder(credentials.credentials if credentials else None)
    if holder is None:
        challenge = 'Bearer error="invalid_token"' if credentials else "Bearer"
        raise ApiError.one(
            401,
            "a valid API key is required: Authorization: Bearer <key>",
            headers={"WWW-Authenticate": challenge},
        )
    return holder


async def operator(holder: Annotated[ApiKey, Depends(authenticated)]) -> ApiKey:
    """The holder of an operator key; 403 for a producer key."""
    if holder.role != "operator":
        raise ApiError.one(403, f"key {holder.name!r} is a {holder.role} key; this needs operator")
    return holder


Caller = Annotated[ApiKey, Depends(authenticated)]
Operator = Annotated[ApiKey, Depends(operator)]



# -- documentation -----------------------------------------------------------------------------

_ERROR_MODEL: dict[str, Any] = {"model": ErrorBody}
_AUTH_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {**_ERROR_MODEL, "description": "No valid API key"},
    422: {**_ERROR_MODEL, "description": "Invalid parameters; every problem names its field"},
    503: {**_ERROR_MODEL, "description": "Database or broker unavailable; retry"},
}
_BODY_ERRORS: dict[int | str, dict[str, Any]] = {
    **_AUTH_ERRORS,
    400: {**_ERROR_MODEL, "description": "Malformed JSON"},
    413: {**_ERROR_MODEL, "description": "Body larger than the configured limit"},
    422: {**_ERROR_MODEL, "description": "Invalid request; every problem names its field"},
}


def _json_body(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "requestBody": {
            "required": True,
            "description": description,
            "content": {"application/json": {"schema": schema}},
        }
    }


_REFUND_REF = {"$ref": "#/components/schemas/RefundRequest"}

# -- refunds -----------------------------------------------------------------------------------

router = APIRouter()


def _refund_request(document: Any, header_key: str | None) -> RefundRequest:
    """Validate one request; 422 listing every problem, each naming its field."""
    if not isinstance(document, dict):
        raise ApiError.one(422, "the body must be a JSON object: one refund request")
    errors: list[FieldError] = []
    if header_key is not None:
        body_key = document.get("idempotency_key")
        if body_key is None:
            document = {**document, "idempotency_key": header_key}
        elif body_key != header_key:
            errors.append(
                FieldError(
                    field="idempotency_key",
                    message=(
                        "differs from the Idempotency-Key header; send one, or the same in both"
                    ),
                )
            )
    try:
        request = RefundRequest.model_validate(document)
    except ValidationError as exc:
        errors.extend(_validation_errors(exc))
    if errors:
        raise ApiError(422, errors)
    return request


def _in_shop(request: RefundRequest, shops: list[str]) -> RefundRequest:
    """The request naming one of the shops its key may use (its own, or the only one); 422
    naming ``shop`` otherwise."""
    try:
        return intake.resolve_shop(request, shops)
    except InvalidRefund as exc:
        raise ApiError.one(422, str(exc).removeprefix("shop: "), field="shop") from None


def _conflict(exc: IdempotencyConflict) -> FieldError:
    return FieldError(field="idempotency_key", message=str(exc).removeprefix("idempotency_key: "))


@router.post(
    "/v1/refunds",
    status_code=202,
    summary="Accept one refund",
    response_model=RefundReceipt,
    responses={
        200: {"model": RefundReceipt, "description": "Repeated key, identical request"},
        202: {"description": "Accepted and queued"},
        409: {**_ERROR_MODEL, "description": "Repeated key, different request"},
        **_BODY_ERRORS,
    },
    openapi_extra=_json_body(
        _REFUND_REF, "The refund request; its key may come in the Idempotency-Key header instead"
    ),
)
async def create_refund(
    http_request: Request,
    holder: Caller,
    idempotency_key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            description="The request's idempotency key, if not in the body (both must agree).",
        ),
    ] = None,
) -> JSONResponse:
    """Validate, store under the idempotency key, then publish; the same key again is safe.

    Async on purpose: the blocking intake runs on the coalescer's threads (``coalesce``), which
    store and publish concurrent requests together, each answered as if it had come alone; this
    handler only awaits its turn. A small body is parsed here (well under a millisecond), a large
    one in the thread pool so the event loop is never held up.
    """
    api = _context(http_request)
    body = await read_body(http_request, api.max_body_bytes)
    if len(body) <= INLINE_PARSE_BYTES:
        request = _refund_request(parse_json(body), idempotency_key)
    else:
        request = await run_in_threadpool(
            lambda: _refund_request(parse_json(body), idempotency_key)
        )
    request = _in_shop(request, api.shops_for(holder))
    receipt = await asyncio.wrap_future(
        api.intake.submit(request, tenant=holder.tenant_name, created_by=holder.name)
    )
    if isinstance(receipt, IntakeRejection):
        error = receipt.error
        if isinstance(error, IdempotencyConflict):
            raise ApiError(409, [_conflict(error)], refund_id=error.refund_id)
        raise ApiError.one(422, str(error))
    return JSONResponse(
        receipt.model_dump(mode="json"),
        status_code=200 if receipt.duplicate else 202,
        headers={"Location": f"/v1/refunds/{receipt.refund_id}"},
    )


@router.post(
    "/v1/refunds:batch",
    summary="Accept up to 1,000 refunds at once",
    response_model=BatchResponse,
    responses={200: {"description": "One result per element, in order"}, **_BODY_ERRORS},
    openapi_extra=_json_body(
        {"type": "array", "items": _REFUND_REF, "minItems": 1, "maxItems": MAX_BATCH},
        "Refund requests, each with its own idempotency_key",
    ),
)
async def create_refunds(http_request: Request, holder: Caller) -> JSONResponse:
    """Each element is validated and accepted on its own; valid ones go in through one intake."""
    api = _context(http_request)
    body = await read_body(http_request, api.max_body_bytes)
    return await run_in_threadpool(_accept_batch, api, holder, body)


def _accept_batch(api: ApiContext, holder: ApiKey, body: bytes) -> JSONResponse:
    document = parse_json(body)
    if not isinstance(document, list):
        raise ApiError.one(422, "the body must be a JSON array of refund requests")
    if not document or len(document) > MAX_BATCH:
        raise ApiError.one(
            422, f"a batch holds 1 to {MAX_BATCH} refund requests, not {len(document)}"
        )
    results: list[BatchItemResult | None] = [None] * len(document)
    valid: list[tuple[int, RefundRequest]] = []
    shops = api.shops_for(holder)
    for index, item in enumerate(document):
        try:
            if not isinstance(item, dict):
                raise ApiError.one(422, "must be a JSON object: one refund request")
            valid.append((index, _in_shop(_refund_request(item, None), shops)))
        except ApiError as exc:
            results[index] = BatchItemResult(index=index, result="invalid", errors=exc.errors)
    outcomes = (
        intake.enqueue_refunds(
            (request for _, request in valid),
            database=api.database,
            publisher=api.publisher,
            tenant=holder.tenant_name,
            created_by=holder.name,
            shops=shops,
        )
        if valid
        else []
    )
    for (index, _), outcome in zip(valid, outcomes, strict=True):
        if isinstance(outcome, RefundReceipt):
            result = "duplicate" if outcome.duplicate else "accepted"
            results[index] = BatchItemResult(index=index, result=result, receipt=outcome)
        elif isinstance(outcome.error, IdempotencyConflict):
            results[index] = BatchItemResult(
                index=index, result="conflict", errors=[_conflict(outcome.error)]
            )
        else:
            problem = FieldError(field=None, message=str(outcome.error))
            results[index] = BatchItemResult(index=index, result="invalid", errors=[problem])
    done = [result for result in results if result is not None]
    accepted = sum(1 for result in done if result.result == "accepted")
    duplicates = sum(1 for result in done if result.result == "duplicate")
    response = BatchResponse(
        accepted=accepted,
        duplicates=duplicates,
        rejected=len(done) - accepted - duplicates,
        results=done,
    )
    return JSONResponse(response.model_dump(mode="json"))


def _refund_id(text: str) -> str | None:
    """``text`` as a refund id (a UUID in its canonical form), or None."""
    try:
        refund_id = str(uuid.UUID(text))
    except ValueError:
        return None
    return refund_id if refund_id == text.lower() else None


def _not_found(refund_id: str) -> ApiError:
    if _refund_id(refund_id) is None:
        return ApiError.one(
            404,
            "no refund with that id (a refund id is a UUID; look an idempotency key up with "
            "GET /v1/refunds?idempotency_key=...)",
        )
    return ApiError.one(404, f"no refund with id {refund_id!r}")


def _scope(holder: ApiKey) -> str | None:
    """The tenant a key may see: its own for a producer, every tenant (None) for an operator."""
    return None if holder.role == "operator" else holder.tenant_name


@router.get(
    "/v1/refunds",
    summary="List refunds, newest first",
    response_model=RefundList,
    responses=_AUTH_ERRORS,
)
def list_refunds(
    holder: Caller,
    api: Context,
    status: RefundStatus | None = None,
    idempotency_key: Annotated[
        str | None, Query(min_length=1, max_length=_MAX_KEY_LENGTH, pattern=r"^[\x21-\x7e]+$")
    ] = None,
    tenant: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=64,
            pattern=r"^[A-Za-z0-9_.-]+$",
            description="Operators only: one tenant's refunds (producers always see their own)",
        ),
    ] = None,
    shop: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=32,
            pattern=r"^[a-z0-9]+(?:[_-][a-z0-9]+)*$",
            description="Only this shop's refunds",
        ),
    ] = None,
    order_id: Annotated[int | None, Query(ge=1, le=MAX_ENTITY_ID)] = None,
    order_increment_id: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=MAX_INCREMENT_ID,
            pattern=f"^{INCREMENT_ID_PATTERN.pattern}$",
            description="Only refunds that named their order by this order number",
        ),
    ] = None,
    since: Annotated[
        datetime | None,
        Query(description="Created at or after (ISO 8601; without an offset, UTC)"),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIST_LIMIT)] = DEFAULT_LIST_LIMIT,
) -> JSONResponse:
    """Refunds matching every given filter; a producer sees only its own tenant's."""
    if since is not None:
        try:
            since = (since if since.tzinfo else since.replace(tzinfo=UTC)).astimezone(UTC)
        except OverflowError:
            raise ApiError.one(422, "out of range", field="since") from None
    scope = _scope(holder)
    if tenant is not None and scope is not None and tenant != scope:
        raise ApiError.one(403, "a producer key sees only its own tenant's refunds", field="tenant")
    refund_filter = RefundFilter(
        status=status.value if status else None,
        keys=(idempotency_key,) if idempotency_key else (),
        tenant=scope or tenant,
        shop=shop,
        order_id=order_id,
        order_increment_id=order_increment_id,
        since=since,
        limit=limit,
    )
    with api.database.session_scope() as session:
        views = [to_view(row) for row in select_refunds(session, refund_filter)]
    summaries = [RefundSummary.model_validate(view.summary()) for view in views]
    listing = RefundList(refunds=summaries, limit=limit)
    return JSONResponse(listing.model_dump(mode="json"))


@router.get(
    "/v1/refunds/{refund_id}",
    summary="One refund, with its Magento calls",
    response_model=RefundView,
    responses={404: {**_ERROR_MODEL, "description": "No such refund"}, **_AUTH_ERRORS},
)
def get_refund(holder: Caller, api: Context, refund_id: str) -> JSONResponse:
    """A refund by id; a producer sees only its own tenant's (another's is a 404)."""
    canonical = _refund_id(refund_id)
    if canonical is None:
        raise _not_found(refund_id)
    with api.database.session_scope() as session:
        view = refund_view(session, canonical, tenant=_scope(holder))
    if view is None:
        raise _not_found(canonical)
    return JSONResponse(view.model_dump(mode="json"))


@router.post(
    "/v1/refunds/{refund_id}/replay",
    status_code=202,
    summary="Replay a failed refund (or its failed email); operators only",
    response_model=RefundView,
    responses={
        202: {"description": "Re-queued under the same idempotency key"},
        403: {**_ERROR_MODEL, "description": "Not an operator key"},
        404: {**_ERROR_MODEL, "description": "No such refund"},
        409: {**_ERROR_MODEL, "description": "Succeeded or still in flight: not replayable"},
        **_BODY_ERRORS,
    },
    openapi_extra=_json_body(
        {"$ref": "#/components/schemas/ReplayRequest"}, "Why, and whether to replay the email"
    ),
)
async def replay_refund(
    http_request: Request, holder: Operator, refund_id: str
) -> JSONResponse:
    """Re-queue a failed refund; the next attempt first looks in Magento for its credit memo."""
    api = _context(http_request)
    body = await read_body(http_request, api.max_body_bytes)
    return await run_in_threadpool(_replay, api, holder, refund_id, body)


def _replay(api: ApiContext, holder: ApiKey, refund_id: str, body: bytes) -> JSONResponse:
    document = parse_json(body)
    if not isinstance(document, dict):
        raise ApiError.one(422, 'the body must be a JSON object: {"reason": "..."}')
    try:
        request = ReplayRequest.model_validate(document)
    except ValidationError as exc:
        raise ApiError(422, _validation_errors(exc)) from None
    canonical = _refund_id(refund_id)
    if canonical is None:
        raise _not_found(refund_id)
    refund_id = canonical
    with api.database.session_scope() as session:
        if queries.get_refund(session, refund_id) is None:
            raise _not_found(refund_id)
    report = replay(
        api.database,
        api.publisher,
        [refund_id],
        reason=request.reason,
        actor=holder.name,
        notifications=request.notifications,
    )
    if report.unpublished is not None:
        raise BrokerUnavailable(report.unpublished)  # replayed; the sweeper publishes it
    if refund_id in report.refused:
        what = "its email" if request.notifications else "refund " + refund_id
        raise ApiError.one(
            409, f"cannot replay {what}: {report.refused[refund_id]}", refund_id=refund_id
        )
    with api.database.session_scope() as session:
        view = refund_view(session, refund_id)
    assert view is not None
    return JSONResponse(view.model_dump(mode="json"), status_code=202)


# -- health ------------------------------------------------------------------------------------


async def _reachable(name: str, check: Check) -> bool:
    try:
        return await asyncio.wait_for(
            run_in_threadpool(run_check, name, check), CHECK_TIMEOUT_SECONDS
        )
    except TimeoutError:
        log.warning("health check %s timed out", name)
        return False


@router.get(
    "/healthz",
    summary="Database and broker reachability (no key needed)",
    response_model=Health,
    responses={503: {"model": Health, "description": "Something is down; it is named"}},
)
async def healthz(api: Context) -> JSONResponse:
    """200 when the database and the broker answer, else 503 naming what is down."""
    checks = [_reachable("database", api.database_check)]
    if api.broker_check is not None:
        checks.append(_reachable("broker", api.broker_check))
    answers = await asyncio.gather(*checks)
    health = Health(
        database="ok" if answers[0] else "down",
        broker="unchecked" if api.broker_check is None else "ok" if answers[1] else "down",
    )
    down = health.database == "down" or health.broker == "down"
    return JSONResponse(health.model_dump(), status_code=503 if down else 200)


# -- metrics -----------------------------------------------------------------------------------


@router.get("/metrics", include_in_schema=False)
def metrics(
    api: Context,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)],
) -> Response:
    """Prometheus text: what the database and the broker hold (docs/metrics.md). Needs the
    metrics token (``REFUND_WORKER_METRICS_TOKEN``) or an operator key."""
    presented = credentials.credentials if credentials else None
    if api.metrics_token is None or not token_matches(presented, api.metrics_token):
        holder = api.keys.holder(presented)
        if holder is None:
            raise ApiError.one(
                401,
                "the metrics token or an operator key is required: Authorization: Bearer <token>",
                headers={
                    "WWW-Authenticate": 'Bearer error="invalid_token"' if presented else "Bearer"
                },
            )
        if holder.role != "operator":
            raise ApiError.one(
                403, f"key {holder.name!r} is a {holder.role} key; this needs operator"
            )
    return Response(generate_latest(api.metrics), media_type=CONTENT_TYPE_LATEST)


# -- the app -----------------------------------------------------------------------------------


class RefundApi(FastAPI):
    """FastAPI whose OpenAPI document also describes the bodies read by hand."""

    def openapi(self) -> dict[str, Any]:
        """The document, with ``RefundRequest`` and ``ReplayRequest`` among its schemas."""
        if self.openapi_schema is None:
            document = super().openapi()
            _, definitions = models_json_schema(
                [(RefundRequest, "validation"), (ReplayRequest, "validation")],
                ref_template="#/components/schemas/{model}",
            )
            schemas = document.setdefault("components", {}).setdefault("schemas", {})
            for name, schema in definitions.get("$defs", {}).items():
                schemas.setdefault(name, schema)
            self.openapi_schema = document
        return self.openapi_schema


def create_app(
    *,
    database: Database,
    publisher: Publisher,
    settings: Settings,
    broker_check: Check | None = None,
    state: StateCollector | None = None,
) -> FastAPI:
    """The HTTP API over ``database``, publishing through ``publisher``.

    ``broker_check`` answers whether the broker is reachable for ``/healthz``; by default a Redis
    PING to ``settings.broker_url`` when it is Redis (other brokers show as ``unchecked``).
    ``state`` is what ``/metrics`` serves; by default the database's gauges (no queue ages).
    """
    default_check = default_broker_check(settings.broker_dsn) if broker_check is None else None
    guarded = GuardedPublisher(publisher)
    coalescer = IntakeCoalescer(database, guarded, shops=settings.intake_shops)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await run_in_threadpool(coalescer.close)
            if isinstance(default_check, RedisPing):
                default_check.close()

    app = RefundApi(
        title="refund-worker",
        version=__version__,
        summary="HTTP intake and status for Magento 2 refunds",
        description=(
            "Refund requests are validated, stored under their idempotency key and queued for "
            "the refund worker. Authenticate with `Authorization: Bearer <API key>`."
        ),
        docs_url="/docs",
        redoc_url=None,
        openapi_url="/openapi.json",
        lifespan=lifespan,
    )
    keys = KeyRing(settings.api_keys)
    app.state.refund_api = ApiContext(
        database=database,
        publisher=guarded,
        intake=coalescer,
        keys=keys,
        max_body_bytes=settings.api_max_body_bytes,
        database_check=database_check(database),
        broker_check=broker_check if broker_check is not None else default_check,
        metrics=state_registry(state if state is not None else StateCollector(database)),
        metrics_token=(
            settings.metrics_token.get_secret_value() if settings.metrics_token else None
        ),
        shops_for=settings.shops_for,
    )
    if not settings.api_keys:
        log.warning("no API keys configured (REFUND_WORKER_API_KEYS): every request gets 401")
    install_error_handlers(app)
    app.include_router(router)
    from refund_worker.api.webhooks import router as webhooks_router  # it imports this module

    app.state.webhook_settings = settings
    app.include_router(webhooks_router)
    mount_console(app, database=database, publisher=guarded, keys=keys, settings=settings)
    return app
