"""The protocol test vectors.

The source of truth is the specification's vector directory beside the repository
(``../shared/spec/vectors``) when it is there; a clone on its own uses the copy in
``tests/vectors`` (``test_vendored_vectors_match_the_spec`` keeps the two identical).
A missing directory is an error, never a skip: tests that silently stop checking the
protocol are worse than failing ones.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

SPEC_VECTORS_DIR = Path(__file__).resolve().parents[3] / "shared" / "spec" / "vectors"
VENDORED_VECTORS_DIR = Path(__file__).resolve().parents[1] / "vectors"
VECTORS_DIR = SPEC_VECTORS_DIR if SPEC_VECTORS_DIR.is_dir() else VENDORED_VECTORS_DIR


def _require_dir() -> Path:
    if not VECTORS_DIR.is_dir():
        raise FileNotFoundError(
            f"protocol vectors not found at {VECTORS_DIR}: the shared/ directory must sit beside the repository"
        )
    return VECTORS_DIR


def vector_paths() -> list[Path]:
    paths = sorted(_require_dir().glob("*.json"))
    if not paths:
        raise FileNotFoundError(f"no *.json vectors in {VECTORS_DIR}")
    return paths


def load_vector(name_prefix: str) -> dict[str, Any]:
    """Load the one vector whose file name starts with name_prefix (e.g. "01" or "01-llm-chat-stream")."""
    matches = [p for p in vector_paths() if p.name.startswith(name_prefix)]
    if len(matches) != 1:
        raise LookupError(f"{len(matches)} vectors match {name_prefix!r} in {VECTORS_DIR}: {[p.name for p in matches]}")
    data: dict[str, Any] = json.loads(matches[0].read_text(encoding="utf-8"))
    return data
