"""Route table: which backend targets serve a (type, provider, model, tenant).

Routes are tried in file order; the first match wins. Providers are compared in Dify's
full form: a short ``openai`` means ``langgenius/openai/openai`` (and ``google`` means
``langgenius/gemini/google``, as Dify expands it). A provider pattern with glob characters
and no ``/`` is matched against the provider's last segment. Model patterns are globs.
Resolution is pure (no I/O) and cached, so the hot path does one dict lookup.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from gateway.config import RouteConfig, TargetConfig
from gateway.config.backends import Backend, resolve_backend

_GLOB_CHARS = frozenset("*?[")
_CACHE_LIMIT = 4096


def normalize_provider(provider: str) -> str:
    """Dify's full provider id for a short or full one."""
    provider = provider.strip()
    if "/" in provider:
        return provider
    plugin = "gemini" if provider == "google" else provider
    return f"langgenius/{plugin}/{provider}"


def short_provider(provider: str) -> str:
    return provider.rsplit("/", 1)[-1]


@dataclass(frozen=True, slots=True)
class Target:
    """A route target with ``{model}``/``{provider}`` filled in for one request."""

    config: TargetConfig
    model: str  # the backend model string (litellm form, e.g. "openai/gpt-4o-mini")
    # One backend's identity for its health (breaker, in-flight, rate hints): the same model
    # at the same address is one backend, whichever routes use it. No credentials in it.
    key: str = field(default="", compare=False)
    fallback: bool = False
    # Resolved once here (targets are built when a route resolves, and cached), never per call.
    backend: Backend = field(init=False, compare=False)
    # Served by an embedded model.
    local: bool = field(default=False, init=False, compare=False)

    def __post_init__(self) -> None:
        if not self.key:
            object.__setattr__(self, "key", target_key(self.config, self.model))
        object.__setattr__(self, "backend", resolve_backend(self.config, self.model))
        object.__setattr__(self, "local", self.backend.kind == "local")

    def uses_litellm(self, model_types: Iterable[str] = ("llm",)) -> bool:
        """Whether serving these model types may need litellm (it is imported only if so)."""
        return self.backend.uses_litellm(model_types)

    @property
    def label(self) -> str:
        return self.model

    @property
    def model_name(self) -> str:
        """The model without litellm's provider prefix ("gpt-4o-mini" for "openai/gpt-4o-mini")."""
        return self.model.split("/", 1)[1] if "/" in self.model else self.model


def target_key(config: TargetConfig, model: str) -> str:
    if not config.api_base:
        return model
    parts = urlsplit(config.api_base)
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:  # not a number: keep the address readable, the call will fail clearly
        port = ""
    address = f"{parts.scheme}://{parts.hostname or ''}{port}{parts.path.rstrip('/')}"
    return f"{model}@{address}"


@dataclass(frozen=True, slots=True)
class Resolution:
    route: RouteConfig
    route_label: str
    targets: tuple[Target, ...]
    fallbacks: tuple[Target, ...] = ()


class _CompiledRoute:
    def __init__(self, index: int, route: RouteConfig) -> None:
        self.route = route
        self.types = frozenset(route.match.types)
        self.tenants = frozenset(route.match.tenants) if route.match.tenants else None
        self.label = route.name or f"{index}:{'|'.join(route.match.types)}:{route.match.provider}/{route.match.model}"
        self._provider = self._compile_provider(route.match.provider)
        self._model = re.compile(fnmatch.translate(route.match.model))

    @staticmethod
    def _compile_provider(pattern: str) -> tuple[bool, re.Pattern[str]]:
        """(match against the short name?, compiled pattern)."""
        if "/" not in pattern and _GLOB_CHARS & set(pattern):
            return True, re.compile(fnmatch.translate(pattern))
        return False, re.compile(fnmatch.translate(normalize_provider(pattern)))

    def matches(self, model_type: str, provider: str, model: str, tenant: str) -> bool:
        if model_type not in self.types:
            return False
        if self.tenants is not None and tenant not in self.tenants:
            return False
        short, pattern = self._provider
        if not pattern.match(short_provider(provider) if short else provider):
            return False
        return self._model.match(model) is not None


class RouteTable:
    def __init__(self, routes: list[RouteConfig]) -> None:
        self._routes = [_CompiledRoute(i, r) for i, r in enumerate(routes)]
        self._cache: dict[tuple[str, str, str, str], Resolution | None] = {}
        # Tenant ids stay out of the cache key unless some route matches on them.
        self._uses_tenants = any(c.tenants is not None for c in self._routes)

    def resolve(self, model_type: str, provider: str, model: str, tenant: str = "") -> Resolution | None:
        if not self._uses_tenants:
            tenant = ""
        key = (model_type, provider, model, tenant)
        try:
            return self._cache[key]
        except KeyError:
            pass
        resolution = self._resolve(model_type, normalize_provider(provider), model, tenant)
        if len(self._cache) >= _CACHE_LIMIT:
            self._cache.clear()  # unbounded model names must not grow memory
        self._cache[key] = resolution
        return resolution

    def _resolve(self, model_type: str, provider: str, model: str, tenant: str) -> Resolution | None:
        for compiled in self._routes:
            if compiled.matches(model_type, provider, model, tenant):
                route = compiled.route
                targets = tuple(Target(config=t, model=render_model(t.model, provider, model)) for t in route.targets)
                fallbacks = tuple(
                    Target(config=t, model=render_model(t.model, provider, model), fallback=True)
                    for t in route.fallbacks
                )
                return Resolution(route=route, route_label=compiled.label, targets=targets, fallbacks=fallbacks)
        return None

    def describe(self) -> list[dict[str, object]]:
        """The table without secrets, for check-config and status pages."""
        rows: list[dict[str, object]] = []
        for compiled in self._routes:
            m = compiled.route.match
            rows.append(
                {
                    "route": compiled.label,
                    "types": list(m.types),
                    "provider": m.provider,
                    "model": m.model,
                    "tenants": list(m.tenants) if m.tenants else None,
                    "targets": [describe_target(t) for t in compiled.route.targets],
                    "fallbacks": [describe_target(t) for t in compiled.route.fallbacks],
                    "balancing": compiled.route.balancing,
                    "retries": compiled.route.retries,
                    "max_attempts": compiled.route.attempt_budget,
                    "timeouts": compiled.route.timeouts.model_dump(),
                }
            )
        return rows


def render_model(template: str, provider: str, model: str) -> str:
    return template.replace("{model}", model).replace("{provider}", short_provider(provider))


def describe_target(target: TargetConfig) -> dict[str, object]:
    info: dict[str, object] = {"model": target.model, "weight": target.weight}
    if target.api_base:
        info["api_base"] = target_key(target, "").removeprefix("@")  # without credentials in the URL
    info["api_key"] = "<set>" if target.api_key else None
    return info
