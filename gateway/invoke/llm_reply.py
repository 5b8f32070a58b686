"""Builds the daemon's LLM result chunks from upstream events (framed at the HTTP edge).

Rules the daemon and the SDK impose (spec 4.1, 8): content is a string, tool_calls is a
list of complete calls emitted together in one chunk, usage appears on exactly one chunk
(the last), ``delta.index`` counts frames.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from decimal import Decimal

from gateway.adapters.base import TokenUsage, ToolCallDelta
from gateway.errors import UpstreamUnavailable
from gateway.pricing import Prices, decimal_str, price
from gateway.protocol.results import (
    LLMResultChunkDict,
    LLMStructuredChunkDict,
    LLMUsageDict,
    ToolCallDict,
)


@dataclass(slots=True)
class _PartialCall:
    id: str | None = None
    name: str | None = None
    arguments: list[str] = field(default_factory=list)


class ToolCallAssembler:
    """Collects streamed tool-call pieces (keyed by index) into complete calls."""

    def __init__(self) -> None:
        self._calls: dict[int, _PartialCall] = {}

    def add(self, deltas: list[ToolCallDelta]) -> None:
        for d in deltas:
            call = self._calls.setdefault(d.index, _PartialCall())
            # Providers send id and name once, in the first piece; some repeat them.
            if d.id and not call.id:
                call.id = d.id
            if d.name and not call.name:
                call.name = d.name
            if d.arguments:
                call.arguments.append(d.arguments)

    def complete(self, where: str) -> list[ToolCallDict]:
        calls: list[ToolCallDict] = []
        for index in sorted(self._calls):
            call = self._calls[index]
            if not call.name:
                raise UpstreamUnavailable(f"upstream sent a tool call without a function name ({where})")
            calls.append(
                {
                    "id": call.id or f"call_{uuid.uuid4().hex[:24]}",
                    "type": "function",
                    "function": {"name": call.name, "arguments": "".join(call.arguments)},
                }
            )
        return calls


def estimate_tokens(chars: int) -> int:
    """A rough token count for upstreams that report no usage (about four characters a token)."""
    return (chars + 3) // 4


def llm_usage(usage: TokenUsage, prices: Prices | None, latency: float) -> LLMUsageDict:
    zero = Decimal(0)
    p_unit, p_price_unit, p_price = price(usage.prompt_tokens, prices.input_per_token if prices else zero)
    c_unit, c_price_unit, c_price = price(usage.completion_tokens, prices.output_per_token if prices else zero)
    return {
        "prompt_tokens": usage.prompt_tokens,
        "prompt_unit_price": p_unit,
        "prompt_price_unit": p_price_unit,
        "prompt_price": p_price,
        "completion_tokens": usage.completion_tokens,
        "completion_unit_price": c_unit,
        "completion_price_unit": c_price_unit,
        "completion_price": c_price,
        "total_tokens": usage.prompt_tokens + usage.completion_tokens,
        "total_price": decimal_str(Decimal(p_price) + Decimal(c_price)),
        "currency": prices.currency if prices else "USD",
        "latency": round(latency, 3),
    }


class ChunkBuilder:
    """Builds one reply's result chunks (one frame each, at the HTTP edge), numbering ``delta.index``."""

    def __init__(self, model: str, structured: bool, started: float | None = None) -> None:
        self.model = model
        self.structured = structured
        self.started = started if started is not None else time.monotonic()
        self.system_fingerprint: str | None = None
        self._index = 0

    def _chunk(
        self,
        content: str,
        tool_calls: list[ToolCallDict],
        usage: LLMUsageDict | None,
        finish_reason: str | None,
        index: int,
    ) -> LLMResultChunkDict:
        return {
            "model": self.model,
            "prompt_messages": [],
            "system_fingerprint": self.system_fingerprint,
            "delta": {
                "index": index,
                "message": {"role": "assistant", "content": content, "name": None, "tool_calls": tool_calls},
                "usage": usage,
                "finish_reason": finish_reason,
            },
        }

    def chunk(
        self,
        content: str,
        tool_calls: list[ToolCallDict] | None = None,
        usage: LLMUsageDict | None = None,
        finish_reason: str | None = None,
    ) -> LLMResultChunkDict | LLMStructuredChunkDict:
        chunk = self._chunk(content, tool_calls or [], usage, finish_reason, self._index)
        self._index += 1
        if self.structured:
            structured: LLMStructuredChunkDict = {**chunk, "structured_output": None}
            return structured
        return chunk

    def structured_chunk(
        self,
        structured_output: dict[str, object],
        content: str = "",
        tool_calls: list[ToolCallDict] | None = None,
        usage: LLMUsageDict | None = None,
        finish_reason: str | None = None,
    ) -> LLMStructuredChunkDict:
        """The chunk carrying the parsed object (index 0, as Dify sends it)."""
        chunk = self._chunk(content, tool_calls or [], usage, finish_reason, 0)
        return {**chunk, "structured_output": structured_output}
