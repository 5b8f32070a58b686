"""``/invoke/tts``: a framed stream of hex audio, first audio before the whole text is done.

The text is split at sentence boundaries; a few pieces are synthesised ahead, concurrently,
and their audio is framed strictly in text order. So the first frame goes out as soon as
the first (short) piece is ready, and a long text takes about its longest piece times the
number of pieces divided by the lookahead, well inside the daemon's 240 s read deadline.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator

from gateway.adapters.base import SpeechAdapter, SpeechCall, SpeechOutput
from gateway.adapters.registry import Backends
from gateway.errors import BadRequest, UpstreamUnavailable
from gateway.invoke.common import resolve, timeout_for, upstream_context, within
from gateway.invoke.text_split import speech_pieces
from gateway.protocol.envelope import data_frame
from gateway.protocol.requests import TTSInvokeRequest
from gateway.routing import RouteTable

# Audio bytes per frame: large enough to keep the frame count low (the daemon's queue is
# bounded), small enough that a player can start early.
FRAME_AUDIO_BYTES = 32 * 1024
LOOKAHEAD = 3


def audio_frames(output: SpeechOutput) -> list[bytes]:
    audio = output.audio
    return [
        data_frame({"result": audio[i : i + FRAME_AUDIO_BYTES].hex(), "mime_type": output.mime_type})
        for i in range(0, len(audio), FRAME_AUDIO_BYTES)
    ]


class TTSService:
    def __init__(self, routes: RouteTable, backends: Backends) -> None:
        self._routes = routes
        self._backends = backends

    def frames(self, request: TTSInvokeRequest) -> AsyncIterator[bytes]:
        """Resolve now (so routing errors come before the stream), synthesise lazily."""
        resolution = resolve(self._routes, "tts", request.provider, request.model, request.tenant_id)
        pieces = speech_pieces(request.content_text)
        if not pieces:
            raise BadRequest("invalid payload: content_text has nothing to speak")
        target = resolution.pick()
        context = upstream_context(resolution, request.provider, request.model)
        timeout_s = timeout_for(resolution, target)
        adapter = self._backends.speech(target)
        calls = [SpeechCall(target, context, piece, request.voice, timeout_s) for piece in pieces]
        return self._stream(adapter, calls, timeout_s, context.describe(target))

    async def _stream(
        self, adapter: SpeechAdapter, calls: list[SpeechCall], timeout_s: float, where: str
    ) -> AsyncIterator[bytes]:
        deadline = time.monotonic() + timeout_s
        waiting = deque(calls)
        running: deque[asyncio.Task[SpeechOutput]] = deque()
        sent = False
        try:
            while waiting or running:
                while waiting and len(running) < LOOKAHEAD:
                    running.append(asyncio.ensure_future(adapter.speak(waiting.popleft())))
                output = await within(running.popleft(), deadline - time.monotonic(), where)
                for frame in audio_frames(output):
                    sent = True
                    yield frame
            if not sent:
                raise UpstreamUnavailable(f"upstream returned no audio ({where})")
        finally:
            for task in running:
                task.cancel()
