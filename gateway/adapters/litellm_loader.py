"""Process-wide, lazy litellm set-up.

Importing litellm takes seconds and ~160 MB, so the gateway becomes ready without it and
imports it in a worker thread (at start-up when a route needs it, else on first use).
Globals are set once here: no bundled-cost-map download, no debug output, no library
retries (the gateway owns retries) and no callbacks.
"""

from __future__ import annotations

import asyncio
import os
import threading
from types import ModuleType

_lock = threading.Lock()
_module: ModuleType | None = None


def _configure_environment() -> None:
    # Before the first import: otherwise litellm fetches its cost map over the network.
    os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
    os.environ.setdefault("LITELLM_LOG", "ERROR")


def load_litellm_sync() -> ModuleType:
    """Import and configure litellm once (blocking)."""
    global _module
    with _lock:
        if _module is None:
            _configure_environment()
            import litellm

            litellm.suppress_debug_info = True
            litellm.drop_params = True  # unknown params for a provider are dropped, not fatal
            litellm.num_retries = 0
            litellm.telemetry = False
            litellm.turn_off_message_logging = True
            _module = litellm
        return _module


async def load_litellm() -> ModuleType:
    """The configured litellm module, imported off the event loop on first use."""
    if _module is not None:
        return _module
    return await asyncio.to_thread(load_litellm_sync)
