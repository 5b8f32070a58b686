"""``POST /backwards-invocation/transaction``: the SDK's serverless backwards invocation.

The dify-plugin SDK sends it for every install method other than local/remote (spec 6).
The endpoint does what the daemon would: finds the session's tenant, validates the SDK's
payload, runs the same endpoint (``gateway.endpoints``) as ``/inner/api/invoke/*`` and
passes its results on in the shapes the daemon re-emits, as JSON-line events.

Status codes: a request the endpoint refuses before running anything (not POST, missing or
wrong key, body too large or not a transaction, session without a tenant) gets 4xx with an
``error`` and an ``end`` event in the body; everything after that is HTTP 200 and failures
are ``error`` events followed by ``end``, as the daemon answers. The SDK reads only the
events, never the status.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import os
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping
from contextlib import aclosing
from typing import Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from gateway.accounting import identify
from gateway.config import ServerlessConfig
from gateway.endpoints import BY_INVOKE_TYPE, Endpoint
from gateway.errors import BadRequest, Forbidden, GatewayError, MethodNotAllowed, NotFound, Unauthorized
from gateway.http import INTERNAL_ERROR, parse_json_object, parse_model, read_body
from gateway.keys import keys_match
from gateway.protocol.requests import InvokeRequest, MultimodalRerankInvokeRequest
from gateway.serverless.wire import (
    HEARTBEAT,
    MEDIA_TYPE,
    SESSION_HEADER,
    EventWriter,
    Transaction,
    parse_transaction,
    request_ids,
)
from gateway.services import Services
from gateway.trace import Trace, current_trace

log = logging.getLogger("dify_gateway")

# Proxies must pass events (and heartbeats) on as they come.
_STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def build_invocation(endpoint: Endpoint[Any], payload: Mapping[str, Any], tenant_id: str) -> InvokeRequest:
    """The inner-API request model for an SDK payload, as the daemon would send it.

    The daemon overwrites ``tenant_id`` and ``user_id`` from its session (the multimodal
    embedding payload carries a plugin-chosen ``tenant_id`` that must not survive) and turns
    a multimodal rerank's null ``score_threshold``/``top_n`` into 0 (spec 3.6).
    """
    user_id = payload.get("user_id")
    body = {**payload, "tenant_id": tenant_id, "user_id": user_id if isinstance(user_id, str) else ""}
    if endpoint.request_model is MultimodalRerankInvokeRequest:
        for key in ("score_threshold", "top_n"):
            if body.get(key) is None:
                body[key] = 0
    invocation: InvokeRequest = parse_model(endpoint.request_model, body)
    return invocation


class ServerlessEndpoint:
    """Mount ``handle`` at ``POST /backwards-invocation/transaction`` (or use the object as
    an ASGI app). ``services`` answer the invocations and supply the redactor and the body limit."""

    def __init__(self, services: Services, config: ServerlessConfig, max_body_bytes: int | None = None) -> None:
        self._services = services
        self.config = config
        self._key = config.api_key.get_secret_value().encode() if config.api_key is not None else None
        self._max_body = max_body_bytes or services.config.server.max_body_bytes
        self._heartbeat_s = config.heartbeat_s
        self._redact: Callable[[str], str] = services.redactor
        # Producer tasks of open replies (the event loop keeps only weak references).
        self._tasks: set[asyncio.Task[None]] = set()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            response = await self.handle(Request(scope, receive))
            await response(scope, receive, send)

    # --- request ----------------------------------------------------------------------

    async def handle(self, request: Request) -> Response:
        session_id, request_id = request.headers.get(SESSION_HEADER, ""), ""
        try:
            if not self.config.enabled:
                raise NotFound("the serverless transaction endpoint is not enabled (serverless.enabled)")
            if request.method != "POST":
                raise MethodNotAllowed(f"{request.method} {request.url.path}: only POST is served")
            self._check_key(request)
            body = parse_json_object(await read_body(request, self._max_body))
            session_id, request_id = request_ids(body, session_id)
            transaction = parse_transaction(body)
            tenant_id = self.tenant_for(transaction.session_id)
        except GatewayError as exc:
            message = self._redact(exc.message)
            log.warning("serverless transaction refused (%d): %s", exc.status, message)
            return self._refusal(exc.status, session_id, request_id, message)
        except Exception:
            log.exception("unexpected error reading a serverless transaction")
            return self._refusal(500, session_id, request_id, INTERNAL_ERROR)
        writer = EventWriter(transaction.session_id, transaction.backwards_request_id)
        events = self._events(transaction, tenant_id, writer)
        return StreamingResponse(self._with_heartbeats(events, writer), media_type=MEDIA_TYPE, headers=_STREAM_HEADERS)

    def _check_key(self, request: Request) -> None:
        if self._key is None:
            return
        scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
        supplied: bytes | None = None
        if scheme.lower() == "basic":
            try:
                decoded = base64.b64decode(credentials.strip(), validate=True)
            except (binascii.Error, ValueError):
                decoded = b""
            _, colon, password = decoded.partition(b":")
            supplied = password if colon else None
        elif scheme.lower() == "bearer":
            supplied = credentials.strip().encode()
        # Constant-time compare, so timing does not reveal how much of a guess matched.
        if not keys_match(supplied, self._key):
            raise Unauthorized("unauthorized: missing or wrong serverless key (HTTP Basic password or Bearer token)")

    def tenant_for(self, session_id: str) -> str:
        tenant_id = self.config.tenant_for(session_id)
        if tenant_id is None:
            raise Forbidden(
                f"session {session_id!r} has no tenant: add it to serverless.tenants or set serverless.default_tenant"
            )
        return tenant_id

    @staticmethod
    def _refusal(status: int, session_id: str, request_id: str, message: str) -> Response:
        writer = EventWriter(session_id, request_id)
        return Response(writer.error(message) + writer.end(), status_code=status, media_type=MEDIA_TYPE)

    # --- reply ------------------------------------------------------------------------

    async def _events(
        self, transaction: Transaction, tenant_id: str, writer: EventWriter
    ) -> AsyncGenerator[bytes, None]:
        """The reply's event lines; never raises (every failure is an error event, then end)."""
        endpoint = BY_INVOKE_TYPE.get(transaction.invoke_type)
        if endpoint is None:
            served = ", ".join(BY_INVOKE_TYPE)
            message = f"the gateway does not serve {transaction.invoke_type!r} invocations; it serves {served}"
            log.warning("serverless transaction: %s", message)
            yield writer.error(message) + writer.end()
            return
        try:
            invocation = build_invocation(endpoint, transaction.request, tenant_id)
        except BadRequest as exc:
            yield writer.error(f"unmarshal backwards invoke request failed: {self._redact(exc.message)}") + writer.end()
            return
        started = False  # errors before the first chunk read "invoke ... failed", after it "read ... failed"
        view = endpoint.plugin_view
        services = self._services
        # Recorded like an inner-API invocation: the services fill the trace, the tenant's
        # budgets and rate limits admit it first, and it becomes one ledger row.
        trace = Trace(
            request_id=transaction.backwards_request_id or os.urandom(8).hex(), model_type=endpoint.model_type
        )
        token = current_trace.set(trace)
        began, wall_start = time.perf_counter(), time.time()
        first_byte: float | None = None
        outcome = "ok"
        try:
            identify(trace, invocation, endpoint.model_type, services.routes if services.governor else None)
            await services.accounting.admit(trace)
            if endpoint.stream is not None:
                async with aclosing(endpoint.stream(services, invocation)) as chunks:
                    async for chunk in chunks:
                        if not started:
                            started, first_byte = True, time.perf_counter() - began
                        yield writer.response("stream", view(chunk))
                yield writer.end()
            else:
                assert endpoint.unary is not None
                result = await endpoint.unary(services, invocation)
                # Result and end in one write: the SDK stops reading after a unary result.
                yield writer.response("struct", view(result)) + writer.end()
        except GatewayError as exc:
            outcome = trace.outcome or (
                "client_error" if 400 <= exc.status < 500 and not trace.attempts else "upstream_error"
            )
            message = self._redact(exc.message)
            log.warning("serverless %s failed: %s", transaction.invoke_type, message)
            verb = "read" if started else "invoke"
            yield writer.error(f"{verb} {endpoint.label} failed: request failed: {message}") + writer.end()
        except Exception:
            outcome = "error"
            log.exception("unexpected error in a serverless %s invocation", transaction.invoke_type)
            verb = "read" if started else "invoke"
            yield writer.error(f"{verb} {endpoint.label} failed: {INTERNAL_ERROR}") + writer.end()
        except (asyncio.CancelledError, GeneratorExit):
            outcome = "cancelled"  # the plugin hung up
            raise
        finally:
            services.accounting.record(trace, outcome, 200, time.perf_counter() - began, first_byte, wall_start)
            current_trace.reset(token)

    async def _with_heartbeats(self, events: AsyncGenerator[bytes, None], writer: EventWriter) -> AsyncIterator[bytes]:
        """``events`` with a blank line every ``heartbeat_s`` while the next one is pending.

        The events are produced in a task of their own, so waiting for the next one can time
        out without cancelling it; when the client leaves, the task is cancelled.
        """
        queue: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=8)

        async def produce() -> None:
            async with aclosing(events):  # closed at once when the client leaves, not at GC
                async for line in events:
                    await queue.put(line)
            await queue.put(None)

        producer = asyncio.get_running_loop().create_task(produce())
        self._tasks.add(producer)
        producer.add_done_callback(self._tasks.discard)
        getter: asyncio.Task[bytes | None] | None = None
        try:
            while True:
                if getter is None:
                    getter = asyncio.ensure_future(queue.get())
                # A producer that ended normally has queued the None that ends this loop.
                waiting = {getter} if producer.done() else {getter, producer}
                done, _ = await asyncio.wait(waiting, timeout=self._heartbeat_s, return_when="FIRST_COMPLETED")
                if getter in done:
                    line, getter = getter.result(), None
                    if line is None:
                        return
                    yield line
                elif producer in done:
                    if producer.cancelled() or producer.exception() is not None:
                        # _events never raises; this is a last resort against a hang.
                        failure = None if producer.cancelled() else producer.exception()
                        log.error("serverless reply producer failed: %r", failure)
                        yield writer.error(INTERNAL_ERROR) + writer.end()
                        return
                else:
                    yield HEARTBEAT
        finally:
            if getter is not None:
                getter.cancel()
            producer.cancel()
