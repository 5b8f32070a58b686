"""Text to speech with espeak-ng (through ctypes), encoded to MP3 with LAME.

libespeak-ng keeps its state (voice, rate, output callback) in process globals and is not
re-entrant, so one module-level lock covers every call into it, whoever makes it.
"""

from __future__ import annotations

import ctypes
import threading
from typing import Any

from gateway.adapters.base import SpeechCall, SpeechOutput
from gateway.adapters.local.guards import speech_text
from gateway.adapters.local.slot import ModelSlot
from gateway.catalog import TTS_MODEL
from gateway.errors import BadRequest, UpstreamUnavailable

DEFAULT_VOICE = "en-us"
# Words per minute. espeak's own default (175) came back from Whisper noticeably worse in a
# round trip (77 % of words vs 86 % at 150 over five test sentences); 150 still sounds natural.
DEFAULT_RATE = 150
MP3_KBPS = 64
MAX_TEXT_CHARS = 50_000  # ~1 hour of speech; the caller sends one sentence or so per call

_LOCK = threading.Lock()
_ENGINE: Espeak | None = None

# espeak-ng's API constants (speak_lib.h).
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_ESPEAK_CHARS_UTF8 = 1
_ESPEAK_RATE = 1
_EE_OK = 0
_SYNTH_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


class _Voice(ctypes.Structure):
    _fields_ = [
        ("name", ctypes.c_char_p),
        ("languages", ctypes.c_void_p),  # (priority byte, NUL-terminated code)*, then a 0 byte
        ("identifier", ctypes.c_char_p),
        ("gender", ctypes.c_ubyte),
        ("age", ctypes.c_ubyte),
        ("variant", ctypes.c_ubyte),
        ("xx1", ctypes.c_ubyte),
        ("score", ctypes.c_int),
        ("spare", ctypes.c_void_p),
    ]


class Espeak:
    """The process's espeak-ng: built by ``load_espeak`` under ``_LOCK``; calls take the lock."""

    def __init__(self) -> None:
        import espeakng_loader
        import lameenc  # imported here so a missing package fails the load, not a call

        self._lameenc = lameenc
        lib = ctypes.CDLL(espeakng_loader.get_library_path())
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_SetSynthCallback.argtypes = [_SYNTH_CALLBACK]
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetVoiceByName.restype = ctypes.c_int
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_SetParameter.restype = ctypes.c_int
        lib.espeak_ListVoices.argtypes = [ctypes.c_void_p]
        lib.espeak_ListVoices.restype = ctypes.POINTER(ctypes.POINTER(_Voice))
        lib.espeak_Synth.argtypes = [
            ctypes.c_char_p,
            ctypes.c_size_t,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.c_void_p,
            ctypes.c_void_p,
        ]
        lib.espeak_Synth.restype = ctypes.c_int
        data_path = espeakng_loader.get_data_path().encode()
        self.sample_rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, data_path, 0)
        if self.sample_rate <= 0:
            raise RuntimeError(f"espeak_Initialize returned {self.sample_rate}")
        self._lib = lib
        # ctypes does not keep the callback alive for C: this reference does.
        self._callback = _SYNTH_CALLBACK(self._on_samples)
        lib.espeak_SetSynthCallback(self._callback)
        self._encoder: Any = None  # the current call's MP3 encoder, fed by the callback
        self._mp3 = bytearray()
        self._callback_error: BaseException | None = None
        self.voices = self._list_voices()

    def synthesize_mp3(self, text: str, voice: str, rate: int = DEFAULT_RATE) -> bytes:
        """One complete MP3 of ``text`` spoken by ``voice`` (an espeak voice, else the default).

        espeak-ng varies pitch a little from call to call, so the same text does not give the
        same bytes twice.
        """
        identifier = self.resolve_voice(voice)
        # No NUL (it would end the C string early), no lone surrogate (not encodable as UTF-8),
        # NFKC, and the length limit applied to the normalised text (see guards.py).
        try:
            data = speech_text(text, MAX_TEXT_CHARS).encode("utf-8") + b"\x00"
        except BadRequest as exc:
            raise BadRequest(f"{TTS_MODEL}: {exc.message}") from None
        with _LOCK:
            if self._lib.espeak_SetVoiceByName(identifier) != _EE_OK:
                raise RuntimeError(f"espeak-ng could not select voice {identifier.decode()!r}")
            self._lib.espeak_SetParameter(_ESPEAK_RATE, rate, 0)
            encoder = self._lameenc.Encoder()
            encoder.set_bit_rate(MP3_KBPS)
            encoder.set_in_sample_rate(self.sample_rate)
            encoder.set_channels(1)
            encoder.set_quality(7)  # a fast preset; the source is a robot voice anyway
            self._encoder, self._mp3, self._callback_error = encoder, bytearray(), None
            try:
                status = self._lib.espeak_Synth(data, len(data), 0, 0, 0, _ESPEAK_CHARS_UTF8, None, None)
                if self._callback_error is not None:
                    raise self._callback_error
                if status != _EE_OK:
                    raise RuntimeError(f"espeak_Synth returned {status}")
                self._mp3 += encoder.flush()
                return bytes(self._mp3)
            finally:
                self._encoder, self._mp3 = None, bytearray()

    def resolve_voice(self, voice: str) -> bytes:
        """The espeak voice identifier for a voice name, file name or language code
        ("en-us", "gmw/en-US", "English (America)", "en_GB", "de"); else the default's."""
        return self.voices.get(_voice_key(voice)) or self.voices[DEFAULT_VOICE]

    def _on_samples(self, wav: Any, count: int, _events: Any) -> int:
        # Runs inside espeak_Synth, on the calling thread, with _LOCK held. An exception
        # cannot cross the C boundary, so it is kept for synthesize_mp3 and synthesis aborted.
        try:
            if count > 0 and wav:
                self._mp3 += self._encoder.encode(ctypes.string_at(wav, count * 2))
            return 0
        except BaseException as exc:
            self._callback_error = exc
            return 1

    def _list_voices(self) -> dict[str, bytes]:
        """Lower-cased voice names, file names and language codes -> voice identifier."""
        ranked: dict[str, tuple[int, bytes]] = {}

        def offer(key: str, priority: int, identifier: bytes) -> None:
            key = _voice_key(key)
            if key and (key not in ranked or priority < ranked[key][0]):
                ranked[key] = (priority, identifier)

        voices = self._lib.espeak_ListVoices(None)
        index = 0
        while voices[index]:
            voice = voices[index].contents
            identifier = voice.identifier or b""
            name = identifier.decode()
            offer(name, 0, identifier)  # "gmw/en-US"
            offer(name.rsplit("/", 1)[-1], 0, identifier)  # "en-US"
            offer((voice.name or b"").decode(), 0, identifier)  # "English (America)"
            address = voice.languages
            while address and (priority := ctypes.c_ubyte.from_address(address).value):
                code = ctypes.string_at(address + 1)
                offer(code.decode(), priority, identifier)  # "en-us", "en" (best voice wins)
                address += 2 + len(code)
            index += 1
        return {key: identifier for key, (_, identifier) in ranked.items()}


def _voice_key(voice: str) -> str:
    return voice.strip().lower().replace("_", "-")


def load_espeak() -> Espeak:
    """The process's one espeak-ng engine (initialised on first use)."""
    global _ENGINE
    with _LOCK:
        if _ENGINE is None:
            _ENGINE = Espeak()
        if DEFAULT_VOICE not in _ENGINE.voices:
            raise RuntimeError(f"espeak-ng has no {DEFAULT_VOICE!r} voice")
        return _ENGINE


class LocalSpeech:
    """A ``SpeechAdapter``: one MP3 per call; unknown voices (Dify's "alloy", ...) use en-us."""

    def __init__(self, slot: ModelSlot[Espeak]) -> None:
        self._slot = slot

    async def speak(self, call: SpeechCall) -> SpeechOutput:
        where = call.context.describe(call.target)
        if len(call.text) > MAX_TEXT_CHARS:
            raise BadRequest(
                f"{TTS_MODEL}: the text has {len(call.text)} characters, over the {MAX_TEXT_CHARS} "
                f"one call may synthesise ({where})"
            )
        audio = await self._slot.run(_speak, call.text, call.voice, where, timeout_s=call.timeout_s, where=where)
        return SpeechOutput(audio=audio, mime_type="audio/mpeg")


def _speak(engine: Espeak, text: str, voice: str, where: str) -> bytes:
    """Run in the model's process (module-level: calls are pickled by name)."""
    try:
        return engine.synthesize_mp3(text, voice)
    except RuntimeError as exc:
        raise UpstreamUnavailable(f"{TTS_MODEL}: {exc} ({where})") from None
