"""gateway.console.status: addresses and backend keys without credentials, paths or queries."""

from __future__ import annotations

import pytest

from gateway.console.status import _public_key, public_address


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://user:pass@api.example.com:8443/v1?key=abc", "https://api.example.com:8443"),
        ("http://vllm:8000/v1", "http://vllm:8000"),
        ("http://[::1]:9000/x", "http://[::1]:9000"),
        ("https://api.example.com", "https://api.example.com"),
        (None, None),
    ],
)
def test_public_address_drops_credentials_path_and_query(url: str | None, expected: str | None) -> None:
    assert public_address(url) == expected


def test_backend_keys_keep_the_model_and_only_the_host_of_the_address() -> None:
    assert (
        _public_key("openai/gpt-4o@https://proxy.example.com/v1/acct-123") == "openai/gpt-4o@https://proxy.example.com"
    )
    assert _public_key("vertex_ai/claude-3@20240620") == "vertex_ai/claude-3@20240620"
    assert (
        _public_key("vertex_ai/claude-3@20240620@http://10.0.0.1:8000/v1")
        == "vertex_ai/claude-3@20240620@http://10.0.0.1:8000"
    )
