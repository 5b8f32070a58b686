"""Request bodies the plugin daemon sends to ``/inner/api/invoke/*`` (spec section 3).

Validation only: no conversion to provider formats happens here. Inbound models ignore
unknown keys, because the daemon adds ``type`` and future daemons may add more.

Numbers and booleans are strict: the daemon (Go) always sends JSON numbers and booleans of
the right kind, and pydantic's lax mode would read ``true`` as ``1`` and ``"1"`` as ``True``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, field_validator


class _Inbound(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


# Rerank limits: 0 and null both mean "unset" (the daemon sends 0 when the plugin left them
# out; Dify's own models default them to None), a negative count or a boolean is refused.
TopN = Annotated[int, Field(strict=True, ge=0)] | None
ScoreThreshold = Annotated[float, Field(strict=True, allow_inf_nan=False)] | None


class InvokeRequest(_Inbound):
    """Fields every invocation carries; the daemon fills them from its session."""

    tenant_id: str = Field(min_length=1)
    user_id: str | None = ""


class ModelInvokeRequest(InvokeRequest):
    provider: str = Field(min_length=1)
    model: str = Field(min_length=1)


# --- LLM ---------------------------------------------------------------------------------

ContentType = Literal["text", "image", "audio", "video", "document"]


class ContentItem(_Inbound):
    """One multimodal content item, passed by the daemon as the SDK sent it (spec 3.1.1)."""

    type: ContentType
    data: str | None = None  # text, or (older SDKs) a URL / data URI
    base64_data: str | None = None
    url: str | None = None
    mime_type: str | None = None
    format: str | None = None
    filename: str | None = None
    detail: str | None = None
    encode_format: str | None = None


class ToolCallFunction(_Inbound):
    name: str
    arguments: str = ""


class ToolCall(_Inbound):
    id: str
    type: str = "function"
    function: ToolCallFunction


class PromptMessage(_Inbound):
    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: str | list[ContentItem] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None


class ToolDefinition(_Inbound):
    name: str = Field(min_length=1)
    description: str | None = ""
    parameters: dict[str, Any] | None = None


class ToolChoice(_Inbound):
    mode: Literal["auto", "none", "required", "tool"]
    name: str | None = None


class LLMInvokeRequest(ModelInvokeRequest):
    mode: Literal["chat", "completion"]
    completion_params: dict[str, Any] = Field(default_factory=dict)
    prompt_messages: list[PromptMessage] = Field(default_factory=list)
    tools: list[ToolDefinition] = Field(default_factory=list)
    tool_choice: ToolChoice | None = None
    stop: list[str] = Field(default_factory=list)
    stream: StrictBool = False

    # The daemon sends null for absent optional collections.
    @field_validator("completion_params", "prompt_messages", "tools", "stop", mode="before")
    @classmethod
    def _null_is_empty(cls, value: Any, info: Any) -> Any:
        if value is None:
            return {} if info.field_name == "completion_params" else []
        return value


class StructuredOutputInvokeRequest(LLMInvokeRequest):
    structured_output_schema: dict[str, Any]


# --- other model types ------------------------------------------------------------------


class TextEmbeddingInvokeRequest(ModelInvokeRequest):
    texts: list[str]
    input_type: Literal["document", "query"] = "document"


class MultimodalDocument(_Inbound):
    content: str = Field(min_length=1)
    content_type: Literal["text", "image", "audio", "video", "document"]


class MultimodalEmbeddingInvokeRequest(ModelInvokeRequest):
    documents: list[MultimodalDocument]
    input_type: Literal["document", "query"] = "document"


class RerankInvokeRequest(ModelInvokeRequest):
    query: str = Field(min_length=1)
    docs: list[str]
    score_threshold: ScoreThreshold = 0.0
    top_n: TopN = 0


class MultimodalRerankInvokeRequest(ModelInvokeRequest):
    query: MultimodalDocument
    docs: list[MultimodalDocument]
    score_threshold: ScoreThreshold = 0.0
    top_n: TopN = 0


class TTSInvokeRequest(ModelInvokeRequest):
    content_text: str = Field(min_length=1)
    voice: str = ""


class Speech2TextInvokeRequest(ModelInvokeRequest):
    file: str  # lower-case hex of the raw audio bytes


class ModerationInvokeRequest(ModelInvokeRequest):
    text: str = Field(min_length=1)


class SummaryInvokeRequest(InvokeRequest):
    text: str
    instruction: str = ""
