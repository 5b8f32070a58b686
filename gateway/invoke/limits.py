"""Caps on the work one request may ask for (``limits`` in the configuration).

Checked after the route is resolved (a route may override a cap; a request without a route
is forwarded, not capped) and before any backend is called. Every check is O(1) per item:
lengths only, never a pass over the text.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

from gateway.config import RequestLimits
from gateway.errors import PayloadTooLarge
from gateway.routing import Resolution

LimitKey = Literal[
    "embedding_inputs",
    "embedding_input_chars",
    "rerank_docs",
    "rerank_doc_chars",
    "tts_chars",
    "moderation_chars",
    "speech2text_bytes",
]

_UNITS: dict[LimitKey, str] = {
    "embedding_inputs": "inputs",
    "embedding_input_chars": "characters",
    "rerank_docs": "documents",
    "rerank_doc_chars": "characters",
    "tts_chars": "characters",
    "moderation_chars": "characters",
    "speech2text_bytes": "bytes of audio",
}


class Limits:
    """The configured caps; ``check`` picks the route's own value where it sets one."""

    def __init__(self, limits: RequestLimits) -> None:
        self._limits = limits

    def cap(self, resolution: Resolution, key: LimitKey) -> tuple[int, str]:
        """The cap for this route and the name of the setting that holds it."""
        own = resolution.route.limits
        if own is not None and key in own.model_fields_set:
            return int(getattr(own, key)), f"route {resolution.route_label!r} limits.{key}"
        return int(getattr(self._limits, key)), f"limits.{key}"

    def check(self, resolution: Resolution, key: LimitKey, value: int, what: str) -> None:
        """``PayloadTooLarge`` naming the setting, the value seen and the cap, if over it."""
        cap, setting = self.cap(resolution, key)
        if value > cap:
            raise PayloadTooLarge(
                f"{setting}: {what} has {value:,} {_UNITS[key]}, over the limit of {cap:,} "
                "(set in the gateway configuration)"
            )

    def check_each(self, resolution: Resolution, key: LimitKey, lengths: Iterable[int], what: str) -> None:
        """``check`` for each of ``lengths``; the first over the cap is named by its index (``texts[17]``)."""
        cap, _ = self.cap(resolution, key)
        for index, length in enumerate(lengths):
            if length > cap:
                self.check(resolution, key, length, f"{what}[{index}]")
