"""Speech to text through ``litellm.atranscription`` (OpenAI-compatible whisper servers,
Azure, Groq, Deepgram, ... as litellm supports them).

The audio goes up as ``(filename, bytes, mime)`` so the multipart part carries a file name
with the right extension: servers pick the decoder from it. For ``openai/`` targets litellm
drops the configured headers, so those calls get a client of their own (``litellm_clients``).
"""

from __future__ import annotations

from gateway.adapters.base import TranscriptionCall
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

# Target params a transcription call takes (others are for completions).
PARAMS = frozenset({"language", "prompt", "temperature", "response_format", "timestamp_granularities"})


class LiteLLMTranscriptionAdapter:
    def __init__(self, clients: OpenAIClients | None = None) -> None:
        self._clients = clients or OpenAIClients()

    async def aclose(self) -> None:
        await self._clients.aclose()

    async def transcribe(self, call: TranscriptionCall) -> str:
        where = call.context.describe(call.target)
        timeout = deadline_s(call.target, call.timeout_s)
        kwargs = target_kwargs(call.target, timeout)
        kwargs.update(call_params(call.target, PARAMS))
        upload = (f"audio.{call.format.extension}", call.audio, call.format.mime_type)
        litellm = await litellm_module()
        if provider_prefix(call.target.model) == "openai":
            kwargs["client"] = self._clients.get(kwargs)
        response = await call_litellm(
            lambda: litellm.atranscription(file=upload, **kwargs), timeout, where, kwargs.get("api_key")
        )
        text = getattr(response, "text", None)
        if not isinstance(text, str):
            raise UpstreamUnavailable(f"malformed reply from upstream ({where}): no transcript text")
        return text
