"""Cache keys: everything that changes a vector is in the key, and nothing secret is.

    {prefix}e1:{scope}:{sha256 hex}

``scope`` is the tenant id (``scope: tenant``) or ``_`` (``scope: global``). The digest
covers the target's fingerprint (its model string, endpoint and output-affecting
parameters), the input type, the input kind and the exact input, each length-prefixed so
no two different tuples can produce the same byte string. Keys carry no hash tag: a
batch's keys spread over a Redis Cluster and are read without cross-slot transactions.
"""

from __future__ import annotations

import hashlib
import struct
from typing import Any

import orjson

from gateway.adapters.base import InputType, MediaInput
from gateway.routing import Target

GLOBAL_SCOPE = "_"
_MAX_SCOPE_CHARS = 64


def target_fingerprint(target: Target) -> bytes:
    """What identifies the vectors a target produces (API keys, weights and timeouts do not)."""
    cfg = target.config
    identity: dict[str, Any] = {
        "model": target.model,
        "api_base": cfg.api_base,
        "api_version": cfg.api_version,
        "params": cfg.params,
        "litellm_params": {k: v for k, v in cfg.litellm_params.items() if "key" not in k.lower()},
    }
    return hashlib.sha256(orjson.dumps(identity, option=orjson.OPT_SORT_KEYS, default=str)).digest()


def scope_for(tenant_id: str, scope: str) -> str:
    if scope == "global":
        return GLOBAL_SCOPE
    if len(tenant_id) <= _MAX_SCOPE_CHARS and tenant_id.isprintable() and ":" not in tenant_id:
        return tenant_id
    return hashlib.sha256(tenant_id.encode()).hexdigest()[:32]


def _field(data: bytes) -> bytes:
    return struct.pack("<Q", len(data)) + data


class KeyBuilder:
    """Keys for one request: the fixed part is hashed once, each input adds its own bytes."""

    def __init__(self, prefix: str, scope: str, fingerprint: bytes, input_type: InputType) -> None:
        self._head = f"{prefix}e1:{scope}:"
        self._base = hashlib.sha256(_field(fingerprint) + _field(input_type.encode()))

    def key(self, item: MediaInput) -> str:
        digest = self._base.copy()
        digest.update(_field(item.kind.encode()))
        digest.update(_field(item.content.encode()))
        return self._head + digest.hexdigest()
