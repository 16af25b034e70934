"""The sandbox's data store: answers validated `model.Query`s over one generated Klaviyo account.

The HTTP layer (server.py) has already checked a request against the spec; this module implements the
semantics: filters, sorts, keyset cursor pages, sparse fieldsets, `additional-fields`, `include`,
admin mutations, ground truth for tests, and the two values-report POSTs.

Paging is keyset-based: a cursor carries the sort key of the last record it returned (value plus the
record number as tie-break), a fingerprint of the query and a MAC. A page therefore never skips or
repeats a record that did not change, whatever is added or updated in between, just like a real
keyset API; a record whose sort key moved may show up again or not at all.

Big collections keep `SortedIndex`es (record numbers in sort-key order, in an `array`) so a page
from the middle of a million events is a couple of bisects plus the rendering of that page.
Everything is guarded by one lock; queries are fast enough that readers need not run concurrently.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import heapq
import hmac
import itertools
import json
import operator
import random
import threading
import time
from array import array
from bisect import bisect_left, bisect_right, insort
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime, timezone
from typing import Any

import orjson

from klaviyo_source.sandbox.attribution import Attributions
from klaviyo_source.sandbox.data import (
    METRICS,
    EventView,
    ProfileView,
    Row,
    Sizes,
    World,
    iso,
)
from klaviyo_source.sandbox.messaging import operations as messaging_operations
from klaviyo_source.sandbox.model import Cond, Page, Query, StoreError
from klaviyo_source.sandbox.people import operations as people_operations
from klaviyo_source.sandbox.reports import ReportPage, Reports

__all__ = ["Sizes", "Store"]

Key = Callable[[int], tuple[Any, ...]]
PARENT = "@parent"  # implicit condition of nested endpoints: the record belongs to the path's parent
METRICS_PAGE = 200  # /api/metrics has no page[size]


class _Extreme:
    """Sorts below (or above) every other value, so a probe can bracket keys of any type."""

    def __init__(self, top: bool) -> None:
        self.top = top

    def __lt__(self, other: object) -> bool:
        return not self.top and other is not self

    def __gt__(self, other: object) -> bool:
        return self.top and other is not self

    def __le__(self, other: object) -> bool:
        return not self.top or other is self

    def __ge__(self, other: object) -> bool:
        return self.top or other is self

    def __eq__(self, other: object) -> bool:
        return other is self

    __hash__ = object.__hash__


LOW, HIGH = _Extreme(False), _Extreme(True)


class SortedIndex:
    """Record numbers kept in `key` order; keys end with the record number, so they are unique."""

    def __init__(self, key: Key, items: Iterable[int], presorted: bool = False) -> None:
        self.key = key
        self.arr = array("q", items if presorted else sorted(items, key=key))

    def add(self, items: Iterable[int]) -> None:
        key = self.key
        new = sorted(items, key=key)
        if len(new) < 32:
            for i in new:
                insort(self.arr, i, key=key)
            return
        # one merge pass instead of many O(n) inserts
        old, out, prev = self.arr, array("q"), 0
        for i in new:
            pos = bisect_left(old, key(i), prev, key=key)
            out.extend(old[prev:pos])
            out.append(i)
            prev = pos
        out.extend(old[prev:])
        self.arr = out

    def remove(self, items: Iterable[int]) -> None:
        """Drop records; call it before their key values change."""
        arr, key = self.arr, self.key
        for i in items:
            pos = bisect_left(arr, key(i), key=key)
            if pos < len(arr) and arr[pos] == i:
                del arr[pos]

    def position(self, probe: tuple[Any, ...], after: bool = False) -> int:
        return (bisect_right if after else bisect_left)(self.arr, probe, key=self.key)


# ---------------------------------------------------------------------------------------------
# Conditions
# ---------------------------------------------------------------------------------------------

_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "greater-than": operator.gt, "greater-or-equal": operator.ge,
    "less-than": operator.lt, "less-or-equal": operator.le,
}


def _norm(value: Any) -> Any:
    """Filter operands in the store's terms: datetimes become epoch seconds."""
    if isinstance(value, datetime):
        return value.timestamp()
    if isinstance(value, list):
        return [_norm(v) for v in value]
    return value


def _matches(op: str, actual: Any, expected: Any) -> bool:
    """Klaviyo's GET filter operators; a tuple `actual` is a multi-valued field (any element counts)."""
    if op == "has":
        return bool(actual)
    if isinstance(actual, tuple):
        return any(_matches(op, a, expected) for a in actual)
    if actual is None:
        return False
    if op in ("equals", "any"):
        return actual in expected if isinstance(expected, list) else actual == expected
    if op == "contains":
        return expected in actual
    if op == "starts-with":
        return actual.startswith(expected)
    if op == "ends-with":
        return actual.endswith(expected)
    return _COMPARE[op](actual, expected)


def _values(cond: Cond) -> list[Any]:
    return cond.value if isinstance(cond.value, list) else [cond.value]


# ---------------------------------------------------------------------------------------------
# Collections
# ---------------------------------------------------------------------------------------------

class Collection:
    """One resource type as the query engine sees it: records are ints, fields are looked up by name."""

    rtype = ""
    path = ""
    default_sort: tuple[str, bool] = ("id", True)
    rels: dict[str, tuple[str, bool]] = {}  # relationship -> (target collection, to-one)
    narrowable: frozenset[str] = frozenset()  # sort fields whose range filters map onto index spans
    has_attributes = True  # resources without attributes (attributions) leave the member out

    def __init__(self) -> None:
        self.indexes: dict[tuple[str, ...], SortedIndex] = {}
        self.plan: list[tuple[str, Collection, bool]] = []

    # -- what each collection provides ----------------------------------------------------------
    def records(self) -> Iterable[int]:
        raise NotImplementedError

    def alive(self, i: int) -> bool:
        raise NotImplementedError

    def ident(self, i: int) -> str:
        raise NotImplementedError

    def value(self, i: int, field: str) -> Any:
        raise NotImplementedError

    def attributes(self, i: int, extra: tuple[str, ...]) -> dict[str, Any]:
        raise NotImplementedError

    def targets(self, i: int, rel: str) -> Any:
        """Related record numbers: an int or None for to-one, a list for to-many."""
        raise NotImplementedError

    def ref(self, i: int) -> dict[str, str]:
        """A resource identifier object, `{"type", "id"}`."""
        return {"type": self.rtype, "id": self.ident(i)}

    def link(self, colls: dict[str, Collection]) -> None:
        """Resolve relationship targets once all collections exist."""
        self.plan = [(name, colls[table], to_one) for name, (table, to_one) in self.rels.items()]

    def render(self, records: list[int], origin: str) -> bytes | None:
        """The JSON array of these records' full resource objects (links starting with `origin`), where
        a collection can write it faster than building the dicts; None to have the store build them."""
        return None

    def relationships(self, i: int) -> dict[str, Any]:
        rels: dict[str, Any] = {}
        for name, target, to_one in self.plan:
            found = self.targets(i, name)
            if not to_one:
                rels[name] = {"data": [target.ref(j) for j in found if target.alive(j)]}
            elif found is not None and target.alive(found):
                rels[name] = {"data": target.ref(found)}
        return rels

    # -- overridable defaults -------------------------------------------------------------------
    def lookup(self, cond: Cond) -> set[int] | None:
        """A small candidate set when the condition pins records down (ids, emails...), else None."""
        return None

    def partition(self, cond: Cond) -> tuple[str, list[int]] | None:
        """(partition name, partition values) when an index partitioned by this field can serve it."""
        return None

    def partition_key(self, part: str, field: str) -> Key:
        raise NotImplementedError

    def canonical(self, field: str) -> str:
        return field

    def sort_key(self, field: str) -> tuple[Key, Callable[[Any], tuple[Any, ...]]]:
        """(key of a record, key prefix for a value). Missing values sort first."""
        value = self.value

        def key(i: int) -> tuple[Any, ...]:
            v = value(i, field)
            if isinstance(v, tuple):
                v = v[0] if v else None
            return (0, 0, i) if v is None else (1, v, i)

        return key, lambda v: (1, v)

    def predicate(self, cond: Cond) -> Callable[[int], bool]:
        value, field, op, expected = self.value, cond.field, cond.op, _norm(cond.value)
        return lambda i: _matches(op, value(i, field), expected)

    # -- indexes --------------------------------------------------------------------------------
    def index(self, name: tuple[str, ...]) -> SortedIndex:
        found = self.indexes.get(name)
        if found is None:
            found = self.indexes[name] = self.build_index(name)
        return found

    def build_index(self, name: tuple[str, ...]) -> SortedIndex:
        if len(name) == 1:
            return SortedIndex(self.sort_key(name[0])[0], self.records())
        return SortedIndex(self.partition_key(*name), self.records())

    def _index(self, items: list[int]) -> None:
        for idx in self.indexes.values():
            idx.add(items)

    def _unindex(self, items: list[int]) -> None:
        for idx in self.indexes.values():
            idx.remove(items)

    def added(self, items: list[int]) -> None:
        """New records (subclasses also do their own bookkeeping)."""
        self._index(items)

    def deleted(self, items: list[int]) -> None:
        """Records that are gone (subclasses also mark them dead)."""
        self._unindex(items)

    def changed(self, items: list[int], change: Callable[[], None]) -> None:
        """Apply `change` to existing records and keep every index in order."""
        self._unindex(items)
        change()
        self._index(items)


class Rows(Collection):
    """A small collection backed by `data.Row`s."""

    def __init__(self, rows: list[Row], rtype: str, path: str, default_sort: tuple[str, bool] = ("id", True),
                 rels: dict[str, tuple[str, bool]] | None = None,
                 computed: dict[str, Callable[[int], list[int]]] | None = None,
                 derived: dict[str, Callable[[int], Any]] | None = None,
                 extras: dict[str, Callable[[int], Any]] | None = None) -> None:
        super().__init__()
        self.rows = rows
        self.rtype, self.path, self.default_sort = rtype, path, default_sort
        self.rels = rels or {}
        self.computed = computed or {}  # relationships derived from other tables
        self.derived = derived or {}  # filter fields derived from relationships
        self.extras = extras or {}  # `additional-fields` computed on request (a list's profile_count)
        self.by_id = {row.id: i for i, row in enumerate(rows) if row.alive}

    def records(self) -> list[int]:
        return [i for i, row in enumerate(self.rows) if row.alive]

    def alive(self, i: int) -> bool:
        return self.rows[i].alive

    def ident(self, i: int) -> str:
        return self.rows[i].id

    def value(self, i: int, field: str) -> Any:
        derive = self.derived.get(field)
        return derive(i) if derive else self.rows[i].vals.get(field)

    def attributes(self, i: int, extra: tuple[str, ...]) -> dict[str, Any]:
        row = self.rows[i]
        attrs = dict(row.attrs)
        for name in extra:
            if name in row.extra:
                attrs[name] = row.extra[name]
            elif name in self.extras:
                attrs[name] = self.extras[name](i)
        return attrs

    def targets(self, i: int, rel: str) -> Any:
        fn = self.computed.get(rel)
        return fn(i) if fn else self.rows[i].refs.get(rel)

    def lookup(self, cond: Cond) -> set[int] | None:
        if cond.field == PARENT:
            return {i for i in self.records() if self.rows[i].parent == cond.value}
        if cond.field in ("id", "ids") and cond.op in ("equals", "any"):
            return {self.by_id[v] for v in _values(cond) if v in self.by_id}
        return None

    def find(self, ids: list[str]) -> list[int]:
        missing = [v for v in ids if v not in self.by_id]
        if missing:
            raise StoreError(404, "not_found", f"No {self.rtype} with id {missing[0]!r}.")
        return [self.by_id[v] for v in ids]

    def added(self, items: list[int]) -> None:
        for i in items:
            self.by_id[self.rows[i].id] = i
        super().added(items)

    def deleted(self, items: list[int]) -> None:
        super().deleted(items)
        for i in items:
            self.rows[i].alive = False
            self.by_id.pop(self.rows[i].id, None)


class Events(Collection):
    """The events table: five int columns; every index is (time, record) ordered."""

    rtype, path = "event", "events"
    default_sort = ("datetime", True)  # newest first when no sort is sent
    rels = {"metric": ("metrics", True), "profile": ("profiles", True), "attributions": ("attributions", False)}
    narrowable = frozenset({"datetime"})

    def __init__(self, world: World, store: Store) -> None:
        super().__init__()
        self.world = world
        self.store = store
        self.view = EventView(world)
        self._metric_rels: dict[int, dict[str, Any]] = {}
        self.flags = bytearray(b"\x01") * len(world.events.ts)  # 0 once the profile is deleted
        self.version = 0  # bumped whenever events are added, changed or deleted (derived models recompute)
        # generation sorted the events by time, ties by record number: the main index is free
        self.indexes[("datetime",)] = SortedIndex(self.sort_key("datetime")[0], range(len(self.flags)), True)

    def records(self) -> Iterable[int]:
        return itertools.compress(range(len(self.flags)), self.flags)

    def alive(self, i: int) -> bool:
        return bool(self.flags[i])

    def ident(self, i: int) -> str:
        return self.view.ident(i)

    def canonical(self, field: str) -> str:
        return "datetime" if field == "timestamp" else field

    def sort_key(self, field: str) -> tuple[Key, Callable[[Any], tuple[Any, ...]]]:
        ts = self.world.events.ts
        return (lambda i: (ts[i], i)), (lambda v: (v,))

    def _column(self, part: str) -> array:
        return self.world.events.metric if part == "metric" else self.world.events.profile

    def partition(self, cond: Cond) -> tuple[str, list[int]] | None:
        if cond.op != "equals" or cond.field not in ("metric_id", "profile_id"):
            return None
        if cond.field == "metric_id":
            metrics = self.store.rows("metrics")
            return "metric", sorted({metrics.by_id[v] for v in _values(cond) if v in metrics.by_id})
        return "profile", sorted(self.store.profiles.numbers(_values(cond)))

    def partition_key(self, part: str, field: str) -> Key:
        col, ts = self._column(part), self.world.events.ts
        return lambda i: (col[i], ts[i], i)

    def build_index(self, name: tuple[str, ...]) -> SortedIndex:
        if len(name) == 1:
            return super().build_index(name)
        # bucket the time-ordered main index by partition: a stable, linear-time sort
        col = self._column(name[0])
        buckets: dict[int, list[int]] = {}
        for i in self.index(("datetime",)).arr:
            buckets.setdefault(col[i], []).append(i)
        ordered = array("q")
        for part in sorted(buckets):
            ordered.extend(buckets[part])
        return SortedIndex(self.partition_key(*name), ordered, presorted=True)

    def value(self, i: int, field: str) -> Any:
        ev = self.world.events
        if field in ("datetime", "timestamp"):
            return ev.ts[i]
        if field == "metric_id":
            return self.store.rows("metrics").ident(ev.metric[i])
        if field == "profile_id":
            return self.store.profiles.ident(ev.profile[i])
        return field in ("profile", "metric")  # `has`: every event has both

    def predicate(self, cond: Cond) -> Callable[[int], bool]:
        ev = self.world.events
        if cond.field in ("datetime", "timestamp") and cond.op in _COMPARE:
            ts, compare, bound = ev.ts, _COMPARE[cond.op], _norm(cond.value)
            return lambda i: compare(ts[i], bound)
        part = self.partition(cond)
        if part is not None:
            col, wanted = self._column(part[0]), frozenset(part[1])
            return lambda i: col[i] in wanted
        return super().predicate(cond)

    def attributes(self, i: int, extra: tuple[str, ...]) -> dict[str, Any]:
        ts = self.world.events.ts[i]
        return {"timestamp": ts, "event_properties": self.view.properties(i), "datetime": iso(ts),
                "uuid": self.view.uuid(i, ts)}

    def targets(self, i: int, rel: str) -> Any:
        ev = self.world.events
        if rel == "attributions":
            return [i] if self.store.attributions.of(i) is not None else []
        return ev.profile[i] if rel == "profile" else ev.metric[i]

    def relationships(self, i: int) -> dict[str, Any]:
        """The hot path of every events page: both targets always exist (a deleted profile takes its
        events along) and metric relationship objects are shared. A conversion's attribution (the
        attribution's record number is its event's) is listed as Klaviyo lists it, include or not."""
        ev = self.world.events
        metric = ev.metric[i]
        shared = self._metric_rels.get(metric)
        if shared is None:
            shared = self._metric_rels[metric] = {"data": self.store.rows("metrics").ref(metric)}
        attributions = self.store.colls["attributions"]
        return {"metric": shared, "profile": {"data": {"type": "profile",
                                                       "id": self.store.profiles.ident(ev.profile[i])}},
                "attributions": {"data": [attributions.ref(j) for j in self.targets(i, "attributions")]}}

    # `Store._resource` of an event as text around its values; tests hold the two to byte equality.
    _PIECES = (
        '{"type":"event","id":"',  # id
        '","attributes":{"timestamp":',  # timestamp
        ',"event_properties":',  # properties
        ',"datetime":"',  # datetime
        '","uuid":"',  # uuid
        '"},"relationships":{"metric":{"data":{"type":"metric","id":"',  # metric id
        '"},"links":{"self":"{events}',  # id
        '/relationships/metric/","related":"{events}',  # id
        '/metric/"}},"profile":{"data":{"type":"profile","id":"',  # profile id
        '"},"links":{"self":"{events}',  # id
        '/relationships/profile/","related":"{events}',  # id
        '/profile/"}},"attributions":{"data":',  # attributions
        ',"links":{"self":"{events}',  # id
        '/relationships/attributions/","related":"{events}',  # id
        '/attributions/"}}},"links":{"self":"{events}',  # id
        '/"}},',
    )

    def render(self, records: list[int], origin: str) -> bytes:
        """A page of events written straight as JSON text, as the request extraction makes most: building
        the dicts and serializing them cost twice as much. Only the properties go through orjson (a
        cached JSON prefix per shared template measured slower); every other value is an id, a number
        or a timestamp, none needing escapes. Values are computed column at a time (`map` runs most
        lookups in C) and all pieces go into one list joined once, not into a string per event."""
        if not records:
            return b"[]"
        ev, view, metrics = self.world.events, self.view, self.store.rows("metrics").rows
        stamps = list(map(ev.ts.__getitem__, records))
        properties = [orjson.dumps(p).decode() for p in map(view.properties, records)]
        metric_ids = [metrics[m].id for m in map(ev.metric.__getitem__, records)]
        profile_ids = map(self.store.profiles.view.ident, map(ev.profile.__getitem__, records))
        attributions = self.store.attributions.refs_json(records)
        columns = zip(map(view.ident, records), map(str, stamps), properties, map(iso, stamps),
                      map(view.uuid, records, stamps), metric_ids, profile_ids, attributions, strict=True)
        p0, p1, p2, p3, p4, p5, m0, m1, m2, r0, r1, r2, a0, a1, a2, end = (
            piece.replace("{events}", f"{origin}/api/events/") for piece in self._PIECES)
        out = ["["]
        add = out.extend
        for ident, ts, props, dt, uuid, metric, profile, credit in columns:
            add((p0, ident, p1, ts, p2, props, p3, dt, p4, uuid, p5, metric, m0, ident, m1, ident, m2, profile,
                 r0, ident, r1, ident, r2, credit, a0, ident, a1, ident, a2, ident, end))
        out[-1] = end[:-1] + "]"  # the last record closes the array instead of asking for another
        return "".join(out).encode()

    def added(self, items: list[int]) -> None:
        self.flags.extend(b"\x01" * (len(self.world.events.ts) - len(self.flags)))
        super().added(items)
        self.version += 1

    def changed(self, items: list[int], change: Callable[[], None]) -> None:
        super().changed(items, change)
        self.version += 1

    def deleted(self, items: list[int]) -> None:
        super().deleted(items)
        for i in items:
            self.flags[i] = 0
        self.version += 1

    def of_profiles(self, profiles: list[int]) -> list[int]:
        idx = self.index(("profile", "datetime"))
        out: list[int] = []
        for p in profiles:
            out.extend(idx.arr[idx.position((p, LOW)):idx.position((p, HIGH))])
        return out


class Profiles(Collection):
    """Profiles: int columns in `World` plus lazily built value -> record maps for point lookups."""

    rtype, path = "profile", "profiles"
    default_sort = ("created", True)
    rels = {"lists": ("lists", False), "segments": ("segments", False), "push-tokens": ("push_tokens", False)}
    narrowable = frozenset({"created", "updated"})
    _SUPPRESSION = "subscriptions.email.marketing.suppression."
    _LIST_SUPPRESSION = "subscriptions.email.marketing.list_suppressions."

    def __init__(self, world: World) -> None:
        super().__init__()
        self.world = world
        self.view = view = ProfileView(world)
        self.flags = bytearray(b"\x01") * len(world.profile_created)
        self.finders: dict[str, Callable[[int], str | None]] = {
            "email": view.email, "phone_number": view.phone, "external_id": view.external_id,
            "_kx": view.kx, "push_token": view.push_token,
        }
        self.maps: dict[str, dict[str, int]] = {}
        # profiles are generated in creation order: the default index is free
        self.indexes[("created",)] = SortedIndex(self.sort_key("created")[0], range(len(self.flags)), True)

    def records(self) -> Iterable[int]:
        return itertools.compress(range(len(self.flags)), self.flags)

    def alive(self, i: int) -> bool:
        return i < len(self.flags) and bool(self.flags[i])

    def ident(self, i: int) -> str:
        return self.view.ident(i)

    def sort_key(self, field: str) -> tuple[Key, Callable[[Any], tuple[Any, ...]]]:
        if field in ("created", "updated", "id"):
            getters: dict[str, Callable[[int], Any]] = {"created": self.world.profile_created.__getitem__,
                                                        "updated": self.world.profile_updated.__getitem__,
                                                        "id": self.ident}
            get = getters[field]
            return (lambda i: (get(i), i)), (lambda v: (v,))
        return super().sort_key(field)

    def value(self, i: int, field: str) -> Any:
        if field == "id":
            return self.ident(i)
        if field == "created":
            return self.world.profile_created[i]
        if field == "updated":
            return self.world.profile_updated[i]
        finder = self.finders.get(field)
        if finder is not None:
            return finder(i)
        suppression, list_suppressions = self.view.suppressions(i)
        if field.startswith(self._SUPPRESSION):
            column = ("reason", "timestamp").index(field[len(self._SUPPRESSION):])
            return tuple(s[column] for s in suppression)
        if field.startswith(self._LIST_SUPPRESSION):
            column = ("list_id", "reason", "timestamp").index(field[len(self._LIST_SUPPRESSION):])
            return tuple(s[column] for s in list_suppressions)
        raise StoreError(400, "invalid", f"'{field}' is not a filterable profile field.")

    def lookup(self, cond: Cond) -> set[int] | None:
        if cond.op not in ("equals", "any") or (cond.field != "id" and cond.field not in self.finders):
            return None
        wanted = _values(cond)
        if cond.field == "id":
            found = set()
            for text in wanted:
                i = self.world.profile_ids.index(text) if isinstance(text, str) else None
                if i is not None and self.alive(i) and self.ident(i) == text:
                    found.add(i)
            return found
        values = self._map(cond.field)
        return {values[v] for v in wanted if v in values}

    def _map(self, field: str) -> dict[str, int]:
        found = self.maps.get(field)
        if found is None:
            finder = self.finders[field]
            found = self.maps[field] = {}
            for i in self.records():
                v = finder(i)
                if v is not None:
                    found[v] = i
        return found

    def numbers(self, ids: list[Any]) -> set[int]:
        """Record numbers of these ids, deleted profiles included (their kept events still name them)."""
        found = set()
        for text in ids:
            i = self.world.profile_ids.index(text) if isinstance(text, str) else None
            if i is not None and i < len(self.flags) and self.ident(i) == text:
                found.add(i)
        return found

    def find(self, ids: list[str]) -> list[int]:
        out: list[int] = []
        for text in ids:
            hit = self.lookup(Cond("equals", "id", text))
            if not hit:
                raise StoreError(404, "not_found", f"No profile with id {text!r}.")
            out.extend(hit)
        return out

    def attributes(self, i: int, extra: tuple[str, ...]) -> dict[str, Any]:
        attrs = self.view.attributes(i)
        if "subscriptions" in extra:
            attrs["subscriptions"] = self.view.subscriptions(i)
        if "predictive_analytics" in extra:
            attrs["predictive_analytics"] = self.view.predictive_analytics(i)
        return attrs

    def targets(self, i: int, rel: str) -> Any:
        if rel == "push-tokens":
            return [i] if self.view.push_token(i) else []
        groups = self.world.members["list" if rel == "lists" else "segment"]
        return [g for g, joined in enumerate(groups) if i in joined]

    def added(self, items: list[int]) -> None:
        self.flags.extend(b"\x01" * len(items))
        for field, values in self.maps.items():
            for i in items:
                v = self.finders[field](i)
                if v is not None:
                    values[v] = i
        super().added(items)

    def deleted(self, items: list[int]) -> None:
        super().deleted(items)
        for field, values in self.maps.items():
            for i in items:
                values.pop(self.finders[field](i), None)  # type: ignore[arg-type]
        for i in items:
            self.flags[i] = 0


class PushTokens(Collection):
    """Push tokens, one per profile that has the app; reachable only through `include=push-tokens`."""

    rtype, path = "push-token", "push-tokens"
    rels = {"profile": ("profiles", True)}

    def __init__(self, profiles: Profiles) -> None:
        super().__init__()
        self.profiles = profiles

    def records(self) -> Iterable[int]:
        return (i for i in self.profiles.records() if self.alive(i))

    def alive(self, i: int) -> bool:
        return self.profiles.alive(i) and self.profiles.view.push_token(i) is not None

    def ident(self, i: int) -> str:
        return self.profiles.view.push_token_id(i)

    def value(self, i: int, field: str) -> Any:
        return None

    def attributes(self, i: int, extra: tuple[str, ...]) -> dict[str, Any]:
        return self.profiles.view.push_token_attributes(i)

    def targets(self, i: int, rel: str) -> Any:
        return i


class Members(Collection):
    """The profiles of one list or segment, each with its `joined_group_at`."""

    rtype, path = "profile", "profiles"
    default_sort = ("joined_group_at", True)
    narrowable = frozenset({"joined_group_at"})

    def __init__(self, profiles: Profiles, joined: dict[int, int],
                 on_change: Callable[[int, int], None] | None = None) -> None:
        super().__init__()
        self.profiles = profiles
        self.joined = joined  # the World's dict: profile -> epoch seconds
        self.rels = profiles.rels
        self.on_change = on_change  # (joined, left) counts of every change, for segment reports

    def records(self) -> Iterable[int]:
        return list(self.joined)

    def alive(self, i: int) -> bool:
        return i in self.joined

    def ident(self, i: int) -> str:
        return self.profiles.ident(i)

    def sort_key(self, field: str) -> tuple[Key, Callable[[Any], tuple[Any, ...]]]:
        joined = self.joined
        return (lambda i: (joined[i], i)), (lambda v: (v,))

    def value(self, i: int, field: str) -> Any:
        if field == "joined_group_at":
            return self.joined[i]
        return self.profiles.value(i, "id" if field == "profile_id" else field)

    def lookup(self, cond: Cond) -> set[int] | None:
        if cond.field == "profile_id":
            cond = Cond(cond.op, "id", cond.value)
        found = self.profiles.lookup(cond)
        return None if found is None else {i for i in found if i in self.joined}

    def attributes(self, i: int, extra: tuple[str, ...]) -> dict[str, Any]:
        attrs = self.profiles.attributes(i, extra)
        attrs["joined_group_at"] = iso(self.joined[i])
        return attrs

    def targets(self, i: int, rel: str) -> Any:
        return self.profiles.targets(i, rel)

    def added(self, items: list[int]) -> None:
        super().added(items)
        if self.on_change and items:
            self.on_change(len(items), 0)

    def deleted(self, items: list[int]) -> None:
        super().deleted(items)
        for i in items:
            del self.joined[i]
        if self.on_change and items:
            self.on_change(0, len(items))


class AttributionResources(Collection):
    """Attributions as `include=attributions` returns them; a record is its conversion event's number."""

    rtype, path = "attribution", "attributions"
    rels = {name: ("events" if name.endswith("event") else name, True) for name in (
        "event", "attributed-event", "campaign", "campaign-message", "flow", "flow-message", "flow-message-variation")}
    has_attributes = False

    def __init__(self, model: Attributions) -> None:
        super().__init__()
        self.model = model

    def records(self) -> Iterable[int]:
        return sorted(self.model.ledger().credit)

    def alive(self, i: int) -> bool:
        return self.model.of(i) is not None

    def ident(self, i: int) -> str:
        return self.model.ident(i)

    def value(self, i: int, field: str) -> Any:
        return None

    def attributes(self, i: int, extra: tuple[str, ...]) -> dict[str, Any]:
        return {}

    def relationships(self, i: int) -> dict[str, Any]:
        return self.model.relationships(i)

    def link(self, colls: dict[str, Collection]) -> None:
        """Relationships come from the model (they name campaigns and flows even once deleted)."""


# ---------------------------------------------------------------------------------------------
# Sparse fieldsets and cursors
# ---------------------------------------------------------------------------------------------

def _field_tree(names: tuple[str, ...]) -> dict[str, Any]:
    """`("email", "location.city")` -> {"email": True, "location": {"city": True}}."""
    tree: dict[str, Any] = {}
    for name in names:
        if name == "id":
            continue
        node = tree
        *parents, leaf = name.split(".")
        for part in parents:
            child = node.get(part)
            if child is True:
                break
            node = node.setdefault(part, {})
        else:
            node[leaf] = True
    return tree


def _trim(attrs: dict[str, Any], tree: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for name, sub in tree.items():
        if name in attrs:
            value = attrs[name]
            out[name] = _trim(value, sub) if sub is not True and isinstance(value, dict) else value
    return out


def _fingerprint(q: Query) -> str:
    """What a cursor must be reused with: endpoint, parent, filter and sort (not page size)."""
    conds = sorted(json.dumps([c.op, c.field, c.value], default=str) for c in q.conds)
    text = json.dumps([q.endpoint, q.path_id, conds, q.sort], default=str)
    return hashlib.blake2s(text.encode(), digest_size=6).hexdigest()


def _epoch(value: datetime) -> int:
    return int((value if value.tzinfo else value.replace(tzinfo=timezone.utc)).timestamp())


def _stamp(now: datetime | str | int | None) -> int:
    """A mutation's time: the current UTC second unless the caller fixes it."""
    if now is None:
        return int(time.time())
    if isinstance(now, int):
        return now
    return _epoch(datetime.fromisoformat(now.replace("Z", "+00:00")) if isinstance(now, str) else now)


# ---------------------------------------------------------------------------------------------
# The store
# ---------------------------------------------------------------------------------------------

_ENDPOINTS = {
    "/accounts": "accounts", "/events": "events", "/metrics": "metrics", "/profiles": "profiles",
    "/lists": "lists", "/segments": "segments", "/campaigns": "campaigns", "/flows": "flows",
    "/templates": "templates", "/tags": "tags", "/catalog-items": "catalog_items",
    "/catalog-variants": "catalog_variants", "/catalog-categories": "catalog_categories",
    "/coupons": "coupons", "/coupon-codes": "coupon_codes",
}
# nested endpoint -> (parent collection, child collection or member kind)
_NESTED = {
    "/lists/{id}/profiles": ("lists", "list"),
    "/segments/{id}/profiles": ("segments", "segment"),
    "/campaigns/{id}/campaign-messages": ("campaigns", "campaign_messages"),
    "/flows/{id}/flow-actions": ("flows", "flow_actions"),
    "/flow-actions/{id}/flow-messages": ("flow_actions", "flow_messages"),
}
_UNPAGED = frozenset({"/accounts", "/campaigns/{id}/campaign-messages"})
# detail endpoint -> collection: one resource by its id
_DETAIL = {"/lists/{id}": "lists", "/segments/{id}": "segments"}
# deletable tables -> relationship whose targets are deleted with the record
_CASCADE = {
    "campaigns": (("campaign-messages", "campaign_messages"),),
    "flows": (("flow-actions", "flow_actions"),),
    "flow_actions": (("flow-messages", "flow_messages"),),
    "catalog_items": (("variants", "catalog_variants"),),
    "coupons": (("codes", "coupon_codes"),),
}
_DELETABLE = frozenset({"campaigns", "flows", "lists", "segments", "templates", "tags", "catalog_items",
                        "coupon_codes", "coupons", "catalog_variants", "catalog_categories",
                        "campaign_messages", "flow_actions", "flow_messages"})
_MARKERS = {"campaigns": "updated_at", "campaign_messages": "updated_at", "flows": "updated",
            "flow_actions": "updated", "flow_messages": "updated", "templates": "updated"}
_GROUND_TRUTH_ROWS = ("metrics", "lists", "segments", "campaigns", "campaign_messages", "flows", "flow_actions",
                      "flow_messages", "templates", "tags", "catalog_items", "catalog_variants",
                      "catalog_categories", "coupons", "coupon_codes", "accounts")


class Store:
    """One simulated Klaviyo account: query it, mutate it, and ask what a correct copy holds."""

    def __init__(self, seed: int = 1, sizes: Sizes | None = None, anchor: datetime | None = None,
                 account_id: str = "AbC123") -> None:
        self.anchor = _epoch(anchor) if anchor else int(time.time())
        self.world = World(seed, sizes or Sizes(), self.anchor, account_id)
        self._lock = threading.RLock()
        self._rng = random.Random(seed * 97 + 5)
        self._secret = hashlib.blake2s(f"klaviyo-sandbox:{seed}:{account_id}".encode()).digest()
        self.profiles = Profiles(self.world)
        self.events = Events(self.world, self)
        self.attributions = Attributions(self.world, self.events)
        self.colls: dict[str, Collection] = {"events": self.events, "profiles": self.profiles,
                                             "push_tokens": PushTokens(self.profiles),
                                             "attributions": AttributionResources(self.attributions)}
        self.colls.update(self._row_collections())
        self._members: dict[tuple[str, int], Members] = {}
        for coll in self.colls.values():
            coll.link(self.colls)
        self.reports = Reports(self, self._secret)
        self.now = self.anchor  # the time of the mutation in progress
        self._ops: dict[str, Callable[..., dict[str, Any]]] = {
            "add_events": self._add_events, "add_profiles": self._add_profiles,
            "update_profiles": self._update_profiles,
            "add_members": self._add_members, "remove_members": self._remove_members,
            "add_campaign": self._add_campaign, "update_campaigns": self._update_campaigns,
            "add_flow": self._add_flow, "update_flows": self._update_flows, "delete": self._delete,
        }
        self._ops.update(people_operations(self))
        self._ops.update(messaging_operations(self))

    def _row_collections(self) -> dict[str, Rows]:
        w = self.world
        rows = w.rows

        def flows_triggered_by(table: str) -> Callable[[int], list[int]]:
            return lambda i: [f for f, row in enumerate(rows["flows"]) if row.vals["trigger"] == (table, i)]

        def tagged(table: str) -> Callable[[int], list[int]]:
            return lambda i: [j for j, row in enumerate(rows[table]) if i in row.refs["tags"]]

        def ident_of(source: str, rel: str, target: str) -> Callable[[int], str | None]:
            def get(i: int) -> str | None:
                j = rows[source][i].refs[rel]
                return rows[target][j].id if j is not None and rows[target][j].alive else None
            return get

        def live_ids(table: str, found: Iterable[int]) -> tuple[str, ...]:
            return tuple(rows[table][j].id for j in found if rows[table][j].alive)

        def items_in(category: int) -> list[int]:
            return [j for j, row in enumerate(rows["catalog_items"]) if category in row.refs["categories"]]

        def profile_id(i: int) -> str | None:
            p = rows["coupon_codes"][i].refs["profile"]
            return self.profiles.ident(p) if p is not None and self.profiles.alive(p) else None

        tags = {"tags": ("tags", False)}
        return {
            "accounts": Rows(rows["accounts"], "account", "accounts"),
            "metrics": Rows(rows["metrics"], "metric", "metrics", rels={"flow-triggers": ("flows", False)},
                            computed={"flow-triggers": flows_triggered_by("metrics")}),
            "lists": Rows(rows["lists"], "list", "lists", rels={**tags, "flow-triggers": ("flows", False)},
                          computed={"flow-triggers": flows_triggered_by("lists")},
                          extras={"profile_count": lambda i: len(w.members["list"][i])}),
            "segments": Rows(rows["segments"], "segment", "segments",
                             rels={**tags, "flow-triggers": ("flows", False)},
                             computed={"flow-triggers": lambda i: []},
                             extras={"profile_count": lambda i: len(w.members["segment"][i])}),
            "campaigns": Rows(rows["campaigns"], "campaign", "campaigns", ("created_at", True),
                              rels={"campaign-messages": ("campaign_messages", False), **tags}),
            "campaign_messages": Rows(rows["campaign_messages"], "campaign-message", "campaign-messages",
                                      ("created_at", False),
                                      rels={"campaign": ("campaigns", True), "template": ("templates", True)}),
            "flows": Rows(rows["flows"], "flow", "flows", rels={"flow-actions": ("flow_actions", False), **tags}),
            "flow_actions": Rows(rows["flow_actions"], "flow-action", "flow-actions", ("created", True),
                                 rels={"flow": ("flows", True), "flow-messages": ("flow_messages", False)}),
            "flow_messages": Rows(rows["flow_messages"], "flow-message", "flow-messages",
                                  rels={"flow-action": ("flow_actions", True), "template": ("templates", True)}),
            "templates": Rows(rows["templates"], "template", "templates", ("updated", True)),
            "tags": Rows(rows["tags"], "tag", "tags",
                         rels={"tag-group": ("tag_groups", True), "lists": ("lists", False),
                               "segments": ("segments", False), "campaigns": ("campaigns", False),
                               "flows": ("flows", False)},
                         computed={name: tagged(name) for name in ("lists", "segments", "campaigns", "flows")}),
            "tag_groups": Rows(rows["tag_groups"], "tag-group", "tag-groups"),
            "catalog_items": Rows(rows["catalog_items"], "catalog-item", "catalog-items", ("created", True),
                                  rels={"variants": ("catalog_variants", False)},
                                  derived={"category.id": lambda i: live_ids(
                                      "catalog_categories", rows["catalog_items"][i].refs["categories"])}),
            "catalog_variants": Rows(rows["catalog_variants"], "catalog-variant", "catalog-variants",
                                     ("created", True), rels={"item": ("catalog_items", True)},
                                     derived={"item.id": ident_of("catalog_variants", "item", "catalog_items")}),
            "catalog_categories": Rows(
                rows["catalog_categories"], "catalog-category", "catalog-categories", ("created", True),
                rels={"items": ("catalog_items", False)}, computed={"items": items_in},
                derived={"item.id": lambda i: live_ids("catalog_items", items_in(i))}),
            "coupons": Rows(rows["coupons"], "coupon", "coupons"),
            "coupon_codes": Rows(rows["coupon_codes"], "coupon-code", "coupon-codes",
                                 rels={"coupon": ("coupons", True), "profile": ("profiles", True)},
                                 derived={"coupon.id": ident_of("coupon_codes", "coupon", "coupons"),
                                          "profile.id": profile_id}),
        }

    def rows(self, table: str) -> Rows:
        coll = self.colls[table]
        assert isinstance(coll, Rows)
        return coll

    def endpoints(self) -> list[str]:
        return sorted([*_ENDPOINTS, *_NESTED])

    def locked(self) -> threading.RLock:
        """The store's lock, for modules that read or change the account (aggregates, people, ...)."""
        return self._lock

    @property
    def rng(self) -> random.Random:
        """The mutations' random source (seeded: the same mutations pick the same records)."""
        return self._rng

    # -- queries ------------------------------------------------------------------------------
    def query(self, q: Query) -> Page:
        with self._lock:
            coll, implicit = self._resolve(q)
            return self._page(coll, q, implicit)

    def detail(self, q: Query) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """One resource by id (`GET /lists/{id}`), with its sparse fieldsets and additional fields."""
        with self._lock:
            coll = self.rows(_DETAIL[q.endpoint])
            i = coll.by_id.get(q.path_id or "")
            if i is None:
                raise StoreError(404, "not_found", f"A {coll.rtype} with id {q.path_id!r} does not exist.")
            trees = {rtype: _field_tree(names) for rtype, names in q.fields.items()}
            included = self._included(coll, [i], q, trees, {(coll.rtype, coll.ident(i))})
            return self._resource(coll, i, q, trees), included

    def _resolve(self, q: Query) -> tuple[Collection, tuple[Cond, ...]]:
        if q.endpoint in _ENDPOINTS:
            return self.colls[_ENDPOINTS[q.endpoint]], ()
        if q.endpoint not in _NESTED:
            raise StoreError(404, "not_found", f"Unknown endpoint {q.endpoint}.")
        parent_table, child = _NESTED[q.endpoint]
        parents = self.rows(parent_table)
        parent = parents.by_id.get(q.path_id or "")
        if parent is None:
            raise StoreError(404, "not_found", f"A {parents.rtype} with id {q.path_id!r} does not exist.")
        if child in ("list", "segment"):
            return self.members_of(child, parent), ()
        return self.colls[child], (Cond("equals", PARENT, parent),)

    def members_of(self, kind: str, group: int) -> Members:
        found = self._members.get((kind, group))
        if found is None:
            history = None
            if kind == "segment":  # segment reports count who joined and left, and when
                def history(joined: int, left: int, group: int = group) -> None:
                    self.reports.segments.changed(group, self.now, joined, left)
            found = self._members[(kind, group)] = Members(self.profiles, self.world.members[kind][group], history)
        return found

    def _page(self, coll: Collection, q: Query, implicit: tuple[Cond, ...]) -> Page:
        field, desc = q.sort or coll.default_sort
        field = coll.canonical(field)
        key, probe = coll.sort_key(field)
        fingerprint = _fingerprint(q)
        after, backwards = self._decode_cursor(q.cursor, fingerprint) if q.cursor else (None, False)
        size = None if q.endpoint in _UNPAGED else q.page_size or METRICS_PAGE
        # a previous page is read walking the other way from its cursor, then put back in order
        records = self._ordered(coll, [*q.conds, *implicit], field, desc != backwards, key, probe, after)
        picked = list(itertools.islice(records, size + 1)) if size else list(records)
        more = size is not None and len(picked) > size
        picked = picked[:size] if more else picked
        if backwards:
            picked.reverse()
        next_cursor = prev_cursor = None
        if picked and (more or backwards):
            next_cursor = self._encode_cursor(fingerprint, key(picked[-1]))
        if picked and (more if backwards else after is not None):
            prev_cursor = self._encode_cursor(fingerprint, key(picked[0]), backwards=True)
        trees = {rtype: _field_tree(names) for rtype, names in q.fields.items()}
        rendered = None if coll.rtype in trees else coll.render(picked, q.origin)
        data = rendered if rendered is not None else [self._resource(coll, i, q, trees) for i in picked]
        seen = {(coll.rtype, coll.ident(i)) for i in picked} if q.include else set()
        return Page(data, self._included(coll, picked, q, trees, seen), next_cursor, prev_cursor)

    def _ordered(self, coll: Collection, conds: list[Cond], field: str, desc: bool, key: Key,
                 probe: Callable[[Any], tuple[Any, ...]], after: tuple[Any, ...] | None) -> Iterator[int]:
        """Matching records in sort order, starting after the cursor key."""
        residual = list(conds)
        candidates: set[int] | None = None
        for cond in conds:
            found = coll.lookup(cond)
            if found is not None:
                candidates = found if candidates is None else candidates & found
                residual.remove(cond)
        if candidates is not None:
            ordered: Iterable[int] = sorted(candidates, key=key, reverse=desc)
            if after is not None:
                ordered = [i for i in ordered if (key(i) < after if desc else key(i) > after)]
            return self._filtered(coll, ordered, residual)

        ranges: list[tuple[SortedIndex, tuple[Any, ...]]] = []
        for cond in residual:
            part = coll.partition(cond)
            if part is not None:
                index = coll.index((part[0], field))
                ranges = [(index, (value,)) for value in part[1]]
                residual.remove(cond)
                break
        else:
            ranges = [(coll.index((field,)), ())]
        if not ranges:
            return iter(())  # a partition filter naming nothing that exists

        low: tuple[Any, ...] = (LOW,)
        high: tuple[Any, ...] = (HIGH,)
        if field in coll.narrowable:
            for cond in list(residual):
                if coll.canonical(cond.field) != field or not (cond.op in _COMPARE or cond.op == "equals"):
                    continue
                bound = probe(_norm(cond.value))
                residual.remove(cond)
                if cond.op in ("greater-than", "greater-or-equal", "equals"):
                    edge = (*bound, HIGH if cond.op == "greater-than" else LOW)
                    low = max(low, edge)
                if cond.op in ("less-than", "less-or-equal", "equals"):
                    edge = (*bound, LOW if cond.op == "less-than" else HIGH)
                    high = min(high, edge)

        streams = []
        for index, prefix in ranges:
            start, end = index.position((*prefix, *low)), index.position((*prefix, *high))
            if after is not None:
                if desc:
                    end = min(end, index.position((*prefix, *after)))
                else:
                    start = max(start, index.position((*prefix, *after), after=True))
            arr = index.arr
            positions = range(end - 1, start - 1, -1) if desc else range(start, end)
            streams.append(map(arr.__getitem__, positions))
        merged = streams[0] if len(streams) == 1 else heapq.merge(*streams, key=key, reverse=desc)
        return self._filtered(coll, merged, residual)

    @staticmethod
    def _filtered(coll: Collection, records: Iterable[int], conds: list[Cond]) -> Iterator[int]:
        tests = [coll.predicate(c) for c in conds]
        if not tests:
            return iter(records)
        return (i for i in records if all(test(i) for test in tests))

    def _resource(self, coll: Collection, i: int, q: Query, trees: dict[str, dict[str, Any]]) -> dict[str, Any]:
        """One JSON:API resource object; its links start with the query's origin.

        Every relationship carries Klaviyo's `links` (`self`: .../relationships/<name>/, `related`:
        .../<name>/); an empty to-one relationship has no `data`, because the spec types `data` as a
        non-null object.
        """
        ident = coll.ident(i)
        resource: dict[str, Any] = {"type": coll.rtype, "id": ident}
        if coll.has_attributes:
            attrs = coll.attributes(i, q.additional_fields.get(coll.rtype, ()))
            tree = trees.get(coll.rtype)
            resource["attributes"] = _trim(attrs, tree) if tree is not None else attrs
        own = f"{q.origin}/api/{coll.path}/{ident}/"
        if coll.rels:
            rels = coll.relationships(i)
            resource["relationships"] = {
                name: {**rels.get(name, {}),
                       "links": {"self": f"{own}relationships/{name}/", "related": f"{own}{name}/"}}
                for name in coll.rels
            }
        resource["links"] = {"self": own}
        return resource

    def _included(self, coll: Collection, records: list[int], q: Query, trees: dict[str, dict[str, Any]],
                  seen: set[tuple[str, str]]) -> list[dict[str, Any]]:
        out = []
        for name in q.include:
            if name not in coll.rels:
                continue  # includes the sandbox does not model (images, templates of messages...)
            table, to_one = coll.rels[name]
            target = self.colls[table]
            for i in records:
                found = coll.targets(i, name)
                for j in ([] if found is None else [found]) if to_one else found:
                    marker = (target.rtype, target.ident(j))
                    if marker not in seen and target.alive(j):
                        seen.add(marker)
                        out.append(self._resource(target, j, q, trees))
        return out

    def _encode_cursor(self, fingerprint: str, key: tuple[Any, ...], backwards: bool = False) -> str:
        """Where a page starts: after `key` (next pages) or before it (`backwards`, previous pages)."""
        payload = json.dumps([fingerprint, list(key), backwards], separators=(",", ":")).encode()
        mac = hmac.new(self._secret, payload, hashlib.blake2s).digest()[:8]
        return base64.urlsafe_b64encode(mac + payload).rstrip(b"=").decode()

    def _decode_cursor(self, cursor: str, fingerprint: str) -> tuple[tuple[Any, ...], bool]:
        try:
            raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        except (binascii.Error, ValueError):
            raw = b""
        mac, payload = raw[:8], raw[8:]
        if len(raw) <= 8 or not hmac.compare_digest(mac, hmac.new(self._secret, payload, hashlib.blake2s).digest()[:8]):
            raise StoreError(400, "invalid", "The page cursor is invalid.", "page[cursor]")
        issued_for, key, backwards = json.loads(payload)
        if issued_for != fingerprint:
            raise StoreError(400, "invalid", "The page cursor was issued for a different filter or sort.",
                             "page[cursor]")
        return tuple(key), backwards

    # -- mutations ------------------------------------------------------------------------------
    def mutate(self, op: str, **kwargs: Any) -> dict[str, Any]:
        """Change the account as Klaviyo would; stamped with the current UTC second unless `now=` is given."""
        handler = self._ops.get(op)
        if handler is None:
            raise StoreError(400, "invalid", f"Unknown mutation {op!r}; known: {', '.join(sorted(self._ops))}.")
        stamp = _stamp(kwargs.pop("now", None))
        with self._lock:
            self.now = stamp
            try:
                return handler(stamp, **kwargs)
            except (TypeError, ValueError) as exc:
                raise StoreError(400, "invalid", f"Bad arguments for {op}: {exc}") from exc

    def pick(self, coll: Rows | Profiles, ids: list[str] | None, count: int | None) -> list[int]:
        if ids is not None:
            return coll.find(list(ids))
        live = list(coll.records())
        return sorted(self._rng.sample(live, min(len(live), 1 if count is None else int(count))))

    def _add_events(self, now: int, count: int = 1, offset_seconds: int = 0, metric: str | None = None,
                    profile_id: str | None = None) -> dict[str, Any]:
        t = now + int(offset_seconds)
        m = None
        if metric is not None:
            names = [d.name for d in METRICS]
            metrics = self.rows("metrics")
            m = metrics.by_id[metric] if metric in metrics.by_id else names.index(metric) if metric in names else None
            if m is None:
                raise StoreError(404, "not_found", f"No metric with id or name {metric!r}.")
        live = self.profiles.find([profile_id]) if profile_id is not None else list(self.profiles.records())
        if not live:
            raise StoreError(400, "invalid", "There are no profiles to attach events to.")
        new = self.world.add_events(int(count), t, m, self._rng, live)
        self.events.added(new)
        return {"ids": [self.events.ident(i) for i in new], "datetimes": [iso(t)] * len(new)}

    def _add_profiles(self, now: int, count: int = 1) -> dict[str, Any]:
        new = self.world.add_profiles(int(count), now)
        self.profiles.added(new)
        return {"ids": [self.profiles.ident(i) for i in new]}

    def _update_profiles(self, now: int, count: int | None = None, ids: list[str] | None = None) -> dict[str, Any]:
        chosen = self.pick(self.profiles, ids, count)

        def edit() -> None:
            for i in chosen:
                self.world.edit_profile(i, now, self._rng)

        self.profiles.changed(chosen, edit)
        return {"ids": [self.profiles.ident(i) for i in chosen], "updated": iso(now)}

    def _group(self, kind: str, parent_id: str | None) -> int:
        if kind not in ("list", "segment"):
            raise StoreError(400, "invalid", "kind must be 'list' or 'segment'.")
        table = self.rows("lists" if kind == "list" else "segments")
        if parent_id is not None:
            return table.find([parent_id])[0]
        choices = [i for i in table.records() if table.rows[i].vals.get("is_active", True)]
        if not choices:
            raise StoreError(400, "invalid", f"There is no {kind} to change.")
        return self._rng.choice(choices)

    def _add_members(self, now: int, kind: str = "list", parent_id: str | None = None, count: int = 1,
                     ids: list[str] | None = None) -> dict[str, Any]:
        """Join profiles to a group; a re-join moves `joined_group_at` forward."""
        group = self._group(kind, parent_id)
        members = self.members_of(kind, group)
        chosen = self.pick(self.profiles, ids, count)
        again = [i for i in chosen if i in members.joined]
        fresh = [i for i in chosen if i not in members.joined]

        def rejoin() -> None:
            for i in again:
                members.joined[i] = now

        members.changed(again, rejoin)
        for i in fresh:
            members.joined[i] = now
        members.added(fresh)
        return {"parent_id": self._group_id(kind, group), "ids": [self.profiles.ident(i) for i in chosen],
                "joined_group_at": iso(now)}

    def _remove_members(self, now: int, kind: str = "list", parent_id: str | None = None, count: int = 1,
                        ids: list[str] | None = None) -> dict[str, Any]:
        group = self._group(kind, parent_id)
        members = self.members_of(kind, group)
        if ids is not None:
            chosen = [i for i in self.profiles.find(list(ids)) if i in members.joined]
        else:
            chosen = sorted(self._rng.sample(sorted(members.joined), min(len(members.joined), int(count))))
        removed = [self.profiles.ident(i) for i in chosen]
        members.deleted(chosen)
        return {"parent_id": self._group_id(kind, group), "ids": removed}

    def _group_id(self, kind: str, group: int) -> str:
        return self.rows("lists" if kind == "list" else "segments").ident(group)

    def _add_campaign(self, now: int, channel: str = "email") -> dict[str, Any]:
        if channel not in ("email", "sms", "mobile_push"):
            raise StoreError(400, "invalid", "channel must be email, sms or mobile_push.")
        c = self.world.add_campaign(channel, now, self._rng, updated=now)
        messages = self.world.rows["campaigns"][c].refs["campaign-messages"]
        self.rows("campaigns").added([c])
        self.rows("campaign_messages").added(messages)
        return {"ids": [self.rows("campaigns").ident(c)],
                "message_ids": [self.rows("campaign_messages").ident(m) for m in messages]}

    def _update_campaigns(self, now: int, ids: list[str] | None = None, count: int | None = None
                          ) -> dict[str, Any]:
        campaigns = self.rows("campaigns")
        chosen = self.pick(campaigns, ids, count)

        def edit() -> None:
            for i in chosen:
                row = campaigns.rows[i]
                row.vals["updated_at"] = now
                row.attrs["updated_at"] = iso(now)
                row.attrs["send_options"] = {"use_smart_sending": not row.attrs["send_options"]["use_smart_sending"]}

        campaigns.changed(chosen, edit)
        return {"ids": [campaigns.ident(i) for i in chosen], "updated_at": iso(now)}

    def _add_flow(self, now: int) -> dict[str, Any]:
        f = self.world.add_flow(now, self._rng, updated=now)
        actions = self.world.rows["flows"][f].refs["flow-actions"]
        messages = [m for a in actions for m in self.world.rows["flow_actions"][a].refs["flow-messages"]]
        self.rows("flows").added([f])
        self.rows("flow_actions").added(actions)
        self.rows("flow_messages").added(messages)
        return {"ids": [self.rows("flows").ident(f)],
                "action_ids": [self.rows("flow_actions").ident(a) for a in actions],
                "message_ids": [self.rows("flow_messages").ident(m) for m in messages]}

    def _update_flows(self, now: int, ids: list[str] | None = None, count: int | None = None) -> dict[str, Any]:
        flows = self.rows("flows")
        chosen = self.pick(flows, ids, count)

        def edit() -> None:
            for i in chosen:
                flows.rows[i].vals["updated"] = now
                flows.rows[i].attrs["updated"] = iso(now)

        flows.changed(chosen, edit)
        return {"ids": [flows.ident(i) for i in chosen], "updated": iso(now)}

    def _delete(self, now: int, table: str, ids: list[str]) -> dict[str, Any]:
        """Delete records of a small table; children go with their parent."""
        if table not in _DELETABLE:
            raise StoreError(400, "invalid",
                             f"Cannot delete from {table!r}; deletable: {', '.join(sorted(_DELETABLE))}.")
        coll = self.rows(table)
        chosen = coll.find(list(ids))
        cascaded: dict[str, list[str]] = {}
        pending = [(table, chosen)]
        while pending:
            name, items = pending.pop()
            current = self.rows(name)
            for rel, child in _CASCADE.get(name, ()):
                kids = [k for i in items for k in current.rows[i].refs[rel] if self.rows(child).alive(k)]
                if kids:
                    cascaded.setdefault(child, []).extend(self.rows(child).ident(k) for k in kids)
                    pending.append((child, kids))
            current.deleted(items)
        if table in ("lists", "segments"):
            kind = "list" if table == "lists" else "segment"
            for g in chosen:
                self.members_of(kind, g).deleted(list(self.world.members[kind][g]))
        return {"table": table, "ids": [coll.ident(i) for i in chosen], "cascaded": cascaded}

    # -- ground truth -----------------------------------------------------------------------------
    def ground_truth(self, until: datetime | None = None) -> dict[str, list[Any]]:
        """What a correct copy of every table holds now (sorted ids; member tables hold id pairs, event
        attributions whole rows)."""
        with self._lock:
            limit = _epoch(until) if until is not None else None
            ts = self.world.events.ts
            out: dict[str, list[Any]] = {
                "events": sorted(self.events.ident(i) for i in self.events.records() if limit is None or ts[i] < limit),
                "profiles": sorted(self.profiles.ident(i) for i in self.profiles.records()),
                "event_attributions": self.attributions.ground_truth(limit),
            }
            for table in _GROUND_TRUTH_ROWS:
                coll = self.rows(table)
                out[table] = sorted(coll.ident(i) for i in coll.records())
            for kind, table in (("list", "lists"), ("segment", "segments")):
                parents = self.rows(table)
                out[f"{kind}_members"] = sorted(
                    [parents.ident(g), self.profiles.ident(p)]
                    for g in parents.records() for p in self.world.members[kind][g])
            return out

    def versions(self) -> dict[str, dict[str, Any]]:
        """What each live row says now, beyond its id: the change marker of every table that has one
        (edits below unchanged parents must arrive) and the profile of every event (merges move events)."""
        with self._lock:
            out: dict[str, dict[str, Any]] = {
                "events": {self.events.ident(i): self.profiles.ident(self.world.events.profile[i])
                           for i in self.events.records()},
                "profiles": {self.profiles.ident(i): iso(self.world.profile_updated[i])
                             for i in self.profiles.records()},
            }
            for table, marker in _MARKERS.items():
                coll = self.rows(table)
                out[table] = {coll.ident(i): coll.rows[i].attrs[marker] for i in coll.records()}
            return out

    # -- reports --------------------------------------------------------------------------------
    def report(self, kind: str, attributes: dict[str, Any], cursor: str | None = None) -> ReportPage:
        """A reporting POST's answer (reports.py), computed from the events and memberships as they are now."""
        with self._lock:
            return self.reports.answer(kind, attributes, cursor)

    def report_results(self, kind: str, attributes: dict[str, Any]) -> dict[str, Any]:
        """Ground truth for report tables: a report's `data.attributes` with the results of every page."""
        page = self.report(kind, attributes)
        results = list(page.data["attributes"]["results"])
        while page.next_cursor is not None:
            page = self.report(kind, attributes, page.next_cursor)
            results += page.data["attributes"]["results"]
        return {**page.data["attributes"], "results": results}
