"""Campaigns and flows changing below an unchanged parent: edited messages and actions.

Klaviyo lets a campaign message, a flow action or a flow message be edited on its own; whether that moves
its campaign's `updated_at` or its flow's `updated` is not documented (API-NOTES §5.1), and a connector that
re-reads children only below changed parents then never sees the edit. `edit_children(table, ids | count)`
makes exactly that change: the child's own `updated`/`updated_at` moves to now and a visible attribute
changes, while its parent stays as it was. Children are deleted on their own with `delete` (store.py).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any

from klaviyo_source.sandbox.data import Row, iso
from klaviyo_source.sandbox.model import StoreError

if TYPE_CHECKING:
    from klaviyo_source.sandbox.store import Store

# child table -> its change-marker attribute
CHILDREN = {"campaign_messages": "updated_at", "flow_actions": "updated", "flow_messages": "updated"}


def operations(store: Store) -> dict[str, Callable[..., dict[str, Any]]]:
    return {"edit_children": partial(edit_children, store)}


def edit_children(store: Store, now: int, table: str, ids: list[str] | None = None, count: int | None = None
                  ) -> dict[str, Any]:
    """Edit children of campaigns or flows without touching their parents."""
    if table not in CHILDREN:
        raise StoreError(400, "invalid", f"table must be one of {', '.join(CHILDREN)}, got {table!r}.")
    coll = store.rows(table)
    chosen = store.pick(coll, ids, count)
    marker = CHILDREN[table]

    def edit() -> None:
        for i in chosen:
            row = coll.rows[i]
            row.vals[marker] = now
            row.attrs[marker] = iso(now)
            _change(table, row, now)

    coll.changed(chosen, edit)
    return {"table": table, "ids": [coll.ident(i) for i in chosen], marker: iso(now)}


def _change(table: str, row: Row, now: int) -> None:
    """One visible edit per kind of child: a subject, a body, a delay, a status."""
    definition = row.attrs["definition"]
    stamp = f"(edited {iso(now)})"
    if table == "campaign_messages":
        content = definition.get("content") or {}
        key = "subject" if "subject" in content else "body"
        content[key] = f"{str(content.get(key) or '').split(' (edited ')[0]} {stamp}"
    elif table == "flow_messages":
        key = "subject_line" if "subject_line" in definition else "body"
        definition[key] = f"{str(definition.get(key) or '').split(' (edited ')[0]} {stamp}"
    else:
        data = definition.get("data") or {}
        if "value" in data:
            data["value"] = data["value"] % 4 + 1
        else:
            data["status"] = "manual" if data.get("status") == "live" else "live"
            row.vals["status"] = data["status"]
