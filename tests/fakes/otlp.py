"""A loopback OpenTelemetry collector: receives OTLP/HTTP protobuf trace exports and keeps
the spans, decoded, for assertions."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tests.fakes.loopback import LoopbackServer


@dataclass(frozen=True)
class ReceivedSpan:
    name: str
    trace_id: str
    span_id: str
    parent_span_id: str
    attributes: dict[str, Any]
    status_code: int
    service: str


class FakeCollector(LoopbackServer):
    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._spans: list[ReceivedSpan] = []

    @property
    def traces_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1/traces"

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if request.path != "/v1/traces" or request.method != "POST":
            return web.Response(status=404)
        export = ExportTraceServiceRequest()
        export.ParseFromString(await request.read())
        received = []
        for resource_spans in export.resource_spans:
            service = next(
                (a.value.string_value for a in resource_spans.resource.attributes if a.key == "service.name"), ""
            )
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    received.append(
                        ReceivedSpan(
                            name=span.name,
                            trace_id=span.trace_id.hex(),
                            span_id=span.span_id.hex(),
                            parent_span_id=span.parent_span_id.hex(),
                            attributes={a.key: _value(a.value) for a in span.attributes},
                            status_code=span.status.code,
                            service=service,
                        )
                    )
        with self._lock:
            self._spans.extend(received)
        return web.Response(status=200, content_type="application/x-protobuf", body=b"")

    def spans(self, within: float = 5.0, count: int = 1) -> list[ReceivedSpan]:
        """The spans received so far, waiting up to ``within`` seconds for ``count`` of them."""
        deadline = time.monotonic() + within
        while True:
            with self._lock:
                if len(self._spans) >= count or time.monotonic() > deadline:
                    return list(self._spans)
            time.sleep(0.02)


def _value(value: Any) -> Any:
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind else None
