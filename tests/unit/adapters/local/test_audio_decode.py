"""gateway.adapters.local.audio_decode: every container Dify may send decoded to 16 kHz mono."""

from __future__ import annotations

import numpy as np
import pytest

from gateway.adapters.local.audio_decode import decode_to_pcm16k
from gateway.audio import MP3, OGG, WAV, WEBM
from gateway.errors import BadRequest
from tests.unit.adapters.local.helpers import CONTAINERS, SENTENCE, sentence_file, tts_mp3, wav_bytes


@pytest.mark.parametrize("container", list(CONTAINERS))
def test_each_container_decodes_to_16k_mono(container: str) -> None:
    fmt, _build = CONTAINERS[container]
    data = sentence_file(container)
    reference = decode_to_pcm16k(tts_mp3(SENTENCE), MP3)
    samples = decode_to_pcm16k(data, fmt)
    assert samples.dtype == np.float32 and samples.ndim == 1
    assert abs(len(samples) - len(reference)) / 16000 < 0.25  # same duration, within codec padding
    assert 0.02 < float(np.sqrt(np.mean(samples**2))) < 1.0  # the speech is there, not silence
    # Dify labels every upload mp3; the decoders are tried whatever the label says.
    assert len(decode_to_pcm16k(data, MP3)) == len(samples)
    assert len(decode_to_pcm16k(data, None)) == len(samples)


@pytest.mark.parametrize("garbage", [b"hello, this is not audio" * 50, bytes(range(256)) * 40, b"OggS" + b"\x00" * 500])
def test_garbage_is_a_bad_request_in_plain_words(garbage: bytes) -> None:
    expected = r"could not decode the audio \(format: ogg\): the ogg file is damaged, cut short or not really ogg$"
    with pytest.raises(BadRequest, match=expected):
        decode_to_pcm16k(garbage, OGG)


def test_audio_over_the_duration_cap_is_a_bad_request() -> None:
    data = wav_bytes(np.zeros(16000 * 5, dtype=np.int16), 16000)
    assert len(decode_to_pcm16k(data, WAV, max_seconds=6)) == 16000 * 5
    with pytest.raises(BadRequest, match=r"the audio is longer than 2 seconds \(format: wav\)"):
        decode_to_pcm16k(data, WAV, max_seconds=2)
    with pytest.raises(BadRequest, match=r"longer than 2 seconds \(format: webm\)"):
        decode_to_pcm16k(sentence_file("webm-opus"), WEBM, max_seconds=2)
