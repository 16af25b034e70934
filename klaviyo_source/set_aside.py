"""Records that do not fit their table: kept whole in one table an operator can read and replay.

A record Klaviyo sent twice the same way with a value its column cannot hold (a string `timestamp`, a null
`id`, a cursor that is no datetime) never blocks its table and is never lost: the rest of its page loads,
the cursors move on, and the record goes to `set_aside_records`, one row per record and table:

    key           table/parent/id of the record (a digest of its JSON when it has no id): merged on it,
                  so a record seen again on a later run is one row that names the latest load
    table_name    the table it belongs in;  endpoint: the Klaviyo path it came from;  parent_id: the list,
                  segment, flow, ... it was read below (child tables)
    record_id     its `id` as sent (null when that is what is wrong)
    field, value, reason   the first field that did not fit, its value as JSON text, and why
    raw           the whole record as JSON text, with the digits Klaviyo sent
    set_aside_at  when;  _dlt_load_id: the load that set it aside

`replay(pipeline)` (the command line's `--replay-set-aside`) loads the records that fit now (after an upgrade
of this source, or after an operator corrected `raw` with an UPDATE) into their tables, merged on their keys,
and removes them from this one; the others stay, with the reason they still do not fit.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

import dlt

from klaviyo_source.coerce import json_text
from klaviyo_source.endpoints import BY_TABLE
from klaviyo_source.rows import SHAPES, Misfit, parse_exact, record_text

log = logging.getLogger("klaviyo_source")

TABLE = "set_aside_records"

COLUMNS: dict[str, dict[str, Any]] = {
    "key": {"data_type": "text", "nullable": False},
    "table_name": {"data_type": "text", "nullable": False},
    "endpoint": {"data_type": "text"},
    "parent_id": {"data_type": "text"},
    "record_id": {"data_type": "text"},
    "field": {"data_type": "text"},
    "value": {"data_type": "text"},
    "reason": {"data_type": "text", "nullable": False},
    "raw": {"data_type": "text", "nullable": False},
    "set_aside_at": {"data_type": "timestamp", "nullable": False},
    "replayed": {"data_type": "bool", "hard_delete": True},  # set by replay(): the row is removed
}
# `raw` and `value` are JSON text kept as text: dlt would parse a JSON column again and lose digits.


def record_key(table: str, parent_id: str | None, record_id: str | None, raw: str) -> str:
    ident = record_id if record_id is not None else "sha256:" + hashlib.sha256(raw.encode()).hexdigest()[:32]
    return "/".join((table, parent_id or "", ident))


def rows(misfits: Iterable[tuple[str, Misfit]], endpoint: str, parent_id: str | None) -> list[dict[str, Any]]:
    now = datetime.now(timezone.utc)
    out = []
    for table, misfit in misfits:
        raw = record_text(misfit.record)
        value = json_text(misfit.value) if misfit.field else None
        out.append({
            "key": record_key(table, parent_id, misfit.record_id, raw),
            "table_name": table,
            "endpoint": endpoint,
            "parent_id": parent_id,
            "record_id": misfit.record_id,
            "field": misfit.field or None,
            "value": value.decode() if value is not None else None,
            "reason": misfit.describe(),
            "raw": raw,
            "set_aside_at": now,
        })
    return out


def record_ids(rows: Sequence[Mapping[str, Any]], table: str) -> list[str] | None:
    """The ids of `table`'s records among `rows` when they are rows of this table (see `rows`), else None.

    A record set aside for one field that does not fit keeps its id, and what lies below it is read all the
    same: a flow action with a malformed `created` still has its messages, which fit their own table.
    """
    if not rows or "set_aside_at" not in rows[0]:
        return None
    return [row["record_id"] for row in rows if row["table_name"] == table and row["record_id"] is not None]


def items(misfits: Sequence[tuple[str, Misfit]], endpoint: str, parent_id: str | None) -> Iterator[Any]:
    """The rows for `set_aside_records`, marked for dlt, after one warning per record."""
    for _table, misfit in misfits:
        log.warning("%s: set aside in table %s (the rest of the page loads): %s", endpoint, TABLE, misfit.describe())
    yield dlt.mark.with_table_name(rows(misfits, endpoint, parent_id), TABLE)  # resources.py declares it


def replay(pipeline: dlt.Pipeline, tables: Sequence[str] | None = None) -> tuple[dict[str, int], dict[str, int]]:
    """Loads the set-aside records that fit now into their tables; returns (replayed, still set aside) per table."""
    if not pipeline.schema_names:
        pipeline.sync_destination()  # a machine that never ran this pipeline: its schema is in the destination
    if not pipeline.schema_names or TABLE not in pipeline.default_schema.tables:
        return {}, {}
    names = [c for c in COLUMNS if c != "replayed"]
    with pipeline.sql_client() as client:
        found = client.execute_sql(f"select {', '.join(names)} from {client.make_qualified_table_name(TABLE)}")
    rows = [dict(zip(names, row, strict=True)) for row in found or () if not tables or row[1] in tables]
    by_table: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_table.setdefault(row["table_name"], []).append(row)
    resources, replayed, remaining, done = [], {}, {}, []
    for table, kept in by_table.items():
        shape = SHAPES[table]
        records = [parse_exact(row["raw"].encode()) for row in kept]
        endpoint = BY_TABLE.get(table)
        parent_key = endpoint.parent_key if endpoint else None
        extra = {parent_key: [row["parent_id"] for row in kept]} if parent_key else None
        converted, misfits = shape.convert(records, extra)
        unfit = {m.index for m in misfits}
        done += [{**row, "replayed": True} for i, row in enumerate(kept) if i not in unfit]
        replayed[table], remaining[table] = converted.num_rows, len(unfit)
        if converted.num_rows:
            key = list(endpoint.primary_key) if endpoint else ["id"]
            hints: Any = shape.hints()  # plain dicts of dlt's column hints (its TypedDict wants literal types)
            resources.append(dlt.resource([converted], name=table, write_disposition="merge", primary_key=key,
                                          columns=hints))
    if done:
        columns: Any = COLUMNS
        resources.append(dlt.resource(done, name=TABLE, write_disposition="merge", primary_key="key", columns=columns))
        pipeline.run(resources, loader_file_format="parquet").raise_on_failed_jobs()
    for table, n in replayed.items():
        log.info("%s: %d set-aside record(s) replayed, %d still do not fit", table, n, remaining[table])
    return replayed, {t: n for t, n in remaining.items() if n}


def counts(pipeline: dlt.Pipeline, since: datetime) -> dict[str, int]:
    """Records set aside per table by the runs that started at `since` or later (for a run summary)."""
    if not pipeline.schema_names or TABLE not in pipeline.default_schema.tables:
        return {}  # nothing was ever set aside
    with pipeline.sql_client() as client:
        result = client.execute_sql(
            f"select table_name, count(*) from {client.make_qualified_table_name(TABLE)} "
            "where set_aside_at >= %s group by table_name order by table_name", since)
    return {str(table): int(n) for table, n in result or ()}
