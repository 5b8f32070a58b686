"""gateway.adapters.litellm_media: sniffing images and canonical base64 data URIs."""

from __future__ import annotations

import base64

import pytest

from gateway.adapters.litellm_media import decode_base64, image_data_uri, looks_like_image_uri, sniff_image

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
