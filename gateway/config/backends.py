"""Backend kinds: which client serves a target, for each model type, decided once at load time.

A closed set of kinds:

- ``litellm``  litellm, whose provider prefix picks the upstream (every model type);
- ``openai``   the native OpenAI-compatible client (llm, text and multimodal embeddings); chat in
  completion mode still goes through litellm;
- ``tei``      Hugging Face text-embeddings-inference over HTTP (embeddings, rerank);
- ``rerank``   the native Cohere-shaped rerank client (cohere, hosted_vllm, xinference); image
  documents still go through litellm;
- ``local``    the embedded models (every type but llm).

A target's ``backend:`` sets its kind, and the kind alone decides every model type. Without it the
kind is derived from the model prefix and ``native`` (old files keep their behaviour): ``local/``,
``tei/``; else chat and embeddings go native for ``openai/`` and ``hosted_vllm/`` (no
``api_version`` nor ``litellm_params``; ``native`` forces either way), rerank goes native for
``cohere/`` with an ``api_key`` and ``hosted_vllm/``/``xinference/`` with an ``api_base`` (no
``litellm_params``; ``native: false`` keeps it on litellm), everything else is litellm. A derived
target may thus be served by two clients, e.g. ``hosted_vllm/`` chat natively and tts by litellm.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Literal, get_args
from urllib.parse import urlsplit

from gateway.catalog import LOCAL_MODELS, LOCAL_PREFIX
from gateway.config.litellm_providers import OPENAI_COMPATIBLE_HOSTS, PROVIDERS

if TYPE_CHECKING:
    from gateway.config import TargetConfig

BackendKind = Literal["litellm", "openai", "tei", "rerank", "local"]
BACKEND_KINDS: tuple[BackendKind, ...] = get_args(BackendKind)

TEI_PREFIX = "tei/"
# litellm provider prefixes whose chat and embeddings APIs are OpenAI's own.
NATIVE_OPENAI_PREFIXES = ("openai/", "hosted_vllm/")
NATIVE_RERANK_PROVIDERS = frozenset({"cohere", "hosted_vllm", "xinference"})

_ALL_TYPES = frozenset({"llm", *LOCAL_MODELS})
_EMBEDDING = frozenset({"text-embedding", "multimodal-embedding"})
_RERANK = frozenset({"rerank", "multimodal-rerank"})

# The model types each kind's client can serve.
KIND_TYPES: Mapping[BackendKind, frozenset[str]] = MappingProxyType(
    {
        "litellm": _ALL_TYPES,
        "openai": frozenset({"llm"}) | _EMBEDDING,
        "tei": _EMBEDDING | _RERANK,
        "rerank": _RERANK,
        "local": frozenset(LOCAL_MODELS),
    }
)


@dataclass(frozen=True, slots=True)
class Backend:
    """What serves one target: its kind and, per model type, the client that serves it (a type
    missing from ``clients`` cannot be served by this target)."""

    kind: BackendKind
    clients: Mapping[str, BackendKind]
    # Model types whose calls may go through litellm (so it must be imported).
    litellm_types: frozenset[str]

    def client(self, model_type: str) -> BackendKind | None:
        return self.clients.get(model_type)

    def uses_litellm(self, model_types: Iterable[str] = ("llm",)) -> bool:
        return any(t in self.litellm_types for t in model_types)


def provider_prefix(model: str) -> str:
    """litellm's provider prefix of a model string ("cohere" for "cohere/rerank-v3.5")."""
    return model.split("/", 1)[0].lower() if "/" in model else ""


def native_openai(target: TargetConfig, model: str) -> bool:
    """Whether the native OpenAI-compatible client serves chat and embeddings (derived kinds)."""
    if target.native is not None:
        return bool(target.native)
    if not model.startswith(NATIVE_OPENAI_PREFIXES):
        return False
    return not target.litellm_params and not target.api_version  # litellm-only settings keep litellm


def native_rerank(target: TargetConfig, model: str) -> bool:
    """Whether the native rerank client serves rerank (derived kinds)."""
    if target.native is False or target.litellm_params:
        return False
    provider = provider_prefix(model)
    if provider not in NATIVE_RERANK_PROVIDERS:
        return False
    if provider == "cohere":
        return target.api_key is not None  # without one litellm reads COHERE_API_KEY
    return bool(target.api_base)


def resolve_backend(target: TargetConfig, model: str) -> Backend:
    """The backend of a ``TargetConfig`` whose model string (placeholders filled in) is ``model``."""
    kind: BackendKind | None = target.backend
    if kind is not None:
        clients: dict[str, BackendKind] = dict.fromkeys(KIND_TYPES[kind], kind)
    elif model.startswith(LOCAL_PREFIX):
        kind, clients = "local", dict.fromkeys(KIND_TYPES["local"], "local")
    elif model.startswith(TEI_PREFIX):
        kind, clients = "tei", dict.fromkeys(KIND_TYPES["tei"], "tei")
    else:
        openai, rerank = native_openai(target, model), native_rerank(target, model)
        kind = "openai" if openai else "rerank" if rerank else "litellm"
        clients = dict.fromkeys(_ALL_TYPES, "litellm")
        if openai:
            clients.update(dict.fromkeys(KIND_TYPES["openai"], "openai"))
        if rerank:
            clients.update(dict.fromkeys(_RERANK, "rerank"))
    litellm = {t for t, c in clients.items() if c == "litellm"}
    if clients.get("llm") == "openai" and target.mode == "completion":
        litellm.add("llm")  # the native client hands completion mode to litellm
    if clients.get("multimodal-rerank") == "rerank":
        litellm.add("multimodal-rerank")  # image documents go through litellm
    return Backend(kind=kind, clients=MappingProxyType(clients), litellm_types=frozenset(litellm))


def backend_problem(target: TargetConfig, model: str, model_type: str) -> str | None:
    """Why ``target`` cannot serve ``model_type`` (None: it can). For a model string with
    placeholders only what is known before the request is checked."""
    backend = resolve_backend(target, model)
    client = backend.client(model_type)
    if client is None:
        served = ", ".join(sorted(KIND_TYPES[backend.kind]))
        return f"backend {backend.kind} cannot serve {model_type} (it serves {served})"
    if client == "tei" and not target.api_base:
        return "backend tei needs api_base (the server's URL)"
    if client == "openai" and target.backend == "openai" and not target.api_base and not model.startswith("openai/"):
        return "backend openai needs api_base for a model without the openai/ prefix"
    if client == "rerank" and not target.api_base and provider_prefix(model) != "cohere":
        return "the native rerank client needs api_base for a provider other than cohere"
    if model_type in backend.litellm_types:
        return _litellm_problem(target, model)
    return None


def _litellm_problem(target: TargetConfig, model: str) -> str | None:
    """An unknown provider prefix, found now instead of at the first call."""
    declared = target.litellm_params.get("custom_llm_provider")
    if isinstance(declared, str):
        return None if declared in PROVIDERS else f"litellm does not know the provider {declared!r}"
    if "/" not in model:
        return None  # litellm picks the provider from the model name
    prefix = model.split("/", 1)[0]
    if "{" in prefix or prefix in PROVIDERS:
        return None
    if target.api_base and (urlsplit(_with_scheme(target.api_base)).hostname or "") in OPENAI_COMPATIBLE_HOSTS:
        return None  # litellm infers the provider from a known OpenAI-compatible address
    return f"litellm does not know the provider prefix {prefix!r} (see https://docs.litellm.ai/docs/providers)"


def _with_scheme(url: str) -> str:
    return url if "://" in url else f"https://{url}"
