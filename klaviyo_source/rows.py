"""JSON:API resources -> table rows: `id`, attributes as columns, to-one relationships as `<name>_id`.

Work is per page, not per item. Small tables become dicts (dlt types them, JSON hints keep free-form
objects whole). The large tables (events, profiles, memberships) become Arrow tables with an explicit
schema: dlt's item normalizer is the CPU ceiling of a big load, and Arrow pages skip it entirely.

Pages of the Arrow tables are parsed lazily with pysimdjson (`parse_lazy`): fields are read from the
parsed tape as needed and JSON columns are copied out as minified text, so no dict is built for a free-form
object only to be serialized again. Readers, page checks and window code accept both representations.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import pyarrow as pa
import simdjson

from klaviyo_source.datetimes import UTC_TS, timestamps

log = logging.getLogger("klaviyo_source")

Resource = Mapping[str, Any]  # a dict (orjson) or a simdjson.Object (parse_lazy)
OBJECT = (dict, simdjson.Object)
ARRAY = (list, simdjson.Array)
LAZY = (simdjson.Object, simdjson.Array)

# Pages become Arrow on many worker threads. Arrow's default allocator (mimalloc) keeps freed memory in
# per-thread heaps: measured +110 MB of resident memory after 100k events on 8 threads, none of it in use.
# The system allocator hands it back, at no measurable cost in speed for these small, short-lived arrays.
POOL = pa.system_memory_pool()


def parse_lazy(body: bytes) -> Any:
    """A page as lazy pysimdjson proxies; raises ValueError if it is not JSON.

    A fresh parser per page: a parser cannot parse again while proxies of its last document live (they
    keep it alive, so a page outlives the call safely), and it must never be shared between threads.
    """
    try:
        return simdjson.Parser().parse(body)
    except (ValueError, RuntimeError):
        # simdjson refuses integers beyond 64 bits (RuntimeError below int64), which orjson reads as floats:
        # such a page is parsed to dicts instead, and a body that is not JSON is rejected by orjson.
        return orjson.loads(body)


def plain(value: Any) -> Any:
    """A lazily parsed value as the dicts and lists orjson would have built; other values as they are."""
    if isinstance(value, simdjson.Object):
        return value.as_dict()
    return value.as_list() if isinstance(value, simdjson.Array) else value


def flat_row(resource: Resource) -> dict[str, Any]:
    """One resource as a row for dlt: id, attributes, and `<relationship>_id` for to-one relationships.

    Rows are for pages parsed to dicts (the tables without an Arrow shape), never lazily parsed ones.
    """
    row: dict[str, Any] = {"id": resource.get("id")}
    row.update(resource.get("attributes") or {})
    for name, rel in (resource.get("relationships") or {}).items():
        target = rel.get("data") if isinstance(rel, dict) else None
        if isinstance(target, dict):
            row[f"{name.replace('-', '_')}_id"] = target.get("id")
    return row


def flat_rows(data: Iterable[Resource], extra: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    if extra:
        return [{**flat_row(r), **extra} for r in data]
    return [flat_row(r) for r in data]


def _json(value: Any) -> str | bytes | None:
    """JSON text (Arrow takes UTF-8 bytes as a string); a lazily parsed object is copied out minified."""
    if value is None:
        return None
    return value.mini if isinstance(value, LAZY) else orjson.dumps(value)


def _number(value: Any) -> float | None:
    """Klaviyo sends latitude/longitude as numbers or as strings."""
    try:
        return None if value in (None, "") else float(value)
    except (TypeError, ValueError):
        return None


@dataclass(frozen=True)
class Column:
    """A column of an Arrow table: name, Arrow type, how to read it from a resource, and its dlt hint."""

    name: str
    type: pa.DataType
    read: Callable[[Resource], Any]
    convert: Callable[[Any], Any] | None = None
    dlt_type: str | None = None  # "json" for JSON text columns; others follow the Arrow type
    key: bool = False  # part of the primary key: never null


STRING = pa.string()


def attr(name: str, arrow_type: pa.DataType = STRING, convert: Callable[[Any], Any] | None = None) -> Column:
    return Column(name, arrow_type, lambda r: r["attributes"].get(name), convert)


def json_attr(name: str) -> Column:
    return Column(name, pa.string(), lambda r: r["attributes"].get(name), _json, "json")


def nested(
    parent: str, name: str, arrow_type: pa.DataType = STRING, convert: Callable[[Any], Any] | None = None
) -> Column:
    return Column(f"{parent}__{name}", arrow_type, lambda r: (r["attributes"].get(parent) or {}).get(name), convert)


def related(rel: str) -> Column:
    def read(resource: Resource) -> Any:
        target = ((resource.get("relationships") or {}).get(rel) or {}).get("data")
        return target.get("id") if isinstance(target, OBJECT) else None

    return Column(f"{rel.replace('-', '_')}_id", pa.string(), read)


ID = Column("id", pa.string(), lambda r: r["id"], key=True)


class ArrowShape:
    """An explicit Arrow schema for a large table and the code that fills it from a page of resources."""

    def __init__(self, table: str, columns: list[Column], known_attributes: Iterable[str]) -> None:
        self.table = table
        self.columns = columns
        self.schema = pa.schema(
            [pa.field(c.name, c.type, nullable=not c.key) for c in columns]
        )
        self.known = frozenset(known_attributes)
        self._warned: set[str] = set()

    def hints(self) -> dict[str, dict[str, Any]]:
        """dlt column hints: JSON text columns load as JSON, the key is not null."""
        return {c.name: {"data_type": c.dlt_type} for c in self.columns if c.dlt_type}

    def table_of(self, data: Sequence[Resource], extra: dict[str, Any] | None = None) -> pa.Table:
        self._check_attributes(data)
        arrays = []
        for column in self.columns:
            values = [column.read(r) for r in data]
            if column.convert is not None:
                values = [column.convert(v) for v in values]
            if column.type == UTC_TS:
                arrays.append(timestamps(values))
            else:
                arrays.append(pa.array(values, column.type, memory_pool=POOL))
        table = pa.Table.from_arrays(arrays, schema=self.schema)
        for name, value in (extra or {}).items():
            column = pa.array([value] * len(data), pa.string(), memory_pool=POOL)
            table = table.append_column(pa.field(name, pa.string(), nullable=False), column)
        return table

    def _check_attributes(self, data: Sequence[Resource]) -> None:
        """An attribute Klaviyo added in a later revision is reported once, not silently dropped."""
        if not data:
            return
        unknown = set(data[0].get("attributes") or ()) - self.known - self._warned
        if unknown:
            self._warned |= unknown
            log.warning(
                "%s: Klaviyo sent attribute(s) %s that this source does not load yet", self.table, sorted(unknown)
            )


EVENTS = ArrowShape(
    "events",
    [
        ID,
        attr("datetime", UTC_TS),
        attr("timestamp", pa.int64()),
        attr("uuid"),
        json_attr("event_properties"),
        related("profile"),
        related("metric"),
    ],
    ["datetime", "timestamp", "uuid", "event_properties"],
)

_PROFILE_STRINGS = (
    "email", "phone_number", "external_id", "first_name", "last_name", "organization", "locale", "title", "image",
)
_LOCATION_STRINGS = ("address1", "address2", "city", "country", "region", "zip", "timezone", "ip")

PROFILES = ArrowShape(
    "profiles",
    [
        ID,
        *(attr(name) for name in _PROFILE_STRINGS),
        attr("created", UTC_TS),
        attr("updated", UTC_TS),
        attr("last_event_date", UTC_TS),
        *(nested("location", name) for name in _LOCATION_STRINGS),
        nested("location", "latitude", pa.float64(), _number),
        nested("location", "longitude", pa.float64(), _number),
        json_attr("properties"),
        json_attr("subscriptions"),
        json_attr("predictive_analytics"),
    ],
    [*_PROFILE_STRINGS, "created", "updated", "last_event_date", "location", "properties", "subscriptions",
     "predictive_analytics"],
)


def membership_shape(table: str) -> ArrowShape:
    """(profile_id, joined_group_at); the list or segment id is appended per page."""
    return ArrowShape(
        table,
        [Column("profile_id", pa.string(), lambda r: r["id"], key=True), attr("joined_group_at", UTC_TS)],
        ["joined_group_at"],
    )


ARROW_SHAPES: dict[str, ArrowShape] = {
    "events": EVENTS,
    "profiles": PROFILES,
    "list_members": membership_shape("list_members"),
    "segment_members": membership_shape("segment_members"),
}
