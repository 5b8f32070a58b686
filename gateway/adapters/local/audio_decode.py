"""Decode an uploaded audio file to 16 kHz mono float32 PCM (what Whisper takes).

miniaudio (small, no ffmpeg) reads MP3, WAV, FLAC and Ogg Vorbis; PyAV (ffmpeg) reads the
rest (WebM, M4A, Ogg Opus) and is the fallback when miniaudio refuses a file, since the
container Dify reports is not always the real one.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Any

from gateway.adapters.base import AudioFormat
from gateway.adapters.local.guards import (
    AudioRejected,
    AudioTooLong,
    check_audio_header,
    check_declared_duration,
    check_stream,
)
from gateway.errors import BadRequest

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

SAMPLE_RATE = 16_000
# Decoding stops past this, so a long file cannot fill memory (30 min of samples = 115 MB).
MAX_SECONDS = 30 * 60
_MINIAUDIO_FORMATS = frozenset({"mp3", "wav", "flac", "ogg"})


class _TooLong(Exception):
    pass


class _Unreadable(Exception):
    """A decoder's finding about the file, in words a caller understands."""


def decode_to_pcm16k(data: bytes, fmt: AudioFormat | None, max_seconds: float = MAX_SECONDS) -> npt.NDArray[np.float32]:
    """16 kHz mono float32 samples; empty input gives an empty array.

    ``fmt`` (what the caller sniffed) picks the decoder to try first; both are tried.
    Raises ``BadRequest`` when the header is implausible (see ``guards.check_audio_header``),
    no decoder can read ``data``, or it lasts over ``max_seconds``, whatever its header says
    (decoding stops there, so a small file that expands to hours costs no more than that).
    Messages say what is wrong with the audio, never a decoder's error codes.
    """
    import numpy as np

    if not data:
        return np.zeros(0, dtype=np.float32)
    data = bytes(data)  # miniaudio refuses bytearray and memoryview
    try:
        check_audio_header(data, max_seconds)
    except AudioTooLong:
        raise BadRequest(_too_long(fmt, max_seconds)) from None
    except AudioRejected as exc:
        raise BadRequest(f"could not decode the audio (format: {_name(fmt)}): {exc.message}") from None
    decoders = [_decode_miniaudio, _decode_av]
    if fmt is not None and fmt.extension not in _MINIAUDIO_FORMATS:
        decoders.reverse()  # PyAV first for the containers miniaudio cannot read at all
    findings: list[str] = []
    for decoder in decoders:
        try:
            return decoder(data, int(max_seconds * SAMPLE_RATE), max_seconds)
        except (_TooLong, AudioTooLong):
            raise BadRequest(_too_long(fmt, max_seconds)) from None
        except AudioRejected as exc:
            raise BadRequest(f"could not decode the audio (format: {_name(fmt)}): {exc.message}") from None
        except _Unreadable as exc:
            findings.append(str(exc))
        except ImportError:
            raise
        except Exception:  # each library has its own error types; any means "cannot read"
            continue
    raise BadRequest(f"could not decode the audio (format: {_name(fmt)}): {_why(fmt, findings)}")


def _too_long(fmt: AudioFormat | None, max_seconds: float) -> str:
    return f"the audio is longer than {_duration(max_seconds)} (format: {_name(fmt)}); send a shorter recording"


def _why(fmt: AudioFormat | None, findings: list[str]) -> str:
    if findings:
        return findings[0]
    if fmt is None:
        return "the data is not a recording in any accepted format (mp3, wav, flac, ogg, webm, m4a)"
    return f"the {fmt.extension} file is damaged, cut short or not really {fmt.extension}"


def _decode_miniaudio(data: bytes, max_samples: int, _max_seconds: float) -> npt.NDArray[np.float32]:
    import miniaudio
    import numpy as np

    chunks: list[npt.NDArray[np.float32]] = []
    total = 0
    stream = miniaudio.stream_memory(
        data,
        output_format=miniaudio.SampleFormat.FLOAT32,
        nchannels=1,
        sample_rate=SAMPLE_RATE,
        frames_to_read=SAMPLE_RATE * 4,
    )
    for samples in stream:
        chunk = np.frombuffer(samples, dtype=np.float32)
        total += len(chunk)
        if total > max_samples:
            raise _TooLong
        chunks.append(chunk)
    return _join(chunks)


def _decode_av(data: bytes, max_samples: int, max_seconds: float) -> npt.NDArray[np.float32]:
    import av
    import numpy as np

    chunks: list[npt.NDArray[np.float32]] = []
    total = 0
    checked = False

    def add(frames: Any) -> None:
        nonlocal total
        for out in frames:
            chunk = np.ascontiguousarray(out.to_ndarray().reshape(-1), dtype=np.float32)
            total += len(chunk)
            if total > max_samples:
                raise _TooLong
            chunks.append(chunk)

    with av.open(io.BytesIO(data), mode="r") as container:
        if not container.streams.audio:
            raise _Unreadable("the file has no audio track")
        if container.duration is not None:  # microseconds, from the container's header
            check_declared_duration(container.duration / 1e6, max_seconds, "file")
        resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
        for frame in container.decode(audio=0):
            if not checked:  # what the codec really decodes to, whatever the container said
                check_stream(frame.sample_rate, frame.layout.nb_channels, "audio track")
                checked = True
            add(resampler.resample(frame))
        add(resampler.resample(None))  # flush what the resampler still holds
    return _join(chunks)


def _join(chunks: list[npt.NDArray[np.float32]]) -> npt.NDArray[np.float32]:
    import numpy as np

    samples = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.float32)
    # Float WAVs carry any bit pattern: NaN and infinities become silence, the rest is clipped
    # to PCM's [-1, 1] (Whisper's features, and the model, assume both).
    if not np.isfinite(samples).all():
        np.nan_to_num(samples, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
    return np.clip(samples, -1.0, 1.0, out=samples)


def _duration(seconds: float) -> str:
    return f"{seconds / 60:g} minutes" if seconds >= 60 else f"{seconds:g} seconds"


def _name(fmt: AudioFormat | None) -> str:
    return fmt.extension if fmt is not None else "unrecognised"
