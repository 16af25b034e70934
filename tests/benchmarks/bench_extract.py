"""Extraction benchmark: the connector against the lower bound Klaviyo's rate limits and our CPU allow.

Starts a process-mode sandbox (so the server does not share our GIL) and runs every measurement as a full
pipeline run (extract, normalize, load into a fresh DuckDB file) in a fresh subprocess. Per run it prints
rows, wall time, the lower bound and wall/bound, requests, 429s, requests in flight (peak and time-weighted
mean, as the sandbox saw them) and the child's peak RSS.

The lower bound of a table at a latency is max(its CPU path, its rate-limit bound):
- CPU path: the same run with no latency and no rate limits (our governor lifted too), i.e. our own CPU
  from the first request to the last row in DuckDB, measured in the same benchmark run (the median of
  `--cpu-runs`, 3 by default).
- rate-limit bound: the time Klaviyo's fixed windows (1 s burst, 60 s steady, aligned to the clock) need to
  admit the *fewest* pages the rows can come in (rows / page size, per list for members), starting at the
  clock phase the run started at, plus one latency for the last answer. Extra requests (windows that end in
  a partly filled page) count against us, not in the bound. Members wait for the first page of their parents
  (a segment's id comes from /segments): their bound starts one latency later. The ratio to the bound
  without that wait is printed too ("alone").

Modes:

    .venv/bin/python tests/benchmarks/bench_extract.py --sweep           # latency sweep (~25 min)
    .venv/bin/python tests/benchmarks/bench_extract.py --cpu-path        # 1M events: CLI and plain Python path
    .venv/bin/python tests/benchmarks/bench_extract.py --small-tiers     # flows and campaigns, > 2 minutes each
    .venv/bin/python tests/benchmarks/bench_extract.py --sweep --scenarios events --latencies 1

`--sweep`: per large table (events 200k, profiles 30k, 20 segments x 2,000 members), the CPU path, then at
each latency (100/500/1000/2000 ms) the default (concurrency that follows the pace) and today's fixed
`concurrency=8` side by side, with Klaviyo's real limits. Latency model of the sandbox: `latency` seconds
before a request arrives plus 0.25 s per MB of JSON answered (a 1,000-event page, ~0.8 MB, takes 0.2 s
more than an empty one); answers gzip-compressed (the connector asks for it, as Klaviyo's clients do).
`--cpu-path`: 1M events with no latency and no limits, through the CLI's settings and through the plain
Python path (`dlt.pipeline(destination="duckdb").run(klaviyo_source(...))`, DuckDB's own defaults). With a
PostgreSQL server (`--postgres DSN`, default $KLAVIYO_TEST_POSTGRES_DSN) the same events also go into
PostgreSQL: `pg-adbc` (parquet copied by the ADBC driver, the postgres extra's path) and `pg-sql` (ADBC turned
off: dlt's INSERT statements), each step's time beside DuckDB's in the same run.
`--small-tiers`: flows (3/s, 60/min) and campaigns (10/s, 150/min) large enough to take over two minutes at
the steady limit, with requests per full clock minute after the first.
`--governed-cpu` measures each CPU path a second time, as a harness outside the project sees it: no latency and no
limits on the sandbox's side, but our governor left to pace requests at Klaviyo's limits, as it always does (it
cannot know that the server has none): the `gov-cpu` rows. Profiles then take about their rate bound even with no
latency. Each limited run also prints its ratio to that bound ("governed"); the ratio column keeps the lifted CPU
path.
`--perfect-plan` adds, at each latency of the sweep, a run of events and profiles whose first load is planned
with knowledge the connector cannot have: windows of equal rows, each a whole number of pages, cut from the
cursors of the CPU path's own table, and no window ever split. The difference to the default run is what
planning without knowing the data costs; the difference to the bound is what is left once the plan is perfect.
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

LATENCY_PER_MB = 0.25  # sandbox latency model: seconds per MB of JSON answered, on top of the base latency
LATENCIES = (0.1, 0.5, 1.0, 2.0)
FIXED = 8  # today's fixed concurrency, run beside the default in the same sweep


@dataclass(frozen=True)
class Scenario:
    table: str  # the table measured (and the one resource loaded, with its parent for children)
    resources: tuple[str, ...]
    sizes: dict[str, int]  # sandbox sizes; the tables not named stay tiny


SWEEP: dict[str, Scenario] = {
    "events": Scenario("events", ("events",), {"events": 200_000, "profiles": 20_000}),
    "profiles": Scenario("profiles", ("profiles",), {"events": 1000, "profiles": 30_000}),
    "members": Scenario("segment_members", ("segment_members",),
                        {"events": 1000, "profiles": 4000, "segments": 20, "members_per_segment": 2000}),
}
SMALL_TIERS: dict[str, Scenario] = {
    "flows": Scenario("flows", ("flows",), {"events": 1000, "profiles": 500, "flows": 6500,
                                            "actions_per_flow": 1, "messages_per_action": 1}),
    "campaigns": Scenario("campaigns", ("campaigns",), {"events": 1000, "profiles": 500, "campaigns": 31_000}),
}
TINY = {"lists": 1, "members_per_list": 10, "segments": 1, "members_per_segment": 10, "campaigns": 3, "flows": 1,
        "templates": 3, "tags": 2, "catalog_items": 2, "catalog_categories": 1, "coupons": 1, "codes_per_coupon": 2}


@dataclass
class Run:
    """One pipeline run in a child process, and what it measured."""

    scenario: str
    variant: str  # cpu | gov-cpu | auto | fixed8 | perfect | cli | plain | pg-adbc | pg-sql
    latency: float
    concurrency: int | None
    rows: int = 0
    wall: float = 0.0
    cpu: float = 0.0
    rss_mb: float = 0.0
    requests: int = 0
    throttled: int = 0
    inflight_peak: int = 0
    inflight_mean: float = 0.0
    pages_by_path: dict[str, int] = field(default_factory=dict)
    started: float = 0.0  # epoch seconds at pipeline.run start (rate windows are clock-aligned)
    steps: dict[str, float] = field(default_factory=dict)
    minute_counts: list[int] = field(default_factory=list)  # requests per full clock minute after the first
    server_cpu: float = 0.0  # the sandbox's CPU seconds during the run: on 2 cores it competes with ours
    bound: float = 0.0
    bound_alone: float = 0.0  # children: the bound as if their parents' ids were known before the run
    bound_governed: float = 0.0  # the bound with the governed CPU path (`--governed-cpu`)


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


def fewest_pages(scenario: Scenario, rows: int) -> int:
    """The fewest requests `rows` rows of the scenario's table can come in."""
    endpoint = BY_TABLE[scenario.table]
    size = endpoint.page_size or 100
    if endpoint.parent:  # one chain per parent at least: the members of each segment apart
        parents = scenario.sizes.get("segments", 1)
        return parents * math.ceil(rows / parents / size)
    if endpoint.partitions:  # campaigns: each channel apart
        return sum(math.ceil(rows / len(endpoint.partitions) / size) for _ in endpoint.partitions)
    return math.ceil(rows / size)


def bound_of(run: Run, scenario: Scenario, cpu_wall: float, latency: float, parent_page: bool = True) -> float:
    """With `parent_page`, a child's pages wait for the first page of its parents (one latency)."""
    endpoint = BY_TABLE[scenario.table]
    wait = run.latency if endpoint.parent and parent_page else 0.0
    pages = fewest_pages(scenario, run.rows)
    return max(cpu_wall, wait + rate_bound(pages, endpoint.tier, run.started + wait, latency))


# --- running one pipeline ---------------------------------------------------------------------------


def lift_our_governor() -> None:
    """For the CPU-path runs: requests are not held back by our governor (it would still pace them at
    Klaviyo's limits); the tiers still size the requests in flight, as without the lift."""
    from klaviyo_source.rate_limit import Governor

    Governor.acquire = lambda self, sleep=None: None  # type: ignore[method-assign]


def plan_perfectly(database: str, table: str) -> None:
    """For the `perfect` runs: a first load's windows hold equal rows, a whole number of pages each, cut from
    the cursors of `table` in `database` (the CPU path's load of the same sandbox), and no window is split.

    As many windows as the connector plans (the `parts` it asks for), or fewer: each the fewest whole pages
    that make no more than `parts` windows. Patched into the child like `lift_our_governor`."""
    import duckdb

    from klaviyo_source import resources, windows

    endpoint = BY_TABLE[table]
    with duckdb.connect(database, read_only=True) as db:
        cursors = [r[0] for r in db.execute(f"select {endpoint.cursor} from klaviyo.{table} order by 1").fetchall()]

    def perfect(window: windows.Window, parts: int, *_: Any, **__: Any) -> list[windows.Window]:
        inside = [c for c in cursors if window.contains(c)]
        rows = endpoint.page_size * max(1, math.ceil(len(inside) / parts / endpoint.page_size))
        edges = sorted({c for c in inside[rows::rows] if window.lo is None or c > window.lo})
        return [windows.Window(lo, hi) for lo, hi in zip([window.lo, *edges], [*edges, window.hi], strict=True)]

    resources.plan = perfect  # type: ignore[assignment]
    windows.Plan.steal = lambda self, last_round=None: None  # type: ignore[method-assign]


def child_main(spec: dict[str, Any]) -> None:
    """In the child: one pipeline.run, then its measurements as one JSON line on stdout."""
    import resource

    import dlt
    from dlt.destinations.impl.duckdb.configuration import DuckDbCredentials

    from klaviyo_source import klaviyo_source

    if spec["unlimited"]:
        lift_our_governor()
    if spec.get("perfect_from"):
        plan_perfectly(spec["perfect_from"], spec["table"])
    workdir = Path(spec["workdir"])
    database = str(workdir / "bench.duckdb")
    dataset = "klaviyo"
    if spec.get("postgres"):  # what the CLI does with --destination postgres (no unique row-id index)
        destination: Any = dlt.destinations.postgres(spec["postgres"], create_indexes=False)
        dataset = f"bench_{os.getpid()}"  # a shared server: a dataset of its own, dropped below
        if not spec.get("adbc"):
            os.environ["DISABLE_ADBC_DETECTION"] = "true"  # dlt then loads parquet with INSERT statements
    elif spec["plain"]:  # what a user writes: DuckDB's own defaults, dlt's default file format
        destination = dlt.destinations.duckdb(database)
    else:  # what the CLI does (pipelines/klaviyo_pipeline.py)
        destination = dlt.destinations.duckdb(DuckDbCredentials(database, global_config=spec["duckdb_config"]))
    pipeline = dlt.pipeline(
        pipeline_name="bench", destination=destination, dataset_name=dataset, pipelines_dir=str(workdir / "p")
    )
    options = {"concurrency": spec["concurrency"]} if spec["concurrency"] else {}
    source = klaviyo_source(api_key=spec["api_key"], base_url=spec["base_url"], resources=spec["resources"],
                            **options)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu0 = usage.ru_utime + usage.ru_stime
    started = time.time()
    t0 = time.perf_counter()
    info = pipeline.run(source) if spec["plain"] else pipeline.run(source, loader_file_format="parquet")
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
        if spec.get("postgres"):
            client.drop_dataset()
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


AT_REST = ("cpu", "gov-cpu")  # the CPU-path variants: no latency, no limits on the sandbox


def run_child(sandbox: Sandbox, run: Run, scenario: Scenario, workdir: Path, args: argparse.Namespace,
              plain: bool = False, postgres: str | None = None, adbc: bool = True,
              perfect_from: Path | None = None) -> Run:
    limited = run.variant not in AT_REST
    sandbox.configure(latency=run.latency, latency_per_mb=LATENCY_PER_MB if limited else 0.0,
                      rate_limits=args.rate_limits if limited else "off")
    spec = {
        "duckdb_config": args.duckdb, "plain": plain, "workdir": str(workdir), "api_key": sandbox.api_key,
        "base_url": sandbox.base_url, "resources": list(scenario.resources), "table": scenario.table,
        "concurrency": run.concurrency, "unlimited": run.variant == "cpu", "postgres": postgres, "adbc": adbc,
        "perfect_from": str(perfect_from) if perfect_from else None,
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
        raise RuntimeError(f"{run.scenario}/{run.variant} failed (exit {process.returncode})")
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
        throttled=int(stats["throttled"]), inflight_peak=int(stats["inflight_peak"]),
        inflight_mean=float(stats["inflight_mean"]), pages_by_path=pages, server_cpu=server_cpu,
        minute_counts=[b - a for a, b in zip(sampler.samples, sampler.samples[1:], strict=False)],
    )


# DuckDB's defaults let a 1M-row merge take 2.4 GB (memory_limit is 80% of RAM); a limit bounds it (spilling
# to disk if needed) and unordered inserts need less memory. The CLI applies the same settings.
DUCKDB_SETTINGS = "memory_limit=128MB,preserve_insertion_order=false"


def duckdb_settings(text: str) -> dict[str, Any]:
    pairs = (item.split("=", 1) for item in text.split(",") if item)
    return {k.strip(): {"true": True, "false": False}.get(v.strip(), v.strip()) for k, v in pairs}


# --- the benchmark ----------------------------------------------------------------------------------


def sandbox_for(scenario: Scenario) -> Sandbox:
    return Sandbox(seed=1, mode="process", rate_limits="off", latency=0.0, **{**TINY, **scenario.sizes})


PERFECT = ("events", "profiles")  # one partition each: the cursors of the whole table are the plan's


def sweep(
    names: list[str], scenarios: dict[str, Scenario], args: argparse.Namespace, base: Path,
    latencies: list[float], fixed: bool = True, perfect: bool = False,
) -> list[Run]:
    """Per scenario: the CPU path, then at each latency the default beside fixed concurrency 8 (and, with
    `perfect`, beside a perfectly planned run)."""
    results: list[Run] = []
    for name in names:
        scenario = scenarios[name]
        print(f"\n[{name}] sandbox {scenario.sizes}", flush=True)
        with sandbox_for(scenario) as sandbox:
            # the CPU path moves by a third between runs of the same data (8.0 to 10.2 s, 5.1 to 7.4 s for the
            # same 200k events): the ratios are to the median of several, not to whichever came first
            medians = {}
            for path in AT_REST if args.governed_cpu else AT_REST[:1]:
                runs = []
                for k in range(args.cpu_runs):
                    workdir = base / f"{name}-{path}-{k}"
                    cpu = run_child(sandbox, Run(name, path, 0.0, None), scenario, workdir, args)
                    cpu.bound = cpu.wall
                    runs.append((cpu, workdir / "bench.duckdb"))  # its table plans the `perfect` runs
                    results.append(cpu)
                    print(row(cpu), flush=True)
                medians[path] = sorted(runs, key=lambda pair: pair[0].wall)[len(runs) // 2]
                label = {"cpu": "CPU path", "gov-cpu": "governed CPU path"}[path]
                print(f"{label} (median of {len(runs)}): {medians[path][0].wall:.1f} s", flush=True)
            cpu, cpu_database = medians["cpu"]
            for latency in latencies:
                variants = [("auto", None)] + ([(f"fixed{FIXED}", FIXED)] if fixed else [])
                variants += [("perfect", None)] if perfect and name in PERFECT else []
                for variant, concurrency in variants:
                    workdir = base / f"{name}-{variant}-{latency}"
                    plan_from = cpu_database if variant == "perfect" else None
                    run = run_child(sandbox, Run(name, variant, latency, concurrency), scenario, workdir, args,
                                    perfect_from=plan_from)
                    answer = latency + LATENCY_PER_MB * page_mb(name)
                    run.bound = bound_of(run, scenario, cpu.wall, answer)
                    run.bound_alone = bound_of(run, scenario, cpu.wall, answer, parent_page=False)
                    if "gov-cpu" in medians:
                        run.bound_governed = bound_of(run, scenario, medians["gov-cpu"][0].wall, answer)
                    results.append(run)
                    print(row(run), flush=True)
    return results


def page_mb(scenario: str) -> float:
    """JSON size of a full page, for the latency model's share of the bound (measured on the sandbox)."""
    return {"events": 0.76, "profiles": 0.09, "members": 0.012, "flows": 0.02, "campaigns": 0.3}.get(scenario, 0.1)


def cpu_path(args: argparse.Namespace, base: Path) -> list[Run]:
    """1M events, no latency and no limits: the CLI's settings and the plain Python path, and PostgreSQL with
    ADBC and without when a server is given."""
    scenario = Scenario("events", ("events",), {"events": args.events, "profiles": 20_000})
    variants: list[tuple[str, dict[str, Any]]] = [("cli", {}), ("plain", {"plain": True})]
    if args.postgres:
        variants += [("pg-adbc", {"postgres": args.postgres}), ("pg-sql", {"postgres": args.postgres, "adbc": False})]
    results = []
    with sandbox_for(scenario) as sandbox:
        for variant, options in variants:
            run = run_child(sandbox, Run("events-1M", "cpu", 0.0, None), scenario, base / f"cpu-{variant}", args,
                            **options)
            run.variant = variant
            run.bound = run.wall
            results.append(run)
            print(row(run), flush=True)
            print(f"    {run.rows / run.wall:,.0f} events/s end to end; server CPU {run.server_cpu:.1f} s", flush=True)
    return results


HEADER = (
    f"{'table':<9} {'variant':<7} {'latency':>7} {'rows':>8} {'wall s':>7} {'bound s':>7} {'ratio':>5} "
    f"{'requests':>8} {'429s':>4} {'in flight peak/mean':>19} {'RSS MB':>6}  {'extract/normalize/load s':<24} "
    f"{'req per full minute'}"
)


def row(run: Run) -> str:
    at_rest = run.variant in AT_REST
    ratio = f"{run.wall / run.bound:5.2f}" if run.bound and not at_rest else f"{'-':>5}"
    steps = "/".join(f"{run.steps.get(s, 0):.1f}" for s in ("extract", "normalize", "load"))
    latency = f"{1000 * run.latency:.0f} ms" if not at_rest else "-"
    return (
        f"{run.scenario:<9} {run.variant:<7} {latency:>7} {run.rows:>8,} {run.wall:>7.1f} {run.bound:>7.1f} {ratio} "
        f"{run.requests:>8,} {run.throttled:>4} {f'{run.inflight_peak}/{run.inflight_mean:.0f}':>19} "
        f"{run.rss_mb:>6.0f}  {steps:<24} {run.minute_counts or ''}"
        + (f"  alone {run.wall / run.bound_alone:.2f}" if run.bound_alone and run.bound_alone != run.bound else "")
        + (f"  governed {run.wall / run.bound_governed:.2f}" if run.bound_governed else "")
    )


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        child_main(json.loads(sys.argv[2]))
        return
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sweep", action="store_true", help="latency sweep of the large tables")
    p.add_argument("--cpu-path", action="store_true", help="1M events with no latency: CLI and plain Python")
    p.add_argument("--small-tiers", action="store_true", help="flows and campaigns at their steady limits")
    p.add_argument("--small-tiers-latency", type=float, default=1.0)
    p.add_argument("--scenarios", nargs="+", default=None, help=f"of {[*SWEEP, *SMALL_TIERS]}")
    p.add_argument("--latencies", nargs="+", type=float, default=list(LATENCIES))
    p.add_argument("--no-fixed", action="store_true", help=f"skip the concurrency={FIXED} runs")
    p.add_argument("--cpu-runs", type=int, default=3, help="CPU-path runs per table; ratios are to their median")
    p.add_argument("--perfect-plan", action="store_true",
                   help=f"also plan {' and '.join(PERFECT)} from their own rows (what planning costs)")
    p.add_argument("--governed-cpu", action="store_true",
                   help="also measure each CPU path with our governor pacing as it does (an outside harness's view)")
    p.add_argument("--events", type=int, default=1_000_000, help="events in the CPU-path run")
    p.add_argument("--rate-limits", default="real", help="sandbox rate limits in limited runs")
    p.add_argument("--workdir", type=Path, default=None, help="where DuckDB files go (default: a temp dir)")
    p.add_argument(
        "--duckdb", type=duckdb_settings, default=duckdb_settings(DUCKDB_SETTINGS),
        help=f"DuckDB settings of the CLI-like runs (default {DUCKDB_SETTINGS})",
    )
    p.add_argument("--json", type=Path, default=None, help="also write the results to this file")
    p.add_argument("--postgres", default=os.environ.get("KLAVIYO_TEST_POSTGRES_DSN"),
                   help="--cpu-path also loads into this PostgreSQL (default $KLAVIYO_TEST_POSTGRES_DSN; '' skips)")
    args = p.parse_args()
    if not (args.sweep or args.cpu_path or args.small_tiers):
        p.error("choose --sweep, --cpu-path and/or --small-tiers")
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, rate limits {args.rate_limits}, "
          f"latency model: base + {LATENCY_PER_MB} s/MB, gzip; "
          f"args {({**vars(args), 'postgres': bool(args.postgres)})}")  # the DSN may carry a password
    started = time.perf_counter()
    results: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="klaviyo-bench-") as tmp:
        base = args.workdir or Path(tmp)
        if args.cpu_path:
            results += cpu_path(args, base)
        if args.sweep:
            names = [s for s in args.scenarios or SWEEP if s in SWEEP]
            results += sweep(names, SWEEP, args, base, args.latencies, not args.no_fixed, args.perfect_plan)
        if args.small_tiers:  # long by design (minutes at the steady limit): one latency, the default only
            names = [s for s in args.scenarios or SMALL_TIERS if s in SMALL_TIERS]
            results += sweep(names, SMALL_TIERS, args, base, [args.small_tiers_latency], fixed=False)
    print("\n" + HEADER)
    for run in results:
        print(row(run))
    print(f"\nbenchmark wall time {time.perf_counter() - started:.0f} s")
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=1))


if __name__ == "__main__":
    main()
