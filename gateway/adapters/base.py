"""The per-capability adapter interfaces and the neutral types they exchange.

Chat requests are expressed in the OpenAI chat format, the common language of litellm and
of OpenAI-compatible servers, so a native client can replace litellm for such upstreams
without touching the handlers. Adapters translate foreign exceptions into
``gateway.errors.UpstreamError`` subclasses at their own boundary.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeAlias

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from gateway.routing import Target

# One embedding: float32 arrays from base64 replies and the embedded model (they go to the
# cache and into JSON without becoming Python floats), plain lists from JSON replies.
EmbeddingVector: TypeAlias = list[float] | npt.NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class UpstreamContext:
    """Who is calling, for error messages and logs (never secrets or prompt text)."""

    route: str
    provider: str
    model: str

    def describe(self, target: Target) -> str:
        return f"route {self.route!r}, provider {self.provider!r}, model {self.model!r} -> {target.label!r}"


@dataclass(slots=True)
class ChatCall:
    """One chat (or legacy completion) request for a backend."""

    target: Target
    context: UpstreamContext
    messages: list[dict[str, Any]]
    stream: bool
    # OpenAI-named parameters (temperature, max_tokens, response_format, ...).
    params: dict[str, Any] = field(default_factory=dict)
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    stop: list[str] | None = None
    # Set for "completion" mode: the prompt for a /completions-style call.
    prompt: str | None = None
    timeout_s: float = 230.0
    connect_timeout_s: float | None = None


@dataclass(slots=True)
class ToolCallDelta:
    """A piece of a tool call as providers stream it; assembled by the caller."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str | None = None


@dataclass(slots=True)
class TokenUsage:
    prompt_tokens: int
    completion_tokens: int


@dataclass(slots=True)
class ChatEvent:
    """One upstream delta (or, for non-streaming calls, the whole answer)."""

    text: str = ""
    tool_calls: list[ToolCallDelta] | None = None
    finish_reason: str | None = None
    usage: TokenUsage | None = None
    model: str | None = None
    system_fingerprint: str | None = None


class ChatAdapter(Protocol):
    def chat(self, call: ChatCall) -> AsyncIterator[ChatEvent]:
        """Stream the answer as events; a non-streaming call yields exactly one event.

        Raises ``UpstreamError`` (before or during iteration) for backend failures.
        """
        ...


# --- embeddings and rerank -----------------------------------------------------------------

InputType = Literal["query", "document"]


@dataclass(frozen=True, slots=True)
class MediaInput:
    """One text or file input (multimodal embedding and rerank); files are base64 text."""

    kind: Literal["text", "image", "audio", "video", "document"]
    content: str

    @classmethod
    def text(cls, content: str) -> MediaInput:
        return cls("text", content)


@dataclass(slots=True)
class EmbeddingCall:
    """At most one provider batch: the caller splits large requests."""

    target: Target
    context: UpstreamContext
    inputs: list[MediaInput]
    input_type: InputType
    timeout_s: float = 230.0


@dataclass(slots=True)
class EmbeddingOutput:
    vectors: list[EmbeddingVector]  # one per input, in input order
    tokens: int | None  # as the backend reported them; None when it did not say


class EmbeddingAdapter(Protocol):
    async def embed(self, call: EmbeddingCall) -> EmbeddingOutput:
        """Raises ``UpstreamError`` for backend failures, ``BadRequest`` for inputs it cannot embed."""
        ...

    def max_batch(self, target: Target) -> int:
        """The most inputs one call should carry for ``target`` (its ``max_batch_size`` overrides it)."""
        ...


@dataclass(slots=True)
class RerankCall:
    target: Target
    context: UpstreamContext
    query: MediaInput
    docs: list[MediaInput]
    top_n: int | None  # a hint the backend may use; the caller still sorts and cuts
    timeout_s: float = 230.0


@dataclass(frozen=True, slots=True)
class ScoredDoc:
    index: int  # position in ``RerankCall.docs``
    score: float


@dataclass(slots=True)
class RerankOutput:
    scores: list[ScoredDoc]  # any order; docs the backend left out are simply absent
    tokens: int | None = None


class RerankAdapter(Protocol):
    async def rerank(self, call: RerankCall) -> RerankOutput: ...


# --- audio ---------------------------------------------------------------------------------


@dataclass(slots=True)
class SpeechCall:
    """Synthesise one piece of text (the caller splits long text at sentence boundaries)."""

    target: Target
    context: UpstreamContext
    text: str
    voice: str
    timeout_s: float = 230.0


@dataclass(slots=True)
class SpeechOutput:
    audio: bytes  # a self-contained file (pieces are concatenated, so MP3 is preferred)
    mime_type: str


class SpeechAdapter(Protocol):
    async def speak(self, call: SpeechCall) -> SpeechOutput: ...


@dataclass(frozen=True, slots=True)
class AudioFormat:
    extension: str  # "mp3", "wav", "ogg", "flac", "webm", "m4a"
    mime_type: str


@dataclass(slots=True)
class TranscriptionCall:
    target: Target
    context: UpstreamContext
    audio: bytes
    format: AudioFormat
    timeout_s: float = 230.0


class TranscriptionAdapter(Protocol):
    async def transcribe(self, call: TranscriptionCall) -> str:
        """The transcript; ``BadRequest`` when the audio cannot be decoded."""
        ...


# --- moderation ----------------------------------------------------------------------------


@dataclass(slots=True)
class ModerationCall:
    target: Target
    context: UpstreamContext
    text: str
    timeout_s: float = 230.0


@dataclass(slots=True)
class ModerationOutput:
    flagged: bool
    categories: list[str] = field(default_factory=list)  # names of the flagged categories


class ModerationAdapter(Protocol):
    async def moderate(self, call: ModerationCall) -> ModerationOutput: ...
