"""Soak test: one gateway process under steady mixed traffic for a long time, with upstream
faults and configuration reloads, watched for leaks and failed requests.

    ./scripts/soak                              # 60 minutes (see docs/soak.md)
    ./scripts/soak --minutes 3 --reload-every 30   # the CI variant

Exit status 0 when the verdict is PASS, 1 when FAIL, 2 when the set-up failed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from bench import aio, procs, soak_gateway as gw
from bench.loadgen import RID
from bench.soak_plot import plot
from bench.soak_traffic import Kind, Lane, drive, kinds, lanes
from bench.stats import percentile
from bench.systems import ROOT, revision

KEY = "soak-inner-key"
RSS_TOLERANCE = 0.05
FD_TOLERANCE = 5
FULL_BASELINE_S = 300.0


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="scripts/soak", description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=60.0, help="length of the run (default 60)")
    p.add_argument("--seconds", type=float, help="length of the run in seconds (instead of --minutes)")
    p.add_argument("--rate", type=float, default=50.0, help="requests per second, all types together (default 50)")
    p.add_argument("--interval", type=float, default=10.0, help="seconds between samples (default 10)")
    p.add_argument("--reload-every", type=float, default=300.0, help="seconds between config reloads (default 300)")
    p.add_argument("--no-reload", action="store_true", help="never reload the configuration")
    p.add_argument("--fault-rate", type=float, default=0.05, help="share of upstream requests faulted (default 0.05)")
    p.add_argument("--fault-seed", type=int, default=1)
    p.add_argument("--retries", type=int, default=2, help="the routes' retries (default 2)")
    p.add_argument("--no-fallback", action="store_true", help="routes without a fallback target")
    p.add_argument("--timeout", type=float, default=30.0, help="client timeout per request, s (default 30)")
    p.add_argument("--max-inflight", type=int, default=200, help="per type; beyond it a request is shed (a failure)")
    p.add_argument("--out", type=Path, help="output directory (default .artifacts/soak/<time>)")
    args = p.parse_args(argv)
    args.duration_s = args.seconds if args.seconds is not None else args.minutes * 60
    if args.duration_s <= 0 or args.rate <= 0 or args.interval <= 0:
        p.error("the duration, rate and interval must be positive")
    return args


def baseline_after(duration_s: float) -> float:
    """RSS and fds are compared with their values after the first 5 minutes (warm-up: lazy
    imports, pools, the embedding cache filling up); runs under 15 minutes use the first third."""
    return FULL_BASELINE_S if duration_s >= 3 * FULL_BASELINE_S else duration_s / 3


class Soak:
    def __init__(self, args: argparse.Namespace, out: Path) -> None:
        self.args, self.out = args, out
        self.samples: list[dict[str, Any]] = []
        self.reloads: list[dict[str, Any]] = []
        self.failures: list[dict[str, Any]] = []  # the first failed requests, with their reason
        self.meta: dict[str, Any] = {
            "started": time.strftime("%Y-%m-%d %H:%M:%S %z"),
            "argv": sys.argv[1:],
            "duration_s": args.duration_s,
            "rate": args.rate,
            "interval_s": args.interval,
            "reload_every_s": None if args.no_reload else args.reload_every,
            "fault_rate": args.fault_rate,
            "retries": args.retries,
            "fallback": not args.no_fallback,
            "baseline_after_s": baseline_after(args.duration_s),
            "rss_tolerance": RSS_TOLERANCE,
            "fd_tolerance": FD_TOLERANCE,
            "cores": os.cpu_count(),
            "load_average_at_start": os.getloadavg(),
            "revision": revision(ROOT),
        }
        self.verdict: dict[str, Any] = {}
        self.port = 0  # the gateway's, once it runs

    # -- output ----------------------------------------------------------------------------
    def result(self) -> dict[str, Any]:
        return {
            "meta": self.meta,
            "samples": self.samples,
            "reloads": self.reloads,
            "failures": self.failures,
            "verdict": self.verdict,
        }

    def save(self, with_plot: bool) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "soak.json").write_bytes(orjson.dumps(self.result(), option=orjson.OPT_INDENT_2))
        if with_plot:
            plot(self.result(), self.out / "soak.png")

    # -- sampling --------------------------------------------------------------------------
    async def sample(
        self, session: aiohttp.ClientSession, url: str, upstream: str, pid: int, t: float, ls: list[Lane]
    ) -> dict[str, Any]:
        values: dict[str, float] = {}
        try:
            async with session.get(url + "/metrics") as reply:
                values = gw.metric_values(await reply.text(), (gw.LAG, gw.TASKS, gw.RELOADS))
        except (aiohttp.ClientError, TimeoutError):
            pass
        faults: dict[str, int] = {}
        try:
            async with session.get(upstream + "/_bench/faults") as reply:
                faults = orjson.loads(await reply.read())
        except (aiohttp.ClientError, TimeoutError):
            pass
        lag = values.get(gw.LAG)
        fds = gw.open_fds(pid, self.port)
        types: dict[str, Any] = {}
        for lane in ls:
            batch = lane.take()
            ok = sorted(r[1] for r in batch if r[4])
            failed = [r for r in batch if not r[4]]
            for r in failed[: max(0, 20 - len(self.failures))]:
                self.failures.append({"t_s": round(t, 1), "type": lane.kind.name, "rid": r[0]})
            types[lane.kind.name] = {
                "ok": len(ok),
                "failed": len(failed),
                "p50": round(percentile(ok, 0.5) * 1000, 1) if ok else None,
                "p99": round(percentile(ok, 0.99) * 1000, 1) if ok else None,
            }
        return {
            "t_s": round(t, 1),
            "rss_mb": _round(gw.rss_mb(pid)),
            "tree_rss_mb": _round(procs.rss_mb(pid)),
            "fds": None if fds is None else fds[0],
            "fds_inbound": None if fds is None else fds[1],  # connections the soak's client holds
            "fds_own": None if fds is None else fds[0] - fds[1],  # what the verdict judges
            "loop_lag_ms": None if lag is None else round(lag * 1000, 2),
            "asyncio_tasks": _int(values.get(gw.TASKS)),
            "reloads": gw.reloads(values),
            "faults_injected": sum(faults.values()) if faults else None,
            "load_average_1m": round(os.getloadavg()[0], 2),
            "types": types,
        }

    def progress(self, s: dict[str, Any]) -> str:
        parts = [f"t={s['t_s']:>6.0f}s rss {s['rss_mb']} MB fds {s['fds_own']} (+{s['fds_inbound']} inbound)"]
        parts.append(f"lag {s['loop_lag_ms']} ms tasks {s['asyncio_tasks']} faults {s['faults_injected']}")
        per = " ".join(
            f"{name} {v['p50']}/{v['p99']}" + (f" FAILED {v['failed']}" if v["failed"] else "")
            for name, v in s["types"].items()
        )
        ok = sum(v["ok"] for v in s["types"].values())
        parts.append(f"{ok / self.args.interval:.0f} req/s ok, p50/p99 ms: {per}")
        if s["reloads"] is not None:
            parts.append(f"reloads {s['reloads'].get('applied', 0)}/{len(self.reloads)} applied")
        return " | ".join(parts)

    # -- the run ---------------------------------------------------------------------------
    async def run(self, url: str, upstream: str, pid: int, config_path: Path, ls_kinds: list[Kind]) -> None:
        args = self.args
        timeout = aiohttp.ClientTimeout(total=args.timeout)
        connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=4)  # under the gateway's 5 s keep-alive
        async with aiohttp.ClientSession(connector=connector, timeout=timeout, skip_auto_headers=["User-Agent"]) as s:
            await self.prime(s, url, ls_kinds)
            ls = lanes(ls_kinds, url, KEY, args.rate, s)
            self.meta["rates"] = {lane.kind.name: round(lane.rate, 2) for lane in ls}
            stop = asyncio.Event()
            start = time.perf_counter()
            drivers = [asyncio.create_task(drive(lane, start, stop, args.max_inflight)) for lane in ls]
            variant, next_reload = 0, args.reload_every
            n = 0
            while True:
                n += 1
                t_next = min(n * args.interval, args.duration_s)
                while not args.no_reload and next_reload < t_next and next_reload < args.duration_s:
                    await asyncio.sleep(max(0.0, start + next_reload - time.perf_counter()))
                    variant = 1 - variant
                    gw.write_config(config_path, gw.config(upstream, variant, args.retries, not args.no_fallback))
                    gw.reload(pid)
                    self.reloads.append({"t_s": round(time.perf_counter() - start, 1), "variant": variant})
                    log(f"reload {len(self.reloads)}: config variant {variant} written, SIGHUP sent")
                    next_reload += args.reload_every
                await asyncio.sleep(max(0.0, start + t_next - time.perf_counter()))
                if t_next >= args.duration_s:
                    break
                await self.take_sample(s, url, upstream, pid, time.perf_counter() - start, ls)
            stop.set()
            await asyncio.gather(*drivers)  # every reply is in
            await self.settle_reloads(s, url)
            await self.take_sample(s, url, upstream, pid, time.perf_counter() - start, ls)
            self.meta["sent"] = {lane.kind.name: lane.sent for lane in ls}
            self.meta["errors"] = {lane.kind.name: dict(lane.errors) for lane in ls if lane.errors}

    async def take_sample(
        self, s: aiohttp.ClientSession, url: str, upstream: str, pid: int, t: float, ls: list[Lane]
    ) -> None:
        sample = await self.sample(s, url, upstream, pid, t, ls)
        self.samples.append(sample)
        log(self.progress(sample))
        for lane in ls:
            for reason, count in lane.errors.items():
                if count and reason not in self.meta.setdefault("error_reasons_logged", []):
                    self.meta["error_reasons_logged"].append(reason)
                    log(f"    {lane.kind.name} failed: {reason}")
        # The PNG every 30 samples (5 minutes at the default interval): a long run shows its shape early.
        self.save(with_plot=len(self.samples) % 30 == 0)

    async def settle_reloads(self, s: aiohttp.ClientSession, url: str) -> None:
        """A SIGHUP is handled a moment later: give the last one up to 15 s to be counted."""
        if self.args.no_reload or not self.reloads:
            return
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            async with s.get(url + "/metrics") as reply:
                counts = gw.reloads(gw.metric_values(await reply.text(), (gw.RELOADS,)))
            if counts is None or sum(counts.values()) >= len(self.reloads):
                return
            await asyncio.sleep(0.5)

    async def prime(self, s: aiohttp.ClientSession, url: str, ls_kinds: list[Kind]) -> None:
        """One request of each type, read in full by the daemon's own reader (and the embedded
        models' first calls, which load them, out of the measured run)."""
        from tests.support.daemon import read_stream_reply, read_unary_reply

        headers = {"X-Inner-Api-Key": KEY, "Content-Type": "application/json"}
        for kind in ls_kinds:
            # Faults are the fake's on purpose: a few tries (each a new request) see past them,
            # since this checks the shape of a reply, not the resilience (the run does that).
            for attempt in range(5):
                body = kind.template.replace("{RID}", RID).replace(RID, f"prime-{kind.name}-{attempt}").encode()
                limit = aiohttp.ClientTimeout(total=120)
                async with s.post(url + kind.path, data=body, headers=headers, timeout=limit) as r:
                    status, content = r.status, await r.read()
                if kind.reply == "frames":
                    outcome = read_stream_reply(status, content, kind.daemon_kind)
                    problem = outcome.error or (outcome.dropped[0][1] if outcome.dropped else None)
                else:
                    problem = None if status == 200 else f"HTTP {status}"
                    problem = problem or read_unary_reply(content, kind.daemon_kind)[1]
                if problem is None:
                    break
            else:
                raise SetupError(f"the first {kind.name} requests failed as the daemon reads them: {problem}")

    # -- verdict ---------------------------------------------------------------------------
    def judge(self) -> dict[str, Any]:
        reasons: list[str] = []
        after = self.meta["baseline_after_s"]
        late = [s for s in self.samples if s["t_s"] >= after]
        failed = sum(v["failed"] for s in self.samples for v in s["types"].values())
        ok = sum(v["ok"] for s in self.samples for v in s["types"].values())
        verdict: dict[str, Any] = {"requests_ok": ok, "requests_failed": failed}
        if failed:
            reasons.append(f"{failed} request(s) failed that the fault model says should succeed")
        if len(late) >= 2:
            # Medians of up to three samples at each end: one sample taken in a burst of
            # connections or a collection is not a trend.
            head, tail = late[:3], late[-3:]
            rss0, rss1 = _median(head, "rss_mb"), _median(tail, "rss_mb")
            fd0, fd1 = _median(head, "fds_own"), _median(tail, "fds_own")
            verdict |= {"baseline_t_s": head[0]["t_s"], "rss_baseline_mb": rss0, "rss_end_mb": rss1}
            verdict |= {"fds_baseline": fd0, "fds_end": fd1}
            if rss0 and rss1 and rss1 > rss0 * (1 + RSS_TOLERANCE):
                reasons.append(f"RSS grew {100 * (rss1 / rss0 - 1):.1f} % after the baseline ({rss0} -> {rss1} MB)")
            if fd0 is not None and fd1 is not None and fd1 > fd0 + FD_TOLERANCE:
                reasons.append(
                    f"open fds (inbound connections aside) grew from {fd0:g} to {fd1:g} (tolerance +{FD_TOLERANCE})"
                )
            if rss0 and rss1:
                verdict["rss_growth_pct"] = round(100 * (rss1 / rss0 - 1), 2)
        else:
            reasons.append("too few samples after the baseline to judge RSS and fds (run longer)")
        if not self.args.no_reload:
            counts = self.samples[-1]["reloads"] if self.samples else None
            verdict["reloads_sent"] = len(self.reloads)
            verdict["reloads_counted"] = counts
            if counts is None:
                reasons.append("the gateway has no dify_gateway_config_reloads_total metric (use --no-reload)")
            elif counts.get("applied", 0) != len(self.reloads) or counts.get("invalid", 0):
                reasons.append(f"{len(self.reloads)} reloads sent, the gateway counted {counts}")
        latencies = {name: _overall(self.samples, name) for name in (self.samples[-1]["types"] if self.samples else {})}
        verdict["latency_ms_median_of_intervals"] = latencies
        lags = [s["loop_lag_ms"] for s in self.samples if s["loop_lag_ms"] is not None]
        verdict["loop_lag_ms_max"] = max(lags) if lags else None
        faults = [s["faults_injected"] for s in self.samples if s["faults_injected"] is not None]
        verdict["faults_injected"] = faults[-1] if faults else None
        verdict["reasons"] = reasons
        verdict["result"] = "FAIL" if reasons else "PASS"
        return verdict


class SetupError(RuntimeError):
    """The soak could not start (a server, or the first request of a type)."""


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def _int(value: float | None) -> int | None:
    return None if value is None else int(value)


def _median(samples: list[dict[str, Any]], key: str) -> float | None:
    values = [s[key] for s in samples if s[key] is not None]
    return round(statistics.median(values), 1) if values else None


def _overall(samples: list[dict[str, Any]], name: str) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for q in ("p50", "p99"):
        values = [s["types"][name][q] for s in samples if s["types"].get(name, {}).get(q) is not None]
        out[q] = round(statistics.median(values), 1) if values else None
    return out


def summary(soak: Soak) -> str:
    v = soak.verdict
    meta = soak.meta
    lines = [
        f"soak {meta['duration_s']:g} s at {meta['rate']:g} req/s, {len(soak.samples)} samples: {v['result']}",
        f"  requests ok {v['requests_ok']}, failed {v['requests_failed']};"
        f" upstream faults injected {v['faults_injected']}",
        f"  RSS {v.get('rss_baseline_mb')} MB at {v.get('baseline_t_s')} s -> {v.get('rss_end_mb')} MB at the end"
        f" ({v.get('rss_growth_pct')} %, limit +{100 * RSS_TOLERANCE:g} %)",
        f"  open fds, inbound connections aside, {v.get('fds_baseline')} -> {v.get('fds_end')} (limit +{FD_TOLERANCE});"
        f" loop lag max {v['loop_lag_ms_max']} ms",
    ]
    if "reloads_sent" in v:
        lines.append(f"  reloads sent {v['reloads_sent']}, counted by the gateway {v['reloads_counted']}")
    for name, q in v["latency_ms_median_of_intervals"].items():
        lines.append(f"  {name:<13} p50 {q['p50']} ms, p99 {q['p99']} ms (medians of the intervals)")
    lines += [f"  FAIL: {reason}" for reason in v["reasons"]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = args.out or ROOT / ".artifacts" / "soak" / time.strftime("%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    soak = Soak(args, out)
    config_path = out / "gateway.yaml"
    upstream = gateway = None
    try:
        upstream, upstream_url = gw.start_upstream(args.fault_rate, args.fault_seed, out / "logs")
        gw.write_config(config_path, gw.config(upstream_url, 0, args.retries, not args.no_fallback))
        log(f"starting the gateway (config {config_path}) ...")
        gateway, url, soak.port = gw.start_gateway(config_path, KEY, out / "logs")
        soak.meta["gateway_pid"] = gateway.pid
        log(
            f"gateway pid {gateway.pid} at {url}; {args.duration_s:g} s at {args.rate:g} req/s, "
            f"faults {100 * args.fault_rate:g} %, reload "
            + ("off" if args.no_reload else f"every {args.reload_every:g} s")
            + f", baseline at {soak.meta['baseline_after_s']:g} s; results -> {out}"
        )
        aio.run(soak.run(url, upstream_url, gateway.pid, config_path, kinds()))
    except (procs.StartError, SetupError) as exc:
        print(f"\nerror: {exc}", file=sys.stderr)
        soak.save(with_plot=False)
        return 2
    except KeyboardInterrupt:
        print(f"\ninterrupted; partial results in {out}", file=sys.stderr)
        soak.verdict = soak.judge()
        soak.save(with_plot=bool(soak.samples))
        return 130
    finally:
        for server in (gateway, upstream):
            if server is not None:
                server.stop()
    soak.verdict = soak.judge()
    soak.save(with_plot=True)
    print("\n" + summary(soak))
    print(f"results: {out / 'soak.json'}, plot: {out / 'soak.png'}")
    return 0 if soak.verdict["result"] == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
