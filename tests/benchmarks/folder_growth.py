"""Pipeline folder and state size over many scheduled runs: with the housekeeping of `scheduled_run`, and without.

Runs a first load of a sandbox account, then N incremental runs in this process (the account changes a little
before each: new and late events, changed profiles, new members), and prints the pipeline folder's size, the
size of `load/loaded` and of the state after the first run and every `--every` runs. `--baseline` runs the same
with plain `dlt.pipeline` (dlt keeps every completed package), for comparison.

    .venv/bin/python tests/benchmarks/folder_growth.py --runs 1000
    .venv/bin/python tests/benchmarks/folder_growth.py --runs 100 --baseline
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from contextlib import AbstractContextManager, nullcontext
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import dlt  # noqa: E402

from klaviyo_source import klaviyo_source  # noqa: E402
from klaviyo_source.housekeeping import folder_size  # noqa: E402
from klaviyo_source.sandbox import Sandbox  # noqa: E402
from klaviyo_source.scheduling import scheduled_run  # noqa: E402


def sizes(folder: Path) -> str:
    state = folder / "state.json"
    loaded = folder_size(folder / "load" / "loaded")
    return (f"folder {folder_size(folder) / 1e3:7.0f} kB (completed packages {loaded / 1e3:7.0f} kB)  "
            f"state {state.stat().st_size if state.exists() else 0:6,} B")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runs", type=int, default=1000, help="incremental runs after the first load")
    p.add_argument("--every", type=int, default=100, help="print sizes every this many runs")
    p.add_argument("--events", type=int, default=20_000)
    p.add_argument("--profiles", type=int, default=2_000)
    p.add_argument("--baseline", action="store_true", help="plain dlt.pipeline: no pruning, no locks")
    # Every change the test makes is minutes old, so a 24 h lookback would re-read all of them on every run and
    # each package would grow with the test's length; a real account's lookback re-reads a steady day.
    p.add_argument("--lookback-hours", type=float, default=0.0, help="events_lookback_hours (default 0)")
    p.add_argument("--resources", default=None, help="tables to load (default all)")
    args = p.parse_args()
    anchor = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(minutes=1)
    with tempfile.TemporaryDirectory(prefix="klaviyo-growth-") as tmp, \
            Sandbox(seed=2, rate_limits="off", anchor=anchor, events=args.events, profiles=args.profiles) as sb:
        options: dict[str, Any] = {"pipelines_dir": tmp, "dataset_name": "klaviyo_data",
                                   "destination": dlt.destinations.duckdb(f"{tmp}/growth.duckdb")}
        folder = Path(tmp) / "growth"
        started = time.perf_counter()
        for run in range(args.runs + 1):
            if run:
                sb.mutate("add_events", count=20)
                sb.mutate("add_events", count=3, offset_seconds=-3600)
                sb.mutate("update_profiles", count=5)
                sb.mutate("add_members", kind="list", count=2)
            context: AbstractContextManager[Any] = (
                nullcontext(dlt.pipeline("growth", **options)) if args.baseline else scheduled_run("growth", **options))
            with context as pipeline:
                source = klaviyo_source(api_key=sb.api_key, base_url=sb.base_url, resources=args.resources,
                                        events_lookback_hours=args.lookback_hours)
                pipeline.run(source, loader_file_format="parquet").raise_on_failed_jobs()
            if run in (0, 1) or run % args.every == 0:
                print(f"after run {run:5d} ({'first load' if not run else 'incremental'}): {sizes(folder)}  "
                      f"[{time.perf_counter() - started:.0f} s]", flush=True)


if __name__ == "__main__":
    main()
