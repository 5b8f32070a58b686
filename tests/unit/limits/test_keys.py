from __future__ import annotations

from gateway.limits.keys import TenantKeys, budget_scope, id_scope


def test_plain_ids_stay_readable_and_odd_ones_are_digested() -> None:
    assert id_scope("7f3e0c2a-1b2c-4d5e-8f90-123456789abc") == "7f3e0c2a-1b2c-4d5e-8f90-123456789abc"
    for odd in ("t" * 65, "a:b", "a{b}", "a*b", "租户", "x\ny", "", "a b"):
        scope = id_scope(odd)
        assert scope.startswith("h") and len(scope) == 33 and scope.isalnum()
    assert id_scope("t" * 10_000) != id_scope("t" * 10_001)


def test_keys_are_bounded_and_share_the_tenants_hash_tag() -> None:
    keys = TenantKeys("dgw:limits:", "x" * 10_000)
    names = [
        keys.requests,
        keys.tokens,
        keys.user_requests("u" * 10_000),
        keys.user_tokens("🙂"),
        keys.budget("day", "20261203"),
    ]
    assert all(len(name) < 120 for name in names)
    tag = names[0][names[0].index("{") : names[0].index("}") + 1]
    assert all(name.startswith("dgw:limits:" + tag + ":") for name in names)


def test_budget_scopes_differ_by_what_they_count() -> None:
    assert budget_scope("day", None, None) == "day"
    scopes = {budget_scope(p, r, m) for p in ("day", "month") for r in (None, "gpt4", "*") for m in (None, "gpt-4o*")}
    assert len(scopes) == 12
