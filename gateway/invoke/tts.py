"""``/invoke/tts``: a stream of hex audio chunks, first audio before the whole text is done.

The text is split at sentence boundaries; a few pieces are synthesised ahead, concurrently,
and their audio is framed strictly in text order. So the first frame goes out as soon as
the first (short) piece is ready, and a long text takes about its longest piece times the
number of pieces divided by the lookahead, well inside the daemon's 240 s read deadline.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncGenerator
from contextlib import aclosing

from gateway.adapters.base import SpeechCall, SpeechOutput, UpstreamContext
from gateway.errors import BadRequest, UpstreamUnavailable
from gateway.invoke.common import RoutedService, resolve, upstream_context
from gateway.invoke.text_split import speech_pieces
from gateway.protocol.requests import TTSInvokeRequest
from gateway.protocol.results import TTSChunkDict
from gateway.resilience.plan import AttemptPlan, stream_attempts
from gateway.routing import Target
from gateway.trace import current_trace

# Audio bytes per frame: large enough to keep the frame count low (the daemon's queue is
# bounded), small enough that a player can start early.
FRAME_AUDIO_BYTES = 32 * 1024
LOOKAHEAD = 3
# Longer texts are split on a worker thread (a thread costs more than splitting a short one).
SPLIT_INLINE_CHARS = 4000


def audio_chunks(output: SpeechOutput) -> list[TTSChunkDict]:
    audio = output.audio
    return [
        {"result": audio[i : i + FRAME_AUDIO_BYTES].hex(), "mime_type": output.mime_type}
        for i in range(0, len(audio), FRAME_AUDIO_BYTES)
    ]


class TTSService(RoutedService):
    def chunks(self, request: TTSInvokeRequest) -> AsyncGenerator[TTSChunkDict, None]:
        """Resolve now (so routing errors come before the stream), synthesise lazily.

        Another target (or a retry) may take over only until the first audio chunk is out:
        after that, switching would change the voice mid-sentence or repeat audio.
        """
        resolution = resolve(self._routes, "tts", request.provider, request.model, request.tenant_id)
        self._limits.check(resolution, "tts_chars", len(request.content_text), "content_text")
        trace = current_trace.get()
        if trace is not None:
            trace.characters = len(request.content_text)
        context = upstream_context(resolution, request.provider, request.model)
        deadline = time.monotonic() + resolution.route.timeouts.total_s
        plan = self._resilience.plan(resolution, deadline, context.describe)
        return self._split_then_speak(request, context, plan)

    async def _split_then_speak(
        self, request: TTSInvokeRequest, context: UpstreamContext, plan: AttemptPlan
    ) -> AsyncGenerator[TTSChunkDict, None]:
        """Split the text (off the event loop when long), then the first attempt that succeeds.
        Raised before the first chunk, "nothing to speak" is still a non-200 reply."""
        text = request.content_text
        # The split is linear in the text: ~25 ms for 100,000 characters, more for odd ones.
        if len(text) <= SPLIT_INLINE_CHARS:
            pieces = speech_pieces(text)
        else:
            pieces = await asyncio.to_thread(speech_pieces, text)
        if not pieces:
            raise BadRequest("invalid payload: content_text has nothing to speak")
        async with aclosing(
            stream_attempts(plan, lambda target: self._speak(target, context, pieces, request.voice, plan))
        ) as chunks:
            async for chunk in chunks:
                yield chunk

    async def _speak(
        self, target: Target, context: UpstreamContext, pieces: list[str], voice: str, plan: AttemptPlan
    ) -> AsyncGenerator[TTSChunkDict, None]:
        where = context.describe(target)
        limit_s = plan.remaining(target)
        deadline = time.monotonic() + limit_s
        adapter = self._backends.speech(target)
        waiting = deque(SpeechCall(target, context, piece, voice, plan.ceiling(target)) for piece in pieces)
        running: deque[asyncio.Task[SpeechOutput]] = deque()
        sent = False
        try:
            while waiting or running:
                while waiting and len(running) < LOOKAHEAD:
                    running.append(asyncio.ensure_future(adapter.speak(waiting.popleft())))
                try:
                    async with asyncio.timeout(max(deadline - time.monotonic(), 0.001)):
                        output = await running.popleft()
                except TimeoutError:
                    # The attempt's limit, not what was left of it for this piece ("0 s").
                    raise plan.timed_out(target, limit_s) from None
                for chunk in audio_chunks(output):
                    sent = True
                    yield chunk
            if not sent:
                raise UpstreamUnavailable(f"upstream returned no audio ({where})")
        finally:
            for task in running:
                task.cancel()
            # Collected so a failure in a piece nobody waits for any more is not reported
            # as "never retrieved".
            await asyncio.gather(*running, return_exceptions=True)
