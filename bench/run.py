"""Load benchmark: the gateway vs the LiteLLM proxy vs straight to the upstream (the floor).

    .venv/bin/python -m bench.run                   # full run (~15 min), see bench/README.md
    .venv/bin/python -m bench.run --quick --skip-proxy       # smoke, under a minute
    .venv/bin/python -m bench.run --target-url http://gw:8080 --inner-api-key ...   # a deployed gateway

Each system gets the same open-loop load (fixed arrival rate) per scenario and rate, from a
load generator in its own process, against one fake upstream in its own process. Results go
to a side-by-side table on stdout and to a JSON file.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: bench/run.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import orjson

from bench import procs, systems
from bench.loadgen import Step
from bench.proxy_env import ProxyEnvError, ensure_proxy_env
from bench.report import progress_line, render
from bench.scenarios import SCENARIOS, Models, Scenario, parse_model, request_for
from bench.stats import summarize
from bench.systems import ROOT, System

LOCAL_SYSTEMS = ("gateway", "litellm-proxy", "direct")


class LoadGenError(RuntimeError):
    """The load generator process failed (its traceback is on stderr above)."""


@dataclass(frozen=True)
class Plan:
    scenarios: list[Scenario]
    rates: list[float]
    stream_rate: float
    duration_s: float
    warmup_s: float
    timeout_s: float
    settle_cap_s: float
    idle_window_s: float
    chunks: int  # streamed deltas per reply (0: unknown, a real upstream decides)
    gap_ms: float
    models: Models
    server_cpus: str | None = None  # --pin: taskset CPU lists, None: anywhere
    client_cpus: str | None = None


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def _floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x.strip()]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke run: 1.5 s steps at 50 req/s, 10 streams")
    p.add_argument("--skip-proxy", action="store_true", help="do not run (or install) the LiteLLM proxy")
    p.add_argument("--systems", default=",".join(LOCAL_SYSTEMS), help="local systems to measure, in order")
    p.add_argument("--scenarios", default=",".join(SCENARIOS), help=f"any of {', '.join(SCENARIOS)}")
    p.add_argument("--rates", help="non-stream arrival rates, req/s (default 100,200,400; --target-url 5,10,20)")
    p.add_argument("--stream-concurrency", type=int, help="streams open at once (sets the stream rate; default 50)")
    p.add_argument("--stream-rate", type=float, help="streams started per second (default: from the concurrency)")
    p.add_argument("--duration", type=float, help="measured seconds per step (default 10)")
    p.add_argument("--warmup", type=float, help="warm-up seconds per step at the same rate (default 2)")
    p.add_argument("--timeout", type=float, default=10.0, help="client timeout per request, s (default 10)")
    p.add_argument("--settle-cap", type=float, default=90.0, help="longest wait for a busy server to go idle, s")
    p.add_argument("--latency-ms", type=float, default=20.0, help="fake upstream: delay before each reply")
    p.add_argument("--chunks", type=int, default=50, help="fake upstream: deltas per streamed reply")
    p.add_argument("--gap-ms", type=float, default=10.0, help="fake upstream: pause between deltas")
    p.add_argument("--dims", type=int, default=384, help="fake upstream: embedding dimensions")
    p.add_argument("--gateway-workers", type=int, default=1, help="dify-gateway serve --workers (default 1)")
    p.add_argument("--proxy-workers", type=int, default=1, help="litellm --num_workers (default 1)")
    p.add_argument(
        "--gateway-src",
        type=Path,
        help="run the gateway package found in this directory (PYTHONPATH) instead of the installed one",
    )
    p.add_argument(
        "--nice",
        type=int,
        default=0,
        help="scheduling priority for this run and every process it starts (e.g. -10 on a busy machine; needs root)",
    )
    p.add_argument(
        "--pin",
        action="store_true",
        help="the server under test on CPU 0, the fake upstream and the load generator on CPU 1 (taskset)",
    )
    p.add_argument("--out", type=Path, help="JSON results (default .artifacts/bench/results-<time>.json)")
    client = p.add_argument_group("client-only mode: a deployed gateway, no local servers")
    client.add_argument("--target-url", help="the gateway's base URL, e.g. http://dify-gateway:8080")
    client.add_argument(
        "--inner-api-key", default=os.environ.get("DIFY_INNER_API_KEY"), help="(or $DIFY_INNER_API_KEY)"
    )
    client.add_argument("--llm", type=parse_model, help="provider:model for llm (e.g. openai:gpt-4o-mini)")
    client.add_argument("--embedding", type=parse_model, help="provider:model for text-embedding")
    client.add_argument("--rerank", type=parse_model, help="provider:model for rerank")
    client.add_argument("--max-tokens", type=int, default=None, help="LLM max_tokens (default 256; target mode 32)")
    args = p.parse_args(argv)
    unknown = set(args.scenarios.split(",")) - set(SCENARIOS)
    if unknown:
        p.error(f"unknown scenario(s): {', '.join(sorted(unknown))}")
    if args.pin and (os.cpu_count() or 1) < 2:
        p.error("--pin needs at least 2 CPUs")
    if args.pin and args.target_url:
        p.error("--pin is for local runs")
    if args.target_url and not args.inner_api_key:
        p.error("--target-url needs --inner-api-key (or DIFY_INNER_API_KEY)")
    return args


def make_plan(args: argparse.Namespace) -> Plan:
    target = bool(args.target_url)
    quick = args.quick
    rates = (
        _floats(args.rates)
        if args.rates
        else ([50.0] if quick else [5.0, 10.0, 20.0] if target else [100.0, 200.0, 400.0])
    )
    chunks = 0 if target else args.chunks
    concurrency = args.stream_concurrency or (10 if quick else 50)
    nominal = (args.latency_ms + args.chunks * args.gap_ms) / 1000
    stream_rate = args.stream_rate or (1.0 if target else round(concurrency / nominal, 1))
    defaults = Models()
    models = Models(
        llm=args.llm or defaults.llm,
        embedding=args.embedding or defaults.embedding,
        rerank=args.rerank or defaults.rerank,
        max_tokens=args.max_tokens or (32 if target else defaults.max_tokens),
    )
    return Plan(
        scenarios=[SCENARIOS[k] for k in args.scenarios.split(",")],
        rates=rates,
        stream_rate=stream_rate,
        duration_s=args.duration or (1.5 if quick else 10.0),
        warmup_s=args.warmup if args.warmup is not None else (0.5 if quick else 2.0),
        timeout_s=args.timeout,
        settle_cap_s=min(args.settle_cap, 20.0) if quick else args.settle_cap,
        idle_window_s=0.25 if quick else 0.5,
        chunks=chunks,
        gap_ms=args.gap_ms,
        models=models,
        server_cpus="0" if args.pin else None,
        client_cpus="1" if args.pin else None,
    )


def heading(plan: Plan, scenario: Scenario, rate: float) -> str:
    if not scenario.stream:
        return f"{scenario.label} @ {rate:g} req/s"
    if not plan.chunks:
        return f"{scenario.label} @ {rate:g} streams/s"
    per_stream = plan.chunks * plan.gap_ms / 1000
    return (
        f"{scenario.label}, {plan.chunks} chunks x {plan.gap_ms:g} ms @ {rate:g} streams/s"
        f" (~{rate * per_stream:.0f} concurrent)"
    )


def notes_for(system: System, scenario: Scenario, summary: dict[str, Any]) -> list[str]:
    notes = []
    if scenario.key == "embed-cached":
        if system.kind == "dify":
            notes.append(f"{system.name}: the same inputs every time, answered from the gateway's embedding cache")
        else:
            notes.append(f"{system.name}: no embedding cache, so these are plain embeddings")
    if summary["overhead_unmatched"]:
        notes.append(f"{system.name}: {summary['overhead_unmatched']} replies with no upstream record")
    if summary["client_lag_p99_ms"] > 20:
        notes.append(f"{system.name}: the load generator fell behind (lag p99 {summary['client_lag_p99_ms']} ms)")
    return notes


class Bench:
    def __init__(self, plan: Plan, out: Path, meta: dict[str, Any]) -> None:
        self.plan, self.out, self.meta = plan, out, meta
        self.steps: list[dict[str, Any]] = []
        self.failures: list[str] = []
        self.upstream: str | None = None
        self.upstream_pid: int | None = None

    def total_steps(self, n_systems: int) -> int:
        per = sum(1 if s.stream else len(self.plan.rates) for s in self.plan.scenarios)
        return per * n_systems

    def measure(self, system: System) -> None:
        """Prime every scenario once (a full check of one reply), then run its steps."""
        for scenario in self.plan.scenarios:
            request = request_for(system.kind, scenario, self.plan.models, system.rerank_path)
            problem = systems.prime(system, request, _unary_kind(scenario))
            if problem:
                message = f"{system.name} / {scenario.key}: skipped, the first request failed: {problem}"
                log(message)
                self.failures.append(message)
                continue
            for rate in [self.plan.stream_rate] if scenario.stream else self.plan.rates:
                self.step(system, scenario, rate)

    def step(self, system: System, scenario: Scenario, rate: float) -> None:
        plan, pid = self.plan, system.pid
        request = request_for(system.kind, scenario, plan.models, system.rerank_path)
        n = len(self.steps) + 1
        log(f"[{n}/{self.meta['planned_steps']}] {system.name}: {heading(plan, scenario, rate)} ...")
        step = Step(
            url=system.url,
            path=request.path,
            headers=system.headers,
            template=request.template,
            reply=request.reply,
            rate=rate,
            duration_s=plan.duration_s,
            warmup_s=plan.warmup_s,
            timeout_s=plan.timeout_s,
            max_inflight=max(64, int(rate * 2)),
            tag=f"s{n}-",
            count_path=list(request.count_path),
            expect_count=request.expect_count,
        )
        settle_before = procs.wait_idle(pid, plan.settle_cap_s, window_s=plan.idle_window_s) if pid else 0.0
        gen = subprocess.Popen(
            systems.pinned([sys.executable, "-m", "bench.loadgen"], plan.client_cpus),
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert gen.stdin is not None and gen.stdout is not None
        try:
            gen.stdin.write(orjson.dumps(asdict(step)).decode() + "\n")
            gen.stdin.flush()
            if gen.stdout.readline().strip() != "warm":
                raise LoadGenError("the load generator failed during warm-up (see its error above)")
            if pid:  # the warm-up's replies are in; an overloaded server may still be busy with its backlog
                procs.wait_idle(pid, plan.settle_cap_s, window_s=plan.idle_window_s)
            if self.upstream:
                systems.upstream_times(self.upstream)  # forget the warm-up's
            cpu0 = procs.cpu_seconds(pid) if pid else 0.0
            up0 = procs.cpu_seconds(self.upstream_pid) if self.upstream_pid else 0.0
            with procs.RssSampler(pid or os.getpid()) as rss:
                gen.stdin.write("go\n")
                gen.stdin.flush()
                line = gen.stdout.readline()
                # An overloaded server may still work on requests the client gave up on.
                settle_after = procs.wait_idle(pid, plan.settle_cap_s, window_s=plan.idle_window_s) if pid else 0.0
            cpu = procs.cpu_seconds(pid) - cpu0 if pid else None
            upstream_cpu = procs.cpu_seconds(self.upstream_pid) - up0 if self.upstream_pid else None
        finally:
            gen.stdin.close()
            gen.wait(timeout=30)
        if not line:
            raise LoadGenError("the load generator ended without a result (see its error above)")
        result = orjson.loads(line)
        times, untagged = systems.upstream_times(self.upstream) if self.upstream else (None, 0)
        rss_mb = rss.max_mb if pid else None
        chunks = plan.chunks if scenario.stream else 0
        summary = summarize(result, times, request.upstream_calls, cpu, rss_mb, scenario.stream, chunks)
        summary |= {
            "settle_before_s": round(settle_before, 1),
            "settle_after_s": round(settle_after, 1),
            "upstream_untagged": untagged,
            "load_average_1m": round(os.getloadavg()[0], 2),
            "upstream_cpu_ms_per_request": round(upstream_cpu * 1000 / result["sent"], 3)
            if upstream_cpu is not None and result["sent"]
            else None,
        }
        record = {
            "system": system.name,
            "scenario": scenario.key,
            "stream": scenario.stream,
            "rate": rate,
            "heading": heading(plan, scenario, rate),
            "summary": summary,
            "notes": notes_for(system, scenario, summary),
        }
        self.steps.append(record)
        log(f"    {progress_line(record)}")
        if summary["error_kinds"]:
            top = sorted(summary["error_kinds"].items(), key=lambda kv: -kv[1])[:3]
            log("    errors: " + "; ".join(f"{count} x {kind}" for kind, count in top))
        self.save()

    def save(self) -> None:
        self.out.parent.mkdir(parents=True, exist_ok=True)
        payload = {"meta": self.meta, "steps": self.steps, "failures": self.failures}
        self.out.write_bytes(orjson.dumps(payload, option=orjson.OPT_INDENT_2))


def _unary_kind(scenario: Scenario) -> str:
    return {"embed": "text_embedding", "embed-cached": "text_embedding", "rerank": "rerank"}.get(scenario.key, "llm")


def run_local(args: argparse.Namespace, bench: Bench, names: list[str], work: Path) -> None:
    plan = bench.plan
    litellm = None
    if "litellm-proxy" in names:
        litellm = ensure_proxy_env(log)  # first: a broken install should stop the run before it starts
    log(f"starting the fake upstream (latency {args.latency_ms:g} ms, {args.chunks} chunks x {args.gap_ms:g} ms)")
    upstream, url = systems.start_upstream(
        args.latency_ms, args.chunks, args.gap_ms, args.dims, work / "logs", plan.client_cpus
    )
    bench.upstream, bench.upstream_pid = url, upstream.pid
    try:
        for name in names:
            server: procs.Server | None = None
            if name in systems.GATEWAYS:
                log(f"starting the {name} ...")
                server, system = systems.start_gateway(
                    url, "bench-inner-key", args.gateway_workers, work, args.gateway_src, plan.server_cpus, name
                )
            elif name == "litellm-proxy":
                assert litellm is not None
                log("starting the LiteLLM proxy (cold start takes a while) ...")
                server, system = systems.start_proxy(
                    litellm, url, plan.models, work, args.proxy_workers, plan.server_cpus
                )
            else:
                system = systems.direct(url, upstream.pid)
            log(f"{system.name} ready at {system.url} {system.notes or ''}")
            bench.meta.setdefault("systems", {})[system.name] = system.notes
            try:
                bench.measure(system)
            finally:
                if server is not None:
                    server.stop()
    finally:
        upstream.stop()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    plan = make_plan(args)
    started = time.time()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = args.out or ROOT / ".artifacts" / "bench" / f"results-{stamp}.json"
    target = bool(args.target_url)
    names = ["target"] if target else [n for n in args.systems.split(",") if n]
    if args.skip_proxy and "litellm-proxy" in names:
        names.remove("litellm-proxy")
    unknown = set(names) - {*LOCAL_SYSTEMS, *systems.GATEWAYS, "target"}
    if unknown:
        print(f"unknown system(s): {', '.join(sorted(unknown))}; choose from {', '.join(LOCAL_SYSTEMS)}")
        return 2
    meta: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "argv": sys.argv[1:] if argv is None else argv,
        "plan": {k: v for k, v in asdict(plan).items() if k != "scenarios"} | {"scenarios": args.scenarios.split(",")},
        "cores": os.cpu_count(),
        "load_average_at_start": os.getloadavg(),
        "workers": {"gateway": args.gateway_workers, "litellm-proxy": args.proxy_workers},
        "versions": systems.versions() if not target else {"python": sys.version.split()[0]},
    }
    if args.nice:
        try:  # inherited by the fake upstream, the servers and the load generators
            os.setpriority(os.PRIO_PROCESS, 0, args.nice)
        except PermissionError:
            log(f"--nice {args.nice}: not permitted here, running at normal priority")
        meta["nice"] = os.getpriority(os.PRIO_PROCESS, 0)
    bench = Bench(plan, out, meta)
    meta["planned_steps"] = bench.total_steps(len(names))
    log(f"{meta['planned_steps']} steps of {plan.duration_s:g} s (+{plan.warmup_s:g} s warm-up); results -> {out}")
    try:
        if target:
            if not args.rates:
                log("client-only mode: default rates are low (5,10,20 req/s); the target calls real, paid models")
            system = System("target", "dify", args.target_url.rstrip("/"), {"X-Inner-Api-Key": args.inner_api_key})
            system.headers["Content-Type"] = "application/json"
            bench.measure(system)
        else:
            work = ROOT / ".artifacts" / "bench" / "work"  # configuration files and server logs
            work.mkdir(parents=True, exist_ok=True)
            run_local(args, bench, names, work)
    except ProxyEnvError as exc:
        print(f"\nerror: {exc}", file=sys.stderr)
        return 2
    except (procs.StartError, LoadGenError) as exc:
        print(f"\nerror: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted; partial results are in", out, file=sys.stderr)
        return 130
    finally:
        meta["duration_s"] = round(time.time() - started, 1)
        bench.save()
    title = (
        f"dify-gateway benchmark, {meta['started']}, {meta['cores']} cores, load average at start "
        f"{meta['load_average_at_start'][0]:.2f}; {plan.duration_s:g} s per step, whole run {meta['duration_s']:g} s"
    )
    if not target:
        title += (
            f"\nfake upstream: {args.latency_ms:g} ms before each reply; overhead = client latency - upstream"
            " service time of the same request; CPU = server process tree (client and upstream run on the same cores)"
            f"\nworkers: gateway {args.gateway_workers}, LiteLLM proxy {args.proxy_workers}"
        )
    print("\n" + render(bench.steps, title))
    for failure in bench.failures:
        print(f"FAILED: {failure}")
    print(f"results: {out}")
    return 1 if bench.failures else 0


if __name__ == "__main__":
    sys.exit(main())
