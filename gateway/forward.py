"""Forwarding an inner-API request to Dify unchanged (used for summaries without a summary model)."""

from __future__ import annotations

import aiohttp
from starlette.requests import Request
from starlette.responses import Response

from gateway.adapters.http_client import HttpClient
from gateway.http import INNER_PREFIX, JSON_MEDIA_TYPE
from gateway.protocol.envelope import error_body

_FORWARD_TIMEOUT_S = 230.0
# Request headers Dify reads; hop-by-hop and length headers are set again by the client.
_PASSED_HEADERS = ("x-inner-api-key", "content-type", "traceparent", "tracestate")


class DifyForwarder:
    def __init__(self, api_url: str, http: HttpClient) -> None:
        self._base = api_url.rstrip("/")
        self._http = http

    async def forward(self, request: Request, body: bytes) -> Response:
        """Dify's answer, status and body as they came; a failure to reach Dify becomes an
        envelope error (HTTP 200 like Dify's own unary errors, since the daemon reads the body)."""
        path: str = request.scope["path"]
        url = self._base + path[path.find(INNER_PREFIX) :]
        headers = {k: v for k in _PASSED_HEADERS if (v := request.headers.get(k)) is not None}
        timeout = aiohttp.ClientTimeout(total=_FORWARD_TIMEOUT_S, connect=10.0)
        try:
            async with self._http.session().post(url, data=body, headers=headers, timeout=timeout) as reply:
                content = await reply.read()
                media_type = reply.headers.get("content-type", JSON_MEDIA_TYPE)
                return Response(content, status_code=reply.status, media_type=media_type)
        except (TimeoutError, aiohttp.ClientError) as exc:
            message = f"cannot reach Dify at {self._base} to forward {path}: {type(exc).__name__}"
            return Response(error_body(message), media_type=JSON_MEDIA_TYPE)
