"""The protocol test vectors shipped beside the repository (shared/spec/vectors).

Layout (locally and in CI): <root>/main is this repository, <root>/shared/spec/vectors the vectors.
A missing directory is an error, never a skip: tests that silently stop checking the protocol are worse
than failing ones.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

VECTORS_DIR = Path(__file__).resolve().parents[3] / "shared" / "spec" / "vectors"


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
