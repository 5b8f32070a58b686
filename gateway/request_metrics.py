"""Per-request Prometheus metrics: traffic, outcomes, latency, time to first byte, the
gateway's own overhead, attempts, retries, fallbacks, tokens and sizes.

Labels are bounded by construction: ``type`` is one of the served paths (or ``forward`` /
``other``), ``route`` a route label from the configuration (``none`` when no route
matched), ``outcome`` one of ``OUTCOMES``. Tenant and user ids never become labels.

With several workers (``PROMETHEUS_MULTIPROC_DIR`` set, see ``gateway.cli``) the values
live in prometheus-client's shared files and every worker's scrape sums them all.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics

from gateway.catalog import EMBEDDED_MODELS
from gateway.trace import Trace

# The "_created" timestamp series prometheus-client adds to every counter and histogram
# double the series count and no dashboard uses them.
disable_created_metrics()  # type: ignore[no-untyped-call]

# client_gone / client_timeout: the caller left, or missed server.body_timeout_s, while sending its body.
OUTCOMES = (
    "ok",
    "upstream_error",
    "client_error",
    "no_route",
    "overloaded",
    "budget_exceeded",
    "rate_limited",
    "cancelled",
    "client_gone",
    "client_timeout",
    "forwarded",
    "error",
)

# Seconds; LLM streams run long, embeddings are fast.
_DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 240)
_OVERHEAD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25)
_SIZE_BUCKETS = (256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864)


RELOAD_RESULTS = ("applied", "unchanged", "invalid")


class RequestMetrics:
    def __init__(self, registry: CollectorRegistry | None) -> None:
        """``registry`` None: multiprocess mode (values go to the shared files only)."""
        self.requests = Counter(
            "dify_gateway_requests",
            "Inner-API requests by model type, route and outcome",
            ["type", "route", "outcome"],
            registry=registry,
        )
        self.duration = Histogram(
            "dify_gateway_request_duration_seconds",
            "Time from the request's arrival to its last byte sent (whole streams included)",
            ["type", "route"],
            buckets=_DURATION_BUCKETS,
            registry=registry,
        )
        self.first_byte = Histogram(
            "dify_gateway_time_to_first_byte_seconds",
            "Time from arrival to the first reply byte; for LLM streams, the time to first token",
            ["type", "route"],
            buckets=_DURATION_BUCKETS,
            registry=registry,
        )
        self.overhead = Histogram(
            "dify_gateway_overhead_seconds",
            "The gateway's own time per request: total time minus upstream attempts and the backoff between them",
            ["type"],
            buckets=_OVERHEAD_BUCKETS,
            registry=registry,
        )
        self.attempts = Counter(
            "dify_gateway_upstream_attempts",
            "Upstream attempts made for requests",
            ["type", "route"],
            registry=registry,
        )
        self.retries = Counter(
            "dify_gateway_retries",
            "Upstream attempts beyond the first of a request",
            ["type", "route"],
            registry=registry,
        )
        self.fallbacks = Counter(
            "dify_gateway_fallbacks",
            "Requests answered (or last tried) by a fallback target",
            ["type", "route"],
            registry=registry,
        )
        self.tokens = Counter(
            "dify_gateway_tokens",
            "Tokens by direction (input, output)",
            ["type", "route", "direction"],
            registry=registry,
        )
        self.request_bytes = Histogram(
            "dify_gateway_request_size_bytes", "Request body sizes", ["type"], buckets=_SIZE_BUCKETS, registry=registry
        )
        self.response_bytes = Histogram(
            "dify_gateway_response_size_bytes", "Reply body sizes", ["type"], buckets=_SIZE_BUCKETS, registry=registry
        )
        self.model_restarts = Counter(
            "dify_gateway_embedded_model_restarts",
            "Embedded model processes replaced after a crash (reason=crash) or a call past its deadline (timeout)",
            ["model", "reason"],
            registry=registry,
        )
        for model in EMBEDDED_MODELS:  # present from the start, so rate() and alerts see the first one
            for reason in ("crash", "timeout"):
                self.model_restarts.labels(model, reason)
        self.config_reloads = Counter(
            "dify_gateway_config_reloads",
            "Configuration reloads (SIGHUP or a changed file) by result: applied, unchanged (the same "
            "configuration), invalid (the running configuration kept)",
            ["result"],
            registry=registry,
        )
        for result in RELOAD_RESULTS:
            self.config_reloads.labels(result)
        # Label children by key: .labels() costs a lock and a dict build per call.
        self._by_route: dict[tuple[str, str], _RouteChildren] = {}
        self._by_type: dict[str, _TypeChildren] = {}

    def config_reloaded(self, result: str) -> None:
        self.config_reloads.labels(result).inc()

    def model_restarted(self, model: str, reason: str) -> None:
        """An embedded model's process was replaced (called from the model's worker thread)."""
        self.model_restarts.labels(model, reason).inc()

    def observe(
        self,
        trace: Trace,
        outcome: str,
        duration_s: float,
        first_byte_s: float | None,
        request_bytes: int,
        response_bytes: int,
    ) -> None:
        route = trace.route or "none"
        key = (trace.model_type, route)
        children = self._by_route.get(key)
        if children is None:
            children = self._by_route[key] = _RouteChildren(self, *key)
        per_type = self._by_type.get(trace.model_type)
        if per_type is None:
            per_type = self._by_type[trace.model_type] = _TypeChildren(self, trace.model_type)
        outcome_counter = children.outcomes.get(outcome)
        if outcome_counter is None:
            outcome_counter = children.outcomes[outcome] = self.requests.labels(trace.model_type, route, outcome)
        outcome_counter.inc()
        children.duration.observe(duration_s)
        if first_byte_s is not None:
            children.first_byte.observe(first_byte_s)
        if trace.attempts:
            children.attempts.inc(trace.attempts)
            if trace.attempts > 1:
                children.retries.inc(trace.attempts - 1)
            if trace.target is not None and trace.target.fallback:
                children.fallbacks.inc()
            per_type.overhead.observe(max(0.0, duration_s - trace.upstream_s))
        if trace.tokens_in:
            children.tokens_in.inc(trace.tokens_in)
        if trace.tokens_out:
            children.tokens_out.inc(trace.tokens_out)
        per_type.request_bytes.observe(request_bytes)
        per_type.response_bytes.observe(response_bytes)


class _RouteChildren:
    def __init__(self, m: RequestMetrics, model_type: str, route: str) -> None:
        self.outcomes: dict[str, Counter] = {}
        self.duration = m.duration.labels(model_type, route)
        self.first_byte = m.first_byte.labels(model_type, route)
        self.attempts = m.attempts.labels(model_type, route)
        self.retries = m.retries.labels(model_type, route)
        self.fallbacks = m.fallbacks.labels(model_type, route)
        self.tokens_in = m.tokens.labels(model_type, route, "input")
        self.tokens_out = m.tokens.labels(model_type, route, "output")


class _TypeChildren:
    def __init__(self, m: RequestMetrics, model_type: str) -> None:
        self.overhead = m.overhead.labels(model_type)
        self.request_bytes = m.request_bytes.labels(model_type)
        self.response_bytes = m.response_bytes.labels(model_type)
