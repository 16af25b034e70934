"""Benchmark of the analyst models (klaviyo_dbt) on DuckDB: a full build over 1M events, then an incremental
build after 10k new events, as ratios measured in the same run (the machine is shared: absolute seconds are
noise, ratios are the figure).

Loads a process-mode sandbox (no rate limits, no latency: loading is not what is measured) into a fresh DuckDB
file, then runs each build in a fresh child process and reports its wall time, peak RSS and the slowest
models (dbt's run_results.json):

  full         dbt build --full-refresh over the whole account
  unchanged    an incremental build with nothing new loaded (dbt's own floor: parse, introspection, tests)
  incremental  after 10k new events (half of them late, up to 20 h back) and the loader's 24 h re-read

and then proves the incremental build right: each incremental model (and what is built from one) is hashed, rebuilt
with --full-refresh over the same tables and hashed again; the hashes must be equal (stamps left out).

    .venv/bin/python tests/benchmarks/bench_models.py                 # 1M events (~10 min)
    .venv/bin/python tests/benchmarks/bench_models.py --events 100000 --new-events 1000
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from klaviyo_source.sandbox import Sandbox  # noqa: E402
from tests.benchmarks.bench_extract import lift_our_governor  # noqa: E402


def pipeline_for(workdir: Path) -> Any:
    import dlt
    from dlt.destinations.impl.duckdb.configuration import DuckDbCredentials

    credentials = DuckDbCredentials(str(workdir / "bench.duckdb"), global_config={"memory_limit": "1GB"})
    return dlt.pipeline(pipeline_name="bench_models", destination=dlt.destinations.duckdb(credentials),
                        dataset_name="klaviyo", pipelines_dir=str(workdir / "pipelines"))


def load(workdir: Path, sandbox: Sandbox) -> float:
    from klaviyo_source import klaviyo_source

    lift_our_governor()
    started = time.perf_counter()
    pipeline_for(workdir).run(klaviyo_source(api_key=sandbox.api_key, base_url=sandbox.base_url),
                              loader_file_format="parquet").raise_on_failed_jobs()
    return time.perf_counter() - started


def child_build(workdir: Path, full_refresh: bool) -> None:
    """In a child: one build, then wall time, peak RSS and per-model times as a JSON line."""
    from klaviyo_dbt import build

    pipeline = pipeline_for(workdir)
    events = "klaviyo_analytics.klaviyo__events"
    with pipeline.sql_client() as client:
        try:
            before = client.execute_sql(f"select max(_processed_through_load_id) from {events}")[0][0] or ""
        except Exception:  # no models yet
            before = ""
    started = time.perf_counter()
    result = build(pipeline, full_refresh=full_refresh, quiet=True)
    wall = time.perf_counter() - started
    runs = json.loads((Path(pipeline.working_dir) / "dbt" / "target" / "run_results.json").read_text())
    models = {r["unique_id"].split(".")[-1]: r["execution_time"] for r in runs["results"]
              if r["unique_id"].startswith("model.")}
    tests = {r["unique_id"].split(".")[2]: r["execution_time"] for r in runs["results"]
             if r["unique_id"].startswith("test.")}
    with pipeline.sql_client() as client:
        rows = client.execute_sql(f"select count(*) from {events}")[0][0]
        # rows written by this build: those it stamped with a newer watermark (a full refresh writes all)
        recomputed = rows if full_refresh else client.execute_sql(
            f"select count(*) from {events} where _processed_through_load_id > %s", before)[0][0]
    print(json.dumps({"wall": wall, "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "models": models, "tests": result.count("pass"), "test_seconds": sum(tests.values()),
                      "test_times": tests, "events": rows, "recomputed": recomputed}), flush=True)


# the models an incremental build updates in place, and the rows of each that a full rebuild must reproduce
COMPARED = {
    "klaviyo__events": "true", "int_klaviyo__message_person_days": "events > 0", "klaviyo__message_performance": "true",
    "int_klaviyo__report_tallies": "true", "klaviyo__reconciliation": "true", "klaviyo__person_campaign_flow": "true",
    "klaviyo__persons": "true", "klaviyo__campaigns": "true", "klaviyo__flows": "true",
}


def model_hashes(workdir: Path) -> dict[str, tuple[int, str]]:
    """Rows and an md5 over every row (as text, sorted) of each compared model, its stamp left out."""
    import duckdb

    hashes = {}
    with duckdb.connect(str(workdir / "bench.duckdb"), read_only=True) as db:
        for model, rows in COMPARED.items():
            table = f"klaviyo_analytics.{model}"
            columns = [c for (c,) in db.execute(
                "select column_name from information_schema.columns where table_schema = 'klaviyo_analytics' "
                "and table_name = ? and column_name not in ('_processed_through_load_id', '_changed_through_load_id') "
                "order by ordinal_position",
                [model]).fetchall()]
            hashes[model] = db.execute(
                "select count(*), md5(coalesce(string_agg(cast(t as varchar), chr(10) order by cast(t as varchar)),"
                f" '')) from (select {', '.join(columns)} from {table} where {rows}) as t").fetchone()
    return hashes


def run_build(workdir: Path, full_refresh: bool) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, __file__, "--child", str(workdir), *(["--full-refresh"] if full_refresh else [])],
        capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"build failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--new-events", type=int, default=10_000)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--full-refresh", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child_build(Path(args.child), args.full_refresh)
        return
    sizes = {"events": args.events, "profiles": max(1000, args.events // 10), "campaigns": 120, "flows": 16,
             "actions_per_flow": 4, "messages_per_action": 2, "lists": 8, "segments": 8,
             "members_per_list": 5000, "members_per_segment": 5000}
    with tempfile.TemporaryDirectory(prefix="bench-models-") as tmp, \
            Sandbox(seed=1, mode="process", rate_limits="off", **sizes) as sandbox:
        workdir = Path(tmp)
        seconds = load(workdir, sandbox)
        print(f"loaded {args.events:,} events in {seconds:.1f} s", flush=True)
        full = run_build(workdir, full_refresh=True)
        unchanged = run_build(workdir, full_refresh=False)
        late = args.new_events // 2
        for k in range(10):  # late events spread over the last 20 hours, the rest now
            sandbox.mutate("add_events", count=late // 10, offset_seconds=-(k + 1) * 2 * 3600)
        sandbox.mutate("add_events", count=args.new_events - late // 10 * 10)
        time.sleep(1.1)
        seconds = load(workdir, sandbox)
        print(f"loaded {args.new_events:,} new events (and the 24 h re-read) in {seconds:.1f} s", flush=True)
        incremental = run_build(workdir, full_refresh=False)
        after_incremental = model_hashes(workdir)
        rebuilt = run_build(workdir, full_refresh=True)
        after_rebuild = model_hashes(workdir)
    print("\nincremental build against a full rebuild of the same tables (rows, md5 of the rows):")
    for model, found in after_incremental.items():
        verdict = "equal" if found == after_rebuild[model] else f"DIFFERENT (rebuild: {after_rebuild[model]})"
        print(f"  {model:<34} {found[0]:>9,} rows  {verdict}")
    print("\n| build | events in klaviyo__events | recomputed | wall | / full | models alone | / full | tests alone "
          "| peak RSS |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, r in (("full", full), ("unchanged", unchanged), ("incremental", incremental), ("rebuild", rebuilt)):
        models, full_models = sum(r["models"].values()), sum(full["models"].values())
        print(f"| {name} | {r['events']:,} | {r['recomputed']:,} | {r['wall']:.1f} s | {r['wall'] / full['wall']:.2f} "
              f"| {models:.1f} s | {models / full_models:.2f} | {r['test_seconds']:.1f} s ({r['tests']}) "
              f"| {r['rss_mb']:.0f} MB |")
    print("\n('models alone' and 'tests alone' sum dbt's execution times of the models and of the dbt tests run)")
    print("\nslowest models (seconds): full / incremental")
    for model in sorted(full["models"], key=lambda m: -full["models"][m])[:12]:
        print(f"  {model:<34} {full['models'][model]:6.1f} / {incremental['models'].get(model, 0):6.1f}")
    print("\nslowest dbt tests (seconds): full / incremental")
    for test in sorted(full["test_times"], key=lambda t: -full["test_times"][t])[:8]:
        print(f"  {test[:60]:<60} {full['test_times'][test]:6.1f} / {incremental['test_times'].get(test, 0):6.1f}")


if __name__ == "__main__":
    main()
