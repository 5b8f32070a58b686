"""The ASGI application: a path table, the handlers, and the lifespan.

Invoke paths go through a plain dict dispatch rather than a framework router: these are
the hot paths, and every framework layer there costs measurable latency under load.
A path prefix in the daemon's DIFY_INNER_API_URL is allowed: everything from
``/inner/api/`` on is what selects the handler.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from gateway.adapters.litellm_loader import load_litellm
from gateway.adapters.registry import LOCAL_PREFIX, Backends
from gateway.config import GatewayConfig
from gateway.errors import GatewayError, NotFound
from gateway.http import (
    JSON_MEDIA_TYPE,
    check_inner_api_key,
    error_response,
    internal_error_response,
    parse_json_object,
    parse_model,
    read_body,
    stream_response,
)
from gateway.invoke.llm import LLMService
from gateway.pricing import ModelMap
from gateway.protocol.requests import LLMInvokeRequest, StructuredOutputInvokeRequest
from gateway.redaction import Redactor
from gateway.routing import RouteTable

log = logging.getLogger("dify_gateway")

Handler = Callable[[Request], Awaitable[Response]]
INNER_PREFIX = "/inner/api/"


class Gateway:
    """One app instance: configuration turned into live objects, and the handlers."""

    def __init__(self, config: GatewayConfig, backends: Backends | None = None) -> None:
        if config.dify.inner_api_key is None:
            raise ValueError("no inner API key configured")
        self.config = config
        self.routes = RouteTable(config.routes)
        self.backends = backends or Backends()
        self.model_map = ModelMap()
        self.llm = LLMService(self.routes, self.backends, self.model_map)
        self.redactor = Redactor(config.secrets())
        self.started_at = time.time()
        self.ready = False
        self._key = config.dify.inner_api_key.get_secret_value().encode()
        self._max_body = config.server.max_body_bytes
        self._warmups: list[asyncio.Task[Any]] = []
        self.invoke_paths: dict[str, Handler] = {
            "invoke/llm": self.invoke_llm,
            "invoke/llm/structured-output": self.invoke_structured_output,
        }
        self.plain_paths: dict[str, Handler] = {
            "/healthz": self.healthz,
            "/readyz": self.readyz,
        }

    # --- ASGI -------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            response = await self._dispatch(Request(scope, receive))
            await response(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)

    async def _dispatch(self, request: Request) -> Response:
        path: str = request.scope["path"]
        at = path.find(INNER_PREFIX)
        if at >= 0:
            return await self._inner(path[at + len(INNER_PREFIX) :].rstrip("/"), request)
        plain = self.plain_paths.get(path)
        if plain is not None:
            return await plain(request)
        return error_response(NotFound(f"no such path: {path}"))

    async def _inner(self, inner_path: str, request: Request) -> Response:
        """Auth, then the handler; errors before a reply starts become non-200 envelopes."""
        try:
            check_inner_api_key(request, self._key)
            handler = self.invoke_paths.get(inner_path)
            if handler is None:
                raise NotFound(f"the gateway does not serve /inner/api/{inner_path}")
            if request.method != "POST":
                return error_response(NotFound(f"{request.method} /inner/api/{inner_path}: only POST is served"), 405)
            return await handler(request)
        except GatewayError as exc:
            exc.message = self.redactor(exc.message)
            return error_response(exc)
        except Exception:
            log.exception("unexpected error handling %s", request.scope["path"])
            return internal_error_response()

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.startup()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                for task in self._warmups:
                    task.cancel()
                await self.backends.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    def startup(self) -> None:
        """Become ready at once; import litellm in the background if a route needs it."""
        if self._needs_litellm():
            self._warmups.append(asyncio.get_running_loop().create_task(load_litellm()))
        self.ready = True

    def _needs_litellm(self) -> bool:
        targets = [t for r in self.config.routes for t in r.targets]
        if self.config.summary_model is not None:
            targets.append(self.config.summary_model)
        return any(not t.model.startswith(LOCAL_PREFIX) for t in targets)

    # --- handlers ---------------------------------------------------------------------

    async def _body(self, request: Request) -> dict[str, Any]:
        return parse_json_object(await read_body(request, self._max_body))

    async def invoke_llm(self, request: Request) -> Response:
        invocation = parse_model(LLMInvokeRequest, await self._body(request))
        return await stream_response(self.llm.frames(invocation), self.redactor)

    async def invoke_structured_output(self, request: Request) -> Response:
        invocation = parse_model(StructuredOutputInvokeRequest, await self._body(request))
        return await stream_response(self.llm.frames(invocation), self.redactor)

    async def healthz(self, request: Request) -> Response:
        return Response(b'{"status":"ok"}', media_type=JSON_MEDIA_TYPE)

    async def readyz(self, request: Request) -> Response:
        if not self.ready:
            return Response(b'{"status":"starting"}', status_code=503, media_type=JSON_MEDIA_TYPE)
        body = {"status": "ready", "uptime_s": round(time.time() - self.started_at, 3)}
        return Response(orjson.dumps(body), media_type=JSON_MEDIA_TYPE)


def create_app(config: GatewayConfig, backends: Backends | None = None) -> Gateway:
    return Gateway(config, backends)
