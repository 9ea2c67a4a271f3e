"""The console's pages and forms, under ``/console``; operator keys only (docs/console.md).

Every page is rendered on the server (Jinja2, autoescaped); no script runs in the browser, and
the pages forbid scripts outright (``Content-Security-Policy``). Reads are plain ``def``
handlers (FastAPI's thread pool); POSTs are ``async`` to read their small form body on the loop,
then hand the database work to the thread pool, as the JSON API does.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import jinja2
from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from refund_worker.api.body import read_body
from refund_worker.api.console import data
from refund_worker.api.console.sessions import (
    LOGIN_COOKIE,
    LOGIN_FORM_SECONDS,
    SESSION_COOKIE,
    ConsoleSessions,
    Session,
)
from refund_worker.api.keys import KeyRing
from refund_worker.db import Database
from refund_worker.errors import DatabaseUnavailable
from refund_worker.models import utcnow
from refund_worker.publishing import Publisher
from refund_worker.queries import RefundFilter, get_refund, parse_moment
from refund_worker.replay import MAX_REASON_LENGTH, check_reason, replay
from refund_worker.schemas import MAX_ENTITY_ID, TENANT_PATTERN, RefundStatus

log = logging.getLogger(__name__)

PREFIX = "/console"
HOME = f"{PREFIX}/refunds"
DEFAULT_LIMIT = 50
MAX_LIMIT = 500
LIMITS = (25, 50, 100, 200, 500)
#: A console form is a reason and a few fields; anything bigger is not one of ours.
MAX_FORM_BYTES = 16 * 1024
MAX_ERROR_FILTER = 200
#: Seconds between reloads of a refund page while the refund or its email is in flight.
REFRESH_SECONDS = 2

_TEMPLATES = Path(__file__).parent / "templates"
_STYLESHEET = (Path(__file__).parent / "static" / "console.css").read_bytes()
_KEY = re.compile(r"[\x21-\x7e]{1,255}")

#: Sent with every console page: no script may run, nothing may be framed, loaded from
#: elsewhere or cached, and no address leaks in a Referer.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def _moment(value: datetime | None) -> str:
    return "" if value is None else value.strftime("%Y-%m-%d %H:%M:%S UTC")


_environment = jinja2.Environment(
    loader=jinja2.FileSystemLoader(_TEMPLATES),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
_environment.filters["moment"] = _moment


@dataclass(frozen=True)
class ConsoleContext:
    """What the console's handlers use; one per app, in ``app.state.refund_console``."""

    database: Database
    publisher: Publisher
    keys: KeyRing
    sessions: ConsoleSessions
    #: Mark cookies ``Secure`` even over plain HTTP (TLS ends at a proxy in front).
    secure_cookies: bool


def _console(request: Request) -> ConsoleContext:
    console = request.app.state.refund_console
    assert isinstance(console, ConsoleContext)
    return console


router = APIRouter(prefix=PREFIX, include_in_schema=False)

# -- rendering ---------------------------------------------------------------------------------


def render(
    template: str,
    context: Mapping[str, Any],
    *,
    status_code: int = 200,
    session: Session | None = None,
) -> HTMLResponse:
    """A page from ``templates/``, autoescaped, with the security headers."""
    page = _environment.get_template(template).render(
        {
            "session": session,
            "prefix": PREFIX,
            "home": HOME,
            "refresh": None,
            "message": None,
            "problems": [],
            **context,
        }
    )
    return HTMLResponse(page, status_code=status_code, headers=SECURITY_HEADERS)


def _see_other(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303, headers=SECURITY_HEADERS)


def _error_page(
    status_code: int, title: str, message: str, session: Session | None = None
) -> HTMLResponse:
    return render(
        "error.html",
        {"title": title, "message": message},
        status_code=status_code,
        session=session,
    )


def _unavailable(session: Session | None) -> HTMLResponse:
    response = _error_page(
        503, "Database unavailable", "The database did not answer; reload in a moment.", session
    )
    response.headers["Retry-After"] = "5"
    return response


def _secure(request: Request, console: ConsoleContext) -> bool:
    return console.secure_cookies or request.url.scheme == "https"


def _set_cookie(response: Response, request: Request, name: str, value: str, max_age: int) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path=PREFIX,
        httponly=True,
        samesite="strict",
        secure=_secure(request, _console(request)),
    )


def _delete_cookie(response: Response, request: Request, name: str) -> None:
    response.delete_cookie(
        name,
        path=PREFIX,
        httponly=True,
        samesite="strict",
        secure=_secure(request, _console(request)),
    )


# -- sessions ----------------------------------------------------------------------------------


def _session(request: Request) -> Session | None:
    return _console(request).sessions.check(request.cookies.get(SESSION_COOKIE))


def _login_url(request: Request) -> str:
    here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return f"{PREFIX}/login?{urlencode({'next': here})}"


def _safe_next(target: str | None) -> str:
    """Where to go after logging in: a console page of this server, never another site."""
    if not target or len(target) > 2000 or "\\" in target:
        return HOME
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith(PREFIX + "/") or target[1:2] == "/":
        return HOME
    if parts.path in (f"{PREFIX}/login", f"{PREFIX}/logout"):
        return HOME
    return target


def _cross_site(request: Request) -> bool:
    """A POST a browser says came from another site (``Sec-Fetch-Site``), refused whatever its
    token; browsers that do not send the header are covered by the token and SameSite."""
    return request.headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none")


async def _form(request: Request) -> dict[str, str]:
    """A url-encoded form (the first value of each field); empty when it is not one."""
    body = await read_body(request, MAX_FORM_BYTES)
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, max_num_fields=20)
    except (UnicodeDecodeError, ValueError):
        return {}
    form: dict[str, str] = {}
    for name, value in pairs:
        form.setdefault(name, value)
    return form


def _login_page(
    request: Request,
    target: str,
    *,
    status_code: int = 200,
    message: str | None = None,
    title: str = "Log in",
) -> HTMLResponse:
    sessions = _console(request).sessions
    seed = sessions.new_login_seed()
    response = render(
        "login.html",
        {
            "title": title,
            "message": ("refused", message) if message else None,
            "csrf": sessions.login_token(seed),
            "next": target,
        },
        status_code=status_code,
    )
    _set_cookie(response, request, LOGIN_COOKIE, seed, LOGIN_FORM_SECONDS)
    return response


@router.get("")
def console_home() -> RedirectResponse:
    """The console starts at its list."""
    return _see_other(HOME)


@router.get("/console.css")
def stylesheet() -> Response:
    """The console's only stylesheet (no page loads anything from elsewhere)."""
    return Response(
        _STYLESHEET,
        media_type="text/css",
        headers={"Cache-Control": "max-age=3600", "X-Content-Type-Options": "nosniff"},
    )


@router.get("/login")
def login_form(
    request: Request, target: Annotated[str | None, Query(alias="next")] = None
) -> Response:
    """The login form: paste an operator API key."""
    target = _safe_next(target)
    if _session(request) is not None:
        return _see_other(target)
    return _login_page(request, target)


@router.post("/login")
async def login(request: Request) -> Response:
    """Check the pasted key: an operator's opens a session; any other is refused."""
    console = _console(request)
    form = await _form(request)
    target = _safe_next(form.get("next"))
    if _cross_site(request) or not console.sessions.login_ok(
        request.cookies.get(LOGIN_COOKIE), form.get("csrf")
    ):
        return _login_page(
            request,
            target,
            status_code=403,
            title="Refused",
            message="This login form has expired or came from another site. Log in again.",
        )
    holder = console.keys.holder(form.get("key", "").strip())
    if holder is None:
        log.warning("console login refused: not a valid API key")
        return _login_page(
            request,
            target,
            status_code=401,
            title="Refused",
            message="That is not a valid API key.",
        )
    if holder.role != "operator":
        log.warning("console login refused: %s is a %s key", holder.name, holder.role)
        return _login_page(
            request,
            target,
            status_code=403,
            title="Refused",
            message=(
                f"The key {holder.name!r} is a {holder.role} key. The console is for operator "
                "keys only (refund-worker api-key NAME --role operator)."
            ),
        )
    log.info("console login: %s", holder.name)
    response = _see_other(target)
    _set_cookie(
        response,
        request,
        SESSION_COOKIE,
        console.sessions.issue(holder),
        console.sessions.lifetime_seconds,
    )
    _delete_cookie(response, request, LOGIN_COOKIE)
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    """End the session in this browser (its cookie is deleted)."""
    session = _session(request)
    form = await _form(request)
    if session is not None and (
        _cross_site(request) or not _console(request).sessions.csrf_ok(session, form.get("csrf"))
    ):
        return _error_page(
            403, "Refused", "The form came without its CSRF token. Reload the page.", session
        )
    if session is not None:
        log.info("console logout: %s", session.key.name)
    response = _see_other(f"{PREFIX}/login")
    _delete_cookie(response, request, SESSION_COOKIE)
    return response


# -- the list ----------------------------------------------------------------------------------

_STATUS_CHOICES = (
    ("attention", "failed or needs attention"),
    ("any", "any status"),
    *((status.value, status.value.replace("_", " ")) for status in RefundStatus),
)


@dataclass
class ListQuery:
    """The list's filters, as given (to show them again) and as understood."""

    values: dict[str, str]
    refund_filter: RefundFilter
    statuses: tuple[str, ...]
    limit: int
    before: str | None
    problems: list[str]


def _canonical_id(text: str) -> str | None:
    """``text`` as a refund id (a UUID in its canonical form), or None."""
    try:
        refund_id = str(uuid.UUID(text))
    except ValueError:
        return None
    return refund_id if refund_id == text.lower() else None


def parse_list_query(params: Mapping[str, str]) -> ListQuery:
    """The list's filters from the query string; every problem is named, none is fatal."""
    fields = ("status", "error", "order_id", "tenant", "key", "since", "until", "limit")
    values = {name: params.get(name, "").strip() for name in fields}
    problems: list[str] = []
    status = values["status"] or "attention"
    values["status"] = status
    statuses: tuple[str, ...] = data.ATTENTION_STATUSES
    if status == "any":
        statuses = ()
    elif status != "attention":
        if status in {item.value for item in RefundStatus}:
            statuses = (status,)
        else:
            problems.append(f"status: {status!r} is not a status")
    error = values["error"]
    if len(error) > MAX_ERROR_FILTER:
        problems.append(f"error text: at most {MAX_ERROR_FILTER} characters")
        error = ""
    order_id: int | None = None
    if values["order_id"]:
        text = values["order_id"]
        if text.isascii() and text.isdigit() and 0 < int(text) <= MAX_ENTITY_ID:
            order_id = int(text)
        else:
            problems.append("order id: a Magento order id is a whole number above 0")
    tenant = values["tenant"] or None
    if tenant is not None and not TENANT_PATTERN.fullmatch(tenant):
        problems.append("tenant: 1-64 letters, digits, '.', '_' or '-'")
        tenant = None
    key = values["key"]
    if key and not _KEY.fullmatch(key):
        problems.append("idempotency key: 1-255 printable ASCII characters, no spaces")
        key = ""
    moments: dict[str, datetime | None] = {"since": None, "until": None}
    now = utcnow()
    for name in moments:
        if values[name]:
            try:
                moments[name] = parse_moment(values[name], now)
            except ValueError as exc:
                problems.append(f"{name}: {exc}")
    limit = DEFAULT_LIMIT
    if values["limit"]:
        text = values["limit"]
        if text.isascii() and text.isdigit() and 0 < int(text) <= MAX_LIMIT:
            limit = int(text)
        else:
            problems.append(f"limit: a number from 1 to {MAX_LIMIT}")
    values["limit"] = str(limit)
    before = params.get("before") or None
    if before is not None and _canonical_id(before) is None:
        problems.append("before: not a refund id")
        before = None
    return ListQuery(
        values=values,
        refund_filter=RefundFilter(
            keys=(key,) if key else (),
            tenant=tenant,
            order_id=order_id,
            error_contains=error or None,
            since=moments["since"],
            until=moments["until"],
        ),
        statuses=statuses,
        limit=limit,
        before=before,
        problems=problems,
    )


def _list_url(values: Mapping[str, str], **changes: str) -> str:
    params = {name: value for name, value in {**values, **changes}.items() if value}
    return f"{HOME}?{urlencode(params)}" if params else HOME


@router.get("/refunds")
def refund_list(request: Request) -> Response:
    """Failed and needs-attention refunds (or as filtered), newest first."""
    session = _session(request)
    if session is None:
        return _see_other(_login_url(request))
    query = parse_list_query(request.query_params)
    console = _console(request)
    try:
        with console.database.session_scope() as db:
            page = (
                data.list_refunds(
                    db,
                    query.refund_filter,
                    statuses=query.statuses,
                    limit=query.limit,
                    before=query.before,
                )
                if not query.problems  # never a list under filters half understood
                else data.RefundPageOfList(refunds=[], matching=0, next_before=None)
            )
            counts = data.counts_by_status(db)
    except DatabaseUnavailable:
        return _unavailable(session)
    first_page = _list_url(query.values)
    return render(
        "list.html",
        {
            "title": "Refunds",
            "query": query.values,
            "problems": query.problems,
            "page": page,
            "counts": counts,
            "attention": sum(counts.get(status, 0) for status in data.ATTENTION_STATUSES),
            "status_choices": _STATUS_CHOICES,
            "limits": LIMITS,
            "paged": query.before is not None,
            "first_page": first_page,
            "next_page": (
                _list_url(query.values, before=page.next_before) if page.next_before else None
            ),
            "links": {
                "failed": _list_url({"status": "failed"}),
                "needs_attention": _list_url({"status": "needs_attention"}),
                "attention": HOME,
                "any": _list_url({"status": "any"}),
            },
        },
        status_code=422 if query.problems else 200,
        session=session,
    )


# -- one refund --------------------------------------------------------------------------------

_REPLAYED_MESSAGES = {
    "refund": (
        "Replayed: the refund is queued again under the same idempotency key. Its next attempt "
        "first looks in Magento for a credit memo carrying its marker, so it cannot refund twice."
    ),
    "email": "Replayed: the credit memo email is queued again.",
}


def _refund_page(
    console: ConsoleContext,
    session: Session,
    refund_id: str,
    *,
    status_code: int = 200,
    message: tuple[str, str] | None = None,
    problems: list[str] | None = None,
    reason: str = "",
) -> HTMLResponse:
    try:
        with console.database.session_scope() as db:
            timeline = data.refund_timeline(db, refund_id)
    except DatabaseUnavailable:
        return _unavailable(session)
    if timeline is None:
        return _error_page(404, "No such refund", f"No refund has the id {refund_id}.", session)
    return render(
        "refund.html",
        {
            "title": f"Refund {refund_id}",
            "t": timeline,
            "refund": timeline.view,
            "message": message,
            "problems": problems or [],
            "reason": reason,
            "max_reason": MAX_REASON_LENGTH,
            "refresh": (
                f"{REFRESH_SECONDS};url={PREFIX}/refunds/{refund_id}"
                if timeline.in_flight and status_code == 200
                else None
            ),
        },
        status_code=status_code,
        session=session,
    )


@router.get("/refunds/{refund_id}")
def refund_page(request: Request, refund_id: str) -> Response:
    """One refund: its request, timeline, email, webhook deliveries, and the replay form."""
    session = _session(request)
    if session is None:
        return _see_other(_login_url(request))
    canonical = _canonical_id(refund_id)
    if canonical is None:
        return _error_page(404, "No such refund", "A refund id is a UUID.", session)
    message = None
    replayed = request.query_params.get("replayed")
    if replayed in _REPLAYED_MESSAGES:
        message = ("ok", _REPLAYED_MESSAGES[replayed])
        if request.query_params.get("broker") == "down":
            message = (
                "warning",
                _REPLAYED_MESSAGES[replayed]
                + " The broker did not take the message; the sweeper will publish it.",
            )
    return _refund_page(_console(request), session, canonical, message=message)


@router.post("/refunds/{refund_id}/replay")
async def replay_refund(request: Request, refund_id: str) -> Response:
    """Replay the refund (or its email) with a reason, through ``replay.replay``: the same
    guards as the CLI and the API (never a succeeded or in-flight refund, never twice)."""
    console = _console(request)
    session = _session(request)
    if session is None:
        return _error_page(
            403, "Refused", "Your console session has ended: log in again, then replay."
        )
    form = await _form(request)
    if _cross_site(request) or not console.sessions.csrf_ok(session, form.get("csrf")):
        log.warning("console replay refused: missing or wrong CSRF token (%s)", session.key.name)
        return _error_page(
            403,
            "Refused",
            "The form came without its CSRF token, or from another page. Reload the refund's "
            "page and replay from there.",
            session,
        )
    canonical = _canonical_id(refund_id)
    if canonical is None:
        return _error_page(404, "No such refund", "A refund id is a UUID.", session)
    what = form.get("what", "refund")
    reason = form.get("reason", "")
    return await run_in_threadpool(_replay, console, session, canonical, what, reason)


def _replay(
    console: ConsoleContext, session: Session, refund_id: str, what: str, reason: str
) -> Response:
    problems = []
    if what not in _REPLAYED_MESSAGES:
        problems.append("choose what to replay: the refund or its email")
    try:
        reason = check_reason(reason)
    except ValueError as exc:
        problems.append(str(exc))
    if problems:
        return _refund_page(
            console, session, refund_id, status_code=422, problems=problems, reason=reason
        )
    try:
        with console.database.session_scope() as db:
            exists = get_refund(db, refund_id) is not None
        if not exists:
            return _error_page(404, "No such refund", f"No refund has the id {refund_id}.", session)
        report = replay(
            console.database,
            console.publisher,
            [refund_id],
            reason=reason,
            actor=session.key.name,
            notifications=what == "email",
        )
        # The broker refused the message: the replay is committed, and the sweeper publishes it.
        broker = "&broker=down" if report.unpublished is not None else ""
        if refund_id in report.refused:
            log.info(
                "console replay of %s by %s refused: %s",
                refund_id,
                session.key.name,
                report.refused[refund_id],
            )
            what_text = "its email" if what == "email" else "this refund"
            return _refund_page(
                console,
                session,
                refund_id,
                status_code=409,
                message=(
                    "refused",
                    f"Not replayed: cannot replay {what_text}: {report.refused[refund_id]}.",
                ),
            )
    except DatabaseUnavailable:
        return _unavailable(session)
    log.info("console replay of %s (%s) by %s", refund_id, what, session.key.name)
    return _see_other(f"{PREFIX}/refunds/{refund_id}?replayed={what}{broker}")
