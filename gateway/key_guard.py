"""Throttling wrong keys per client address, for the admin surfaces (``/console/api/*`` and
``/status/targets``).

Each address (an IPv6 address counts by its /64, which one host usually holds whole) has a
token bucket of wrong keys: ``burst`` of them at once, then one more every ``refill_s``.
Once it is empty, requests from that address are refused with 429 and ``Retry-After``
**before their key is compared**, even when the key is right: answering a right key would
tell a guesser which guess was right at full speed, which is what the throttle is there to
stop. Other addresses are not affected, so nobody can lock everyone out; an operator sharing
an address with a guesser waits at most ``refill_s`` for the next try. A missing key is not
a guess and costs nothing; a right key costs nothing either.

The table is bounded (``max_clients``): buckets that have filled up again are dropped first,
then the longest-idle ones. Every wrong key and every refusal is logged as a warning with
the client address (never the key), at most ``log_burst`` lines at once and one a second
after that; the next line logged says how many were left out.

Each worker process keeps its own table. Behind a reverse proxy the address is the proxy's
unless uvicorn is told to trust its ``X-Forwarded-For`` (``FORWARDED_ALLOW_IPS``).
"""

from __future__ import annotations

import ipaddress
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import Response

from gateway.http import JSON_MEDIA_TYPE
from gateway.protocol.envelope import error_body

log = logging.getLogger("dify_gateway")

BURST = 20  # wrong keys an address may send at once (a sign-in with a typo costs two)
REFILL_S = 6.0  # then one more every this many seconds: 10 a minute, against ~4,800 a second before
MAX_CLIENTS = 10_000
LOG_BURST = 20
LOG_REFILL_S = 1.0


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: float


class KeyGuard:
    """Wrong-key buckets per client address; see the module docstring."""

    def __init__(
        self,
        burst: int = BURST,
        refill_s: float = REFILL_S,
        max_clients: int = MAX_CLIENTS,
        log_burst: int = LOG_BURST,
        log_refill_s: float = LOG_REFILL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._burst = float(burst)
        self._refill_s = refill_s
        self._max_clients = max_clients
        self._clock = clock
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()  # least recently failed first
        self._log = _Bucket(float(log_burst), clock())
        self._log_burst = float(log_burst)
        self._log_refill_s = log_refill_s
        self._unlogged = 0

    def __len__(self) -> int:
        return len(self._buckets)

    # --- the two calls a surface makes ----------------------------------------------------

    def refusal(self, request: Request, surface: str, headers: Mapping[str, str] | None = None) -> Response | None:
        """A 429 reply when the request's address is throttled (its key is then not to be
        compared), else None."""
        client = client_address(request)
        wait_s = self.wait_s(client)
        if wait_s <= 0:
            return None
        retry_after = max(1, math.ceil(wait_s))
        self._warn("%s: refused a request from %s: too many wrong keys, retry in %d s", surface, client, retry_after)
        message = f"too many wrong keys from this address: retry in {retry_after} s"
        return Response(
            error_body(message),
            status_code=429,
            media_type=JSON_MEDIA_TYPE,
            headers={**(headers or {}), "retry-after": str(retry_after)},
        )

    def wrong_key(self, request: Request, surface: str) -> None:
        """Count a wrong key from the request's address (and log it, without the key)."""
        client = client_address(request)
        left = self.failed(client)
        self._warn("%s: wrong key from %s (%d more before throttling)", surface, client, left)

    # --- the buckets ------------------------------------------------------------------------

    def wait_s(self, client: str) -> float:
        """Seconds until ``client`` may try a key again (0: now)."""
        bucket = self._buckets.get(client)
        if bucket is None:
            return 0.0
        tokens = self._refilled(bucket, self._clock())
        return 0.0 if tokens >= 1 else (1 - tokens) * self._refill_s

    def failed(self, client: str) -> int:
        """Take one token from ``client``'s bucket; the whole tokens left."""
        now = self._clock()
        bucket = self._buckets.get(client)
        if bucket is None:
            self._make_room(now)
            bucket = self._buckets[client] = _Bucket(self._burst, now)
        else:
            self._buckets.move_to_end(client)
        bucket.tokens = max(0.0, self._refilled(bucket, now) - 1)
        bucket.updated = now
        return int(bucket.tokens)

    def _refilled(self, bucket: _Bucket, now: float) -> float:
        return min(self._burst, bucket.tokens + (now - bucket.updated) / self._refill_s)

    def _make_room(self, now: float) -> None:
        if len(self._buckets) < self._max_clients:
            return
        # Full buckets hold nothing worth keeping; among the rest, the longest idle goes.
        for client in [c for c, b in self._buckets.items() if self._refilled(b, now) >= self._burst]:
            del self._buckets[client]
        while len(self._buckets) >= self._max_clients:
            self._buckets.popitem(last=False)

    # --- logging, itself limited ------------------------------------------------------------

    def _warn(self, message: str, *args: object) -> None:
        now = self._clock()
        self._log.tokens = min(self._log_burst, self._log.tokens + (now - self._log.updated) / self._log_refill_s)
        self._log.updated = now
        if self._log.tokens < 1:
            self._unlogged += 1
            return
        self._log.tokens -= 1
        if self._unlogged:
            message += " (%d similar lines left out)"
            args = (*args, self._unlogged)
            self._unlogged = 0
        log.warning(message, *args)


def client_address(request: Request) -> str:
    """The address a bucket is kept for: IPv4 as it is, IPv6 by its /64 network."""
    host = request.client.host if request.client is not None else ""
    try:
        address = ipaddress.ip_address(host.partition("%")[0])
    except ValueError:
        return host or "unknown"
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)
