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

`replay(pipeline)` loads the rows that fit now (after an upgrade, or after an operator corrected `raw`)
into their tables and removes them from this one.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime, timezone
from typing import Any

import dlt

from klaviyo_source.coerce import json_text
from klaviyo_source.rows import Misfit, record_text

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


def items(misfits: Sequence[tuple[str, Misfit]], endpoint: str, parent_id: str | None) -> Iterator[Any]:
    """The rows for `set_aside_records`, marked for dlt, after one warning per record."""
    for _table, misfit in misfits:
        log.warning("%s: set aside in table %s (the rest of the page loads): %s", endpoint, TABLE, misfit.describe())
    yield dlt.mark.with_table_name(rows(misfits, endpoint, parent_id), TABLE)  # resources.py declares it


def counts(pipeline: dlt.Pipeline, since: datetime) -> dict[str, int]:
    """Records set aside per table by the runs that started at `since` or later (for a run summary)."""
    if TABLE not in pipeline.default_schema.tables:
        return {}  # nothing was ever set aside
    with pipeline.sql_client() as client:
        result = client.execute_sql(
            f"select table_name, count(*) from {client.make_qualified_table_name(TABLE)} "
            "where set_aside_at >= %s group by table_name order by table_name", since)
    return {str(table): int(n) for table, n in result or ()}
