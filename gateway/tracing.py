"""Optional OpenTelemetry tracing: a span per inner-API request, exported over OTLP/HTTP.

Off by default, and the OpenTelemetry packages are an extra (``pip install
'dify-gateway[otel]'``), imported only when tracing is on. The span continues the caller's
trace (its ``traceparent``) and its own context is what goes upstream, so backend spans
hang under the gateway's. Attributes are the request log's fields: no prompt text, no keys.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gateway.config import TracingConfig
from gateway.errors import GatewayError

if TYPE_CHECKING:
    from gateway.trace import Trace


def require_otel() -> None:
    """``GatewayError`` unless the OpenTelemetry packages can be imported (checked before
    workers start, so a missing extra is one clear error, not a worker crash per worker)."""
    try:
        import opentelemetry.exporter.otlp.proto.http.trace_exporter
        import opentelemetry.sdk.trace  # noqa: F401
    except ImportError:
        raise GatewayError(
            "tracing.enabled needs the OpenTelemetry packages: pip install 'dify-gateway[otel]'"
        ) from None


class Tracing:
    def __init__(self, config: TracingConfig) -> None:
        require_otel()
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
            from opentelemetry.sdk.resources import Resource
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import BatchSpanProcessor
            from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
            from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
        except ImportError:
            raise GatewayError(
                "tracing.enabled needs the OpenTelemetry packages: pip install 'dify-gateway[otel]'"
            ) from None
        resource = Resource.create({"service.name": config.service_name})
        sampler = ParentBased(TraceIdRatioBased(config.sample_ratio))
        # A provider of our own (not the global one): several apps in a process stay apart.
        self._provider = TracerProvider(resource=resource, sampler=sampler)
        exporter = OTLPSpanExporter(endpoint=config.endpoint) if config.endpoint else OTLPSpanExporter()
        self._provider.add_span_processor(BatchSpanProcessor(exporter))
        self._tracer = self._provider.get_tracer("dify_gateway")
        self._propagator = TraceContextTextMapPropagator()

    def start(self, trace: Trace) -> Any:
        """A started span for the request, child of the caller's ``traceparent`` if any.

        The trace's ``traceparent`` becomes the span's, so upstream calls continue it."""
        carrier = {"traceparent": trace.traceparent} if trace.traceparent else {}
        context = self._propagator.extract(carrier)
        span = self._tracer.start_span(f"dify-gateway {trace.model_type}", context=context, kind=_server_kind())
        if span.get_span_context().is_valid:
            own: dict[str, str] = {}
            from opentelemetry.trace import set_span_in_context

            self._propagator.inject(own, context=set_span_in_context(span))
            trace.traceparent = own.get("traceparent", trace.traceparent)
        return span

    @staticmethod
    def finish(span: Any, trace: Trace, outcome: str, status: int, duration_s: float) -> None:
        from opentelemetry.trace import Status, StatusCode

        span.set_attribute("dify_gateway.request_id", trace.request_id)
        span.set_attribute("dify_gateway.type", trace.model_type)
        span.set_attribute("dify_gateway.outcome", outcome)
        span.set_attribute("dify_gateway.attempts", trace.attempts)
        span.set_attribute("dify_gateway.upstream_ms", round(trace.upstream_s * 1000, 3))
        span.set_attribute("dify_gateway.overhead_ms", round(max(0.0, duration_s - trace.upstream_s) * 1000, 3))
        span.set_attribute("http.response.status_code", status)
        if trace.route:
            span.set_attribute("dify_gateway.route", trace.route)
        if trace.target is not None:
            span.set_attribute("dify_gateway.target", trace.target.label)
        if trace.tokens_in or trace.tokens_out:
            span.set_attribute("gen_ai.usage.input_tokens", trace.tokens_in)
            span.set_attribute("gen_ai.usage.output_tokens", trace.tokens_out)
        if outcome not in ("ok", "forwarded"):
            span.set_status(Status(StatusCode.ERROR, outcome))
        span.end()

    def shutdown(self) -> None:
        """Flush what is buffered (at shutdown)."""
        self._provider.shutdown()


def _server_kind() -> Any:
    from opentelemetry.trace import SpanKind

    return SpanKind.SERVER
