"""The console's view of several worker processes: their snapshots merged into one status
document and one error list, and the snapshot files that carry them between processes."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import orjson

from gateway.console.aggregate import (
    live_snapshots,
    merge_cache,
    merge_errors,
    merge_models,
    merge_rates,
    merge_status,
    worker_summaries,
)
from gateway.console.publish import pid_alive, read_snapshots, snapshot_path, write_snapshot

NOW = 1_700_000_100.0


def rates(requests: int, errors: int, avg_ms: float | None, total: int, **extra: Any) -> dict[str, Any]:
    return {
        **extra,
        "requests_last_minute": requests,
        "requests_per_s": round(requests / 60, 3),
        "errors_last_minute": errors,
        "error_rate": round(errors / requests, 4) if requests else None,
        "avg_duration_ms": avg_ms,
        "requests_total": total,
        "errors_total": errors,
    }


def target(
    model: str, state: str, calls: int, latency_ms: float | None, error_at: float | None = None
) -> dict[str, Any]:
    return {
        "model": model,
        "weight": 1,
        "api_base": None,
        "api_key": "<set>",
        "fallback": False,
        "state": state,
        "backends": 1,
        "in_flight": 1,
        "calls": calls,
        "failures": 1 if error_at else 0,
        "requests_last_minute": calls,
        "errors_last_minute": 1 if error_at else 0,
        "error_rate": None,
        "latency_ms": latency_ms,
        "last_error": f"boom at {error_at}" if error_at else None,
        "last_error_at": error_at,
    }


def status(pid: int, **fields: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "version": "1.2.3",
        "python": "3.11.9",
        "config_source": "/etc/gateway.yaml",
        "pid": pid,
        "multiprocess": True,
        "started_at": NOW - 100,
        "uptime_s": 100.0,
        "now": NOW,
        "ready": True,
        "draining": False,
        "in_flight": 1,
        "max_in_flight": 1000,
        "traffic": {"llm": rates(10, 1, 100.0, 50, in_flight=1)},
        "errors_total": 1,
        "routes": [
            {
                "route": "chat",
                "balancing": "ordered",
                "traffic": rates(10, 1, 100.0, 50),
                "targets": [target("openai/gpt-4o", "closed", 10, 200.0)],
                "fallbacks": [],
            }
        ],
        "backends": [{"target": "openai/gpt-4o", "state": "closed", "in_flight": 1, "calls": 10, "failures": 0}],
        "shared_breakers": False,
        "cache": {
            "enabled": True,
            "scope": "tenant",
            "store": "memory+redis",
            "hits": 3,
            "misses": 1,
            "shared": 0,
            "hit_rate": 0.75,
            "memory": {"entries": 4, "size_bytes": 4000},
            "redis": {"mode": "standalone", "state": "up", "breaker": "closed", "hits": 1, "misses": 1, "errors": 0},
        },
        "embedded_models": {"local/e5": "ready", "local/reranker": "ready"},
        "forwarding": {"dify_api_url": None, "passthrough": False},
    }
    doc.update(fields)
    return doc


def snapshot(
    doc: dict[str, Any], errors: list[dict[str, Any]] | None = None, written_at: float = NOW
) -> dict[str, Any]:
    return {"pid": doc["pid"], "written_at": written_at, "status": doc, "errors": errors or []}


def error(at: float, request_id: str) -> dict[str, Any]:
    return {"at": at, "request_id": request_id, "type": "llm", "outcome": "no_route", "status": 404, "message": "x"}


def test_counters_and_in_flight_are_summed_and_rates_recomputed() -> None:
    a = status(101)
    b = status(102, in_flight=3, errors_total=4, traffic={"llm": rates(30, 3, 200.0, 70, in_flight=3)})
    c = status(103, traffic={"llm": rates(0, 0, None, 5, in_flight=0), "rerank": rates(4, 0, 10.0, 4, in_flight=0)})
    merged = merge_status(a, [snapshot(a), snapshot(b), snapshot(c)])
    assert merged["aggregated"] is True
    assert [w["pid"] for w in merged["workers"]] == [101, 102, 103]
    assert merged["workers"][1] == {"pid": 102, "in_flight": 3, "ready": True, "draining": False, "uptime_s": 100.0}
    assert merged["in_flight"] == 1 + 3 + 1 and merged["errors_total"] == 1 + 4 + 1
    assert merged["max_in_flight"] == 3000  # each worker's cap, summed
    llm = merged["traffic"]["llm"]
    assert llm["in_flight"] == 4 and llm["requests_last_minute"] == 40 and llm["errors_last_minute"] == 4
    assert llm["requests_total"] == 125 and llm["error_rate"] == 0.1 and llm["requests_per_s"] == 0.667
    assert llm["avg_duration_ms"] == 175.0  # (10 × 100 + 30 × 200) / 40: weighted by requests
    assert merged["traffic"]["rerank"]["requests_last_minute"] == 4
    assert list(merged["traffic"]) == ["llm", "rerank"]
    # What comes from the configuration is the answering worker's.
    assert merged["pid"] == 101 and merged["version"] == "1.2.3" and merged["forwarding"] == a["forwarding"]


def test_the_answering_workers_own_snapshot_is_not_counted_twice() -> None:
    a, b = status(101), status(102)
    assert merge_status(a, [snapshot(a), snapshot(b)]) == merge_status(a, [snapshot(b)])
    assert merge_status(a, [snapshot(a), snapshot(b)])["traffic"]["llm"]["requests_total"] == 100


def test_readiness_draining_and_uptime_cover_every_worker() -> None:
    a = status(101, started_at=NOW - 100, uptime_s=100.0)
    b = status(102, started_at=NOW - 5, uptime_s=5.0, ready=False, draining=True)
    merged = merge_status(a, [snapshot(b)])
    assert merged["ready"] is False and merged["draining"] is True
    assert merged["uptime_s"] == 100.0 and merged["started_at"] == NOW - 100
    assert merge_status(a, [snapshot(status(102))])["ready"] is True


def test_routes_and_targets_merge_by_name_with_the_worst_state_and_newest_error() -> None:
    a = status(101)
    b = status(102)
    b["routes"][0]["targets"] = [target("openai/gpt-4o", "open", 30, 400.0, error_at=NOW - 1)]
    c = status(103)
    c["routes"][0]["targets"] = [target("openai/gpt-4o", "half-open", 0, None, error_at=NOW - 50)]
    c["routes"][0]["traffic"] = None  # no request of this route reached that worker
    route = merge_status(a, [snapshot(b), snapshot(c)])["routes"][0]
    assert route["traffic"]["requests_last_minute"] == 20 and route["traffic"]["error_rate"] == 0.1
    (merged,) = route["targets"]
    assert merged["state"] == "open"
    assert merged["calls"] == 40 and merged["in_flight"] == 3 and merged["failures"] == 2
    assert merged["latency_ms"] == 350.0  # (10 × 200 + 30 × 400) / 40: weighted by calls
    assert merged["error_rate"] == 0.05
    assert merged["last_error_at"] == NOW - 1 and merged["last_error"] == f"boom at {NOW - 1}"
    assert merged["api_key"] == "<set>" and merged["weight"] == 1


def test_target_states_rank_open_half_open_closed_idle() -> None:
    def state_of(*states: str) -> str:
        docs = [status(100 + i) for i in range(len(states))]
        for doc, state in zip(docs, states, strict=True):
            doc["routes"][0]["targets"][0]["state"] = state
        merged = merge_status(docs[0], [snapshot(d) for d in docs])
        return str(merged["routes"][0]["targets"][0]["state"])

    assert state_of("idle", "closed") == "closed"
    assert state_of("closed", "half-open", "idle") == "half-open"
    assert state_of("half-open", "open") == "open"
    assert state_of("idle", "idle") == "idle"


def test_backends_merge_by_their_target_key() -> None:
    a = status(101)
    b = status(102)
    b["backends"] = [
        {"target": "openai/gpt-4o", "state": "half-open", "in_flight": 0, "calls": 5, "failures": 5},
        {"target": "local/e5", "state": "closed", "in_flight": 0, "calls": 2, "failures": 0},
    ]
    backends = merge_status(a, [snapshot(b)])["backends"]
    assert [row["target"] for row in backends] == ["openai/gpt-4o", "local/e5"]
    assert backends[0]["state"] == "half-open" and backends[0]["calls"] == 15 and backends[0]["failures"] == 5
    assert backends[1]["calls"] == 2


def test_cache_counts_are_summed_and_redis_shows_the_worst_state() -> None:
    a = status(101)["cache"]
    b = status(102)["cache"]
    b.update(hits=0, misses=4, redis={**b["redis"], "state": "probing", "errors": 2})
    c = {**status(103)["cache"], "redis": {**b["redis"], "state": "down", "breaker": "open", "errors": 1}}
    merged = merge_cache([a, b])
    assert merged["hits"] == 3 and merged["misses"] == 5 and merged["hit_rate"] == 0.375
    assert merged["memory"] == {"entries": 8, "size_bytes": 8000}
    assert merged["redis"]["state"] == "probing" and merged["redis"]["breaker"] == "half-open"
    assert merged["redis"]["errors"] == 2
    assert merge_cache([a, b, c])["redis"]["state"] == "down"
    assert merge_cache([{"enabled": False}, {"enabled": False}]) == {"enabled": False}


def test_embedded_models_show_the_worst_state() -> None:
    merged = merge_models(
        [
            {"local/a": "ready", "local/b": "ready", "local/c": "loading", "local/d": "ready"},
            {"local/a": "failed: out of memory", "local/b": "not loaded", "local/c": "ready", "local/d": "ready"},
            {"local/a": "loading", "local/b": "ready", "local/c": "not loaded"},
        ]
    )
    assert merged == {
        "local/a": "failed: out of memory",
        "local/b": "not loaded",
        "local/c": "loading",
        "local/d": "ready",
    }


def test_route_rates_without_in_flight_stay_without_it() -> None:
    merged = merge_rates([rates(2, 0, 10.0, 2), None, rates(0, 0, None, 1)])
    assert merged is not None and "in_flight" not in merged
    assert merged["requests_total"] == 3 and merged["avg_duration_ms"] == 10.0 and merged["error_rate"] == 0.0
    assert merge_rates([None, None]) is None
    idle = merge_rates([rates(0, 0, None, 1), rates(0, 0, None, 2)])
    assert idle is not None and idle["error_rate"] is None and idle["avg_duration_ms"] is None


def test_errors_merge_newest_first_with_their_pid_and_are_capped() -> None:
    one = snapshot(status(101), [error(NOW - i * 2, f"a{i}") for i in range(30)])
    two = snapshot(status(102), [error(NOW - 1 - i * 2, f"b{i}") for i in range(30)])
    merged = merge_errors([one, two], 50)
    assert len(merged) == 50
    assert [e["request_id"] for e in merged[:4]] == ["a0", "b0", "a1", "b1"]
    assert [e["at"] for e in merged] == sorted((e["at"] for e in merged), reverse=True)
    assert merged[0]["pid"] == 101 and merged[1]["pid"] == 102
    assert "pid" not in one["errors"][0]  # the snapshots are left as they were


def test_stale_and_dead_workers_snapshots_are_ignored() -> None:
    live = snapshot(status(101))
    stale = snapshot(status(102), written_at=NOW - 6)
    dead = snapshot(status(103))
    older = snapshot(status(101), written_at=NOW - 1)
    found = live_snapshots([older, stale, dead, live], NOW, alive=lambda pid: pid != 103)
    assert found == [live]
    assert [w["pid"] for w in worker_summaries(status(104), found)] == [101, 104]


def test_snapshot_files_are_replaced_whole_and_dead_workers_files_removed(tmp_path: Path) -> None:
    directory = str(tmp_path)
    mine = snapshot(status(os.getpid()), [error(NOW, "e1")], written_at=NOW)
    write_snapshot(directory, mine)
    write_snapshot(directory, {**mine, "written_at": NOW + 1})
    gone = 2**22 + 12345  # above the kernel's default pid_max: no such process
    assert not pid_alive(gone) and pid_alive(os.getpid())
    Path(snapshot_path(directory, gone)).write_bytes(orjson.dumps(snapshot(status(gone))))
    Path(snapshot_path(directory, 1)).write_bytes(orjson.dumps(snapshot(status(1), written_at=NOW - 10)))
    (tmp_path / "counter_123.db").write_bytes(b"not a snapshot")
    found = read_snapshots(directory, NOW + 1)
    assert [s["pid"] for s in found] == [os.getpid()] and found[0]["written_at"] == NOW + 1
    assert not Path(snapshot_path(directory, gone)).exists()  # a dead worker's file is removed
    assert Path(snapshot_path(directory, 1)).exists()  # a stale one of a live process is only skipped
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "console-1.json",
        f"console-{os.getpid()}.json",
        "counter_123.db",
    ]
