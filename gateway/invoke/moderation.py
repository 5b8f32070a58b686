"""``/invoke/moderation``: ``result`` is true when the text is flagged."""

from __future__ import annotations

from gateway.adapters.base import ModerationCall
from gateway.adapters.registry import Backends
from gateway.invoke.common import resolve, timeout_for, upstream_context, within
from gateway.protocol.requests import ModerationInvokeRequest
from gateway.protocol.results import ModerationResultDict
from gateway.routing import RouteTable


class ModerationService:
    def __init__(self, routes: RouteTable, backends: Backends) -> None:
        self._routes = routes
        self._backends = backends

    async def moderate(self, request: ModerationInvokeRequest) -> ModerationResultDict:
        resolution = resolve(self._routes, "moderation", request.provider, request.model, request.tenant_id)
        target = resolution.pick()
        context = upstream_context(resolution, request.provider, request.model)
        timeout_s = timeout_for(resolution, target)
        call = ModerationCall(target, context, request.text, timeout_s)
        output = await within(self._backends.moderation(target).moderate(call), timeout_s, context.describe(target))
        return {"result": output.flagged}
