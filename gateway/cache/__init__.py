"""The per-item embedding cache: stores (memory, Redis), the vector codec, the cache itself."""
