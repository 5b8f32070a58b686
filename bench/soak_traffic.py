"""The soak's traffic: what each request type sends (the plugin daemon's bodies) and at what
share of the total rate, and the open-loop driver that sends them.

Every request that reaches the fake upstream carries a ``bid:<id>`` tag unique to that request
(embedding texts from the shared pool carry ``bid:pool-<k>``), so the fake's fault option can
fault each request at most once (see ``bench/upstream.py``). Replies are read with the load
generator's reader (``bench.loadgen``: frames, ``error`` and ``data`` checked in every frame).
"""

from __future__ import annotations

import asyncio
import io
import math
import struct
import time
import wave
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson

from bench.loadgen import RID, Runner, Step
from bench.scenarios import SCENARIOS, Models, request_for

PROVIDER = "langgenius/openai/openai"
POOL = [f"bid:pool-{k} a passage the gateway has embedded before, number {k}." for k in range(32)]


@dataclass(frozen=True)
class Kind:
    name: str
    share: float  # of the total rate
    path: str
    template: str  # JSON body with RID placeholders
    reply: str  # frames | envelope (bench.loadgen)
    daemon_kind: str  # what tests/support/daemon.py reads the reply as
    count_path: tuple[str, ...] = ()
    expect_count: int = 0


def short_wav(seconds: float = 1.0, rate: int = 16_000) -> bytes:
    """A quiet 440 Hz tone as 16-bit mono WAV: cheap for Whisper, a real container to sniff."""
    frames = b"".join(
        struct.pack("<h", int(3000 * math.sin(2 * math.pi * 440 * i / rate))) for i in range(int(seconds * rate))
    )
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(frames)
    return out.getvalue()


def _body(**fields: Any) -> str:
    return orjson.dumps({"tenant_id": "soak-tenant", "user_id": "soak-user", **fields}).decode()


def kinds() -> list[Kind]:
    """The mix: shares sum to 1. LLM, embeddings and rerank go to the fake upstream (and meet
    its faults); TTS and speech-to-text run on the embedded models, kept light."""
    models = Models(max_tokens=64)
    llm = request_for("dify", SCENARIOS["llm"], models)
    stream = request_for("dify", SCENARIOS["llm-stream"], models)
    rerank = request_for("dify", SCENARIOS["rerank"], models)
    fresh = [f"bid:{RID} new text {k} about streaming, caching and routing." for k in range(4)]
    embed = {"type": "text_embedding", "provider": PROVIDER, "model": "text-embedding-soak", "input_type": "document"}
    return [
        Kind("llm", 0.2, llm.path, llm.template, "frames", "llm"),
        Kind("llm-stream", 0.2, stream.path, stream.template, "frames", "llm"),
        # Four new texts and two from the pool: the cache misses some texts of every request ...
        Kind(
            "embed",
            0.17,
            "/inner/api/invoke/text-embedding",
            _body(**embed, texts=[*fresh, *POOL[:2]]),
            "envelope",
            "text_embedding",
            ("data", "embeddings"),
            6,
        ),
        # ... and answers these from the cache alone once the pool is in it.
        Kind(
            "embed-cached",
            0.17,
            "/inner/api/invoke/text-embedding",
            _body(**embed, texts=POOL[2:6]),
            "envelope",
            "text_embedding",
            ("data", "embeddings"),
            4,
        ),
        Kind("rerank", 0.20, rerank.path, rerank.template, "envelope", "rerank", tuple(rerank.count_path), 5),
        Kind(
            "tts",
            0.05,
            "/inner/api/invoke/tts",
            _body(
                type="tts", provider=PROVIDER, model="tts-1", content_text="Soak test, sentence {RID}.", voice="alloy"
            ),
            "frames",
            "tts",
        ),
        # Whisper encodes a 30 s window whatever the clip's length: ~0.85 s of one core per
        # call here, so one model process answers about one a second. 0.5/s at 50 req/s.
        Kind(
            "speech2text",
            0.01,
            "/inner/api/invoke/speech2text",
            _body(type="speech2text", provider=PROVIDER, model="whisper-1", file=short_wav().hex()),
            "envelope",
            "speech2text",
        ),
    ]


@dataclass
class Lane:
    """One request type: its runner, the replies since the last sample and its failures."""

    kind: Kind
    runner: Runner
    rate: float
    records: list[list[Any]] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    sent: int = 0

    def take(self) -> list[list[Any]]:
        batch, self.records = self.records, []
        return batch


def lanes(kinds_: list[Kind], url: str, key: str, total_rate: float, session: aiohttp.ClientSession) -> list[Lane]:
    headers = {"X-Inner-Api-Key": key, "Content-Type": "application/json"}
    out = []
    for kind in kinds_:
        step = Step(
            url=url,
            path=kind.path,
            headers=headers,
            template=kind.template.replace("{RID}", RID),
            reply=kind.reply,
            rate=total_rate * kind.share,
            duration_s=0,
            warmup_s=0,
            timeout_s=session.timeout.total or 0,
            max_inflight=0,
            tag="",
            count_path=list(kind.count_path),
            expect_count=kind.expect_count,
        )
        out.append(Lane(kind, Runner(step, session), step.rate))
    return out


async def drive(lane: Lane, start: float, stop: asyncio.Event, max_inflight: int) -> None:
    """Open loop: request i of this lane is due at start + i / rate whatever the replies do.
    One beyond ``max_inflight`` outstanding is not sent and counts as a failure (shed)."""
    tasks: set[asyncio.Task[None]] = set()
    i = 0
    while not stop.is_set():
        delay = start + i / lane.rate - time.perf_counter()
        if delay > 0:
            try:
                await asyncio.wait_for(stop.wait(), delay)
                break
            except TimeoutError:
                pass
        rid = f"{lane.kind.name}-{i}"
        i += 1
        if lane.runner.inflight >= max_inflight:
            lane.errors[f"shed: {max_inflight} requests already in flight"] += 1
            lane.records.append([rid, 0.0, -1.0, 0, 0, time.perf_counter() - start])
            continue
        lane.sent += 1
        task = asyncio.create_task(lane.runner.one(rid, lane.records, lane.errors, start))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    if tasks:
        await asyncio.wait(set(tasks))
