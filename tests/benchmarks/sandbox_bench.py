"""Throughput of the sandbox itself, so connector benchmarks know the simulator is not their bottleneck.

Starts a process-mode sandbox (default 1M events, 200k profiles; no latency, limits off), then pages
through events (page size 1000) and profiles (100) for N seconds each over one keep-alive session, and
prints pages/s, server CPU per page (from /proc/<pid>/stat), build time and server RSS.

    .venv/bin/python tests/benchmarks/sandbox_bench.py [--seconds 10] [--events 1000000] [--profiles 200000]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import requests

from klaviyo_source.sandbox import Sandbox

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = 4096


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (fields 14 and 15 of /proc/<pid>/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def rss_mb(pid: int) -> float:
    pages = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
    return pages * PAGE_SIZE / 2**20


def page_through(sb: Sandbox, path: str, page_size: int, seconds: float) -> tuple[int, int, float, float]:
    """Follow links.next (restarting at the end) for `seconds`: pages, records, wall time, server CPU."""
    session = requests.Session()
    session.headers.update({"Authorization": f"Klaviyo-API-Key {sb.api_key}", "revision": "2026-07-15"})
    first = f"{sb.base_url}{path}?page[size]={page_size}"
    url: str | None = first
    pages = records = 0
    cpu_before, start = cpu_seconds(sb.pid), time.perf_counter()
    while time.perf_counter() - start < seconds:
        response = session.get(url or first)
        response.raise_for_status()
        doc = response.json()
        pages += 1
        records += len(doc["data"])
        url = doc["links"]["next"]
    return pages, records, time.perf_counter() - start, cpu_seconds(sb.pid) - cpu_before


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--events", type=int, default=1_000_000)
    p.add_argument("--profiles", type=int, default=200_000)
    args = p.parse_args()
    started = time.perf_counter()
    with Sandbox(seed=1, mode="process", rate_limits="off", events=args.events, profiles=args.profiles) as sb:
        build = time.perf_counter() - started
        print(f"build+start: {build:.1f} s for {args.events:,} events, {args.profiles:,} profiles")
        print(f"server RSS after build: {rss_mb(sb.pid):.0f} MB")
        for path, size in (("/events", 1000), ("/profiles", 100)):
            pages, records, wall, cpu = page_through(sb, path, size, args.seconds)
            print(
                f"{path:<10} page[size]={size:<5} {pages / wall:8.1f} pages/s  "
                f"{records / wall:10,.0f} records/s  server CPU {1000 * cpu / pages:6.2f} ms/page"
            )
        print(f"server RSS at end: {rss_mb(sb.pid):.0f} MB")


if __name__ == "__main__":
    main()
