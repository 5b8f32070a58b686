"""Errors the gateway reports, and their single mapping to HTTP status codes.

    GatewayError                  any failure that reaches the caller as a clear message
    ├── BadRequest        400     the request body is not a valid invocation
    ├── Unauthorized      401     missing or wrong key (X-Inner-Api-Key, admin or serverless key)
    ├── Forbidden         403     a serverless session with no tenant
    ├── NotFound          404     no such path
    ├── MethodNotAllowed  405     a method the path does not serve
    ├── PayloadTooLarge   413     the body exceeds server.max_body_bytes
    ├── Overloaded        429     server.max_in_flight invocations are already in flight
    ├── BudgetExceeded    429     the tenant has spent its budget (refused before any upstream call)
    ├── RateLimited       429     the tenant (or user) is over its rate limit; Retry-After says when
    ├── NoRoute           404     no route serves this type/provider/model
    └── UpstreamError     502     the backend failed; subclasses keep its meaning
        ├── UpstreamBadRequest    400  the backend rejected the request (4xx other than below);
        │                              never retried, never sent to another target
        ├── UpstreamAuthError     502  the backend refused the gateway's credentials; the next
        │                              target may be tried, this one is not retried
        ├── UpstreamRateLimited   429
        ├── UpstreamTimeout       504
        └── UpstreamUnavailable   502  connection failure, 5xx, broken or malformed stream
            └── ModelCrashed      502  an embedded model's process died on this input (it is
                                       restarted; the same input is never sent to it again)

Messages name the route, provider and model; they never contain secrets or prompt text.
Where an error becomes bytes is decided by the caller: a non-200 envelope before a stream
starts, one final error frame after, an envelope with HTTP 200 on unary paths.
"""

from __future__ import annotations


class GatewayError(Exception):
    status: int = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadRequest(GatewayError):
    status = 400


class Unauthorized(GatewayError):
    status = 401


class Forbidden(GatewayError):
    status = 403


class NotFound(GatewayError):
    status = 404


class MethodNotAllowed(GatewayError):
    status = 405


class PayloadTooLarge(GatewayError):
    status = 413


class Overloaded(GatewayError):
    status = 429


class BudgetExceeded(GatewayError):
    """The message names the budget, what was spent, the limit and when it resets."""

    status = 429

    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s  # until the budget's window resets


class RateLimited(GatewayError):
    status = 429

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class NoRoute(GatewayError):
    status = 404


class UpstreamError(GatewayError):
    status = 502
    # Whether another attempt may succeed (connect errors, 429, 5xx, timeouts).
    retryable: bool = True
    # Whether another target may succeed where this one did not (its credentials, its health).
    failover: bool = True

    def __init__(self, message: str, upstream_status: int | None = None, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.upstream_status = upstream_status
        # The upstream's Retry-After, in seconds, when it sent one.
        self.retry_after_s = retry_after_s


class UpstreamBadRequest(UpstreamError):
    status = 400
    retryable = False
    failover = False  # the request itself is wrong: every target would refuse it


class UpstreamAuthError(UpstreamError):
    status = 502
    retryable = False  # the same credentials fail again; another target has its own


class UpstreamRateLimited(UpstreamError):
    status = 429


class UpstreamTimeout(UpstreamError):
    status = 504


class UpstreamUnavailable(UpstreamError):
    status = 502


class ModelCrashed(UpstreamUnavailable):
    retryable = False  # the same input would crash the fresh process too


def upstream_error_for_status(status: int | None) -> type[UpstreamError]:
    """The error class for an upstream HTTP status (None: no HTTP answer at all)."""
    if status is None:
        return UpstreamUnavailable
    if status == 429:
        return UpstreamRateLimited
    if status in (401, 403):
        return UpstreamAuthError
    if status in (408, 504):
        return UpstreamTimeout
    if 400 <= status < 500:
        return UpstreamBadRequest
    return UpstreamUnavailable


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """An HTTP ``Retry-After`` value (seconds or an HTTP date) in seconds; None if absent or odd."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        from email.utils import parsedate_to_datetime

        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None:
            return None
        import time

        seconds = when.timestamp() - (time.time() if now is None else now)
    if seconds != seconds or seconds < 0:  # NaN or in the past
        return 0.0 if seconds == seconds else None
    return seconds
