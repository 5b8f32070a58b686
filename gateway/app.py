"""The ASGI application: a path table, the handlers, and the lifespan.

Invoke paths go through a plain dict dispatch rather than a framework router: these are
the hot paths, and every framework layer there costs measurable latency under load.
A path prefix in the daemon's DIFY_INNER_API_URL is allowed: everything from
``/inner/api/`` on is what selects the handler.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import orjson
from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.types import Message, Receive, Scope, Send

from gateway.adapters.litellm_loader import load_litellm
from gateway.adapters.registry import Backends, uses_litellm
from gateway.cache.redis_store import RedisStore
from gateway.cache.setup import build_embedding_cache
from gateway.catalog import is_local, preload_list
from gateway.config import GatewayConfig
from gateway.console import CONSOLE_PREFIX, Console
from gateway.console.guard import KeyGuard
from gateway.errors import GatewayError, NoRoute, NotFound, Overloaded, UpstreamError
from gateway.forward import DifyForwarder
from gateway.http import (
    INNER_PREFIX,
    JSON_MEDIA_TYPE,
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
from gateway.invoke.embedding import EmbeddingService
from gateway.invoke.llm import LLMService
from gateway.invoke.moderation import ModerationService
from gateway.invoke.rerank import RerankService
from gateway.invoke.speech2text import Speech2TextService
from gateway.invoke.summary import SummaryService
from gateway.invoke.tts import TTSService
from gateway.logs import REQUEST_LOGGER
from gateway.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE, build_registry, multiprocess_dir, render
from gateway.pricing import ModelMap
from gateway.protocol.requests import (
    LLMInvokeRequest,
    ModerationInvokeRequest,
    MultimodalEmbeddingInvokeRequest,
    MultimodalRerankInvokeRequest,
    RerankInvokeRequest,
    Speech2TextInvokeRequest,
    StructuredOutputInvokeRequest,
    SummaryInvokeRequest,
    TextEmbeddingInvokeRequest,
    TTSInvokeRequest,
)
from gateway.redaction import Redactor
from gateway.request_metrics import RequestMetrics
from gateway.resilience.drain import Drain
from gateway.resilience.health import TargetHealth
from gateway.resilience.plan import Resilience
from gateway.resilience.shared import SharedBreakers
from gateway.routing import RouteTable, Target
from gateway.server_protocol import HEALTHZ_BODY
from gateway.serverless import TRANSACTION_PATH, ServerlessEndpoint
from gateway.trace import Trace, current_trace, valid_traceparent
from gateway.tracing import Tracing

log = logging.getLogger("dify_gateway")
request_log = logging.getLogger(REQUEST_LOGGER)

# Inner paths served here, and the model type each is counted under.
_PATH_TYPES = {
    "invoke/llm": "llm",
    "invoke/llm/structured-output": "llm-structured-output",
    "invoke/text-embedding": "text-embedding",
    "invoke/multimodal-embedding": "multimodal-embedding",
    "invoke/rerank": "rerank",
    "invoke/multimodal-rerank": "multimodal-rerank",
    "invoke/tts": "tts",
    "invoke/speech2text": "speech2text",
    "invoke/moderation": "moderation",
    "invoke/summary": "summary",
}


def _headers(scope: Scope) -> dict[str, str]:
    """The few request headers the tracing reads (lower-case names)."""
    found: dict[str, str] = {}
    for name, value in scope["headers"]:
        if name in (b"x-request-id", b"traceparent"):
            found[name.decode()] = value.decode("latin-1")[:128]
    return found


async def _warm_litellm() -> None:
    """Import litellm in the background; a failure here is retried by the first call."""
    try:
        await load_litellm()
    except Exception:
        log.exception("importing litellm failed; the first call that needs it will try again")


def _set_outcome(outcome: str) -> None:
    trace = current_trace.get()
    if trace is not None:
        trace.outcome = outcome


def _outcome_of(status: int, trace: Trace) -> str:
    if trace.stream_error:
        return "upstream_error"
    if 200 <= status < 300:
        return "ok"
    if status in (502, 504, 429) and trace.attempts:
        return "upstream_error"
    if status == 499:
        return "cancelled"
    if 400 <= status < 500:
        return "client_error"
    return "error"


Handler = Callable[[Request], Awaitable[Response]]
M = TypeVar("M", bound=BaseModel)
_BODY_KEY = "dify_gateway.body"
_COUNTED_KEY = "dify_gateway.counted"  # set once the request counts in Gateway.in_flight


class Gateway:
    """One app instance: configuration turned into live objects, and the handlers."""

    def __init__(self, config: GatewayConfig, backends: Backends | None = None) -> None:
        if config.dify.inner_api_key is None:
            raise ValueError("no inner API key configured")
        self.config = config
        self.routes = RouteTable(config.routes)
        self.backends = backends or Backends()
        self.model_map = ModelMap()
        self.health = TargetHealth(config.resilience.breaker)
        self.resilience = Resilience(config.resilience.retry, self.health)
        self.shared_breakers = SharedBreakers.build(config.cache, config.resilience.breaker, self.health)
        self.llm = LLMService(self.routes, self.backends, self.model_map, self.resilience)
        self.embedding_cache = build_embedding_cache(config.cache)
        self.embedding = EmbeddingService(
            self.routes, self.backends, self.model_map, self.resilience, self.embedding_cache, config.limits
        )
        self.metrics = build_registry(self.embedding_cache, self)
        self.request_metrics = RequestMetrics(None if multiprocess_dir() else self.metrics)
        self.backends.on_local_restart = self.request_metrics.model_restarted
        self.tracing = Tracing(config.tracing) if config.tracing.enabled else None
        self._request_log = config.server.request_log
        self.rerank = RerankService(self.routes, self.backends, self.resilience, config.limits)
        self.tts = TTSService(self.routes, self.backends, self.resilience, config.limits)
        self.speech2text = Speech2TextService(self.routes, self.backends, self.resilience, config.limits)
        self.moderation = ModerationService(self.routes, self.backends, self.resilience, config.limits)
        self.summary = (
            SummaryService(
                config.summary_model, config.summary_concurrency, self.backends, self.model_map, self.resilience
            )
            if config.summary_model is not None
            else None
        )
        self.forwarder = (
            DifyForwarder(
                config.dify.api_url,
                self.backends.http,
                api_key=config.dify.api_key.get_secret_value() if config.dify.api_key else None,
                timeout_s=config.dify.forward_timeout_s,
            )
            if config.dify.api_url
            else None
        )
        self._passthrough = self.forwarder is not None and config.dify.passthrough
        self.redactor: Redactor = Redactor(config.secrets())
        self.started_at = time.time()
        self.ready = False
        self.drain = Drain(config.server.drain_grace_s, config.server.drain_timeout_s)
        self.in_flight = 0
        self._max_in_flight = config.server.max_in_flight
        self._key = config.dify.inner_api_key.get_secret_value().encode()
        self._max_body = config.server.max_body_bytes
        self._warmups: list[asyncio.Task[Any]] = []
        self.invoke_paths: dict[str, Handler] = {
            "invoke/llm": self.invoke_llm,
            "invoke/llm/structured-output": self.invoke_structured_output,
            "invoke/text-embedding": self.invoke_text_embedding,
            "invoke/multimodal-embedding": self.invoke_multimodal_embedding,
            "invoke/rerank": self.invoke_rerank,
            "invoke/multimodal-rerank": self.invoke_multimodal_rerank,
            "invoke/tts": self.invoke_tts,
            "invoke/speech2text": self.invoke_speech2text,
            "invoke/moderation": self.invoke_moderation,
            "invoke/summary": self.invoke_summary,
        }
        # Last: the endpoint reads the services and settings above.
        self.serverless = ServerlessEndpoint(self, config.serverless) if config.serverless.enabled else None
        self.plain_paths: dict[str, Handler] = {
            "/healthz": self.healthz,
            "/readyz": self.readyz,
            "/metrics": self.metrics_page,
            "/status/targets": self.status_targets,
        }
        self.key_guard: KeyGuard = KeyGuard()  # wrong keys on the console and /status/targets, per address
        self.console = Console(self) if config.console.enabled else None

    # --- ASGI -------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            if INNER_PREFIX in scope["path"]:
                await self._counted(scope, receive, send)
                return
            response = await self._dispatch(Request(scope, receive))
            await response(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)

    async def _counted(self, scope: Scope, receive: Receive, send: Send) -> None:
        """An inner-API request: traced for its metrics, log line and reply headers, and
        counted in flight from the end of its body (see ``_admit``) to its last byte."""
        started = time.perf_counter()
        path: str = scope["path"]
        inner_path = path[path.find(INNER_PREFIX) + len(INNER_PREFIX) :].rstrip("/")
        headers = _headers(scope)
        trace = Trace(
            request_id=headers.get("x-request-id") or os.urandom(8).hex(),
            model_type=_PATH_TYPES.get(inner_path, "forward" if self.forwarder is not None else "other"),
            traceparent=valid_traceparent(headers.get("traceparent")),
        )
        span = self.tracing.start(trace) if self.tracing is not None else None
        first_byte: float | None = None
        sent_bytes = 0
        status = 0

        async def counting_send(message: Message) -> None:
            nonlocal first_byte, sent_bytes, status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                body = message.get("body", b"")
                if body:
                    if first_byte is None:
                        first_byte = time.perf_counter()
                    sent_bytes += len(body)
            await send(message)

        token = current_trace.set(trace)
        try:
            response = await self._dispatch(Request(scope, receive))
            if trace.outcome == "overloaded":
                response.headers["retry-after"] = "1"
            response.headers["x-request-id"] = trace.request_id
            if trace.attempts:
                response.headers["x-dify-gateway-attempts"] = str(trace.attempts)
                if trace.target is not None:
                    response.headers["x-dify-gateway-target"] = trace.target.label
            if not isinstance(response, StreamingResponse) or getattr(response, "complete", False):
                # Unary replies (and gathered short streams) are complete here: what the
                # gateway itself spent on them.
                overhead_s = time.perf_counter() - started - trace.upstream_s
                response.headers["x-dify-gateway-overhead-ms"] = f"{max(0.0, overhead_s) * 1000:.3f}"
            if self.drain.draining:
                response.headers["connection"] = "close"  # clients stop reusing this instance
            await response(scope, receive, counting_send)
        finally:
            current_trace.reset(token)
            if scope.get(_COUNTED_KEY):
                self.in_flight -= 1
            self._record(trace, status, started, first_byte, sent_bytes, scope, span)

    def _admit(self, scope: Scope) -> None:
        """Count this request in flight, or refuse it fast above ``server.max_in_flight``.

        Called once its body has been read: a client still sending one (slowly, say) holds
        no slot, so slow clients cannot fill the cap; the body deadline closes them.
        """
        if scope.get(_COUNTED_KEY):
            return
        if self._max_in_flight and self.in_flight >= self._max_in_flight:
            _set_outcome("overloaded")
            raise Overloaded(
                f"gateway overloaded: {self.in_flight} requests in flight (server.max_in_flight); retry shortly"
            )
        self.in_flight += 1
        scope[_COUNTED_KEY] = True

    def _forwarded(self, request: Request) -> Request:
        """``request`` for the forwarder: refused above the cap like an invocation, counted
        once its body has arrived (the forwarder streams it on as it comes)."""
        headers = request.headers
        if headers.get("content-length", "0").strip() in ("", "0") and "transfer-encoding" not in headers:
            self._admit(request.scope)
            return request
        if self._max_in_flight and self.in_flight >= self._max_in_flight:
            self._admit(request.scope)  # raises Overloaded
        receive, scope = request.receive, request.scope

        async def receive_counted() -> Message:
            message = await receive()
            done = message["type"] == "http.request" and not message.get("more_body", False)
            if done and not scope.get(_COUNTED_KEY):
                self.in_flight += 1  # already under way: counted, not refused
                scope[_COUNTED_KEY] = True
            return message

        return Request(scope, receive_counted)

    def _record(
        self,
        trace: Trace,
        status: int,
        started: float,
        first_byte: float | None,
        sent_bytes: int,
        scope: Scope,
        span: Any,
    ) -> None:
        duration_s = time.perf_counter() - started
        outcome = trace.outcome or _outcome_of(status, trace)
        if span is not None:
            Tracing.finish(span, trace, outcome, status, duration_s)
        body = scope.get(_BODY_KEY)
        request_bytes = len(body) if isinstance(body, bytes) else 0
        first_byte_s = first_byte - started if first_byte is not None else None
        self.request_metrics.observe(trace, outcome, duration_s, first_byte_s, request_bytes, sent_bytes)
        if self.console is not None:
            self.console.record(trace, outcome, status, duration_s, body)
        if self._request_log:
            fields: dict[str, Any] = {
                "request_id": trace.request_id,
                "type": trace.model_type,
                "route": trace.route,
                "target": trace.target.label if trace.target is not None else None,
                "outcome": outcome,
                "status": status,
                "attempts": trace.attempts,
                "duration_ms": round(duration_s * 1000, 3),
                "upstream_ms": round(trace.upstream_s * 1000, 3),
                "overhead_ms": round(max(0.0, duration_s - trace.upstream_s) * 1000, 3),
                "first_byte_ms": round(first_byte_s * 1000, 3) if first_byte_s is not None else None,
                "tokens_in": trace.tokens_in,
                "tokens_out": trace.tokens_out,
                "request_bytes": request_bytes,
                "response_bytes": sent_bytes,
            }
            if trace.traceparent:
                fields["trace_id"] = trace.traceparent[3:35]
            if trace.errors:
                fields["errors"] = [self.redactor(e) for e in trace.errors[-3:]]
            request_log.info("request", extra=fields)

    async def _dispatch(self, request: Request) -> Response:
        path: str = request.scope["path"]
        at = path.find(INNER_PREFIX)
        if at >= 0:
            return await self._inner(path[at + len(INNER_PREFIX) :].rstrip("/"), request)
        if self.serverless is not None and path.endswith(TRANSACTION_PATH):
            # The SDK's own transport: its key check and error shapes live in the endpoint.
            return await self.serverless.handle(request)
        plain = self.plain_paths.get(path)
        if plain is not None:
            return await plain(request)
        if self.console is not None and (path == CONSOLE_PREFIX or path.startswith(CONSOLE_PREFIX + "/")):
            return await self.console.handle(request)
        return error_response(NotFound(f"no such path: {path}"))

    async def _inner(self, inner_path: str, request: Request) -> Response:
        """Auth, then the handler; errors before a reply starts become non-200 envelopes."""
        if self.console is not None:
            self.console.begin(current_trace.get())
        try:
            check_inner_api_key(request, self._key)
            handler = self.invoke_paths.get(inner_path)
            if handler is None or request.method != "POST":
                if self.forwarder is not None:
                    forwarded = self._forwarded(request)
                    _set_outcome("forwarded")
                    return await self.forwarder.forward(forwarded)
                if handler is None:
                    raise NotFound(
                        f"the gateway does not serve /inner/api/{inner_path} (set dify.api_url to forward it)"
                    )
                return error_response(NotFound(f"{request.method} /inner/api/{inner_path}: only POST is served"), 405)
            try:
                return await handler(request)
            except ClientGone:
                # Nobody is listening (the server answered a missed body deadline itself).
                trace = current_trace.get()
                timed_out = trace is not None and trace.outcome == "client_timeout"
                return Response(status_code=408 if timed_out else 499)
            except NoRoute:
                body = request.scope.get(_BODY_KEY)
                if not self._passthrough or self.forwarder is None or body is None:
                    _set_outcome("no_route")
                    raise
                _set_outcome("forwarded")
                return await self.forwarder.forward(request, body)
        except GatewayError as exc:
            exc.message = self.redactor(exc.message)
            if self.console is not None:
                self.console.note_error(current_trace.get(), exc.message)
            return error_response(exc)
        except Exception:
            log.exception("unexpected error handling %s", request.scope["path"])
            return internal_error_response()

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.startup()
                self.drain.install()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                for task in self._warmups:
                    task.cancel()
                if self.console is not None:
                    await self.console.aclose()
                if self.shared_breakers is not None:
                    await self.shared_breakers.aclose()
                if self.tracing is not None:
                    await asyncio.to_thread(self.tracing.shutdown)  # flushes buffered spans
                await self.backends.aclose()
                if self.embedding_cache is not None:
                    await self.embedding_cache.store.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    def startup(self) -> None:
        """Import litellm in the background if a route needs it; load the embedded models.

        Readiness waits for the embedded models (a first call would otherwise pay their
        load time), not for litellm (its first call waits for the import instead).
        """
        loop = asyncio.get_running_loop()
        if self._needs_litellm():
            self._warmups.append(loop.create_task(_warm_litellm()))
        if self.shared_breakers is not None:
            self.shared_breakers.start()
        if self.embedding_cache is not None:
            redis = getattr(self.embedding_cache.store, "l2", self.embedding_cache.store)
            if isinstance(redis, RedisStore):
                self._warmups.append(loop.create_task(redis.warm_up()))
        local = sorted({t.model for r in self.config.routes for t in r.targets if is_local(t.model)})
        preload = preload_list(local, self.config.server.preload_local_models)
        on_demand = [name for name in local if name not in preload]
        if on_demand:
            self.backends.check_local(on_demand)
        if preload:
            self._warmups.append(loop.create_task(self._preload(preload)))
        else:
            self.ready = True
        self._warmups.append(loop.create_task(self._settle(list(self._warmups))))
        if self.console is not None:
            self.console.start()  # with several workers: publishes this one's data until shutdown

    async def _settle(self, warmups: list[asyncio.Task[Any]]) -> None:
        """After start-up work, move the objects it made out of the garbage collector's
        reach: a full collection over litellm's and the models' objects pauses the process
        for hundreds of milliseconds, which would land on some unlucky request."""
        await asyncio.gather(*warmups, return_exceptions=True)
        gc.freeze()

    async def _preload(self, names: list[str]) -> None:
        started = time.monotonic()
        try:
            await self.backends.preload_local(names)
            failed = {n: s for n, s in self.backends.local_status().items() if s.startswith("failed")}
            if failed:
                log.error("embedded models failed to load (readiness stays 503): %s", failed)
            else:
                log.info("embedded models ready in %.2f s: %s", time.monotonic() - started, ", ".join(names))
        except GatewayError as exc:
            log.warning("embedded models not loaded, calls routed to them will fail: %s", exc.message)
        except Exception:
            log.exception("loading the embedded models failed")
        finally:
            self.ready = True

    def _needs_litellm(self) -> bool:
        """Whether a route or the summary model may need litellm (else it is never imported)."""
        if self.config.summary_model is not None and not is_local(self.config.summary_model.model):
            return True
        for route in self.config.routes:
            for config in [*route.targets, *route.fallbacks]:
                if uses_litellm(Target(config=config, model=config.model), route.match.types):
                    return True
        return False

    # --- handlers ---------------------------------------------------------------------

    async def _raw_body(self, request: Request) -> bytes:
        body = await read_body(request, self._max_body)
        request.scope[_BODY_KEY] = body  # kept for passthrough, should no route match
        self._admit(request.scope)
        return body

    async def _body(self, request: Request) -> dict[str, Any]:
        return parse_json_object(await self._raw_body(request))

    async def invoke_llm(self, request: Request) -> Response:
        invocation = parse_model(LLMInvokeRequest, await self._body(request))
        return await stream_response(
            self.llm.frames(invocation), self.redactor, receive=request.receive, whole=not invocation.stream
        )

    async def invoke_structured_output(self, request: Request) -> Response:
        invocation = parse_model(StructuredOutputInvokeRequest, await self._body(request))
        return await stream_response(
            self.llm.frames(invocation), self.redactor, receive=request.receive, whole=not invocation.stream
        )

    async def _unary(self, request: Request, model: type[M], run: Callable[[M], Awaitable[Any]]) -> Response:
        """Parse, run, and answer with an envelope; backend failures stay HTTP 200 (as Dify)."""
        invocation = parse_model(model, await self._body(request))
        return await self._run_unary(request, lambda: run(invocation))

    async def invoke_text_embedding(self, request: Request) -> Response:
        return await self._unary(request, TextEmbeddingInvokeRequest, self.embedding.embed)

    async def invoke_multimodal_embedding(self, request: Request) -> Response:
        return await self._unary(request, MultimodalEmbeddingInvokeRequest, self.embedding.embed)

    async def invoke_rerank(self, request: Request) -> Response:
        return await self._unary(request, RerankInvokeRequest, self.rerank.rerank)

    async def invoke_multimodal_rerank(self, request: Request) -> Response:
        return await self._unary(request, MultimodalRerankInvokeRequest, self.rerank.rerank)

    async def invoke_speech2text(self, request: Request) -> Response:
        return await self._unary(request, Speech2TextInvokeRequest, self.speech2text.transcribe)

    async def invoke_moderation(self, request: Request) -> Response:
        return await self._unary(request, ModerationInvokeRequest, self.moderation.moderate)

    async def invoke_tts(self, request: Request) -> Response:
        invocation = parse_model(TTSInvokeRequest, await self._body(request))
        return await stream_response(
            self.tts.frames(invocation), self.redactor, upstream_errors_in_stream=True, receive=request.receive
        )

    async def invoke_summary(self, request: Request) -> Response:
        body = await self._raw_body(request)
        invocation = parse_model(SummaryInvokeRequest, parse_json_object(body))
        if self.summary is not None:
            summary = self.summary
            return await self._run_unary(request, lambda: summary.summarize(invocation))
        if self.forwarder is not None:
            _set_outcome("forwarded")
            return await self.forwarder.forward(request, body)
        raise NoRoute(
            "no summary model configured: set summary_model to an LLM target, or dify.api_url to let Dify summarise"
        )

    async def _run_unary(self, request: Request, run: Callable[[], Awaitable[Any]]) -> Response:
        try:
            return envelope_response(await unless_disconnected(request.receive, run))
        except UpstreamError as exc:
            _set_outcome("upstream_error")
            log.warning("%s failed: %s", request.scope["path"], self.redactor(exc.message))
            return unary_error_response(exc, self.redactor)

    async def metrics_page(self, request: Request) -> Response:
        return _get_or_head(request) or Response(render(self.metrics), media_type=METRICS_CONTENT_TYPE)

    async def healthz(self, request: Request) -> Response:
        """Liveness. The gateway's own server answers GET and HEAD before they reach the app
        (``gateway.server_protocol``): this is the same answer for other servers."""
        return _get_or_head(request) or Response(HEALTHZ_BODY, media_type=JSON_MEDIA_TYPE)

    async def status_targets(self, request: Request) -> Response:
        """Each backend's health (breaker, in flight, recent errors); read-only, no secrets,
        behind the inner API key (it names the backends)."""
        refused = self.key_guard.refusal(request, "/status/targets")
        if refused is not None:
            return refused  # before the key is compared: see gateway.console.guard
        try:
            check_inner_api_key(request, self._key)
        except GatewayError as exc:
            if request.headers.get("x-inner-api-key"):
                self.key_guard.wrong_key(request, "/status/targets")
            return error_response(exc)
        body = {
            "in_flight": self.in_flight,
            "draining": self.drain.draining,
            "shared_breakers": self.shared_breakers is not None,
            "targets": self.health.snapshot(),
        }
        return Response(orjson.dumps(body), media_type=JSON_MEDIA_TYPE)

    async def readyz(self, request: Request) -> Response:
        if self.drain.draining:
            return Response(b'{"status":"draining"}', status_code=503, media_type=JSON_MEDIA_TYPE)
        if not self.ready:
            return Response(b'{"status":"starting"}', status_code=503, media_type=JSON_MEDIA_TYPE)
        if self._max_in_flight and self.in_flight >= self._max_in_flight:
            # Every new invocation would get 429 now: not ready for more traffic.
            full = {"status": "overloaded", "in_flight": self.in_flight, "max_in_flight": self._max_in_flight}
            return Response(orjson.dumps(full), status_code=503, media_type=JSON_MEDIA_TYPE)
        body: dict[str, Any] = {"status": "ready", "uptime_s": round(time.time() - self.started_at, 3)}
        models = self.backends.local_status()
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


def create_app(config: GatewayConfig, backends: Backends | None = None) -> Gateway:
    return Gateway(config, backends)
