"""The pure helpers of the remote adapters: media, vectors, results, names, URLs."""

from __future__ import annotations

import base64
import struct
from types import SimpleNamespace

import numpy as np
import pytest

from gateway.adapters.base import ScoredDoc
from gateway.adapters.litellm_embedding import (
    cohere_embed_url,
    decode_vector,
    image_style,
    input_type_kwargs,
    ordered_vectors,
    reported_tokens,
)
from gateway.adapters.litellm_media import decode_base64, image_data_uri, looks_like_image_uri, sniff_image
from gateway.adapters.litellm_moderation import flagged_categories
from gateway.adapters.litellm_rerank import litellm_target, parse_results
from gateway.adapters.litellm_speech import mime_type
from gateway.http_client import MAX_DETAIL, error_detail

PNG = b"\x89PNG\r\n\x1a\n" + bytes(8)


@pytest.mark.parametrize(
    ("data", "mime"),
    [
        (PNG, "image/png"),
        (b"\xff\xd8\xff\xdb" + bytes(8), "image/jpeg"),
        (b"GIF89a" + bytes(8), "image/gif"),
        (b"GIF87a" + bytes(8), "image/gif"),
        (b"RIFF\x10\x00\x00\x00WEBPVP8 ", "image/webp"),
        (b"RIFF\x10\x00\x00\x00WAVEfmt ", None),
        (b"BM" + bytes(8), None),
        (b"", None),
    ],
)
def test_sniff_image(data: bytes, mime: str | None) -> None:
    assert sniff_image(data) == mime


def test_image_data_uri_is_canonical_whatever_arrives() -> None:
    canonical = "data:image/png;base64," + base64.b64encode(PNG).decode()
    raw = base64.b64encode(PNG).decode()
    for given in (raw, raw.rstrip("="), f"{raw[:6]}\n{raw[6:]}", canonical, "data:image/jpeg;base64," + raw):
        assert image_data_uri(given) == canonical  # the bytes decide the type, not the label
    assert looks_like_image_uri(canonical)


@pytest.mark.parametrize("bad", ["not base64!", "data:image/png,rawbytes", base64.b64encode(b"BM bitmap").decode()])
def test_image_data_uri_refuses_non_images(bad: str) -> None:
    with pytest.raises(ValueError) as info:
        image_data_uri(bad)
    assert bad not in str(info.value)


def test_decode_base64_tolerates_padding_and_whitespace() -> None:
    assert decode_base64(" aGVsbG8 \n") == b"hello"
    assert decode_base64("data:text/plain;base64,aGVsbG8=") == b"hello"


@pytest.mark.parametrize(
    ("text", "sniffed"),
    [("a cat", False), ("data:image/png;base64,aGVsbG8=", True), ("data:image/png;base64,aGVsbG8", False)],
)
def test_looks_like_image_uri_matches_litellms_test(text: str, sniffed: bool) -> None:
    assert looks_like_image_uri(text) is sniffed


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


def test_litellm_rerank_targets() -> None:
    assert litellm_target("xinference/bge-reranker", "http://x:9997") == (
        "hosted_vllm/bge-reranker",
        "http://x:9997/v1",
    )
    assert litellm_target("xinference/bge-reranker", "http://x:9997/v1/") == (
        "hosted_vllm/bge-reranker",
        "http://x:9997/v1",
    )
    assert litellm_target("cohere/rerank-v3.5", "https://api.cohere.com/v2") == (
        "cohere/rerank-v3.5",
        "https://api.cohere.com",
    )
    assert litellm_target("jina_ai/m", "https://api.jina.ai/v1") == ("jina_ai/m", "https://api.jina.ai/v1")


def test_parse_results() -> None:
    results = [{"index": 1, "relevance_score": 0.9}, SimpleNamespace(index=0, relevance_score=0)]
    assert parse_results(results, 2) == [ScoredDoc(1, 0.9), ScoredDoc(0, 0.0)]
    for bad in ([{"index": 2, "relevance_score": 1.0}], [{"index": 0, "relevance_score": "high"}]):
        with pytest.raises(ValueError):
            parse_results(bad, 2)


def test_flagged_categories_use_api_names_once() -> None:
    categories = {
        "harassment": False,
        "self_harm_intent": True,
        "self-harm/intent": True,
        "violence": True,
        "illicit_violent": True,  # only the SDK spelling present: kept as it is
        "sexual": None,
    }
    assert flagged_categories(categories) == ["self-harm/intent", "violence", "illicit_violent"]
    assert flagged_categories(None) == []


def test_speech_mime_types() -> None:
    assert mime_type("mp3", "audio/mpeg") == "audio/mpeg"
    assert mime_type("opus", "audio/mpeg") == "audio/ogg"
    assert mime_type("WAV", None) == "audio/wav"
    assert mime_type("ulaw", "audio/basic; rate=8000") == "audio/basic"
    assert mime_type("ulaw", "text/html") == "application/octet-stream"


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        (b'{"error": {"message": "bad key", "type": "x"}}', "bad key"),
        (b'{"error": "Input validation error", "error_type": "Validation"}', "Input validation error"),
        (b'{"detail": "Model not found"}', "Model not found"),
        (b"<html>\n  Bad   Gateway </html>", "<html> Bad Gateway </html>"),
    ],
)
def test_error_detail(body: bytes, detail: str) -> None:
    assert error_detail(body) == detail


def test_error_detail_is_short() -> None:
    detail = error_detail(('{"error": {"message": "' + "secret prompt " * 200 + '"}}').encode())
    assert len(detail) == MAX_DETAIL + 3 and detail.endswith("...")
