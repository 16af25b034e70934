"""What self-verifying loads need from the sandbox, as Klaviyo documents it: metric aggregates, profile
counts on lists and segments with their own rate tier, id-only sparse fieldsets, and deletions, merges and
child edits whose effects on memberships and events are configurable and show in the ground truth."""

from __future__ import annotations

import time
from collections import Counter
from datetime import datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from klaviyo_source.sandbox import Sandbox
from klaviyo_source.sandbox.model import Cond
from tests.sandbox.conftest import SMALL_SIZES, Client
from tests.sandbox.test_store import ANCHOR, new_store, walk

ZONE = "America/New_York"


def aggregate_body(metric_id: str, lo: str, hi: str, **extra: Any) -> dict[str, Any]:
    attributes = {"metric_id": metric_id, "measurements": ["count"], "interval": "day", "timezone": ZONE,
                  "filter": [f"greater-or-equal(datetime,{lo})", f"less-than(datetime,{hi})"], **extra}
    return {"data": {"type": "metric-aggregate", "attributes": attributes}}


def local_days(events: list[dict[str, Any]]) -> Counter[str]:
    zone = ZoneInfo(ZONE)
    return Counter(datetime.fromisoformat(e["attributes"]["datetime"]).astimezone(zone).date().isoformat()
                   for e in events)


def test_metric_aggregates_count_each_local_day_like_the_events_endpoint(client: Client) -> None:
    """Naive bounds are wall-clock time in the query's timezone; buckets are its local days."""
    zone = ZoneInfo(ZONE)
    hi = datetime.now(timezone.utc).replace(microsecond=0)
    lo = (hi - timedelta(days=360)).astimezone(zone).replace(hour=0, minute=0, second=0, tzinfo=None)
    checked = 0
    for metric in client.walk("/metrics"):
        events = client.walk("/events", {"filter": f"equals(metric_id,'{metric['id']}')", "page[size]": "1000"})
        inside = [e for e in events
                  if lo.replace(tzinfo=zone) <= datetime.fromisoformat(e["attributes"]["datetime"]) < hi]
        body = aggregate_body(metric["id"], lo.isoformat(), hi.strftime("%Y-%m-%dT%H:%M:%SZ"))
        response = client.post("/metric-aggregates", body)
        assert response.status_code == 200, response.text
        attributes = response.json()["data"]["attributes"]
        (row,) = attributes["data"]
        counted = {d[:10]: n for d, n in zip(attributes["dates"], row["measurements"]["count"], strict=True) if n}
        assert counted == dict(local_days(inside))
        assert attributes["dates"][0] == lo.replace(tzinfo=zone).isoformat()  # local midnights
        checked += bool(counted)
    assert checked >= 5


def test_metric_aggregates_measurements_and_dimensions(client: Client) -> None:
    opened = next(m for m in client.walk("/metrics") if m["attributes"]["name"] == "Opened Email")
    events = client.walk("/events", {"filter": f"equals(metric_id,'{opened['id']}')", "page[size]": "1000"})
    recent = [e for e in events if e["attributes"]["datetime"] >= (datetime.now(timezone.utc)
                                                                    - timedelta(days=300)).isoformat()]
    lo = (datetime.now(timezone.utc) - timedelta(days=300)).strftime("%Y-%m-%dT%H:%M:%SZ")
    hi = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    recent = [e for e in recent if e["attributes"]["datetime"] < hi.replace("Z", "+00:00")]
    body = aggregate_body(opened["id"], lo, hi, measurements=["count", "unique"], interval="month",
                          by=["$message"])
    response = client.post("/metric-aggregates", body)
    assert response.status_code == 200, response.text
    rows = response.json()["data"]["attributes"]["data"]
    by_message = Counter(e["attributes"]["event_properties"]["$message"] for e in recent)
    assert {r["dimensions"][0]: sum(r["measurements"]["count"]) for r in rows} == dict(by_message)
    for row in rows:
        assert all(u <= c for u, c in zip(row["measurements"]["unique"], row["measurements"]["count"], strict=True))
    # a dimension filter narrows the events
    message = rows[0]["dimensions"][0]
    narrowed = client.post("/metric-aggregates", aggregate_body(
        opened["id"], lo, hi, interval="month", filter=[f"greater-or-equal(datetime,{lo})",
                                                         f"less-than(datetime,{hi})", f"equals($message,'{message}')"]))
    assert sum(narrowed.json()["data"]["attributes"]["data"][0]["measurements"]["count"]) == by_message[message]


@pytest.mark.parametrize(
    ("change", "detail"),
    [
        ({"filter": ["less-than(datetime,2024-01-01T00:00:00)"]}, "greater-or-equal"),
        ({"filter": ["greater-or-equal(datetime,2020-01-01T00:00:00)", "less-than(datetime,2022-01-01T00:00:00)"]},
         "one year"),
        ({"filter": ["greater-or-equal(datetime,'2024-01-01')", "less-than(datetime,2024-02-01T00:00:00)"]},
         "quoted"),
        ({"measurements": ["median"]}, "measurements"),
        ({"interval": "minute"}, "interval"),
        ({"timezone": "Mars/Olympus"}, "timezone"),
        ({"by": ["$nope"]}, "by"),
        ({"colour": "blue"}, "Unknown attributes"),
    ],
)
def test_metric_aggregates_reject_what_klaviyo_rejects(client: Client, change: dict[str, Any], detail: str) -> None:
    metric_id = client.walk("/metrics")[0]["id"]
    body = aggregate_body(metric_id, "2024-01-01T00:00:00", "2024-02-01T00:00:00")
    body["data"]["attributes"].update(change)
    response = client.post("/metric-aggregates", body)
    assert response.status_code == 400
    assert detail in response.json()["errors"][0]["detail"]


def test_profile_count_and_its_tier() -> None:
    with Sandbox(seed=5, rate_limits="real", **SMALL_SIZES) as sb:
        client = Client(sb)
        for path in ("/lists", "/segments"):
            rtype = path[1:-1]
            for group in client.walk(path):
                members = client.walk(f"{path}/{group['id']}/profiles", {"fields[profile]": "joined_group_at"})
                response = client.get(f"{path}/{group['id']}", {f"additional-fields[{rtype}]": "profile_count",
                                                                f"fields[{rtype}]": "profile_count"})
                assert response.status_code == 200, response.text
                assert response.json()["data"]["attributes"] == {"profile_count": len(members)}
                assert response.headers["RateLimit-Limit"] == "15"
                time.sleep(1.05)  # burst: 1/s
        lists = client.walk("/lists")
        assert client.get(f"/lists/{lists[0]['id']}").headers["RateLimit-Limit"] == "750"  # without it: L tier
        codes = []
        for _ in range(3):
            codes.append(client.get(f"/lists/{lists[0]['id']}", {"additional-fields[list]": "profile_count"})
                         .status_code)
        assert 429 in codes  # more than one a second


def test_id_only_sparse_fieldsets(client: Client) -> None:
    for path, rtype, extra in (("/profiles", "profile", {}), ("/templates", "template", {}),
                               ("/flows", "flow", {}),
                               ("/campaigns", "campaign", {"filter": "equals(messages.channel,'email')"})):
        full = client.walk(path, extra)
        lean = client.walk(path, {**extra, f"fields[{rtype}]": "id"})
        assert [r["id"] for r in lean] == [r["id"] for r in full]
        assert all(r["attributes"] == {} for r in lean)


def test_deletions_with_kept_or_deleted_events_and_memberships() -> None:
    store = new_store()
    truth = store.ground_truth()
    member = truth["list_members"][0][1]
    events = [e["id"] for e in walk(store, "/events", conds=(Cond("equals", "profile_id", member),))]
    out = store.mutate("delete_profiles", ids=[member], events="keep", memberships="remove")
    truth = store.ground_truth()
    assert out["events_deleted"] == 0 and set(events) <= set(truth["events"])
    assert member not in truth["profiles"] and not [m for m in truth["list_members"] if m[1] == member]
    # kept events still name the deleted profile and can be found by it
    assert [e["id"] for e in walk(store, "/events", conds=(Cond("equals", "profile_id", member),))] == events
    other = truth["segment_members"][0][1]
    out = store.mutate("delete_profiles", ids=[other], events="delete", memberships="keep")
    truth = store.ground_truth()
    assert out["event_ids"] == [e for e in out["event_ids"] if e not in truth["events"]]
    assert [m for m in truth["segment_members"] if m[1] == other]  # the membership stays, as asked
    with pytest.raises(Exception, match="events must be one of"):
        store.mutate("delete_profiles", ids=[truth["profiles"][0]], events="maybe")


def test_merge_moves_events_and_memberships_and_deletes_the_source() -> None:
    store = new_store()
    truth = store.ground_truth()
    source = truth["list_members"][0][1]
    list_id = truth["list_members"][0][0]
    target = next(p for p in truth["profiles"] if p != source and [list_id, p] not in truth["list_members"])
    moved = [e["id"] for e in walk(store, "/events", conds=(Cond("equals", "profile_id", source),))]
    now = ANCHOR + timedelta(days=2)
    out = store.mutate("merge_profiles", ids=[source], into=target, now=now)
    truth = store.ground_truth()
    assert source not in truth["profiles"] and sorted(out["events_moved"]) == sorted(moved)
    versions = store.versions()
    assert all(versions["events"][e] == target for e in moved)
    assert [list_id, target] in truth["list_members"] and [list_id, source] not in truth["list_members"]
    joined = walk(store, "/lists/{id}/profiles", list_id, (Cond("equals", "joined_group_at", now),))
    assert [p["id"] for p in joined] == [target]
    assert versions["profiles"][target] == "2025-06-03T12:00:00+00:00"  # the survivor changed
    # deleting the events instead of moving them
    victim, keeper = truth["profiles"][:2]
    had = [e["id"] for e in walk(store, "/events", conds=(Cond("equals", "profile_id", victim),))]
    store.mutate("merge_profiles", ids=[victim], into=keeper, events="delete", memberships="remove")
    assert not set(had) & set(store.ground_truth()["events"])


def test_events_klaviyo_no_longer_holds() -> None:
    store = new_store()
    gone = store.mutate("delete_events", count=7)["ids"]
    assert len(gone) == 7 and not set(gone) & set(store.ground_truth()["events"])
    metric = store.ground_truth()["metrics"][0]
    out = store.mutate("delete_events", count=2, metric=metric)["ids"]
    assert not set(out) & set(store.ground_truth()["events"])


def test_children_change_below_unchanged_parents() -> None:
    store = new_store()
    now = ANCHOR + timedelta(days=3)
    before = store.versions()
    for table, parent, marker in (("campaign_messages", "campaigns", "updated_at"),
                                  ("flow_actions", "flows", "updated"), ("flow_messages", "flows", "updated")):
        out = store.mutate("edit_children", table=table, count=2, now=now)
        after = store.versions()
        assert all(after[table][i] == "2025-06-04T12:00:00+00:00" for i in out["ids"])
        assert after[parent] == before[parent]  # the parents did not move
        assert out[marker] == "2025-06-04T12:00:00+00:00"
    edited = walk(store, "/flows", sort=("updated", True))
    assert edited[0]["attributes"]["updated"] < "2025-06-04"
    # children can also go on their own
    action = store.ground_truth()["flow_actions"][0]
    store.mutate("delete", table="flow_actions", ids=[action])
    assert action not in store.ground_truth()["flow_actions"]
