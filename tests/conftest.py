"""Shared fixtures. Tests may talk to loopback only: any other connection fails loudly."""

from __future__ import annotations

import ipaddress
import os
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from tests.fakes.upstream import FakeUpstream
from tests.support import sdk
from tests.support.postgres import PrivatePostgres
from tests.support.redis import SHARED_URL, RedisProcess, reachable

# tests/deploy needs helm from .ci-tools/: scripts/verify-deploy runs it with DEPLOY_TESTS=1.
collect_ignore = [] if os.environ.get("DEPLOY_TESTS") == "1" else ["deploy"]

# Installing the SDK's virtualenv needs the package index, through the user's own proxies.
sdk.INSTALL_ENV = dict(os.environ)
# Proxies point at a closed port, so a client that honours them cannot reach out either.
_CLOSED = "http://127.0.0.1:9"
for _name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
    os.environ[_name] = _CLOSED
os.environ["NO_PROXY"] = os.environ["no_proxy"] = "127.0.0.1,localhost,::1"
os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
# Gateways started by tests keep their default SQLite ledger out of the checkout.
if "DIFY_GATEWAY_DATA_DIR" not in os.environ:
    import atexit
    import shutil
    import tempfile

    os.environ["DIFY_GATEWAY_DATA_DIR"] = tempfile.mkdtemp(prefix="dify-gateway-test-data-")
    atexit.register(shutil.rmtree, os.environ["DIFY_GATEWAY_DATA_DIR"], ignore_errors=True)


def _is_loopback(host: Any) -> bool:
    if not isinstance(host, str):
        return True  # AF_UNIX paths and the like stay on the machine
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


def _network_guard(event: str, args: tuple[Any, ...]) -> None:
    if event == "socket.connect":
        address = args[1]
        if isinstance(address, tuple) and not _is_loopback(address[0]):
            raise ConnectionRefusedError(f"tests may not connect to {address[0]}")
    elif event == "socket.getaddrinfo":
        if not _is_loopback(args[0]):
            raise OSError(f"tests may not resolve {args[0]!r}")


sys.addaudithook(_network_guard)


@pytest.fixture(scope="session", autouse=True)
def _litellm_imported() -> None:
    """litellm imported once, up front. Gateways import it in a background thread at start-up,
    but pytest swaps the process-wide warning filters per test (warnings are errors here), so
    an import running across a test's start can trip over a warning litellm itself silences
    at import (pydantic's ReadOnly TypedDict notice) and be left half done."""
    import warnings

    from gateway.adapters.litellm_loader import load_litellm_sync

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        load_litellm_sync()


@pytest.fixture(scope="session")
def upstream() -> Iterator[FakeUpstream]:
    fake = FakeUpstream()
    fake.start()
    yield fake
    fake.stop()


@pytest.fixture
def fake(upstream: FakeUpstream) -> FakeUpstream:
    """The shared fake upstream, with scripts and records cleared for this test."""
    upstream.reset()
    return upstream


# Real Redis servers (the embedding cache's tests).


@pytest.fixture
def private_postgres() -> Iterator[PrivatePostgres]:
    """A PostgreSQL server of this test's own, which it may stop() and start() again."""
    server = PrivatePostgres().start()
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """``REDIS_URL``, else the local Redis on 6379, else a private server for the session; never skipped.

    Shared servers: use a unique key prefix per test and delete your keys; never FLUSHALL."""
    if os.environ.get("REDIS_URL"):
        yield os.environ["REDIS_URL"]
    elif reachable(SHARED_URL):
        yield SHARED_URL
    else:
        server = RedisProcess().start()
        try:
            yield server.url
        finally:
            server.stop()


@pytest.fixture
def private_redis() -> Iterator[RedisProcess]:
    """A redis-server of this test's own: pause(), resume(), kill(), restart(), flush(), url."""
    server = RedisProcess().start()
    try:
        yield server
    finally:
        server.stop()
