"""One console view of the whole instance, merged from each worker process's snapshot.

With several worker processes each keeps its own console data and publishes it as a
snapshot (see ``gateway.console.publish``). These pure functions merge the snapshots into
one status document of the same shape as a single worker's, and one error list: counters
and requests in flight are summed, rates and averages recomputed from the sums, and each
breaker, Redis link or embedded model shows the worst state any worker sees.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

FRESH_S = 5.0  # a snapshot older than this belongs to a worker that stopped publishing

Doc = dict[str, Any]

_BREAKER_ORDER = {"open": 3, "half-open": 2, "closed": 1, "idle": 0}
_REDIS_ORDER = {"down": 2, "probing": 1, "up": 0}
_REDIS_BREAKER = {"down": "open", "probing": "half-open", "up": "closed"}
_RATE_SUMS = ("requests_last_minute", "errors_last_minute", "requests_total", "errors_total", "in_flight")
_TARGET_SUMS = ("in_flight", "calls", "failures", "requests_last_minute", "errors_last_minute")
_BACKEND_SUMS = (*_TARGET_SUMS, "window_calls")
_WINDOW_S = 60.0


def live_snapshots(
    snapshots: Iterable[Doc], now: float, alive: Callable[[int], bool], fresh_s: float = FRESH_S
) -> list[Doc]:
    """The snapshots of running workers written in the last ``fresh_s`` seconds, one per pid."""
    found: dict[int, Doc] = {}
    for snapshot in snapshots:
        pid, written = snapshot.get("pid"), snapshot.get("written_at")
        if not isinstance(pid, int) or not isinstance(written, int | float) or now - written > fresh_s:
            continue
        if alive(pid) and (pid not in found or written > found[pid]["written_at"]):
            found[pid] = snapshot
    return [found[pid] for pid in sorted(found)]


# --- the status document --------------------------------------------------------------


def merge_status(own: Doc, snapshots: list[Doc]) -> Doc:
    """``own`` (the answering worker's status) with every worker's numbers merged in.

    ``snapshots`` are the workers' snapshots (the answering worker's own is taken from
    ``own`` whether or not it is among them); what comes from the configuration (version,
    routes, settings) is the answering worker's.
    """
    docs = _documents(own, snapshots)
    started = min(float(d["started_at"]) for d in docs)
    merged = dict(own)
    merged.update(
        {
            "aggregated": True,
            "workers": _workers(docs),
            "started_at": started,
            "uptime_s": round(float(own["now"]) - started, 1),
            "ready": all(d["ready"] for d in docs),
            "draining": any(d["draining"] for d in docs),
            "in_flight": sum(int(d["in_flight"]) for d in docs),
            "max_in_flight": _total_limit([d.get("max_in_flight") for d in docs]),
            "traffic": merge_rates_by_key([d["traffic"] for d in docs]),
            "errors_total": sum(int(d["errors_total"]) for d in docs),
            "routes": [_route(route, docs) for route in own["routes"]],
            "backends": merge_backends([d["backends"] for d in docs]),
            "cache": merge_cache([d["cache"] for d in docs]),
            "response_cache": merge_response_cache([d.get("response_cache") for d in docs]),
            "embedded_models": merge_models([d["embedded_models"] for d in docs]),
            "reload": merge_reloads(docs),
        }
    )
    return merged


def merge_reloads(docs: list[Doc]) -> Doc | None:
    """The latest reload of any worker, with each worker's last result (a SIGHUP to the
    parent reloads every worker; each reports for itself)."""
    seen = [(d["pid"], d["reload"]) for d in docs if d.get("reload")]
    if not seen:
        return None
    latest = dict(max((reload for _, reload in seen), key=lambda r: float(r["at"])))
    latest["workers"] = [{"pid": pid, "result": r["result"], "at": r["at"]} for pid, r in seen]
    return latest


def worker_summaries(own: Doc, snapshots: list[Doc]) -> list[Doc]:
    """Each worker's ``pid``, ``in_flight``, ``ready``, ``draining`` and ``uptime_s``, by pid."""
    return _workers(_documents(own, snapshots))


def _documents(own: Doc, snapshots: list[Doc]) -> list[Doc]:
    """The status documents to merge: ``own`` first, then the other workers'."""
    return [own, *(s["status"] for s in snapshots if s["pid"] != own["pid"])]


def _workers(docs: list[Doc]) -> list[Doc]:
    rows = [{key: d[key] for key in ("pid", "in_flight", "ready", "draining", "uptime_s")} for d in docs]
    return sorted(rows, key=lambda row: int(row["pid"]))


def _total_limit(limits: list[object]) -> int:
    """The instance's cap on requests in flight: each worker's cap summed (0: no cap)."""
    caps = [v for v in limits if isinstance(v, int) and v > 0]
    return sum(caps) if len(caps) == len(limits) else 0


def merge_rates(rows: Iterable[Doc | None]) -> Doc | None:
    """Traffic rows (a type's or a route's) summed, with the rates recomputed."""
    present = [r for r in rows if r]
    if not present:
        return None
    merged: Doc = {}
    for key in _RATE_SUMS:
        if any(key in r for r in present):
            merged[key] = sum(int(r.get(key) or 0) for r in present)
    requests = merged.get("requests_last_minute", 0)
    errors = merged.get("errors_last_minute", 0)
    merged["requests_per_s"] = round(requests / _WINDOW_S, 3)
    merged["error_rate"] = round(errors / requests, 4) if requests else None
    merged["avg_duration_ms"] = _weighted(present, "avg_duration_ms", "requests_last_minute", 1)
    order = [k for k in present[0] if k in merged] + [k for k in merged if k not in present[0]]
    return {key: merged[key] for key in order}


def merge_rates_by_key(tables: list[Doc]) -> Doc:
    """``{name: traffic row}`` tables (per model type) merged name by name."""
    names = sorted({name for table in tables for name in table})
    return {name: merge_rates(table.get(name) for table in tables) for name in names}


def _route(route: Doc, docs: list[Doc]) -> Doc:
    """One route of the first document, with the same route's numbers from the others."""
    same = [r for r in (_find_route(d, route["route"]) for d in docs[1:]) if r is not None]
    merged = dict(route)
    merged["traffic"] = merge_rates([route.get("traffic"), *(r.get("traffic") for r in same)])
    for kind in ("targets", "fallbacks"):
        merged[kind] = [
            merge_target([row, *_same_target(same, kind, i, row["model"])]) for i, row in enumerate(route[kind])
        ]
    return merged


def _find_route(doc: Doc, name: object) -> Doc | None:
    return next((r for r in doc["routes"] if r["route"] == name), None)


def _same_target(routes: list[Doc], kind: str, index: int, model: object) -> list[Doc]:
    """The rows of one configured target (same route, list, place and model) in ``routes``."""
    return [r[kind][index] for r in routes if index < len(r[kind]) and r[kind][index]["model"] == model]


def merge_target(rows: list[Doc]) -> Doc:
    """One configured target's rows from several workers: the first's settings, summed
    counters, the worst breaker state, latency weighted by calls, the newest error."""
    merged = dict(rows[0])
    for key in _TARGET_SUMS:
        merged[key] = sum(int(r.get(key) or 0) for r in rows)
    merged["state"] = _worst((r.get("state") for r in rows), _BREAKER_ORDER, "idle")
    merged["backends"] = max(int(r.get("backends") or 0) for r in rows)
    requests, errors = merged["requests_last_minute"], merged["errors_last_minute"]
    merged["error_rate"] = round(errors / requests, 4) if requests else None
    merged["latency_ms"] = _weighted(rows, "latency_ms", "calls", 1)
    merged.update(_newest_error(rows))
    return merged


def merge_backends(tables: list[list[Doc]]) -> list[Doc]:
    """``backends`` lists merged by their ``target`` key, in the order first seen."""
    groups: dict[str, list[Doc]] = {}
    for table in tables:
        for row in table:
            groups.setdefault(str(row["target"]), []).append(row)
    return [_backend(rows) for rows in groups.values()]


def _backend(rows: list[Doc]) -> Doc:
    merged = dict(rows[0])
    for key in _BACKEND_SUMS:
        if any(key in r for r in rows):
            merged[key] = sum(int(r.get(key) or 0) for r in rows)
    merged["state"] = _worst((r.get("state") for r in rows), _BREAKER_ORDER, "closed")
    if any("consecutive_failures" in r for r in rows):
        merged["consecutive_failures"] = max(int(r.get("consecutive_failures") or 0) for r in rows)
    if any("window_error_ratio" in r for r in rows):
        merged["window_error_ratio"] = _weighted(rows, "window_error_ratio", "window_calls", 4) or 0.0
    if any("retry_in_s" in r for r in rows):
        merged["retry_in_s"] = max(float(r.get("retry_in_s") or 0) for r in rows)
    latency = _weighted(rows, "latency_avg_s", "calls", 4)
    if latency is not None:
        merged["latency_avg_s"] = latency
    merged.pop("last_error", None)
    merged.pop("last_error_at", None)
    newest = _newest_error(rows)
    if newest["last_error_at"] is not None:
        merged.update(newest)
    return merged


def merge_cache(caches: list[Doc]) -> Doc:
    """The embedding cache: counts and memory summed, the hit rate recomputed, Redis's worst state."""
    merged = dict(caches[0])
    if not merged.get("enabled"):
        return merged
    for key in ("hits", "misses", "shared"):
        merged[key] = sum(int(c.get(key) or 0) for c in caches)
    looked_up = merged["hits"] + merged["misses"] + merged["shared"]
    merged["hit_rate"] = round(merged["hits"] / looked_up, 4) if looked_up else None
    memories = [c["memory"] for c in caches if c.get("memory")]
    if memories:
        merged["memory"] = {key: sum(int(m.get(key) or 0) for m in memories) for key in ("entries", "size_bytes")}
    links = [c["redis"] for c in caches if c.get("redis")]
    if links:
        redis = dict(links[0])
        for key in ("hits", "misses", "errors", "dropped_writes"):
            redis[key] = sum(int(r.get(key) or 0) for r in links)
        redis["state"] = _worst((r.get("state") for r in links), _REDIS_ORDER, "up")
        redis["breaker"] = _REDIS_BREAKER[redis["state"]]
        merged["redis"] = redis
    return merged


def merge_response_cache(caches: list[Doc | None]) -> Doc | None:
    """The LLM response cache: counts summed, the hit rate recomputed."""
    present = [c for c in caches if c]
    if not present:
        return None
    merged = dict(present[0])
    for key in ("hits", "misses", "stored"):
        merged[key] = sum(int(c.get(key) or 0) for c in present)
    looked_up = merged["hits"] + merged["misses"]
    merged["hit_rate"] = round(merged["hits"] / looked_up, 4) if looked_up else None
    return merged


def merge_models(tables: list[dict[str, str]]) -> dict[str, str]:
    """Each embedded model's worst state: failed, then loading, then not loaded, then ready."""
    merged: dict[str, str] = {}
    for table in tables:
        for name, state in table.items():
            if name not in merged or _model_rank(state) > _model_rank(merged[name]):
                merged[name] = state
    return merged


def _model_rank(state: str) -> int:
    if state.startswith("failed"):
        return 3
    return {"loading": 2, "not loaded": 1}.get(state, 0)


# --- the error list -------------------------------------------------------------------


def merge_errors(snapshots: list[Doc], capacity: int) -> list[Doc]:
    """Every worker's recent errors, each with its worker's ``pid``, newest first, at most ``capacity``."""
    entries = [{**entry, "pid": s["pid"]} for s in snapshots for entry in s["errors"]]
    entries.sort(key=lambda entry: float(entry.get("at") or 0.0), reverse=True)
    return entries[:capacity]


# --- helpers --------------------------------------------------------------------------


def _worst(states: Iterable[object], order: dict[str, int], default: str) -> str:
    known = [s for s in states if isinstance(s, str) and s in order]
    return max(known, key=order.__getitem__, default=default)


def _weighted(rows: Iterable[Doc], value: str, weight: str, digits: int) -> float | None:
    """The mean of ``value`` over the rows that have one, weighted by ``weight``."""
    total = weights = 0.0
    for row in rows:
        v, w = row.get(value), row.get(weight) or 0
        if isinstance(v, int | float) and w > 0:
            total += v * w
            weights += w
    return round(total / weights, digits) if weights else None


def _newest_error(rows: Iterable[Doc]) -> Doc:
    newest = max(
        (r for r in rows if r.get("last_error_at") is not None),
        key=lambda r: float(r["last_error_at"]),
        default=None,
    )
    if newest is None:
        return {"last_error": None, "last_error_at": None}
    return {"last_error": newest.get("last_error"), "last_error_at": newest["last_error_at"]}
