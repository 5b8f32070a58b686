"""One shared aiohttp client for the direct HTTP adapters, with the upstream error mapping.

The session is created lazily inside the running loop (an aiohttp session belongs to the
loop it was made on) and keeps a keep-alive pool for every adapter of an app instance.
Failures become gateway errors here, with messages that name the caller's ``where`` and
quote at most a short piece of the upstream's own error text.
"""

from __future__ import annotations

import asyncio
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson

from gateway.errors import (
    UpstreamError,
    UpstreamTimeout,
    UpstreamUnavailable,
    retry_after_seconds,
    upstream_error_for_status,
)

MAX_DETAIL = 200


@dataclass(frozen=True, slots=True)
class JsonReply:
    data: Any
    headers: Mapping[str, str]


def error_detail(body: bytes) -> str:
    """A short description from an error body: its error message if it has one, else its start."""
    message: Any = None
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        parsed = None
    if isinstance(parsed, dict):
        error = parsed.get("error")
        if isinstance(error, dict):
            message = error.get("message")
        elif isinstance(error, str):
            message = error
        message = message or parsed.get("message") or parsed.get("detail")
    text = message if isinstance(message, str) else body.decode("utf-8", errors="replace")
    text = " ".join(text.split())
    return text[:MAX_DETAIL] + ("..." if len(text) > MAX_DETAIL else "")


def status_error(status: int, body: bytes, headers: Mapping[str, str], where: str, secret: str | None) -> UpstreamError:
    """The ``UpstreamError`` for a non-2xx reply: its class by status, the body's message
    (``secret`` removed, whatever echoed it), and the upstream's Retry-After."""
    cls = upstream_error_for_status(status)
    detail = error_detail(body)
    if secret:
        detail = detail.replace(secret, "***")
    retry_after = retry_after_seconds(headers.get("Retry-After"))
    return cls(f"upstream error HTTP {status} ({where}): {detail}", status, retry_after)


class EnvProxies:
    """``HTTP(S)_PROXY`` / ``NO_PROXY`` (as litellm's httpx clients apply them), read once.

    aiohttp's own ``trust_env`` re-reads the environment and ``~/.netrc`` in a worker
    thread on every request: two thread hand-offs per upstream call on the hot path.
    Here the environment is read when the client is made and the answer kept per URL.
    """

    _MAX_URLS = 4096

    def __init__(self) -> None:
        self._proxies = urllib.request.getproxies_environment()
        self._by_url: dict[str, str | None] = {}

    def __call__(self, url: str) -> str | None:
        try:
            return self._by_url[url]
        except KeyError:
            pass
        proxy: str | None = None
        parts = urllib.parse.urlsplit(url)
        candidate = self._proxies.get(parts.scheme) or self._proxies.get("all")
        if candidate and not urllib.request.proxy_bypass_environment(parts.netloc, self._proxies):  # type: ignore[attr-defined]
            proxy = candidate
        if len(self._by_url) >= self._MAX_URLS:
            self._by_url.clear()  # templated routes could name many hosts; stay bounded
        self._by_url[url] = proxy
        return proxy


class HttpClient:
    """A lazily created ``aiohttp.ClientSession`` shared by the direct HTTP adapters."""

    def __init__(self, *, limit: int = 256, connect_timeout_s: float = 10.0) -> None:
        self._limit = limit
        self._connect_timeout_s = connect_timeout_s
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.proxy_for = EnvProxies()

    def session(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        if self._session is None or self._session.closed or self._loop is not loop:
            connector = aiohttp.TCPConnector(limit=self._limit, keepalive_timeout=30.0)
            # Proxies come from ``proxy_for`` per request (see EnvProxies), not trust_env.
            self._session = aiohttp.ClientSession(connector=connector, trust_env=False, raise_for_status=False)
            self._loop = loop
        return self._session

    async def aclose(self) -> None:
        session, self._session = self._session, None
        if session is not None and not session.closed:
            await session.close()

    async def post_json(
        self,
        url: str,
        payload: Any,
        *,
        timeout_s: float,
        where: str,
        headers: Mapping[str, str] | None = None,
        secret: str | None = None,
    ) -> JsonReply:
        """POST ``payload`` as JSON; the parsed JSON reply, or an ``UpstreamError``.

        ``secret`` (the API key sent in ``headers``) never appears in error messages, even
        when the upstream echoes it.
        """
        session = self.session()
        timeout = aiohttp.ClientTimeout(total=timeout_s, connect=min(self._connect_timeout_s, timeout_s))
        request_headers = {"Content-Type": "application/json", "Accept": "application/json", **(headers or {})}
        try:
            async with session.post(
                url, data=orjson.dumps(payload), headers=request_headers, timeout=timeout, proxy=self.proxy_for(url)
            ) as resp:
                body = await resp.read()
                status, reply_headers = resp.status, resp.headers
        except TimeoutError as exc:
            raise UpstreamTimeout(f"upstream timed out after {timeout_s:g} s ({where})") from exc
        except aiohttp.ClientError as exc:
            detail = f"{type(exc).__name__}: {exc}"[:MAX_DETAIL]
            raise UpstreamUnavailable(f"upstream unreachable or failed ({where}): {detail}") from exc
        if not 200 <= status < 300:
            raise status_error(status, body, reply_headers, where, secret)
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise UpstreamUnavailable(f"malformed reply from upstream ({where}): not JSON") from exc
        return JsonReply(data=data, headers=reply_headers)
