"""The ``ChatAdapter`` of the embedded LLM: OpenAI-format chat calls to generation jobs, a
small pool of model instances, and the answer streamed back as it is decoded.

One model instance runs one generation at a time, so a pool of ``instances`` processes
serves calls in turn: a call waits for a free one up to ``max_wait_s`` (then a clear
"overloaded" error), and at most ``max_waiting`` calls wait at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from typing import Any

import orjson

from gateway.adapters.base import ChatCall, ChatEvent, TokenUsage, ToolCallDelta
from gateway.adapters.local.llm_engine import GenerationJob, GenerationResult, SmolLM2, generate
from gateway.adapters.local.llm_grammar import ANY_OBJECT, ToolSpec
from gateway.adapters.local.slot import ModelSlot
from gateway.catalog import LLM_MODEL
from gateway.errors import Overloaded, UpstreamBadRequest, UpstreamUnavailable

# When a request names none: SmolLM2's own generation settings.
DEFAULT_MAX_TOKENS = 512
DEFAULT_TEMPERATURE = 0.2
DEFAULT_TOP_P = 0.9


@dataclass(frozen=True, slots=True)
class LocalLLMSettings:
    instances: int = 1
    threads: int = 1
    context_tokens: int = 4096
    max_wait_s: float = 30.0
    max_waiting: int = 64


class InstancePool:
    """The LLM's model processes, lent to one call at a time."""

    def __init__(self, slots: list[ModelSlot[SmolLM2]], settings: LocalLLMSettings) -> None:
        self.slots = slots
        self._settings = settings
        self._free: asyncio.Queue[ModelSlot[SmolLM2]] | None = None
        self._waiting = 0

    @contextlib.asynccontextmanager
    async def instance(self, where: str) -> AsyncIterator[ModelSlot[SmolLM2]]:
        free = self._queue()
        settings = self._settings
        if free.empty() and self._waiting >= settings.max_waiting:
            raise Overloaded(
                f"{LLM_MODEL}: {self._waiting} calls are already waiting for the embedded LLM "
                f"({len(self.slots)} instance(s), server.local_llm.instances) ({where})"
            )
        self._waiting += 1
        try:
            async with asyncio.timeout(settings.max_wait_s):
                slot = await free.get()
        except TimeoutError:
            raise Overloaded(
                f"{LLM_MODEL}: no instance of the embedded LLM was free within {settings.max_wait_s:g} s "
                f"({len(self.slots)} instance(s), server.local_llm.instances) ({where})"
            ) from None
        finally:
            self._waiting -= 1
        try:
            yield slot
        finally:
            free.put_nowait(slot)

    def _queue(self) -> asyncio.Queue[ModelSlot[SmolLM2]]:
        if self._free is None:  # made on the event loop, at the first call
            self._free = asyncio.Queue()
            for slot in self.slots:
                self._free.put_nowait(slot)
        return self._free

    @property
    def state(self) -> str:
        """The least ready instance's state (every instance must be ready to be "ready")."""
        states = [slot.state for slot in self.slots]
        for prefix in ("failed", "restarting", "loading", "not loaded"):
            for state in states:
                if state.startswith(prefix):
                    return state
        return states[0]

    @property
    def restarts(self) -> int:
        return sum(slot.restarts for slot in self.slots)

    @property
    def pid(self) -> int | None:
        return next((pid for slot in self.slots if (pid := slot.pid) is not None), None)

    def pids(self) -> list[int]:
        return [pid for slot in self.slots if (pid := slot.pid) is not None]

    async def load(self) -> None:
        await asyncio.gather(*(slot.load() for slot in self.slots))

    def check_installed(self, packages: tuple[str, ...]) -> None:
        for slot in self.slots:
            slot.check_installed(packages)

    def close(self) -> None:
        for slot in self.slots:
            slot.close()


class LocalChat:
    """A ``ChatAdapter`` for ``local/smollm2-135m-instruct``."""

    def __init__(self, pool: InstancePool) -> None:
        self._pool = pool

    async def chat(self, call: ChatCall) -> AsyncIterator[ChatEvent]:
        where = call.context.describe(call.target)
        job = generation_job(call)
        text: list[str] = []
        result: GenerationResult | None = None
        async with self._pool.instance(where) as slot:
            async for value in slot.stream(generate, job, timeout_s=call.timeout_s, where=where):
                if isinstance(value, GenerationResult):
                    result = value
                elif value is None:
                    continue
                elif call.stream:
                    yield ChatEvent(text=value)
                else:
                    text.append(value)
        if result is None:  # the model process ended the call without a result
            raise UpstreamUnavailable(f"{LLM_MODEL}: the generation ended without a result ({where})")
        tool_calls = None
        if result.tool_call is not None:
            call_id, name, arguments = result.tool_call
            tool_calls = [ToolCallDelta(index=0, id=call_id, name=name, arguments=arguments)]
        elif result.tool_call_text:  # a call cut at max_tokens: what there is, as text
            text.append(result.tool_call_text)
            if call.stream:
                yield ChatEvent(text=result.tool_call_text)
        yield ChatEvent(
            text="" if call.stream else "".join(text),
            tool_calls=tool_calls,
            finish_reason=result.finish_reason,
            usage=TokenUsage(result.prompt_tokens, result.completion_tokens),
            model=LLM_MODEL,
        )


def generation_job(call: ChatCall) -> GenerationJob:
    """The job for ``call``; ``UpstreamBadRequest`` for what this model cannot take."""
    params = call.params
    where = call.context.describe(call.target)
    max_tokens = _int_param(params.get("max_completion_tokens", params.get("max_tokens")), DEFAULT_MAX_TOKENS)
    job = GenerationJob(
        messages=None if call.prompt is not None else _messages(call.messages, where),
        prompt=None if call.prompt is None else _encodable(call.prompt),
        max_tokens=max(1, max_tokens),
        temperature=_float_param(params.get("temperature"), DEFAULT_TEMPERATURE, 0.0, 2.0),
        top_p=_float_param(params.get("top_p"), DEFAULT_TOP_P, 0.0, 1.0),
        seed=params["seed"] if isinstance(params.get("seed"), int) else None,
        stop=[s for s in (call.stop or []) if isinstance(s, str) and s][:16],
        presence_penalty=_float_param(params.get("presence_penalty"), 0.0, -2.0, 2.0),
        frequency_penalty=_float_param(params.get("frequency_penalty"), 0.0, -2.0, 2.0),
        schema=_schema(params.get("response_format")),
    )
    if call.tools and call.prompt is None and job.schema is None:
        tools, mode = _tool_use(call, where)
        job.tools, job.tool_mode = tools, mode
    return job


_SURROGATES = re.compile("[\ud800-\udfff]")
# The roles the model's chat template knows; "developer" is OpenAI's newer name for system.
_ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant", "tool": "tool"}


def _plain(text: str) -> str:
    """Message text that cannot forge the chat template's structure: the prompt is tokenized
    with special tokens parsed (the template's own ``<|im_start|>`` and ``<|im_end|>``), so a
    ``<|`` in a message gets a zero-width non-joiner, NUL (which would end a C string) goes, and
    a lone surrogate (no UTF-8 form) becomes U+FFFD."""
    return _encodable(text).replace("<|", "<\u200c|")


def _encodable(text: str) -> str:
    """``text`` without NUL, its lone surrogates (no UTF-8 form) as U+FFFD. A completion-mode
    prompt gets only this: it is the caller's own raw prompt, template tokens included."""
    if not text.isascii():
        text = _SURROGATES.sub("\ufffd", text)
    return text.replace("\x00", "")


def _messages(messages: Iterable[dict[str, Any]], where: str) -> list[dict[str, str]]:
    out = []
    for message in messages:
        role = _ROLES.get(str(message.get("role") or "user"), "user")
        content = message.get("content")
        if isinstance(content, list):
            kinds = {part.get("type") for part in content if isinstance(part, dict)} - {"text"}
            if kinds:
                found = ", ".join(sorted(map(str, kinds)))
                raise UpstreamBadRequest(f"{LLM_MODEL} reads text only; the request has {found} content ({where})")
            content = "".join(str(part.get("text") or "") for part in content)
        text = content if isinstance(content, str) else ""
        if role == "assistant" and message.get("tool_calls"):
            calls = [_call_text(c.get("function") or {}) for c in message["tool_calls"]]
            text = "\n".join([text, *calls]).strip()
        out.append({"role": role, "content": _plain(text)})
    return out


def _call_text(function: dict[str, Any]) -> str:
    """An earlier tool call, as this model writes one."""
    try:
        arguments = orjson.loads(function.get("arguments") or "{}")
    except orjson.JSONDecodeError:
        arguments = function.get("arguments")
    return orjson.dumps({"name": function.get("name"), "arguments": arguments}).decode()


def _tool_use(call: ChatCall, where: str) -> tuple[list[ToolSpec], Any]:
    """The tools the answer may call, and whether it must.

    ``auto`` (or no tool_choice): this model hardly ever chooses a tool by itself, so it
    calls one when the latest message is the user's and answers in text after a tool's
    result, which is what an agent loop needs.
    """
    tools = [
        ToolSpec(
            name=str(t["function"]["name"]),
            parameters=t["function"].get("parameters") or {"type": "object", "properties": {}},
            description=str(t["function"].get("description") or ""),
        )
        for t in call.tools or []
    ]
    choice = call.tool_choice
    if choice == "none":
        return [], "auto"
    if isinstance(choice, dict):
        name = (choice.get("function") or {}).get("name")
        chosen = [t for t in tools if t.name == name]
        if not chosen:
            raise UpstreamBadRequest(f"tool_choice names {name!r}, which is not one of the request's tools ({where})")
        return chosen, "required"
    if choice == "required":
        return tools, "required"
    last = next((m.get("role") for m in reversed(call.messages) if m.get("role") != "system"), None)
    return (tools, "required") if last == "user" else ([], "auto")


def _schema(response_format: Any) -> dict[str, Any] | None:
    if not isinstance(response_format, dict):
        return None
    kind = response_format.get("type")
    if kind == "json_object":
        return dict(ANY_OBJECT)
    if kind == "json_schema":
        spec = response_format.get("json_schema") or {}
        schema = spec.get("schema") if isinstance(spec, dict) else None
        return schema if isinstance(schema, dict) else dict(ANY_OBJECT)
    return None


def _int_param(value: Any, default: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return default
    return int(value)


def _float_param(value: Any, default: float, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return default
    return min(high, max(low, float(value)))
