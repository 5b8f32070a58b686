"""Validates reply data with the real SDK's entity models (Python 3.12, dify-plugin 0.10.2).

Reads a JSON list of {"kind": <daemon reply kind>, "data": <what the daemon re-emits>} on
stdin and prints a JSON list with, for each, null (accepted) or the SDK's error text.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from dify_plugin.entities.model.llm import LLMResultChunk, LLMResultChunkWithStructuredOutput, SummaryResult
from dify_plugin.entities.model.moderation import ModerationResult
from dify_plugin.entities.model.rerank import MultiModalRerankResult, RerankResult
from dify_plugin.entities.model.speech2text import Speech2TextResult
from dify_plugin.entities.model.text_embedding import MultiModalEmbeddingResult, TextEmbeddingResult
from dify_plugin.entities.model.tts import TTSResult

ENTITIES: dict[str, Any] = {
    "llm": LLMResultChunk,
    "llm_structured_output": LLMResultChunkWithStructuredOutput,
    "text_embedding": TextEmbeddingResult,
    "multimodal_embedding": MultiModalEmbeddingResult,
    "rerank": RerankResult,
    "multimodal_rerank": MultiModalRerankResult,
    "tts": TTSResult,
    "speech2text": Speech2TextResult,
    "moderation": ModerationResult,
    "system_summary": SummaryResult,
}


def main() -> None:
    results: list[str | None] = []
    for item in json.load(sys.stdin):
        try:
            ENTITIES[item["kind"]](**item["data"])  # as BackwardsInvocation does with each response
            results.append(None)
        except Exception as exc:
            results.append(f"{type(exc).__name__}: {exc}")
    sys.stdout.write(json.dumps(results) + "\n")


if __name__ == "__main__":
    main()
