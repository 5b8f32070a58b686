"""Proves the daemon oracle (tests/support/daemon.py) against the shared protocol vectors and the Go rules."""

from __future__ import annotations

import ast
import copy
import json
import random
from pathlib import Path
from typing import Any

import pytest

from tests.support import daemon
from tests.support.daemon import FrameError, FrameReader, read_stream_reply, read_unary_reply, split_frames
from tests.support.vectors import VECTORS_DIR, load_vector, vector_paths

STREAM_KINDS = {
    "/inner/api/invoke/llm": "llm",
    "/inner/api/invoke/llm/structured-output": "llm_structured_output",
    "/inner/api/invoke/tts": "tts",
}
UNARY_KINDS = {
    "/inner/api/invoke/text-embedding": "text_embedding",
    "/inner/api/invoke/multimodal-embedding": "multimodal_embedding",
    "/inner/api/invoke/rerank": "rerank",
    "/inner/api/invoke/multimodal-rerank": "multimodal_rerank",
    "/inner/api/invoke/speech2text": "speech2text",
    "/inner/api/invoke/moderation": "moderation",
    "/inner/api/invoke/summary": "system_summary",
}
PLUGIN_PREFIX = {"llm": "read llm model failed: ", "tts": "read tts model failed: "}


def payload(obj: Any) -> bytes:
    """What Dify writes inside a frame: compact JSON followed by two newlines."""
    return (json.dumps(obj, separators=(",", ":"), ensure_ascii=False) + "\n\n").encode()


def frame(data: bytes | Any, *, magic: int = 0x0F, header_len: int = 10, reserved: bytes = b"\x00" * 7) -> bytes:
    body = data if isinstance(data, bytes) else payload(data)
    return (
        bytes([magic, reserved[0]])
        + header_len.to_bytes(2, "little")
        + len(body).to_bytes(4, "little")
        + reserved[1:]
        + body
    )


def stream_body(frames: list[Any]) -> bytes:
    return b"".join(frame(f) for f in frames)


def stream_vectors() -> list[dict[str, Any]]:
    out = []
    for path in vector_paths():
        v = json.loads(path.read_text(encoding="utf-8"))
        if "frames" in v["response_example"]:
            v["_name"] = path.name
            out.append(v)
    return out


def unary_vectors() -> list[dict[str, Any]]:
    out = []
    for path in vector_paths():
        v = json.loads(path.read_text(encoding="utf-8"))
        if v["path"] in UNARY_KINDS:
            v["_name"] = path.name
            out.append(v)
    return out


def good_chunk() -> dict[str, Any]:
    """The last frame of vector 01: text, usage with extra keys, finish_reason."""
    data: dict[str, Any] = copy.deepcopy(load_vector("01")["response_example"]["frames"][-1]["data"])
    return data


def llm_outcome(data: Any, **envelope: Any) -> daemon.DaemonStreamOutcome:
    return read_stream_reply(200, frame({"data": data, "error": "", **envelope}), "llm")


# ----------------------------------------------------------------------------------------------- vectors
def test_oracle_is_independent_of_the_gateway() -> None:
    tree = ast.parse(Path(daemon.__file__).read_text(encoding="utf-8"))
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert not any(m.split(".")[0] == "gateway" for m in imported), imported


def test_vectors_dir_is_present() -> None:
    assert VECTORS_DIR.is_dir(), VECTORS_DIR
    assert len(stream_vectors()) >= 6
    assert len(unary_vectors()) >= 8


@pytest.mark.parametrize("vector", stream_vectors(), ids=lambda v: v["_name"])
def test_every_stream_vector_frame_is_accepted(vector: dict[str, Any]) -> None:
    kind = STREAM_KINDS[vector["path"]]
    example = vector["response_example"]
    frames = example["frames"]
    body = stream_body(frames)
    # our framing reproduces the vector's header byte for byte
    assert body[:14].hex(" ") == example["first_frame_header_hex"]
    assert len(split_frames(body)[0]) == example["first_frame_payload_length"]

    outcome = read_stream_reply(200, body, kind)
    assert outcome.dropped == []
    data_frames = [f["data"] for f in frames if f["error"] == ""]
    assert len(outcome.chunks) == len(data_frames)
    error_frames = [f for f in frames if f["error"]]
    assert outcome.error == (f"request failed: {error_frames[0]['error']}" if error_frames else None)

    validator = {
        "llm": daemon.validate_llm_chunk,
        "llm_structured_output": daemon.validate_llm_structured_chunk,
        "tts": daemon.validate_tts_chunk,
    }[kind]
    for data in data_frames:
        assert validator(data) == []
    reemitted = [daemon.reemit(kind, d) for d in data_frames]
    assert outcome.chunks == reemitted

    if "plugin_receives" in vector:
        events = vector["plugin_receives"]
        expected = [e["data"] for e in events if e["event"] == "response"]
        # same values and the same key order as the daemon's Go structs
        assert json.dumps(outcome.chunks) == json.dumps(expected)
        errors = [e["message"] for e in events if e["event"] == "error"]
        if errors:
            assert outcome.error is not None
            assert errors == [PLUGIN_PREFIX[kind] + outcome.error]


def test_nonstream_vector_matches_the_serverless_capture() -> None:
    """Vector 17 captured what the plugin got for vector 02's single frame."""
    frame02 = load_vector("02")["response_example"]["frames"][0]["data"]
    line = load_vector("17")["response_example"]["lines"][0]["data"]
    assert line["message"] == "stream"
    assert json.dumps(daemon.reemit_llm_chunk(frame02)) == json.dumps(line["data"])


@pytest.mark.parametrize("vector", unary_vectors(), ids=lambda v: v["_name"])
def test_every_unary_vector(vector: dict[str, Any]) -> None:
    kind = UNARY_KINDS[vector["path"]]
    body = vector["response_example"]["body"]
    data, error = read_unary_reply(json.dumps(body).encode(), kind)
    errors = [e["message"] for e in vector.get("plugin_receives", []) if e["event"] == "error"]
    if errors:
        assert error is not None
        assert errors[0].endswith(": " + error)
        assert data is None
        return
    assert error is None
    assert data == body["data"]
    for event in vector.get("plugin_receives", []):
        if event["event"] == "response":
            assert json.dumps(data) == json.dumps(event["data"])


def test_pre_stream_error_vector_is_reported_with_status_and_body() -> None:
    vector = load_vector("05")
    raw = (json.dumps(vector["response_example"]["body"]) + "\n").encode()
    outcome = read_stream_reply(vector["response_example"]["http_status"], raw, "llm")
    assert outcome.chunks == [] and outcome.dropped == []
    assert vector["plugin_receives"][0]["message"] == "invoke llm model failed: " + str(outcome.error)


def test_load_vector_rejects_ambiguous_prefix() -> None:
    with pytest.raises(LookupError):
        load_vector("1")


def test_missing_vectors_dir_fails_loudly(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from tests.support import vectors

    monkeypatch.setattr(vectors, "VECTORS_DIR", tmp_path / "nope")
    with pytest.raises(FileNotFoundError):
        load_vector("01")


# ------------------------------------------------------------------------- frames the daemon drops (LLM)
def _mutate(path: str, value: Any) -> dict[str, Any]:
    data = good_chunk()
    *parents, last = path.split(".")
    node = data
    for p in parents:
        node = node[p]
    if value is _DELETE:
        del node[last]
    else:
        node[last] = value
    return data


_DELETE = object()

DROPPED = {
    "content null": ("delta.message.content", None),
    "content missing": ("delta.message.content", _DELETE),
    "content number": ("delta.message.content", 5),
    "content object": ("delta.message.content", {"type": "text"}),
    "content item bad type": ("delta.message.content", [{"type": "file", "data": "x"}]),
    "content item null": ("delta.message.content", [None]),
    "content item number field": ("delta.message.content", [{"type": "text", "data": 5}]),
    "index missing": ("delta.index", _DELETE),
    "index null": ("delta.index", None),
    "index 1.0": ("delta.index", 1.0),
    "index string": ("delta.index", "1"),
    "index > int64": ("delta.index", 2**63),
    "message null": ("delta.message", None),
    "message missing": ("delta.message", _DELETE),
    "role developer": ("delta.message.role", "developer"),
    "role empty": ("delta.message.role", ""),
    "role missing": ("delta.message.role", _DELETE),
    "name number": ("delta.message.name", 1),
    "tool_calls object": ("delta.message.tool_calls", {}),
    "arguments object": (
        "delta.message.tool_calls",
        [{"id": "c", "type": "function", "function": {"name": "f", "arguments": {"a": 1}}}],
    ),
    "usage missing currency": ("delta.usage.currency", _DELETE),
    "usage currency null": ("delta.usage.currency", None),
    "usage missing latency": ("delta.usage.latency", _DELETE),
    "usage latency string": ("delta.usage.latency", "0.5"),
    "usage missing prompt_tokens": ("delta.usage.prompt_tokens", _DELETE),
    "usage total_tokens float": ("delta.usage.total_tokens", 819.0),
    "usage empty object": ("delta.usage", {}),
    "usage list": ("delta.usage", []),
    "decimal empty string": ("delta.usage.prompt_price", ""),
    "decimal abc": ("delta.usage.prompt_price", "abc"),
    "decimal with spaces": ("delta.usage.total_price", " 1"),
    "decimal bool": ("delta.usage.total_price", True),
    "decimal object": ("delta.usage.total_price", {}),
    "decimal two dots": ("delta.usage.total_price", "1.2.3"),
    "decimal underscore": ("delta.usage.total_price", "1_000"),
    "model empty": ("model", ""),
    "model missing": ("model", _DELETE),
    "model number": ("model", 4),
    "fingerprint number": ("system_fingerprint", 5),
    "finish_reason number": ("delta.finish_reason", 1),
    "delta missing": ("delta", _DELETE),
    "delta string": ("delta", "x"),
}


@pytest.mark.parametrize("case", sorted(DROPPED))
def test_invalid_llm_frames_are_dropped_silently(case: str) -> None:
    data = _mutate(*DROPPED[case])
    assert daemon.validate_llm_chunk(data) != []
    outcome = llm_outcome(data)
    assert outcome.chunks == []
    assert outcome.error is None  # the stream just ends: nothing tells the plugin
    assert len(outcome.dropped) == 1
    with pytest.raises(ValueError):
        daemon.reemit_llm_chunk(data)


ACCEPTED = {
    "tool_calls missing": ("delta.message.tool_calls", _DELETE),
    "tool_calls null": ("delta.message.tool_calls", None),
    "tool_calls []": ("delta.message.tool_calls", []),
    "tool call element null": ("delta.message.tool_calls", [None]),
    "content empty string": ("delta.message.content", ""),
    "content empty list": ("delta.message.content", []),
    "content text item": ("delta.message.content", [{"type": "text", "data": "hi"}]),
    "index 0": ("delta.index", 0),
    "index negative": ("delta.index", -3),
    "name null": ("delta.message.name", None),
    "role tool": ("delta.message.role", "tool"),
    "usage null": ("delta.usage", None),
    "usage missing": ("delta.usage", _DELETE),
    "prompt_tokens 0": ("delta.usage.prompt_tokens", 0),
    "currency empty": ("delta.usage.currency", ""),
    "latency int": ("delta.usage.latency", 1),
    "decimal missing": ("delta.usage.prompt_price", _DELETE),
    "decimal null": ("delta.usage.prompt_price", None),
    "decimal number": ("delta.usage.prompt_price", 0.0001218),
    "decimal exponent string": ("delta.usage.prompt_price", "1.218e-4"),
    "fingerprint null": ("system_fingerprint", None),
    "finish_reason null": ("delta.finish_reason", None),
    "prompt_messages missing": ("prompt_messages", _DELETE),
    "prompt_messages garbage": ("prompt_messages", "ignored"),
    "unknown key": ("extra", {"anything": [1, 2]}),
}


@pytest.mark.parametrize("case", sorted(ACCEPTED))
def test_valid_llm_frame_variants_are_forwarded(case: str) -> None:
    data = _mutate(*ACCEPTED[case])
    assert daemon.validate_llm_chunk(data) == []
    outcome = llm_outcome(data)
    assert outcome.dropped == [] and outcome.error is None
    assert outcome.chunks == [daemon.reemit_llm_chunk(data)]


def test_reemit_normalises_like_the_go_structs() -> None:
    data = good_chunk()
    data["delta"]["message"]["tool_calls"] = None
    data["delta"]["usage"]["prompt_price"] = 0.0001218  # number in, string out
    data["delta"]["usage"]["total_price"] = "1.2600e-4"  # re-formatted by decimal.String()
    del data["delta"]["usage"]["completion_price"]  # missing decimal -> "0"
    out = daemon.reemit_llm_chunk(data)
    assert list(out) == ["model", "system_fingerprint", "delta", "prompt_messages"]
    assert out["system_fingerprint"] == "" and out["prompt_messages"] == []
    msg = out["delta"]["message"]
    assert list(msg) == ["role", "content", "name", "tool_calls", "tool_call_id"]
    assert msg["name"] == "" and msg["tool_call_id"] == ""
    assert msg["tool_calls"] is None  # passes the daemon, but the SDK then rejects it (spec §8.2)
    usage = out["delta"]["usage"]
    assert list(usage) == [
        "prompt_tokens",
        "prompt_unit_price",
        "prompt_price_unit",
        "prompt_price",
        "completion_tokens",
        "completion_unit_price",
        "completion_price_unit",
        "completion_price",
        "total_tokens",
        "total_price",
        "currency",
        "latency",
    ]
    assert usage["prompt_price"] == "0.0001218"
    assert usage["total_price"] == "0.000126"
    assert usage["completion_price"] == "0"


def test_reemit_content_items_get_every_key_and_opaque_body_passes() -> None:
    data = good_chunk()
    data["delta"]["message"]["content"] = [{"type": "image", "url": "http://x", "opaque_body": {"k": 1}}]
    data["delta"]["message"]["opaque_body"] = None  # RawMessage "null" is non-empty: re-emitted as null
    msg = daemon.reemit_llm_chunk(data)["delta"]["message"]
    assert msg["content"] == [
        {
            "type": "image",
            "base64_data": "",
            "url": "http://x",
            "data": "",
            "encode_format": "",
            "format": "",
            "mime_type": "",
            "detail": "",
            "filename": "",
            "opaque_body": {"k": 1},
        }
    ]
    assert "opaque_body" in msg and msg["opaque_body"] is None


def test_reemit_structured_output_has_no_prompt_messages() -> None:
    data = copy.deepcopy(load_vector("06")["response_example"]["frames"][-1]["data"])
    out = daemon.reemit_llm_chunk(data, structured_output=True)
    assert list(out) == ["model", "system_fingerprint", "delta", "structured_output"]
    assert out["structured_output"] == {"a": 1}
    data.pop("structured_output")
    assert daemon.reemit_llm_chunk(data, structured_output=True)["structured_output"] is None


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("0.150", "0.15"),
        ("1e-7", "0.0000001"),
        ("1e3", "1000"),
        ("-0.0", "0"),
        ("+1.5", "1.5"),
        (".5", "0.5"),
        ("1.", "1"),
        ("-12.3400", "-12.34"),
        ("123456789012345678901234.5", "123456789012345678901234.5"),
    ],
)
def test_decimal_parsing_and_formatting(raw: str, expected: str) -> None:
    parsed = daemon.parse_decimal(raw)
    assert parsed is not None
    assert daemon.decimal_string(*parsed) == expected


@pytest.mark.parametrize(
    "raw", ["", ".", "-", "abc", "1e", "1e1.5", "1..2", "1_0", " 1", "0x10", "NaN", "1e99999999999"]
)
def test_decimal_rejects(raw: str) -> None:
    assert daemon.parse_decimal(raw) is None


def test_decimal_string_with_escape_is_rejected() -> None:
    """shopspring sees the raw literal: "\\u0031" is not unescaped before parsing."""
    text = good_chunk()
    body = json.dumps({"data": text, "error": ""}).replace('"total_price": "0.000126"', '"total_price": "\\u0031"')
    assert '"\\u0031"' in body
    outcome = read_stream_reply(200, frame(body.encode()), "llm")
    assert outcome.chunks == [] and len(outcome.dropped) == 1


def test_keys_match_case_insensitively_and_later_duplicates_win() -> None:
    data = good_chunk()
    data["MODEL"] = data.pop("model")
    data["Delta"] = data.pop("delta")
    out = daemon.reemit_llm_chunk(data)
    assert out["model"] == "gpt-4o-mini" and out["delta"]["index"] == 2
    raw = json.dumps({"data": good_chunk(), "error": ""})[:-1] + ', "Error": "late"}'
    assert read_stream_reply(200, frame(raw.encode()), "llm").error == "request failed: late"
    kelvin = json.dumps({"data": good_chunk(), "error": ""}).replace('"model"', '"mode\u212a"', 1)
    assert read_stream_reply(200, frame(kelvin.encode()), "llm").dropped != []  # K folds to k, not l
    long_s = json.dumps({"data": good_chunk(), "error": ""}).replace(
        '"system_fingerprint": null', '"\u017fystem_fingerprint": "fp"'
    )
    assert read_stream_reply(200, frame(long_s.encode()), "llm").chunks[0]["system_fingerprint"] == "fp"


# ------------------------------------------------------------------------------- envelope rules (streams)
def test_error_with_data_set_is_dropped_on_llm_streams() -> None:
    outcome = read_stream_reply(200, stream_body([{"data": {}, "error": "boom"}]), "llm")
    assert outcome.error is None and outcome.chunks == []
    assert len(outcome.dropped) == 1


def test_error_with_empty_data_surfaces_on_tts_streams() -> None:
    """TTSResult has no validate tags, so {} decodes and validates: here the error is *not* lost."""
    outcome = read_stream_reply(200, stream_body([{"data": {}, "error": "boom"}]), "tts")
    assert outcome.error == "request failed: boom" and outcome.dropped == []


def test_error_frame_ends_the_stream() -> None:
    good = {"data": good_chunk(), "error": ""}
    outcome = read_stream_reply(200, stream_body([good, {"data": None, "error": "x"}, good]), "llm")
    assert outcome.error == "request failed: x"
    assert len(outcome.chunks) == 1  # the frame after the error is never read


@pytest.mark.parametrize("envelope", [{"data": None, "error": ""}, {}, None, {"error": None}])
def test_data_nil(envelope: Any) -> None:
    outcome = read_stream_reply(200, frame(envelope), "llm")
    assert outcome.error == "data is nil" and outcome.dropped == []


@pytest.mark.parametrize(
    "raw",
    [
        b"event: ping\n\n",
        b"",
        b"[]",
        b'"x"',
        b'{"data": [], "error": ""}',
        b'{"data": null, "error": 5}',
        b'{"data": null, "error": ""} trailing',
        b'{"data": null, "error": NaN}',
    ],
)
def test_undecodable_frames_are_skipped(raw: bytes) -> None:
    good = frame({"data": good_chunk(), "error": ""})
    outcome = read_stream_reply(200, frame(raw) + good, "llm")
    assert [p for p, _ in outcome.dropped] == [raw]
    assert len(outcome.chunks) == 1 and outcome.error is None


def test_tts_frame_rules() -> None:
    assert daemon.validate_tts_chunk({"result": "00ff"}) == []
    assert daemon.validate_tts_chunk({}) == []
    assert daemon.validate_tts_chunk({"result": 5}) != []
    assert daemon.validate_tts_chunk([]) != []
    assert daemon.reemit("tts", {"result": "00", "mime_type": ""}) == {"result": "00"}  # omitempty


def test_structured_output_must_be_an_object() -> None:
    base = copy.deepcopy(load_vector("06")["response_example"]["frames"][-1]["data"])
    assert daemon.validate_llm_structured_chunk(base) == []
    for bad in ([1], "x", 3):
        assert daemon.validate_llm_structured_chunk({**base, "structured_output": bad}) != []


@pytest.mark.parametrize("status", [201, 204, 400, 404, 500])
def test_non_200_stream(status: int) -> None:
    body = stream_body([{"data": good_chunk(), "error": ""}])
    outcome = read_stream_reply(status, body, "llm")
    assert outcome.chunks == []
    assert outcome.error is not None
    assert outcome.error.startswith(f"request failed with status code: {status} and respond with: ")


# -------------------------------------------------------------------------------------------------- framing
def test_header_length_11_is_fatal() -> None:
    body = frame({"data": good_chunk(), "error": ""}) + frame({"data": None, "error": ""}, header_len=11)
    with pytest.raises(FrameError, match="^header length mismatch: 11$") as info:
        split_frames(body)
    assert len(info.value.frames) == 1
    outcome = read_stream_reply(200, body, "llm")
    assert len(outcome.chunks) == 1 and outcome.error == "header length mismatch: 11"


def test_magic_mismatch() -> None:
    with pytest.raises(FrameError, match="^magic number mismatch: 14$"):
        split_frames(frame({"data": None, "error": ""}, magic=0x0E))


def test_reserved_bytes_are_ignored() -> None:
    body = frame({"data": good_chunk(), "error": ""}, reserved=bytes(range(1, 8)))
    assert len(read_stream_reply(200, body, "llm").chunks) == 1


def test_data_length_limit() -> None:
    body = frame(b"x" * 100)
    assert split_frames(body, max_size=100) == [b"x" * 100]
    with pytest.raises(FrameError, match="^data length is too long: 100$"):
        split_frames(body, max_size=99)


@pytest.mark.parametrize(
    ("cut", "message"),
    [
        (1, "unexpected EOF\nfailed to read system header"),
        (3, "unexpected EOF\nfailed to read system header"),
        (4, "EOF\nfailed to read header"),
        (5, "unexpected EOF\nfailed to read header"),
        (13, "unexpected EOF\nfailed to read header"),
        (14, "EOF\nfailed to read data"),
        (20, "EOF\nfailed to read data"),
    ],
)
def test_truncated_frame(cut: int, message: str) -> None:
    good = frame({"data": good_chunk(), "error": ""})
    body = good + frame({"data": good_chunk(), "error": ""})[:cut]
    with pytest.raises(FrameError) as info:
        split_frames(body)
    assert str(info.value) == message
    outcome = read_stream_reply(200, body, "llm")
    assert len(outcome.chunks) == 1 and outcome.error == message  # chunks first, then the read error
    reader = FrameReader()
    assert len(reader.feed(body)) == 1
    with pytest.raises(FrameError, match=message.split("\n")[1]):
        reader.close()


def test_empty_body_is_a_clean_end() -> None:
    assert split_frames(b"") == []
    assert read_stream_reply(200, b"", "llm") == daemon.DaemonStreamOutcome([], None, [])


def _all_vector_bodies() -> list[bytes]:
    return [stream_body(v["response_example"]["frames"]) for v in stream_vectors()]


def test_frame_reader_byte_by_byte_equals_split_frames() -> None:
    for body in _all_vector_bodies():
        reader = FrameReader()
        got: list[bytes] = []
        for i in range(len(body)):
            got += reader.feed(body[i : i + 1])
        reader.close()
        assert got == split_frames(body)


def test_frame_reader_random_splits() -> None:
    rng = random.Random(1234)
    body = b"".join(_all_vector_bodies())
    expected = split_frames(body)
    for _ in range(50):
        reader, got, pos = FrameReader(), [], 0
        while pos < len(body):
            step = rng.randint(0, 40)
            got += reader.feed(body[pos : pos + step])
            pos += step
        reader.close()
        assert got == expected


def test_frame_reader_reports_bad_header_early() -> None:
    reader = FrameReader()
    assert reader.feed(b"\x0f\x00") == []
    with pytest.raises(FrameError, match="header length mismatch: 11"):
        reader.feed(b"\x0b\x00")
    with pytest.raises(FrameError):
        reader.feed(b"")  # stays failed


# ------------------------------------------------------------------------------------------- unary replies
def unary(obj: Any, kind: str) -> tuple[Any, str | None]:
    return read_unary_reply(json.dumps(obj).encode(), kind)


def embedding_data() -> dict[str, Any]:
    data: dict[str, Any] = copy.deepcopy(load_vector("07")["response_example"]["body"]["data"])
    return data


def test_unary_error_wins_over_invalid_but_decodable_data() -> None:
    assert unary({"data": {"model": ""}, "error": "x"}, "text_embedding") == (None, "request failed: x")


def test_unary_type_error_in_data_hides_the_error_text() -> None:
    """Decoding fails before `error` is looked at: the plugin gets a json error, not 'request failed: x'."""
    data, error = unary({"data": {"model": 5}, "error": "x"}, "text_embedding")
    assert data is None and error is not None
    assert error.startswith("json: cannot unmarshal number into Go struct field TextEmbeddingResult.data.model")


def test_unary_validation_messages() -> None:
    bad = embedding_data()
    del bad["usage"]["tokens"]
    bad["embeddings"] = None
    assert unary({"data": bad, "error": ""}, "text_embedding") == (
        None,
        (
            "validate request failed: "
            "Key: 'TextEmbeddingResult.Embeddings' Error:"
            "Field validation for 'Embeddings' failed on the 'required' tag\n"
            "Key: 'TextEmbeddingResult.Usage.Tokens' Error:Field validation for 'Tokens' failed on the 'required' tag"
        ),
    )
    doc_missing_text = {"model": "m", "docs": [{"index": 0, "score": 0.5}]}
    assert unary({"data": doc_missing_text}, "multimodal_rerank") == (
        None,
        (
            "validate request failed: Key: 'MultimodalRerankResult.Docs[0].Text' "
            "Error:Field validation for 'Text' failed on the 'required' tag"
        ),
    )


def test_unary_embedding_rules() -> None:
    assert daemon.validate_text_embedding_result(embedding_data()) == []
    assert daemon.validate_multimodal_embedding_result({**embedding_data(), "embeddings": []}) == []
    assert daemon.validate_text_embedding_result({**embedding_data(), "embeddings": [["0.1"]]}) != []
    usage = {k: v for k, v in embedding_data()["usage"].items() if "price" not in k}
    data, error = unary({"data": {**embedding_data(), "usage": usage}, "error": ""}, "text_embedding")
    assert error is None and data is not None
    assert (data["usage"]["unit_price"], data["usage"]["price_unit"], data["usage"]["total_price"]) == ("0", "0", "0")


def test_unary_rerank_rules() -> None:
    assert daemon.validate_rerank_result({"model": "m", "docs": []}) == []
    assert daemon.validate_rerank_result({"model": "m", "docs": None}) != []
    assert daemon.validate_rerank_result({"model": "m", "docs": [{"index": 0, "text": "", "score": 0}]}) == []
    assert daemon.validate_rerank_result({"model": "m", "docs": [{"index": 0.5, "text": "", "score": 0}]}) != []
    assert daemon.validate_rerank_result({"model": "", "docs": []}) != []


@pytest.mark.parametrize(
    ("kind", "data", "expected"),
    [
        ("speech2text", {}, {"result": ""}),
        ("moderation", {"results": True}, {"result": False}),
        ("system_summary", {"text": "typo"}, {"summary": ""}),
        ("moderation", {"RESULT": True}, {"result": True}),
    ],
)
def test_unvalidated_unary_results_use_go_zero_values(kind: str, data: Any, expected: Any) -> None:
    assert unary({"data": data, "error": ""}, kind) == (expected, None)


@pytest.mark.parametrize(
    ("kind", "data"),
    [
        ("moderation", {"result": "true"}),
        ("moderation", {"result": 1}),
        ("speech2text", {"result": 5}),
        ("system_summary", {"summary": ["a"]}),
    ],
)
def test_unvalidated_unary_results_still_fail_on_json_types(kind: str, data: Any) -> None:
    result, error = unary({"data": data, "error": ""}, kind)
    assert result is None and error is not None and error.startswith("json: cannot unmarshal")
    assert daemon.UNARY_TYPES[kind]  # the kind exists
    validator = {
        "moderation": daemon.validate_moderation_result,
        "speech2text": daemon.validate_speech2text_result,
        "system_summary": daemon.validate_summary_result,
    }[kind]
    assert validator(data) != []


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"", "EOF"),
        (b"  \n", "EOF"),
        (b'{"data": {"result": tr', "unexpected EOF"),
        (b'{"code": "not_found", "message": "x", "status": 404}', "data is nil"),
        (b"null", "data is nil"),
        (
            b"[]",
            "json: cannot unmarshal array into Go value of type calldify.BaseBackwardsInvocationResponse["
            "github.com/langgenius/dify-plugin-daemon/pkg/entities/model_entities.ModerationResult]",
        ),
    ],
)
def test_unary_body_level_failures(body: bytes, expected: str) -> None:
    assert read_unary_reply(body, "moderation") == (None, expected)


def test_unary_html_body_is_a_syntax_error() -> None:
    data, error = read_unary_reply(b"<html>404</html>", "moderation")
    assert data is None and error is not None and error.startswith("invalid character '<'")


def test_unary_reads_only_the_first_json_value() -> None:
    assert read_unary_reply(b'{"data": {"result": true}} garbage {', "moderation") == ({"result": True}, None)
    assert read_unary_reply(b'{"data": {"result": true}}', "summary") == ({"summary": ""}, None)


def test_vendored_vectors_match_the_spec() -> None:
    from tests.support.vectors import SPEC_VECTORS_DIR, VENDORED_VECTORS_DIR

    vendored = {p.name: p.read_bytes() for p in VENDORED_VECTORS_DIR.glob("*.json")}
    assert len(vendored) >= 18
    if SPEC_VECTORS_DIR.is_dir():
        spec = {p.name: p.read_bytes() for p in SPEC_VECTORS_DIR.glob("*.json")}
        assert vendored == spec, "tests/vectors is stale: copy ../shared/spec/vectors/*.json into it"
