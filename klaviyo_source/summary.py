"""What a run did, per table: rows new or changed, rows read again, requests, 429s and time.

    summary = load(pipeline, klaviyo_source(start_date="2024-01-01"))   # instead of pipeline.run(...)
    print(summary)                          # the block the command line logs at the end of a run
    summary.tables["events"].new            # rows that were not in the destination before

`load` runs a source the way `pipeline.run` does (state synced from the destination, extract, normalize,
load) and, between extract and load, counts in the destination the rows this run read again: the
lookback or overlap behind each cursor (rows already there before the load), the whole table for tables
replaced on every run, the rows below every parent read for child tables. "New or changed" is the rest
of what was read. Requests, 429s and time come from the source's own counts (dlt custom metrics of each
resource, also in `pipeline.last_trace`).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, Final, Literal

import dlt
from dlt.common.pipeline import ExtractInfo, LoadInfo
from dlt.common.typing import TRefreshMode
from dlt.destinations.exceptions import DatabaseUndefinedRelation

from klaviyo_source.endpoints import BY_TABLE, INCLUDED_TABLES
from klaviyo_source.windows import parse_instant

log = logging.getLogger("klaviyo_source")

# The source yields Arrow pages; parquet files skip dlt's row normalizer.
LOADER_FILE_FORMAT: Final[Literal["parquet"]] = "parquet"
# Conditions per count query: ranges of many lists or segments, ids of many parents.
BATCH = 200


@dataclass(frozen=True)
class TableSummary:
    """One table of a run. `reread` is None when the destination could not be asked (no SQL client)."""

    table: str
    read: int
    reread: int | None
    requests: int | None  # None for a table read along with another (campaign messages with campaigns)
    throttled: int | None
    seconds: float | None

    @property
    def new(self) -> int | None:
        """Rows new or changed: what was read, less what was read again of rows already there."""
        return None if self.reread is None else max(self.read - self.reread, 0)


@dataclass
class RunSummary:
    tables: dict[str, TableSummary]
    seconds: float
    load_info: LoadInfo | None = field(default=None, repr=False)

    def __str__(self) -> str:
        def num(value: int | None) -> str:
            return "?" if value is None else f"{value:,}"

        header = ("table", "new/changed", "re-read", "requests", "429s", "time")
        rows = [
            (t.table, num(t.new), num(t.reread), "-" if t.requests is None else num(t.requests),
             "-" if t.throttled is None else num(t.throttled), "-" if t.seconds is None else f"{t.seconds:.1f} s")
            for t in self.tables.values()
        ]
        known = [t for t in self.tables.values() if t.new is not None]
        rows.append((
            "total", num(sum(t.new or 0 for t in known)), num(sum(t.reread or 0 for t in known)),
            num(sum(t.requests or 0 for t in self.tables.values())),
            num(sum(t.throttled or 0 for t in self.tables.values())), f"{self.seconds:.1f} s",
        ))
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
        lines = [f"run summary ({len(self.tables)} tables, {self.seconds:.1f} s):"]
        for row in [header, *rows]:
            cells = [row[0].ljust(widths[0])] + [cell.rjust(w) for cell, w in zip(row[1:], widths[1:], strict=True)]
            lines.append("  " + "  ".join(cells))
        return "\n".join(lines)


def load(pipeline: dlt.Pipeline, source: Any, refresh: TRefreshMode | None = None) -> RunSummary:
    """Loads `source` like `pipeline.run(source, refresh=...)` and says what the run did, per table."""
    started = time.monotonic()
    restore_state(pipeline)
    extracted = pipeline.extract(source, refresh=refresh, loader_file_format=LOADER_FILE_FORMAT)
    read, stats = _extracted(extracted)
    # After a refresh the tables are loaded anew: nothing there counts as read again.
    reread = {} if refresh else count_rereads(pipeline, {t: s["reread"] for t, s in stats.items() if "reread" in s})
    pipeline.normalize()
    info = pipeline.load()
    info.raise_on_failed_jobs()
    tables = {}
    for table in [t for t in (*BY_TABLE, *INCLUDED_TABLES) if t in read or t in stats]:
        own = stats.get(table, {})
        tables[table] = TableSummary(
            table, read.get(table, 0), reread.get(table, 0) if refresh is None else 0,
            own.get("requests"), own.get("throttled"), own.get("seconds"),
        )
    return RunSummary(tables, time.monotonic() - started, info)


def restore_state(pipeline: dlt.Pipeline) -> None:
    """What `pipeline.run` does first: state and schemas from the destination (a new machine continues).

    Except for a DuckDB file that does not exist yet: it holds no state, and connecting would create it,
    left empty if the run then fails. Local state of a database that is gone is dropped, as dlt's sync does.
    """
    if not pipeline.config.restore_from_destination or pipeline.dev_mode:
        return
    if new_duckdb_file(pipeline) is None:
        pipeline.sync_destination()
    elif pipeline.has_data:
        pipeline.drop()


def new_duckdb_file(pipeline: dlt.Pipeline) -> str | None:
    """The path of the pipeline's DuckDB file if it is DuckDB's and the file does not exist yet."""
    destination = pipeline.destination
    if destination is None or destination.destination_type != "dlt.destinations.duckdb":
        return None
    database = getattr(pipeline.destination_client().config.credentials, "database", None)
    if not isinstance(database, str) or database == ":memory:" or os.path.exists(database):
        return None
    return database


def _extracted(info: ExtractInfo) -> tuple[dict[str, int], dict[str, dict[str, Any]]]:
    """Rows per table and the source's statistics per table (its resources' custom metrics)."""
    rows: dict[str, int] = {}
    stats: dict[str, dict[str, Any]] = {}
    for metrics in info.metrics.values():
        for step in metrics:
            for table, writer in step["table_metrics"].items():
                if not table.startswith("_dlt"):
                    rows[table] = rows.get(table, 0) + writer.items_count
            for resource, resource_metrics in step["resource_metrics"].items():
                custom = dict(resource_metrics.custom_metrics)
                if "requests" not in custom:
                    continue
                stats[resource] = {k: custom[k] for k in ("requests", "throttled", "seconds")}
                for table, specs in (custom.get("reread") or {}).items():
                    stats.setdefault(table, {})["reread"] = specs
    return rows, stats


def count_rereads(pipeline: dlt.Pipeline, specs: dict[str, list[dict[str, Any]]]) -> dict[str, int | None]:
    """Rows already in the destination, per table, that the run reads again (see RunStats in resources.py)."""
    if not specs:
        return {}
    try:
        client_context = pipeline.sql_client()
    except Exception as exc:  # destinations without SQL (files, buckets): the summary says "?"
        log.debug("re-read rows not counted: %s", exc)
        return dict.fromkeys(specs)
    counts: dict[str, int | None] = {}
    with client_context as client:
        for table, table_specs in specs.items():
            try:
                queries = _queries(client, table, table_specs)
                counts[table] = sum((client.execute_sql(sql, *args) or [[0]])[0][0] for sql, args in queries)
            except DatabaseUndefinedRelation:
                counts[table] = 0  # not loaded yet
            except Exception as exc:  # e.g. a column that an older version did not load: unknown, not fatal
                log.debug("re-read rows of %s not counted: %s", table, exc)
                counts[table] = None
    return counts


def _queries(client: Any, table: str, specs: Sequence[dict[str, Any]]) -> Iterator[tuple[str, list[Any]]]:
    """Count queries for the re-read specs of one table; ranges are ORed, so no row is counted twice."""
    qualified = client.make_qualified_table_name(table)
    if any(spec.get("all") for spec in specs):
        yield f"select count(*) from {qualified}", []
        return
    ranges = [spec for spec in specs if "to" in spec]
    for batch in _batches(ranges):
        conditions, args = [], []
        for spec in batch:
            column = client.escape_column_name(spec["column"])
            parts = [f"{column} < %s"]
            args.append(_bound(spec["to"]))
            if spec.get("from"):
                parts.append(f"{column} >= %s")
                args.append(_bound(spec["from"]))
            for name, value in (spec.get("where") or {}).items():
                parts.append(f"{client.escape_column_name(name)} = %s")
                args.append(value)
            conditions.append("(" + " and ".join(parts) + ")")
        yield f"select count(*) from {qualified} where {' or '.join(conditions)}", args
    for spec in specs:
        if "in" in spec:
            column = client.escape_column_name(spec["column"])
            for ids in _batches(spec["in"]):
                yield f"select count(*) from {qualified} where {column} in ({', '.join(['%s'] * len(ids))})", ids


def _bound(text: str) -> date | datetime:
    """A range bound: a day for date columns (the report tables' days), else an instant."""
    return date.fromisoformat(text) if len(text) == 10 else parse_instant(text)


def _batches(items: Sequence[Any]) -> Iterator[list[Any]]:
    for at in range(0, len(items), BATCH):
        yield list(items[at:at + BATCH])
