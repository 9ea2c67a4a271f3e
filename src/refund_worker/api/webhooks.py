"""``/v1/webhook-endpoints`` and ``/v1/webhook-deliveries``: a producer registers, lists,
disables and re-enables its own endpoints and sees and replays their deliveries; an operator
does so for every tenant (docs/webhooks.md). The secret is in the answer to the registration,
and nowhere else, ever."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from refund_worker.api.app import Caller, Context, _context, _scope
from refund_worker.api.body import parse_json, read_body
from refund_worker.api.errors import ApiError, validation_errors
from refund_worker.api.schemas import ErrorBody
from refund_worker.errors import ConfigurationError
from refund_worker.outbox import DeliveryStatus
from refund_worker.settings import ApiKey, Settings
from refund_worker.webhooks.endpoints import (
    EndpointRequest,
    EndpointView,
    InvalidEndpoint,
    get_endpoint,
    list_deliveries,
    list_endpoints,
    register,
    replay_deliveries,
    set_enabled,
)

router = APIRouter(tags=["webhooks"])

_ERROR = {"model": ErrorBody}
_COMMON: dict[int | str, dict[str, Any]] = {
    401: {**_ERROR, "description": "No valid API key"},
    404: {**_ERROR, "description": "No such endpoint or delivery (for this key)"},
    503: {**_ERROR, "description": "Database or broker unavailable, or webhooks not configured"},
}


def _settings(request: Request) -> Settings:
    settings = request.app.state.webhook_settings
    assert isinstance(settings, Settings)
    return settings


def _json(model: Any, status_code: int = 200) -> JSONResponse:
    return JSONResponse(model.model_dump(mode="json"), status_code=status_code)


def _missing(endpoint_id: str) -> ApiError:
    return ApiError.one(404, f"no webhook endpoint with id {endpoint_id!r}")


@router.post(
    "/v1/webhook-endpoints",
    status_code=201,
    summary="Register a webhook endpoint; its secret is in this answer only",
    responses={
        201: {"description": "Registered: the endpoint and its `secret` (shown once)"},
        403: {**_ERROR, "description": "A producer naming another tenant"},
        422: {**_ERROR, "description": "Invalid request (each problem names its field)"},
        **_COMMON,
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": EndpointRequest.model_json_schema()}
            },
        }
    },
)
async def create_endpoint(request: Request, holder: Caller) -> JSONResponse:
    """Validate, check the URL (https, a public address), store, answer with the secret."""
    api = _context(request)
    body = await read_body(request, api.max_body_bytes)
    settings = _settings(request)
    return await run_in_threadpool(_create, api.database, settings, holder, body)


def _create(database: Any, settings: Settings, holder: ApiKey, body: bytes) -> JSONResponse:
    document = parse_json(body)
    if not isinstance(document, dict):
        raise ApiError.one(422, "the body must be a JSON object: {url, event_types}")
    try:
        endpoint_request = EndpointRequest.model_validate(document)
    except ValidationError as exc:
        raise ApiError(422, validation_errors(exc)) from None
    tenant = endpoint_request.tenant
    if holder.role != "operator":
        if tenant is not None and tenant != holder.tenant_name:
            raise ApiError.one(403, "a producer key registers for its own tenant only",
                               field="tenant")
        tenant = holder.tenant_name
    elif tenant is None:
        raise ApiError.one(422, "an operator key names the tenant the endpoint is for",
                           field="tenant")
    try:
        view, secret = register(
            database, settings, endpoint_request, tenant=tenant, created_by=holder.name
        )
    except InvalidEndpoint as exc:
        raise ApiError.one(422, exc.message, field=exc.field) from None
    except ConfigurationError as exc:
        raise ApiError.one(503, f"webhooks are not configured on this server: {exc}") from None
    answer = {**view.model_dump(mode="json"), "secret": secret.get_secret_value()}
    return JSONResponse(
        answer, status_code=201, headers={"Location": f"/v1/webhook-endpoints/{view.id}"}
    )


@router.get("/v1/webhook-endpoints", summary="List webhook endpoints", responses=_COMMON)
def list_webhook_endpoints(holder: Caller, api: Context) -> JSONResponse:
    """A producer's own endpoints; every tenant's for an operator. Never a secret."""
    views = list_endpoints(api.database, tenant=_scope(holder))
    return JSONResponse({"endpoints": [view.model_dump(mode="json") for view in views]})


def _owned(api: Any, holder: ApiKey, endpoint_id: str) -> EndpointView:
    view = get_endpoint(api.database, endpoint_id, tenant=_scope(holder))
    if view is None:
        raise _missing(endpoint_id)
    return view


@router.get("/v1/webhook-endpoints/{endpoint_id}", summary="One webhook endpoint",
            response_model=EndpointView, responses=_COMMON)
def get_webhook_endpoint(holder: Caller, api: Context, endpoint_id: str) -> JSONResponse:
    """One endpoint (another tenant's is a 404)."""
    return _json(_owned(api, holder, endpoint_id))


@router.delete(
    "/v1/webhook-endpoints/{endpoint_id}",
    summary="Disable a webhook endpoint (kept, with its deliveries; re-enable it later)",
    response_model=EndpointView,
    responses=_COMMON,
)
def disable_webhook_endpoint(
    holder: Caller,
    api: Context,
    endpoint_id: str,
    reason: Annotated[str | None, Query(max_length=500)] = None,
) -> JSONResponse:
    """No new events are written for it; its waiting deliveries fail with the reason."""
    _owned(api, holder, endpoint_id)
    view = set_enabled(api.database, endpoint_id, enabled=False, tenant=_scope(holder),
                       actor=holder.name, reason=reason)
    if view is None:
        raise _missing(endpoint_id)
    return _json(view)


@router.post(
    "/v1/webhook-endpoints/{endpoint_id}/enable",
    summary="Enable a disabled webhook endpoint (its failure clock starts afresh)",
    response_model=EndpointView,
    responses=_COMMON,
)
def enable_webhook_endpoint(holder: Caller, api: Context, endpoint_id: str) -> JSONResponse:
    """Events are written for it again; replay the deliveries it missed."""
    view = set_enabled(api.database, endpoint_id, enabled=True, tenant=_scope(holder),
                       actor=holder.name)
    if view is None:
        raise _missing(endpoint_id)
    return _json(view)


@router.get("/v1/webhook-deliveries", summary="List webhook deliveries, newest first",
            responses=_COMMON)
def list_webhook_deliveries(
    holder: Caller,
    api: Context,
    endpoint_id: str | None = None,
    refund_id: str | None = None,
    event_id: Annotated[str | None, Query(max_length=40)] = None,
    status: DeliveryStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> JSONResponse:
    """Deliveries of the caller's endpoints (an operator's: every tenant's)."""
    views = list_deliveries(api.database, tenant=_scope(holder), endpoint_id=endpoint_id,
                            refund_id=refund_id, event_id=event_id, status=status, limit=limit)
    return JSONResponse({"deliveries": [view.model_dump(mode="json") for view in views],
                         "limit": limit})


@router.post(
    "/v1/webhook-deliveries/{delivery_id}/replay",
    status_code=202,
    summary="Send a settled delivery again (same event id and body)",
    responses={409: {**_ERROR, "description": "In flight, or its endpoint disabled"},
               **_COMMON},
)
def replay_webhook_delivery(
    request: Request, holder: Caller, api: Context, delivery_id: int
) -> JSONResponse:
    """Re-queue a failed (or delivered) delivery; it is sent with a fresh retry window."""
    scope = _scope(holder)
    outcome = replay_deliveries(api.database, _settings(request), [delivery_id], tenant=scope)
    if delivery_id in outcome.refused:
        why = outcome.refused[delivery_id]
        if why == "no such delivery":
            raise ApiError.one(404, f"no webhook delivery with id {delivery_id}")
        raise ApiError.one(409, f"cannot replay delivery {delivery_id}: {why}")
    api.publisher.publish_webhooks(outcome.replayed)  # type: ignore[attr-defined]
    [view] = list_deliveries(api.database, tenant=scope, ids=[delivery_id])
    return _json(view, status_code=202)
