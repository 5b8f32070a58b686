"""Every inner-API request observed: its trace, reply headers, metrics, span and log line.

The handler runs inside ``InnerRequestObserver.observe``, which sets the request's
``Trace`` (read by the services for retries, tokens and the target used), stamps the reply
with ``x-request-id``, ``x-dify-gateway-attempts``, ``-target`` and, for complete replies,
``-overhead-ms``, counts the bytes sent and the time to the first one, and at the end
records the request once: Prometheus, the OpenTelemetry span, the JSON request log line
and the console's recent traffic.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.types import Message, Receive, Scope, Send

from gateway.admission import Admission
from gateway.endpoints import BY_PATH
from gateway.http import INNER_PREFIX
from gateway.logs import REQUEST_LOGGER
from gateway.services import Services
from gateway.trace import Trace, current_trace, valid_traceparent
from gateway.tracing import Tracing

request_log = logging.getLogger(REQUEST_LOGGER)

BODY_KEY = "dify_gateway.body"  # the request body, kept in the scope for passthrough and the log
# The console's record of a finished request: (trace, outcome, status, duration_s, body).
Recorder = Callable[[Trace, str, int, float, object], None]


def _headers(scope: Scope) -> dict[str, str]:
    """The few request headers the tracing reads (lower-case names)."""
    found: dict[str, str] = {}
    for name, value in scope["headers"]:
        if name in (b"x-request-id", b"traceparent"):
            found[name.decode()] = value.decode("latin-1")[:128]
    return found


def outcome_of(status: int, trace: Trace) -> str:
    """The outcome of a request whose handler set none, from its status."""
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


class InnerRequestObserver:
    def __init__(self, admission: Admission, recorder: Recorder | None) -> None:
        self._admission = admission
        self._recorder = recorder

    async def observe(
        self,
        services: Services,
        handler: Callable[[Request], Awaitable[Response]],
        scope: Scope,
        receive: Receive,
        send: Send,
    ) -> None:
        """Run ``handler`` for this inner-API request and send its reply, observed with the
        ``services`` the request runs on."""
        started = time.perf_counter()
        started_at = time.time()
        path: str = scope["path"]
        inner_path = path[path.find(INNER_PREFIX) + len(INNER_PREFIX) :].rstrip("/")
        headers = _headers(scope)
        endpoint = BY_PATH.get(inner_path)
        trace = Trace(
            request_id=headers.get("x-request-id") or os.urandom(8).hex(),
            model_type=endpoint.model_type
            if endpoint is not None
            else "forward"
            if services.forwarder is not None
            else "other",
            traceparent=valid_traceparent(headers.get("traceparent")),
        )
        tracing = services.tracing
        span = tracing.start(trace) if tracing is not None else None
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
            response = await handler(Request(scope, receive))
            self._stamp(services, response, trace, started)
            await response(scope, receive, counting_send)
        finally:
            current_trace.reset(token)
            self._admission.release(scope)
            first_byte_s = first_byte - started if first_byte is not None else None
            duration_s = time.perf_counter() - started
            outcome = trace.outcome or outcome_of(status, trace)
            self._record(services, trace, outcome, status, duration_s, first_byte_s, sent_bytes, scope, span)
            services.accounting.record(trace, outcome, status, duration_s, first_byte_s, started_at)

    def _stamp(self, services: Services, response: Response, trace: Trace, started: float) -> None:
        if trace.outcome == "overloaded":
            response.headers["retry-after"] = "1"
        elif trace.retry_after_s is not None:
            response.headers["retry-after"] = str(max(1, math.ceil(trace.retry_after_s)))
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
        if services.drain.draining:
            response.headers["connection"] = "close"  # clients stop reusing this instance

    def _record(
        self,
        services: Services,
        trace: Trace,
        outcome: str,
        status: int,
        duration_s: float,
        first_byte_s: float | None,
        sent_bytes: int,
        scope: Scope,
        span: Any,
    ) -> None:
        if span is not None:
            Tracing.finish(span, trace, outcome, status, duration_s)
        body = scope.get(BODY_KEY)
        request_bytes = len(body) if isinstance(body, bytes) else 0
        services.request_metrics.observe(trace, outcome, duration_s, first_byte_s, request_bytes, sent_bytes)
        if self._recorder is not None:
            self._recorder(trace, outcome, status, duration_s, body)
        if services.config.server.request_log:
            fields: dict[str, Any] = {
                **trace.summary(outcome, status, duration_s),
                "upstream_ms": round(trace.upstream_s * 1000, 3),
                "overhead_ms": round(max(0.0, duration_s - trace.upstream_s) * 1000, 3),
                "first_byte_ms": round(first_byte_s * 1000, 3) if first_byte_s is not None else None,
                "tokens_in": trace.tokens_in,
                "tokens_out": trace.tokens_out,
                "request_bytes": request_bytes,
                "response_bytes": sent_bytes,
            }
            if trace.response_cache is not None:
                fields["response_cache"] = trace.response_cache
            if trace.traceparent:
                fields["trace_id"] = trace.traceparent[3:35]
            if trace.errors:
                fields["errors"] = [services.redactor(e) for e in trace.errors[-3:]]
            request_log.info("request", extra=fields)
