"""The sandbox's reporting POSTs, checked against oracles that read only what a client sees: campaigns'
send times, events with their attributions, segment memberships."""

from __future__ import annotations

import dataclasses
from collections import Counter
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from klaviyo_source.sandbox.model import Cond, StoreError
from klaviyo_source.sandbox.reports import MESSAGE_STATISTICS, SEGMENT_STATISTICS
from klaviyo_source.sandbox.store import Store
from tests.sandbox.test_attribution import events_with_attributions
from tests.sandbox.test_store import ANCHOR, SIZES, walk

KIND = {"Received Email": "recipients", "Received SMS": "recipients", "Received Push": "recipients",
        "Bounced Email": "recipients", "Failed to Deliver SMS": "recipients", "Opened Email": "opens",
        "Opened Push": "opens", "Clicked Email": "clicks", "Clicked SMS": "clicks"}


@pytest.fixture(scope="module")
def store() -> Store:
    return Store(seed=4, sizes=dataclasses.replace(SIZES, events=5000, profiles=300, campaigns=14), anchor=ANCHOR)


def account_tz(store: Store) -> ZoneInfo:
    return ZoneInfo(walk(store, "/accounts")[0]["attributes"]["timezone"])


def metric_id(store: Store, name: str) -> str:
    return next(m["id"] for m in walk(store, "/metrics") if m["attributes"]["name"] == name)


def everything(store: Store, kind: str, attributes: dict[str, Any]) -> dict[str, Any]:
    """A report's answer with every page's results."""
    page = store.report(kind, attributes)
    results = list(page.data["attributes"]["results"])
    while page.next_cursor:
        page = store.report(kind, attributes, page.next_cursor)
        results += page.data["attributes"]["results"]
    return {**page.data["attributes"], "results": results}


def test_campaign_figures_are_counted_by_send_date(store: Store) -> None:
    """Every campaign message sent in the timeframe, with all its figures (also those after the timeframe),
    conversions being the conversion metric's events attributed to it."""
    tz = account_tz(store)
    start, end = datetime(2024, 9, 1), datetime(2025, 3, 1)
    placed = metric_id(store, "Placed Order")
    names = {m["id"]: m["attributes"]["name"] for m in walk(store, "/metrics")}
    sent_in = set()
    for channel in ("email", "sms", "mobile_push"):
        for campaign in walk(store, "/campaigns", conds=(Cond("equals", "messages.channel", channel),)):
            sent = campaign["attributes"]["send_time"]
            if sent and start.replace(tzinfo=tz) <= datetime.fromisoformat(sent) < end.replace(tzinfo=tz):
                sent_in |= {m["id"] for m in walk(store, "/campaigns/{id}/campaign-messages", campaign["id"])}
    events, included = events_with_attributions(store)
    expected: dict[str, Counter[str]] = {}
    people: dict[str, dict[str, set[str]]] = {}
    value: dict[str, float] = {}
    for e in events:
        props, metric = e["attributes"]["event_properties"], names[e["relationships"]["metric"]["data"]["id"]]
        profile = e["relationships"]["profile"]["data"]["id"]
        message, kind = props.get("$message"), KIND.get(metric)
        if metric == "Placed Order":
            for ref in e["relationships"]["attributions"]["data"]:
                message = (included[ref["id"]]["relationships"].get("campaign-message") or {}).get("data", {}).get("id")
                kind = "conversions"
                value[message] = value.get(message, 0.0) + props["$value"]
        if message in sent_in and kind:
            expected.setdefault(message, Counter())[kind] += 1
            people.setdefault(message, {}).setdefault(kind, set()).add(profile)
    result = store.report("campaign-values-report", {
        "statistics": ["recipients", "opens", "opens_unique", "clicks", "conversions", "conversion_uniques",
                       "conversion_value", "open_rate"],
        "timeframe": {"start": start.isoformat() + "+00:00", "end": end.isoformat()},  # the offset is ignored
        "conversion_metric_id": placed,
    }).data
    got = {r["groupings"]["campaign_message_id"]: r for r in result["attributes"]["results"]}
    assert set(got) == set(expected) and len(got) >= 3
    assert {r["id"] for r in result["relationships"]["campaigns"]["data"]} == {
        r["groupings"]["campaign_id"] for r in got.values()}
    for message, counts in expected.items():
        stats = got[message]["statistics"]
        assert stats["recipients"] == counts["recipients"] and stats["opens"] == counts["opens"]
        assert stats["clicks"] == counts["clicks"] and stats["conversions"] == counts["conversions"]
        assert stats["opens_unique"] == len(people[message].get("opens", ()))
        assert stats["conversion_uniques"] == len(people[message].get("conversions", ()))
        assert stats["conversion_value"] == pytest.approx(value.get(message, 0.0))
        assert stats["open_rate"] == pytest.approx(stats["opens_unique"] / stats["recipients"], abs=0.05)
        assert set(got[message]["groupings"]) == {"campaign_id", "campaign_message_id", "send_channel"}
    assert any(c["conversions"] for c in expected.values())


def test_flow_series_adds_up_to_the_values_of_its_timeframe(store: Store) -> None:
    placed = metric_id(store, "Placed Order")
    timeframe = {"start": "2025-03-01T00:00:00", "end": "2025-04-30T00:00:00"}  # 60 days
    base = {"statistics": sorted(MESSAGE_STATISTICS), "timeframe": timeframe, "conversion_metric_id": placed}
    values = everything(store, "flow-values-report", base)
    series = everything(store, "flow-series-report", {**base, "interval": "daily"})
    tz = account_tz(store)
    days = [datetime.fromisoformat(d) for d in series["date_times"]]
    assert len(days) == 60 and all(d.time() == datetime.min.time() and d.utcoffset() == tz.utcoffset(d.replace(
        tzinfo=None)) for d in days)
    totals = {tuple(r["groupings"].values()): r["statistics"] for r in values["results"]}
    assert len(totals) >= 2 and set(totals) == {tuple(r["groupings"].values()) for r in series["results"]}
    for result in series["results"]:
        whole = totals[tuple(result["groupings"].values())]
        for name in ("recipients", "delivered", "opens", "clicks", "conversions", "bounced", "unsubscribes"):
            assert sum(result["statistics"][name]) == whole[name], name
        assert sum(result["statistics"]["opens_unique"]) >= whole["opens_unique"]  # unique per day
        assert sum(result["statistics"]["conversion_value"]) == pytest.approx(whole["conversion_value"])


def test_segment_series_follow_joins_and_leaves(store: Store) -> None:
    fresh = Store(seed=4, sizes=SIZES, anchor=ANCHOR)
    segment = fresh.ground_truth()["segments"][0]
    at = int((ANCHOR - timedelta(hours=1)).timestamp())
    before = {p["id"] for p in walk(fresh, "/segments/{id}/profiles", segment)}
    newcomers = sorted(set(fresh.ground_truth()["profiles"]) - before)[:4]
    fresh.mutate("add_members", now=at, kind="segment", parent_id=segment, ids=newcomers)
    fresh.mutate("remove_members", now=at, kind="segment", parent_id=segment, ids=newcomers[:1])
    fresh.mutate("remove_members", now=at, kind="segment", parent_id=segment, count=2)
    members = len(walk(fresh, "/segments/{id}/profiles", segment))
    end = (ANCHOR + timedelta(days=2)).replace(tzinfo=None)
    report = fresh.report("segment-series-report", {
        "statistics": sorted(SEGMENT_STATISTICS), "interval": "daily",
        "timeframe": {"start": (end - timedelta(days=60)).isoformat(), "end": end.isoformat()},
        "filter": f'equals(segment_id,"{segment}")'}).data["attributes"]
    (result,) = report["results"]
    stats = result["statistics"]
    assert result["groupings"] == {"segment_id": segment} and stats["total_members"][-1] == members
    for k in range(1, len(report["date_times"])):
        assert stats["net_members_changed"][k] == stats["members_added"][k] - stats["members_removed"][k]
        assert stats["total_members"][k] == stats["total_members"][k - 1] + stats["net_members_changed"][k]
    today = [d[:10] for d in report["date_times"]].index(
        datetime.fromtimestamp(at, account_tz(fresh)).date().isoformat())
    assert stats["members_added"][today] >= 4 and stats["members_removed"][today] >= 3
    values = fresh.report("segment-values-report", {
        "statistics": ["members_removed", "total_members"],
        "timeframe": {"start": (end - timedelta(days=365)).isoformat(), "end": end.isoformat()}}).data
    assert len(values["attributes"]["results"]) == len(fresh.ground_truth()["segments"])


def test_results_page_with_page_cursor(store: Store) -> None:
    paged = Store(seed=4, sizes=dataclasses.replace(SIZES, campaigns=20), anchor=ANCHOR)
    attributes = {"statistics": ["recipients"], "conversion_metric_id": metric_id(paged, "Placed Order"),
                  "timeframe": {"start": "2024-06-01T00:00:00", "end": "2025-06-01T00:00:00"}}
    whole = everything(paged, "campaign-values-report", attributes)["results"]
    paged.reports.page_size = 3
    pages = [paged.report("campaign-values-report", attributes)]
    while pages[-1].next_cursor:
        pages.append(paged.report("campaign-values-report", attributes, pages[-1].next_cursor))
    assert len(pages) > 2 and [r for p in pages for r in p.data["attributes"]["results"]] == whole
    with pytest.raises(StoreError, match="different report"):
        paged.report("campaign-values-report", {**attributes, "statistics": ["opens"]}, pages[0].next_cursor)


def test_flow_report_groups_and_filters(store: Store) -> None:
    placed = metric_id(store, "Placed Order")
    base = {"statistics": ["recipients", "delivered", "click_rate"], "timeframe": {"key": "last_365_days"},
            "conversion_metric_id": placed}
    store.report("flow-values-report", base)  # keyed timeframes resolve against today's date
    custom = {**base, "timeframe": {"start": "2024-06-02T00:00:00", "end": "2025-06-01T00:00:00"}}
    rows = store.report("flow-values-report", {**custom, "group_by": ["flow_id", "flow_message_id", "flow_name"]})
    results = rows.data["attributes"]["results"]
    assert results and all(set(r["groupings"]) == {"flow_id", "flow_message_id", "flow_name"} for r in results)
    flow = results[0]["groupings"]["flow_id"]
    only = store.report("flow-values-report", {**custom, "filter": f"equals(flow_id,\"{flow}\")"}).data
    flows = {r["groupings"]["flow_id"] for r in only["attributes"]["results"]}
    assert only["attributes"]["results"] and flows == {flow}


@pytest.mark.parametrize(("kind", "change", "message"), [
    ("flow-values-report", {"statistics": ["nope"]}, "statistics"),
    ("flow-values-report", {"timeframe": None}, "timeframe"),
    ("flow-values-report", {"group_by": ["flow_name"]}, "group_by"),
    ("flow-values-report", {"timeframe": {"key": "forever"}}, "timeframe key"),
    ("flow-values-report", {"conversion_metric_id": "XXXXXX"}, "conversion_metric_id"),
    ("flow-values-report", {"filter": "equals(colour,'red')"}, "filter"),
    ("flow-values-report", {"timeframe": {"start": "2023-01-01T00:00:00", "end": "2025-01-01T00:00:00"}}, "year"),
    ("flow-series-report", {"interval": "daily"}, "60 days"),
    ("flow-series-report", {"interval": "hourly", "timeframe": {"start": "2025-01-01T00:00:00",
                                                                "end": "2025-01-09T00:00:00"}}, "7 days"),
    ("flow-series-report", {"interval": "yearly"}, "interval"),
    ("segment-series-report", {"statistics": ["total_members"], "interval": "monthly",
                               "timeframe": {"start": "2023-05-01T00:00:00", "end": "2023-12-01T00:00:00"}},
     "June 1st, 2023"),
    ("segment-values-report", {"statistics": ["opens"]}, "statistics"),
    ("segment-values-report", {"statistics": ["total_members"], "filter": "equals(flow_id,'x')"}, "segment_id"),
    ("nonsense-report", {}, "report type"),
])
def test_bad_report_requests_are_400s(store: Store, kind: str, change: dict[str, Any], message: str) -> None:
    base = {"statistics": ["recipients"], "timeframe": {"start": "2024-06-02T00:00:00", "end": "2025-06-01T00:00:00"},
            "conversion_metric_id": metric_id(store, "Placed Order")}
    with pytest.raises(StoreError) as err:
        store.report(kind, {**base, **change})
    assert err.value.status == 400, message


def test_segment_reports_have_no_pages(store: Store) -> None:
    with pytest.raises(StoreError, match="no pages"):
        store.report("segment-values-report", {"statistics": ["total_members"], "timeframe": {"key": "last_7_days"}},
                     "anything")


# --- over HTTP ---------------------------------------------------------------------------------------------

def report_body(client: Any, kind: str = "campaign-values-report") -> dict[str, Any]:
    placed = next(m["id"] for m in client.walk("/metrics") if m["attributes"]["name"] == "Placed Order")
    return {"data": {"type": kind, "attributes": {"statistics": ["recipients", "opens"],
                                                  "timeframe": {"key": "last_365_days"},
                                                  "conversion_metric_id": placed}}}


def test_pages_follow_links_next_with_the_same_body(client: Any, sandbox: Any) -> None:
    body = report_body(client)
    whole = client.post("/campaign-values-reports", body).json()["data"]["attributes"]["results"]
    reports = sandbox._server.store.reports  # thread mode: the store is at hand
    reports.page_size = 2
    try:
        results, response = [], client.post("/campaign-values-reports", body)
        while True:
            doc = response.json()
            results += doc["data"]["attributes"]["results"]
            if not doc["links"].get("next"):
                break
            assert "page_cursor=" in doc["links"]["next"]
            response = client.session.post(doc["links"]["next"], json=body, headers=client.headers)
    finally:
        reports.page_size = 500
    assert len(whole) > 2 and results == whole


def test_the_daily_cap_is_a_429_until_the_next_utc_day(client: Any, sandbox: Any) -> None:
    sandbox.configure(rate_limits={"/campaign-values-reports": (100, 100, 2)})
    try:
        statuses = [client.post("/campaign-values-reports", report_body(client)) for _ in range(3)]
    finally:
        sandbox.configure(rate_limits="off")
    assert [r.status_code for r in statuses] == [200, 200, 429]
    now = datetime.now(ZoneInfo("UTC"))
    midnight = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    assert abs(int(statuses[2].headers["Retry-After"]) - (midnight - now).total_seconds()) <= 5
