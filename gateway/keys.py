"""The one key comparison every credential check uses.

Constant time, so the time a refusal takes does not reveal how much of a guess matched.
"""

from __future__ import annotations

import hmac


def keys_match(supplied: str | bytes | None, expected: bytes) -> bool:
    """Whether ``supplied`` (as sent, text as UTF-8) equals ``expected``; a missing or empty one never does."""
    if not supplied:
        return False
    if isinstance(supplied, str):
        supplied = supplied.encode()
    return hmac.compare_digest(supplied, expected)
