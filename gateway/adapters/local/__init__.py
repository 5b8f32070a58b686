"""Embedded models: keyless, offline backends for every non-LLM model type."""
