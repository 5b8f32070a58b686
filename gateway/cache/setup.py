"""The embedding cache a configuration asks for: in-process, Redis, or both in tiers."""

from __future__ import annotations

from gateway.cache.embedding_cache import EmbeddingCache
from gateway.cache.memory import MemoryStore
from gateway.cache.redis_store import create_redis_store
from gateway.cache.response_cache import ResponseCache
from gateway.cache.store import VectorStore
from gateway.cache.tiered import TieredStore
from gateway.config import CacheConfig


def build_embedding_cache(config: CacheConfig) -> EmbeddingCache | None:
    settings = config.embeddings
    if not settings.enabled:
        return None
    store: VectorStore
    if config.redis_url is None and config.redis_mode != "sentinel":
        if settings.memory_max_bytes == 0:
            return None
        store = MemoryStore(settings.memory_max_bytes)
    else:
        redis = create_redis_store(config)
        store = TieredStore(MemoryStore(settings.l1_max_bytes), redis) if settings.l1_max_bytes else redis
    return EmbeddingCache(store, settings, config.key_prefix)


def build_response_cache(config: CacheConfig, embedding_cache: EmbeddingCache | None) -> ResponseCache | None:
    """The LLM response cache, on the embedding cache's store when there is one."""
    if embedding_cache is not None:
        return ResponseCache(embedding_cache.store, config.key_prefix)
    if config.redis_url is not None or config.redis_mode == "sentinel":
        return ResponseCache(create_redis_store(config), config.key_prefix)
    if config.responses_memory_max_bytes == 0:
        return None
    return ResponseCache(MemoryStore(config.responses_memory_max_bytes), config.key_prefix)
