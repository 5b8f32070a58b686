"""Image inputs for litellm: base64 text (with or without a data: prefix) -> canonical data URIs.

litellm recognises an image only as a ``data:`` URI whose base64 re-encodes to exactly the
same text (``litellm.utils.is_base64_encoded``); anything else is embedded as *text*. So
images are decoded, sniffed and re-encoded canonically here, and text that would pass that
test is refused rather than silently sent as an image.
"""

from __future__ import annotations

import base64
import binascii
import re

_WHITESPACE = re.compile(r"\s+")


def sniff_image(data: bytes) -> str | None:
    """The MIME type of PNG, JPEG, GIF or WebP ``data`` from its magic bytes, else None."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


def decode_base64(content: str) -> bytes:
    """The bytes of base64 ``content``, tolerating a data: prefix, whitespace and missing padding.

    Raises ``ValueError`` when it is not base64 at all.
    """
    text = content.strip()
    if text.startswith("data:"):
        header, sep, text = text.partition(",")
        if not sep or ";base64" not in header:
            raise ValueError("a data: URI without base64 content")
    text = _WHITESPACE.sub("", text)
    text += "=" * (-len(text) % 4)
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("not valid base64") from exc


def image_data_uri(content: str) -> str:
    """A canonical ``data:image/...;base64,`` URI for an image given as base64 text.

    Raises ``ValueError`` (with a message fit for the caller, never the content) when the
    text is not base64 or not a PNG, JPEG, GIF or WebP image.
    """
    data = decode_base64(content)
    mime = sniff_image(data)
    if mime is None:
        raise ValueError("not a PNG, JPEG, GIF or WebP image")
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def looks_like_image_uri(text: str) -> bool:
    """Whether litellm would take this *text* input for a base64 image (its own test)."""
    if not text.startswith("data:"):
        return False
    parts = text.split(",")
    if len(parts) < 2:
        return False
    payload = parts[1]
    try:
        return base64.b64encode(base64.b64decode(payload, validate=True)).decode("ascii") == payload
    except (binascii.Error, ValueError):
        return False
