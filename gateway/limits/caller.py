"""Who is asking: the identity the daemon sends, and what the request will use."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Caller:
    tenant_id: str  # the Dify workspace
    user_id: str
    model_type: str
    provider: str
    model: str  # the Dify model name
    route: str | None  # the route label that will answer (None if unknown)
