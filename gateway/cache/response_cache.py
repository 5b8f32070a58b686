"""The exact LLM response cache: a whole answer, stored under the request that reached the backend.

    {prefix}r1:{scope}:{sha256 hex}

The digest covers the target's fingerprint (model string, endpoint, output-affecting
parameters; never keys) and the rendered call: messages, tools, tool choice, parameters
(the JSON schema among them), stop sequences and a completion prompt. Whether the call
streams is not in it: a stored answer is replayed as a stream or as one reply. ``scope`` is
``_`` (shared by all tenants) unless the route keeps answers per tenant.

Only whole answers are stored (a stream that failed or was cut never reaches ``put``); the
value is zlib-compressed JSON. The store is the embedding cache's (Redis and/or in-process),
so a read that fails or is slow is a miss, never an error.
"""

from __future__ import annotations

import hashlib
import zlib
from dataclasses import dataclass
from typing import Any

import orjson

from gateway.adapters.base import ChatCall
from gateway.cache.keys import GLOBAL_SCOPE, scope_for, target_fingerprint
from gateway.cache.store import VectorStore

_VERSION = b"r1"


@dataclass(frozen=True, slots=True)
class CachedAnswer:
    text: str
    tool_calls: list[tuple[str, str, str]]  # (id, name, arguments)
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str
    system_fingerprint: str | None = None

    def encode(self) -> bytes:
        data = orjson.dumps(
            {
                "text": self.text,
                "tool_calls": self.tool_calls,
                "usage": [self.prompt_tokens, self.completion_tokens],
                "finish_reason": self.finish_reason,
                "system_fingerprint": self.system_fingerprint,
            }
        )
        return _VERSION + zlib.compress(data, 1)

    @classmethod
    def decode(cls, value: bytes) -> CachedAnswer | None:
        """None for a value that is not one this version wrote (treated as a miss)."""
        if not value.startswith(_VERSION):
            return None
        try:
            data = orjson.loads(zlib.decompress(value[len(_VERSION) :]))
            prompt_tokens, completion_tokens = data["usage"]
            return cls(
                text=str(data["text"]),
                tool_calls=[(str(i), str(n), str(a)) for i, n, a in data["tool_calls"]],
                prompt_tokens=int(prompt_tokens),
                completion_tokens=int(completion_tokens),
                finish_reason=str(data["finish_reason"]),
                system_fingerprint=data.get("system_fingerprint"),
            )
        except (zlib.error, orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return None


@dataclass(slots=True)
class ResponseCacheStats:
    hits: int = 0
    misses: int = 0
    stored: int = 0
    corrupt: int = 0  # stored values that did not decode (treated as misses)


class ResponseCache:
    def __init__(self, store: VectorStore, key_prefix: str) -> None:
        self.store = store
        self.stats = ResponseCacheStats()
        self._prefix = key_prefix

    def key(self, call: ChatCall, tenant_id: str | None) -> str:
        """``tenant_id`` None: shared by every tenant."""
        rendered = {
            "messages": call.messages,
            "prompt": call.prompt,
            "tools": call.tools,
            "tool_choice": call.tool_choice,
            "params": call.params,
            "stop": call.stop,
        }
        digest = hashlib.sha256(target_fingerprint(call.target))
        digest.update(orjson.dumps(rendered, option=orjson.OPT_SORT_KEYS, default=str))
        scope = GLOBAL_SCOPE if tenant_id is None else scope_for(tenant_id, "tenant")
        return f"{self._prefix}r1:{scope}:{digest.hexdigest()}"

    async def get(self, key: str) -> CachedAnswer | None:
        (value,) = await self.store.get_many([key])
        if value is None:
            self.stats.misses += 1
            return None
        answer = CachedAnswer.decode(value)
        if answer is None:
            self.stats.corrupt += 1
            self.stats.misses += 1
            return None
        self.stats.hits += 1
        return answer

    def put(self, key: str, answer: CachedAnswer, ttl_s: int) -> None:
        self.store.put_many([(key, answer.encode())], ttl_s)
        self.stats.stored += 1


def deterministic(params: dict[str, Any]) -> bool:
    """Whether the same request gives the same answer: greedy decoding (temperature 0)."""
    temperature = params.get("temperature")
    return isinstance(temperature, int | float) and not isinstance(temperature, bool) and temperature == 0
