"""Removes configured secrets from text that leaves the process (errors, logs)."""

from __future__ import annotations

import re


class Redactor:
    def __init__(self, secrets: list[str]) -> None:
        unique = sorted(set(secrets), key=len, reverse=True)
        self._pattern = re.compile("|".join(re.escape(s) for s in unique)) if unique else None

    def __call__(self, text: str) -> str:
        if self._pattern is None:
            return text
        return self._pattern.sub("***", text)
