"""Every module under gateway/ that has logic has its mirrored unit test module.

The test of ``gateway/<pkg>/<mod>.py`` is ``tests/unit/<pkg>/test_<mod>.py``; of a top-level module
``gateway/<mod>.py`` it is ``tests/unit/test_<mod>.py``; of a package's ``__init__.py`` (when it holds
logic, as ``gateway/config/``) it is ``tests/unit/test_<pkg>.py`` beside the package's own tests.
A module without one fails here unless it is listed below with the reason it needs none. An exemption
that names a module which no longer exists, or a covering test file that does not exist, fails too, so
the list cannot silently rot.
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SOURCE = ROOT / "gateway"
UNIT = ROOT / "tests" / "unit"

# Module (relative to gateway/) -> why it has no mirrored test module.
PURE = "pure data or types: nothing to test on its own"
INTEGRATION = "exercised through real servers in tests/integration (no unit-sized logic of its own)"
EXEMPT: dict[str, str] = {
    "adapters/base.py": PURE + " (the adapter protocols and result dataclasses)",
    "catalog.py": PURE + " (embedded-model names and packages)",
    "cache/store.py": PURE + " (the store protocol)",
    "errors.py": PURE + " (the error classes and their statuses)",
    "logs.py": PURE + " (logger names and the JSON log format)",
    "protocol/results.py": PURE + " (TypedDicts of the daemon's result shapes)",
    "resilience/window.py": "a tiny sliding window, tested through resilience/test_plan.py",
    "status.py": PURE + " (the read-only GatewayStatus protocol)",
    # Covered by unit test modules that test several modules at once (not yet split per module).
    "invoke/llm_reply.py": "covered by tests/unit/serverless/test_endpoint.py",
    "protocol/plugin_view.py": "covered by tests/unit/serverless/test_endpoint.py",
    "protocol/envelope.py": "covered by tests/unit/protocol/test_framing.py",
    "cache/codec.py": "covered by tests/unit/cache/test_embedding_cache.py",
    "cache/keys.py": "covered by tests/unit/cache/test_embedding_cache.py",
    "console/publish.py": "covered by tests/unit/console/test_aggregate.py",
    "resilience/health.py": "covered by tests/unit/resilience/test_plan.py",
    "cli.py": "covered by tests/unit/test_cpus.py and tests/unit/invoke/test_limits.py",
    "app.py": "covered by tests/unit/test_observe.py, tests/unit/test_probes.py, tests/unit/console/test_tryit.py",
    # Exercised only through real servers (tests/integration, tests/contract).
    "adapters/http_tei.py": INTEGRATION,
    "adapters/native_rerank.py": INTEGRATION,
    "adapters/litellm_chat.py": INTEGRATION,
    "adapters/litellm_clients.py": INTEGRATION,
    "adapters/litellm_common.py": INTEGRATION,
    "adapters/litellm_loader.py": INTEGRATION,
    "adapters/litellm_transcription.py": INTEGRATION,
    "adapters/local/child.py": INTEGRATION + " (the model child process)",
    "adapters/local/process.py": INTEGRATION + " (the model child process)",
    "cache/redis_store.py": INTEGRATION + " (real Redis)",
    "cache/setup.py": INTEGRATION,
    "cache/tiered.py": INTEGRATION + " (real Redis)",
    "config/backends.py": "covered by tests/unit/test_config.py",
    "console/handler.py": INTEGRATION + " and tests/e2e",
    "forward.py": INTEGRATION,
    "invoke/llm.py": INTEGRATION,
    "invoke/moderation.py": INTEGRATION,
    "invoke/tts.py": INTEGRATION,
    "metrics.py": INTEGRATION,
    # The governance packages: real PostgreSQL, SQLite files and Redis, in tests/integration.
    "admin/app.py": INTEGRATION + " (tests/integration/test_admin_api.py: schemathesis and explicit tests)",
    "admin/docs.py": "covered by tests/integration/test_admin_api.py",
    "admin/models.py": PURE + " (the management API's response models)",
    "admin/source.py": PURE + " (the callables the management API reads)",
    "limits/caller.py": PURE + " (who asks for what)",
    "limits/counters.py": "covered by tests/integration/test_budgets.py and test_rate_limits.py (both counter stores)",
    "limits/governor.py": "covered by tests/integration/test_budgets.py, test_rate_limits.py and test_accounting",
    "limits/redis_counters.py": INTEGRATION + " (real Redis: tests/integration/test_budgets.py, test_rate_limits.py)",
    "limits/rules.py": "covered by tests/unit/limits/test_build.py and tests/integration/test_budgets.py",
    "usage/database.py": "covered by tests/unit/usage/test_ledger_database.py",
    "usage/engine.py": INTEGRATION + " (tests/integration/test_ledger_store.py, test_ledger_migrate.py)",
    "usage/migrate.py": INTEGRATION + " (tests/integration/test_ledger_migrate.py)",
    "usage/migrations/env.py": INTEGRATION + " (alembic's environment: tests/integration/test_ledger_migrate.py)",
    "usage/migrations/versions/r0001_usage_tables.py": "checked against schema.py by test_ledger_migrate.py",
    "usage/row.py": "covered by tests/unit/usage/test_ledger_spill.py (the row's JSON round trip)",
    "usage/spill.py": "covered by tests/unit/usage/test_ledger_spill.py",
    "usage/store.py": INTEGRATION + " (tests/integration/test_ledger_store.py, on SQLite and PostgreSQL)",
    "usage/writer.py": INTEGRATION + " (tests/integration/test_ledger_writer.py: outages, spill, replay)",
    "pricing.py": INTEGRATION,
    "redaction.py": INTEGRATION,
    "request_metrics.py": INTEGRATION,
    "resilience/drain.py": INTEGRATION,
    "resilience/shared.py": INTEGRATION + " (real Redis)",
    "serverless/wire.py": "covered by tests/unit/serverless/test_endpoint.py",
    "supervisor.py": "covered by tests/integration/test_reload.py (a SIGHUP to the parent of several workers)",
    "tracing.py": INTEGRATION,
}


def has_logic(path: Path) -> bool:
    """A package marker or re-export file (no def or class) needs no test of its own."""
    text = path.read_text(encoding="utf-8")
    return any(line.startswith(("def ", "async def ", "class ")) for line in text.splitlines())


def mirrored_test(module: Path) -> Path:
    rel = module.relative_to(SOURCE)
    if rel.name == "__init__.py":
        return UNIT / rel.parent.parent / f"test_{rel.parent.name}.py"
    return UNIT / rel.parent / f"test_{rel.stem}.py"


def modules() -> list[Path]:
    return sorted(p for p in SOURCE.rglob("*.py") if "__pycache__" not in p.parts)


def test_every_module_with_logic_has_its_mirrored_unit_test() -> None:
    missing = [
        f"gateway/{m.relative_to(SOURCE)} -> {mirrored_test(m).relative_to(ROOT)}"
        for m in modules()
        if has_logic(m) and not mirrored_test(m).exists() and str(m.relative_to(SOURCE)) not in EXEMPT
    ]
    assert not missing, (
        "modules without their mirrored unit test (write it, or exempt it with a reason):\n" + "\n".join(missing)
    )


def test_exemptions_name_existing_modules_without_a_mirrored_test() -> None:
    stale = [
        name
        for name in EXEMPT
        if not (SOURCE / name).exists() or mirrored_test(SOURCE / name).exists() or not has_logic(SOURCE / name)
    ]
    assert not stale, f"exemptions to drop (module gone, or it has its own test now): {stale}"


def test_covering_test_files_named_by_exemptions_exist() -> None:
    named = {
        word.strip(",()") for reason in EXEMPT.values() for word in reason.split() if word.startswith("tests/unit/")
    }
    absent = sorted(p for p in named if not (ROOT / p).exists())
    assert not absent, f"exemptions name covering tests that do not exist: {absent}"
