"""Result entities the gateway puts in ``data`` (spec section 4).

TypedDicts rather than models: results are built on the hot path (one per stream chunk),
so they stay plain dicts that orjson serialises directly. The daemon's rules that these
shapes encode (violations drop the frame silently):

- ``model`` non-empty; ``delta.index`` an int; ``message.role`` one of
  system/user/assistant/tool; ``message.content`` never null; ``tool_calls`` always a list
  of complete calls with ``arguments`` as a string;
- usage carries every required key (``prompt_tokens``, ``completion_tokens``,
  ``total_tokens``, ``currency``, ``latency``); decimals are numeric strings.
"""

from __future__ import annotations

from typing import Any, Literal, TypedDict


class ToolCallFunctionDict(TypedDict):
    name: str
    arguments: str


class ToolCallDict(TypedDict):
    id: str
    type: Literal["function"]
    function: ToolCallFunctionDict


class AssistantMessageDict(TypedDict):
    role: Literal["assistant"]
    content: str
    name: None
    tool_calls: list[ToolCallDict]


class LLMUsageDict(TypedDict):
    prompt_tokens: int
    prompt_unit_price: str
    prompt_price_unit: str
    prompt_price: str
    completion_tokens: int
    completion_unit_price: str
    completion_price_unit: str
    completion_price: str
    total_tokens: int
    total_price: str
    currency: str
    latency: float


class LLMDeltaDict(TypedDict):
    index: int
    message: AssistantMessageDict
    usage: LLMUsageDict | None
    finish_reason: str | None


class LLMResultChunkDict(TypedDict):
    model: str
    prompt_messages: list[Any]
    system_fingerprint: str | None
    delta: LLMDeltaDict


class LLMStructuredChunkDict(LLMResultChunkDict):
    structured_output: dict[str, Any] | None


# One chunk of an LLM reply: the structured-output path adds ``structured_output``.
LLMChunk = LLMResultChunkDict | LLMStructuredChunkDict


class EmbeddingUsageDict(TypedDict):
    tokens: int
    total_tokens: int
    unit_price: str
    price_unit: str
    total_price: str
    currency: str
    latency: float


class EmbeddingResultDict(TypedDict):
    model: str
    embeddings: list[Any]  # one vector per input: lists of floats, or float32 numpy arrays
    usage: EmbeddingUsageDict


class RerankDocDict(TypedDict):
    index: int
    text: str
    score: float


class RerankResultDict(TypedDict):
    model: str
    docs: list[RerankDocDict]


class TTSChunkDict(TypedDict):
    result: str  # lower-case hex of the audio bytes
    mime_type: str


class TextResultDict(TypedDict):
    result: str


class ModerationResultDict(TypedDict):
    result: bool


class SummaryResultDict(TypedDict):
    summary: str
