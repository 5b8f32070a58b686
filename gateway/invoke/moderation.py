"""``/invoke/moderation``: ``result`` is true when the text is flagged."""

from __future__ import annotations

from gateway.adapters.base import ModerationCall, ModerationOutput
from gateway.adapters.registry import Backends
from gateway.config import RequestLimits
from gateway.invoke.common import call_upstream, resolve, upstream_context
from gateway.invoke.limits import Limits
from gateway.protocol.requests import ModerationInvokeRequest
from gateway.protocol.results import ModerationResultDict
from gateway.resilience.plan import Resilience
from gateway.routing import RouteTable, Target


class ModerationService:
    def __init__(
        self, routes: RouteTable, backends: Backends, resilience: Resilience, limits: RequestLimits | None = None
    ) -> None:
        self._routes = routes
        self._limits = Limits(limits or RequestLimits())
        self._backends = backends
        self._resilience = resilience

    async def moderate(self, request: ModerationInvokeRequest) -> ModerationResultDict:
        resolution = resolve(self._routes, "moderation", request.provider, request.model, request.tenant_id)
        self._limits.check(resolution, "moderation_chars", len(request.text), "text")
        context = upstream_context(resolution, request.provider, request.model)

        async def attempt(target: Target, timeout_s: float) -> ModerationOutput:
            call = ModerationCall(target, context, request.text, timeout_s)
            return await self._backends.moderation(target).moderate(call)

        output, _ = await call_upstream(self._resilience, resolution, context, attempt)
        return {"result": output.flagged}
