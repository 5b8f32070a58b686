"""gateway.adapters.litellm_embedding: decoding and ordering vectors, token counts, provider input
types, image styles, the Cohere URL."""

from __future__ import annotations

import base64
import struct
from types import SimpleNamespace

import numpy as np
import pytest

from gateway.adapters.litellm_embedding import (
    cohere_embed_url,
    decode_vector,
    image_style,
    input_type_kwargs,
    ordered_vectors,
    reported_tokens,
)


def test_decode_vector_reads_little_endian_float32_base64() -> None:
    values = [0.5, -1.0, 0.0078125, 3.25]
    encoded = base64.b64encode(struct.pack("<4f", *values)).decode()
    decoded = decode_vector(encoded)
    assert isinstance(decoded, np.ndarray) and decoded.dtype == np.float32  # no Python floats made
    assert decoded.tolist() == values
    assert decode_vector(values) == values
    with pytest.raises(ValueError):
        decode_vector(base64.b64encode(b"\x00" * 6).decode())  # not a whole number of floats
    with pytest.raises(ValueError):
        decode_vector({"not": "a vector"})


def test_ordered_vectors_sorts_by_index_and_checks_the_count() -> None:
    data = [
        {"index": 2, "embedding": [2.0]},
        SimpleNamespace(index=0, embedding=[0.0]),
        {"index": 1, "embedding": [1.0]},
    ]
    assert ordered_vectors(data, 3) == [[0.0], [1.0], [2.0]]
    assert ordered_vectors([{"embedding": [0.0]}, {"embedding": [1.0]}], 2) == [[0.0], [1.0]]
    with pytest.raises(ValueError, match="2 vectors for 3 inputs"):
        ordered_vectors(data[:2], 3)
    with pytest.raises(ValueError, match="indexes"):
        ordered_vectors([{"index": 0, "embedding": [0.0]}, {"index": 0, "embedding": [1.0]}], 2)


def test_reported_tokens() -> None:
    assert reported_tokens(SimpleNamespace(usage=SimpleNamespace(prompt_tokens=7, total_tokens=9))) == 7
    assert reported_tokens(SimpleNamespace(usage=SimpleNamespace(prompt_tokens=None, total_tokens=9))) == 9
    assert reported_tokens(SimpleNamespace(usage=SimpleNamespace(prompt_tokens=0, total_tokens=0))) is None
    assert reported_tokens(SimpleNamespace()) is None


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("cohere/embed-v4.0", {"input_type": "search_query"}),
        ("bedrock/cohere.embed-english-v3", {"input_type": "search_query"}),
        ("voyage/voyage-3", {"input_type": "query"}),
        ("nvidia_nim/nvidia/nv-embedqa-e5-v5", {"input_type": "query"}),
        ("jina_ai/jina-embeddings-v4", {"task": "retrieval.query"}),
        ("jina_ai/jina-clip-v2", {}),
        ("gemini/gemini-embedding-001", {"task_type": "RETRIEVAL_QUERY"}),
        ("vertex_ai/text-embedding-005", {"task_type": "RETRIEVAL_QUERY"}),
        ("openai/text-embedding-3-small", {}),
        ("bedrock/amazon.titan-embed-text-v2:0", {}),
    ],
)
def test_input_type_kwargs(model: str, expected: dict[str, str]) -> None:
    provider, name = model.split("/", 1)
    assert input_type_kwargs(provider, name, "query") == expected


def test_image_styles() -> None:
    assert image_style("jina_ai", "jina-clip-v2") == "inline"
    assert image_style("bedrock", "amazon.titan-embed-image-v1") == "inline"
    assert image_style("cohere", "embed-v4.0") == "alone"
    assert image_style("voyage", "voyage-multimodal-3") == "voyage"
    assert image_style("voyage", "voyage-3") is None
    assert image_style("openai", "text-embedding-3-small") is None
    assert image_style("vertex_ai", "multimodalembedding@001") is None


@pytest.mark.parametrize(
    ("api_base", "url"),
    [
        ("https://api.cohere.com", "https://api.cohere.com/v2/embed"),
        ("https://api.cohere.com/", "https://api.cohere.com/v2/embed"),
        ("https://api.cohere.com/v2", "https://api.cohere.com/v2/embed"),
        ("https://api.cohere.com/v1", "https://api.cohere.com/v2/embed"),
        ("https://proxy/cohere/v1/embed", "https://proxy/cohere/v1/embed"),
    ],
)
def test_cohere_embed_url(api_base: str, url: str) -> None:
    assert cohere_embed_url(api_base) == url
