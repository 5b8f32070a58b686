"""Moderation through ``litellm.amoderation`` (OpenAI's /moderations, or a server speaking it).

litellm 1.106.2 sends every moderation through an OpenAI SDK client it builds from only the
key and base URL: the SDK's default two retries, a 600 s timeout, and no organization or
extra headers. So the adapter hands it its own client per target (no retries, the target's
timeout and headers), reused across calls.
"""

from __future__ import annotations

from typing import Any

from gateway.adapters.base import ModerationCall, ModerationOutput
from gateway.adapters.litellm_clients import OpenAIClients
from gateway.adapters.litellm_common import call_litellm, deadline_s, litellm_module, target_kwargs
from gateway.errors import UpstreamUnavailable


def flagged_categories(categories: Any) -> list[str]:
    """Names of the true categories, in OpenAI's spelling ("self-harm/intent").

    litellm's result carries each category twice, by API name and by SDK field name
    ("self_harm_intent"); a field name is dropped when its API name is present.
    """
    if not isinstance(categories, dict):
        return []
    true = [name for name, value in categories.items() if value is True]
    api_names = {name.replace("/", "_").replace("-", "_") for name in true if "/" in name or "-" in name}
    return [name for name in true if "/" in name or "-" in name or name not in api_names]


class LiteLLMModerationAdapter:
    def __init__(self, clients: OpenAIClients | None = None) -> None:
        self._clients = clients or OpenAIClients()

    async def aclose(self) -> None:
        await self._clients.aclose()

    async def moderate(self, call: ModerationCall) -> ModerationOutput:
        where = call.context.describe(call.target)
        timeout = deadline_s(call.target, call.timeout_s)
        kwargs = target_kwargs(call.target, timeout)
        litellm = await litellm_module()
        kwargs["client"] = self._clients.get(kwargs)
        response = await call_litellm(
            lambda: litellm.amoderation(input=call.text, **kwargs), timeout, where, kwargs.get("api_key")
        )
        results = getattr(response, "results", None) or []
        if not results:
            raise UpstreamUnavailable(f"malformed reply from upstream ({where}): no moderation result")
        first = results[0]
        flagged = first.get("flagged") if isinstance(first, dict) else getattr(first, "flagged", None)
        categories = first.get("categories") if isinstance(first, dict) else getattr(first, "categories", None)
        if not isinstance(flagged, bool):
            raise UpstreamUnavailable(f"malformed reply from upstream ({where}): no 'flagged' field")
        return ModerationOutput(flagged=flagged, categories=flagged_categories(categories))
