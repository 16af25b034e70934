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
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import dlt
import orjson
import pyarrow as pa
from dlt.extract.resource import DltResource

from klaviyo_source.client import Decode, Document, KlaviyoClient
from klaviyo_source.concurrency import Task, TaskPool
from klaviyo_source.endpoints import ENDPOINTS, INCLUDED_TABLES, PREDICTIVE_TIER, Endpoint, Mode
from klaviyo_source.errors import KlaviyoAPIError, MissingScopeError
from klaviyo_source.rate_limit import Governor, GovernorRegistry
from klaviyo_source.rows import ARROW_SHAPES, Resource, flat_rows, parse_lazy
from klaviyo_source.validate import PageCheck
from klaviyo_source.windows import SECOND, Window, cursor_value, estimate_pages, parse_instant

log = logging.getLogger("klaviyo_source")

PROGRESS_EVERY = 10.0  # seconds between progress lines of a long resource


@dataclass
class RunContext:
    """What every resource of one source run shares."""

    client: KlaviyoClient
    governors: GovernorRegistry
    start: datetime | None  # lower bound of a first run (or of a fixed interval)
    until: datetime  # upper bound of every window this run: end_date, or the run's start
    stateless: bool  # an explicit end_date: read [start, end) and leave the cursors alone
    concurrency: int
    overlaps: dict[str, timedelta]
    predictive_analytics: bool
    skip_forbidden: bool
    members_full_refresh: bool
    revision: str  # the revision header sent; parameters an endpoint lacks at it are left out

    def overlap(self, endpoint: Endpoint) -> timedelta:
        return self.overlaps.get(endpoint.table, endpoint.overlap)


class Progress:
    """Rows and pages per table, logged every few seconds on long runs."""

    def __init__(self, table: str, governor: Governor) -> None:
        self.table = table
        self.governor = governor  # its waits tell whether Klaviyo's rate limit or our side sets the pace
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
                log.info("%s: %s rows in %s pages so far (%.0f rows/s; threads waited %.0f s on the rate limit)",
                         self.table, f"{self.rows:,}", f"{self.pages:,}", rate, self.governor.waited)


class EndpointReader:
    """Reads one endpoint: builds the queries, runs the chains, converts pages, keeps the cursors."""

    def __init__(self, endpoint: Endpoint, ctx: RunContext) -> None:
        self.ep = endpoint
        self.ctx = ctx
        self.shape = ARROW_SHAPES.get(endpoint.table)
        # Arrow pages are read field by field, so they skip building dicts; row pages are dicts for dlt.
        self.decode: Decode = parse_lazy if self.shape is not None else orjson.loads
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
        self.progress = Progress(endpoint.table, self.governor)
        self.check = PageCheck(endpoint)
        self.windowed = endpoint.mode is Mode.WINDOW and not (endpoint.membership and ctx.members_full_refresh)

    # --- what to read -------------------------------------------------------------------------------

    def read(self, parent_ids: Iterable[str] = ()) -> Iterator[Any]:
        """Every item of this endpoint for this run (for children: below the given parents)."""
        partitions = self._partitions(list(parent_ids))
        if not partitions:
            return
        cursors: dict[str, str] = dlt.current.resource_state().setdefault("cursors", {})
        tasks = []
        for key, fixed_filter, parent_id in partitions:
            if self.windowed:
                window = self._window(cursors.get(key))
                if window is None:
                    continue
                tasks.append(self._window_task(window, fixed_filter, parent_id))
            else:
                tasks.append(self._chain_task(fixed_filter, parent_id))
        pool: TaskPool[Any] = TaskPool(min(self.ctx.concurrency, max(len(tasks), 1) * self._split_factor()))
        try:
            yield from pool.results(tasks)
        except KlaviyoAPIError as exc:
            if exc.status == 403:
                error = MissingScopeError(exc.endpoint, 403, exc.detail, exc.code, self.ep.table, self.ep.scopes)
                if self.ctx.skip_forbidden:
                    log.warning("%s skipped: %s", self.ep.table, error)
                    return
                raise error from None
            raise
        if self.windowed and not self.ctx.stateless:
            for key, _, _ in partitions:
                cursors[key] = self.ctx.until.isoformat()

    def _split_factor(self) -> int:
        """Windowed chains can split, so they may use every worker; plain chains use one each."""
        return self.ctx.concurrency if self.windowed else 1

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

    def _pages(self, fixed_filter: str | None, parent_id: str | None, extra: dict[str, str]) -> Iterator[Document]:
        path, label = self._path_and_label(parent_id)
        params = {**self.params, **extra}
        filters = [f for f in (fixed_filter, extra.get("filter")) if f]
        if filters:
            params["filter"] = ",".join(filters)
        try:
            yield from self.ctx.client.pages(path, params, self.governor, label, self.check, self.decode)
        except KlaviyoAPIError as exc:
            if exc.status == 404 and parent_id is not None:
                # The parent was deleted between listing it and reading below it: nothing to load.
                log.info("%s: %s %s is gone, skipped", self.ep.table, self.ep.parent, parent_id)
                return
            raise

    def _chain_task(self, fixed_filter: str | None, parent_id: str | None) -> Task[Any]:
        def run(pool: TaskPool[Any]) -> Iterator[Any]:
            for document in self._pages(fixed_filter, parent_id, {}):
                yield from self._items(document["data"], document, parent_id)

        return run

    def _window_task(self, window: Window, fixed_filter: str | None, parent_id: str | None) -> Task[Any]:
        ep = self.ep
        field = ep.cursor
        assert field is not None
        extra = {"filter": ",".join(window.filter(field, ep.strict_lower)), "sort": field}

        def run(pool: TaskPool[Any]) -> Iterator[Any]:
            for document in self._pages(fixed_filter, parent_id, extra):
                data = document["data"]
                if ep.strict_lower:
                    data = [r for r in data if window.contains(cursor_value(r, field))]
                more = bool((document.get("links") or {}).get("next"))
                if more and len(data) > 1 and pool.idle() > 0:
                    first, last = cursor_value(data[0], field), cursor_value(data[-1], field)
                    if first and last and first < last and window.hi - last >= 2 * SECOND:
                        pages_left = estimate_pages(window, first, last)
                        if pages_left >= 2:
                            # Hand the rest of the window to idle workers. Rows at `last` may continue on
                            # the next page, so they are left to the new window that starts there.
                            keep = [r for r in data if (cursor_value(r, field) or last) < last]
                            yield from self._items(keep, document, parent_id)
                            rest = Window(last, window.hi)
                            for sub in rest.split(min(int(pages_left), pool.idle() + 1)):
                                pool.submit(self._window_task(sub, fixed_filter, parent_id))
                            return
                yield from self._items(data, document, parent_id)

        return run

    # --- pages to items ----------------------------------------------------------------------------

    def _items(self, data: Sequence[Resource], document: Document, parent_id: str | None) -> Iterator[Any]:
        if not data:
            return
        self.progress.add(len(data))
        extra = {self.ep.parent_key: parent_id} if (self.ep.parent_key and parent_id is not None) else None
        if self.shape is not None:
            yield self.shape.table_of(data, extra)
        else:
            yield flat_rows(data, extra)
        if self.ep.included:
            yield from self._included(data, document)

    def _included(self, data: Sequence[Resource], document: Document) -> Iterator[Any]:
        """Related resources sent along (campaign messages with campaigns), with their parent's id."""
        by_key = {(r["type"], r["id"]): r for r in document.get("included") or ()}
        rows: dict[str, list[dict]] = {}
        for resource in data:
            parent_column = f"{resource['type'].replace('-', '_')}_id"
            for rel in (resource.get("relationships") or {}).values():
                targets = rel.get("data") if isinstance(rel, dict) else None
                if not isinstance(targets, list):
                    continue
                for target in targets:
                    table = self.ep.included.get(target.get("type"))
                    related = by_key.get((target.get("type"), target.get("id")))
                    if table and related:
                        rows.setdefault(table, []).extend(flat_rows([related], {parent_column: resource["id"]}))
        for table, table_rows in rows.items():
            yield dlt.mark.with_hints(table_rows, INCLUDED_HINTS[table], create_table_variant=True)


INCLUDED_HINTS = {
    table: dlt.mark.make_hints(
        table_name=table,
        primary_key="id",
        write_disposition="merge",
        columns={name: {"data_type": "json"} for name in json_columns},
    )
    for table, json_columns in INCLUDED_TABLES.items()
}


def _parent_ids(items: Any) -> list[str]:
    if isinstance(items, pa.Table):
        return [str(v) for v in items.column("id").to_pylist()]
    if isinstance(items, dict):
        items = [items]
    return [row["id"] for row in items if row.get("id") is not None]


def _hints(endpoint: Endpoint, ctx: RunContext) -> dict[str, Any]:
    columns: dict[str, dict[str, Any]] = {name: {"data_type": "json"} for name in endpoint.json_columns}
    columns.update({name: {"data_type": "text"} for name in endpoint.text_columns})
    shape = ARROW_SHAPES.get(endpoint.table)
    if shape is not None:
        columns.update(shape.hints())
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
        made[endpoint.table] = resource
    return [resource for table, resource in made.items() if table in wanted]
