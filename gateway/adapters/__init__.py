"""Backends: one interface per model type (``base``), implementations beside it."""
