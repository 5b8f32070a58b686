"""Text to speech through ``litellm.aspeech`` (OpenAI and OpenAI-compatible servers, Azure,
ElevenLabs, Vertex/Gemini, MiniMax, ... as litellm supports them).

For ``openai/`` targets litellm drops the configured headers, so those calls get a client
of their own (see ``litellm_clients``).
"""

from __future__ import annotations

from gateway.adapters.base import SpeechCall, SpeechOutput
from gateway.adapters.litellm_clients import OpenAIClients
from gateway.adapters.litellm_common import (
    call_litellm,
    call_params,
    deadline_s,
    litellm_module,
    provider_prefix,
    target_kwargs,
)
from gateway.errors import UpstreamUnavailable

PARAMS = frozenset({"response_format", "speed", "instructions"})  # target params a speech call takes
DEFAULT_FORMAT = "mp3"  # pieces of a long text are concatenated: MP3 frames survive that

# OpenAI's response_format values (and a few other vendors') -> MIME type.
MIME_TYPES: dict[str, str] = {
    "mp3": "audio/mpeg",
    "opus": "audio/ogg",
    "ogg": "audio/ogg",
    "aac": "audio/aac",
    "flac": "audio/flac",
    "wav": "audio/wav",
    "pcm": "audio/pcm",
}


def mime_type(response_format: str, content_type: str | None) -> str:
    """The MIME type of audio in ``response_format``; the upstream's own word if it is unknown."""
    known = MIME_TYPES.get(response_format.lower())
    if known:
        return known
    if content_type and content_type.startswith("audio/"):
        return content_type.split(";", 1)[0].strip()
    return "application/octet-stream"


class LiteLLMSpeechAdapter:
    def __init__(self, clients: OpenAIClients | None = None) -> None:
        self._clients = clients or OpenAIClients()

    async def aclose(self) -> None:
        await self._clients.aclose()

    async def speak(self, call: SpeechCall) -> SpeechOutput:
        where = call.context.describe(call.target)
        timeout = deadline_s(call.target, call.timeout_s)
        kwargs = target_kwargs(call.target, timeout)
        kwargs["response_format"] = DEFAULT_FORMAT
        kwargs.update(call_params(call.target, PARAMS))
        litellm = await litellm_module()
        if provider_prefix(call.target.model) == "openai":
            kwargs["client"] = self._clients.get(kwargs)
        response = await call_litellm(
            lambda: litellm.aspeech(input=call.text, voice=call.voice, **kwargs), timeout, where, kwargs.get("api_key")
        )
        audio = getattr(response, "content", None)
        if not isinstance(audio, bytes) or not audio:
            raise UpstreamUnavailable(f"upstream sent no audio ({where})")
        raw = getattr(response, "response", None)
        content_type = raw.headers.get("content-type") if raw is not None else None
        return SpeechOutput(audio=audio, mime_type=mime_type(str(kwargs["response_format"]), content_type))
