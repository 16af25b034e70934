"""Verification benchmark: the profile id sweep against Klaviyo's rate-limit bound at several latencies, and
what a no-change verification costs on the demo account.

Starts a process-mode sandbox with Klaviyo's real rate limits. For each latency, the profile sweep (the one new
read that grows with the account: a request per 100 profiles, windows on `created` split on demand) runs as
verification runs it, and is compared with the time Klaviyo's limits allow for that many pages (the same bound
as bench_extract.py). Then a demo-sized account is loaded and verified twice with nothing changed in between:
requests per endpoint and wall time of the second verification.

    .venv/bin/python tests/benchmarks/bench_verify.py                      # 50k profiles at 0.1, 0.5, 2 s
    .venv/bin/python tests/benchmarks/bench_verify.py --profiles 200000 --latencies 0.1
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import dlt  # noqa: E402

from klaviyo_source import klaviyo_source, make_context  # noqa: E402
from klaviyo_source.endpoints import BY_TABLE  # noqa: E402
from klaviyo_source.resources import EndpointReader, Partition, Slice  # noqa: E402
from klaviyo_source.sandbox import Sandbox  # noqa: E402
from klaviyo_source.verify import verify  # noqa: E402
from klaviyo_source.windows import Window  # noqa: E402
from tests.benchmarks.bench_extract import rate_bound  # noqa: E402


def sweep_profiles(sb: Sandbox, concurrency: int) -> tuple[int, float, float]:
    """(ids, seconds, epoch start) of one profile sweep as verification reads it."""
    now = datetime.now(timezone.utc)
    ctx = make_context(sb.api_key, sb.base_url, "2026-07-15", 1.0, concurrency, False, until=now, stateless=True)
    endpoint = BY_TABLE["profiles"].sweep_endpoint()
    reader = EndpointReader(endpoint, ctx, lean=True, name="profiles sweep")
    started, clock = time.time(), time.monotonic()
    ids = sum(len(b.rows) for batch in reader.read_slices([Slice(Partition(), Window(None, now))]) for b in batch)
    return ids, time.monotonic() - clock, started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--profiles", type=int, default=50_000)
    parser.add_argument("--latencies", type=float, nargs="+", default=[0.1, 0.5, 2.0])
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    tier = BY_TABLE["profiles"].tier
    anchor = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(minutes=1)
    print(f"profile sweep, {args.profiles:,} profiles, concurrency {args.concurrency}, Klaviyo's limits:")
    print("| latency | ids | requests | wall | bound | wall / bound | 429s |")
    print("|---|---|---|---|---|---|---|")
    with Sandbox(seed=2, mode="process", rate_limits="real", anchor=anchor, events=1000,
                 profiles=args.profiles) as sb:
        for latency in args.latencies:
            sb.configure(latency=latency)
            time.sleep(61 - time.time() % 60)  # a fresh steady window, so runs do not share one
            sb.reset_stats()
            ids, wall, started = sweep_profiles(sb, args.concurrency)
            stats = sb.stats()
            pages = sum(r["count"] for r in stats["requests"] if r["path"] == "/api/profiles" and r["status"] == 200)
            bound = rate_bound(pages, tier, started, latency)
            print(f"| {latency:.1f} s | {ids:,} | {pages:,} | {wall:.1f} s | {bound:.1f} s | {wall / bound:.2f} "
                  f"| {stats['throttled']} |")

    print("\nno-change verification on the demo account (50,000 events, 5,000 profiles), Klaviyo's limits:")
    with Sandbox(seed=1, mode="process", rate_limits="real", anchor=anchor, events=50_000, profiles=5_000) as sb, \
            tempfile.TemporaryDirectory() as folder:
        pipeline = dlt.pipeline("bench_verify", destination=dlt.destinations.duckdb(f"{folder}/v.duckdb"),
                                dataset_name="klaviyo", pipelines_dir=f"{folder}/p")
        pipeline.run(klaviyo_source(api_key=sb.api_key, base_url=sb.base_url), loader_file_format="parquet")
        verify(pipeline, api_key=sb.api_key, base_url=sb.base_url)
        pipeline.run(klaviyo_source(api_key=sb.api_key, base_url=sb.base_url), loader_file_format="parquet")
        sb.reset_stats()
        clock = time.monotonic()
        report = verify(pipeline, api_key=sb.api_key, base_url=sb.base_url)
        wall = time.monotonic() - clock
        by_path = Counter({r["path"]: r["count"] for r in sb.stats()["requests"]})
        print(f"{report.summary()}\nwall {wall:.1f} s; requests by endpoint: "
              + ", ".join(f"{p} {n}" for p, n in by_path.most_common()))


if __name__ == "__main__":
    main()
