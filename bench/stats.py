"""One step's numbers from the load generator's records and the fake upstream's service times."""

from __future__ import annotations

from typing import Any


def percentile(ordered: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list (q in 0..1)."""
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered) + 0.5) - 1))]


def _ms(values: list[float], *qs: float) -> dict[str, float] | None:
    if not values:
        return None
    ordered = sorted(values)
    out = {f"p{round(q * 100)}": round(percentile(ordered, q) * 1000, 3) for q in qs}
    out["max"] = round(ordered[-1] * 1000, 3)
    return out


def summarize(
    result: dict[str, Any],
    times: dict[str, list[float]] | None,
    upstream_calls: bool,
    cpu_s: float | None,
    rss_mb: float | None,
    stream: bool,
    chunks: int,
) -> dict[str, Any]:
    """Latency, overhead (client latency minus the upstream's service time for the same
    request id; ``times`` None: unknown, a remote target), CPU per request and chunk,
    errors and the achieved rate of one step."""
    ok = [r for r in result["records"] if r[4]]
    latencies = [r[1] for r in ok]
    ttfts = [r[2] for r in ok if r[2] >= 0]
    overheads, service, unmatched = [], [], 0
    for rid, latency, *_ in ok if times is not None else []:
        spent = times.get(rid) if times is not None else None
        if spent is None and upstream_calls:
            unmatched += 1
            continue
        upstream = sum(spent or [])
        service.append(upstream)
        overheads.append(latency - upstream)
    times = times or {}
    ok_ids = {r[0] for r in ok}
    calls_ok = sum(len(v) for rid, v in times.items() if rid in ok_ids)
    calls_abandoned = sum(len(v) for rid, v in times.items() if rid not in ok_ids)
    done = sorted(r[5] for r in ok)
    span = done[-1] - done[0] if len(done) > 1 else 0.0
    sent = result["sent"] + result["shed"]
    errors = sum(result["errors"].values())
    chunk_count = len(ok) * chunks if chunks else 0
    return {
        "offered": sent,
        "ok": len(ok),
        "errors": errors,
        "error_kinds": result["errors"],
        "achieved_rps": round((len(done) - 1) / span, 1) if span > 0 else float(len(done)),
        "latency_ms": _ms(latencies, 0.5, 0.9, 0.99),
        "ttft_ms": _ms(ttfts, 0.5, 0.99) if stream else None,
        "overhead_ms": _ms(overheads, 0.5, 0.9, 0.99),
        "overhead_unmatched": unmatched,
        "upstream_calls_per_ok_request": round(calls_ok / len(ok), 3) if ok else None,
        # Upstream calls made for requests that failed or that the client gave up on.
        "upstream_calls_for_failed_requests": calls_abandoned,
        "upstream_ms": _ms(service, 0.5, 0.99),
        "cpu_s": None if cpu_s is None else round(cpu_s, 3),
        "cpu_ms_per_request": None if cpu_s is None or not result["sent"] else round(cpu_s * 1000 / result["sent"], 3),
        "cpu_ms_per_chunk": None if cpu_s is None or not chunk_count else round(cpu_s * 1000 / chunk_count, 4),
        # Frames the daemon read per stream (a backlog of upstream deltas goes out merged).
        "frames_per_stream": round(sum(r[3] for r in ok) / len(ok), 1) if stream and ok else None,
        "rss_max_mb": None if rss_mb is None else round(rss_mb, 1),
        "client_lag_p99_ms": round(result["lag_p99_ms"], 2),
        "client_cpu_s": round(result["client_cpu_s"], 2),
        "elapsed_s": round(result["elapsed_s"], 2),
    }
