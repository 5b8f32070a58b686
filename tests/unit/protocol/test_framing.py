from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from gateway.protocol.envelope import data_frame, error_frame
from gateway.protocol.framing import FrameDecodeError, FrameDecoder, decode_frames, encode_frame
from tests.support.vectors import load_vector


def test_header_layout_matches_the_spec_example() -> None:
    frame = encode_frame(b"x" * 43)
    assert frame[:14].hex(" ") == "0f 00 0a 00 2b 00 00 00 00 00 00 00 00 00"


@pytest.mark.parametrize("prefix", ["01", "02", "03", "04", "06", "12"])
def test_first_frame_header_matches_vector(prefix: str) -> None:
    vector = load_vector(prefix)
    example = vector["response_example"]
    frame = data_frame(example["frames"][0]["data"])
    payload_length = int.from_bytes(frame[4:8], "little")
    # The vectors were written by Python's json (spaces after separators); only the header
    # layout and the payload length field's meaning are comparable, not the exact length.
    assert frame[:4] == bytes.fromhex("0f000a00")
    assert frame[8:14] == bytes(6)
    assert payload_length == len(frame) - 14
    assert example["first_frame_header_hex"].startswith("0f 00 0a 00")


def test_error_frame_has_null_data() -> None:
    (payload,) = decode_frames(error_frame("boom"))
    assert payload == b'{"data":null,"error":"boom"}\n\n'


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"\x0e\x00\x0a\x00" + bytes(10), "magic number mismatch"),
        (b"\x0f\x00\x0b\x00" + bytes(10), "header length mismatch"),
        (encode_frame(b"abc")[:-1], "stream ended inside a frame"),
        (b"\x0f\x00", "stream ended inside a frame"),
    ],
)
def test_decoder_rejects_what_the_daemon_rejects(raw: bytes, message: str) -> None:
    with pytest.raises(FrameDecodeError, match=message):
        decode_frames(raw)


def test_decoder_enforces_the_payload_limit() -> None:
    with pytest.raises(FrameDecodeError, match="too long"):
        decode_frames(encode_frame(b"x" * 101), max_payload=100)


def test_reserved_byte_one_is_ignored_like_the_daemon() -> None:
    frame = bytearray(encode_frame(b"{}"))
    frame[1] = 7
    assert decode_frames(bytes(frame)) == [b"{}"]


@settings(max_examples=200, deadline=None)
@given(
    payloads=st.lists(st.binary(min_size=0, max_size=3000), min_size=0, max_size=8),
    cuts=st.lists(st.integers(min_value=0, max_value=30000), max_size=20),
)
def test_round_trip_with_arbitrary_read_boundaries(payloads: list[bytes], cuts: list[int]) -> None:
    stream = b"".join(encode_frame(p) for p in payloads)
    boundaries = sorted({0, len(stream), *(c % (len(stream) + 1) for c in cuts)})
    decoder = FrameDecoder()
    decoded: list[bytes] = []
    for start, end in zip(boundaries, boundaries[1:], strict=False):
        decoded.extend(decoder.feed(stream[start:end]))
    decoder.close()
    assert decoded == payloads


@settings(max_examples=50, deadline=None)
@given(size=st.integers(min_value=0, max_value=200_000))
def test_large_payload_lengths_are_little_endian(size: int) -> None:
    frame = encode_frame(b"\x01" * size)
    assert int.from_bytes(frame[4:8], "little") == size
    assert decode_frames(frame) == [b"\x01" * size]
