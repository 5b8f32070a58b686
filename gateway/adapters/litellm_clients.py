"""Reused OpenAI SDK clients for the litellm calls that take one (``client=``).

litellm builds some OpenAI clients from the key and base URL alone (moderation: the SDK's
two default retries and a 600 s timeout; speech and transcription: no configured headers).
A client per target, built from the target's own settings, fixes that and keeps one
connection pool per target.
"""

from __future__ import annotations

import time
from typing import Any

_CEILING_S = 600.0
_CONNECT_S = 10.0


class OpenAIClients:
    """``openai.AsyncOpenAI`` clients keyed by connection settings (no retries: the gateway retries)."""

    def __init__(self) -> None:
        self._clients: dict[tuple[Any, ...], Any] = {}
        self._used: dict[tuple[Any, ...], float] = {}  # key -> last get (monotonic)

    def get(self, kwargs: dict[str, Any]) -> Any:
        """The client for litellm call ``kwargs`` (api_base, api_key, organization, extra_headers, timeout)."""
        # Per-request headers (the caller's traceparent) go with each call, not into the
        # client: a client per trace id would be a connection pool per request.
        headers = {k: v for k, v in (kwargs.get("extra_headers") or {}).items() if k != "traceparent"}
        key = (
            kwargs.get("api_base"),
            kwargs.get("api_key"),
            kwargs.get("organization"),
            tuple(sorted(headers.items())),
        )
        self._used[key] = time.monotonic()
        client = self._clients.get(key)
        if client is None:
            import httpx
            from openai import AsyncOpenAI

            # Not keyed by timeout: each call's deadline differs (what is left of the
            # request's) and is enforced around the call; this is only the client's ceiling.
            client = AsyncOpenAI(
                api_key=kwargs.get("api_key") or "none",
                base_url=kwargs.get("api_base"),
                organization=kwargs.get("organization"),
                timeout=httpx.Timeout(_CEILING_S, connect=_CONNECT_S),
                max_retries=0,
                default_headers=headers or None,
            )
            self._clients[key] = client
        return client

    async def close_unused_since(self, since: float) -> int:
        """Close the clients no call asked for since ``since`` (a configuration reload: the
        targets of the old routes). One still needed is simply made again on its next call."""
        stale = [key for key, used in self._used.items() if used < since]
        for key in stale:
            del self._used[key]
            client = self._clients.pop(key, None)
            if client is not None:
                await client.close()
        return len(stale)

    async def aclose(self) -> None:
        clients, self._clients = list(self._clients.values()), {}
        self._used.clear()
        for client in clients:
            await client.close()
