"""The plain paths beside the inner API: liveness, readiness, metrics, backend health.

``/healthz`` and ``/metrics`` are open (GET and HEAD only); ``/status/targets`` names the
backends, so it is behind the inner API key and the wrong-key guard it shares with the
console.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from gateway.errors import GatewayError
from gateway.http import JSON_MEDIA_TYPE, check_inner_api_key, error_response
from gateway.key_guard import KeyGuard
from gateway.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE, render
from gateway.server_protocol import HEALTHZ_BODY
from gateway.services import Services
from gateway.status import GatewayStatus

Handler = Callable[[Request], Awaitable[Response]]


class Probes:
    def __init__(self, current: Callable[[], Services], status: GatewayStatus, key_guard: KeyGuard) -> None:
        self._current = current  # the running services (a reload replaces them)
        self._status = status
        self._key_guard = key_guard
        self._max_in_flight = current().config.server.max_in_flight
        self.paths: dict[str, Handler] = {
            "/healthz": self.healthz,
            "/readyz": self.readyz,
            "/metrics": self.metrics_page,
            "/status/targets": self.status_targets,
        }

    async def metrics_page(self, request: Request) -> Response:
        return _get_or_head(request) or Response(render(self._current().metrics), media_type=METRICS_CONTENT_TYPE)

    async def healthz(self, request: Request) -> Response:
        """Liveness. The gateway's own server answers GET and HEAD before they reach the app
        (``gateway.server_protocol``): this is the same answer for other servers."""
        return _get_or_head(request) or Response(HEALTHZ_BODY, media_type=JSON_MEDIA_TYPE)

    async def status_targets(self, request: Request) -> Response:
        """Each backend's health (breaker, in flight, recent errors); read-only, no secrets,
        behind the inner API key (it names the backends)."""
        refused = self._key_guard.refusal(request, "/status/targets")
        if refused is not None:
            return refused  # before the key is compared: see gateway.key_guard
        services = self._current()
        try:
            check_inner_api_key(request, services.inner_api_key)
        except GatewayError as exc:
            if request.headers.get("x-inner-api-key"):
                self._key_guard.wrong_key(request, "/status/targets")
            return error_response(exc)
        body = {
            "in_flight": self._status.in_flight,
            "draining": self._status.draining,
            "shared_breakers": services.shared_breakers is not None,
            "targets": services.health.snapshot(),
        }
        return Response(orjson.dumps(body), media_type=JSON_MEDIA_TYPE)

    async def readyz(self, request: Request) -> Response:
        status = self._status
        if status.draining:
            return Response(b'{"status":"draining"}', status_code=503, media_type=JSON_MEDIA_TYPE)
        if not status.ready:
            return Response(b'{"status":"starting"}', status_code=503, media_type=JSON_MEDIA_TYPE)
        if self._max_in_flight and status.in_flight >= self._max_in_flight:
            # Every new invocation would get 429 now: not ready for more traffic.
            full = {"status": "overloaded", "in_flight": status.in_flight, "max_in_flight": self._max_in_flight}
            return Response(orjson.dumps(full), status_code=503, media_type=JSON_MEDIA_TYPE)
        body: dict[str, Any] = {"status": "ready", "uptime_s": round(time.time() - status.started_at, 3)}
        models = self._current().backends.local_status()
        if models:
            body["embedded_models"] = models
        if any(state.startswith("failed") for state in models.values()):
            # An embedded model the routes use could not load (for example an image built
            # without them): every call to it would fail, so this instance is not ready.
            body["status"] = "failed"
            return Response(orjson.dumps(body), status_code=503, media_type=JSON_MEDIA_TYPE)
        if any(state.startswith("restarting") for state in models.values()):
            # An embedded model's process is being replaced after a crash: back in a second.
            body["status"] = "restarting"
            return Response(orjson.dumps(body), status_code=503, media_type=JSON_MEDIA_TYPE)
        return Response(orjson.dumps(body), media_type=JSON_MEDIA_TYPE)


def _get_or_head(request: Request) -> Response | None:
    """None for GET and HEAD; a 405 envelope (with ``Allow``) for any other method."""
    if request.method in ("GET", "HEAD"):
        return None
    refused = GatewayError(f"{request.method} {request.scope['path']}: only GET and HEAD are served")
    response = error_response(refused, 405)
    response.headers["allow"] = "GET, HEAD"
    return response
