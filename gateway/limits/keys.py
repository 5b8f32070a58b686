"""Counter keys, bounded in length whatever the ids.

    {namespace}{<tenant>}:r            the tenant's requests (GCRA arrival time)
    {namespace}{<tenant>}:t            the tenant's tokens (GCRA arrival time)
    {namespace}{<tenant>}:ur:<user>    one user's requests; :ut:<user> their tokens
    {namespace}{<tenant>}:b:<scope>:<window>   spend of one budget scope in one window (a hash)

A tenant's keys share one hash tag, so one script can touch them all on a Redis Cluster.
Ids that are long, or hold anything beyond letters, digits, ``.``, ``_`` and ``-``, are
replaced by a digest (Dify's ids are UUIDs, which stay readable).
"""

from __future__ import annotations

import hashlib
import re

_PLAIN = re.compile(r"[A-Za-z0-9._-]{1,64}")


def id_scope(value: str) -> str:
    if _PLAIN.fullmatch(value):
        return value
    return "h" + hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def budget_scope(period: str, route: str | None, model: str | None) -> str:
    """One counter per (period, route glob, model glob): limits that count the same calls share it."""
    if route is None and model is None:
        return period
    digest = hashlib.sha256(f"{route!r}\x00{model!r}".encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return f"{period}-{digest}"


class TenantKeys:
    def __init__(self, namespace: str, tenant_id: str) -> None:
        self.head = f"{namespace}{{{id_scope(tenant_id)}}}:"
        self.requests = self.head + "r"
        self.tokens = self.head + "t"

    def user_requests(self, user_id: str) -> str:
        return f"{self.head}ur:{id_scope(user_id)}"

    def user_tokens(self, user_id: str) -> str:
        return f"{self.head}ut:{id_scope(user_id)}"

    def budget(self, scope: str, window_tag: str) -> str:
        return f"{self.head}b:{scope}:{window_tag}"
