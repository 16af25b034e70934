"""Requests shaped as other Klaviyo connectors send them, answered as Klaviyo would.

Written here from what Airbyte's source-klaviyo (declarative manifest) and Singer's tap-klaviyo send: revision
2024-10-15, `Accept: application/json`, bounds formatted with `%z` (`+0000`), `and(...)` filters with `archived`
partitions, windows of 7 to 60 days, links followed verbatim, related links of relationships, double-quoted
metric ids, Unix `timestamp` bounds, suppression-reason filters. Counts are compared with the ground truth.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
import requests

from klaviyo_source.sandbox import Sandbox

REVISION = "2024-10-15"  # what both connectors pin
START = datetime(2012, 1, 1, tzinfo=timezone.utc)  # Airbyte's default start date


class Peer:
    """A connector's HTTP habits: its headers, and `links.next` followed as given until it is null."""

    def __init__(self, sb: Sandbox) -> None:
        self.sb = sb
        self.session = requests.Session()
        self.session.headers.update({"Authorization": f"Klaviyo-API-Key {sb.api_key}", "revision": REVISION,
                                     "Accept": "application/json"})

    def get(self, path_or_url: str, params: dict[str, str] | None = None) -> dict[str, Any]:
        url = path_or_url if path_or_url.startswith("http") else self.sb.base_url + path_or_url
        response = self.session.get(url, params=params)
        assert response.status_code == 200, (url, params, response.text[:500])
        return response.json()

    def pages(self, path: str, params: dict[str, str] | None = None) -> Iterator[dict[str, Any]]:
        doc = self.get(path, params)
        yield doc
        while doc["links"].get("next"):
            doc = self.get(doc["links"]["next"])
            yield doc

    def records(self, path: str, params: dict[str, str] | None = None) -> list[dict[str, Any]]:
        return [r for doc in self.pages(path, params) for r in doc["data"]]


def z(moment: datetime) -> str:
    """Airbyte's datetime_format "%Y-%m-%dT%H:%M:%S%z"."""
    return moment.strftime("%Y-%m-%dT%H:%M:%S%z")


def windows(step: timedelta, end: datetime) -> Iterator[tuple[datetime, datetime]]:
    lo = START
    while lo < end:
        yield lo, min(lo + step, end)
        lo += step


@pytest.fixture(scope="module")
def peer(sandbox: Sandbox) -> Peer:
    return Peer(sandbox)


@pytest.fixture(scope="module")
def now() -> datetime:
    return datetime.now(timezone.utc).replace(microsecond=0) + timedelta(days=400)  # past any future-dated event


# --- Airbyte ---------------------------------------------------------------------------------------------


def test_airbyte_profiles_and_global_exclusions(peer: Peer, sandbox: Sandbox) -> None:
    truth = sandbox.ground_truth()
    for extra in ("subscriptions,predictive_analytics", "subscriptions"):
        found = peer.records("/profiles", {"additional-fields[profile]": extra, "sort": "updated",
                                           "filter": f"greater-than(updated,{z(START)})", "page[size]": "100"})
        assert len(found) == len({p["id"] for p in found}) == len(truth["profiles"])
        assert all("subscriptions" in p["attributes"] for p in found)


def test_airbyte_events_in_seven_day_windows(peer: Peer, sandbox: Sandbox, now: datetime) -> None:
    truth = sandbox.ground_truth()["events"]
    found: list[str] = []
    first = datetime.fromisoformat(peer.records("/events", {"sort": "datetime"})[0]["attributes"]["datetime"])
    for lo, hi in windows(timedelta(days=7), now):
        if hi < first:
            continue  # years of empty weeks before the account's first event: one request shows they are empty
        docs = list(peer.pages("/events", {
            "fields[event]": "event_properties,timestamp,uuid,datetime",
            "fields[metric]": "name,created,updated,integration",
            "include": "metric,attributions", "sort": "datetime",
            "filter": f"greater-or-equal(datetime,{z(lo)}),less-than(datetime,{z(hi)})"}))
        for doc in docs:
            assert len(doc["data"]) <= 200  # no page[size] before 2026-01-15: fixed pages of 200
            found += [e["id"] for e in doc["data"]]
            assert {r["type"] for r in doc.get("included", [])} <= {"metric", "attribution"}
    assert len(found) == len(set(found)) and set(found) == truth
    assert peer.records("/events", {"filter": f"less-than(datetime,{z(first)})"}) == []


def test_airbyte_templates_campaigns_and_flows(peer: Peer, sandbox: Sandbox, now: datetime) -> None:
    truth = sandbox.ground_truth()
    templates = peer.records("/templates", {"filter": f"greater-than(updated,{z(START)})", "sort": "updated"})
    assert {t["id"] for t in templates} == truth["templates"]
    campaigns: list[str] = []
    for channel in ("sms", "email"):
        for archived in ("true", "false"):
            for lo, hi in windows(timedelta(days=60), now):
                campaigns += [c["id"] for c in peer.records("/campaigns", {"sort": "updated_at", "filter": (
                    f"and(greater-or-equal(updated_at,{z(lo)}),less-or-equal(updated_at,{z(hi)}),"
                    f"equals(messages.channel,'{channel}'),equals(archived,{archived}))")})]
    expected = [c["id"] for ch in ("sms", "email")
                for c in peer.records("/campaigns", {"filter": f"equals(messages.channel,'{ch}')"})]
    assert sorted(campaigns) == sorted(expected) and expected
    flows: list[str] = []
    for archived in ("true", "false"):
        for lo, hi in windows(timedelta(days=30), now):
            flows += [f["id"] for f in peer.records("/flows", {"sort": "updated", "filter": (
                f"and(greater-or-equal(updated,{z(lo)}),less-or-equal(updated,{z(hi)}),equals(archived,{archived}))")})]
    assert sorted(flows) == sorted(truth["flows"])


def test_airbyte_campaign_messages_through_the_related_link(peer: Peer, sandbox: Sandbox) -> None:
    truth = sandbox.ground_truth()["campaign_messages"]
    found = []
    for channel in ("email", "sms", "mobile_push"):
        for campaign in peer.records("/campaigns", {"filter": f"equals(messages.channel,'{channel}')"}):
            related = campaign["relationships"]["campaign-messages"]["links"]["related"]
            found += [m["id"] for m in peer.get(related)["data"]]
    assert sorted(found) == sorted(truth)


def test_airbyte_metrics_lists_and_list_details(peer: Peer, sandbox: Sandbox) -> None:
    truth = sandbox.ground_truth()
    assert {m["id"] for m in peer.records("/metrics")} == truth["metrics"]
    lists = peer.records("/lists")
    assert {x["id"] for x in lists} == truth["lists"]
    for item in lists:
        detail = peer.get(f"/lists/{item['id']}", {"additional-fields[list]": "profile_count"})["data"]
        members = sum(1 for list_id, _ in truth["list_members"] if list_id == item["id"])
        assert detail["attributes"]["profile_count"] == members


def test_airbyte_campaign_values_reports_in_thirty_day_steps(peer: Peer, sandbox: Sandbox) -> None:
    metric = peer.records("/metrics")[0]["id"]
    statistics = ["opens", "opens_unique", "clicks", "clicks_unique", "delivered", "recipients", "conversions",
                  "conversion_value", "open_rate", "click_rate", "revenue_per_recipient", "average_order_value"]
    lo = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(days=60)
    for start in (lo, lo + timedelta(days=30)):
        body = {"data": {"type": "campaign-values-report", "attributes": {
            "statistics": statistics, "conversion_metric_id": metric,
            "timeframe": {"start": z(start), "end": z(start + timedelta(days=30))}}}}
        response = peer.session.post(sandbox.base_url + "/campaign-values-reports", json=body,
                                     headers={"Content-Type": "application/json"})
        assert response.status_code == 200, response.text[:300]
        for result in response.json()["data"]["attributes"]["results"]:
            assert set(result["statistics"]) == set(statistics)


# --- Singer ----------------------------------------------------------------------------------------------


def test_singer_events_per_metric_from_a_unix_timestamp(peer: Peer, sandbox: Sandbox) -> None:
    """tap-klaviyo: `equals(metric_id,"<id>"),greater-or-equal(timestamp,<epoch>)`, profiles and metrics included."""
    truth = sandbox.ground_truth()["events"]
    since = int(datetime(2020, 1, 1, tzinfo=timezone.utc).timestamp())
    found: list[str] = []
    for metric in peer.records("/metrics"):
        window = f'equals(metric_id,"{metric["id"]}"),greater-or-equal(timestamp,{since})'
        for doc in peer.pages("/events", {"include": "profile,metric", "sort": "datetime", "filter": window}):
            found += [e["id"] for e in doc["data"]]
            assert all(e["relationships"]["metric"]["data"]["id"] == metric["id"] for e in doc["data"])
            assert all(e["attributes"]["timestamp"] >= since for e in doc["data"])
    older = {e["id"] for e in peer.records("/events", {"filter": f"less-than(timestamp,{since})"})}
    assert len(found) == len(set(found)) and set(found) | older == truth and not set(found) & older


def test_singer_global_exclusions_by_suppression_reason(peer: Peer) -> None:
    everyone = peer.records("/profiles", {"additional-fields[profile]": "subscriptions", "page[size]": "100"})
    suppressed = {p["id"]: {s["reason"] for s in p["attributes"]["subscriptions"]["email"]["marketing"]["suppression"]}
                  for p in everyone if p["attributes"]["subscriptions"]["email"]}
    found: set[str] = set()
    for reason in ("HARD_BOUNCE", "USER_SUPPRESSED", "UNSUBSCRIBE", "INVALID_EMAIL"):
        ids = {p["id"] for p in peer.records("/profiles", {
            "filter": f"equals(subscriptions.email.marketing.suppression.reason,'{reason}')",
            "additional-fields[profile]": "subscriptions,predictive_analytics"})}
        assert ids == {p for p, reasons in suppressed.items() if reason in reasons}
        found |= ids
    assert found, "the account should hold suppressed profiles"


def test_singer_campaigns_and_lists_with_their_includes(peer: Peer, sandbox: Sandbox) -> None:
    truth = sandbox.ground_truth()
    docs = list(peer.pages("/campaigns", {"filter": "equals(messages.channel,'email')",
                                          "include": "tags,campaign-messages"}))
    messages = {r["id"] for d in docs for r in d.get("included", []) if r["type"] == "campaign-message"}
    wanted = {m["id"] for d in docs for c in d["data"] for m in c["relationships"]["campaign-messages"]["data"]}
    assert messages == wanted and messages <= truth["campaign_messages"]
    lists = list(peer.pages("/lists", {"include": "tags"}))
    assert {x["id"] for d in lists for x in d["data"]} == truth["lists"]
    tags = {t["id"] for d in lists for x in d["data"] for t in x["relationships"]["tags"]["data"]}
    assert tags == {r["id"] for d in lists for r in d.get("included", []) if r["type"] == "tag"}
