"""The sandbox's attribution model: `include=attributions` on the events, checked against an oracle that
reads only what a client sees (event times, profiles, metrics, `$message` / `$flow` properties)."""

from __future__ import annotations

import dataclasses
import json
from datetime import timedelta
from typing import Any

import jsonschema
import pytest

from klaviyo_source.sandbox.attribution import Windows
from klaviyo_source.sandbox.model import Query
from klaviyo_source.sandbox.store import Store
from tests.sandbox.test_store import ANCHOR, SIZES, walk
from tests.spec import load_spec

DAY = 86_400
# Klaviyo's message metrics: their events are sends and engagement, never conversions.
MESSAGE_METRICS = {"Received Email", "Opened Email", "Clicked Email", "Bounced Email", "Marked Email as Spam",
                   "Unsubscribed", "Received SMS", "Clicked SMS", "Failed to Deliver SMS",
                   "Unsubscribed from SMS Marketing", "Received Push", "Opened Push"}
TOUCH_WINDOWS = {"Opened Email": 5 * DAY, "Clicked Email": 5 * DAY, "Clicked SMS": 5 * DAY}
RELATIONSHIPS = ("event", "attributed-event", "campaign", "campaign-message", "flow", "flow-message",
                 "flow-message-variation")


@pytest.fixture(scope="module")
def store() -> Store:
    return Store(seed=5, sizes=dataclasses.replace(SIZES, events=6000, profiles=300), anchor=ANCHOR)


def events_with_attributions(store: Store) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
    """Every event oldest first, and every included attribution by id."""
    events: list[dict[str, Any]] = []
    included: dict[str, dict[str, Any]] = {}
    cursor = None
    while True:
        page = store.query(Query("/events", sort=("datetime", False), page_size=500, cursor=cursor,
                                 include=("attributions",)))
        events += page.data
        for resource in page.included:
            assert resource["type"] == "attribution" and "attributes" not in resource
            assert included.setdefault(resource["id"], resource) == resource
        cursor = page.next_cursor
        if cursor is None:
            return events, included


def expected_credit(store: Store, events: list[dict[str, Any]]) -> dict[str, tuple[str, ...]]:
    """conversion event id -> (touch event id, campaign, campaign message, flow, flow message) by last touch."""
    names = {m["id"]: m["attributes"]["name"] for m in walk(store, "/metrics")}
    campaign_of = {m["id"]: c for c in store.ground_truth()["campaigns"]
                   for m in walk(store, "/campaigns/{id}/campaign-messages", c)}
    last: dict[str, dict[str, tuple[int, dict[str, Any]]]] = {}
    out: dict[str, tuple[str, ...]] = {}
    for event in events:
        name = names[event["relationships"]["metric"]["data"]["id"]]
        profile = event["relationships"]["profile"]["data"]["id"]
        ts = event["attributes"]["timestamp"]
        props = event["attributes"]["event_properties"]
        if name in TOUCH_WINDOWS and "$message" in props:
            last.setdefault(profile, {})[name] = (ts, event)
        elif name not in MESSAGE_METRICS:
            eligible = [(t, e) for kind, (t, e) in last.get(profile, {}).items() if ts - t <= TOUCH_WINDOWS[kind]]
            if eligible:
                touch = max(eligible, key=lambda pair: (pair[0], events.index(pair[1])))[1]
                message = touch["attributes"]["event_properties"]
                flow = message.get("$flow")
                out[event["id"]] = (touch["id"], None if flow else campaign_of[message["$message"]],
                                    None if flow else message["$message"], flow, message["$message"] if flow else None,
                                    message["$message"] if flow else None)
    return out


def test_every_conversion_is_credited_to_the_last_touch_in_its_window(store: Store) -> None:
    events, included = events_with_attributions(store)
    expected = expected_credit(store, events)
    got: dict[str, tuple[str, ...]] = {}
    for event in events:
        listed = event["relationships"]["attributions"]["data"]
        assert len(listed) <= 1
        for ref in listed:
            rels = included[ref["id"]]["relationships"]
            assert rels["event"]["data"] == {"type": "event", "id": event["id"]}
            got[event["id"]] = tuple((rels.get(name) or {}).get("data", {}).get("id") for name in RELATIONSHIPS[1:])
    assert len(expected) > 100 and got == expected
    assert {r[0] for r in store.ground_truth()["event_attributions"]} == set(included)
    # campaigns and flows both earn credit, and no event carries the legacy property any more
    assert {g[1] is None for g in got.values()} == {True, False}
    assert not any("$attribution" in e["attributes"]["event_properties"] for e in events)


def test_ground_truth_rows_are_the_included_resources(store: Store) -> None:
    _, included = events_with_attributions(store)
    rows = {r[0]: r[1:] for r in store.ground_truth()["event_attributions"]}
    for ident, resource in included.items():
        rels = resource["relationships"]
        assert rows[ident] == [(rels.get(name) or {}).get("data", {}).get("id") for name in RELATIONSHIPS]
    limit = ANCHOR - timedelta(days=30)
    older = store.ground_truth(until=limit)["event_attributions"]
    assert 0 < len(older) < len(rows)


def test_attributions_validate_against_the_spec(store: Store) -> None:
    spec = load_spec()
    schemas = {"components": spec["components"]}
    validator = jsonschema.Draft202012Validator(
        {**schemas, "$ref": "#/components/schemas/AttributionResponseObjectResource"})
    _, included = events_with_attributions(store)
    for resource in list(included.values())[:200]:
        absolute = json.loads(json.dumps(resource).replace('"/api/', '"https://a.klaviyo.com/api/'))
        assert not [e.message for e in validator.iter_errors(absolute)], resource


def window_store() -> tuple[Store, str, int]:
    """A store and a profile; events far past the generated data, so only the test's own touches count."""
    store = Store(seed=2, sizes=dataclasses.replace(SIZES, events=200), anchor=ANCHOR)
    profile = store.ground_truth()["profiles"][0]
    return store, profile, int((ANCHOR + timedelta(days=800)).timestamp())


def add(store: Store, profile: str, at: int, metric: str) -> str:
    return store.mutate("add_events", now=at, metric=metric, profile_id=profile)["ids"][0]


def credit(store: Store, event: str) -> str | None:
    rows = {r[1]: r[2] for r in store.ground_truth()["event_attributions"]}
    return rows.get(event)


def test_window_edges_and_the_last_touch_wins() -> None:
    store, profile, t = window_store()
    click = add(store, profile, t, "Clicked Email")
    inside = add(store, profile, t + 5 * DAY, "Placed Order")
    outside = add(store, profile, t + 5 * DAY + 1, "Placed Order")
    assert credit(store, inside) == click and credit(store, outside) is None
    opened = add(store, profile, t + 6 * DAY, "Opened Email")
    sms = add(store, profile, t + 6 * DAY + 60, "Clicked SMS")
    order = add(store, profile, t + 7 * DAY, "Started Checkout")
    assert credit(store, order) == sms  # the last touch, whatever its kind
    assert credit(store, add(store, profile, t + 6 * DAY + 30, "Viewed Product")) == opened  # before the sms click
    assert credit(store, add(store, profile, t + 11 * DAY + 61, "Viewed Product")) is None  # both out of window
    before = add(store, profile, t + 20 * DAY, "Placed Order")
    add(store, profile, t + 20 * DAY + 5, "Clicked Email")  # a touch after the conversion never earns it
    assert credit(store, before) is None


def test_windows_are_account_settings_and_deleted_profiles_take_theirs_along() -> None:
    store, profile, t = window_store()
    add(store, profile, t, "Clicked SMS")
    order = add(store, profile, t + 2 * DAY, "Placed Order")
    assert credit(store, order) is not None
    store.attributions.configure(Windows(sms_click=DAY))  # an older account: SMS clicks count for 24 hours
    assert credit(store, order) is None
    store.attributions.configure(Windows())
    assert credit(store, order) is not None
    store.mutate("delete_profiles", ids=[profile])
    assert credit(store, order) is None


def test_events_list_their_attributions_without_include(store: Store) -> None:
    page = store.query(Query("/events", page_size=1000, sort=("datetime", True)))
    listed = [e for e in page.data if e["relationships"]["attributions"]["data"]]
    assert listed and not page.included
