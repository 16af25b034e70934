"""Extraction benchmark: the connector against the lower bound Klaviyo's rate limits and our CPU allow.

Starts a process-mode sandbox (so the server does not share our GIL) with Klaviyo's real rate limits and
100 ms latency per request, runs each scenario as a full pipeline run into a fresh DuckDB file in a fresh
subprocess, and prints per run: rows, wall time, CPU time per 1,000 rows, peak RSS, requests, 429s, and
the scenario's lower bound = max(rate-limit bound for that many pages under Klaviyo's fixed burst and
steady windows, given the clock phase the run started at; the wall time of the same scenario with no
latency and no limits, i.e. our CPU path alone), with wall/bound.

Per scenario, in one run: `cpu` (no latency, no limits), `limited` (latency + real limits, default
concurrency), `rerun` (the same pipeline again with nothing new), and on the small tier `serial`
(concurrency=1), so the speed-up is a ratio measured in the same run.

    .venv/bin/python tests/benchmarks/bench_extract.py            # small tier + full tier (~15 min)
    .venv/bin/python tests/benchmarks/bench_extract.py --quick    # small tier only (100k events)
    .venv/bin/python tests/benchmarks/bench_extract.py --tiers full --scenarios events --events 300000

Small tier: 100k events, 20k profiles, 10 segments x 2,000 members, with serial baselines. Full tier:
1M events, 200k profiles, 50 segments x 2,000 members (serial runs there would take ~10 minutes).
Wall time is `pipeline.run` (extract, normalize, load) measured in the child; interpreter start and
imports are excluded. CPU time is the child's user+system time over the same span.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from klaviyo_source.endpoints import BY_TABLE, Tier  # noqa: E402
from klaviyo_source.sandbox import Sandbox  # noqa: E402

# Which sandbox paths (as the sandbox's stats name them) are rate-limited with which tier.
TIERS_BY_PATH: dict[str, Tier] = {f"/api{e.path}": e.tier for e in BY_TABLE.values()}

SCENARIOS: dict[str, dict[str, Any]] = {
    "events": {"resources": ["events"], "table": "events"},
    "profiles": {"resources": ["profiles"], "table": "profiles"},
    "members": {"resources": ["segment_members"], "table": "segment_members"},
}


@dataclass(frozen=True)
class Sizes:
    events: int
    profiles: int
    segments: int
    members_per_segment: int

    def sandbox(self) -> dict[str, int]:
        # Members are drawn from the profiles; the other tables stay small.
        return {
            "events": self.events,
            "profiles": max(self.profiles, self.members_per_segment),
            "segments": self.segments,
            "members_per_segment": self.members_per_segment,
            "lists": 1,
            "members_per_list": 10,
        }


@dataclass
class Run:
    """One pipeline run in a child process, and what it measured."""

    tier: str
    scenario: str
    variant: str  # cpu | limited | serial | rerun
    concurrency: int
    rows: int = 0
    wall: float = 0.0
    cpu: float = 0.0
    rss_mb: float = 0.0
    requests: int = 0
    throttled: int = 0
    pages_by_path: dict[str, int] = field(default_factory=dict)
    started: float = 0.0  # epoch seconds at pipeline.run start (rate windows are clock-aligned)
    steps: dict[str, float] = field(default_factory=dict)
    minute_counts: list[int] = field(default_factory=list)  # requests per full clock minute after the first
    server_cpu: float = 0.0  # the sandbox's CPU seconds during the run: on 2 cores it competes with ours


# --- the lower bound --------------------------------------------------------------------------------


def rate_bound(pages: int, tier: Tier, started: float, latency: float) -> float:
    """Seconds from `started` until `pages` requests can have been answered under fixed clock windows.

    Greedy admission is optimal for fixed windows: each second admits min(burst, what is left of the
    minute's steady budget); the last request then still takes one latency to answer.
    """
    if pages <= 0:
        return 0.0
    t = started
    admitted = 0
    minute, used = math.floor(t / 60), 0
    while True:
        if math.floor(t / 60) != minute:
            minute, used = math.floor(t / 60), 0
        take = min(tier.burst, tier.steady - used, pages - admitted)
        admitted += take
        used += take
        if admitted >= pages:
            return t - started + latency
        # next second, or the next minute if this one's budget is spent
        t = (minute + 1) * 60.0 if used >= tier.steady else math.floor(t) + 1.0


def bound_of(run: Run, latency: float) -> float:
    return max(
        (rate_bound(n, TIERS_BY_PATH[p], run.started, latency) for p, n in run.pages_by_path.items()
         if p in TIERS_BY_PATH),
        default=0.0,
    )


# --- running one pipeline ---------------------------------------------------------------------------


def lift_our_governor() -> None:
    """For the CPU-path runs: our own governor would otherwise still pace requests at Klaviyo's limits."""
    from klaviyo_source.rate_limit import GovernorRegistry

    def get(self: GovernorRegistry, key: str, tier: Tier) -> Any:
        return original(self, f"{key}#unlimited", Tier(10**6, 10**8))

    original = GovernorRegistry.get
    GovernorRegistry.get = get  # type: ignore[method-assign]


def child_main(spec: dict[str, Any]) -> None:
    """In the child: one pipeline.run, then its measurements as one JSON line on stdout."""
    import resource

    import dlt
    from dlt.destinations.impl.duckdb.configuration import DuckDbCredentials

    from klaviyo_source import klaviyo_source

    if spec.get("unlimited"):
        lift_our_governor()
    workdir = Path(spec["workdir"])
    credentials = DuckDbCredentials(str(workdir / "bench.duckdb"), global_config=spec["duckdb_config"] or None)
    pipeline = dlt.pipeline(
        pipeline_name="bench",
        destination=dlt.destinations.duckdb(credentials),
        dataset_name="klaviyo",
        pipelines_dir=str(workdir / "pipelines"),
    )
    source = klaviyo_source(
        api_key=spec["api_key"], base_url=spec["base_url"], resources=spec["resources"],
        concurrency=spec["concurrency"],
    )
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu0 = usage.ru_utime + usage.ru_stime
    started = time.time()
    t0 = time.perf_counter()
    info = pipeline.run(source)
    wall = time.perf_counter() - t0
    usage = resource.getrusage(resource.RUSAGE_SELF)
    info.raise_on_failed_jobs()
    steps = {
        s.step: (s.finished_at - s.started_at).total_seconds()
        for s in pipeline.last_trace.steps
        if s.finished_at is not None
    }
    with pipeline.sql_client() as client:
        rows = client.execute_sql(f"select count(*) from {spec['table']}")[0][0]
    print(json.dumps({
        "rows": rows, "wall": wall, "cpu": usage.ru_utime + usage.ru_stime - cpu0, "started": started,
        "steps": steps,
    }), flush=True)


class MinuteSampler:
    """Samples the sandbox's request count at every clock minute boundary during a run."""

    def __init__(self, sandbox: Sandbox) -> None:
        self.sandbox = sandbox
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> MinuteSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait((math.floor(time.time() / 60) + 1) * 60 - time.time() + 0.02):
            self.samples.append(ok_requests(self.sandbox.stats()))


def ok_requests(stats: dict[str, Any]) -> int:
    return sum(r["count"] for r in stats["requests"] if r["status"] != 429 and r["path"].startswith("/api/"))


def process_cpu(pid: int) -> float:
    """User + system CPU seconds of a process (fields 14 and 15 of /proc/<pid>/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_child(
    sandbox: Sandbox, run: Run, scenario: dict[str, Any], workdir: Path, duckdb_config: dict[str, Any]
) -> Run:
    spec = {
        "duckdb_config": duckdb_config,
        "workdir": str(workdir), "api_key": sandbox.api_key, "base_url": sandbox.base_url,
        "resources": scenario["resources"], "table": scenario["table"], "concurrency": run.concurrency,
        "unlimited": run.variant == "cpu",
    }
    sandbox.reset_stats()
    server_cpu = process_cpu(sandbox.pid)
    with MinuteSampler(sandbox) as sampler:
        process = subprocess.Popen(
            [sys.executable, __file__, "--child", json.dumps(spec)], cwd=ROOT, stdout=subprocess.PIPE,
        )
        assert process.stdout is not None
        output = process.stdout.read().decode()
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise RuntimeError(f"{run.tier}/{run.scenario}/{run.variant} failed (exit {process.returncode})")
    server_cpu = process_cpu(sandbox.pid) - server_cpu
    measured = json.loads(output.strip().splitlines()[-1])
    stats = sandbox.stats()
    pages: dict[str, int] = {}
    for r in stats["requests"]:
        if r["status"] == 200:
            pages[r["path"]] = pages.get(r["path"], 0) + r["count"]
    return replace(
        run,
        rows=measured["rows"], wall=measured["wall"], cpu=measured["cpu"], started=measured["started"],
        steps=measured["steps"], rss_mb=usage.ru_maxrss / 1024, requests=int(stats["total"]),
        throttled=int(stats["throttled"]), pages_by_path=pages, server_cpu=server_cpu,
        minute_counts=[b - a for a, b in zip(sampler.samples, sampler.samples[1:], strict=False)],
    )


# DuckDB's defaults let a 1M-row merge take 2.4 GB (memory_limit is 80% of RAM); a limit bounds it (spilling
# to disk if needed) and unordered inserts need less memory. Passed as explicit credentials because a
# [destination.duckdb.credentials] table in config.toml breaks `destination="duckdb"` without a path.
DUCKDB_SETTINGS = "memory_limit=128MB,preserve_insertion_order=false"


def duckdb_settings(text: str) -> dict[str, Any]:
    pairs = (item.split("=", 1) for item in text.split(",") if item)
    return {k.strip(): {"true": True, "false": False}.get(v.strip(), v.strip()) for k, v in pairs}


# --- the benchmark ----------------------------------------------------------------------------------


def run_tier(tier: str, sizes: Sizes, args: argparse.Namespace, base: Path) -> list[tuple[Run, float]]:
    """Every chosen scenario of a tier against one sandbox; (run, lower bound) pairs."""
    results: list[tuple[Run, float]] = []
    print(f"\n[{tier}] starting sandbox with {sizes}", flush=True)
    with Sandbox(seed=1, mode="process", rate_limits="off", latency=0.0, **sizes.sandbox()) as sandbox:
        for name in args.scenarios:
            scenario = SCENARIOS[name]
            variants = [("cpu", args.concurrency, False), ("limited", args.concurrency, True)]
            if tier == "small" and not args.no_serial:
                variants.append(("serial", 1, True))
            cpu_wall = 0.0
            for variant, concurrency, limited in variants:
                sandbox.configure(latency=args.latency if limited else 0.0,
                                  rate_limits=args.rate_limits if limited else "off")
                workdir = base / f"{tier}-{name}-{variant}"
                run = run_child(sandbox, Run(tier, name, variant, concurrency), scenario, workdir, args.duckdb)
                bound = max(bound_of(run, args.latency), cpu_wall) if limited else run.wall
                cpu_wall = run.wall if variant == "cpu" else cpu_wall
                results.append((run, bound))
                print(row(run, bound), flush=True)
                if variant == "limited":
                    rerun = run_child(sandbox, Run(tier, name, "rerun", concurrency), scenario, workdir, args.duckdb)
                    results.append((rerun, 0.0))
                    print(row(rerun, 0.0), flush=True)
    return results


HEADER = (
    f"{'tier':<6} {'scenario':<9} {'variant':<8} {'conc':>4} {'rows':>9} {'wall s':>8} {'rows/s':>8} "
    f"{'CPU ms/1k':>9} {'RSS MB':>7} {'requests':>8} {'429s':>5} {'bound s':>8} {'wall/bound':>10}  "
    f"{'server CPU s':>12}  {'extract/normalize/load s':<26} {'req per full minute'}"
)


def row(run: Run, bound: float) -> str:
    per_k = 1e6 * run.cpu / run.rows if run.rows else 0.0  # CPU ms per 1,000 rows
    ratio = f"{run.wall / bound:10.2f}" if bound else f"{'-':>10}"
    steps = "/".join(f"{run.steps.get(s, 0):.1f}" for s in ("extract", "normalize", "load"))
    rate = run.rows / run.wall if run.wall else 0.0
    return (
        f"{run.tier:<6} {run.scenario:<9} {run.variant:<8} {run.concurrency:>4} {run.rows:>9,} {run.wall:>8.1f} "
        f"{rate:>8,.0f} {per_k:>9.1f} {run.rss_mb:>7.0f} {run.requests:>8,} {run.throttled:>5} "
        f"{bound if bound else 0:>8.1f} {ratio} {run.server_cpu:>12.1f}  {steps:<26} {run.minute_counts or ''}"
    )


def summary(results: list[tuple[Run, float]]) -> None:
    print("\n" + HEADER)
    for run, bound in results:
        print(row(run, bound))
    by_key = {(r.tier, r.scenario, r.variant): r for r, _ in results}
    print()
    for (tier, scenario, variant), run in by_key.items():
        if variant != "serial":
            continue
        fast = by_key.get((tier, scenario, "limited"))
        if fast:
            print(f"speed-up {tier} {scenario}: concurrency {fast.concurrency} vs 1 = "
                  f"{run.wall / fast.wall:.1f}x (same rows, same run)")
    small, full = by_key.get(("small", "events", "limited")), by_key.get(("full", "events", "limited"))
    if small and full:
        print(f"events peak RSS {small.rows:,} -> {full.rows:,} rows: {small.rss_mb:.0f} -> {full.rss_mb:.0f} MB "
              f"({100 * (full.rss_mb / small.rss_mb - 1):+.0f}%)")
    for run, _ in results:
        if run.variant == "limited" and run.scenario in ("profiles", "members") and run.minute_counts:
            steady = TIERS_BY_PATH["/api/profiles"].steady
            shares = ", ".join(f"{100 * c / steady:.0f}%" for c in run.minute_counts)
            print(f"{run.tier} {run.scenario}: requests per full clock minute after the first, "
                  f"as share of {steady}/min: {shares}")


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        child_main(json.loads(sys.argv[2]))
        return
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="small tier only (100k events)")
    p.add_argument("--tiers", nargs="+", choices=("small", "full"), default=None)
    p.add_argument("--scenarios", nargs="+", choices=tuple(SCENARIOS), default=list(SCENARIOS))
    p.add_argument("--events", type=int, default=1_000_000, help="full tier")
    p.add_argument("--profiles", type=int, default=200_000, help="full tier")
    p.add_argument("--segments", type=int, default=50, help="full tier")
    p.add_argument("--members-per-segment", type=int, default=2000)
    p.add_argument("--small-events", type=int, default=100_000)
    p.add_argument("--small-profiles", type=int, default=20_000)
    p.add_argument("--small-segments", type=int, default=10)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--latency", type=float, default=0.1, help="seconds per request in limited runs")
    p.add_argument("--rate-limits", default="real", help="sandbox rate limits in limited runs")
    p.add_argument("--no-serial", action="store_true", help="skip the concurrency=1 baselines")
    p.add_argument("--workdir", type=Path, default=None, help="where DuckDB files go (default: a temp dir)")
    p.add_argument(
        "--duckdb", type=duckdb_settings, default=duckdb_settings(DUCKDB_SETTINGS),
        help=f"DuckDB settings for the destination, '' for DuckDB's defaults (default {DUCKDB_SETTINGS})",
    )
    p.add_argument("--json", type=Path, default=None, help="also write the results to this file")
    args = p.parse_args()
    tiers = args.tiers or (["small"] if args.quick else ["small", "full"])
    sizes = {
        "small": Sizes(args.small_events, args.small_profiles, args.small_segments, args.members_per_segment),
        "full": Sizes(args.events, args.profiles, args.segments, args.members_per_segment),
    }
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, latency {args.latency}s, "
          f"rate limits {args.rate_limits}, args {vars(args)}")
    started = time.perf_counter()
    results: list[tuple[Run, float]] = []
    with tempfile.TemporaryDirectory(prefix="klaviyo-bench-") as tmp:
        base = args.workdir or Path(tmp)
        for tier in tiers:
            results += run_tier(tier, sizes[tier], args, base)
    summary(results)
    print(f"\nbenchmark wall time {time.perf_counter() - started:.0f} s")
    if args.json:
        args.json.write_text(json.dumps([{**asdict(r), "bound": b} for r, b in results], indent=1))


if __name__ == "__main__":
    main()
