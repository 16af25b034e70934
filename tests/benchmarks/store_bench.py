"""Cost of the sandbox's data store alone (no HTTP): build time, RSS, and CPU per rendered page.

    .venv/bin/python tests/benchmarks/store_bench.py [--events 1000000] [--profiles 200000] [--pages 50]

Measures: Store() construction; process RSS after it; pages of 1000 events sorted by datetime inside a
datetime window from the middle of the data (cursor-chained); the same for one metric; 100-profile
pages sorted by updated; 100-member pages of a list; and ground_truth().
"""

from __future__ import annotations

import argparse
import gc
import resource
import time
from datetime import datetime, timezone
from pathlib import Path

from klaviyo_source.sandbox.model import Cond, Query
from klaviyo_source.sandbox.store import Sizes, Store

PAGE_BYTES = 4096


def rss_mb() -> float:
    return int(Path("/proc/self/statm").read_text().split()[1]) * PAGE_BYTES / 2**20


def chain(store: Store, q: Query, pages: int) -> tuple[int, float]:
    """Follow cursors for `pages` pages; (records, CPU ms per page)."""
    records, spent, done = 0, 0.0, 0
    cursor = None
    for _ in range(pages):
        start = time.process_time()
        page = store.query(Query(q.endpoint, q.path_id, q.conds, q.sort, q.page_size, cursor))
        spent += time.process_time() - start
        records += len(page.data)
        done += 1
        cursor = page.next_cursor
        del page  # freeing the parsed records must not land in the next page's timing
        if cursor is None:
            break
    return records, 1000 * spent / max(done, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--profiles", type=int, default=200_000)
    parser.add_argument("--pages", type=int, default=50)
    parser.add_argument("--freeze", action="store_true",
                        help="gc.freeze() after the build, as a long-running sandbox process should")
    args = parser.parse_args()
    sizes = Sizes(events=args.events, profiles=args.profiles, members_per_list=args.profiles // 4,
                  members_per_segment=args.profiles // 8)
    anchor = datetime(2025, 6, 1, tzinfo=timezone.utc)

    start = time.perf_counter()
    store = Store(seed=1, sizes=sizes, anchor=anchor)
    print(f"build: {time.perf_counter() - start:.2f} s wall, RSS {rss_mb():.0f} MB")
    if args.freeze:
        gc.freeze()  # the store's objects live as long as the process: keep them out of every collection

    middle = datetime.fromtimestamp(store.world.events.ts[args.events // 2], timezone.utc)
    window = (Cond("greater-or-equal", "datetime", middle), Cond("less-than", "datetime", anchor))
    metric = store.ground_truth()["metrics"][0]
    profiles_since = datetime(2024, 6, 1, tzinfo=timezone.utc)
    list_id = store.rows("lists").ident(0)
    cases = [
        ("events, 1000/page, datetime window from the middle",
         Query("/events", conds=window, sort=("datetime", False), page_size=1000)),
        ("events of one metric, 1000/page, same window",
         Query("/events", conds=(*window, Cond("equals", "metric_id", metric)), sort=("datetime", False),
               page_size=1000)),
        ("profiles updated since 2024-06-01, 100/page", Query(
            "/profiles", conds=(Cond("greater-than", "updated", profiles_since),), sort=("updated", False),
            page_size=100)),
        ("list members, 100/page", Query("/lists/{id}/profiles", list_id, sort=("joined_group_at", False),
                                         page_size=100)),
    ]
    for label, q in cases:
        first = time.process_time()
        store.query(q)  # builds a lazy index if this is its first use
        warm = time.process_time() - first
        records, per_page = chain(store, q, args.pages)
        print(f"{label}: first page {1000 * warm:.1f} ms CPU, then {per_page:.2f} ms CPU/page "
              f"({records} records)")

    start = time.perf_counter()
    truth = store.ground_truth()
    print(f"ground_truth: {time.perf_counter() - start:.2f} s ({len(truth['events'])} events)")
    print(f"RSS now {rss_mb():.0f} MB, peak {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    main()
