"""Randomly fault-injected LLM requests, checked against a model of the retry policy.

Each request gets its own model name, so its backends (primary and fallback) have their own
scripts and breakers. For every attempt position a fault is drawn; a small simulation of the
policy (retry the same target twice on retryable failures before any byte was sent, 401 moves
to the fallback, request errors and failures after a byte are final, 4 attempts at most)
says how many attempts the gateway must make and whether the request must succeed.

Counted, and required to be zero: requests that failed although the policy says an attempt
within the budget would have succeeded; replies whose text is duplicated or spliced (not a
prefix of one upstream answer); attempt counts different from the policy's (so never over
the budget). ``CHAOS_REQUESTS`` sets how many requests (default 400; run 1000+ for a soak).
"""

from __future__ import annotations

import asyncio
import os
import random
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.fakes.upstream import Chat, FakeUpstream, HttpError, Reset
from tests.support.client import llm_request
from tests.support.daemon import read_stream_reply
from tests.support.server import TEST_KEY, GatewayProcess, gateway_config

REQUESTS = int(os.environ.get("CHAOS_REQUESTS", "400"))
CONCURRENCY = 16
RETRIES = 2
BUDGET = RETRIES + 2  # one target and one fallback
WORDS = [f"c{i} " for i in range(8)]
FULL = "".join(WORDS)

# fault -> (weight, kind); kinds: ok, retry (fails before any byte), mid (fails after bytes:
# final for streams), final (request error), auth (moves to the next target).
FAULTS: dict[str, tuple[int, str]] = {
    "ok": (34, "ok"),
    "reset": (8, "retry"),
    "429": (6, "retry"),
    "500": (6, "retry"),
    "503": (6, "retry"),
    "ttft": (4, "retry"),
    "reset-0": (4, "retry"),
    "trunc-0": (4, "retry"),
    "mid-reset": (6, "mid"),
    "mid-trunc": (6, "mid"),
    "mid-stall": (4, "mid"),
    "400": (4, "final"),
    "401": (8, "auth"),
}


def behaviour(fault: str, rng: random.Random) -> Any:
    k = rng.randint(1, len(WORDS) - 1)
    return {
        "ok": lambda: Chat(deltas=WORDS),
        "reset": Reset,
        "429": lambda: HttpError(429, headers={"Retry-After": "0.05"}),
        "500": lambda: HttpError(500),
        "503": lambda: HttpError(503),
        "ttft": lambda: Chat(deltas=WORDS, stall_after=0),
        "reset-0": lambda: Chat(deltas=WORDS, reset_after=0),
        "trunc-0": lambda: Chat(deltas=WORDS, truncate_after=0),
        "mid-reset": lambda: Chat(deltas=WORDS, reset_after=k),
        "mid-trunc": lambda: Chat(deltas=WORDS, truncate_after=k),
        "mid-stall": lambda: Chat(deltas=WORDS, stall_after=k),
        "400": lambda: HttpError(400),
        "401": lambda: HttpError(401),
    }[fault]()


@dataclass
class Plan:
    index: int
    stream: bool
    primary: list[str]  # the fault of each attempt on the primary target
    fallback: list[str]
    attempts: int = 0  # expected
    succeeds: bool = False  # expected


def simulate(plan: Plan) -> None:
    """The policy, independently of the gateway's code."""
    attempts = 0
    for faults in (plan.primary, plan.fallback):
        for try_number, fault in enumerate(faults):
            if attempts == BUDGET or try_number > RETRIES:
                break
            attempts += 1
            kind = FAULTS[fault][1]
            if kind == "mid" and not plan.stream:
                kind = "retry"  # nothing reaches the daemon before the whole answer
            if kind == "ok":
                plan.attempts, plan.succeeds = attempts, True
                return
            if kind in ("mid", "final"):
                plan.attempts, plan.succeeds = attempts, False
                return
            if kind == "auth":
                break
    plan.attempts, plan.succeeds = attempts, False


def draw(index: int, rng: random.Random) -> Plan:
    names = list(FAULTS)
    weights = [FAULTS[n][0] for n in names]
    stream = rng.random() < 0.75
    pick: list[str] = []
    while len(pick) < 2 * (RETRIES + 1):
        fault = rng.choices(names, weights)[0]
        if not stream and fault in ("ttft", "mid-stall"):
            continue  # non-stream calls have only the total deadline: a stall would use it up
        pick.append(fault)
    plan = Plan(index, stream, pick[: RETRIES + 1], pick[RETRIES + 1 :])
    simulate(plan)
    return plan


@pytest.fixture(scope="module")
def gateway(upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    routes = [
        {
            "match": {"type": "llm"},
            "targets": [{"model": "openai/p-{model}", "api_base": upstream.base_url, "api_key": "sk-x"}],
            "fallbacks": [{"model": "openai/f-{model}", "api_base": upstream.base_url, "api_key": "sk-x"}],
            "retries": RETRIES,
            # Deadlines wide enough that a busy machine does not fire them on healthy streams.
            "timeouts": {"ttft_s": 2.0, "idle_s": 2.0, "total_s": 30},
        }
    ]
    resilience = {"retry": {"backoff_initial_s": 0.01, "backoff_max_s": 0.05, "retry_after_max_s": 1}}
    config = gateway_config(routes, resilience=resilience, server={"drain_grace_s": 0})
    # A process of its own: sharing this one's GIL with the fake and the client would make
    # the deadlines measure the test harness, not the gateway.
    with GatewayProcess(config, tmp_path_factory.mktemp("chaos")) as server:
        yield server


def test_random_faults(gateway: GatewayProcess, fake: FakeUpstream) -> None:
    rng = random.Random(int(os.environ.get("CHAOS_SEED", "20261123")))
    plans = [draw(i, rng) for i in range(REQUESTS)]
    for plan in plans:
        fake.script(f"p-r{plan.index}", *(behaviour(f, rng) for f in plan.primary))
        fake.script(f"f-r{plan.index}", *(behaviour(f, rng) for f in plan.fallback))

    errors: dict[int, str | None] = {}

    async def one(client: httpx.AsyncClient, plan: Plan, gate: asyncio.Semaphore) -> tuple[Plan, bool, str]:
        async with gate:
            try:
                response = await client.post(
                    f"{gateway.url}/inner/api/invoke/llm",
                    json=llm_request(f"r{plan.index}", stream=plan.stream),
                    headers={"X-Inner-Api-Key": TEST_KEY},
                )
            except httpx.TimeoutException:
                seen = [
                    (r.model, r.behaviour, r.status)
                    for r in fake.requests
                    if r.model and r.model.endswith(f"-r{plan.index}")
                ]
                raise AssertionError(f"r{plan.index} {plan} hung: {seen}") from None
        outcome = read_stream_reply(response.status_code, response.content, "llm")
        assert outcome.dropped == []
        text = "".join(c["delta"]["message"]["content"] for c in outcome.chunks)
        errors[plan.index] = outcome.error
        return plan, outcome.error is None, text

    async def run_all() -> list[tuple[Plan, bool, str]]:
        gate = asyncio.Semaphore(CONCURRENCY)
        async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=CONCURRENCY)) as client:
            return await asyncio.gather(*(one(client, plan, gate) for plan in plans))

    results = asyncio.run(run_all())
    should_have_succeeded = [p.index for p, ok, _ in results if p.succeeds and not ok]
    unexpected_success = [p.index for p, ok, _ in results if ok and not p.succeeds]
    duplicated = [p.index for p, ok, text in results if not FULL.startswith(text) or (ok and text != FULL)]
    wrong_attempts = {
        p.index: (p.attempts, fake.count(model=f"p-r{p.index}") + fake.count(model=f"f-r{p.index}"))
        for p, _, _ in results
        if fake.count(model=f"p-r{p.index}") + fake.count(model=f"f-r{p.index}") != p.attempts
    }
    over_budget = [i for i, (_, seen) in wrong_attempts.items() if seen > BUDGET]
    summary = Counter("ok" if ok else "failed" for _, ok, _ in results)
    print(
        f"\nchaos: {REQUESTS} requests, {summary['ok']} succeeded, {summary['failed']} failed as the policy says; "
        f"failed that should have succeeded: {len(should_have_succeeded)}, duplicated or spliced: {len(duplicated)}, "
        f"attempts over budget: {len(over_budget)}, attempt counts off the policy: {len(wrong_attempts)}"
    )
    for index in sorted({*should_have_succeeded, *wrong_attempts}):
        plan = plans[index]
        print(
            f"  r{index}: stream={plan.stream} primary={plan.primary} fallback={plan.fallback} "
            f"expected {plan.attempts} attempts, ok={plan.succeeds}; "
            f"seen {wrong_attempts.get(index)}; {errors.get(index)}"
        )
    assert should_have_succeeded == []
    assert unexpected_success == []
    assert duplicated == []
    assert over_budget == []
    assert wrong_attempts == {}
