"""The ASGI application: dispatch and lifecycle, nothing else.

Paths go through plain dict lookups rather than a framework router: these are the hot
paths, and every framework layer there costs measurable latency under load. A path prefix
in the daemon's DIFY_INNER_API_URL is allowed: everything from ``/inner/api/`` on selects
the endpoint (``gateway.endpoints``). What answers is built once by
``gateway.services.build_services``; the console and the serverless endpoint receive those
services and a read-only status, never this app.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import signal
import threading
import time
from types import FrameType
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from gateway.accounting import identify
from gateway.adapters.registry import Backends
from gateway.admin.app import build_admin_app
from gateway.admin.source import AdminSource
from gateway.admission import Admission
from gateway.config import GatewayConfig
from gateway.console import CONSOLE_PREFIX, Console
from gateway.endpoints import BY_PATH, Endpoint
from gateway.errors import GatewayError, NoRoute, NotFound, UpstreamError
from gateway.http import (
    INNER_PREFIX,
    ClientGone,
    check_inner_api_key,
    envelope_response,
    error_response,
    internal_error_response,
    parse_json_object,
    parse_model,
    read_body,
    stream_response,
    unary_error_response,
    unless_disconnected,
)
from gateway.key_guard import KeyGuard
from gateway.observe import BODY_KEY, InnerRequestObserver
from gateway.probes import Probes
from gateway.reload import ConfigWatcher, Reloader, take_early_sighup
from gateway.serverless.endpoint import ServerlessEndpoint
from gateway.serverless.wire import TRANSACTION_PATH
from gateway.services import Services, ServicesLifecycle, build_services
from gateway.trace import current_trace

log = logging.getLogger("dify_gateway")
ADMIN_PREFIX = "/admin"  # the management API (gateway.admin)


def _set_outcome(outcome: str) -> None:
    trace = current_trace.get()
    if trace is not None:
        trace.outcome = outcome


class Generation:
    """The services of one configuration, and the requests still running on them.

    A reload installs a new generation; the old one is released (connection pools only it
    used are closed) after its last request ends.
    """

    __slots__ = ("services", "serverless", "in_flight", "retired_at")

    def __init__(self, services: Services) -> None:
        self.services = services
        serverless = services.config.serverless
        self.serverless = ServerlessEndpoint(services, serverless) if serverless.enabled else None
        self.in_flight = 0
        self.retired_at: float | None = None


class Gateway:
    """One app instance; it is also the ``GatewayStatus`` the console and metrics read."""

    def __init__(self, config: GatewayConfig, backends: Backends | None = None) -> None:
        self.config = config  # as started; the running routes are ``services.config``
        self.started_at = time.time()
        self.ready = False
        self.admission = Admission(config.server.max_in_flight)
        services = build_services(config, self, backends)
        self._generation = Generation(services)
        self.lifecycle = ServicesLifecycle(services, self._became_ready)
        self.key_guard = KeyGuard()  # wrong keys on the console and /status/targets, per address
        self.probes = Probes(self._current, self, self.key_guard)
        self.console = Console(self._current, self, self, self.key_guard) if config.console.enabled else None
        self.observer = InnerRequestObserver(self.admission, self.console.record if self.console is not None else None)
        self.admin = build_admin_app(self._admin_source())
        file = None if config.source.startswith("<") else config.source
        self.reloader = Reloader(file, self._current, self._swap)
        server = config.server
        self._watcher = (
            ConfigWatcher(file, server.watch_interval_s, self.reloader.request)
            if file and server.watch_config
            else None
        )
        self._loop: asyncio.AbstractEventLoop | None = None

    # --- GatewayStatus ----------------------------------------------------------------

    @property
    def services(self) -> Services:
        """The running services (a reload replaces them; a request keeps those it began with)."""
        return self._generation.services

    def _current(self) -> Services:
        return self._generation.services

    @property
    def in_flight(self) -> int:
        return self.admission.in_flight

    @property
    def draining(self) -> bool:
        return self.services.drain.draining

    @property
    def last_reload(self) -> dict[str, Any] | None:
        last = self.reloader.last
        return last.as_dict() if last is not None else None

    def _admin_source(self) -> AdminSource:
        """What the management API reads: the running services' ledger, governor and targets."""
        admin = self.config.console.admin_key
        admin_key = admin.get_secret_value().encode() if admin is not None else self.services.inner_api_key

        def engine() -> Any:
            ledger = self.services.ledger
            store = ledger.store if ledger is not None else None
            return store.engine if store is not None else None

        def ledger_state() -> dict[str, Any]:
            ledger = self.services.ledger
            if ledger is None:
                return {"status": "off", "enabled": False}
            return {"enabled": True, **dataclasses.asdict(ledger.state())}

        def budget_state(tenant_id: str | None) -> Any:
            governor = self.services.governor
            if governor is None or not self.services.config.budgets.enabled:
                return None
            return governor.budget_state(tenant_id)

        def targets() -> dict[str, Any]:
            services = self.services
            return {
                "in_flight": self.in_flight,
                "draining": self.draining,
                "shared_breakers": services.shared_breakers is not None,
                "targets": services.health.snapshot(),
            }

        return AdminSource(
            admin_key=lambda: admin_key,
            key_guard=self.key_guard,
            engine=engine,
            ledger_state=ledger_state,
            budget_state=budget_state,
            targets=targets,
        )

    def _became_ready(self) -> None:
        self.ready = True

    # --- reload -----------------------------------------------------------------------

    def _swap(self, services: Services) -> None:
        old, self._generation = self._generation, Generation(services)
        old.retired_at = time.monotonic()
        if old.in_flight == 0:
            self._release(old)

    def _release(self, generation: Generation) -> None:
        """The last request of a replaced configuration ended: close what only it used."""
        assert generation.retired_at is not None
        backends = self.services.backends
        backends.release_idle(generation.retired_at)

    def _on_sighup(self, sig: int, frame: FrameType | None) -> None:
        loop = self._loop
        if loop is not None:
            loop.call_soon_threadsafe(self.reloader.request, "SIGHUP")

    def _install_sighup(self) -> None:
        """SIGHUP reloads the configuration (from the main thread only, where signals live)."""
        if threading.current_thread() is threading.main_thread():
            self._loop = asyncio.get_running_loop()
            signal.signal(signal.SIGHUP, self._on_sighup)
            if take_early_sighup():
                self.reloader.request("SIGHUP")

    # --- ASGI -------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            generation = self._generation
            generation.in_flight += 1
            try:
                services = generation.services
                if INNER_PREFIX in scope["path"]:
                    await self.observer.observe(
                        services, lambda request: self._dispatch(generation, request), scope, receive, send
                    )
                    return
                path: str = scope["path"]
                if path == ADMIN_PREFIX or path.startswith(ADMIN_PREFIX + "/"):
                    await self.admin(scope, receive, send)
                    return
                response = await self._dispatch(generation, Request(scope, receive))
                await response(scope, receive, send)
            finally:
                generation.in_flight -= 1
                if generation.retired_at is not None and generation.in_flight == 0:
                    self._release(generation)
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)

    async def _dispatch(self, generation: Generation, request: Request) -> Response:
        path: str = request.scope["path"]
        at = path.find(INNER_PREFIX)
        if at >= 0:
            return await self._inner(generation.services, path[at + len(INNER_PREFIX) :].rstrip("/"), request)
        if generation.serverless is not None and path.endswith(TRANSACTION_PATH):
            # The SDK's own transport: its key check and error shapes live in the endpoint.
            return await generation.serverless.handle(request)
        plain = self.probes.paths.get(path)
        if plain is not None:
            return await plain(request)
        if self.console is not None and (path == CONSOLE_PREFIX or path.startswith(CONSOLE_PREFIX + "/")):
            return await self.console.handle(request)
        return error_response(NotFound(f"no such path: {path}"))

    async def _inner(self, services: Services, inner_path: str, request: Request) -> Response:
        """Auth, then the endpoint; errors before a reply starts become non-200 envelopes."""
        if self.console is not None:
            self.console.begin(current_trace.get())
        try:
            check_inner_api_key(request, services.inner_api_key)
            endpoint = BY_PATH.get(inner_path)
            if endpoint is None or request.method != "POST":
                if services.forwarder is not None:
                    forwarded = self.admission.forwarded(request)
                    _set_outcome("forwarded")
                    return await services.forwarder.forward(forwarded)
                if endpoint is None:
                    raise NotFound(
                        f"the gateway does not serve /inner/api/{inner_path} (set dify.api_url to forward it)"
                    )
                return error_response(NotFound(f"{request.method} /inner/api/{inner_path}: only POST is served"), 405)
            try:
                return await self._invoke(services, endpoint, request)
            except ClientGone:
                # Nobody is listening (the server answered a missed body deadline itself).
                trace = current_trace.get()
                timed_out = trace is not None and trace.outcome == "client_timeout"
                return Response(status_code=408 if timed_out else 499)
            except NoRoute:
                body = request.scope.get(BODY_KEY)
                if not services.passthrough or services.forwarder is None or body is None:
                    _set_outcome("no_route")
                    raise
                _set_outcome("forwarded")
                return await services.forwarder.forward(request, body)
        except GatewayError as exc:
            exc.message = services.redactor(exc.message)
            if self.console is not None:
                self.console.note_error(current_trace.get(), exc.message)
            return error_response(exc)
        except Exception:
            log.exception("unexpected error handling %s", request.scope["path"])
            return internal_error_response()

    async def _invoke(self, services: Services, endpoint: Endpoint[Any], request: Request) -> Response:
        """Read and validate the body, run the endpoint's service call, and answer."""
        body = await read_body(request, services.config.server.max_body_bytes)
        request.scope[BODY_KEY] = body  # kept for passthrough, should no route match
        self.admission.admit(request.scope)
        invocation = parse_model(endpoint.request_model, parse_json_object(body))
        trace = current_trace.get()
        if trace is not None:
            identify(trace, invocation, endpoint.model_type, services.routes if services.governor else None)
            await services.accounting.admit(trace)
        if endpoint.stream is not None:
            return await stream_response(
                endpoint.stream(services, invocation),
                services.redactor,
                upstream_errors_in_stream=endpoint.errors_in_stream,
                receive=request.receive,
                whole=endpoint.whole is not None and endpoint.whole(invocation),
            )
        assert endpoint.unary is not None
        unary = endpoint.unary
        try:
            # Backend failures stay HTTP 200 with the error in the envelope, as Dify answers.
            return envelope_response(await unless_disconnected(request.receive, lambda: unary(services, invocation)))
        except UpstreamError as exc:
            _set_outcome("upstream_error")
            log.warning("%s failed: %s", request.scope["path"], services.redactor(exc.message))
            return unary_error_response(exc, services.redactor)

    # --- lifecycle ----------------------------------------------------------------------

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.startup()
                self.services.drain.install()
                self._install_sighup()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self._watcher is not None:
                    await self._watcher.aclose()
                await self.reloader.aclose()
                if self.console is not None:
                    await self.console.aclose()
                await self.lifecycle.aclose()  # what every generation shares
                await send({"type": "lifespan.shutdown.complete"})
                return

    def startup(self) -> None:
        """Start the background start-up work (see ``ServicesLifecycle``) and the console's publisher."""
        self.lifecycle.start()
        if self._watcher is not None:
            self._watcher.start()
        if self.console is not None:
            self.console.start()  # with several workers: publishes this one's data until shutdown


def create_app(config: GatewayConfig, backends: Backends | None = None) -> Gateway:
    return Gateway(config, backends)
