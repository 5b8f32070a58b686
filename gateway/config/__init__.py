"""The gateway's YAML configuration: schema, secret references and validation.

Two phases: ``load_config`` reads and validates the file into frozen models; the app
builds live objects (route table, adapters) from them. Nothing here is global.

Secret references, in any string value:
- ``os.environ/NAME``   the whole value comes from the environment variable NAME;
- ``file:/path``        the whole value is the (stripped) content of a file;
- ``${NAME}`` / ``${NAME:-default}`` inside a longer string is interpolated.
"""

from __future__ import annotations

import os
import re
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from gateway.catalog import LOCAL_MODELS, is_local
from gateway.config.backends import BackendKind, backend_problem

ModelType = Literal[
    "llm",
    "text-embedding",
    "multimodal-embedding",
    "rerank",
    "multimodal-rerank",
    "tts",
    "speech2text",
    "moderation",
]
MODEL_TYPES: tuple[str, ...] = get_args(ModelType)

CONFIG_ENV = "DIFY_GATEWAY_CONFIG"
INNER_API_KEY_ENV = "DIFY_INNER_API_KEY"
# Turn the operator console on (1/true/yes/on) or off (0/false/no/off) whatever the file says.
CONSOLE_ENV = "DIFY_GATEWAY_CONSOLE"
# The console's admin key when console.admin_key is not set in the file.
ADMIN_KEY_ENV = "DIFY_GATEWAY_ADMIN_KEY"


class ConfigError(Exception):
    """The configuration cannot be used; the message names the file and the key."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _not_blank(key: SecretStr) -> SecretStr:
    if not key.get_secret_value().strip():
        raise ValueError("the key is empty (is the environment variable it comes from set?)")
    return key


# A key that is set must not be blank: a blank one would let anyone in, and is almost always
# an environment variable that is not set.
NonBlankSecret = Annotated[SecretStr, AfterValidator(_not_blank)]


class LocalLLMConfig(_Strict):
    """The embedded LLM (``local/smollm2-135m-instruct``): one model process per instance,
    each running one generation at a time (~170 MB each, in every worker)."""

    instances: int = Field(default=1, ge=1, le=16)
    # llama.cpp threads per instance: 1 leaves the other cores to the event loop and the
    # other models (2 threads on a busy 2-core machine were slower, not faster).
    threads: int = Field(default=1, ge=1, le=64)
    # Prompt and answer together, in tokens (the model was trained on 8,192).
    context_tokens: int = Field(default=4096, ge=256, le=8192)
    # A call waits this long for a free instance, then gets an "overloaded" error; at most
    # max_waiting calls wait at once (the others get it at once).
    max_wait_s: float = Field(default=30.0, gt=0, le=3600)
    max_waiting: int = Field(default=64, ge=0, le=100_000)


class ServerConfig(_Strict):
    host: str = "0.0.0.0"
    port: int = Field(default=8080, ge=1, le=65535)
    # Speech-to-text audio arrives hex-encoded (twice its size): 64 MiB allows ~30 MiB audio.
    max_body_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    # json: one JSON object per line (for log pipelines); text: plain lines for people.
    log_format: Literal["json", "text"] = "json"
    # One line per inner-API request (ids, route, target, outcome, durations, tokens).
    request_log: bool = True
    access_log: bool = False
    # Which embedded models load at start-up (readiness waits for them): true, the ones the
    # routes use except those loaded on demand (Whisper); false, none; or a list of names.
    # The others load on their first call.
    preload_local_models: bool | list[str] = True

    @field_validator("preload_local_models")
    @classmethod
    def _known_local_models(cls, value: bool | list[str]) -> bool | list[str]:
        if isinstance(value, list):
            known = sorted({name for names in LOCAL_MODELS.values() for name in names})
            for name in value:
                if name not in known:
                    raise ValueError(f"{name!r} is not an embedded model (known: {', '.join(known)})")
        return value

    # Invocations one process serves at once; above it callers get a fast "overloaded" 429
    # instead of an unbounded queue (0: no cap).
    max_in_flight: int = Field(default=1000, ge=0)
    # Graceful drain on SIGTERM: readiness turns 503 at once; new requests are still served
    # for drain_grace_s (while load balancers take the instance out), then the listener
    # closes and requests in flight get up to drain_timeout_s to finish.
    drain_grace_s: float = Field(default=5.0, ge=0, le=600)
    drain_timeout_s: float = Field(default=120.0, ge=0, le=3600)
    # What one connection may cost before it is answered 431 or 408 and closed (see
    # gateway.server_protocol). The daemon sends under 2 KiB of headers, a dozen of them.
    max_header_bytes: int = Field(default=64 * 1024, ge=1024, le=16 * 1024 * 1024)
    max_headers: int = Field(default=100, ge=16, le=10_000)
    # From a request's first byte to the end of its headers (also how long a new
    # connection may stay silent).
    header_timeout_s: float = Field(default=10.0, gt=0, le=3600)
    # From the end of the headers to the end of the body, whole: a trickle of a byte now
    # and then cannot hold a connection. 60 s carries a 64 MiB body at ~9 Mbit/s.
    body_timeout_s: float = Field(default=60.0, gt=0, le=3600)
    # An idle keep-alive connection is closed after this long (uvicorn's timeout_keep_alive).
    keep_alive_timeout_s: float = Field(default=5.0, gt=0, le=3600)
    # Reload the configuration file when it changes (SIGHUP always reloads it), checked
    # every watch_interval_s; a Kubernetes ConfigMap volume's symlink swap counts.
    watch_config: bool = False
    watch_interval_s: float = Field(default=2.0, ge=0.1, le=3600)
    local_llm: LocalLLMConfig = Field(default_factory=LocalLLMConfig)


class DifyConfig(_Strict):
    inner_api_key: NonBlankSecret | None = None
    # The real Dify API: every inner-API call the gateway does not answer is forwarded here.
    api_url: str | None = None
    # The X-Inner-Api-Key sent to Dify (Dify's INNER_API_KEY_FOR_PLUGIN); default: the daemon's own.
    api_key: NonBlankSecret | None = None
    # Forward model invocations that match no route (so the gateway can take over one model
    # at a time); off: they get a "no route" error.
    passthrough: bool = True
    # Deadline for one forwarded exchange, reply body included.
    forward_timeout_s: float = Field(default=600.0, gt=0)


class EmbeddingCacheConfig(_Strict):
    enabled: bool = True
    # "tenant": entries are per tenant (no tenant can learn what another embedded);
    # "global": shared by all tenants (more hits; see the README for the trade-off).
    scope: Literal["tenant", "global"] = "tenant"
    ttl_s: int = Field(default=7 * 24 * 3600, ge=1)
    # The in-process LRU: the whole cache without Redis ...
    memory_max_bytes: int = Field(default=64 * 1024 * 1024, ge=0)  # per worker
    # ... and with Redis, a small L1 in front of it that saves the round trip for hot inputs (0: off).
    l1_max_bytes: int = Field(default=32 * 1024 * 1024, ge=0)


class CacheConfig(_Strict):
    redis_url: SecretStr | None = None  # redis:// or rediss:// (single or cluster); credentials for sentinel
    redis_mode: Literal["single", "cluster", "sentinel"] = "single"
    sentinels: list[str] = Field(default_factory=list)  # "host:port" of each sentinel
    sentinel_master: str = "mymaster"
    key_prefix: str = "dgw:"
    # Redis must never slow a request down much: operations past this are misses.
    timeout_ms: int = Field(default=50, ge=1, le=10_000)
    # The breaker opens after this many consecutive failures and probes again after the cooldown.
    breaker_failures: int = Field(default=3, ge=1)
    breaker_cooldown_s: float = Field(default=5.0, gt=0)
    max_pending_writes: int = Field(default=1000, ge=1)
    embeddings: EmbeddingCacheConfig = Field(default_factory=EmbeddingCacheConfig)
    # The LLM response cache (routes' ``cache``) uses the embeddings' store; without one
    # (embeddings off, no Redis) an in-process store of this size, per worker.
    responses_memory_max_bytes: int = Field(default=32 * 1024 * 1024, ge=0)

    @model_validator(mode="after")
    def _mode_has_its_addresses(self) -> CacheConfig:
        if self.redis_mode == "sentinel" and not self.sentinels:
            raise ValueError("redis_mode sentinel needs sentinels: [host:port, ...]")
        if self.redis_mode == "cluster" and self.redis_url is None:
            raise ValueError("redis_mode cluster needs redis_url (any node of the cluster)")
        return self


class Timeouts(_Strict):
    # Opening the connection to the upstream.
    connect_s: float = Field(default=10.0, gt=0)
    # Streams: the first upstream chunk must come within ttft_s of the attempt's start, and
    # each later one within idle_s of the one before.
    ttft_s: float = Field(default=60.0, gt=0)
    idle_s: float = Field(default=60.0, gt=0)
    # The whole request, retries and fallbacks included. Below the daemon's 240 s read
    # deadline so the caller gets a clean error instead of a cut connection.
    total_s: float = Field(default=230.0, gt=0)


class RetryConfig(_Strict):
    # Waits between attempts on the same target: exponential from backoff_initial_s, at most
    # backoff_max_s, with jitter.
    backoff_initial_s: float = Field(default=0.1, ge=0)
    backoff_max_s: float = Field(default=2.0, ge=0)
    # An upstream's Retry-After is honoured up to this; longer means "try another target".
    retry_after_max_s: float = Field(default=10.0, ge=0)


class BreakerConfig(_Strict):
    """Per target: open after ``failures`` consecutive failures, or when at least
    ``error_ratio`` of the last ``window_s`` seconds' calls failed (once there were
    ``min_calls``); after ``cooldown_s`` one probe call decides whether it closes."""

    enabled: bool = True
    failures: int = Field(default=5, ge=1)
    error_ratio: float = Field(default=0.5, gt=0, le=1)
    window_s: float = Field(default=30.0, gt=0, le=600)
    min_calls: int = Field(default=20, ge=1)
    cooldown_s: float = Field(default=30.0, gt=0)
    # Share open breakers between replicas through the cache's Redis (cache.redis_url).
    shared: bool = False


class TracingConfig(_Strict):
    """OpenTelemetry spans (the ``otel`` extra): one per inner-API request, sent over OTLP/HTTP."""

    enabled: bool = False
    # The collector's traces endpoint; default: $OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, else
    # $OTEL_EXPORTER_OTLP_ENDPOINT + /v1/traces, else http://localhost:4318/v1/traces.
    endpoint: str | None = None
    service_name: str = "dify-gateway"
    # Share of traces started here that are recorded (a caller's sampled flag is followed).
    sample_ratio: float = Field(default=1.0, ge=0, le=1)


class ConsoleConfig(_Strict):
    """The operator console (``/console/``): a read-only status page, its JSON endpoints and a
    try-it panel. Off by default; its data needs ``admin_key`` (the inner API key when unset)."""

    enabled: bool = False
    admin_key: NonBlankSecret | None = None


class RequestLimits(_Strict):
    """The most work one request may ask for, per model type; more is refused (413) before
    any backend is called. ``server.max_body_bytes`` bounds the bytes; these bound the work
    (an embedded model's CPU time, a remote backend's bill). The defaults sit above what Dify
    itself sends and at or above the per-request limits of the common providers (the README
    gives the reasons); a route's own ``limits`` overrides single keys for that route."""

    # text-embedding / multimodal-embedding: inputs per request, characters per text input.
    embedding_inputs: int = Field(default=2048, ge=1)
    embedding_input_chars: int = Field(default=200_000, ge=1)
    # rerank / multimodal-rerank: documents per request; characters of the query and of each text document.
    rerank_docs: int = Field(default=1000, ge=1)
    rerank_doc_chars: int = Field(default=200_000, ge=1)
    # tts: characters of content_text (the whole text; it is spoken piece by piece).
    tts_chars: int = Field(default=100_000, ge=1)
    # moderation: characters of text.
    moderation_chars: int = Field(default=1_000_000, ge=1)
    # speech2text: bytes of audio (the hex in the body is twice this).
    speech2text_bytes: int = Field(default=30 * 1024 * 1024, ge=1)


class ResilienceConfig(_Strict):
    retry: RetryConfig = Field(default_factory=RetryConfig)
    breaker: BreakerConfig = Field(default_factory=BreakerConfig)


class TargetConfig(_Strict):
    """One backend. Keys follow litellm's ``litellm_params`` names."""

    model: str = Field(min_length=1)  # e.g. "openai/{model}", "anthropic/claude-3-5-haiku-latest"
    # What serves it: litellm, openai (native OpenAI-compatible client), tei, rerank (native rerank
    # client) or local (embedded models). None: derived from the model prefix and ``native``
    # (see gateway.config.backends).
    backend: BackendKind | None = None
    api_key: SecretStr | None = None
    api_base: str | None = None
    api_version: str | None = None
    organization: str | None = None
    weight: float = Field(default=1.0, gt=0)
    timeout_s: float | None = Field(default=None, gt=0)
    # Force the upstream API style for LLM calls; None follows the request's mode.
    mode: Literal["chat", "completion"] | None = None
    # LLM chat through the gateway's own OpenAI-compatible client instead of litellm. None:
    # automatic (openai/ and hosted_vllm/ targets without api_version or litellm_params).
    native: bool | None = None
    # How structured output is obtained: "auto" uses the model's JSON-schema support
    # when litellm's model map knows it, else a schema prompt.
    structured_output: Literal["auto", "native", "prompt"] = "auto"
    # Prices per token (litellm names); override litellm's bundled model map.
    input_cost_per_token: float | None = Field(default=None, ge=0)
    output_cost_per_token: float | None = Field(default=None, ge=0)
    # Embeddings: the most inputs per upstream call (default: the provider's known limit).
    max_batch_size: int | None = Field(default=None, ge=1)
    # Summary: the model's context window in tokens (default: litellm's model map, else 2048).
    context_tokens: int | None = Field(default=None, ge=256)
    # Rate hints (this process's requests and tokens per minute): a target at its limit is
    # passed over for the route's other targets and fallbacks.
    rpm: int | None = Field(default=None, ge=1)
    tpm: int | None = Field(default=None, ge=1)
    # Completion params applied under the request's own (the request wins).
    params: dict[str, Any] = Field(default_factory=dict)
    headers: dict[str, str] = Field(default_factory=dict)
    # Anything else litellm accepts, passed through unchanged.
    litellm_params: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _backend_or_native(self) -> TargetConfig:
        if self.backend is not None and self.native is not None:
            raise ValueError("set backend or native, not both (backend: openai is native: true)")
        return self


class RouteMatch(_Strict):
    type: ModelType | list[ModelType]
    provider: str = "*"
    model: str = "*"
    tenant: str | list[str] | None = None

    @property
    def types(self) -> tuple[str, ...]:
        return (self.type,) if isinstance(self.type, str) else tuple(self.type)

    @property
    def tenants(self) -> tuple[str, ...] | None:
        if self.tenant is None:
            return None
        return (self.tenant,) if isinstance(self.tenant, str) else tuple(self.tenant)


# Direct HTTP backends have no default address.
_NEEDS_API_BASE = ("tei/", "xinference/")


class ResponseCacheConfig(_Strict):
    """A route's exact LLM response cache (see gateway.cache.response_cache)."""

    ttl_s: int = Field(default=3600, ge=1, le=365 * 24 * 3600)
    # Cache only greedy requests (temperature 0) unless this is true: then every request is,
    # and a repeated one gets the first answer again.
    any_temperature: bool = False
    # Keep answers per tenant (no tenant sees another's answers); default: shared.
    per_tenant: bool = False


class RouteConfig(_Strict):
    name: str | None = None
    match: RouteMatch
    targets: list[TargetConfig] = Field(min_length=1)
    # Tried in order once the chosen target (and the route's other targets) have failed.
    fallbacks: list[TargetConfig] = Field(default_factory=list)
    # "weighted": random by weight; "least_in_flight": the target with the fewest calls
    # in flight (ties by weight).
    balancing: Literal["weighted", "least_in_flight"] = "weighted"
    # Retries of the same target after a retryable failure (connect error, 408, 429, 5xx,
    # a stream that failed before its first byte reached the daemon).
    retries: int = Field(default=2, ge=0, le=10)
    # Upstream attempts one request may make in all (default: retries + one per target and
    # fallback).
    max_attempts: int | None = Field(default=None, ge=1, le=50)
    timeouts: Timeouts = Field(default_factory=Timeouts)
    # Keys set here replace the top-level limits for this route's requests.
    limits: RequestLimits | None = None
    # LLM routes: answer a repeated request from the cache, with no upstream call.
    cache: ResponseCacheConfig | None = None

    @property
    def attempt_budget(self) -> int:
        if self.max_attempts is not None:
            return self.max_attempts
        return self.retries + len(self.targets) + len(self.fallbacks)

    @property
    def label(self) -> str:
        """How messages name the route: its name, else its match."""
        m = self.match
        return self.name or f"{'|'.join(m.types)}:{m.provider}/{m.model}"

    @model_validator(mode="after")
    def _cache_only_for_llm(self) -> RouteConfig:
        if self.cache is not None and "llm" not in self.match.types:
            raise ValueError(f"route {self.label!r}: cache is for llm routes (embeddings have cache.embeddings)")
        return self

    @model_validator(mode="after")
    def _targets_serve_the_types(self) -> RouteConfig:
        for target in [*self.targets, *self.fallbacks]:
            where = f"route {self.label!r}, target {target.model!r}"
            if target.model.startswith(_NEEDS_API_BASE) and not target.api_base:
                raise ValueError(f"{where}: target {target.model!r} needs api_base (the server's URL)")
            for model_type in self.match.types:
                if is_local(target.model) and target.backend in (None, "local"):
                    served = LOCAL_MODELS.get(model_type, ())
                    if target.model not in served:
                        choices = ", ".join(served) or "none (route this type to a backend)"
                        raise ValueError(
                            f"{where}: embedded model {target.model!r} cannot serve {model_type}; "
                            f"embedded models for it: {choices}"
                        )
                problem = backend_problem(target, target.model, model_type)
                if problem is not None:
                    raise ValueError(f"{where}: {problem}")
        return self


TenantId = Annotated[str, Field(min_length=1)]


class ServerlessConfig(_Strict):
    """``POST /backwards-invocation/transaction``, the dify-plugin SDK's serverless path (spec 6).

    The SDK's request names no tenant, only a ``session_id``; the tenant whose routes (and
    cache scope) apply is looked up in ``tenants`` and falls back to ``default_tenant``.

    ``api_key``: when set, a request must carry it as the password of HTTP Basic auth (what
    the unmodified SDK sends when ``DIFY_PLUGIN_DAEMON_URL`` has user info, e.g.
    ``http://plugin:KEY@gateway:8080``; percent-encode special characters) or as
    ``Authorization: Bearer KEY``. Without it the endpoint is open to anyone who can reach it:
    protect it by network policy then.
    """

    enabled: bool = False
    api_key: NonBlankSecret | None = None
    default_tenant: TenantId | None = None
    # session_id -> tenant_id
    tenants: dict[str, TenantId] = Field(default_factory=dict)
    # Blank lines sent while a reply is pending; the SDK gives up after 250 s without a byte.
    heartbeat_s: float = Field(default=15.0, gt=0, le=120)

    @model_validator(mode="after")
    def _enabled_needs_a_tenant(self) -> ServerlessConfig:
        if self.enabled and self.default_tenant is None and not self.tenants:
            raise ValueError("enabled needs default_tenant or a tenants table (session_id: tenant_id)")
        return self

    def tenant_for(self, session_id: str) -> str | None:
        """The tenant a session's invocations run as, or None when the session is not mapped."""
        return self.tenants.get(session_id, self.default_tenant)


# --- governance: the usage ledger, budgets and rate limits ---------------------------------

# Where the embedded defaults keep their files (the SQLite ledger, its spill file).
DATA_DIR_ENV = "DIFY_GATEWAY_DATA_DIR"
DEFAULT_DATA_DIR = "data"


class LedgerConfig(_Strict):
    """One row per invocation, written off the request path in batches (``gateway.usage``)."""

    enabled: bool = True
    # sqlite:///path/usage.db or postgresql://user:password@host:5432/db (a secret reference
    # works: os.environ/DATABASE_URL). Unset: SQLite at $DIFY_GATEWAY_DATA_DIR/usage.db.
    database_url: SecretStr | None = None
    # A batch is written every flush_interval_ms, or as soon as batch_rows are waiting.
    flush_interval_ms: int = Field(default=250, ge=10, le=60_000)
    batch_rows: int = Field(default=1000, ge=1, le=100_000)
    # Rows kept in memory while the database is slow or away; past this they go to the
    # spill file (replayed when the database is back).
    buffer_rows: int = Field(default=50_000, ge=100, le=10_000_000)
    # The append-only spill file; unset: usage-spill.jsonl in $DIFY_GATEWAY_DATA_DIR. Past
    # spill_max_bytes rows are dropped (and counted).
    spill_path: str | None = None
    spill_max_bytes: int = Field(default=1024 * 1024 * 1024, ge=1024)
    # Rows older than this are deleted (in small batches); 0 keeps everything.
    retention_days: int = Field(default=90, ge=0, le=36_500)
    # Run the schema migrations at start-up (``dify-gateway migrate`` runs them on demand).
    migrate_on_start: bool = True
    # Each database call (a batch insert, a report) gives up after this long.
    timeout_s: float = Field(default=10.0, gt=0, le=600)

    @field_validator("database_url")
    @classmethod
    def _known_database(cls, url: SecretStr | None) -> SecretStr | None:
        if url is None:
            return None
        text = url.get_secret_value().strip()
        scheme = text.split(":", 1)[0].lower()
        if scheme not in ("sqlite", "postgresql", "postgres", "postgresql+psycopg"):
            raise ValueError("database_url must start with sqlite:/// or postgresql:// (the credentials are not shown)")
        if scheme == "sqlite" and not text.startswith("sqlite:///"):
            raise ValueError("a SQLite database_url is sqlite:///relative/path.db or sqlite:////absolute/path.db")
        return url


Period = Literal["day", "month"]


def _matches_any(value: str) -> str:
    if not value.strip():
        raise ValueError('must not be blank (use "*" for every one)')
    return value


Glob = Annotated[str, AfterValidator(_matches_any)]


class BudgetLimit(_Strict):
    """Spend allowed per tenant in a calendar day or month, in USD and/or tokens (input plus
    output), optionally counting only one route's or one model's calls."""

    period: Period
    usd: Decimal | None = Field(default=None, gt=0)
    tokens: int | None = Field(default=None, gt=0)
    route: Glob | None = None  # a route name (or glob); unset: every route
    model: Glob | None = None  # the Dify model name (or glob); unset: every model

    @model_validator(mode="after")
    def _has_a_limit(self) -> BudgetLimit:
        if self.usd is None and self.tokens is None:
            raise ValueError("a budget needs usd, tokens or both")
        return self

    @property
    def name(self) -> str:
        """How messages, the console and reports call this budget."""
        scope = "".join(
            part
            for part in (
                f" on route {self.route}" if self.route else "",
                f" for model {self.model}" if self.model else "",
            )
        )
        return f"{'daily' if self.period == 'day' else 'monthly'} budget{scope}"


class BudgetOverride(_Strict):
    # A tenant id or a glob (fnmatch: *, ?, [...]); the first override that matches a tenant
    # replaces the default budgets for it (an empty list: no budget).
    tenant: Glob
    limits: list[BudgetLimit]


class BudgetsConfig(_Strict):
    """Budgets per tenant (``gateway.limits``); none unless configured."""

    default: list[BudgetLimit] = Field(default_factory=list)  # every tenant no override matches
    overrides: list[BudgetOverride] = Field(default_factory=list)
    # Calendar days and months are counted in this time zone (an IANA name).
    timezone: str = "UTC"
    # Redis unreachable: "open" admits the request (counted in-process meanwhile), "closed" refuses it.
    on_redis_error: Literal["open", "closed"] = "open"

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, zone: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(zone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"{zone!r} is not a known time zone (e.g. UTC, Europe/Berlin)") from None
        return zone

    @property
    def enabled(self) -> bool:
        return bool(self.default) or any(o.limits for o in self.overrides)


class RateLimit(_Strict):
    """Per minute, per tenant (and per user of a tenant); unset fields are unlimited."""

    rpm: int | None = Field(default=None, gt=0)  # requests per minute, per tenant
    tpm: int | None = Field(default=None, gt=0)  # tokens (input plus output) per minute, per tenant
    user_rpm: int | None = Field(default=None, gt=0)  # requests per minute, per user of a tenant
    user_tpm: int | None = Field(default=None, gt=0)

    @property
    def any(self) -> bool:
        return any(v is not None for v in (self.rpm, self.tpm, self.user_rpm, self.user_tpm))


class RateLimitOverride(RateLimit):
    tenant: Glob  # the first override that matches replaces the default for the tenant


class RateLimitsConfig(_Strict):
    """Rate limits per tenant (``gateway.limits``); none unless configured. Distinct from a
    target's ``rpm``/``tpm``, which spread load over targets."""

    default: RateLimit = Field(default_factory=RateLimit)
    overrides: list[RateLimitOverride] = Field(default_factory=list)
    on_redis_error: Literal["open", "closed"] = "open"

    @property
    def enabled(self) -> bool:
        return self.default.any or any(o.any for o in self.overrides)


class GatewayConfig(_Strict):
    server: ServerConfig = Field(default_factory=ServerConfig)
    dify: DifyConfig = Field(default_factory=DifyConfig)
    cache: CacheConfig = Field(default_factory=CacheConfig)
    routes: list[RouteConfig] = Field(default_factory=list)
    resilience: ResilienceConfig = Field(default_factory=ResilienceConfig)
    tracing: TracingConfig = Field(default_factory=TracingConfig)
    summary_model: TargetConfig | None = None
    serverless: ServerlessConfig = Field(default_factory=ServerlessConfig)
    console: ConsoleConfig = Field(default_factory=ConsoleConfig)
    limits: RequestLimits = Field(default_factory=RequestLimits)
    ledger: LedgerConfig = Field(default_factory=LedgerConfig)
    budgets: BudgetsConfig = Field(default_factory=BudgetsConfig)
    rate_limits: RateLimitsConfig = Field(default_factory=RateLimitsConfig)
    # How many pieces of a long text are summarised at once.
    summary_concurrency: int = Field(default=4, ge=1, le=64)
    # Where this configuration came from, for messages ("<embedded defaults>" without a file).
    source: str = "<embedded defaults>"

    @field_validator("routes")
    @classmethod
    def _names_unique(cls, routes: list[RouteConfig]) -> list[RouteConfig]:
        names = [r.name for r in routes if r.name]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"route names must be unique, repeated: {', '.join(dupes)}")
        return routes

    @model_validator(mode="after")
    def _shared_breakers_need_redis(self) -> GatewayConfig:
        breaker = self.resilience.breaker
        if breaker.shared and self.cache.redis_url is None and self.cache.redis_mode != "sentinel":
            raise ValueError("resilience.breaker.shared needs Redis: set cache.redis_url")
        return self

    @field_validator("summary_model")
    @classmethod
    def _summary_model_is_remote(cls, target: TargetConfig | None) -> TargetConfig | None:
        if target is None:
            return None
        if is_local(target.model) and target.model not in LOCAL_MODELS["llm"]:
            raise ValueError(
                f"{target.model!r}: the summary needs an LLM; the embedded one is {', '.join(LOCAL_MODELS['llm'])}"
            )
        problem = backend_problem(target, target.model, "llm")
        if problem is not None:
            raise ValueError(f"summary_model {target.model!r}: {problem}")
        return target

    def secrets(self) -> list[str]:
        """Every secret value in the configuration, for redaction of messages."""
        found = [s.get_secret_value() for s in _walk_secrets(self)]
        return [s for s in found if len(s) >= 4]


def default_routes(forwards_to_dify: bool = False) -> list[dict[str, Any]]:
    """Used when the configuration has no ``routes`` key: embedded models for every type. In
    front of Dify (``dify.api_url`` with passthrough) LLM calls go to Dify's own models instead:
    a small embedded model must never answer a workspace's users unasked."""
    return [
        {"name": f"local-{model_type}", "match": {"type": model_type}, "targets": [{"model": models[0]}]}
        for model_type, models in LOCAL_MODELS.items()
        if not (forwards_to_dify and model_type == "llm")
    ]


def _forwards_to_dify(raw: dict[str, Any]) -> bool:
    dify = raw.get("dify")
    if not isinstance(dify, dict) or not dify.get("api_url"):
        return False
    return dify.get("passthrough", True) is not False


def _walk_secrets(node: Any) -> list[SecretStr]:
    if isinstance(node, SecretStr):
        return [node]
    if isinstance(node, BaseModel):
        return [s for name in type(node).model_fields for s in _walk_secrets(getattr(node, name))]
    if isinstance(node, list | tuple):
        return [s for item in node for s in _walk_secrets(item)]
    return []


_INTERPOLATION = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _resolve_references(node: Any, path: str, env: dict[str, str]) -> Any:
    if isinstance(node, dict):
        return {k: _resolve_references(v, f"{path}.{k}" if path else str(k), env) for k, v in node.items()}
    if isinstance(node, list):
        return [_resolve_references(v, f"{path}[{i}]", env) for i, v in enumerate(node)]
    if not isinstance(node, str):
        return node
    if node.startswith("os.environ/"):
        name = node.removeprefix("os.environ/")
        if name not in env:
            raise ConfigError(f"{path}: environment variable {name} is not set")
        return env[name]
    if node.startswith("file:"):
        file = Path(node.removeprefix("file:"))
        try:
            return file.read_text().strip()
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read {file}: {exc.strerror}") from None

    def interpolate(m: re.Match[str]) -> str:
        name, default = m.group(1), m.group(2)
        if name in env:
            return env[name]
        if default is not None:
            return default
        raise ConfigError(f"{path}: environment variable {name} is not set")

    return _INTERPOLATION.sub(interpolate, node)


def _format_validation_error(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors(include_input=False, include_url=False):
        loc = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err["loc"]).lstrip(".")
        lines.append(f"  {loc or '<top level>'}: {err['msg']}")
    return "\n".join(lines)


def parse_config(raw: Any, source: str, env: dict[str, str] | None = None) -> GatewayConfig:
    """Validate an already-loaded YAML document."""
    env = dict(os.environ) if env is None else env
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: the top level must be a mapping, not {type(raw).__name__}")
    try:
        resolved = _resolve_references(raw, "", env)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    resolved.pop("source", None)
    if "routes" not in resolved:
        resolved["routes"] = default_routes(_forwards_to_dify(resolved))
    try:
        config = GatewayConfig.model_validate({**resolved, "source": source})
    except ValidationError as exc:
        raise ConfigError(f"{source}: invalid configuration\n{_format_validation_error(exc)}") from None
    if config.dify.inner_api_key is None and env.get(INNER_API_KEY_ENV):
        dify = config.dify.model_copy(update={"inner_api_key": SecretStr(env[INNER_API_KEY_ENV])})
        config = config.model_copy(update={"dify": dify})
    return _console_from_env(config, env, source)


_SWITCH = {"1": True, "true": True, "yes": True, "on": True, "0": False, "false": False, "no": False, "off": False}


def _console_from_env(config: GatewayConfig, env: dict[str, str], source: str) -> GatewayConfig:
    """``$DIFY_GATEWAY_CONSOLE`` switches the console on or off; ``$DIFY_GATEWAY_ADMIN_KEY``
    is its key when the file sets none."""
    update: dict[str, Any] = {}
    raw = env.get(CONSOLE_ENV, "").strip().lower()
    if raw:
        if raw not in _SWITCH:
            raise ConfigError(f"{source}: {CONSOLE_ENV} must be 1 or 0 (true/false, yes/no, on/off), not {raw!r}")
        update["enabled"] = _SWITCH[raw]
    if config.console.admin_key is None and env.get(ADMIN_KEY_ENV, "").strip():
        update["admin_key"] = SecretStr(env[ADMIN_KEY_ENV].strip())
    if not update:
        return config
    return config.model_copy(update={"console": config.console.model_copy(update=update)})


def load_config(path: str | None = None, env: dict[str, str] | None = None) -> GatewayConfig:
    """Load the file at ``path`` (or ``$DIFY_GATEWAY_CONFIG``); embedded defaults without one."""
    env = dict(os.environ) if env is None else env
    path = path or env.get(CONFIG_ENV) or None
    if path is None:
        return parse_config({}, "<embedded defaults>", env)
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the configuration file: {exc.strerror}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{path}: not valid YAML{where}: {problem}") from None
    return parse_config(raw, path, env)
