"""Outbound HTTP: one shared aiohttp client, and the one mapping of its failures to gateway errors.

The session is created lazily inside the running loop (an aiohttp session belongs to the
loop it was made on) and keeps a keep-alive pool for every adapter and the Dify forwarder
of an app instance.

Failures become gateway errors here and nowhere else, with messages that name the caller's
``where`` and quote at most a short piece of the upstream's own error text:

- a non-2xx reply: :func:`status_error`, its class by status
  (``upstream error HTTP <status> (<where>): <message from the body>``);
- no reply in time (``TimeoutError``, aiohttp's timeouts included): ``UpstreamTimeout``,
  ``upstream timed out[ after <s> s] (<where>)``;
- a failed exchange (``aiohttp.ClientError``, ``ConnectionError``): ``UpstreamUnavailable``,
  ``upstream unreachable or failed (<where>): <ExceptionType>: <text>``.

Secrets given by the caller are masked (``***``) in every message, whatever echoed them, and
aiohttp's connection reprs (which list proxy settings, credentials included) are cut off.
"""

from __future__ import annotations

import asyncio
import urllib.parse
import urllib.request
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
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
# What a failed exchange raises (aiohttp's timeouts are TimeoutErrors too: checked first).
TRANSPORT_ERRORS: tuple[type[BaseException], ...] = (TimeoutError, aiohttp.ClientError, ConnectionError)

# A reply being read (its status, headers and ``content`` stream), for callers that stream it.
Response = aiohttp.ClientResponse


def request_timeout(total_s: float, *, connect_s: float | None) -> aiohttp.ClientTimeout:
    """The per-request timeout: the whole exchange within ``total_s``, the socket connected within ``connect_s``."""
    return aiohttp.ClientTimeout(total=total_s, sock_connect=connect_s)


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
    return _shortened(" ".join(text.split()))


def status_error(status: int, body: bytes, headers: Mapping[str, str], where: str, secret: str | None) -> UpstreamError:
    """The ``UpstreamError`` for a non-2xx reply: its class by status, the body's message
    (``secret`` removed, whatever echoed it), and the upstream's Retry-After."""
    cls = upstream_error_for_status(status)
    detail = error_detail(body)
    if secret:
        detail = detail.replace(secret, "***")
    retry_after = retry_after_seconds(headers.get("Retry-After"))
    return cls(f"upstream error HTTP {status} ({where}): {detail}", status, retry_after)


def _shortened(text: str) -> str:
    return text[:MAX_DETAIL] + ("..." if len(text) > MAX_DETAIL else "")


def transport_reason(exc: BaseException, secrets: Iterable[str | None] = ()) -> str:
    """``exc`` as one short line (``ExceptionType: text``): whitespace collapsed, aiohttp's
    connection reprs cut off, ``secrets`` masked, at most ``MAX_DETAIL`` characters."""
    text = " ".join(f"{type(exc).__name__}: {exc}".split())
    # aiohttp's connection reprs list the proxy settings, proxy credentials included.
    text = text.partition(" Connection<")[0].partition("ConnectionKey(")[0]
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return _shortened(text)


def connect_timed_out(exc: BaseException) -> bool:
    """Whether a ``TimeoutError`` came before any connection was made (nothing reached the upstream)."""
    return isinstance(exc, aiohttp.ConnectionTimeoutError)


def transport_error(
    exc: BaseException, where: str, *, timeout_s: float | None = None, secrets: Iterable[str | None] = ()
) -> UpstreamError:
    """The gateway error for one of ``TRANSPORT_ERRORS``: ``UpstreamTimeout`` for a timeout
    (naming ``timeout_s`` when given), else ``UpstreamUnavailable``."""
    if isinstance(exc, TimeoutError):
        after = f" after {timeout_s:g} s" if timeout_s is not None else ""
        return UpstreamTimeout(f"upstream timed out{after} ({where})")
    return UpstreamUnavailable(f"upstream unreachable or failed ({where}): {transport_reason(exc, secrets)}")


@contextmanager
def upstream_errors(
    where: str, *, timeout_s: float | None = None, secrets: Iterable[str | None] = ()
) -> Iterator[None]:
    """Raise what the block raises, a transport failure as its gateway error (:func:`transport_error`).

    Gateway errors raised inside (``status_error``, malformed replies) pass through unchanged.
    """
    try:
        yield
    except TRANSPORT_ERRORS as exc:
        raise transport_error(exc, where, timeout_s=timeout_s, secrets=tuple(secrets)) from exc


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

    # No pool cap by default (aiohttp's 0): the cap on concurrent calls is the admission's
    # ``server.max_in_flight``. A smaller pool (it was 256) queues calls already admitted inside
    # aiohttp, unseen: 1,000 one-second streams on one worker then ran 256 at a time, the rest
    # waited seconds for a connection and the queue filled the in-flight cap (429s).
    def __init__(self, *, limit: int = 0, connect_timeout_s: float = 10.0) -> None:
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
        with upstream_errors(where, timeout_s=timeout_s, secrets=(secret,)):
            async with session.post(
                url, data=orjson.dumps(payload), headers=request_headers, timeout=timeout, proxy=self.proxy_for(url)
            ) as resp:
                body = await resp.read()
                status, reply_headers = resp.status, resp.headers
        if not 200 <= status < 300:
            raise status_error(status, body, reply_headers, where, secret)
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise UpstreamUnavailable(f"malformed reply from upstream ({where}): not JSON") from exc
        return JsonReply(data=data, headers=reply_headers)
