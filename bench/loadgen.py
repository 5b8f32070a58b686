"""Open-loop load generator: its own process, one step per run.

Protocol on stdin/stdout (one JSON object or word per line):
  stdin  <- a ``Step`` as JSON
  stdout -> ``warm``                      (warm-up sent and answered; connections are open)
  stdin  <- ``go``                        (the caller has snapshotted the servers' CPU)
  stdout -> the ``StepResult`` as JSON

Arrivals follow a fixed schedule (request i is due at start + i / rate) whatever the replies
do, so a slow server gets a queue, not a slower client. A request due while ``max_inflight``
are outstanding is not sent and counts as ``shed``. Latency runs from the moment a request is
sent to its last byte; ``lag`` (send time minus due time) shows whether this process kept up.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

import aiohttp
import orjson

from bench import aio
from bench.wire import FrameError, FrameReader, SseReader, count_at, envelope_error

RID = "@@RID@@"


@dataclass
class Step:
    url: str  # base URL of the system under test
    path: str
    headers: dict[str, str]
    template: str  # the JSON body, with RID where the request id goes
    reply: str  # frames | envelope | sse | json
    rate: float  # arrivals per second
    duration_s: float
    warmup_s: float
    timeout_s: float
    max_inflight: int
    tag: str  # request ids are f"{tag}{n}"
    count_path: list[str] = field(default_factory=list)  # a list in the reply that must have expect_count items
    expect_count: int = 0


@dataclass
class StepResult:
    # [rid, latency_s, ttft_s (-1 unknown), items (frames/events), ok 0|1, done_s (since the first send)]
    records: list[list[Any]]
    errors: dict[str, int]
    sent: int
    shed: int
    elapsed_s: float  # first send to last reply
    lag_p99_ms: float
    client_cpu_s: float


class _Failed(Exception):
    pass


async def _read(step: Step, response: aiohttp.ClientResponse, sent: float) -> tuple[float, int]:
    """(time to first frame/event, frames or events); raises _Failed with a short reason."""
    if response.status != 200:
        head = (await response.content.read(160)).decode("utf-8", "replace")
        raise _Failed(f"HTTP {response.status}: {head}")
    first, items = -1.0, 0
    if step.reply in ("frames", "sse"):
        reader: Any = FrameReader() if step.reply == "frames" else SseReader()
        async for data in response.content.iter_any():
            try:
                payloads = reader.feed(data)
            except FrameError as exc:
                raise _Failed(f"framing: {exc}") from None
            for payload in payloads:
                if first < 0:
                    first = time.perf_counter() - sent
                items += 1
                problem = envelope_error(payload) if step.reply == "frames" else _sse_error(payload)
                if problem:
                    raise _Failed(problem)
        if step.reply == "frames":
            try:
                reader.close()
            except FrameError as exc:
                raise _Failed(f"framing: {exc}") from None
        elif not reader.done:
            raise _Failed("stream ended without [DONE]")
        if items == 0:
            raise _Failed("no frames")
        return first, items
    body = await response.read()
    if step.reply == "envelope" and (problem := envelope_error(body)):
        raise _Failed(problem)
    if step.count_path:
        count = count_at(orjson.loads(body), step.count_path)
        if count != step.expect_count:
            raise _Failed(f"{'.'.join(step.count_path)} has {count} items, expected {step.expect_count}")
    return -1.0, 1


def _sse_error(payload: bytes) -> str | None:
    try:
        event = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return "an SSE event that is not JSON"
    return f"error event: {str(event['error'])[:200]}" if isinstance(event, dict) and "error" in event else None


class Runner:
    def __init__(self, step: Step, session: aiohttp.ClientSession) -> None:
        self.step, self.session = step, session
        self.template = step.template.encode()
        self.inflight = 0

    def body(self, rid: str) -> bytes:
        # The id may appear several times (every embedding input carries it), or not at all.
        return self.template.replace(RID.encode(), rid.encode())

    async def one(self, rid: str, out: list[list[Any]], errors: Counter[str], start: float) -> None:
        step = self.step
        body = self.body(rid)
        self.inflight += 1
        sent = time.perf_counter()
        try:
            async with self.session.post(step.url + step.path, data=body, headers=step.headers) as response:
                first, items = await _read(step, response, sent)
        except _Failed as exc:
            problem: str | None = str(exc)
        except TimeoutError:
            problem = f"timeout ({step.timeout_s:g} s)"
        except aiohttp.ClientError as exc:
            problem = f"{type(exc).__name__}: {str(exc)[:120]}"
        else:
            problem = None
        finally:
            self.inflight -= 1
        now = time.perf_counter()
        if problem is None:
            out.append([rid, now - sent, first, items, 1, now - start])
        else:
            errors[problem] += 1
            out.append([rid, now - sent, -1.0, 0, 0, now - start])

    async def phase(self, seconds: float, tag: str) -> StepResult:
        step = self.step
        count = max(1, round(seconds * step.rate))
        records: list[list[Any]] = []
        errors: Counter[str] = Counter()
        tasks: set[asyncio.Task[None]] = set()
        lags: list[float] = []
        shed = 0
        cpu0 = time.process_time()
        start = time.perf_counter() + 0.02
        for i in range(count):
            due = start + i / step.rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            lags.append(time.perf_counter() - due)
            if self.inflight >= step.max_inflight:
                shed += 1
                continue
            task = asyncio.create_task(self.one(f"{tag}{i}", records, errors, start))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        if tasks:
            await asyncio.wait(set(tasks))
        elapsed = time.perf_counter() - start
        if shed:
            errors[f"shed: {step.max_inflight} requests already in flight"] += shed
        lags.sort()
        return StepResult(
            records=records,
            errors=dict(errors),
            sent=count - shed,
            shed=shed,
            elapsed_s=elapsed,
            lag_p99_ms=lags[min(len(lags) - 1, int(len(lags) * 0.99))] * 1000,
            client_cpu_s=time.process_time() - cpu0,
        )


async def run(step: Step) -> None:
    loop = asyncio.get_running_loop()
    connector = aiohttp.TCPConnector(limit=step.max_inflight, keepalive_timeout=120, enable_cleanup_closed=True)
    timeout = aiohttp.ClientTimeout(total=step.timeout_s)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout, skip_auto_headers=["User-Agent"]) as session:
        runner = Runner(step, session)
        if step.warmup_s > 0:
            await runner.phase(step.warmup_s, f"w{step.tag}")
        print("warm", flush=True)
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if line.strip() != "go":
            return
        result = await runner.phase(step.duration_s, step.tag)
    sys.stdout.write(orjson.dumps(asdict(result)).decode() + "\n")
    sys.stdout.flush()


def main() -> None:
    step = Step(**orjson.loads(sys.stdin.readline()))
    aio.run(run(step))


if __name__ == "__main__":
    main()
