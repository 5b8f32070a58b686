"""The management API: a FastAPI application for every path under ``/admin``.

It sits beside the inner API's raw dispatch (which stays free of FastAPI's layers): the
gateway hands it every request whose path starts with ``/admin``. Data endpoints need the
admin key (``X-Admin-Key`` or ``Authorization: Bearer``), checked in constant time after
the wrong-key guard shared with the console; ``/admin/openapi.json`` and ``/admin/docs``
hold no data and are open. Database reads run in a worker thread, never on the event loop.
Every error is ``{"data": null, "error": "..."}``: 400 for a bad parameter, 401 for a
missing or wrong key, 429 when an address sent too many wrong keys, 503 when the ledger is
off or cannot be read.
"""

# No `from __future__ import annotations`: FastAPI reads the endpoints' annotations at run time,
# and some name objects local to build_admin_app.
import asyncio
import dataclasses
import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Query, Request, Security
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import APIKeyHeader, HTTPBearer
from pydantic import BeforeValidator, Field
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway import __version__
from gateway.admin.docs import add_docs
from gateway.admin.models import (
    Budget,
    BudgetsReply,
    DailyReply,
    DayTotals,
    ErrorBody,
    LedgerReply,
    TargetsReply,
    UsageLine,
    UsageReply,
)
from gateway.admin.source import AdminSource
from gateway.keys import keys_match
from gateway.usage.report import (
    GroupBy,
    ReportError,
    daily_series,
    money_text,
    parse_instant,
    parse_since,
    usage_report,
    usage_totals,
)

log = logging.getLogger("dify_gateway")

ADMIN_PREFIX = "/admin"
UNAUTHORIZED = "unauthorized: missing or wrong admin key (send X-Admin-Key or Authorization: Bearer)"
LEDGER_OFF = "the usage ledger is off (ledger.enabled: false): there is no usage to report"
MAX_LIMIT = 100_000
# JSON is never a document to render: it may load nothing and be framed by nobody.
API_HEADERS = {
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
    "cache-control": "no-store",
    "content-security-policy": "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
}


def _blank_is_none(value: object) -> object:
    """``?until=&tenant=&limit=``: an empty parameter is an unset one."""
    return None if value == "" else value


Blank = BeforeValidator(_blank_is_none)
Limit = Annotated[int, Field(ge=1, le=MAX_LIMIT)]
Since = Annotated[str, Blank, Query(description="30m, 24h, 7d, 2w (before now), a date or an ISO datetime")]
Tenant = Annotated[str | None, Blank, Query(description="only this tenant (the Dify workspace id, exactly)")]
_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "a parameter is wrong (the message says which)"},
    401: {"model": ErrorBody, "description": "missing or wrong admin key"},
    429: {"model": ErrorBody, "description": "too many wrong keys from this address (see Retry-After)"},
}
_LEDGER_ERRORS: dict[int | str, dict[str, Any]] = {
    **_ERRORS,
    503: {"model": ErrorBody, "description": "the ledger is off (ledger.enabled: false) or cannot be read"},
}


class _Refused(Exception):
    """A reply made before the endpoint ran (throttled, unauthorized, unavailable)."""

    def __init__(self, response: Response) -> None:
        self.response = response


def error(status: int, message: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"data": None, "error": message}, status_code=status, headers=dict(headers or {}))


def build_admin_app(source: AdminSource) -> ASGIApp:
    """The management API, to be handed every request whose path starts with ``/admin``
    (whole, as the gateway sees it; a ``root_path`` of ``/admin`` set by a Starlette
    ``Mount`` works too)."""
    app = FastAPI(
        title="dify-gateway management API",
        version=__version__,
        description=(
            "Usage reports from the ledger, budget state, the ledger's and the targets' state. "
            "Send the admin key (console.admin_key, else the inner API key) as X-Admin-Key or "
            "Authorization: Bearer. Money is a string of fixed-point digits (exact)."
        ),
        openapi_url="/openapi.json",
        docs_url=None,  # FastAPI's docs pages load their scripts from a CDN: ours are served here
        redoc_url=None,
        # The gateway has its own tracing; a query string may hold a tenant id.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    add_docs(app)

    @app.exception_handler(_Refused)
    async def _refused(request: Request, exc: _Refused) -> Response:
        return exc.response

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        return error(400, _validation_message(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 404:
            return error(404, f"no such path: {request.url.path}")
        return error(exc.status_code, str(exc.detail), exc.headers)

    # Documented as security schemes; the check itself reads the headers as the console does.
    header_scheme = APIKeyHeader(name="X-Admin-Key", auto_error=False, description="the admin key")
    bearer_scheme = HTTPBearer(auto_error=False, description="the admin key as a bearer token")

    async def admin_key(
        request: Request,
        _header: Annotated[str | None, Security(header_scheme)] = None,
        _bearer: Annotated[Any, Security(bearer_scheme)] = None,
    ) -> None:
        guard = source.key_guard
        refused = guard.refusal(request, "admin", API_HEADERS)
        if refused is not None:
            raise _Refused(refused)  # before the key is compared: see gateway.key_guard
        supplied = supplied_key(request)
        if not keys_match(supplied, source.admin_key()):
            if supplied is not None:
                guard.wrong_key(request, "admin")
            raise _Refused(error(401, UNAUTHORIZED, {"www-authenticate": 'Bearer realm="dify-gateway admin"'}))

    def ledger() -> Engine:
        engine = source.engine()
        if engine is None:
            raise _Refused(error(503, LEDGER_OFF))
        return engine

    authorized = [Depends(admin_key)]

    @app.get(
        "/usage",
        response_model=UsageReply,
        dependencies=authorized,
        responses=_LEDGER_ERRORS,
        summary="Usage totals grouped by tenant, model, route, day or type",
    )
    async def usage(
        engine: Annotated[Engine, Depends(ledger)],
        since: Since = "7d",
        until: Annotated[str | None, Blank, Query(description="exclusive end: a date or an ISO datetime")] = None,
        by: Annotated[GroupBy, Query(description="one line per ...")] = "tenant",
        tenant: Tenant = None,
        limit: Annotated[Limit | None, Blank, Query(description="at most this many lines")] = None,
    ) -> UsageReply:
        start, end = _window(since or "7d", until)
        try:
            lines, total = await asyncio.to_thread(_usage, engine, start, end, by, tenant, limit)
        except ReportError as exc:
            raise _Refused(error(400, str(exc))) from None
        except SQLAlchemyError as exc:
            raise _Refused(_unreadable(exc)) from None
        return UsageReply(since=start, until=end, by=by, tenant=tenant, lines=lines, total=total)

    @app.get(
        "/usage/daily",
        response_model=DailyReply,
        dependencies=authorized,
        responses=_LEDGER_ERRORS,
        summary="Totals for each UTC day (the console's chart)",
    )
    async def usage_daily(
        engine: Annotated[Engine, Depends(ledger)], since: Since = "30d", tenant: Tenant = None
    ) -> DailyReply:
        start, _ = _window(since or "30d", None)
        try:
            series = await asyncio.to_thread(daily_series, engine, since=start, tenant_id=tenant)
        except SQLAlchemyError as exc:
            raise _Refused(_unreadable(exc)) from None
        days = [
            DayTotals(**{**dataclasses.asdict(d), "price_usd": money_text(d.price_usd)})  # exact text
            for d in series
        ]
        return DailyReply(since=start.date(), tenant=tenant, days=days)

    @app.get(
        "/budgets",
        response_model=BudgetsReply,
        dependencies=authorized,
        responses={**_ERRORS, 503: {"model": ErrorBody, "description": "the budget counters cannot be read"}},
        summary="Each budget's spend, limit and reset time (one tenant's, or every budgeted tenant's)",
    )
    async def budgets(tenant: Tenant = None) -> BudgetsReply:
        pending = source.budget_state(tenant)
        if pending is None:
            return BudgetsReply(enabled=False, tenant=tenant, budgets=[])
        try:
            states = await pending
        except Exception as exc:  # a counter store that is away is an answer, not a crash
            log.warning("admin: cannot read the budget state: %s", type(exc).__name__)
            raise _Refused(error(503, f"cannot read the budget state: {type(exc).__name__}")) from None
        return BudgetsReply(enabled=True, tenant=tenant, budgets=[_budget(state) for state in states])

    @app.get(
        "/ledger",
        response_model=LedgerReply,
        dependencies=authorized,
        responses=_ERRORS,
        summary="The ledger writer's state",
    )
    async def ledger_state() -> LedgerReply:
        return LedgerReply(enabled=source.engine() is not None, state=jsonable_encoder(dict(source.ledger_state())))

    @app.get(
        "/targets",
        response_model=TargetsReply,
        dependencies=authorized,
        responses=_ERRORS,
        summary="Each backend's health (as /status/targets)",
    )
    async def targets() -> TargetsReply:
        return TargetsReply.model_validate(jsonable_encoder(dict(source.targets())))

    return AdminApp(app)


def _usage(
    engine: Engine, since: datetime, until: datetime | None, by: GroupBy, tenant: str | None, limit: int | None
) -> tuple[list[UsageLine], UsageLine]:
    lines = usage_report(engine, since=since, until=until, by=by, tenant_id=tenant, limit=limit)
    total = usage_totals(engine, since=since, until=until, tenant_id=tenant)
    return [UsageLine.model_validate(line.to_json()) for line in lines], UsageLine.model_validate(total.to_json())


def _window(since: str, until: str | None) -> tuple[datetime, datetime | None]:
    try:
        start = parse_since(since, datetime.now(UTC))
        end = parse_instant(until) if until is not None else None
    except ReportError as exc:
        raise _Refused(error(400, str(exc))) from None
    if end is not None and end <= start:
        raise _Refused(error(400, f"until ({end.isoformat()}) must be after since ({start.isoformat()})"))
    return start, end


def _unreadable(exc: SQLAlchemyError) -> JSONResponse:
    original = getattr(exc, "orig", None)
    lines = str(original if original is not None else exc).strip().splitlines()
    reason = lines[0] if lines else type(exc).__name__
    log.warning("admin: cannot read the ledger: %s", reason)
    return error(503, f"cannot read the ledger: {reason}")


def _budget(state: Any) -> Budget:
    values = (
        dataclasses.asdict(state) if dataclasses.is_dataclass(state) and not isinstance(state, type) else dict(state)
    )
    for name in ("spent_usd", "limit_usd"):
        if isinstance(values.get(name), (Decimal, int, float)):
            values[name] = money_text(Decimal(str(values[name])))
    return Budget.model_validate(values)


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for problem in exc.errors()[:3]:
        where = ".".join(str(p) for p in problem.get("loc", ())[1:]) or "request"
        parts.append(f"{where}: {problem.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


def supplied_key(request: Request) -> str | None:
    """The key sent as ``X-Admin-Key`` or ``Authorization: Bearer``; None when there is none
    (an empty one is none: it is not a guess)."""
    supplied = request.headers.get("x-admin-key")
    if supplied is None:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        supplied = token.strip() if scheme.lower() == "bearer" else None
    return supplied or None


class AdminApp:
    """The FastAPI app behind the ``/admin`` prefix: the prefix becomes the ``root_path`` (so
    routes, ``openapi.json``'s server URL and the docs page all know it), and every reply
    gets the console's security headers unless it set its own."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        root = scope.get("root_path", "")
        path: str = scope["path"]
        inside = path[len(root) :] if root and path.startswith(root) else path
        if not root.endswith(ADMIN_PREFIX) and (inside == ADMIN_PREFIX or inside.startswith(ADMIN_PREFIX + "/")):
            base = root if path.startswith(root) else ""
            scope = {**scope, "root_path": base + ADMIN_PREFIX}

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                headers += [(k.encode(), v.encode()) for k, v in API_HEADERS.items() if k.encode() not in present]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)
