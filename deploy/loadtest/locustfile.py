"""Load-test a deployed dify-gateway with Locust, speaking the plugin daemon's protocol.

Run it from the root of a dify-gateway checkout: the request bodies and the frame reader are
the benchmark harness's own (``bench/``), so ``bench`` must be importable::

    locust -f deploy/loadtest/locustfile.py --host http://dify-gateway:8080 \\
        --inner-api-key "$DIFY_INNER_API_KEY" --llm openai:gpt-4o-mini --embedding openai:text-embedding-3-small

Each task sends one request of a type drawn by the ``--mix`` weights (a type without a model
is not sent), for a tenant and user drawn from a pool of random ids. Streams are read frame by
frame the way the daemon reads them; the time to the first frame is a Locust entry of its own
(type ``TTFT``). deploy/loadtest/README.md describes every option and what counts as a failure.
"""

from __future__ import annotations

import binascii
import itertools
import logging
import random
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson
from locust import FastHttpUser, events, task
from locust.env import Environment
from locust.exception import StopUser

try:
    from bench.loadgen import RID
    from bench.scenarios import SCENARIOS, Models, parse_model, request_for
    from bench.wire import FrameError, FrameReader, count_at, envelope_error
except ImportError as exc:
    raise SystemExit(
        f"deploy/loadtest/locustfile.py needs the benchmark harness in bench/ ({exc}). Run locust from the root of a "
        "dify-gateway checkout (cd dify-gateway && locust -f deploy/loadtest/locustfile.py ...), with orjson and "
        "aiohttp installed beside locust (the gateway's virtualenv has both)."
    ) from None

try:  # the daemon's own decoder and validators, ported in the checkout's tests/ (exact verdicts)
    from tests.support.daemon import read_unary_reply, validate
except ImportError:  # a copy of bench/ without tests/: the main rules only, see _basic_problems
    read_unary_reply = None
    validate = None

log = logging.getLogger("dify-loadtest")

HEADER = 14  # the daemon's frame header: magic, reserved, header length, payload length, 6 reserved bytes
TTS_TEXT = "The gateway answers the plugin daemon's model calls. This sentence is read aloud under load."
MODERATION_TEXT = "A friendly message about the weather, checked by the moderation model under load."
DEFAULT_MIX = "llm-stream=4,llm=1,embed=4,embed-cached=1,rerank=2,tts=1,moderation=1"
# mix key -> the option that names its provider:model
MODEL_OPTION = {
    "llm-stream": "llm",
    "llm": "llm",
    "embed": "embedding",
    "embed-cached": "embedding",
    "rerank": "rerank",
    "tts": "tts",
    "moderation": "moderation",
}
LLM_ROLES = {"system", "user", "assistant", "tool"}


class PlanError(Exception):
    """The options do not make a load test (the message says what to change)."""


@dataclass(frozen=True)
class Kind:
    """One request type of the mix, as the daemon sends it."""

    name: str  # the --mix key and the Locust entry's name
    path: str  # under the host: /inner/api/invoke/...
    body: dict[str, Any]  # the daemon's JSON body; tenant_id and user_id are set per request, RID replaced
    reply: str  # the daemon's reader for the reply: llm | tts (frames), text_embedding | rerank | moderation
    stream: bool  # a framed reply (llm, tts) rather than one JSON envelope
    ttft: bool  # report the time to the first frame as a TTFT entry
    count_path: tuple[str, ...] = ()  # a list in the reply that must hold expect_count items
    expect_count: int = 0

    def encode(self, rid: str, tenant: str, user: str) -> bytes:
        body = dict(self.body)  # the keys exist already, so the daemon's key order is kept
        body["tenant_id"], body["user_id"] = tenant, user
        return orjson.dumps(body).replace(RID.encode(), rid.encode())


@dataclass(frozen=True)
class Plan:
    kinds: list[Kind]
    weights: list[float]
    headers: dict[str, str]
    tenants: list[tuple[str, list[str]]]  # (tenant id, its user ids)
    think_s: float
    deadline_s: float
    skipped: list[str] = field(default_factory=list)  # why some weighted types are not sent


def parse_mix(text: str) -> dict[str, float]:
    """``llm-stream=4,embed=2``: the types named and their weights (types not named: 0)."""
    weights: dict[str, float] = {}
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        name, sep, value = item.partition("=")
        name = name.strip()
        if name not in MODEL_OPTION:
            raise PlanError(f"--mix: unknown type {name!r}; the types are {', '.join(MODEL_OPTION)}")
        try:
            weight = float(value) if sep else 1.0
        except ValueError:
            raise PlanError(f"--mix: {item!r} needs a number after '='") from None
        if weight < 0:
            raise PlanError(f"--mix: {item!r} has a negative weight")
        weights[name] = weight
    return weights


def _bench_kind(name: str, models: Models) -> Kind:
    """The harness's own daemon request for this type (bench/scenarios.py)."""
    scenario = SCENARIOS[name]
    request = request_for("dify", scenario, models)
    stream = request.reply == "frames"
    reply = "llm" if stream else {"embed": "text_embedding", "embed-cached": "text_embedding"}.get(name, name)
    return Kind(
        name,
        request.path,
        orjson.loads(request.template),
        reply,
        stream=stream,
        ttft=scenario.stream,
        count_path=request.count_path,
        expect_count=request.expect_count,
    )


def _tts_kind(model: tuple[str, str], voice: str) -> Kind:
    # The daemon's TTS struct puts tenant_id last (shared/spec/dify-inner-api.md section 3.7).
    provider, name = model
    body = {"user_id": "", "type": "tts", "provider": provider, "model": name}
    body |= {"content_text": TTS_TEXT, "voice": voice, "tenant_id": ""}
    return Kind("tts", "/inner/api/invoke/tts", body, "tts", stream=True, ttft=True)


def _moderation_kind(model: tuple[str, str]) -> Kind:
    provider, name = model
    body = {"tenant_id": "", "user_id": "", "type": "moderation", "provider": provider, "model": name}
    body["text"] = MODERATION_TEXT
    return Kind("moderation", "/inner/api/invoke/moderation", body, "moderation", stream=False, ttft=False)


def make_plan(options: Any, host: str | None) -> Plan:
    if not host:
        raise PlanError("no --host: give the gateway's base URL, e.g. --host http://dify-gateway:8080")
    if not options.inner_api_key:
        raise PlanError("no inner API key: give --inner-api-key or set DIFY_INNER_API_KEY")
    if options.tenants < 1 or options.users_per_tenant < 1:
        raise PlanError("--tenants and --users-per-tenant must be at least 1")
    models: dict[str, tuple[str, str]] = {}
    for option in dict.fromkeys(MODEL_OPTION.values()):
        if value := getattr(options, option):
            try:
                models[option] = parse_model(value.strip())
            except ValueError as exc:
                raise PlanError(f"--{option}: {exc}") from None
    defaults = Models()
    bench_models = Models(
        llm=models.get("llm", defaults.llm),
        embedding=models.get("embedding", defaults.embedding),
        rerank=models.get("rerank", defaults.rerank),
        max_tokens=options.max_tokens,
    )
    kinds: list[Kind] = []
    weights: list[float] = []
    skipped: list[str] = []
    for name, weight in parse_mix(options.mix).items():
        option = MODEL_OPTION[name]
        if weight == 0:
            continue
        if option not in models:
            skipped.append(f"{name}: not sent, no --{option} given")
            continue
        if name == "tts":
            kinds.append(_tts_kind(models["tts"], options.tts_voice))
        elif name == "moderation":
            kinds.append(_moderation_kind(models["moderation"]))
        else:
            kinds.append(_bench_kind(name, bench_models))
        weights.append(weight)
    if not kinds:
        raise PlanError(
            "nothing to send: name a model for at least one type with a weight in --mix "
            f"({options.mix}): --llm, --embedding, --rerank, --tts or --moderation PROVIDER:MODEL"
        )
    tenants = [
        (str(uuid.uuid4()), [str(uuid.uuid4()) for _ in range(options.users_per_tenant)])
        for _ in range(options.tenants)
    ]
    # identity: the frames are read off the socket as they arrive, so the reply must not be compressed
    headers = {
        "Content-Type": "application/json",
        "X-Inner-Api-Key": options.inner_api_key,
        "Accept-Encoding": "identity",
    }
    return Plan(kinds, weights, headers, tenants, options.think_time, options.read_deadline, skipped)


# --------------------------------------------------------------------------------------- reading replies
def _head(body: bytes | None) -> str:
    return (body or b"")[:200].decode("utf-8", "replace")


def _basic_problems(reply: str, data: Any) -> list[str]:
    """Without tests/ at hand: the daemon's main reasons to drop a frame (spec sections 4.1, 4.5 and 11)."""
    if not isinstance(data, dict):
        return ["data is not an object"]
    if reply == "tts":
        return [] if isinstance(data.get("result"), str) else ["result is not a string"]
    problems = []
    delta = data.get("delta") if isinstance(data.get("delta"), dict) else {}
    message = delta.get("message") if isinstance(delta.get("message"), dict) else {}
    if not isinstance(data.get("model"), str) or not data["model"]:
        problems.append("model is missing or empty")
    if type(delta.get("index")) is not int:
        problems.append("delta.index is not an integer")
    if message.get("role") not in LLM_ROLES:
        problems.append("delta.message.role is not system, user, assistant or tool")
    if not isinstance(message.get("content"), str | list):
        problems.append("delta.message.content is not a string or a list")
    if not isinstance(message.get("tool_calls", []), list | None):
        problems.append("delta.message.tool_calls is not a list")
    usage = delta.get("usage")
    if usage is not None:
        if not isinstance(usage, dict):
            return [*problems, "delta.usage is not an object"]
        for key in ("prompt_tokens", "completion_tokens", "total_tokens"):
            if type(usage.get(key)) is not int:
                problems.append(f"delta.usage.{key} is not an integer")
        if not isinstance(usage.get("currency"), str):
            problems.append("delta.usage.currency is not a string")
        if type(usage.get("latency")) not in (int, float):
            problems.append("delta.usage.latency is not a number")
    return problems


def frame_problem(kind: Kind, payload: bytes) -> tuple[str | None, bool]:
    """(why the daemon would fail or drop this frame, or None; whether it carries the usage)."""
    if problem := envelope_error(payload):
        if problem.startswith("reply is not"):  # undecodable: the daemon drops it
            return f"invalid frame (the daemon drops it): {problem.removeprefix('reply ')}", False
        return problem, False  # "error: ..." or "data is nil": the daemon ends the call with it
    data = orjson.loads(payload)["data"]
    problems = validate(kind.reply, data) if validate is not None else _basic_problems(kind.reply, data)
    if problems:
        return f"invalid frame (the daemon drops it): {problems[0].splitlines()[0][:200]}", False
    if kind.reply == "tts":
        result = data.get("result")  # absent or null reaches the plugin as "" (no validation in the daemon)
        try:
            binascii.unhexlify(result if isinstance(result, str) else "")
        except binascii.Error:
            return "invalid frame: result is not hex (the plugin SDK's unhexlify fails on it)", False
        return None, False
    delta = data.get("delta")
    return None, isinstance(delta, dict) and delta.get("usage") is not None


def unary_problem(kind: Kind, status: int, body: bytes) -> str | None:
    if status != 200:
        return f"HTTP {status}: {_head(body)}"
    if problem := envelope_error(body):
        return problem  # "error: <the envelope's error>", "data is nil", or not JSON at all
    if read_unary_reply is not None:
        _, error = read_unary_reply(body, kind.reply)
        if error:
            return f"invalid reply (the daemon fails with: {error.splitlines()[0][:200]})"  # the first of its lines
    if kind.count_path:
        count = count_at(orjson.loads(body), list(kind.count_path))
        if count != kind.expect_count:
            return f"{'.'.join(kind.count_path)} has {count} items, expected {kind.expect_count}"
    return None


def read_payloads(raw: Any) -> Iterator[bytes]:
    """Frame payloads off a geventhttpclient response, each as soon as it is complete; FrameError as
    the daemon words it. Reads exactly one header or one payload at a time: ``read(n)`` waits for n
    bytes, so a larger read would hold back a small first frame and the time to first frame with it."""
    reader = FrameReader()
    while True:
        head = raw.read(HEADER)
        yield from reader.feed(head)  # nothing yet for a frame with a payload; raises on a bad header
        if len(head) < HEADER:
            break
        size = int.from_bytes(head[4:8], "little")
        if size:
            payload = raw.read(size)
            yield from reader.feed(payload)
            if len(payload) < size:
                break
    reader.close()  # a clean end only at a frame boundary


@dataclass
class StreamOutcome:
    problem: str | None = None
    ttft_s: float = -1.0
    frames: int = 0
    size: int = 0  # bytes of the frames read
    usage: bool = False


def read_stream(kind: Kind, raw: Any, sent: float) -> StreamOutcome:
    out = StreamOutcome()
    for payload in read_payloads(raw):
        if out.frames == 0:
            out.ttft_s = time.perf_counter() - sent
        out.frames += 1
        out.size += HEADER + len(payload)
        out.problem, usage = frame_problem(kind, payload)
        out.usage = out.usage or usage
        if out.problem:
            return out
    if out.frames == 0:
        out.problem = "no frames"
    elif kind.reply == "llm" and not out.usage:
        out.problem = "the stream ended without the final usage"
    return out


# ------------------------------------------------------------------------------------------- Locust glue
_plan: Plan | None = None
_plan_error: str | None = None


@events.init_command_line_parser.add_listener
def _options(parser: Any) -> None:
    # Locust's own add_argument (not an argument group's): it knows is_secret and the web UI.
    add = parser.add_argument
    add(
        "--inner-api-key",
        env_var="DIFY_INNER_API_KEY",
        default="",
        is_secret=True,
        help="X-Inner-Api-Key sent with every request (or $DIFY_INNER_API_KEY)",
    )
    for option, example in (
        ("llm", "openai:gpt-4o-mini"),
        ("embedding", "openai:text-embedding-3-small"),
        ("rerank", "cohere:rerank-v3.5"),
        ("tts", "openai:tts-1"),
        ("moderation", "openai:omni-moderation-latest"),
    ):
        add(
            f"--{option}",
            env_var=f"DIFY_LOADTEST_{option.upper()}",
            default="",
            help=f"Dify provider:model for {option} (e.g. {example}); without one, its types are not sent",
        )
    add(
        "--mix",
        env_var="DIFY_LOADTEST_MIX",
        default=DEFAULT_MIX,
        help=f"weights per type, types not named are not sent (default {DEFAULT_MIX})",
    )
    add("--tenants", type=int, env_var="DIFY_LOADTEST_TENANTS", default=20, help="random tenant ids")
    add("--users-per-tenant", type=int, env_var="DIFY_LOADTEST_USERS_PER_TENANT", default=5, help="user ids per tenant")
    add("--max-tokens", type=int, env_var="DIFY_LOADTEST_MAX_TOKENS", default=32, help="LLM max_tokens (default 32)")
    add("--tts-voice", env_var="DIFY_LOADTEST_TTS_VOICE", default="alloy", help="TTS voice")
    add(
        "--think-time",
        type=float,
        env_var="DIFY_LOADTEST_THINK_TIME",
        default=1.0,
        help="seconds each Locust user waits between its requests (default 1)",
    )
    add(
        "--request-timeout",
        type=float,
        env_var="DIFY_LOADTEST_REQUEST_TIMEOUT",
        default=60.0,
        help="connect timeout and longest silence on a connection, s (default 60)",
    )
    add(
        "--read-deadline",
        type=float,
        env_var="DIFY_LOADTEST_READ_DEADLINE",
        default=240.0,
        help="a reply that takes longer fails, as the daemon cuts it (DIFY_BACKWARDS_INVOCATION_READ_TIMEOUT, 240 s)",
    )


@events.init.add_listener
def _check_headless(environment: Environment, **_: Any) -> None:
    """A headless run with unusable options stops before it starts (the web UI can still set them)."""
    options = environment.parsed_options
    if options is not None and options.headless and not options.worker:
        try:
            make_plan(options, environment.host)
        except PlanError as exc:
            raise SystemExit(f"deploy/loadtest/locustfile.py: {exc}") from None


@events.test_start.add_listener
def _start(environment: Environment, **_: Any) -> None:
    """Each process builds its plan (its own tenant pool) from the options in force at the start."""
    global _plan, _plan_error
    try:
        _plan, _plan_error = make_plan(environment.parsed_options, environment.host), None
    except PlanError as exc:
        _plan, _plan_error = None, str(exc)
        log.error("deploy/loadtest/locustfile.py: %s", exc)
        return
    for note in _plan.skipped:
        log.info(note)
    share = sum(_plan.weights)
    mix = ", ".join(f"{k.name} {w / share:.0%}" for k, w in zip(_plan.kinds, _plan.weights, strict=True))
    log.info("sending %s to %d tenants", mix, len(_plan.tenants))


class DaemonUser(FastHttpUser):
    """Calls as the plugin daemon makes them: a type drawn by weight, a tenant and one of its users."""

    def __init__(self, environment: Environment) -> None:
        options = environment.parsed_options
        if options is not None:  # read by FastHttpUser.__init__ when it builds the client
            self.network_timeout = self.connection_timeout = options.request_timeout
        super().__init__(environment)
        self._tag = f"lt{uuid.uuid4().hex[:8]}-"  # request ids: fresh embedding texts in every run
        self._seq = itertools.count()

    def wait_time(self) -> float:
        return _plan.think_s if _plan is not None else 1.0

    def on_start(self) -> None:
        if _plan is None:
            raise StopUser(_plan_error or "no plan")
        self._base = (self.host or "").rstrip("/")  # a path prefix stays: http://gw:8080/dify/inner/api/...

    @task
    def invoke(self) -> None:
        plan = _plan
        assert plan is not None
        kind = random.choices(plan.kinds, plan.weights)[0]
        tenant, users = random.choice(plan.tenants)
        body = kind.encode(f"{self._tag}{next(self._seq)}", tenant, random.choice(users))
        if kind.stream:
            self._stream(plan, kind, body)
        else:
            self._unary(plan, kind, body)

    def _unary(self, plan: Plan, kind: Kind, body: bytes) -> None:
        url = self._base + kind.path
        with self.client.post(url, data=body, headers=plan.headers, name=kind.name, catch_response=True) as reply:
            if reply.status_code == 0:
                return  # no reply at all: Locust reports the connection error itself
            elapsed = reply.request_meta["response_time"] / 1000
            if problem := unary_problem(kind, reply.status_code, reply.content or b""):
                reply.failure(problem)
            elif elapsed > plan.deadline_s:
                reply.failure(f"longer than the daemon's {plan.deadline_s:g} s read deadline")
            else:
                reply.success()

    def _stream(self, plan: Plan, kind: Kind, body: bytes) -> None:
        url = self._base + kind.path
        sent = time.perf_counter()
        with self.client.post(
            url, data=body, headers=plan.headers, name=kind.name, catch_response=True, stream=True
        ) as reply:
            if reply.status_code == 0:
                return
            if reply.status_code != 200:  # before the first frame: the daemon reports status and body
                reply.failure(f"HTTP {reply.status_code}: {_head(reply.content)}")
                return
            raw = reply._response  # geventhttpclient's response: read(n) pulls the body off the socket
            encoding = reply.headers.get("content-encoding", "identity") if reply.headers else "identity"
            try:
                if encoding != "identity":
                    outcome = StreamOutcome(f"the reply is compressed ({encoding}) although identity was asked")
                else:
                    outcome = read_stream(kind, raw, sent)
            except FrameError as exc:
                outcome = StreamOutcome(f"framing: {exc}")
            except Exception as exc:  # any read error (reset, timeout, bad chunking) is a failed stream
                outcome = StreamOutcome(f"{type(exc).__name__}: {str(exc)[:160]}")
            if outcome.problem:
                raw.release()  # a body read only in part: the connection is closed, not reused
            elapsed = time.perf_counter() - sent
            # Locust timed the headers only (stream=True): the entry is send to last byte.
            reply.request_meta["response_time"] = elapsed * 1000
            reply.request_meta["response_length"] = outcome.size
            if outcome.problem:
                reply.failure(outcome.problem)
            elif elapsed > plan.deadline_s:
                reply.failure(f"longer than the daemon's {plan.deadline_s:g} s read deadline")
            else:
                reply.success()
        if outcome.problem is None and kind.ttft and elapsed <= plan.deadline_s:
            self.environment.events.request.fire(
                request_type="TTFT",
                name=kind.name,
                response_time=outcome.ttft_s * 1000,
                response_length=0,
                exception=None,
                context={},
            )
