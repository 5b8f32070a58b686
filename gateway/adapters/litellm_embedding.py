"""Embeddings through ``litellm.aembedding``: text for every provider, images where litellm can.

What litellm 1.106.2 does per provider, checked against a recording upstream:

- ``input_type`` is not translated: keys it does not know are forwarded verbatim to most
  providers (OpenAI-compatible servers would see an unknown ``input_type``), so each
  provider's own field is set here: cohere / azure_ai / bedrock cohere ``input_type``,
  voyage ``input_type``, nvidia_nim ``input_type`` (query/passage), jina v3/v4 ``task``,
  gemini / vertex_ai ``task_type``.
- Images are recognised only as canonical ``data:`` URIs: jina_ai (any input, per item),
  bedrock titan-embed-image (per item), cohere (a whole request is images only when its
  *last* input is one, at most one image per request upstream, so each image goes alone),
  voyage multimodal models (content blocks; litellm strips the ``data:`` prefix from
  ``image_url`` blocks, which Voyage rejects, so ``image_base64`` blocks are sent instead).
- Float JSON through the OpenAI SDK costs ~4 us per number (2048 x 1536 floats: 11 s), so
  providers known to accept it are asked for base64 and decoded here (1.6 s).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import warnings
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from gateway.adapters.base import EmbeddingCall, EmbeddingOutput, EmbeddingVector, InputType, MediaInput
from gateway.adapters.litellm_common import (
    call_litellm,
    call_params,
    deadline_s,
    litellm_module,
    provider_prefix,
    target_kwargs,
)
from gateway.adapters.litellm_media import image_data_uri, looks_like_image_uri
from gateway.errors import BadRequest, UpstreamUnavailable
from gateway.routing import Target

ImageStyle = Literal["inline", "alone", "voyage"]

# Target params an embedding call takes (others are for completions).
PARAMS = frozenset(
    {
        "dimensions",
        "encoding_format",
        "user",
        "input_type",
        "task",
        "task_type",
        "embedding_types",
        "output_dimension",
        "output_dtype",
        "truncate",
        "normalized",
        "late_chunking",
    }
)
# Providers that take encoding_format="base64" (the rest get floats, or ignore the field).
_BASE64_PROVIDERS = frozenset({"openai", "hosted_vllm", "infinity", "voyage", "nvidia_nim"})
# Providers whose litellm code sniffs data: URIs in text inputs and sends them as images.
_SNIFFING_PROVIDERS = frozenset({"jina_ai", "cohere", "cohere_chat", "bedrock", "vertex_ai"})
# The OpenAI SDK model behind litellm warns (once per distinct vector) when an embedding
# holds base64 text instead of floats; the value is right, the warning is noise.
_SERIALIZER_WARNING = r"Pydantic serializer warnings:\s+PydanticSerializationUnexpectedValue\(Expected `list\[float\]`"


def input_type_kwargs(provider: str, model: str, input_type: InputType) -> dict[str, Any]:
    """The provider's own request field for query vs document embeddings (empty if none)."""
    query = input_type == "query"
    name = model.lower()
    if provider in ("cohere", "cohere_chat") or (provider == "bedrock" and "cohere.embed" in name):
        return {"input_type": "search_query" if query else "search_document"}
    if provider in ("voyage", "azure_ai"):
        return {"input_type": "query" if query else "document"}
    if provider == "nvidia_nim":
        return {"input_type": "query" if query else "passage"}
    if provider == "jina_ai" and ("jina-embeddings-v3" in name or "jina-embeddings-v4" in name):
        return {"task": "retrieval.query" if query else "retrieval.passage"}
    if provider in ("gemini", "vertex_ai"):
        return {"task_type": "RETRIEVAL_QUERY" if query else "RETRIEVAL_DOCUMENT"}
    return {}


def cohere_embed_url(api_base: str) -> str:
    """litellm posts Cohere embeddings to ``api_base`` itself; accept the host root too."""
    url = api_base.rstrip("/")
    if url.endswith("/embed"):
        return url
    for suffix in ("/v1", "/v2"):
        url = url.removesuffix(suffix)
    return f"{url}/v2/embed"


def image_style(provider: str, model: str) -> ImageStyle | None:
    """How a target takes image inputs through litellm, or None when it cannot."""
    name = model.lower()
    if provider == "jina_ai" or (provider == "bedrock" and "titan-embed-image" in name):
        return "inline"
    if provider == "cohere":
        return "alone"
    if provider == "voyage" and "multimodal" in name:
        return "voyage"
    return None


FLOAT32_LE = np.dtype("<f4")


def decode_vector(raw: Any) -> EmbeddingVector:
    """One embedding: a JSON list as it is, base64 of little-endian float32 as a float32 array
    (never turned into Python floats: the cache and the JSON writer take the array)."""
    if isinstance(raw, str):
        return np.frombuffer(base64.b64decode(raw, validate=True), dtype=FLOAT32_LE)
    if isinstance(raw, list) and (not raw or (isinstance(raw[0], int | float) and not isinstance(raw[0], bool))):
        return raw
    raise ValueError("an embedding that is neither a list of numbers nor base64")


def ordered_vectors(data: Any, count: int) -> list[EmbeddingVector]:
    """The vectors of a response's ``data`` in input order, by their ``index`` fields."""
    items = list(data or [])
    if len(items) != count:
        raise ValueError(f"{len(items)} vectors for {count} inputs")
    slots: list[EmbeddingVector | None] = [None] * count
    for position, item in enumerate(items):
        index = _field(item, "index")
        if index is None:
            index = position
        if not isinstance(index, int) or not 0 <= index < count or slots[index] is not None:
            raise ValueError("embedding indexes do not match the inputs")
        slots[index] = decode_vector(_field(item, "embedding"))
    return [v for v in slots if v is not None]


def reported_tokens(response: Any) -> int | None:
    usage = getattr(response, "usage", None)
    tokens = _field(usage, "prompt_tokens") or _field(usage, "total_tokens") if usage is not None else None
    return tokens if isinstance(tokens, int) and tokens > 0 else None


def _field(item: Any, name: str) -> Any:
    return item.get(name) if isinstance(item, dict) else getattr(item, name, None)


# Most inputs one upstream call may carry, by litellm provider prefix (documented limits).
BATCH_LIMITS: dict[str, int] = {
    "openai/": 2048,
    "azure/": 2048,
    "text-embedding-": 2048,  # bare OpenAI model names
    "cohere/": 96,
    "voyage/": 128,
    "gemini/": 100,
    "vertex_ai/": 250,
    "mistral/": 512,
    "jina_ai/": 2048,
}
DEFAULT_BATCH = 256


def provider_batch_limit(model: str) -> int:
    """The provider's documented limit of inputs per call for this model string."""
    for prefix, limit in BATCH_LIMITS.items():
        if model.startswith(prefix):
            return limit
    return DEFAULT_BATCH


@dataclass(slots=True)
class _Batch:
    positions: list[int] = field(default_factory=list)
    inputs: list[Any] = field(default_factory=list)
    images: bool = False


class LiteLLMEmbeddingAdapter:
    def max_batch(self, target: Target) -> int:
        return provider_batch_limit(target.model)

    async def embed(self, call: EmbeddingCall) -> EmbeddingOutput:
        if not call.inputs:
            return EmbeddingOutput(vectors=[], tokens=None)
        where = call.context.describe(call.target)
        model = call.target.model
        provider = provider_prefix(model)
        batches = self._batches(call.inputs, provider, model, where)
        kwargs = target_kwargs(call.target, call.timeout_s)
        timeout = deadline_s(call.target, call.timeout_s)
        if provider in _BASE64_PROVIDERS:
            kwargs["encoding_format"] = "base64"
        elif provider in ("cohere", "cohere_chat"):
            kwargs["encoding_format"] = "float"  # -> embedding_types ["float"], which Cohere v2 wants
            if "api_base" in kwargs:
                kwargs["api_base"] = cohere_embed_url(kwargs["api_base"])
        kwargs.update(call_params(call.target, PARAMS))
        secret = kwargs.get("api_key")
        litellm = await litellm_module()

        async def one(batch: _Batch) -> tuple[list[EmbeddingVector], int | None]:
            batch_kwargs = dict(kwargs)
            if not batch.images:
                batch_kwargs = {**input_type_kwargs(provider, model, call.input_type), **batch_kwargs}
            if batch_kwargs.get("encoding_format") == "base64":
                warnings.filterwarnings("ignore", message=_SERIALIZER_WARNING, category=UserWarning)
            response = await call_litellm(
                lambda: litellm.aembedding(input=batch.inputs, **batch_kwargs), timeout, where, secret
            )
            try:
                vectors = ordered_vectors(getattr(response, "data", None), len(batch.inputs))
            except (ValueError, binascii.Error) as exc:
                raise UpstreamUnavailable(f"malformed reply from upstream ({where}): {exc}") from exc
            # For images Cohere bills a count of images, which litellm reports as tokens.
            return vectors, None if batch.images else reported_tokens(response)

        results = await asyncio.gather(*(one(b) for b in batches)) if len(batches) > 1 else [await one(batches[0])]
        vectors: list[EmbeddingVector] = [[] for _ in call.inputs]
        counts: list[int] = []
        for batch, (batch_vectors, tokens) in zip(batches, results, strict=True):
            for position, vector in zip(batch.positions, batch_vectors, strict=True):
                vectors[position] = vector
            if tokens is not None:
                counts.append(tokens)
        return EmbeddingOutput(vectors=vectors, tokens=sum(counts) if counts else None)

    @staticmethod
    def _batches(inputs: list[MediaInput], provider: str, model: str, where: str) -> list[_Batch]:
        """The litellm requests for ``inputs``: usually one; cohere gets one per image."""
        style = image_style(provider, model)
        texts = _Batch()
        batches: list[_Batch] = []
        for position, item in enumerate(inputs):
            if item.kind == "text":
                if provider in _SNIFFING_PROVIDERS and looks_like_image_uri(item.content):
                    raise BadRequest(
                        f"text input {position} is a base64 data: URI, which target {model!r} "
                        f"would embed as an image ({where})"
                    )
                texts.positions.append(position)
                texts.inputs.append(item.content)
                continue
            if item.kind != "image":
                raise BadRequest(f"target {model!r} cannot embed {item.kind} inputs ({where})")
            if style is None:
                raise BadRequest(f"target {model!r} cannot embed images ({where})")
            try:
                uri = image_data_uri(item.content)
            except ValueError as exc:
                raise BadRequest(f"image input {position}: {exc} ({where})") from exc
            if style == "alone":
                batches.append(_Batch([position], [uri], images=True))
            elif style == "voyage":
                texts.positions.append(position)
                texts.inputs.append({"content": [{"type": "image_base64", "image_base64": uri}]})
            else:
                texts.positions.append(position)
                texts.inputs.append(uri)
        if texts.positions:
            batches.insert(0, texts)
        return batches
