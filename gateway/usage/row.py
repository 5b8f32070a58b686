"""One invocation as the ledger records it: who, what, through which target, and what it cost.

Never prompt text, never keys. Built at the end of a request from its ``Trace``; the
writer (``gateway.usage.writer``) batches rows into the database (``gateway.usage.schema``).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any


def new_row_id() -> str:
    """A row's own id: the key that makes a replayed row count once (the request id a
    caller sends may repeat)."""
    return os.urandom(16).hex()


def tenant_key(tenant_id: str) -> str:
    """A fixed-size key for a tenant id of any length (indexes cannot hold a 10 KB id)."""
    return hashlib.sha256(tenant_id.encode("utf-8", "surrogatepass")).hexdigest()[:32]


@dataclass(slots=True, kw_only=True)
class UsageRow:
    created_at: datetime  # when the request arrived (UTC)
    request_id: str
    tenant_id: str
    user_id: str
    model_type: str  # llm, text-embedding, ... (the endpoint's label), or "forward"
    provider: str  # the Dify provider as the daemon sent it ("" when forwarded unparsed)
    model: str  # the Dify model name
    route: str | None = None  # the route label that answered
    target: str | None = None  # the target's template label (e.g. "openai/{model}")
    target_model: str | None = None  # the model actually called (rendered)
    attempts: int = 0
    outcome: str = "ok"  # see gateway.request_metrics.OUTCOMES
    status: int = 200
    forwarded: bool = False  # answered by Dify (forwarded unchanged), not by the gateway
    tokens_in: int = 0
    tokens_out: int = 0
    cached_tokens: int = 0  # input tokens served from the embedding cache (no upstream cost)
    characters: int = 0  # TTS input characters
    audio_seconds: float = 0.0  # speech-to-text audio length
    price_usd: Decimal = Decimal(0)  # the price the usage frames carried
    duration_ms: float = 0.0
    first_byte_ms: float | None = None
    overhead_ms: float | None = None
    id: str = field(default_factory=new_row_id)

    @property
    def tenant_key(self) -> str:
        return tenant_key(self.tenant_id)

    @property
    def tokens(self) -> int:
        return self.tokens_in + self.tokens_out

    def to_json(self) -> dict[str, Any]:
        """A JSON-safe dict (the spill file's line; ``from_json`` reads it back exactly)."""
        data = asdict(self)
        data["created_at"] = self.created_at.isoformat()
        data["price_usd"] = str(self.price_usd)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> UsageRow:
        values = dict(data)
        values["created_at"] = datetime.fromisoformat(values["created_at"]).astimezone(UTC)
        values["price_usd"] = Decimal(values["price_usd"])
        return cls(**values)
