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
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import dlt
import pyarrow as pa
import pyarrow.compute as pc
from dlt.extract.resource import DltResource

from klaviyo_source import set_aside
from klaviyo_source.client import KlaviyoClient, Page
from klaviyo_source.concurrency import Budget, Slots, Task, TaskPool
from klaviyo_source.endpoints import ENDPOINTS, PREDICTIVE_TIER, Endpoint, Mode
from klaviyo_source.errors import InvalidRecordError, KlaviyoAPIError, MissingScopeError
from klaviyo_source.first_load import mark_appended, table_is_empty
from klaviyo_source.rate_limit import Governor, GovernorRegistry
from klaviyo_source.rows import SHAPES
from klaviyo_source.validate import CheckedPage, PageCheck
from klaviyo_source.windows import Plan, Span, Window, parse_instant, plan

log = logging.getLogger("klaviyo_source")

PROGRESS_EVERY = 10.0  # seconds between progress lines of a long resource
MAX_CHAINS = 256  # threads of one read; how many of them send requests at once is the slots' decision
# An answer in hand costs about twice its JSON: the body, then its parsed form or Arrow table.
HELD_PER_BYTE = 2.0
RECORD_BYTES = 1000  # guessed size of a record until the first answers tell


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
    strict: bool = False  # a record that does not fit fails the run instead of being set aside

    def overlap(self, endpoint: Endpoint) -> timedelta:
        return self.overlaps.get(endpoint.table, endpoint.overlap)


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


class EndpointReader:
    """Reads one endpoint: builds the queries, runs the chains, converts pages, keeps the cursors."""

    def __init__(self, endpoint: Endpoint, ctx: RunContext) -> None:
        self.ep = endpoint
        self.ctx = ctx
        params = dict(endpoint.params)
        tier = endpoint.tier
        key = endpoint.path
        if ctx.predictive_analytics and endpoint.table == "profiles":
            params["additional-fields[profile]"] += ",predictive_analytics"
            tier, key = PREDICTIVE_TIER, f"{endpoint.path}#predictive_analytics"
        if endpoint.page_size:
            params["page[size]"] = str(endpoint.page_size)
        self.params = {name: value for name, value in params.items() if endpoint.sends(name, ctx.revision)}
        self.governor: Governor = ctx.governors.get(key, tier)
        self.slots = Slots(self._inflight, self._page_bytes, ctx.budget, ctx.concurrency)
        self.progress = Progress(endpoint.table, self.governor, self.slots)
        self.check = PageCheck(endpoint)
        self.windowed = endpoint.mode is Mode.WINDOW and not (endpoint.membership and ctx.members_full_refresh)

    def _inflight(self) -> int:
        return self.governor.inflight(self.ctx.governors.latency())

    def _page_bytes(self) -> float:
        size = self.governor.page_bytes or (self.ep.page_size or 100) * RECORD_BYTES
        return HELD_PER_BYTE * size

    # --- what to read -------------------------------------------------------------------------------

    def read(self, parent_ids: Iterable[str] = ()) -> Iterator[Any]:
        """Every item of this endpoint for this run (for children: below the given parents)."""
        partitions = self._partitions(list(parent_ids))
        if not partitions:
            return
        cursors: dict[str, str] = dlt.current.resource_state().setdefault("cursors", {})
        tasks = []
        spans = Plan(self.ep.page_size or 100)
        # A first load (or a fixed interval) is large and of unknown shape: split it up front into as many
        # windows as requests are worth having in flight. Later runs read what changed since the last one,
        # usually a page or two, so they start with one window and split only what proves large.
        share = max(1, self.slots.limit() // len(partitions))
        for key, fixed_filter, parent_id in partitions:
            if self.windowed:
                window = self._window(cursors.get(key))
                if window is None:
                    continue
                parts = share if key not in cursors or self.ctx.stateless else 1
                for span in spans.add(plan(window, parts), (fixed_filter, parent_id)):
                    tasks.append(self._span_task(spans, span))
            else:
                tasks.append(self._chain_task(fixed_filter, parent_id))

        def steal() -> Task[Any] | None:
            span = spans.steal()
            return self._span_task(spans, span) if span is not None else None

        pool: TaskPool[Any] = TaskPool(MAX_CHAINS, self.slots, steal if self.windowed else None)
        hints = self._append_hints(cursors, partitions)
        try:
            for item in pool.results(tasks):
                if hints is not None and isinstance(item, pa.Table):  # the table's first page, before dlt
                    item, hints = dlt.mark.with_hints(item, hints), None  # writes any of it
                yield item
        except KlaviyoAPIError as exc:
            if exc.status == 403:
                error = MissingScopeError(exc.endpoint, 403, exc.detail, exc.code, self.ep.table, self.ep.scopes)
                if self.ctx.skip_forbidden:
                    log.warning("%s skipped: %s", self.ep.table, error)
                    return
                raise error from None
            raise
        if spans.splits:
            log.debug("%s: %d windows split off to idle chains", self.ep.table, spans.splits)
        if self.windowed and not self.ctx.stateless:
            for key, _, _ in partitions:
                cursors[key] = self.ctx.until.isoformat()

    def _append_hints(self, cursors: dict[str, str], partitions: list[tuple[str, str | None, str | None]]) -> Any:
        """Hints that make this read append, when it is the first load of an immutable table into an empty one."""
        first = not self.ctx.stateless and not any(key in cursors for key, _, _ in partitions)
        if self.ep.immutable and self.windowed and first and table_is_empty(self.ep.table):
            return mark_appended(self.ep.table)
        return None

    def _partitions(self, parent_ids: list[str]) -> list[tuple[str, str | None, str | None]]:
        """(cursor key, fixed filter, parent id) per independent query of this run."""
        ep = self.ep
        if ep.parent:
            return [(pid, ep.parent_filter.format(pid) if ep.parent_filter else None, pid) for pid in parent_ids]
        if ep.partitions:
            assert ep.partition_filter is not None
            return [(value, ep.partition_filter.format(value), None) for value in ep.partitions]
        return [("", None, None)]

    def _window(self, saved: str | None) -> Window | None:
        lo = self.ctx.start
        if saved is not None and not self.ctx.stateless:
            lo = parse_instant(saved) - self.ctx.overlap(self.ep)
        if lo is not None and lo >= self.ctx.until:
            return None
        return Window(lo, self.ctx.until)

    # --- chains -------------------------------------------------------------------------------------

    def _path_and_label(self, parent_id: str | None) -> tuple[str, str]:
        if parent_id is not None and "{id}" in self.ep.path:
            return self.ep.path.replace("{id}", parent_id), self.ep.path
        return self.ep.path, self.ep.path

    def _pages(self, fixed_filter: str | None, parent_id: str | None, extra: dict[str, str]) -> Iterator[Page]:
        path, label = self._path_and_label(parent_id)
        params = {**self.params, **extra}
        filters = [f for f in (fixed_filter, extra.get("filter")) if f]
        if filters:
            params["filter"] = ",".join(filters)

        def check(document: Any) -> CheckedPage:
            return self.check(document, parent_id)

        try:
            yield from self.ctx.client.pages(path, params, self.governor, label, check)
        except KlaviyoAPIError as exc:
            if exc.status == 404 and parent_id is not None:
                # The parent was deleted between listing it and reading below it: nothing to load.
                log.info("%s: %s %s is gone, skipped", self.ep.table, self.ep.parent, parent_id)
                return
            raise

    def _chain_task(self, fixed_filter: str | None, parent_id: str | None) -> Task[Any]:
        def run(pool: TaskPool[Any]) -> Iterator[Any]:
            for page in self._pages(fixed_filter, parent_id, {}):
                yield from self._items(page, parent_id)

        return run

    def _span_task(self, spans: Plan, span: Span) -> Task[Any]:
        """Reads one window to its end, or to where another chain took over the rest (`spans.steal`)."""
        ep = self.ep
        field = ep.cursor
        assert field is not None
        fixed_filter, parent_id = span.key
        sent = Window(span.lo, span.hi)
        extra = {"filter": ",".join(sent.filter(field, ep.strict_lower)), "sort": field}

        def run(pool: TaskPool[Any]) -> Iterator[Any]:
            try:
                for page in self._pages(fixed_filter, parent_id, extra):
                    checked = page.checked
                    assert checked is not None
                    cursors = checked.table.column(field)
                    if not len(cursors):
                        yield from self._items(page, parent_id)  # records set aside, if any
                        return
                    hi = spans.hi(span)
                    last = cursors[-1].as_py()
                    more = bool((page.document.get("links") or {}).get("next")) and last < hi
                    size = len(cursors) if more else None
                    if ep.strict_lower or hi < sent.hi:
                        # rows below lo (greater-than sent a second early) or that another chain now reads
                        checked.table = checked.table.filter(_within(cursors, span.lo, hi))
                        cursors = checked.table.column(field)
                    if len(cursors):
                        spans.read(span, cursors[0].as_py(), cursors[-1].as_py(), len(cursors), size)
                    yield from self._items(page, parent_id)
                    if not more:
                        return
            finally:
                spans.close(span)

        return run

    # --- pages to items ----------------------------------------------------------------------------

    def _items(self, page: Page, parent_id: str | None) -> Iterator[Any]:
        checked = page.checked
        assert checked is not None
        if checked.misfits:
            label = self._path_and_label(parent_id)[1]
            if self.ctx.strict:
                raise InvalidRecordError(label, 200, f"{checked.describe()}; the same on two answers")
            yield from set_aside.items(checked.misfits, label, parent_id)
        if checked.table.num_rows:
            self.progress.add(checked.table.num_rows)
            yield checked.table
        for table, rows in checked.included.items():
            if rows.num_rows:
                yield dlt.mark.with_table_name(rows, table)


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


def _parent_ids(items: Any) -> list[str]:
    if isinstance(items, pa.Table):
        return [str(v) for v in items.column("id").to_pylist()]
    if isinstance(items, dict):
        items = [items]
    return [row["id"] for row in items if row.get("id") is not None]


def _hints(endpoint: Endpoint, ctx: RunContext) -> dict[str, Any]:
    columns = SHAPES[endpoint.table].hints()
    for key in endpoint.primary_key:
        columns.setdefault(key, {})["nullable"] = False
    # Merges always de-duplicate the staged rows: a load job replayed after a crash stages its rows twice.
    disposition = endpoint.write_disposition
    if endpoint.membership and ctx.members_full_refresh:
        disposition = "replace"
    return {
        "name": endpoint.table,
        "primary_key": list(endpoint.primary_key),
        "write_disposition": disposition,
        "columns": columns,
    }


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
                yield from reader.read(_parent_ids(items))

            resource = dlt.transformer(child, data_from=made[endpoint.parent], parallelized=True, **hints)
        for table in endpoint.included.values():
            _add_table(resource, table, SHAPES[table].hints(), "id")
        _add_table(resource, set_aside.TABLE, set_aside.COLUMNS, "key")
        made[endpoint.table] = resource
    return [resource for table, resource in made.items() if table in wanted]
