"""What the warehouse holds, for verification: counts, live ids, change markers, rows read back, hard deletes.

Verification compares the loaded tables with Klaviyo (verify.py). It reads them through dlt's SQL client in
plain, portable SQL (no dialect functions: days of the account's timezone are computed here and passed as
instant bounds), and it never writes rows itself: repaired and soft-deleted rows go through dlt loads like
any other, so they carry a load marker. Only hard deletions (privacy) are plain DELETE statements.
Rows soft-deleted (`deleted_at`) or removed from a list (`removed_at`) do not count as held.
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import dlt
import orjson
import pyarrow as pa
from dlt.destinations.exceptions import DatabaseUndefinedRelation

log = logging.getLogger("klaviyo_source")

BATCH = 500  # values per IN (...) list
_ARROW_TYPES = {"text": pa.string(), "timestamp": pa.timestamp("us", tz="UTC"), "bigint": pa.int64(),
                "double": pa.float64(), "bool": pa.bool_(), "date": pa.date32(), "json": pa.string()}
DAYS_PER_QUERY = 62  # conditional counts per SELECT


class Warehouse:
    """The pipeline's destination dataset, as verification reads it."""

    def __init__(self, pipeline: dlt.Pipeline) -> None:
        self.pipeline = pipeline
        self._sql: Any = None
        self._open: Any = None  # the connection of a session, shared by its queries
        self._lock = threading.Lock()
        self._naming = threading.Lock()
        self._schema = threading.Lock()

    # --- schema -----------------------------------------------------------------------------------

    def columns(self, table: str) -> dict[str, Any]:
        """The table's columns as dlt knows them (empty if dlt never loaded it)."""
        with self._schema:  # dlt's schema storage is not for concurrent use: a table looked up from two threads
            if not self.pipeline.default_schema_name:  # at once was now and then not found
                return {}
            found = self.pipeline.default_schema.tables.get(table) or {}
        return {name: col for name, col in (found.get("columns") or {}).items() if col.get("data_type")}

    def has(self, table: str, *columns: str) -> bool:
        known = self.columns(table)
        return bool(known) and all(c in known for c in columns)

    def _live(self, table: str) -> str:
        """The condition that a row is held: not soft-deleted or removed (when the table has that column)."""
        known = self.columns(table)
        return " AND ".join(f"{self._col(c)} IS NULL" for c in ("deleted_at", "removed_at") if c in known) or "1 = 1"

    # --- plumbing ---------------------------------------------------------------------------------

    @property
    def _names(self) -> Any:
        """A SQL client for quoting names (no connection needed for that). Made once, under a lock: dlt's
        `sql_client()` binds the schema's naming, and two threads doing it at once saw it unset."""
        with self._naming:
            if self._sql is None:
                self._sql = self.pipeline.sql_client()
            return self._sql

    @contextmanager
    def session(self) -> Iterator[None]:
        """One connection for many reads (opening one costs ~0.15 s on DuckDB). Never held across a dlt load:
        on PostgreSQL an idle transaction's locks would block the load's schema changes."""
        with self._naming:
            client = self.pipeline.sql_client()
            self._sql = self._sql or client
        with client:
            self._open = client
            try:
                yield
            finally:
                self._open = None

    @contextmanager
    def _client(self) -> Iterator[Any]:
        if self._open is not None:
            with self._lock:  # connections are not for concurrent use
                yield self._open
            return
        with self._naming:
            client = self.pipeline.sql_client()
        with client:
            yield client

    def _col(self, name: str) -> str:
        return str(self._names.escape_column_name(name))

    def query(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        """Rows of a SELECT over `{table}` placeholders already filled; a missing table reads as empty."""
        try:
            with self._client() as client:
                return [tuple(r) for r in client.execute_sql(sql, *args) or []]
        except DatabaseUndefinedRelation:
            return []

    def _table(self, table: str) -> str:
        return str(self._names.make_qualified_table_name(table))

    def _in(self, column: str, values: Sequence[Any]) -> str:
        return f"{self._col(column)} IN ({', '.join(['%s'] * len(values))})"

    # --- reads ------------------------------------------------------------------------------------

    def timezone(self) -> str | None:
        """The account's timezone as the `accounts` table holds it."""
        if not self.has("accounts", "timezone"):
            return None
        rows = self.query(f"SELECT {self._col('timezone')} FROM {self._table('accounts')}")
        return str(rows[0][0]) if rows and rows[0][0] else None

    def names(self, table: str) -> dict[str, str]:
        """id -> name of a small table (metrics, lists, segments)."""
        if not self.has(table, "id", "name"):
            return {}
        return {str(i): str(n) for i, n in self.query(
            f"SELECT {self._col('id')}, {self._col('name')} FROM {self._table(table)}")}

    def event_counts(self, edges: Sequence[datetime]) -> dict[tuple[str, int], int]:
        """(metric id, day number) -> events held, for the days [edges[k], edges[k + 1])."""
        if not self.has("events", "metric_id", "datetime") or len(edges) < 2:
            return {}
        metric, at = self._col("metric_id"), self._col("datetime")
        out: dict[tuple[str, int], int] = {}
        for first in range(0, len(edges) - 1, DAYS_PER_QUERY):
            days = range(first, min(first + DAYS_PER_QUERY, len(edges) - 1))
            sums = ", ".join(f"SUM(CASE WHEN {at} >= %s AND {at} < %s THEN 1 ELSE 0 END)" for _ in days)
            args: list[Any] = [e for k in days for e in (edges[k], edges[k + 1])]
            sql = (f"SELECT {metric}, {sums} FROM {self._table('events')} WHERE {at} >= %s AND {at} < %s "
                   f"AND {self._live('events')} GROUP BY {metric}")
            for row in self.query(sql, *args, edges[days[0]], edges[days[-1] + 1]):
                for k, n in zip(days, row[1:], strict=True):
                    if n:
                        out[(str(row[0]), k)] = int(n)
        return out

    def slice_ids(self, metric_id: str, lo: datetime, hi: datetime) -> set[str]:
        """Ids of the events held for one metric in [lo, hi)."""
        if not self.has("events", "metric_id", "datetime"):
            return set()
        at = self._col("datetime")
        return {str(r[0]) for r in self.query(
            f"SELECT {self._col('id')} FROM {self._table('events')} WHERE {self._col('metric_id')} = %s "
            f"AND {at} >= %s AND {at} < %s AND {self._live('events')}", metric_id, lo, hi)}

    def events_of(self, profile_ids: Sequence[str]) -> list[tuple[str, str, datetime]]:
        """(id, metric id, datetime) of the events held for these profiles."""
        if not profile_ids or not self.has("events", "profile_id", "metric_id", "datetime"):
            return []
        out = []
        for part in _batches(profile_ids):
            out += self.query(
                f"SELECT {self._col('id')}, {self._col('metric_id')}, {self._col('datetime')} "
                f"FROM {self._table('events')} WHERE {self._in('profile_id', part)} AND {self._live('events')}",
                *part)
        return [(str(i), str(m), d) for i, m, d in out]

    def counts(self, table: str, key: str) -> dict[str, int]:
        """Rows held per value of `key` (members per list)."""
        if not self.has(table, key):
            return {}
        column = self._col(key)
        return {str(k): int(n) for k, n in self.query(
            f"SELECT {column}, COUNT(*) FROM {self._table(table)} WHERE {self._live(table)} GROUP BY {column}")}

    def count(self, table: str) -> int:
        """Rows held."""
        if not self.columns(table):
            return 0
        rows = self.query(f"SELECT COUNT(*) FROM {self._table(table)} WHERE {self._live(table)}")
        return int(rows[0][0]) if rows else 0

    def pairs(self, table: str, first: str, second: str, values: Sequence[str], held_only: bool = True
              ) -> set[tuple[str, str]]:
        """(first, second) of the rows whose `second` is one of `values` (memberships of some profiles)."""
        if not values or not self.has(table, first, second):
            return set()
        live = f" AND {self._live(table)}" if held_only else ""
        out: set[tuple[str, str]] = set()
        for part in _batches(sorted(values)):
            out |= {(str(a), str(b)) for a, b in self.query(
                f"SELECT {self._col(first)}, {self._col(second)} FROM {self._table(table)} "
                f"WHERE {self._in(second, part)}{live}", *part)}
        return out

    def ids(self, table: str, column: str = "id", where: dict[str, Any] | None = None) -> set[str]:
        """Values of `column` over the rows held (optionally where `key = value`)."""
        if not self.has(table, column, *(where or {})):
            return set()
        conditions = [self._live(table)] + [f"{self._col(k)} = %s" for k in where or {}]
        return {str(r[0]) for r in self.query(
            f"SELECT {self._col(column)} FROM {self._table(table)} WHERE {' AND '.join(conditions)}",
            *(where or {}).values())}

    def markers(self, table: str, marker: str) -> dict[str, datetime | None]:
        """id -> change marker (`updated`) of the rows held."""
        if not self.has(table, "id", marker):
            return {}
        return {str(i): m for i, m in self.query(
            f"SELECT {self._col('id')}, {self._col(marker)} FROM {self._table(table)} WHERE {self._live(table)}")}

    def where_in(self, table: str, column: str, values: Iterable[str], select: str = "id") -> set[str]:
        """`select` of the rows held whose `column` is one of `values` (children of deleted parents)."""
        values = sorted(set(values))
        if not values or not self.has(table, column, select):
            return set()
        out: set[str] = set()
        for part in _batches(values):
            out |= {str(r[0]) for r in self.query(
                f"SELECT {self._col(select)} FROM {self._table(table)} "
                f"WHERE {self._in(column, part)} AND {self._live(table)}", *part)}
        return out

    def read_back(self, table: str, keys: Mapping[str, Sequence[str]] | Sequence[str],
                  key_columns: Sequence[str] = ("id",)) -> list[dict[str, Any]]:
        """Whole rows held, as dlt would load them again (JSON columns parsed, dlt's own columns left out).

        keys: ids; or for a two-column key (list_id, profile_id), first value -> second values.
        """
        columns = {n: c for n, c in self.columns(table).items() if not n.startswith("_dlt")}
        if not columns:
            return []
        names = list(columns)
        select = ", ".join(self._col(n) for n in names)
        groups: dict[str | None, Sequence[str]] = (
            {None: keys} if isinstance(keys, (list, tuple, set, frozenset)) else dict(keys))  # type: ignore[arg-type]
        rows: list[tuple[Any, ...]] = []
        for first, values in groups.items():
            column = key_columns[-1]
            prefix = f"{self._col(key_columns[0])} = %s AND " if first is not None else ""
            for part in _batches(sorted(values)):
                args = ([first] if first is not None else []) + list(part)
                rows += self.query(f"SELECT {select} FROM {self._table(table)} WHERE {prefix}"
                                   f"{self._in(column, part)} AND {self._live(table)}", *args)
        json_columns = {n for n, c in columns.items() if c.get("data_type") == "json"}
        out = []
        for row in rows:
            record = dict(zip(names, row, strict=True))
            for name in json_columns:
                if isinstance(record[name], (str, bytes)):
                    record[name] = orjson.loads(record[name])
            out.append({k: v for k, v in record.items() if v is not None})
        return out

    def loaded_as_arrow(self, table: str) -> bool:
        """Whether the table's rows came as Arrow tables (no row key of dlt's normalizer): rows loaded into it
        again must come the same way, or dlt would add columns existing rows cannot fill."""
        return bool(self.columns(table)) and "_dlt_id" not in self.columns(table)

    def as_arrow(self, table: str, rows: list[dict[str, Any]]) -> pa.Table:
        """Rows read back, as an Arrow table typed like the table (JSON columns as JSON text)."""
        columns = {n: c for n, c in self.columns(table).items() if not n.startswith("_dlt")}
        fields = [pa.field(n, _ARROW_TYPES.get(c["data_type"], pa.string())) for n, c in columns.items()]
        data = []
        for row in rows:
            data.append({n: orjson.dumps(v).decode() if c["data_type"] == "json" and v is not None else v
                         for n, c in columns.items() for v in (row.get(n),)})
        return pa.Table.from_pylist(data, schema=pa.schema(fields))

    # --- hard deletions ---------------------------------------------------------------------------

    def delete(self, table: str, keys: Mapping[str, Sequence[str]] | Sequence[str],
               key_columns: Sequence[str] = ("id",)) -> int:
        """Removes rows for good (privacy); returns how many keys were asked for."""
        if not self.columns(table):
            return 0
        groups: dict[str | None, Sequence[str]] = (
            {None: keys} if isinstance(keys, (list, tuple, set, frozenset)) else dict(keys))  # type: ignore[arg-type]
        asked = 0
        with self._client() as client:
            for first, values in groups.items():
                prefix = f"{self._col(key_columns[0])} = %s AND " if first is not None else ""
                for part in _batches(sorted(values)):
                    args = ([first] if first is not None else []) + list(part)
                    client.execute_sql(f"DELETE FROM {self._table(table)} WHERE {prefix}"
                                       f"{self._in(key_columns[-1], part)}", *args)
                    asked += len(part)
        return asked


def _batches(values: Sequence[Any]) -> Iterator[Sequence[Any]]:
    for start in range(0, len(values), BATCH):
        yield values[start:start + BATCH]


def grouped(pairs: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
    """(parent, child) pairs -> parent -> children, for two-column keys."""
    out: dict[str, list[str]] = defaultdict(list)
    for parent, child in pairs:
        out[parent].append(child)
    return dict(out)
