"""Errors the gateway reports, and their single mapping to HTTP status codes.

    GatewayError                  any failure that reaches the caller as a clear message
    ├── BadRequest        400     the request body is not a valid invocation
    ├── Unauthorized      401     missing or wrong X-Inner-Api-Key
    ├── NotFound          404     no such path
    ├── PayloadTooLarge   413     the body exceeds server.max_body_bytes
    ├── NoRoute           404     no route serves this type/provider/model
    └── UpstreamError     502     the backend failed; subclasses keep its meaning
        ├── UpstreamBadRequest    400  the backend rejected the request (4xx other than below)
        ├── UpstreamAuthError     502  the backend refused the gateway's credentials
        ├── UpstreamRateLimited   429
        ├── UpstreamTimeout       504
        └── UpstreamUnavailable   502  connection failure, 5xx, broken or malformed stream

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


class NotFound(GatewayError):
    status = 404


class PayloadTooLarge(GatewayError):
    status = 413


class NoRoute(GatewayError):
    status = 404


class UpstreamError(GatewayError):
    status = 502
    # Whether another attempt may succeed (connect errors, 429, 5xx, timeouts).
    retryable: bool = True

    def __init__(self, message: str, upstream_status: int | None = None) -> None:
        super().__init__(message)
        self.upstream_status = upstream_status


class UpstreamBadRequest(UpstreamError):
    status = 400
    retryable = False


class UpstreamAuthError(UpstreamError):
    status = 502
    retryable = False


class UpstreamRateLimited(UpstreamError):
    status = 429


class UpstreamTimeout(UpstreamError):
    status = 504


class UpstreamUnavailable(UpstreamError):
    status = 502


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
