"""Commands packed by hiredis are byte for byte what redis-py's own packer sends."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, strategies as st
from redis.asyncio.connection import Connection, SSLConnection, UnixDomainSocketConnection

from gateway.cache.redis_store import create_redis_store, hiredis_packing
from gateway.config import CacheConfig

_argument = st.one_of(
    st.text(max_size=40),
    st.binary(max_size=40),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
)


def _both(*args: Any) -> tuple[bytes, bytes]:
    python = b"".join(Connection().pack_command(*args))
    fast = b"".join(hiredis_packing(Connection)().pack_command(*args))
    return fast, python


@given(st.sampled_from(["EVALSHA", "MSET", b"GET", "CONFIG GET", b"CLIENT SETNAME"]), st.lists(_argument, max_size=30))
def test_any_command_packs_to_the_same_bytes(name: str | bytes, arguments: list[Any]) -> None:
    fast, python = _both(name, *arguments)
    assert fast == python


def test_large_values_and_memoryviews_pack_the_same() -> None:
    vector = bytes(range(256)) * 24  # a 6 KB value, as the embedding cache writes
    fast, python = _both("MSET", "k1", vector, "k2", memoryview(vector), "k3", "ünïcödé")
    assert fast == python


def test_an_argument_hiredis_refuses_falls_back_to_redis_pys_error() -> None:
    from redis.exceptions import DataError

    with pytest.raises(DataError):
        hiredis_packing(Connection)().pack_command("SET", "k", True)


@pytest.mark.parametrize(
    ("url", "base"),
    [
        ("redis://127.0.0.1:6379/0", Connection),
        ("rediss://127.0.0.1:6380/0", SSLConnection),
        ("unix:///tmp/redis.sock", UnixDomainSocketConnection),
    ],
)
def test_stores_use_it_whatever_the_transport(url: str, base: type) -> None:
    store = create_redis_store(CacheConfig.model_validate({"redis_url": url}))
    connection_class = store.client.connection_pool.connection_class
    assert issubclass(connection_class, base) and connection_class is hiredis_packing(base)
