"""JSON:API resources -> Arrow tables: `id`, attributes as columns, to-one relationships as `<name>_id`.

Every table's columns and types are declared up front in `column_types.json` (generated from Klaviyo's
OpenAPI spec by `typegen.py`), so a column's type never depends on which value came first, and every table
takes the same path: a page becomes one Arrow table with an explicit schema (dlt's row normalizer, the CPU
ceiling of a big load, is skipped). Loose forms of a declared type convert (`coerce.py`); a record holding a
value that still does not fit is left out of the table and reported as a `Misfit`, so the caller can set it
aside whole while the rest of its page loads.

Pages are parsed lazily with pysimdjson (`parse_lazy`): fields are read from the parsed tape as needed and
JSON columns are copied out as text, so no dict is built for a free-form object only to be serialized again.
A page pysimdjson cannot read exactly (integers beyond 64 bits) is parsed with every number kept as sent.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import simdjson

from klaviyo_source import coerce
from klaviyo_source.coerce import DLT_TYPES, EXPECTED, LAZY, describe, json_text, plain
from klaviyo_source.datetimes import UTC_TS
from klaviyo_source.endpoints import BY_TABLE, Mode

log = logging.getLogger("klaviyo_source")

__all__ = ["ARRAY", "LAZY", "OBJECT", "SHAPES", "UTC_TS", "ArrowShape", "Misfit", "parse_lazy", "plain"]

Resource = Mapping[str, Any]  # a dict (exact parse) or a simdjson.Object (parse_lazy)
OBJECT = (dict, simdjson.Object)
ARRAY = (list, simdjson.Array)
MISSING: Any = object()

# Pages become Arrow on many worker threads. Arrow's default allocator (mimalloc) keeps freed memory in
# per-thread heaps: measured +110 MB of resident memory after 100k events on 8 threads, none of it in use.
# The system allocator hands it back, at no measurable cost in speed for these small, short-lived arrays.
POOL = pa.system_memory_pool()
pa.set_memory_pool(POOL)

COLUMN_TYPES = json.loads(Path(__file__).with_name("column_types.json").read_text())


def _int64_or_exact(text: str) -> int | Decimal:
    value = int(text)
    return value if coerce.INT64[0] <= value <= coerce.INT64[1] else Decimal(text)


def parse_exact(body: bytes) -> Any:
    """A page as dicts with every number as sent: integers of any size and decimals as Decimal."""
    return json.loads(body, parse_float=Decimal, parse_int=_int64_or_exact)


def parse_lazy(body: bytes) -> Any:
    """A page as lazy pysimdjson proxies; raises ValueError if it is not JSON.

    A fresh parser per page: a parser cannot parse again while proxies of its last document live (they
    keep it alive, so a page outlives the call safely), and it must never be shared between threads.
    """
    try:
        return simdjson.Parser().parse(body)
    except (ValueError, RuntimeError):
        # pysimdjson refuses integers beyond 64 bits (RuntimeError below int64); such a page, or a body
        # that is not JSON (then rejected with a ValueError), goes through the exact parser.
        return parse_exact(body)


def record_text(record: Any) -> str:
    """A record as JSON text with the digits Klaviyo sent (for records set aside)."""
    return (json_text(record) or b"null").decode()


@dataclass(frozen=True)
class Misfit:
    """A record left out of its table: where it is on the page, the first field that did not fit, and why."""

    index: int
    record: Any
    field: str
    value: Any
    reason: str  # e.g. "is str 'yesterday', expected an ISO 8601 datetime"
    cursor: bool = False  # the field is the cursor of windowed reads

    @property
    def record_id(self) -> str | None:
        ident = self.record.get("id") if isinstance(self.record, OBJECT) else None
        return ident if isinstance(ident, str) and ident else None

    def describe(self) -> str:
        named = f" (id {self.record_id})" if self.record_id else ""
        what = f"{'cursor field' if self.cursor else 'field'} '{self.field}' " if self.field else ""
        return f"record {self.index}{named} of the page: {what}{self.reason}"

    def signature(self) -> tuple[int, str, str]:
        return self.index, self.field, self.reason


def _reader(source: str) -> Callable[[Resource], Any]:
    """How a column is read from a resource (its `source` in column_types.json)."""
    parts = source.split(".")
    if parts == ["id"]:
        return lambda r: r["id"]
    if parts[0] == "attributes" and len(parts) == 2:
        name = parts[1]
        return lambda r: r["attributes"].get(name)
    if parts[0] == "attributes" and len(parts) == 3:
        parent, name = parts[1], parts[2]

        def nested(r: Resource) -> Any:
            holder = r["attributes"].get(parent)
            if holder is None:
                return None
            return holder.get(name) if isinstance(holder, OBJECT) else _NotAnObject(parent, holder)

        return nested
    if parts[0] == "relationships":
        rel = parts[1]

        def related(r: Resource) -> Any:
            target = ((r.get("relationships") or {}).get(rel) or {}).get("data")
            return target.get("id") if isinstance(target, OBJECT) else None

        return related
    raise ValueError(f"unknown column source {source!r}")


@dataclass(frozen=True)
class _NotAnObject:
    """A flattened object (profiles' `location`) that came as something else."""

    name: str
    value: Any


@dataclass(frozen=True)
class Column:
    name: str
    kind: str  # string | integer | number | boolean | date-time | json
    source: str  # id | attributes.<name>[.<name>] | relationships.<name> | parent

    @property
    def arrow_type(self) -> pa.DataType:
        return coerce.ARROW_TYPES[self.kind]


class ArrowShape:
    """A table's declared columns, and the code that turns a page of resources into an Arrow table."""

    def __init__(self, table: str, columns: Iterable[Column], required: Iterable[str] = ()) -> None:
        self.table = table
        self.columns = list(columns)
        self.read = [(c, _reader(c.source)) for c in self.columns if c.source != "parent"]
        self.key = self.columns[0].name  # id, or profile_id for memberships
        self.required = {self.key, *required}  # never null: the key, and the cursor of windowed reads
        self.schema = pa.schema([pa.field(c.name, c.arrow_type, nullable=c.name not in self.required)
                                 for c in self.columns if c.source != "parent"])
        self.known = frozenset(c.source.split(".")[1] for c in self.columns if c.source.startswith("attributes."))
        self._warned: set[str] = set()

    def hints(self) -> dict[str, dict[str, Any]]:
        """dlt column hints for every declared column, so each exists with its type from the first load."""
        return {c.name: {"data_type": DLT_TYPES[c.kind], "nullable": c.name not in self.required}
                for c in self.columns}

    def table_of(self, records: Sequence[Resource], extra: Mapping[str, Any] | None = None) -> pa.Table:
        """The Arrow table of records that all fit (ValueError naming the first misfit otherwise)."""
        table, misfits = self.convert(records, extra)
        if misfits:
            raise ValueError(misfits[0].describe())
        return table

    def convert(self, records: Sequence[Any], extra: Mapping[str, Any] | None = None,
                needs_type: bool = False) -> tuple[pa.Table, list[Misfit]]:
        """(the Arrow table of the records that fit, the records that do not, in page order).

        `extra` adds columns: a value for every row (the parent's id) or a list with one value per record.
        """
        misfits: dict[int, Misfit] = {}
        for index, record in enumerate(records):
            misfit = self._structure(index, record, needs_type)
            if misfit is not None:
                misfits[index] = misfit
        at = [i for i in range(len(records)) if i not in misfits]  # page index of each readable record
        good = [records[i] for i in at] if misfits else records
        arrays = []
        for column, read in self.read:
            try:
                values = [read(r) for r in good]
            except (AttributeError, KeyError, TypeError):
                values = [self._read_one(read, r) for r in good]
            array, unfit = coerce.column(column.kind, values)
            if column.name in self.required and array.null_count > len(unfit):
                nulls = array.is_null().to_pylist()
                unfit = {**{j: values[j] for j, null in enumerate(nulls) if null}, **unfit}
            for j in sorted(unfit):
                if at[j] not in misfits:
                    misfits[at[j]] = self._misfit(at[j], good[j], column, unfit[j])
            arrays.append(array)
        table = self._add_unknown(pa.Table.from_arrays(arrays, schema=self.schema), good)
        if len(misfits) > len(records) - len(good):
            table = table.filter(pa.array([i not in misfits for i in at], pa.bool_()))
        kept = [i for i in at if i not in misfits]
        for name, value in (extra or {}).items():
            values = [value[i] for i in kept] if isinstance(value, list) else [value] * len(kept)
            position = table.schema.get_field_index(name)
            array = pa.array(values, pa.string())
            if position >= 0 and array.null_count:  # unknown here: keep what the record itself says
                array = pc.coalesce(array, table.column(position).combine_chunks())
            field = pa.field(name, pa.string(), nullable=array.null_count > 0)
            table = table.set_column(position, field, array) if position >= 0 else table.append_column(field, array)
        return table, [misfits[i] for i in sorted(misfits)]

    # --- records that do not fit ------------------------------------------------------------------

    def _structure(self, index: int, record: Any, needs_type: bool) -> Misfit | None:
        """What makes a record unreadable as a resource: not an object, no string id, no attributes."""
        if not isinstance(record, OBJECT):
            return Misfit(index, record, "", record, f"is {describe(record)}, expected an object")
        for field, expected in (("id", "a string"), ("type", "a string"), ("attributes", "an object")):
            if (field == "type" and not needs_type) or (field == "attributes" and not self.known):
                continue  # attributions have no attributes at all
            value = record.get(field, MISSING)
            if value is MISSING:
                return Misfit(index, record, field, None, "is missing")
            fits = isinstance(value, OBJECT) if field == "attributes" else isinstance(value, str) and value != ""
            if not fits:
                return Misfit(index, record, field, value, f"is {describe(value)}, expected {expected}")
        return None

    @staticmethod
    def _read_one(read: Callable[[Resource], Any], record: Resource) -> Any:
        try:
            return read(record)
        except (AttributeError, KeyError, TypeError):
            return None

    def _misfit(self, index: int, record: Resource, column: Column, value: Any) -> Misfit:
        cursor = column.name in self.required and column.name != self.key
        if isinstance(value, _NotAnObject):
            return Misfit(index, record, value.name, value.value, f"is {describe(value.value)}, expected an object")
        name = column.source.split(".")[-1]
        holder = record.get("attributes") if column.source.startswith("attributes.") else record
        if column.source.count(".") <= 1 and isinstance(holder, OBJECT) and name not in holder:
            return Misfit(index, record, column.name, None, "is missing", cursor)
        return Misfit(index, record, column.name, value, f"is {describe(value)}, expected {EXPECTED[column.kind]}",
                      cursor)

    # --- attributes this source does not declare ---------------------------------------------------

    def _add_unknown(self, table: pa.Table, records: Sequence[Resource]) -> pa.Table:
        """An attribute the spec does not declare (a later revision's) loads as text, and is reported once."""
        unknown: dict[str, None] = {}
        n_known = len(self.known)
        for record in records:
            attributes = record.get("attributes") or {}
            if len(attributes) != n_known:
                unknown.update((k, None) for k in attributes if k not in self.known)
        for name in unknown:
            if name not in self._warned:
                self._warned.add(name)
                log.warning("%s: Klaviyo sent attribute %r, which the pinned revision does not declare; it loads "
                            "as text", self.table, name)
            values = [(r.get("attributes") or {}).get(name) for r in records]
            texts = [v if v is None or isinstance(v, str) else json_text(v) for v in values]
            if name not in table.schema.names:
                table = table.append_column(pa.field(name, pa.string()), pa.array(texts, pa.string()))
        return table


def _required(table: str) -> tuple[str, ...]:
    endpoint = BY_TABLE.get(table)
    return (endpoint.cursor,) if endpoint and endpoint.mode is Mode.WINDOW and endpoint.cursor else ()


SHAPES: dict[str, ArrowShape] = {
    table: ArrowShape(table, [Column(*c) for c in columns], _required(table))
    for table, columns in COLUMN_TYPES["tables"].items()
}
EVENTS = SHAPES["events"]
PROFILES = SHAPES["profiles"]
