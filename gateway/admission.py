"""The in-flight count of inner-API requests, and the fast refusal above ``server.max_in_flight``.

A request counts from the end of its body to its last byte: a client still sending one
(slowly, say) holds no slot, so slow clients cannot fill the cap; the body deadline of the
server closes them.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.types import Message, Scope

from gateway.errors import Overloaded
from gateway.trace import current_trace

_COUNTED_KEY = "dify_gateway.counted"  # set in the scope once the request counts in flight


class Admission:
    def __init__(self, max_in_flight: int) -> None:
        self.max_in_flight = max_in_flight  # 0: no cap
        self.in_flight = 0

    @property
    def full(self) -> bool:
        return bool(self.max_in_flight) and self.in_flight >= self.max_in_flight

    def admit(self, scope: Scope) -> None:
        """Count this request (its body is in), or raise ``Overloaded``."""
        if scope.get(_COUNTED_KEY):
            return
        if self.full:
            trace = current_trace.get()
            if trace is not None:
                trace.outcome = "overloaded"
            raise Overloaded(
                f"gateway overloaded: {self.in_flight} requests in flight (server.max_in_flight); retry shortly"
            )
        self.in_flight += 1
        scope[_COUNTED_KEY] = True

    def release(self, scope: Scope) -> None:
        """At the request's end: uncount it if it was counted."""
        if scope.get(_COUNTED_KEY):
            self.in_flight -= 1

    def forwarded(self, request: Request) -> Request:
        """``request`` for the forwarder: refused above the cap like an invocation, counted
        once its body has arrived (the forwarder streams it on as it comes)."""
        headers = request.headers
        if headers.get("content-length", "0").strip() in ("", "0") and "transfer-encoding" not in headers:
            self.admit(request.scope)
            return request
        if self.full:
            self.admit(request.scope)  # raises Overloaded
        receive, scope = request.receive, request.scope

        async def receive_counted() -> Message:
            message = await receive()
            done = message["type"] == "http.request" and not message.get("more_body", False)
            if done and not scope.get(_COUNTED_KEY):
                self.in_flight += 1  # already under way: counted, not refused
                scope[_COUNTED_KEY] = True
            return message

        return Request(scope, receive_counted)
