"""The side-by-side table: one block per scenario and rate, one column per system."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Summary = dict[str, Any]


def _num(value: float | None) -> str:
    if value is None:
        return "-"
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def _pcts(block: dict[str, float] | None, *keys: str) -> str:
    return " / ".join(_num(block.get(k)) for k in keys) if block else "-"


def _get(summary: Summary, section: str, key: str) -> float | None:
    block = summary.get(section)
    if isinstance(block, dict):
        value = block.get(key)
        return float(value) if value is not None else None
    value = summary.get(section)
    return float(value) if isinstance(value, int | float) else None


Where = tuple[str, str]
Row = tuple[str, Callable[[Summary], str], tuple[Where, ...], bool]

ROWS: list[Row] = [
    # label, cell, what the gateway/proxy column divides, streams only
    ("latency p50/p90/p99 ms", lambda s: _pcts(s["latency_ms"], "p50", "p90", "p99"), (("latency_ms", "p50"),), False),
    ("TTFT p50/p99 ms", lambda s: _pcts(s.get("ttft_ms"), "p50", "p99"), (("ttft_ms", "p50"),), True),
    (
        "overhead p50/p99 ms",
        lambda s: _pcts(s["overhead_ms"], "p50", "p99"),
        (("overhead_ms", "p50"), ("overhead_ms", "p99")),
        False,
    ),
    ("CPU ms/request", lambda s: _num(s["cpu_ms_per_request"]), (("cpu_ms_per_request", ""),), False),
    ("CPU ms/chunk", lambda s: _num(s["cpu_ms_per_chunk"]), (("cpu_ms_per_chunk", ""),), True),
    ("frames / stream", lambda s: _num(s.get("frames_per_stream")), (("frames_per_stream", ""),), True),
    ("RSS max MB", lambda s: _num(s["rss_max_mb"]), (("rss_max_mb", ""),), False),
    ("errors / offered", lambda s: f"{s['errors']} / {s['offered']}", (), False),
    ("achieved req/s", lambda s: _num(s["achieved_rps"]), (), False),
]


def _ratio(a: Summary, b: Summary, where: Where) -> str:
    x, y = _get(a, *where), _get(b, *where)
    if x is None or y is None or y <= 0 or x < 0:
        return "-"
    return f"{x / y:.2f}"


def render(steps: list[dict[str, Any]], title: str) -> str:
    """Blocks of rows; the last column is gateway / proxy (below 1: the gateway is better)."""
    systems = list(dict.fromkeys(step["system"] for step in steps))
    blocks: dict[tuple[str, float], dict[str, dict[str, Any]]] = {}
    for step in steps:
        blocks.setdefault((step["scenario"], step["rate"]), {})[step["system"]] = step
    compare = "gateway" in systems and "litellm-proxy" in systems
    width = 22
    lines = [title, ""]
    head = f"{'':24}" + "".join(f"{name:>{width}}" for name in systems) + (f"{'gateway/proxy':>16}" if compare else "")
    for by_system in blocks.values():
        first = next(iter(by_system.values()))
        lines += [first["heading"], head]
        for label, cell, where, streams_only in ROWS:
            if streams_only and not first["stream"]:
                continue
            values = [cell(by_system[n]["summary"]) if n in by_system else "" for n in systems]
            if all(v in ("-", "") for v in values):
                continue  # e.g. CPU and overhead of a remote target: not measurable from here
            cells = "".join(f"{v:>{width}}" for v in values)
            ratio = ""
            gw, px = by_system.get("gateway"), by_system.get("litellm-proxy")
            if compare and where and gw and px:
                ratio = " / ".join(_ratio(gw["summary"], px["summary"], w) for w in where)
            lines.append(f"{label:24}{cells}{ratio:>16}".rstrip())
        notes = sorted({note for step in by_system.values() for note in step.get("notes", [])})
        lines += [f"  note: {note}" for note in notes]
        lines.append("")
    return "\n".join(lines)


def progress_line(step: dict[str, Any]) -> str:
    s = step["summary"]
    parts = [f"p50 {_num(_get(s, 'latency_ms', 'p50'))} ms", f"p99 {_num(_get(s, 'latency_ms', 'p99'))} ms"]
    if s.get("overhead_ms"):
        parts.append(f"overhead p50 {_num(_get(s, 'overhead_ms', 'p50'))} ms")
    if s.get("cpu_ms_per_request") is not None:
        parts.append(f"CPU {_num(s['cpu_ms_per_request'])} ms/req")
    parts.append(f"errors {s['errors']}/{s['offered']}")
    parts.append(f"{_num(s['achieved_rps'])} req/s")
    return ", ".join(parts)
