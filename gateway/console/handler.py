"""``/console``: the operator console's page, its static files and its JSON endpoints.

The page (HTML, CSS, JS: no data in them) is served to anyone who can reach the port; every
piece of data comes from ``/console/api/*``, which needs the admin key as ``X-Admin-Key``
or ``Authorization: Bearer``. Wrong keys are throttled per client address
(``gateway.key_guard``). With the console disabled none of these paths exist (404).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib.resources import files
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response, StreamingResponse
from starlette.types import ASGIApp

from gateway.console.aggregate import merge_errors, merge_status, worker_summaries
from gateway.console.publish import PUBLISH_INTERVAL_S, read_snapshots, remove_snapshot, write_snapshot
from gateway.console.state import ConsoleState
from gateway.console.status import build_status
from gateway.console.tryit import plan_try, run_try
from gateway.errors import GatewayError, NotFound, Unauthorized
from gateway.http import JSON_MEDIA_TYPE, error_response, parse_json_object, read_body
from gateway.key_guard import KeyGuard
from gateway.keys import keys_match
from gateway.metrics import multiprocess_dir
from gateway.services import Services
from gateway.status import GatewayStatus
from gateway.trace import Trace

log = logging.getLogger("dify_gateway")

CONSOLE_PREFIX = "/console"
NDJSON_MEDIA_TYPE = "application/x-ndjson"
# The page loads only its own files, talks only to its own origin, and cannot be framed.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; media-src 'self' blob:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
}
_COMMON_HEADERS = {
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
}
# Data changes from second to second and is behind a key: never stored by caches. JSON is
# never a document to render: it may load nothing and be framed by nobody.
_API_HEADERS = {
    **_COMMON_HEADERS,
    "cache-control": "no-store",
    "content-security-policy": "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
}


@dataclass(frozen=True, slots=True)
class Asset:
    body: bytes
    media_type: str
    etag: str


def load_assets() -> dict[str, Asset]:
    """The files under ``gateway/console/static``, read once."""
    assets: dict[str, Asset] = {}
    for entry in files("gateway.console").joinpath("static").iterdir():
        suffix = "." + entry.name.rpartition(".")[2]
        if entry.is_file() and suffix in _MEDIA_TYPES:
            body = entry.read_bytes()
            assets[entry.name] = Asset(body, _MEDIA_TYPES[suffix], '"' + hashlib.sha256(body).hexdigest()[:20] + '"')
    return assets


class Console:
    """The console's pages and JSON API. ``app`` is the gateway's public ASGI entry: a try
    runs through it exactly as the daemon's request would."""

    def __init__(
        self, current: Callable[[], Services], status: GatewayStatus, app: ASGIApp, key_guard: KeyGuard
    ) -> None:
        services = current()
        config = services.config  # the console's own settings need a restart to change
        admin = config.console.admin_key
        # documented: the inner key when no admin key is set
        self._admin_key = admin.get_secret_value().encode() if admin is not None else services.inner_api_key
        self._inner_key = services.inner_api_key
        self._current = current  # the running services (a reload replaces them)
        self._status = status
        self._app = app
        self._max_body = config.server.max_body_bytes
        self._assets = load_assets()
        # Shared with /status/targets: one budget of wrong keys per address.
        self._guard = key_guard
        self.state = ConsoleState(services.redactor)
        self._publisher: asyncio.Task[None] | None = None
        self._api = {
            "/api/status": ("GET", self.status),
            "/api/errors": ("GET", self.errors),
            "/api/try": ("POST", self.try_it),
        }

    # --- fed by the app for every inner-API request ------------------------------------

    def begin(self, trace: Trace | None) -> None:
        self.state.begin(trace)

    def note_error(self, trace: Trace | None, message: str) -> None:
        self.state.note_error(trace, message)

    def record(self, trace: Trace, outcome: str, status: int, duration_s: float, body: object = None) -> None:
        self.state.record(trace, outcome, status, duration_s, body)

    # --- several worker processes: each publishes its data for the others -------------

    def start(self) -> None:
        """With several workers, publish this worker's data about once a second (from start-up)."""
        directory = multiprocess_dir()
        if directory is not None and self._publisher is None:
            self._publisher = asyncio.get_running_loop().create_task(self._publish_forever(directory))

    async def aclose(self) -> None:
        """Stop publishing and remove this worker's snapshot (at shutdown)."""
        if self._publisher is None:
            return
        self._publisher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._publisher
        self._publisher = None
        directory = multiprocess_dir()
        if directory is not None:
            remove_snapshot(directory, os.getpid())

    async def _publish_forever(self, directory: str) -> None:
        failing = False
        while True:
            try:
                self._publish(directory)
                failing = False
            except Exception:
                if not failing:  # once per run of failures, not every second
                    log.warning("cannot publish this worker's console data to %s", directory, exc_info=True)
                failing = True
            await asyncio.sleep(PUBLISH_INTERVAL_S)

    def _publish(self, directory: str) -> dict[str, Any]:
        """Write this worker's snapshot and return it."""
        snapshot = self._snapshot()
        write_snapshot(directory, snapshot)
        return snapshot

    def _snapshot(self) -> dict[str, Any]:
        return {
            "pid": os.getpid(),
            "written_at": time.time(),
            "status": build_status(self._current(), self._status, self.state),
            "errors": self.state.recent_errors(),
        }

    def _instance(self, request: Request) -> tuple[dict[str, Any], list[dict[str, Any]]] | None:
        """This worker's fresh snapshot and every running worker's, when several workers run and
        the whole instance is asked for (``?worker=self`` asks for the answering worker only)."""
        directory = multiprocess_dir()
        if directory is None or request.query_params.get("worker") == "self":
            return None
        own = self._snapshot()
        with contextlib.suppress(OSError):  # the publishing loop logs why; the others' still count
            write_snapshot(directory, own)
        others = [s for s in read_snapshots(directory, time.time()) if s["pid"] != own["pid"]]
        return own, [own, *others]

    # --- HTTP -------------------------------------------------------------------------

    async def handle(self, request: Request) -> Response:
        path: str = request.scope["path"]
        rest = path[len(CONSOLE_PREFIX) :]
        if rest == "":
            return RedirectResponse(CONSOLE_PREFIX + "/", status_code=308, headers=_COMMON_HEADERS)
        if rest in ("/", "/index.html"):
            return self._asset(request, "index.html")
        if rest.startswith("/static/"):
            return self._asset(request, rest.removeprefix("/static/"))
        api = self._api.get(rest.rstrip("/"))
        if api is None or not rest.startswith("/api/"):
            return _api_error(NotFound(f"no such path: {path}"))
        method, handler = api
        refused = self._guard.refusal(request, "console", _API_HEADERS)
        if refused is not None:
            return refused  # before the key is compared: see gateway.key_guard
        supplied = _supplied_key(request)
        # Constant-time compare, so response timing does not reveal how much of a guess matched.
        if not keys_match(supplied, self._admin_key):
            if supplied is not None:
                self._guard.wrong_key(request, "console")
            response = _api_error(
                Unauthorized("unauthorized: missing or wrong admin key (send X-Admin-Key or Authorization: Bearer)")
            )
            response.headers["www-authenticate"] = 'Bearer realm="dify-gateway console"'
            return response
        if request.method != method:
            response = _api_error(NotFound(f"{request.method} {path}: only {method} is served"), 405)
            response.headers["allow"] = method
            return response
        try:
            return await handler(request)
        except GatewayError as exc:
            exc.message = self._current().redactor(exc.message)
            return _api_error(exc)

    def _asset(self, request: Request, name: str) -> Response:
        asset = self._assets.get(name)
        if asset is None:
            return _api_error(NotFound(f"no such file: {name}"))
        if request.method not in ("GET", "HEAD"):
            return _api_error(NotFound(f"{request.method}: only GET is served"), 405)
        headers = {
            **_COMMON_HEADERS,
            # Revalidated on every load (a 304 when unchanged), so an upgrade shows at once.
            "cache-control": "no-cache",
            "etag": asset.etag,
        }
        if name == "index.html":
            headers["content-security-policy"] = CONTENT_SECURITY_POLICY
        if request.headers.get("if-none-match") == asset.etag:
            return Response(status_code=304, headers=headers)
        body = b"" if request.method == "HEAD" else asset.body
        return Response(body, media_type=asset.media_type, headers=headers)

    # --- the JSON endpoints -----------------------------------------------------------

    async def status(self, request: Request) -> Response:
        instance = self._instance(request)
        if instance is None:
            return _json(build_status(self._current(), self._status, self.state))
        own, snapshots = instance
        return _json(merge_status(own["status"], snapshots))

    async def errors(self, request: Request) -> Response:
        capacity = self.state.error_capacity
        instance = self._instance(request)
        if instance is None:
            return _json({"capacity": capacity, "errors": self.state.recent_errors()})
        own, snapshots = instance
        workers = worker_summaries(own["status"], snapshots)
        return _json(
            {"capacity": capacity, "errors": merge_errors(snapshots, capacity), "aggregated": True, "workers": workers}
        )

    async def try_it(self, request: Request) -> Response:
        data = parse_json_object(await read_body(request, self._max_body))
        plan = plan_try(self._current(), data)
        return StreamingResponse(
            run_try(self._app, plan, self._inner_key),
            media_type=NDJSON_MEDIA_TYPE,
            # Proxies such as nginx must pass each line on as it comes, not buffer the reply.
            headers={**_API_HEADERS, "x-accel-buffering": "no"},
        )


def _supplied_key(request: Request) -> str | None:
    """The key sent as ``X-Admin-Key`` or ``Authorization: Bearer``; None when there is none
    (an empty one is none: it is not a guess)."""
    supplied = request.headers.get("x-admin-key")
    if supplied is None:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        supplied = token.strip() if scheme.lower() == "bearer" else None
    return supplied or None


def _json(body: object) -> Response:
    return Response(orjson.dumps(body), media_type=JSON_MEDIA_TYPE, headers=_API_HEADERS)


def _api_error(exc: GatewayError, status: int | None = None) -> Response:
    response = error_response(exc, status)
    response.headers.update(_API_HEADERS)
    return response
