"""The sandbox's data store on its own (no HTTP): paging, filters, sorts, cursors, sparse fieldsets,
includes, mutations, ground truth and determinism (reports: test_reports.py, attribution: test_attribution.py).

Filters and sorts are checked against an oracle that reads only what a client sees (the rendered
resources), for every field and operator that spec_rules.json (from the spec's x-klaviyo-filters) allows.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import threading
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import jsonschema
import orjson
import pytest

from klaviyo_source.sandbox.model import Cond, Query, StoreError
from klaviyo_source.sandbox.rules import Rules
from klaviyo_source.sandbox.store import Sizes, Store
from tests.spec import load_spec

ANCHOR = datetime(2025, 6, 1, 12, tzinfo=timezone.utc)
SIZES = Sizes(events=600, profiles=120, lists=3, segments=3, members_per_list=30, members_per_segment=25,
              campaigns=9, flows=3, actions_per_flow=3, messages_per_action=2, templates=6, tags=5,
              catalog_items=8, variants_per_item=2, catalog_categories=3, coupons=2, codes_per_coupon=10)
RULES = Rules().data["get"]
NESTED_PARENT = {
    "/lists/{id}/profiles": "lists", "/segments/{id}/profiles": "segments",
    "/campaigns/{id}/campaign-messages": "campaigns", "/flows/{id}/flow-actions": "flows",
    "/flow-actions/{id}/flow-messages": "flow_actions",
}
TABLE = {
    "/accounts": "accounts", "/events": "events", "/metrics": "metrics", "/profiles": "profiles",
    "/lists": "lists", "/segments": "segments", "/campaigns": "campaigns", "/flows": "flows",
    "/templates": "templates", "/tags": "tags", "/catalog-items": "catalog_items",
    "/catalog-variants": "catalog_variants", "/catalog-categories": "catalog_categories",
    "/coupons": "coupons", "/coupon-codes": "coupon_codes", "/lists/{id}/profiles": "list_members",
    "/segments/{id}/profiles": "segment_members", "/campaigns/{id}/campaign-messages": "campaign_messages",
    "/flows/{id}/flow-actions": "flow_actions", "/flow-actions/{id}/flow-messages": "flow_messages",
}


def new_store(seed: int = 3) -> Store:
    return Store(seed=seed, sizes=SIZES, anchor=ANCHOR)


@pytest.fixture(scope="module")
def store() -> Store:
    return new_store()


def max_size(endpoint: str) -> int | None:
    page = RULES[endpoint]["page"]
    return page["max"] if page and page["param"] else None


def walk(store: Store, endpoint: str, path_id: str | None = None, conds: tuple[Cond, ...] = (),
         sort: tuple[str, bool] | None = None, size: int | None = None, **extra: Any) -> list[dict[str, Any]]:
    """Every record of a query, following the cursors to the end."""
    size = size or max_size(endpoint)
    out: list[dict[str, Any]] = []
    cursor = None
    for _ in range(10_000):
        page = store.query(Query(endpoint, path_id, conds, sort, size, cursor, **extra))
        out += page.data
        cursor = page.next_cursor
        if cursor is None:
            return out
    raise AssertionError("the cursor chain never ended")


def targets(store: Store) -> list[tuple[str, str | None, tuple[Cond, ...]]]:
    """(endpoint, path id, required conditions) covering every record the store serves."""
    truth = store.ground_truth()
    out: list[tuple[str, str | None, tuple[Cond, ...]]] = []
    for endpoint in store.endpoints():
        if endpoint in NESTED_PARENT:
            out += [(endpoint, parent, ()) for parent in truth[NESTED_PARENT[endpoint]]]
        elif endpoint == "/campaigns":
            out += [(endpoint, None, (Cond("equals", "messages.channel", c),)) for c in ("email", "sms", "mobile_push")]
        elif endpoint == "/coupon-codes":
            out += [(endpoint, None, (Cond("equals", "coupon.id", c),)) for c in truth["coupons"]]
        else:
            out.append((endpoint, None, ()))
    return out


def epoch(text: str | None) -> float | None:
    return None if text is None else datetime.fromisoformat(text).timestamp()


# ---------------------------------------------------------------------------------------------
# Paging
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("size", [1, 7, None])
def test_paging_every_endpoint_returns_every_record_exactly_once(store: Store, size: int | None) -> None:
    truth = store.ground_truth()
    seen: dict[str, list[Any]] = {}
    for endpoint, path_id, conds in targets(store):
        records = walk(store, endpoint, path_id, conds, size=size if max_size(endpoint) else None)
        ids = [r["id"] for r in records]
        assert len(ids) == len(set(ids)), (endpoint, path_id, "repeated records")
        table = TABLE[endpoint]
        if table.endswith("_members"):
            seen.setdefault(table, []).extend([path_id, i] for i in ids)
        else:
            seen.setdefault(table, []).extend(ids)
    for table, got in seen.items():
        assert sorted(got) == truth[table], table
    assert set(seen) == set(truth) - {"event_attributions"}  # attributions come with events (test_attribution.py)


def test_unpaged_endpoints_answer_everything_at_once(store: Store) -> None:
    page = store.query(Query("/accounts"))
    assert [r["id"] for r in page.data] == ["AbC123"] and page.next_cursor is None
    campaign = store.ground_truth()["campaigns"][0]
    page = store.query(Query("/campaigns/{id}/campaign-messages", campaign))
    assert page.data and page.next_cursor is None
    metrics = store.query(Query("/metrics"))  # no page[size]: fixed pages of 200
    assert len(metrics.data) == len(store.ground_truth()["metrics"]) and metrics.next_cursor is None


def test_without_sort_the_order_is_not_ascending(store: Store) -> None:
    events = walk(store, "/events", size=50)
    times = [e["attributes"]["timestamp"] for e in events]
    assert times == sorted(times, reverse=True) and times[0] > times[-1]  # newest first
    created = [p["attributes"]["created"] for p in walk(store, "/profiles", size=25)]
    assert created == sorted(created, reverse=True)


def test_unknown_parent_is_404(store: Store) -> None:
    for endpoint in NESTED_PARENT:
        with pytest.raises(StoreError) as err:
            store.query(Query(endpoint, "nope", page_size=max_size(endpoint)))
        assert err.value.status == 404 and err.value.code == "not_found"


# ---------------------------------------------------------------------------------------------
# Cursors
# ---------------------------------------------------------------------------------------------

def test_tampered_garbage_or_reused_cursors_are_rejected(store: Store) -> None:
    window = (Cond("greater-or-equal", "datetime", ANCHOR - timedelta(days=200)),)
    first = store.query(Query("/events", conds=window, sort=("datetime", False), page_size=10))
    cursor = first.next_cursor
    assert cursor
    flipped = cursor[:-3] + ("A" if cursor[-3] != "A" else "B") + cursor[-2:]
    bad = [flipped, cursor[:-1], "garbage", "!!!", ""]
    for text in bad:
        with pytest.raises(StoreError) as err:
            store.query(Query("/events", conds=window, sort=("datetime", False), page_size=10, cursor=text or "x"))
        assert err.value.status == 400
    for other in (Query("/events", sort=("datetime", False), page_size=10, cursor=cursor),
                  Query("/events", conds=window, sort=("datetime", True), page_size=10, cursor=cursor),
                  Query("/profiles", page_size=10, cursor=cursor)):
        with pytest.raises(StoreError) as err:
            store.query(other)
        assert err.value.status == 400 and err.value.parameter == "page[cursor]"
    # the page size may change along a chain
    assert store.query(Query("/events", conds=window, sort=("datetime", False), page_size=3, cursor=cursor)).data


def test_pages_stay_exact_when_events_arrive_between_pages() -> None:
    store = new_store()
    order = ("datetime", False)
    before = walk(store, "/events", sort=order, size=1000)
    first = store.query(Query("/events", sort=order, page_size=100))
    boundary = datetime.fromisoformat(first.data[-1]["attributes"]["datetime"])
    late = store.mutate("add_events", count=4, now=boundary - timedelta(hours=1))["ids"]
    later = store.mutate("add_events", count=3, now=boundary + timedelta(hours=1))["ids"]
    cursor, rest = first.next_cursor, []
    while cursor:
        page = store.query(Query("/events", sort=order, page_size=100, cursor=cursor))
        rest += page.data
        cursor = page.next_cursor
    ids = [e["id"] for e in first.data + rest]
    counts = Counter(ids)
    assert all(counts[e["id"]] == 1 for e in before), "an unchanged event was skipped or repeated"
    assert set(later) <= set(ids)  # sorted after the cursor: reached
    assert not set(late) & set(ids)  # sorted before the cursor: missed, like any keyset API


def test_pages_stay_exact_when_profiles_change_between_pages() -> None:
    store = new_store()
    order = ("updated", False)
    before = [p["id"] for p in walk(store, "/profiles", sort=order, size=100)]
    first = store.query(Query("/profiles", sort=order, page_size=20))
    seen_ids = [p["id"] for p in first.data]
    moved = [seen_ids[3], before[60]]
    store.mutate("update_profiles", ids=moved, now=ANCHOR + timedelta(days=1))
    added = store.mutate("add_profiles", count=2, now=ANCHOR + timedelta(days=2))["ids"]
    rest = []
    cursor = first.next_cursor
    while cursor:
        page = store.query(Query("/profiles", sort=order, page_size=20, cursor=cursor))
        rest += [p["id"] for p in page.data]
        cursor = page.next_cursor
    counts = Counter(seen_ids + rest)
    assert all(counts[i] == 1 for i in before if i not in moved)
    assert counts[moved[0]] == 2 and counts[moved[1]] == 1  # seen, moved past the cursor, seen again
    assert rest[-2:] == added


# ---------------------------------------------------------------------------------------------
# Filters and sorts against an oracle that reads only the rendered resources
# ---------------------------------------------------------------------------------------------

class Oracle:
    """Field values of rendered resources, as a client would compute them."""

    def __init__(self, store: Store) -> None:
        self.store = store
        categories = walk(store, "/catalog-categories")
        self.item_categories: dict[str, list[str]] = {}
        for c in categories:
            for item in c["relationships"]["items"]["data"]:
                self.item_categories.setdefault(item["id"], []).append(c["id"])
        self.channel: dict[str, str] = {}
        for channel in ("email", "sms", "mobile_push"):
            for c in walk(store, "/campaigns", conds=(Cond("equals", "messages.channel", channel),)):
                self.channel[c["id"]] = channel

    def hidden(self, profile_id: str, field: str) -> Any:
        """`_kx` and `push_token` are filterable but never rendered: ask the data layer."""
        (i,) = self.store.profiles.lookup(Cond("equals", "id", profile_id)) or {-1}
        view = self.store.profiles.view
        return view.kx(i) if field == "_kx" else view.push_token(i)

    def value(self, endpoint: str, field: str, r: dict[str, Any]) -> Any:
        a, rel = r["attributes"], r.get("relationships", {})
        if field in ("id", "ids"):
            return r["id"]
        if field in ("_kx", "push_token"):
            return self.hidden(r["id"], field)
        if field in ("profile_id", "metric_id", "profile", "metric", "item.id", "coupon.id", "profile.id"):
            name = field.split("_")[0].split(".")[0]
            name = "items" if endpoint == "/catalog-categories" else name
            data = rel.get(name, {}).get("data")
            if isinstance(data, list):
                return [d["id"] for d in data]
            return data and data["id"] if field not in ("profile", "metric") else data is not None
        if field == "category.id":
            return self.item_categories.get(r["id"], [])
        if field == "messages.channel":
            return self.channel[r["id"]]
        if field in ("action_type", "status") and endpoint == "/flows/{id}/flow-actions":
            d = a["definition"]
            return d["type"] if field == "action_type" else (d.get("data") or {}).get("status")
        if field == "name" and endpoint == "/flow-actions/{id}/flow-messages":
            return a["definition"]["name"]
        if field.startswith("integration."):
            return a["integration"][field.split(".")[1]]
        if field.startswith("subscriptions."):
            *path, leaf = field.split(".")
            node = a["subscriptions"]
            for part in path[1:]:
                node = node.get(part) or {}
            items = node if isinstance(node, list) else []
            return [epoch(x[leaf]) if leaf == "timestamp" else x[leaf] for x in items]
        if field in ("datetime", "created", "updated", "created_at", "updated_at", "scheduled_at", "expires_at",
                     "joined_group_at"):
            return epoch(a.get(field))
        return a.get(field)


def holds(op: str, actual: Any, operand: Any) -> bool:
    """Klaviyo's operators over what the client sees; a list value matches if any element does."""
    if op == "has":
        return bool(actual)
    candidates = actual if isinstance(actual, list) else [actual]
    if isinstance(operand, datetime):
        operand = operand.timestamp()
    wanted = operand if isinstance(operand, list) else [operand]
    tests: dict[str, Callable[[Any], bool]] = {
        "equals": lambda x: x in wanted, "any": lambda x: x in wanted,
        "contains": lambda x: operand in x, "starts-with": lambda x: x.startswith(operand),
        "ends-with": lambda x: x.endswith(operand),
        "greater-than": lambda x: x > operand, "greater-or-equal": lambda x: x >= operand,
        "less-than": lambda x: x < operand, "less-or-equal": lambda x: x <= operand,
    }
    return any(x is not None and tests[op](x) for x in candidates)


def operands(op: str, shape: str, rule: dict[str, Any], samples: list[Any]) -> list[Any]:
    """Operands for one operator built from values present in the data (plus a miss)."""
    flat = [s for v in samples for s in (v if isinstance(v, list) else [v]) if s is not None]
    if not flat:
        return []
    if rule.get("format") == "date-time":
        return [datetime.fromtimestamp(v, timezone.utc) for v in flat[:3]] + (
            [datetime.fromtimestamp(flat[0] + 0.5, timezone.utc)] if op != "equals" else [])
    if rule.get("type") == "number":
        return [int(v) for v in flat[:2]] + [flat[0] + 0.5]
    if shape == "list":
        return [flat[:2], [flat[-1], "no-such-value"]]
    if op == "contains":
        return [str(flat[0])[1:4], "zzz-none"]
    if op == "starts-with":
        return [str(flat[0])[:3]]
    if op == "ends-with":
        return [str(flat[-1])[-3:]]
    return flat[:3] + (["no-such-value"] if rule.get("type") == "string" and "enum" not in rule else [])


def filter_targets(store: Store) -> list[tuple[str, str | None]]:
    truth = store.ground_truth()
    out: list[tuple[str, str | None]] = []
    for endpoint in store.endpoints():
        if not RULES[endpoint]["filters"]:
            continue
        parent = NESTED_PARENT.get(endpoint)
        if parent is None:
            out.append((endpoint, None))
        else:  # the parent with most children, so filters have something to bite on
            out.append((endpoint, max(truth[parent], key=lambda p: len(walk(store, endpoint, p)))))
    return out


def test_every_filter_field_and_operator_matches_the_oracle(store: Store) -> None:
    oracle = Oracle(store)
    checked = 0
    for endpoint, path_id in filter_targets(store):
        extra = {"additional_fields": {"profile": ("subscriptions",)}} if "profile" in RULES[endpoint][
            "fields"] else {}
        everything = walk(store, endpoint, path_id, **extra)
        assert everything, endpoint
        picks = [everything[0], everything[len(everything) // 2], everything[-1]]
        for field, rule in RULES[endpoint]["filters"].items():
            samples = [oracle.value(endpoint, field, r) for r in picks]
            for shape in ("single", "list", "none"):
                for op in rule.get(shape, ()):
                    for operand in [None] if shape == "none" else operands(op, shape, rule, samples):
                        got = [r["id"] for r in walk(store, endpoint, path_id, (Cond(op, field, operand),), **extra)]
                        want = [r["id"] for r in everything if holds(op, oracle.value(endpoint, field, r), operand)]
                        assert sorted(got) == sorted(want), (endpoint, field, op, operand)
                        checked += 1
    assert checked > 150


def test_filters_combine_with_and(store: Store) -> None:
    metric = walk(store, "/metrics")[7]["id"]
    since = ANCHOR - timedelta(days=120)
    conds = (Cond("equals", "metric_id", metric), Cond("greater-or-equal", "datetime", since),
             Cond("less-than", "datetime", ANCHOR))
    got = walk(store, "/events", conds=conds, sort=("datetime", False), size=5)
    want = [e for e in walk(store, "/events") if e["relationships"]["metric"]["data"]["id"] == metric
            and since.timestamp() <= e["attributes"]["timestamp"] < ANCHOR.timestamp()]
    assert got and sorted(e["id"] for e in got) == sorted(e["id"] for e in want)
    several = walk(store, "/events", conds=(Cond("equals", "metric_id", [metric, walk(store, "/metrics")[0]["id"]]),),
                   sort=("datetime", True), size=9)
    times = [e["attributes"]["timestamp"] for e in several]
    assert times == sorted(times, reverse=True) and len({e["id"] for e in several}) == len(several)


def sort_value(oracle: Oracle, endpoint: str, field: str, r: dict[str, Any]) -> Any:
    value = oracle.value(endpoint, "datetime" if field == "timestamp" else field, r)
    if isinstance(value, list):
        return value[0] if value else None
    return value


def test_every_sort_orders_records_and_keeps_them_all(store: Store) -> None:
    oracle = Oracle(store)
    hidden = {("/catalog-categories", "created")}  # sortable, but not an attribute (see the digest)
    for endpoint, path_id in [*filter_targets(store), ("/catalog-categories", None), ("/tags", None)]:
        extra = {"additional_fields": {"profile": ("subscriptions",)}} if "profile" in RULES[endpoint][
            "fields"] else {}
        everything = sorted(r["id"] for r in walk(store, endpoint, path_id, **extra))
        for spec_sort in RULES[endpoint]["sort"]:
            field, desc = spec_sort.lstrip("-"), spec_sort.startswith("-")
            records = walk(store, endpoint, path_id, sort=(field, desc), size=3, **extra)
            assert sorted(r["id"] for r in records) == everything, (endpoint, spec_sort)
            if (endpoint, field) in hidden:
                continue
            keys = [sort_value(oracle, endpoint, field, r) for r in records]
            ranked = [(k is not None, k) for k in keys]  # missing values first when ascending
            assert ranked == sorted(ranked, reverse=desc), (endpoint, spec_sort)


# ---------------------------------------------------------------------------------------------
# Sparse fieldsets, additional fields, includes
# ---------------------------------------------------------------------------------------------

def test_sparse_fieldsets_trim_attributes_including_dotted_paths(store: Store) -> None:
    page = store.query(Query("/profiles", page_size=5, fields={"profile": ("email", "location.city", "id")}))
    for p in page.data:
        assert set(p["attributes"]) == {"email", "location"} and set(p["attributes"]["location"]) == {"city"}
    page = store.query(Query("/profiles", page_size=5, additional_fields={"profile": ("subscriptions",)},
                             fields={"profile": ("subscriptions.email.marketing.consent",)}))
    for p in page.data:
        email = p["attributes"]["subscriptions"]["email"]
        assert email is None or set(email["marketing"]) == {"consent"}
    events = store.query(Query("/events", page_size=5, fields={"event": ("datetime",)})).data
    assert all(set(e["attributes"]) == {"datetime"} and e["relationships"] for e in events)


def test_additional_fields_only_on_request(store: Store) -> None:
    plain = store.query(Query("/profiles", page_size=10)).data
    assert not any({"subscriptions", "predictive_analytics"} & set(p["attributes"]) for p in plain)
    rich = store.query(Query("/profiles", page_size=10,
                             additional_fields={"profile": ("subscriptions", "predictive_analytics")})).data
    assert all({"subscriptions", "predictive_analytics"} <= set(p["attributes"]) for p in rich)
    list_id = store.ground_truth()["lists"][0]
    members = store.query(Query("/lists/{id}/profiles", list_id, page_size=10,
                                additional_fields={"profile": ("subscriptions",)})).data
    assert all("subscriptions" in m["attributes"] and m["attributes"]["joined_group_at"] for m in members)
    templates = walk(store, "/templates", additional_fields={"template": ("definition",)})
    assert any("definition" in t["attributes"] for t in templates)
    assert not any("definition" in t["attributes"] for t in walk(store, "/templates"))


def test_include_puts_each_related_resource_once_into_included(store: Store) -> None:
    cases = [
        ("/events", None, (), ("metric", "profile")),
        ("/campaigns", None, (Cond("equals", "messages.channel", "email"),), ("campaign-messages", "tags")),
        ("/flows", None, (), ("flow-actions", "tags")),
        ("/catalog-items", None, (), ("variants",)),
        ("/coupon-codes", None, (Cond("equals", "coupon.id", store.ground_truth()["coupons"][0]),), ("coupon",)),
        ("/campaigns/{id}/campaign-messages", store.ground_truth()["campaigns"][0], (), ("campaign", "template")),
        ("/lists", None, (), ("tags",)),
        ("/segments", None, (), ("tags",)),
        ("/tags", None, (), ("tag-group",)),
        ("/profiles", None, (), ("push-tokens",)),
    ]
    for endpoint, path_id, conds, include in cases:
        page = store.query(Query(endpoint, path_id, conds, page_size=max_size(endpoint), include=include,
                                 fields={"profile": ("email",)}))
        wanted = {(d["type"], d["id"]) for r in page.data for name in include
                  for d in (lambda x: x if isinstance(x, list) else [x] if x else [])(
                      r["relationships"].get(name, {}).get("data"))}
        got = [(r["type"], r["id"]) for r in page.included]
        assert got and len(got) == len(set(got)) and set(got) == wanted, (endpoint, include)
        for r in page.included:
            if r["type"] == "profile":
                assert set(r["attributes"]) == {"email"}  # fields[] applies to included resources too


# ---------------------------------------------------------------------------------------------
# Mutations and ground truth
# ---------------------------------------------------------------------------------------------

def test_event_mutations_and_ground_truth_until() -> None:
    store = new_store()
    now = ANCHOR + timedelta(days=3)
    fresh = store.mutate("add_events", count=3, now=now, metric="Placed Order")
    future = store.mutate("add_events", count=2, now=now, offset_seconds=30 * 86400)
    assert fresh["datetimes"] == ["2025-06-04T12:00:00+00:00"] * 3
    truth = store.ground_truth()
    assert set(fresh["ids"] + future["ids"]) <= set(truth["events"])
    assert not set(future["ids"]) & set(store.ground_truth(until=now + timedelta(seconds=1))["events"])
    later = now + timedelta(days=30)
    assert future["datetimes"][0] == later.isoformat()
    ahead = walk(store, "/events", conds=(Cond("greater-or-equal", "datetime", later),))
    assert set(future["ids"]) <= {e["id"] for e in ahead}
    placed = [e for e in walk(store, "/events", conds=(Cond("greater-or-equal", "datetime", now),
                                                        Cond("less-or-equal", "datetime", now)))]
    assert {e["id"] for e in placed} == set(fresh["ids"])
    assert all(e["attributes"]["event_properties"]["$value"] > 0 for e in placed)
    with pytest.raises(StoreError):
        store.mutate("add_events", metric="No Such Metric")


def test_profile_mutations_show_everywhere() -> None:
    store = new_store()
    now = ANCHOR + timedelta(days=1)
    added = store.mutate("add_profiles", count=2, now=now)["ids"]
    assert set(added) <= set(store.ground_truth()["profiles"])
    target = store.ground_truth()["profiles"][5]
    store.mutate("update_profiles", ids=[target], now=now + timedelta(hours=1))
    changed = walk(store, "/profiles", conds=(Cond("greater-than", "updated", now),))
    assert [p["id"] for p in changed] == [target]
    assert changed[0]["attributes"]["updated"] == "2025-06-02T13:00:00+00:00"
    # deletion: from profiles, every membership and every event, without a trace
    truth = store.ground_truth()
    member = truth["list_members"][0][1]
    had_events = walk(store, "/events", conds=(Cond("equals", "profile_id", member),))
    out = store.mutate("delete_profiles", ids=[member])
    assert out["events_deleted"] == len(had_events)
    truth = store.ground_truth()
    assert member not in truth["profiles"]
    assert not [m for m in truth["list_members"] + truth["segment_members"] if m[1] == member]
    assert not set(e["id"] for e in had_events) & set(truth["events"])
    assert not walk(store, "/profiles", conds=(Cond("equals", "id", member),))
    with pytest.raises(StoreError) as err:
        store.mutate("update_profiles", ids=[member])
    assert err.value.status == 404


def test_membership_joins_rejoins_and_removals() -> None:
    store = new_store()
    list_id = store.ground_truth()["lists"][0]
    existing = store.query(Query("/lists/{id}/profiles", list_id, page_size=1)).data[0]["id"]
    outsider = next(p for p in store.ground_truth()["profiles"]
                    if [list_id, p] not in store.ground_truth()["list_members"])
    now = ANCHOR + timedelta(days=2)
    store.mutate("add_members", kind="list", parent_id=list_id, ids=[existing, outsider], now=now)
    joined = walk(store, "/lists/{id}/profiles", list_id,
                  (Cond("greater-or-equal", "joined_group_at", now),), size=10)
    assert sorted(p["id"] for p in joined) == sorted([existing, outsider])
    assert all(p["attributes"]["joined_group_at"] == "2025-06-03T12:00:00+00:00" for p in joined)
    store.mutate("remove_members", kind="list", parent_id=list_id, ids=[existing])
    assert [list_id, existing] not in store.ground_truth()["list_members"]
    removed = store.mutate("remove_members", kind="segment", count=2)
    assert len(removed["ids"]) == 2
    assert not {(removed["parent_id"], p) for p in removed["ids"]} & {
        tuple(m) for m in store.ground_truth()["segment_members"]}
    with pytest.raises(StoreError):
        store.mutate("add_members", kind="group")


def test_campaign_and_flow_mutations_cascade() -> None:
    store = new_store()
    now = ANCHOR + timedelta(days=1)
    made = store.mutate("add_campaign", channel="sms", now=now)
    sms = walk(store, "/campaigns", conds=(Cond("equals", "messages.channel", "sms"),))
    assert made["ids"][0] in [c["id"] for c in sms]
    messages = store.query(Query("/campaigns/{id}/campaign-messages", made["ids"][0])).data
    assert [m["id"] for m in messages] == made["message_ids"] and messages[0]["attributes"]["definition"][
        "channel"] == "sms"
    old = store.ground_truth()["campaigns"][0]
    store.mutate("update_campaigns", ids=[old], now=now + timedelta(hours=2))
    recent = walk(store, "/campaigns", conds=(Cond("greater-than", "updated_at", now + timedelta(hours=1)),))
    assert [c["id"] for c in recent] == [old]
    gone = store.mutate("delete", table="campaigns", ids=[old])
    truth = store.ground_truth()
    assert old not in truth["campaigns"] and not set(gone["cascaded"]["campaign_messages"]) & set(
        truth["campaign_messages"])
    with pytest.raises(StoreError) as err:
        store.query(Query("/campaigns/{id}/campaign-messages", old))
    assert err.value.status == 404

    flow = store.mutate("add_flow", now=now)
    assert set(flow["action_ids"]) <= set(store.ground_truth()["flow_actions"])
    store.mutate("update_flows", ids=flow["ids"], now=now + timedelta(days=1))
    assert [f["id"] for f in walk(store, "/flows", conds=(Cond("equals", "updated", now + timedelta(days=1)),))
            ] == flow["ids"]
    store.mutate("delete", table="flows", ids=flow["ids"])
    truth = store.ground_truth()
    assert not set(flow["action_ids"] + flow["message_ids"]) & set(truth["flow_actions"] + truth["flow_messages"])


@pytest.mark.parametrize("table,child", [
    ("catalog_items", "catalog_variants"), ("coupons", "coupon_codes"), ("lists", "list_members"),
    ("segments", "segment_members"), ("tags", None), ("templates", None), ("catalog_categories", None),
    ("catalog_variants", None), ("coupon_codes", None),
])
def test_delete_takes_children_along(table: str, child: str | None) -> None:
    store = new_store()
    before = store.ground_truth()
    victim = before[table][0]
    store.mutate("delete", table=table, ids=[victim])
    after = store.ground_truth()
    assert after[table] == [i for i in before[table] if i != victim]
    if child and child.endswith("_members"):
        assert not [m for m in after[child] if m[0] == victim] and [m for m in before[child] if m[0] == victim]
    elif child:
        assert len(after[child]) < len(before[child])


def test_queries_and_mutations_from_many_threads() -> None:
    store = new_store()
    errors: list[BaseException] = []
    order = ("datetime", False)

    def reader() -> None:
        try:
            for _ in range(5):
                ids = [e["id"] for e in walk(store, "/events", sort=order, size=37)]
                assert len(ids) == len(set(ids))
                walk(store, "/profiles", sort=("updated", True), size=11)
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(4)]
    for t in threads:
        t.start()
    for k in range(20):
        store.mutate("add_events", count=3, offset_seconds=-k * 3600)
        store.mutate("update_profiles", count=2)
    for t in threads:
        t.join()
    assert not errors, errors[0]
    assert len(store.ground_truth()["events"]) == SIZES.events + 60


def test_bad_mutations_are_400() -> None:
    store = new_store()
    for op, kwargs in (("explode", {}), ("delete", {"table": "events", "ids": []}),
                       ("add_campaign", {"channel": "fax"}), ("add_profiles", {"count": 1, "colour": "red"})):
        with pytest.raises(StoreError) as err:
            store.mutate(op, **kwargs)
        assert err.value.status == 400, op


# ---------------------------------------------------------------------------------------------
# Determinism and data shape
# ---------------------------------------------------------------------------------------------

def test_same_seed_and_anchor_give_identical_pages() -> None:
    a, b, c = new_store(), new_store(), new_store(seed=4)
    for endpoint, path_id, conds in targets(a)[:40]:
        size = max_size(endpoint)
        pa = a.query(Query(endpoint, path_id, conds, page_size=size))
        pb = b.query(Query(endpoint, path_id, conds, page_size=size))
        assert json.dumps(pa.data) == json.dumps(pb.data) and pa.next_cursor == pb.next_cursor, endpoint
    assert a.ground_truth() == b.ground_truth() != c.ground_truth()


def test_ids_and_timestamps_look_like_klaviyos(store: Store) -> None:
    truth = store.ground_truth()
    assert all(len(i) == 26 and i.startswith("01") and i.isupper() for i in truth["profiles"])
    assert all(len(i) == 27 for i in truth["events"]) and all(len(i) == 6 for i in truth["metrics"])
    assert all(len(i) == 6 for i in truth["lists"] + truth["segments"] + truth["templates"])
    assert all(i.startswith("$custom:::$default:::") for i in truth["catalog_items"] + truth["catalog_variants"])
    assert all(code.split("-")[0] in truth["coupons"] for code in truth["coupon_codes"])
    assert all(i.isdigit() for i in truth["flow_actions"] + truth["flow_messages"])
    for e in store.query(Query("/events", page_size=50)).data:
        assert e["attributes"]["datetime"].endswith("+00:00") and len(e["attributes"]["datetime"]) == 25
        assert epoch(e["attributes"]["datetime"]) == e["attributes"]["timestamp"]


def test_event_history_has_old_future_and_crowded_seconds() -> None:
    store = Store(seed=9, sizes=Sizes(events=20_000, profiles=800), anchor=ANCHOR)
    ts = list(store.world.events.ts)
    now = ANCHOR.timestamp()
    old = sum(t < now - 366 * 86400 for t in ts) / len(ts)
    future = sum(t > now for t in ts) / len(ts)
    assert 0.003 < old < 0.03 and 0.001 < future < 0.015, (old, future)
    assert max(Counter(ts).values()) >= 5  # campaign sends and orders share seconds
    names = {m["attributes"]["name"] for m in walk(store, "/metrics")}
    assert {"Placed Order", "Received Email", "Opened Email", "Clicked SMS"} <= names


def test_every_resource_matches_the_spec_schema(store: Store) -> None:
    spec = load_spec()
    # oneOf -> anyOf: the spec's own alternatives overlap (EmailSendOptions, SMSSendOptions and PushSendOptions
    # are identical), so no payload, Klaviyo's included, can match exactly one of them
    root = json.loads(json.dumps(spec).replace('"oneOf"', '"anyOf"'))
    schemas = copy.deepcopy(root)

    def nullable(node: Any) -> Any:
        if isinstance(node, list):
            return [nullable(n) for n in node]
        if not isinstance(node, dict):
            return node
        out = {k: nullable(v) for k, v in node.items() if k != "nullable"}
        return {"anyOf": [out, {"type": "null"}]} if node.get("nullable") else out

    schemas = nullable(schemas)
    checked = 0
    for endpoint, path_id, conds in targets(store)[:60]:
        rule = RULES[endpoint]
        variants = [{}, {"include": tuple(rule["include"])}] + [
            {"additional_fields": {t: tuple(v)}} for t, v in rule["additional_fields"].items()]
        for extra in variants:
            page = store.query(Query(endpoint, path_id, conds, page_size=max_size(endpoint), **extra))
            doc = {"data": page.data, "links": {"self": "https://a.klaviyo.com/api"}}
            if "include" in extra:
                doc["included"] = page.included
            text = json.dumps(doc).replace('"/api/', '"https://a.klaviyo.com/api/')
            validator = jsonschema.Draft202012Validator({**schemas, "$ref": rule["response_schema"]})
            errors = [f"{list(e.absolute_path)}: {e.message[:200]}" for e in validator.iter_errors(json.loads(text))]
            assert not errors, (endpoint, extra, errors[:3])
            checked += 1
    assert checked > 40


def test_rendered_event_pages_are_the_resources_byte_for_byte() -> None:
    """The events fast path (text formatting) must answer exactly what the dicts serialize to, for every
    property template (8000 events reach 19 of the 20 metrics), also after mutations that add events
    and rename what their properties copy."""
    store = Store(seed=3, sizes=dataclasses.replace(SIZES, events=8000, profiles=800), anchor=ANCHOR)
    store.mutate("add_events", now=ANCHOR, count=40)
    store.mutate("update_campaigns", now=ANCHOR, count=3)
    store.mutate("update_flows", now=ANCHOR, count=2)
    store.mutate("delete_profiles", now=ANCHOR, count=5)
    events = store.colls["events"]
    records = list(events.records())
    q = Query("/events", page_size=1000, origin="http://127.0.0.1:8080")
    rendered = events.render(records, q.origin)
    assert rendered == orjson.dumps([store._resource(events, i, q, {}) for i in records])


def test_pages_with_and_without_the_fast_path_agree(store: Store) -> None:
    plain = walk(store, "/events", size=100)
    sparse = walk(store, "/events", size=100, fields={"event": ("datetime",)})
    included = walk(store, "/events", size=100, include=("profile", "metric"))
    assert [r["id"] for r in plain] == [r["id"] for r in sparse] == [r["id"] for r in included]
    assert all(r["attributes"].keys() == {"datetime"} for r in sparse)
    assert plain == included
