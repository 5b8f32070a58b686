"""``/invoke/moderation``: ``result`` is true when the text is flagged."""

from __future__ import annotations

from gateway.adapters.base import ModerationCall, ModerationOutput
from gateway.invoke.common import RoutedService, call_upstream, resolve, upstream_context
from gateway.protocol.requests import ModerationInvokeRequest
from gateway.protocol.results import ModerationResultDict
from gateway.routing import Target


class ModerationService(RoutedService):
    async def moderate(self, request: ModerationInvokeRequest) -> ModerationResultDict:
        resolution = resolve(self._routes, "moderation", request.provider, request.model, request.tenant_id)
        self._limits.check(resolution, "moderation_chars", len(request.text), "text")
        context = upstream_context(resolution, request.provider, request.model)

        async def attempt(target: Target, timeout_s: float) -> ModerationOutput:
            call = ModerationCall(target, context, request.text, timeout_s)
            return await self._backends.moderation(target).moderate(call)

        output, _ = await call_upstream(self._resilience, resolution, context, attempt)
        return {"result": output.flagged}
