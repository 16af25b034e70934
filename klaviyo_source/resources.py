"""The generic machinery: turns rows of the endpoint table into dlt resources.

Per endpoint: which queries to send (partitions, parents, windows), how pages become rows, and where
the cursor lives. Cursors are ours rather than `dlt.sources.incremental`'s because Klaviyo needs what it
cannot express: one cursor per partition inside a resource (per list, per campaign channel), and a cursor
that records the instant a run has read *through* (its start), not the largest value it saw, so a
future-dated event can never push it ahead and an empty run still moves on. They live in dlt's resource
state, which is committed with the data: a failed run leaves them where they were.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Generator, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import dlt
import pyarrow as pa
import pyarrow.compute as pc
from dlt.common.destination import TLoaderFileFormat
from dlt.extract.resource import DltResource

from klaviyo_source import set_aside
from klaviyo_source.client import DECODERS, KlaviyoClient, Page
from klaviyo_source.coerce import ARROW_TYPES
from klaviyo_source.concurrency import Budget, Slots, Task, TaskPool
from klaviyo_source.endpoints import BY_TABLE, ENDPOINTS, PREDICTIVE_TIER, Endpoint, Mode, Report
from klaviyo_source.errors import InvalidRecordError, KlaviyoAPIError, MissingScopeError, RunCancelled
from klaviyo_source.first_load import mark_appended, table_is_empty
from klaviyo_source.rate_limit import Governor, GovernorRegistry
from klaviyo_source.reports import COUNTS, AccountFacts, ReportReader, ReportSettings
from klaviyo_source.rows import SHAPES, ArrowShape
from klaviyo_source.validate import CheckedPage, Cut, PageCheck
from klaviyo_source.windows import Plan, Span, Window, parse_instant, plan

log = logging.getLogger("klaviyo_source")

PROGRESS_EVERY = 10.0  # seconds between progress lines of a long resource
# Where bursts begin (Endpoint.bursts): the newest announcements, at most BURST_STARTS of them. Each cuts a window
# for the next idle chain, and costs a request more where it turns out no burst (a campaign sent to a few).
BURST_STARTS = 24
MAX_CHAINS = 256  # threads of one read; how many of them send requests at once is the slots' decision
# An answer in hand costs about twice its JSON: the body, then its parsed form or Arrow table.
HELD_PER_BYTE = 2.0
RECORD_BYTES = 1000  # guessed size of a record until the first answers tell
JOINED_ROWS = 50_000  # rows of pages handed to dlt as one table (see Joiner)
JOINED_SECONDS = 2.0


@dataclass
class RunContext:
    """What every resource of one source run shares."""

    client: KlaviyoClient
    governors: GovernorRegistry
    start: datetime | None  # lower bound of a first run (or of a fixed interval)
    until: datetime  # upper bound of every window this run: end_date, or the run's start
    stateless: bool  # an explicit end_date: read [start, end) and leave the cursors alone
    concurrency: int | None  # the user's cap on requests in flight per endpoint; None: as the pace asks
    budget: Budget  # memory for answers in hand, shared by every endpoint of the run
    overlaps: dict[str, timedelta]
    predictive_analytics: bool
    skip_forbidden: bool
    members_full_refresh: bool
    revision: str  # the revision header sent; parameters an endpoint lacks at it are left out
    reports: ReportSettings
    account: AccountFacts  # the account timezone and conversion metric, looked up once for every report table
    strict: bool = False  # a record that does not fit fails the run instead of being set aside
    without: frozenset[str] = frozenset()  # included tables not to request (event_attributions=False)

    def overlap(self, endpoint: Endpoint) -> timedelta:
        return self.overlaps.get(endpoint.table, endpoint.overlap)


@dataclass(frozen=True)
class Partition:
    """One independent query of an endpoint: where its cursor is saved, its fixed filter, the parent whose
    id fills the path, and constant columns its rows carry (the parent's id, a campaign's channel)."""

    key: str = ""
    filter: str | None = None
    parent_id: str | None = None
    columns: dict[str, str] | None = None
    since: datetime | None = None  # where its data is expected to begin (Endpoint.parent_since)


@dataclass(frozen=True)
class Slice:
    """A partition read within a window (None: the whole collection; checks: the period a count covers).

    planned: a large read of unknown shape, split up front into as many windows as requests are worth having
    in flight (otherwise one window, split only where it proves large).
    """

    part: Partition
    window: Window | None = None
    planned: bool = False


@dataclass(frozen=True)
class Batch:
    """A page's rows of one table, as a lean reader (sweeps and checks, not loaded as read) yields them.

    incomplete: records of the page did not fit (no readable id): a sweep that saw them is not complete.
    """

    table: str
    rows: pa.Table
    incomplete: bool = False


@dataclass
class RunStats:
    """What one run of a resource did, for the run summary: requests, 429s, time and the re-read ranges.

    Re-read ranges say which rows of the destination this run reads again (`summary.py` counts them there
    before the load): a cursor range per partition, `{"all": True}` for tables replaced on every run, or
    the rows below the parents read (`{"column": ..., "in": [...]}`)."""

    load_id: str
    requests: int  # the client's counts when the run started
    throttled: int
    started: float = field(default_factory=time.monotonic)
    reread: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add_reread(self, table: str, spec: dict[str, Any]) -> None:
        with self._lock:
            specs = self.reread.setdefault(table, [])
            if spec not in specs:
                specs.append(spec)

    def add_below(self, table: str, column: str, ids: Iterable[str]) -> None:
        """Rows of `table` whose `column` is one of `ids` are read again (children of the parents read)."""
        with self._lock:
            specs = self.reread.setdefault(table, [])
            spec = next((s for s in specs if s.get("column") == column and "in" in s), None)
            if spec is None:
                spec = {"column": column, "in": []}
                specs.append(spec)
            spec["in"] = sorted(set(spec["in"]) | set(ids))


class Progress:
    """Rows and pages per table, logged every few seconds on long runs."""

    def __init__(self, table: str, governor: Governor, slots: Slots) -> None:
        self.table = table
        self.governor = governor  # its waits tell whether Klaviyo's rate limit or our side sets the pace
        self.slots = slots
        self.rows = self.pages = 0
        self._lock = threading.Lock()
        self._started = self._last = time.monotonic()

    def add(self, rows: int) -> None:
        with self._lock:
            self.rows += rows
            self.pages += 1
            now = time.monotonic()
            if now - self._last >= PROGRESS_EVERY:
                self._last = now
                rate = self.rows / max(now - self._started, 1e-9)
                log.info("%s: %s rows in %s pages so far (%.0f rows/s; %d requests in flight of %d wanted; "
                         "threads waited %.0f s on the rate limit)", self.table, f"{self.rows:,}",
                         f"{self.pages:,}", rate, self.slots.busy, self.slots.limit(), self.governor.waited)


def sparse_shape(endpoint: Endpoint) -> ArrowShape:
    """The columns a sparse fieldset leaves (`fields[template]=id`): the key, the fields asked for, the cursor
    and the parent's id; only the key and the cursor must be there."""
    shape = SHAPES[endpoint.table]
    asked = {name for key, value in endpoint.params.items() if key.startswith("fields[") for name in value.split(",")}
    keep = {shape.key, endpoint.cursor, endpoint.parent_key} | asked
    return ArrowShape(endpoint.table, [c for c in shape.columns if c.name in keep],
                      (endpoint.cursor,) if endpoint.cursor else ())


class EndpointReader:
    """Reads one endpoint: builds the queries, runs the chains, converts pages, keeps the cursors.

    lean: pages become `Batch`es instead of dlt items, for reads that are compared before anything loads
    (sweeps and checks); a sparse fieldset is converted with the columns it leaves.
    zone: the IANA timezone whose days AGGREGATE checks count.
    """

    def __init__(self, endpoint: Endpoint, ctx: RunContext, lean: bool = False, zone: str = "UTC",
                 name: str | None = None) -> None:
        self.ep = endpoint
        self.ctx = ctx
        self.lean = lean
        self.zone = zone
        params = dict(endpoint.params)
        tier = endpoint.tier
        key = endpoint.path
        if ctx.predictive_analytics and endpoint.table == "profiles":
            params["additional-fields[profile]"] += ",predictive_analytics"
            tier, key = PREDICTIVE_TIER, f"{endpoint.path}#predictive_analytics"
        if endpoint.page_size:
            params["page[size]"] = str(endpoint.page_size)
        # Included tables this run loads (event attributions can be left out: ctx.without).
        self.included = {rtype: t for rtype, t in endpoint.included.items() if t not in ctx.without}
        if not self.included:
            params.pop("include", None)
        self.params = {name: value for name, value in params.items() if endpoint.sends(name, ctx.revision)}
        self.governor: Governor = ctx.governors.get(key, tier)
        self.slots = Slots(self._inflight, self._page_bytes, ctx.budget, ctx.concurrency, self._in_hand,
                           self._patience)
        self.progress = Progress(name or endpoint.table, self.governor, self.slots)
        # Collections become checked tables; report answers are checked by reports.py, and a check's answer
        # is one object, not a page of records.
        self.check: PageCheck | None = None
        if endpoint.report is None and endpoint.mode not in (Mode.COUNT, Mode.AGGREGATE):
            sparse = any(k.startswith("fields[") for k in endpoint.params)
            self.check = PageCheck(endpoint, self.included, sparse_shape(endpoint) if sparse else None)
        self.batches = IncludedBatches()  # related records until written; emptied at the end of every read
        self.windowed = endpoint.mode is Mode.WINDOW and not (endpoint.membership and ctx.members_full_refresh)
        self._run: RunStats | None = None

    def _inflight(self) -> int:
        return self.governor.inflight(self.ctx.governors.latency())

    def _in_hand(self) -> int:
        return self.governor.in_hand

    def _patience(self) -> int:
        return self.governor.patience(DECODERS)

    def _page_bytes(self) -> float:
        size = self.governor.page_bytes or (self.ep.page_size or 100) * RECORD_BYTES
        return HELD_PER_BYTE * size

    # --- what to read -------------------------------------------------------------------------------

    def read(self, parent_ids: Iterable[str] = (), since: Mapping[str, datetime] | None = None) -> Iterator[Any]:
        """Every item of this endpoint for this run (for children: below the given parents; `since`: a
        parent's `Endpoint.parent_since`, by id).

        A failure that ends this table cancels the whole run (the client's cancel signal), so the other
        tables stop at once instead of finishing their retries after the run is already lost. (A report
        table's daily cap is no failure: reports.py defers what it could not read.)
        """
        stats = self._stats()
        yield from self._guarded(self._reports(stats) if self.ep.mode is Mode.REPORT
                                 else self._collection(parent_ids, since or {}, stats))
        # Not on failure (the run reports no summary then) nor when dlt closes the generator early.
        self._report(stats)

    def _guarded(self, reading: Iterator[Any]) -> Generator[Any, None, bool]:
        """`reading`'s items; returns False if the table was skipped (no scope, skip_forbidden), and cancels
        the run on any other failure."""
        cancel = self.ctx.client.cancel
        try:
            yield from reading
        except RunCancelled:
            raise
        except Exception as exc:
            if isinstance(exc, KlaviyoAPIError) and exc.status == 403:
                # Report tables also read /accounts and /metrics: name the scopes of the endpoint that refused.
                path = exc.endpoint.split("#")[0]  # a label: the path and why it was read (#reports)
                scopes = next((e.scopes for e in ENDPOINTS if e.path == path), self.ep.scopes)
                error = MissingScopeError(path, 403, exc.detail, exc.code, self.ep.table, scopes)
                if self.ctx.skip_forbidden:
                    log.warning("%s skipped: %s", self.ep.table, error)
                    return False
                cancel.set(error)
                raise error from None
            cancel.set(exc)
            raise
        return True

    def _reports(self, stats: RunStats) -> Iterator[Any]:
        """A reporting endpoint: timeframes planned within the day's budget (reports.py), rows per timeframe."""
        reader = ReportReader(self.ep, self.ctx.client, self.governor, self.ctx.account, self.ctx.reports)
        state = dlt.current.resource_state()
        hints = _row_format_hints()
        empty = True
        for rows in reader.rows(state, self.ctx.start, self.ctx.until, self.ctx.stateless):
            self.progress.add(len(rows))
            yield dlt.mark.with_hints(rows, hints) if empty and hints is not None else rows
            empty = False
        if empty:
            # Timeframes without a row (a demo's month without campaign sends), none read today (the budget) or
            # none to read (no conversion metric) still make the table with its declared columns: an analyst's
            # query of it answers no rows instead of failing.
            made = dlt.mark.materialize_table_schema()
            yield dlt.mark.with_hints(made, hints) if hints is not None else made
        # The rows of every timeframe read are replaced: those already there count as read again.
        report = self.ep.report
        assert report is not None
        column = "day" if report.interval else "timeframe_start"
        metric = {"conversion_metric_id": self.ctx.account.conversion_metric_id()} if report.conversion else {}
        for frame in reader.frames_read:
            stats.add_reread(self.ep.table, {"column": column, "from": frame.start.isoformat(),
                                             "to": frame.end.isoformat(), "where": metric})

    def _collection(self, parent_ids: Iterable[str], since: Mapping[str, datetime], stats: RunStats) -> Iterator[Any]:
        partitions = self.partitions(parent_ids, since)
        if not partitions:
            return
        state = dlt.current.resource_state()
        cursors: dict[str, str] = state.setdefault("cursors", {})
        slices = []
        for part in partitions:
            if self.windowed:
                saved = cursors.get(part.key)
                window = self._window(saved)
                if window is None:
                    continue
                self._note_reread(stats, window, saved, part)
                # A first load (or a fixed interval) is large and of unknown shape: planned up front. Later
                # runs read what changed since the last one, usually a page or two.
                slices.append(Slice(part, window, planned=saved is None or self.ctx.stateless))
            else:
                slices.append(Slice(part))
        if not self.windowed:
            if self.ep.write_disposition == "replace" or not self.ep.parent_key:
                stats.add_reread(self.ep.table, {"all": True})  # replaced on every run: read again whole
            else:
                stats.add_below(self.ep.table, self.ep.parent_key, [p.parent_id for p in partitions if p.parent_id])
        hints = self._append_hints(cursors, partitions)
        # a parent's pages go on at once: its children's reads start from them
        pages = Joiner(1 if any(e.parent == self.ep.table for e in ENDPOINTS) else JOINED_ROWS)
        for batch in self._read(slices):
            for item in pages.add(batch):
                if hints is not None and isinstance(item, pa.Table):  # the table's first page, before
                    item, hints = dlt.mark.with_hints(item, hints), None  # dlt writes any of it
                yield item
        for item in pages.flush():
            yield dlt.mark.with_hints(item, hints) if hints is not None else item
        if self.windowed and not self.ctx.stateless:
            for part in partitions:
                cursors[part.key] = self.ctx.until.isoformat()
            if slices:
                # what this run read, for verification: from the earliest window's start (None: all history)
                starts = [piece.window.lo for piece in slices if piece.window is not None]
                lo = None if None in starts else min(t for t in starts if t is not None)
                state["touched"] = [lo.isoformat() if lo else None, self.ctx.until.isoformat()]

    def read_slices(self, slices: Sequence[Slice]) -> Generator[list[Any], None, bool]:
        """Every item of the given slices, in lists of what is ready at the moment (TaskPool.batches); returns
        False if the table was skipped (no scope, skip_forbidden). Verification reads and repairs here.

        A failure that ends this table cancels the whole run (the client's cancel signal), so the other
        tables stop at once instead of finishing their retries after the run is already lost.
        """
        return (yield from self._guarded(self._read(slices)))

    def _read(self, slices: Sequence[Slice]) -> Iterator[list[Any]]:
        """The tasks of the slices run on a pool of chains; the related records gathered meanwhile last."""
        tasks: list[Task[Any]] = []
        spans = Plan(self.ep.page_size or 100)
        share = max(1, self.slots.limit() // max(1, len(slices)))
        for piece in slices:
            if self.ep.mode is Mode.AGGREGATE:
                assert piece.window is not None and piece.window.lo is not None
                tasks.append(self._aggregate_task(piece.part, piece.window.lo, piece.window.hi))
            elif self.ep.mode is Mode.COUNT:
                tasks.append(self._count_task(piece.part))
            elif piece.window is not None and self.ep.cursor:
                parts = share if piece.planned else 1
                for span in spans.add(plan(piece.window, parts, since=piece.part.since), piece.part):
                    tasks.append(self._span_task(spans, span))
            else:
                tasks.append(self._chain_task(piece.part))
        if not tasks:
            return
        planned = [piece.window for piece in slices if piece.planned and piece.window is not None]
        if self.ep.bursts is not None and planned and not self.lean:
            lows = [w.lo for w in planned]
            window = Window(None if None in lows else min(w for w in lows if w is not None), max(w.hi for w in planned))
            threading.Thread(target=self._hint_bursts, args=(spans, window), daemon=True,
                             name=f"klaviyo-{self.ep.table}-bursts").start()

        # A lean read (verification) runs beside its slow check tiers, which set its pace: a last-round split
        # (windows.END_PAGES) would save it no time and cost a request of the counted handful.
        last_round = (lambda: None) if self.lean else self.governor.last_round_pages

        def steal() -> Task[Any] | None:
            span = spans.steal(last_round())
            return self._span_task(spans, span) if span is not None else None

        pool: TaskPool[Any] = TaskPool(MAX_CHAINS, self.slots, steal if self.ep.cursor else None,
                                       cancel=self.ctx.client.cancel)
        yield from pool.batches(tasks)
        drained = [dlt.mark.with_table_name(rows, table) for table, rows in self.batches.drain()]
        if drained:
            yield drained
        if spans.splits:
            log.debug("%s: %d windows split off to idle chains", self.ep.table, spans.splits)

    def _hint_bursts(self, spans: Plan, window: Window) -> None:
        """On a thread of its own, beside a first load's first round: where the endpoint's bursts begin in
        `window` (the newest BURST_STARTS campaign sends, email first), as hints to `spans`.

        Hints only order the work. A failure here (a key without campaigns:read) costs speed, never a row: it
        is told in one line and the read goes on without them.
        """
        bursts = self.ep.bursts
        assert bursts is not None
        source = BY_TABLE[bursts.table]
        governor = self.ctx.governors.get(source.path, source.tier)
        label = f"{source.path} (where {self.ep.table} burst)"
        left = BURST_STARTS
        try:
            for value in source.partitions or ("",):
                filters = [source.partition_filter.format(value)] if source.partition_filter else []
                params = {"filter": ",".join([*filters, *window.filter(bursts.cursor, False)]),
                          "sort": f"-{bursts.cursor}"}
                page = next(self.ctx.client.pages(source.path, params, governor, label))  # the newest
                assert page.document is not None
                starts = [parse_instant(at) for record in page.document["data"]
                          if isinstance(at := (record.get("attributes") or {}).get(bursts.at), str)][:left]
                spans.hint(starts)
                left -= len(starts)
                if left <= 0:
                    return
        except (KlaviyoAPIError, ValueError) as exc:  # ValueError: an instant that does not read as one
            log.info("%s: %s not read, first loads go on without where bursts begin (%s)", self.ep.table,
                     source.path, exc)
        except RunCancelled:
            return

    def _append_hints(self, cursors: dict[str, str], partitions: list[Partition]) -> Any:
        """Hints that make this read append, when it is the first load of an immutable table into an empty one."""
        first = not self.ctx.stateless and not any(part.key in cursors for part in partitions)
        if self.ep.immutable and self.windowed and first and table_is_empty(self.ep.table):
            return mark_appended(self.ep.table)
        return None

    def partitions(
        self, parent_ids: Iterable[str] = (), since: Mapping[str, datetime] | None = None
    ) -> list[Partition]:
        """The independent queries of a read (for children: below the given parents; `since`: by parent id,
        where its data is expected to begin)."""
        ep = self.ep
        if ep.parent:
            return [
                Partition(pid, ep.parent_filter.format(pid) if ep.parent_filter else None, pid,
                          {ep.parent_key: pid} if ep.parent_key else None, (since or {}).get(pid))
                for pid in list(parent_ids)
            ]
        if ep.partitions:
            assert ep.partition_filter is not None
            return [
                Partition(value, ep.partition_filter.format(value),
                          columns={ep.partition_column: value} if ep.partition_column else None)
                for value in ep.partitions
            ]
        return [Partition("")]

    def _window(self, saved: str | None) -> Window | None:
        lo = self.ctx.start
        if saved is not None and not self.ctx.stateless:
            lo = parse_instant(saved) - self.ctx.overlap(self.ep)
        if lo is not None and lo >= self.ctx.until:
            return None
        return Window(lo, self.ctx.until)

    # --- run statistics -----------------------------------------------------------------------------

    def _stats(self) -> RunStats:
        """This run's statistics (a source object can run more than once: a new load id starts anew)."""
        load_id = dlt.current.load_package_state()["load_id"]
        if self._run is None or self._run.load_id != load_id:
            label = self.ep.path
            self._run = RunStats(load_id, self.ctx.client.requests[label], self.ctx.client.throttled[label])
        return self._run

    def _note_reread(self, stats: RunStats, window: Window, saved: str | None, part: Partition) -> None:
        """The part of a window this run reads again: behind the saved cursor, or all of a fixed interval."""
        if self.ep.membership and self.ctx.members_full_refresh:
            stats.add_reread(self.ep.table, {"all": True})
            return
        hi = window.hi if self.ctx.stateless else (parse_instant(saved) if saved else None)
        if hi is None:
            return
        assert self.ep.cursor is not None
        stats.add_reread(self.ep.table, {
            "column": self.ep.cursor,
            "from": window.lo.isoformat() if window.lo else None,
            "to": hi.isoformat(),
            "where": part.columns or {},
        })

    def _report(self, stats: RunStats) -> None:
        """The run's statistics as dlt custom metrics of this resource (in the run's trace and extract info)."""
        label = self.ep.path
        metrics = dlt.current.resource_metrics()
        metrics["requests"] = self.ctx.client.requests[label] - stats.requests
        metrics["throttled"] = self.ctx.client.throttled[label] - stats.throttled
        metrics["seconds"] = round(time.monotonic() - stats.started, 3)
        metrics["reread"] = stats.reread

    # --- chains -------------------------------------------------------------------------------------

    def _path_and_label(self, parent_id: str | None) -> tuple[str, str]:
        if parent_id is not None and "{id}" in self.ep.path:
            return self.ep.path.replace("{id}", parent_id), self.ep.path
        return self.ep.path, self.ep.path

    def _pages(self, part: Partition, extra: dict[str, str], cut: Cut | None = None) -> Iterator[Page]:
        path, label = self._path_and_label(part.parent_id)
        params = {**self.params, **extra}
        filters = [f for f in (part.filter, extra.get("filter")) if f]
        if filters:
            params["filter"] = ",".join(filters)

        def check(document: Any) -> CheckedPage:
            assert self.check is not None
            checked = self.check(document, part.parent_id, cut)
            for name, value in (part.columns or {}).items():  # a campaign's channel, known from its query
                if name not in checked.table.column_names:
                    column = pa.array([value] * checked.table.num_rows, pa.string())
                    checked.table = checked.table.append_column(name, column)
            return checked

        try:
            yield from self.ctx.client.pages(path, params, self.governor, label, check if self.check else None)
        except KlaviyoAPIError as exc:
            if exc.status == 404 and part.parent_id is not None:
                # The parent was deleted between listing it and reading below it: nothing to load.
                log.info("%s: %s %s is gone, skipped", self.ep.table, self.ep.parent, part.parent_id)
                return
            raise

    def _chain_task(self, part: Partition) -> Task[Any]:
        def run(pool: TaskPool[Any]) -> Iterator[Any]:
            for page in self._pages(part, {}):
                yield from self._items(page, part)

        return run

    def _span_task(self, spans: Plan, span: Span) -> Task[Any]:
        """Reads one window to its end, or to where another chain took over the rest (`spans.steal`)."""
        ep = self.ep
        field = ep.cursor
        assert field is not None
        part: Partition = span.key
        sent = Window(span.lo, span.hi)
        extra = {"filter": ",".join(sent.filter(field, ep.strict_lower)), "sort": field}

        def cut(last: datetime) -> datetime:
            """On the decoder thread, before the page is converted: no split cuts below its last record."""
            return spans.reach(span, last)

        def run(pool: TaskPool[Any]) -> Iterator[Any]:
            try:
                for page in self._pages(part, extra, cut):
                    checked = page.checked
                    assert checked is not None
                    cursors = checked.table.column(field)
                    if checked.reached is not None:
                        last, hi = checked.reached
                    elif len(cursors):  # the page's last cursor did not read as a datetime: cut after converting
                        last = cursors[-1].as_py()
                        hi = spans.reach(span, last)
                    else:
                        yield from self._items(page, part)  # records set aside, if any
                        return
                    more = page.next is not None and last < hi
                    size = len(cursors) if more else None
                    if ep.strict_lower or hi < sent.hi:
                        # rows below lo (greater-than sent a second early) or that another chain now reads
                        checked.table = checked.table.filter(_within(cursors, span.lo, hi))
                        cursors = checked.table.column(field)
                    if len(cursors):
                        spans.read(span, cursors[0].as_py(), cursors[-1].as_py(), len(cursors), size)
                    yield from self._items(page, part)
                    del page, cursors  # not kept while this chain waits for its next turn
                    if not more:
                        return
            finally:
                spans.close(span)

        return run

    # --- checks --------------------------------------------------------------------------------------

    def _count_task(self, part: Partition) -> Task[Any]:
        """A COUNT check: the count attribute of one parent's detail (404: the parent is gone, no row)."""
        assert self.ep.parent_key is not None and self.ep.count_attribute is not None
        assert part.parent_id is not None
        key, attribute, parent_id = self.ep.parent_key, self.ep.count_attribute, part.parent_id

        def run(pool: TaskPool[Any]) -> Iterator[Any]:
            for page in self._pages(part, {}):
                assert page.document is not None  # unchecked: the document itself
                count = (page.document["data"].get("attributes") or {}).get(attribute)
                if not isinstance(count, int):
                    raise KlaviyoAPIError(self.ep.path, 200, f"{attribute} missing from the answer for {parent_id}")
                yield Batch(self.ep.table, pa.Table.from_pylist([{key: parent_id, "count": count}]))

        return run

    def _aggregate_task(self, part: Partition, lo: datetime, hi: datetime) -> Task[Any]:
        """An AGGREGATE check: a metric's events per day of the account's timezone in [lo, hi)."""
        zone = ZoneInfo(self.zone)
        metric_id = part.parent_id

        def local(instant: datetime) -> str:
            return instant.astimezone(zone).isoformat(timespec="seconds")  # wall clock with its offset

        body = {"data": {"type": "metric-aggregate", "attributes": {
            "metric_id": metric_id, "measurements": ["count"], "interval": "day", "timezone": self.zone,
            "filter": [f"greater-or-equal(datetime,{local(lo)})", f"less-than(datetime,{local(hi)})"],
        }}}

        def run(pool: TaskPool[Any]) -> Iterator[Any]:
            document = self.ctx.client.post(self.ep.path, body, self.governor, self.ep.path)
            attributes = document["data"]["attributes"]
            totals = [0] * len(attributes["dates"])
            for row in attributes["data"]:
                for k, n in enumerate(row["measurements"]["count"]):
                    totals[k] += int(n)
            days = [parse_instant(d).astimezone(zone).date().isoformat() for d in attributes["dates"]]
            self.progress.add(len(days))
            yield Batch(self.ep.table, pa.Table.from_pylist(
                [{"metric_id": metric_id, "day": d, "count": n} for d, n in zip(days, totals, strict=True)]))

        return run

    # --- pages to items ----------------------------------------------------------------------------

    def _items(self, page: Page, part: Partition) -> Iterator[Any]:
        checked = page.checked
        assert checked is not None
        if self.lean:
            self.progress.add(checked.table.num_rows)
            yield Batch(self.ep.table, checked.table, bool(checked.misfits))
            for table, rows in checked.included.items():
                yield Batch(table, rows)
            return
        if checked.misfits:
            label = self._path_and_label(part.parent_id)[1]
            if self.ctx.strict:
                raise InvalidRecordError(label, 200, f"{checked.describe()}; the same on two answers")
            yield from set_aside.items(checked.misfits, label, part.parent_id)
        if checked.table.num_rows:
            self.progress.add(checked.table.num_rows)
            yield _with_deletion_column(checked.table, self.ep.deletion_column)
        if self.included:
            self._note_included(checked)
        for table, rows in checked.included.items():
            full = self.batches.add(table, _with_deletion_column(rows, INCLUDED_DELETION))
            if full is not None:
                yield dlt.mark.with_table_name(full, table)

    def _note_included(self, checked: CheckedPage) -> None:
        """Related records (campaign messages) are read again below every parent record read.

        Below an immutable parent (an event's attributions) only the parents read again count: those behind
        the saved cursor (the lookback), so a first load of millions of events notes no ids at all.
        """
        kind = checked.kind
        if self._run is None or kind is None or not checked.table.num_rows:
            return
        parents = checked.table
        if self.ep.immutable:
            assert self.ep.cursor is not None
            ends = [parse_instant(s["to"]) for s in self._run.reread.get(self.ep.table, []) if "to" in s]
            if not ends:
                return
            parents = parents.filter(_within(parents.column(self.ep.cursor), None, max(ends)))
        ids = [str(i) for i in parents.column("id").to_pylist() if i is not None]
        if not ids:
            return
        for table in self.included.values():
            self._run.add_below(table, f"{kind.replace('-', '_')}_id", ids)  # the parent column validate.py adds


class Joiner:
    """Pages of a table handed to dlt together, as one Arrow table of up to JOINED_ROWS rows or whatever
    came within JOINED_SECONDS: dlt spends about a millisecond on every item it is handed (the table schema
    is computed and checked anew), whatever the item's size. Other items (related records, records set
    aside) pass at once. With `rows=1`, every page goes on as it comes (pages ready together still joined)."""

    def __init__(self, rows: int = JOINED_ROWS) -> None:
        self.limit = rows
        self.pages: list[pa.Table] = []
        self.rows = 0
        self.since = 0.0

    def add(self, items: list[Any]) -> Iterator[Any]:
        for item in items:
            if not isinstance(item, pa.Table):
                yield item
                continue
            if self.pages and item.schema != self.pages[0].schema:  # other columns: another table
                yield from self.flush()
            if not self.pages:
                self.since = time.monotonic()
            self.pages.append(item)
            self.rows += item.num_rows
        if self.rows >= self.limit or time.monotonic() - self.since >= JOINED_SECONDS:
            yield from self.flush()

    def flush(self) -> Iterator[pa.Table]:
        if self.pages:
            yield pa.concat_tables(self.pages) if len(self.pages) > 1 else self.pages[0]
        self.pages, self.rows = [], 0


class IncludedBatches:
    """Arrow tables of related records, gathered across pages and threads until a batch is worth a write.

    An events page brings a few dozen attributions; handed to dlt page by page they doubled the wall time of
    extracting 100k events (dlt's work per item hardly depends on its rows). What they cost now: README, Speed.
    """

    ROWS = 20_000

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tables: dict[str, list[pa.Table]] = {}
        self._rows: dict[str, int] = {}

    def add(self, table: str, rows: pa.Table) -> pa.Table | None:
        """Keeps `rows`; returns everything kept for `table` once it makes a batch."""
        if not rows.num_rows:
            return None
        with self._lock:
            self._tables.setdefault(table, []).append(rows)
            self._rows[table] = self._rows.get(table, 0) + rows.num_rows
            if self._rows[table] < self.ROWS:
                return None
            self._rows[table] = 0
            return pa.concat_tables(self._tables.pop(table))

    def drain(self) -> Iterator[tuple[str, pa.Table]]:
        with self._lock:
            tables, self._tables, self._rows = self._tables, {}, {}
        for table, parts in tables.items():
            yield table, pa.concat_tables(parts)



def _within(cursors: pa.ChunkedArray, lo: datetime | None, hi: datetime) -> pa.Array:
    """Which rows' cursors lie in [lo, hi)."""
    below = pc.less(cursors, pa.scalar(hi, cursors.type))
    return below if lo is None else pc.and_(pc.greater_equal(cursors, pa.scalar(lo, cursors.type)), below)


def _add_table(resource: DltResource, table: str, columns: dict[str, Any], primary_key: str) -> None:
    """A second table the resource fills (related records, records set aside), merged on its own key.

    dlt starts a table variant from the resource's own hints: its columns are cleared first, or the
    variant would carry every column of the resource's table, always null.
    """
    resource.apply_hints(table_name=table, columns={}, create_table_variant=True)
    resource.apply_hints(table_name=table, columns=columns, primary_key=primary_key, write_disposition="merge",
                         create_table_variant=True)


def _parent_ids(items: Any, parent: str) -> list[str]:
    """The ids of the `parent` records among what the parent resource yields, those set aside included."""
    if isinstance(items, pa.Table):
        return [str(v) for v in items.column("id").to_pylist()]
    if isinstance(items, dict):
        items = [items]
    aside = set_aside.record_ids(items, parent)
    if aside is not None:
        return aside
    return [row["id"] for row in items if row.get("id") is not None]


def _parent_since(items: Any, column: str | None) -> dict[str, datetime]:
    """Parent id -> its `column` (Endpoint.parent_since), where the parents' page has it."""
    if column is None or not isinstance(items, pa.Table) or column not in items.column_names:
        return {}
    pairs = zip(items.column("id").to_pylist(), items.column(column).to_pylist(), strict=True)
    return {str(pid): parse_instant(value) for pid, value in pairs if pid is not None and value is not None}


def _with_load_marker(columns: dict[str, Any]) -> dict[str, Any]:
    """dlt adds `_dlt_load_id` to Arrow tables too (the source turns on add_dlt_load_id); declared nullable,
    so that a table loaded before it existed can take the new column."""
    return {**columns, "_dlt_load_id": {"data_type": "text", "nullable": True}}


DELETION_HINT: dict[str, Any] = {"data_type": "timestamp", "nullable": True}
INCLUDED_DELETION = "deleted_at"


def _with_deletion_column(rows: pa.Table, column: str | None) -> pa.Table:
    """`rows` with the soft-deletion `column` of its table's hints, null (what was read is not deleted).

    dlt orders a table's columns as in the first Arrow table it is handed, then `_dlt_load_id`, then the
    columns only the hints declare; but it writes every file with `_dlt_load_id` last. A column left to the
    hints put the two in one order in the files and in the other in the schema, and normalize then rewrote
    every file instead of importing it as it is (1M events: 1.3 s and the CLI run's peak memory).
    """
    if column is None or column in rows.column_names:
        return rows
    kind = ARROW_TYPES["date-time"]
    return rows.append_column(pa.field(column, kind), pa.nulls(rows.num_rows, kind))


def _included_columns(table: str) -> dict[str, Any]:
    """Columns of a table filled from another endpoint's `included` records (merged on id, so deletable)."""
    return _with_load_marker({**SHAPES[table].hints(), INCLUDED_DELETION: dict(DELETION_HINT)})


def _hints(endpoint: Endpoint, ctx: RunContext) -> dict[str, Any]:
    if endpoint.report is not None:
        return _report_hints(endpoint, endpoint.report)
    columns = SHAPES[endpoint.table].hints()
    for key in endpoint.primary_key:
        columns.setdefault(key, {})["nullable"] = False
    if endpoint.deletion_column:
        # present from the first load, so that models can filter on it before anything was ever deleted
        columns[endpoint.deletion_column] = dict(DELETION_HINT)
    # Merges always de-duplicate the staged rows: a load job replayed after a crash stages its rows twice.
    disposition = endpoint.write_disposition
    if endpoint.membership and ctx.members_full_refresh:
        disposition = "replace"
    return {
        "name": endpoint.table,
        "primary_key": list(endpoint.primary_key),
        "write_disposition": disposition,
        "columns": _with_load_marker(columns),
    }


def _report_hints(endpoint: Endpoint, report: Report) -> dict[str, Any]:
    """Groupings and the conversion metric as text, days as dates, counts as integers, the rest as doubles.
    A timeframe read replaces the destination's rows of the same conversion metric and day or timeframe
    (merge_key), so a grouping that has gone from Klaviyo's answer goes from the table too."""
    columns: dict[str, dict[str, Any]] = {name: {"data_type": "text"} for name in report.groupings}
    if report.conversion:
        columns["conversion_metric_id"] = {"data_type": "text"}
    if report.interval:
        columns["day"] = {"data_type": "date"}
    else:
        columns.update(timeframe_start={"data_type": "date"}, timeframe_end={"data_type": "date"})
    columns.update({name: {"data_type": "bigint" if name in COUNTS else "double"} for name in report.statistics})
    for key in endpoint.primary_key:
        columns[key]["nullable"] = False
    return {"name": endpoint.table, "primary_key": list(endpoint.primary_key), "merge_key": list(report.period),
            "write_disposition": "merge", "columns": columns}


# How a report table loads, whatever the run's loader_file_format (parquet for the command line): a run that reads
# no report rows makes or keeps the table with a file without a row, and dlt's ADBC load job (PostgreSQL) fails on
# a parquet file without a row, then on every later run, which loads the package left pending first. A few
# hundred rows a run lose nothing by INSERT statements or JSON lines.
ROW_FORMATS: tuple[TLoaderFileFormat, ...] = ("insert_values", "jsonl", "csv")


def _row_format_hints() -> Any:
    """Hints that load a table in the first of ROW_FORMATS its destination takes (None: none of them)."""
    destination = dlt.current.pipeline().destination
    if destination is None:
        return None
    supported = destination.capabilities().supported_loader_file_formats or ()
    chosen = next((name for name in ROW_FORMATS if name in supported), None)
    return dlt.mark.make_hints(file_format=chosen) if chosen else None


def build_resources(ctx: RunContext, tables: Iterable[str]) -> list[DltResource]:
    """dlt resources for the chosen tables, parents wired to children as dlt transformers."""
    wanted = set(tables)
    made: dict[str, DltResource] = {}
    for endpoint in ENDPOINTS:
        hints = _hints(endpoint, ctx)
        reader = EndpointReader(endpoint, ctx)
        if endpoint.parent is None:
            def root(reader: EndpointReader = reader) -> Iterator[Any]:
                yield from reader.read()

            resource = dlt.resource(root, parallelized=True, **hints)
        else:
            def child(items: Any, reader: EndpointReader = reader) -> Iterator[Any]:
                parent = reader.ep.parent
                assert parent is not None
                yield from reader.read(_parent_ids(items, parent), _parent_since(items, reader.ep.parent_since))

            resource = dlt.transformer(child, data_from=made[endpoint.parent], parallelized=True, **hints)
        for table in endpoint.included.values():
            _add_table(resource, table, _included_columns(table), "id")
        _add_table(resource, set_aside.TABLE, _with_load_marker(set_aside.COLUMNS), "key")
        made[endpoint.table] = resource
    return [resource for table, resource in made.items() if table in wanted]


def repair_resource(table: str, items: Iterator[Any], ctx: RunContext) -> DltResource:
    """A resource loading `items` into `table` with the hints the source gives it (verification's repairs):
    the same keys, write disposition and columns, and the table for records set aside."""
    endpoint = BY_TABLE.get(table)
    if endpoint is not None:
        hints = _hints(endpoint, ctx)
    else:  # a table filled from another endpoint's `included` records
        hints = {"name": table, "primary_key": ["id"], "write_disposition": "merge",
                 "columns": _included_columns(table)}
    resource = dlt.resource(items, **hints)
    for related in endpoint.included.values() if endpoint is not None else ():  # events read again: attributions
        _add_table(resource, related, _included_columns(related), "id")
    _add_table(resource, set_aside.TABLE, _with_load_marker(set_aside.COLUMNS), "key")
    return resource
