"""Replays a first load's window plan against known cursor values in simulated time: what `windows.plan` and
`Plan.steal` cost in requests and seconds, without a sandbox or a network.

A benchmark run answers "how many requests, how long" in a minute and within about 10%; the replay answers it in
a second, the same every time up to the order of a set, so planning ideas can be compared before they are
measured. It models what sets the pace of a table that Klaviyo's rate holds back (profiles, members): requests
go out at `rate` a second, at most `limit` at once, each answered `latency` seconds later. Every span is read by
a chain as `EndpointReader._span_task` reads it: a page's last cursor goes to `Plan.reach`, rows at or past the
span's end are dropped (another chain reads them), the rest go to `Plan.read`, and the chain asks for its next
page once its answer is in. An idle slot takes work from `Plan.steal`. Our CPU is not modelled: a table it
holds back (events at 1 s per answer) is measured with bench_extract.py.

    .venv/bin/python tests/benchmarks/plan_replay.py --table profiles             # 30k profiles at 1 s
    .venv/bin/python tests/benchmarks/plan_replay.py --table profiles --oracle    # splits knowing the data

`--oracle` gives every span its true density before each steal: what splitting on idle would cost if the
connector knew where the rows are. The cursors come from the sandbox (seed 1, the sizes of bench_extract.py),
read by a pipeline run without latency.
"""

from __future__ import annotations

import argparse
import bisect
import heapq
import sys
import tempfile
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from klaviyo_source import windows
from klaviyo_source.windows import Plan, Span, Window


@dataclass
class Replay:
    requests: int = 0
    splits: int = 0
    seconds: float = 0.0  # from the first request to the last answer
    partial: int = 0  # pages with fewer rows than a page holds
    dropped: int = 0  # rows answered past a span's end, or before its start (profiles' greater-than)
    delivered: Counter[int] = field(default_factory=Counter)  # row index -> times handed on


@dataclass
class _Chain:
    span: Span
    first: int  # index of the first row the span's filter answers
    end: int  # index past its last
    page: int = 0  # pages asked for so far


def _instant(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, timezone.utc)


class _Replayer:
    def __init__(self, values: Sequence[float], page: int, strict_lower: bool, oracle: bool) -> None:
        self.values = values
        self.page = page
        self.strict_lower = strict_lower
        self.oracle = oracle
        self.plan = Plan(page)
        self.result = Replay()

    def chain(self, span: Span) -> _Chain:
        """The rows the span's filter answers: from lo (one second earlier with greater-than) to hi."""
        if span.lo is None:
            first = 0
        elif self.strict_lower:
            first = bisect.bisect_right(self.values, span.lo.timestamp() - 1)
        else:
            first = bisect.bisect_left(self.values, span.lo.timestamp())
        return _Chain(span, first, bisect.bisect_left(self.values, span.hi.timestamp()))

    def steal(self, last_round: float | None) -> Span | None:
        if self.oracle:
            with self.plan._lock:
                for span in self.plan._open:
                    start = windows._frontier(span)
                    if start is None:
                        continue
                    ahead = bisect.bisect_left(self.values, span.hi.timestamp()) - bisect.bisect_right(
                        self.values, start.timestamp())
                    span.density = max(ahead, 0) / max((span.hi - start).total_seconds(), 1e-9) or 1e-9
                    span.pieces = max(span.pieces, 1)
        return self.plan.steal(last_round)

    def arrive(self, chain: _Chain) -> tuple[_Chain, int, int, datetime | None]:
        """The chain's next page arrives: its rows [a, b), and where the span ends as it is decoded (the
        page's last cursor is reported first, as the decoder does, so splits meanwhile stay above it)."""
        a = chain.first + self.page * chain.page
        b = min(a + self.page, chain.end)
        chain.page += 1
        self.result.partial += b - a < self.page
        hi = self.plan.reach(chain.span, _instant(self.values[b - 1])) if b > a else None
        return chain, a, b, hi

    def deliver(self, chain: _Chain, a: int, b: int, hi: datetime | None) -> bool:
        """The page's rows within the span go on; whether the chain asks for another page."""
        span, values = chain.span, self.values
        if hi is None:
            self.plan.close(span)
            return False
        more = b < chain.end and values[b - 1] < hi.timestamp()
        lo = span.lo.timestamp() if span.lo is not None else float("-inf")
        kept = [i for i in range(a, b) if lo <= values[i] < hi.timestamp()]
        self.result.dropped += (b - a) - len(kept)
        self.result.delivered.update(kept)
        if kept:
            self.plan.read(span, _instant(values[kept[0]]), _instant(values[kept[-1]]), len(kept),
                           b - a if more else None)
        if not more:
            self.plan.close(span)
        return more


def replay(
    values: Sequence[float], now: float, page: int, *, strict_lower: bool, latency: float, rate: float,
    limit: int, parts: int, oracle: bool = False,
) -> Replay:
    """A first load of rows whose cursors are `values` (sorted, epoch seconds, all before `now`), planned in
    `parts` windows as `EndpointReader._read` plans it; `limit` requests in flight once answers come back."""
    r = _Replayer(values, page, strict_lower, oracle)
    waiting: deque[_Chain] = deque(r.chain(s) for s in r.plan.add(windows.plan(Window(None, _instant(now)), parts)))
    answers: list[tuple[float, int, _Chain]] = []
    sent = busy = 0
    clock = next_send = 0.0
    answered = False

    def fill() -> None:
        """Idle slots take work from the open spans."""
        while busy + len(waiting) < limit and (span := r.steal(latency * rate)) is not None:
            waiting.append(r.chain(span))

    while waiting or answers:
        cap = limit if answered else parts
        if waiting and busy < cap and (not answers or max(clock, next_send) <= answers[0][0]):
            clock = max(clock, next_send)
            next_send = clock + 1 / rate
            busy += 1
            sent += 1
            heapq.heappush(answers, (clock + latency, sent, waiting.popleft()))
            continue
        clock, _, chain = heapq.heappop(answers)
        busy -= 1
        answered = True
        r.result.seconds = clock
        arrived = r.arrive(chain)
        fill()  # idle chains may split the page's span while it is converted
        if r.deliver(*arrived):
            waiting.append(chain)
        fill()
    r.result.requests = sent
    r.result.splits = r.plan.splits
    return r.result


def sandbox_cursors(table: str) -> tuple[list[float], float]:
    """The sorted cursors of `table` in the benchmark's sandbox, and the time its first load would start."""
    import time

    import dlt

    from klaviyo_source import klaviyo_source
    from klaviyo_source.sandbox import Sandbox
    from tests.benchmarks.bench_extract import SWEEP, TINY

    column = {"events": "datetime", "profiles": "updated"}[table]
    sizes: dict[str, Any] = {**TINY, **SWEEP[table].sizes}
    with Sandbox(seed=1, mode="process", rate_limits="off", latency=0.0, **sizes) as sb, \
            tempfile.TemporaryDirectory() as work:
        pipeline = dlt.pipeline(pipeline_name="replay", destination=dlt.destinations.duckdb(f"{work}/r.duckdb"),
                                dataset_name="klaviyo", pipelines_dir=f"{work}/p")
        now = time.time()
        pipeline.run(klaviyo_source(api_key=sb.api_key, base_url=sb.base_url, resources=[table]),
                      loader_file_format="parquet")
        with pipeline.sql_client() as client:
            rows = client.execute_sql(f"select {column} from {table} order by {column}") or []
    return [row[0].timestamp() for row in rows], now


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--table", choices=["profiles", "events"], default="profiles")
    p.add_argument("--latency", type=float, default=1.07, help="seconds to each answer (the sandbox's at 1 s)")
    p.add_argument("--rate", type=float, default=70.0, help="requests a second (the governor's pace for 75/s)")
    p.add_argument("--limit", type=int, default=82, help="requests in flight once answers come back")
    p.add_argument("--parts", type=int, default=76, help="windows planned up front")
    p.add_argument("--oracle", action="store_true", help="steal knowing every span's rows ahead")
    args = p.parse_args()
    values, now = sandbox_cursors(args.table)
    page = {"events": 1000, "profiles": 100}[args.table]
    result = replay(values, now, page, strict_lower=args.table == "profiles", latency=args.latency, rate=args.rate,
                    limit=args.limit, parts=args.parts, oracle=args.oracle)
    fewest = -(-len(values) // page)
    print(f"{args.table}: {len(values):,} rows, {result.requests} requests (fewest {fewest}), {result.splits} splits, "
          f"{result.partial} partly filled pages, {result.dropped:,} rows dropped; last answer at "
          f"{result.seconds:.2f} s (fewest requests: {fewest / args.rate + args.latency:.2f} s)")


if __name__ == "__main__":
    main()
