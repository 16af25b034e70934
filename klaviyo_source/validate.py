"""Checks every page while it becomes Arrow tables, so a bad record is neither loaded wrong nor lost.

A record without a string id cannot be merged (it would be dropped or doubled), a cursor that is not a
datetime cannot be placed in a window (it would be skipped), and a declared column whose value does not
convert would load wrong. Such a record is a `Misfit`. The client asks once more for a page holding one (a
glitch in transit or on Klaviyo's side usually clears); if the same records fail the same way twice, the
page is taken as it is: its other records load, its cursor moves on, and the misfits are set aside whole
in the table `set_aside_records` (or, with `strict`, the run fails naming endpoint, record, field and problem).

Free-form objects (event properties, profile properties, ...) are JSON columns and are never type-checked:
a property that is a number in one event and a string in the next loads as it came.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from itertools import islice
from typing import Any

import pyarrow as pa

from klaviyo_source.coerce import describe
from klaviyo_source.datetimes import parse_datetime
from klaviyo_source.endpoints import Endpoint
from klaviyo_source.rows import ARRAY, OBJECT, SHAPES, ArrowShape, Misfit

__all__ = ["CheckedPage", "Cut", "InvalidPage", "Misfit", "PageCheck"]

# Given the cursor of a page's last record, the cursor from which its records belong to another window.
Cut = Callable[[datetime], datetime]


class InvalidPage(ValueError):
    """A page that is not a list of records at all; the message says what it is instead."""


@dataclass
class CheckedPage:
    """A page as tables: the records that fit, related records sent along, and the misfits of both."""

    table: pa.Table
    included: dict[str, pa.Table] = field(default_factory=dict)
    misfits: list[tuple[str, Misfit]] = field(default_factory=list)  # (table, misfit)
    kind: str | None = None  # JSON:API type of the records, when related records come along (their parent)
    reached: tuple[datetime, datetime] | None = None  # with a cut: the page's last cursor, and where it cut

    def signature(self) -> tuple[Any, ...]:
        """Equal for two answers that failed the same way (the same records, fields and problems)."""
        return tuple((table, m.signature()) for table, m in self.misfits)

    def describe(self) -> str:
        first = self.misfits[0][1].describe()
        more = len(self.misfits) - 1
        return f"{first}{f' (and {more} more record(s))' if more else ''}"


class PageCheck:
    """Turns one endpoint's JSON:API documents into checked tables."""

    def __init__(
        self, endpoint: Endpoint, included: Mapping[str, str] | None = None, shape: ArrowShape | None = None
    ) -> None:
        self.endpoint = endpoint
        self.shape = shape or SHAPES[endpoint.table]  # a sparse fieldset's reads have a shape of their own
        # related records loaded with the page (a run may leave some out: event_attributions=False)
        self.included = dict(endpoint.included if included is None else included)
        self.needs_type = bool(self.included)  # related records are found by their parent's (type, id)
        self._cursor = next((read for column, read in self.shape.read if column.name == endpoint.cursor), None)

    def __call__(self, document: Any, parent_id: str | None = None, cut: Cut | None = None) -> CheckedPage:
        """`cut`: the records from the one it names on are left out before they are converted (see `_before`)."""
        data = document["data"]
        if not isinstance(data, ARRAY):
            raise InvalidPage(f"'data' is {describe(data)}, expected a list of records")
        reached = None
        whole = len(data)
        if cut is not None and self._cursor is not None and whole:
            data, reached = self._before(data, cut)
        ep = self.endpoint
        extra = {ep.parent_key: parent_id} if ep.parent_key and parent_id is not None else None
        table, misfits = self.shape.convert(data, extra, self.needs_type)
        page = CheckedPage(table, misfits=[(ep.table, m) for m in misfits], reached=reached)
        if self.included:
            page.kind = next((str(r["type"]) for r in data if isinstance(r, OBJECT) and isinstance(r.get("type"), str)),
                             None)
            self._included(data, document, page, len(data) < whole)
        return page

    def _before(self, data: Any, cut: Cut) -> tuple[Any, tuple[datetime, datetime] | None]:
        """The records of a page sorted on the cursor that come before `cut(last cursor)`, and (last cursor, cut).

        A window split while its chain reads gets a page that runs past the split: those records belong to the
        chain that took the rest, which reads them too. Converting them only to filter them out cost a fifth
        of the conversion of a first load of events (254k records converted for 199k). Found by bisection, a
        few cursors read; where one does not read as a datetime, the page is converted whole (its misfits are
        set aside as usual) and the caller's filter drops what lies past the split.
        """
        last = self._instant(data[len(data) - 1])
        if last is None:
            return data, None
        end = cut(last)
        if last < end:
            return data, (last, end)
        low, high = 0, len(data) - 1  # data[high] lies past the split
        while low < high:
            middle = (low + high) // 2
            value = self._instant(data[middle])
            if value is None:
                return data, (last, end)
            if value < end:
                low = middle + 1
            else:
                high = middle
        return list(islice(data, low)), (last, end)

    def _instant(self, record: Any) -> datetime | None:
        assert self._cursor is not None
        try:
            value = self._cursor(record)
            return parse_datetime(value) if isinstance(value, str) else None
        except (AttributeError, KeyError, TypeError, ValueError):
            return None

    def _included(self, data: Any, document: Any, page: CheckedPage, cut_short: bool = False) -> None:
        """Related records sent along (campaign messages with campaigns, attributions with events), each with
        its parent's id; `cut_short`: `data` is the front of the page (`_before`), and only its records' related
        records are taken (those of the rest come again with the chain that reads it)."""
        if self._named(data, document, page, cut_short):
            return
        by_key = {(r.get("type"), r.get("id")): r for r in document.get("included") or () if isinstance(r, OBJECT)}
        found: dict[str, tuple[list[Any], list[str | None], str]] = {}
        resource: Any
        for resource in data:
            if not isinstance(resource, OBJECT) or not isinstance(resource.get("type"), str):
                continue
            kind = str(resource["type"])
            parent_column = f"{kind.replace('-', '_')}_id"
            relationships: Any = resource.get("relationships") or {}
            for rel in relationships.values():
                targets = rel.get("data") if isinstance(rel, OBJECT) else None
                if not isinstance(targets, ARRAY):
                    continue
                target: Any
                for target in targets:
                    if not isinstance(target, OBJECT):
                        continue
                    table = self.included.get(str(target.get("type")))
                    related = by_key.get((target.get("type"), target.get("id")))
                    if table and related is not None:
                        records, parents, _ = found.setdefault(table, ([], [], parent_column))
                        records.append(related)
                        ident = resource.get("id")  # a parent without one is set aside: the related
                        parents.append(ident if isinstance(ident, str) else None)  # record keeps its own link
        for table, (records, parents, parent_column) in found.items():
            self._convert(table, records, parents, parent_column, page)

    def _named(self, data: Any, document: Any, page: CheckedPage, cut_short: bool) -> bool:
        """Related records that each name their parent (an attribution its `event`, a campaign message its
        `campaign`) are taken as they are; False when one does not, and the parents' relationships must be
        walked (a thousand events' relationships cost as much as the rest of their page's check)."""
        kind = data[0].get("type") if len(data) and isinstance(data[0], OBJECT) else None
        if not isinstance(kind, str):
            return False
        kept = {r.get("id") for r in data if isinstance(r, OBJECT)} if cut_short else None
        found: dict[str, tuple[list[Any], list[str | None]]] = {}
        resource: Any
        for resource in document.get("included") or ():
            table = self.included.get(str(resource.get("type"))) if isinstance(resource, OBJECT) else None
            if table is None:
                continue
            link = ((resource.get("relationships") or {}).get(kind) or {}).get("data")
            parent = link.get("id") if isinstance(link, OBJECT) else None
            if not isinstance(parent, str):
                return False
            if kept is not None and parent not in kept:
                continue
            records, parents = found.setdefault(table, ([], []))
            records.append(resource)
            parents.append(parent)
        for table, (records, parents) in found.items():
            self._convert(table, records, parents, f"{kind.replace('-', '_')}_id", page)
        return True

    @staticmethod
    def _convert(table: str, records: list[Any], parents: list[str | None], parent_column: str,
                 page: CheckedPage) -> None:
        converted, misfits = SHAPES[table].convert(records, {parent_column: parents})
        page.included[table] = converted
        page.misfits += [(table, m) for m in misfits]
