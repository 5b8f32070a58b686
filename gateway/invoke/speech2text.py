"""``/invoke/speech2text``: hex-decode the upload, sniff its container, transcribe."""

from __future__ import annotations

from gateway.adapters.base import TranscriptionCall
from gateway.audio import MP3, audio_seconds, sniff_audio
from gateway.errors import BadRequest
from gateway.invoke.common import RoutedService, call_upstream, resolve, upstream_context
from gateway.protocol.requests import Speech2TextInvokeRequest
from gateway.protocol.results import TextResultDict
from gateway.routing import Target
from gateway.trace import current_trace


def decode_hex_audio(text: str) -> bytes:
    if not text:
        raise BadRequest("invalid payload: file is empty (expected the audio bytes as a hex string)")
    if len(text) % 2:
        raise BadRequest(f"invalid payload: file is not valid hex: odd length {len(text)}")
    try:
        return bytes.fromhex(text)
    except ValueError:
        raise BadRequest("invalid payload: file is not valid hex: it contains a non-hex character") from None


class Speech2TextService(RoutedService):
    async def transcribe(self, request: Speech2TextInvokeRequest) -> TextResultDict:
        resolution = resolve(self._routes, "speech2text", request.provider, request.model, request.tenant_id)
        # From the hex length: an oversized upload is refused without being decoded.
        self._limits.check(resolution, "speech2text_bytes", len(request.file) // 2, "file")
        audio = decode_hex_audio(request.file)
        context = upstream_context(resolution, request.provider, request.model)
        # Unrecognised containers go out named .mp3, as Dify names every upload.
        container = sniff_audio(audio) or MP3
        trace = current_trace.get()
        if trace is not None:
            trace.audio_seconds = audio_seconds(audio) or 0.0

        async def attempt(target: Target, timeout_s: float) -> str:
            call = TranscriptionCall(target, context, audio, container, timeout_s)
            return await self._backends.transcription(target).transcribe(call)

        text, _ = await call_upstream(self._resilience, resolution, context, attempt)
        return {"result": text}
