"""What the rest of the gateway may read of the running app: a read-only view.

The console, the metrics and the serverless endpoint receive this instead of the app
itself, so nothing below the ASGI app depends on it (the layer contract in
``pyproject.toml`` enforces that).
"""

from __future__ import annotations

from typing import Any, Protocol


class GatewayStatus(Protocol):
    """The app's live state, as of the moment it is read."""

    @property
    def in_flight(self) -> int:
        """Inner-API requests counted in flight (from the end of their body to their last byte)."""
        ...

    @property
    def ready(self) -> bool:
        """Start-up work (the embedded models' first load) is done."""
        ...

    @property
    def draining(self) -> bool:
        """A SIGTERM started the drain: readiness is 503 and new connections are refused soon."""
        ...

    @property
    def started_at(self) -> float:
        """Wall-clock time (``time.time()``) the app was built."""
        ...

    @property
    def last_reload(self) -> dict[str, Any] | None:
        """The last configuration reload (time, trigger, result, message, settings that need a
        restart), or None before the first."""
        ...
