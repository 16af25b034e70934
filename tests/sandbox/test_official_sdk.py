"""Klaviyo's official Python SDK (`klaviyo-api`, pinned to the release that speaks our revision) reads every
endpoint the source uses from the sandbox: its models deserialize every page, and what it reads is the ground
truth. A client nobody here wrote, so the sandbox cannot agree with the connector by sharing its mistakes."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import klaviyo_api
import pytest
from openapi_client import models
from openapi_client.exceptions import BadRequestException

from klaviyo_source import DEFAULT_REVISION, TABLES
from klaviyo_source.endpoints import BY_TABLE
from klaviyo_source.sandbox import Sandbox
from tests.integration.conftest import REPORT_TABLES

Page = Any  # a pydantic model of the SDK: .data, .links, .included


@pytest.fixture(scope="module")
def sdk(sandbox: Sandbox) -> Any:
    return klaviyo_api.KlaviyoAPI(sandbox.api_key, max_retries=0, test_host=sandbox.base_url[: -len("/api")])


class Attribution:
    """The SDK has no model for an included attribution: its enum and the event relationship models check it."""

    @staticmethod
    def from_dict(resource: dict[str, Any]) -> None:
        models.AttributionEnum(resource["type"])
        assert set(resource) == {"type", "id", "relationships", "links"} and resource["id"]
        models.EventResponseObjectResourceRelationshipsAttributionsDataInner.from_dict(
            {"type": resource["type"], "id": resource["id"]})


# The SDK hands `included` resources over as plain dicts; its own models check them here.
INCLUDED_MODELS = {
    "campaign-message": models.CampaignMessageResponseObjectResource,
    "metric": models.MetricResponseObjectResource,
    "profile": models.ProfileResponseObjectResource,
    "tag": models.TagResponseObjectResource,
    "attribution": Attribution,
}


def pages(call: Callable[..., Page], *args: Any, **kwargs: Any) -> Iterator[Page]:
    """Every page of a collection as the SDK's models, cursor after cursor (the SDK takes the cursor, not the
    link). A page the models could not take would raise, or come back as a dict, which fails here."""
    for _ in range(10_000):
        page = call(*args, **kwargs)
        assert not isinstance(page, dict), "the SDK fell back to a dict"
        for resource in getattr(page, "included", None) or []:
            INCLUDED_MODELS[resource["type"]].from_dict(resource)
        yield page
        if not page.links.next:
            return
        assert "page%5Bcursor%5D=" in page.links.next
        kwargs["page_cursor"] = parse_qs(urlsplit(page.links.next).query)["page[cursor]"][0]
    raise AssertionError("the cursor chain never ended")


def ids(call: Callable[..., Page], *args: Any, **kwargs: Any) -> list[str]:
    return [r.id for page in pages(call, *args, **kwargs) for r in page.data]


def test_the_pinned_sdk_speaks_the_pinned_revision() -> None:
    assert klaviyo_api.KlaviyoAPI._REVISION == DEFAULT_REVISION


def test_sdk_reads_every_endpoint_the_source_uses(sdk: Any, sandbox: Sandbox) -> None:
    truth = sandbox.ground_truth()
    read: dict[str, list[Any]] = {}
    read["accounts"] = ids(sdk.Accounts.get_accounts)
    read["events"], read["event_attributions"] = [], []
    for page in pages(sdk.Events.get_events, page_size=1000, sort="datetime", include=["attributions"]):
        read["events"] += [e.id for e in page.data]
        read["event_attributions"] += [a["id"] for a in page.included or [] if a["type"] == "attribution"]
    truth["event_attributions"] = {row[0] for row in truth["event_attributions"]}
    read["profiles"] = ids(sdk.Profiles.get_profiles, page_size=100, sort="updated",
                           additional_fields_profile=["subscriptions", "predictive_analytics"])
    read["metrics"] = ids(sdk.Metrics.get_metrics)
    read["lists"] = ids(sdk.Lists.get_lists, page_size=10)
    read["segments"] = ids(sdk.Segments.get_segments, page_size=10)
    read["list_members"] = [(list_id, profile) for list_id in read["lists"] for profile in ids(
        sdk.Lists.get_profiles_for_list, list_id, page_size=100, sort="joined_group_at")]
    read["segment_members"] = [(segment, profile) for segment in read["segments"] for profile in ids(
        sdk.Segments.get_profiles_for_segment, segment, page_size=100, additional_fields_profile=["subscriptions"])]
    read["campaigns"], read["campaign_messages"] = [], []
    for channel in ("email", "sms", "mobile_push"):
        for page in pages(sdk.Campaigns.get_campaigns, f"equals(messages.channel,'{channel}')",
                          include=["campaign-messages"], page_size=100):
            read["campaigns"] += [c.id for c in page.data]
            read["campaign_messages"] += [m["id"] for m in page.included or [] if m["type"] == "campaign-message"]
    by_campaign = [m for c in read["campaigns"] for m in ids(sdk.Campaigns.get_messages_for_campaign, c)]
    assert sorted(by_campaign) == sorted(read["campaign_messages"])
    read["flows"] = ids(sdk.Flows.get_flows, page_size=50)
    read["flow_actions"] = [a for f in read["flows"] for a in ids(sdk.Flows.get_actions_for_flow, f, page_size=50)]
    read["flow_messages"] = [
        m for a in read["flow_actions"] for m in ids(sdk.Flows.get_flow_action_messages, a, page_size=50)]
    read["templates"] = ids(sdk.Templates.get_templates, page_size=10, additional_fields_template=["definition"])
    read["tags"] = ids(sdk.Tags.get_tags, page_size=50)
    read["catalog_items"] = ids(sdk.Catalogs.get_catalog_items, page_size=100)
    read["catalog_variants"] = ids(sdk.Catalogs.get_catalog_variants, page_size=100)
    read["catalog_categories"] = ids(sdk.Catalogs.get_catalog_categories, page_size=100)
    read["coupons"] = ids(sdk.Coupons.get_coupons, page_size=100)
    read["coupon_codes"] = [code for coupon in read["coupons"] for code in ids(
        sdk.Coupons.get_coupon_codes, f"equals(coupon.id,'{coupon}')", page_size=100)]

    read.update(report_groupings(sdk, sandbox, truth))
    assert set(read) == set(TABLES), "the SDK must read every table the source loads"
    for table, found in read.items():
        assert len(found) == len(set(found)), f"{table}: read twice"
        assert set(found) == truth[table], table
        assert found, table


def test_sdk_reads_included_resources_and_sparse_fieldsets(sdk: Any) -> None:
    page = next(pages(sdk.Events.get_events, include=["metric", "profile"], page_size=50,
                      filter="greater-or-equal(datetime,2000-01-01T00:00:00+0000)"))
    assert {r["type"] for r in page.included} == {"metric", "profile"}
    event = page.data[0]
    assert event.relationships.profile.data.id and event.relationships.metric.links.related.endswith("/metric/")
    # with sparse fieldsets the SDK answers dicts (its models would miss required attributes)
    sparse = sdk.Profiles.get_profiles(fields_profile=["email", "location.city"], page_size=5)
    assert sparse["data"] and all(set(p["attributes"]) <= {"email", "location"} for p in sparse["data"])


def test_sdk_sees_klaviyos_error_for_a_bad_filter(sdk: Any) -> None:
    with pytest.raises(BadRequestException) as caught:
        sdk.Events.get_events(filter="greater-than(datetime,2025-02-30T00:00:00Z)")
    assert caught.value.status == 400 and "not a valid datetime" in caught.value.body


REPORT_CALLS = {
    "campaign-values-report": ("query_campaign_values", models.CampaignValuesRequestDTO),
    "flow-values-report": ("query_flow_values", models.FlowValuesRequestDTO),
    "flow-series-report": ("query_flow_series", models.FlowSeriesRequestDTO),
    "segment-series-report": ("query_segment_series", models.SegmentSeriesRequestDTO),
}


def report_groupings(sdk: Any, sandbox: Sandbox, truth: dict[str, Any]) -> dict[str, list[Any]]:
    """The groupings of every report table as the SDK reads them (its request and response models check
    both bodies); their ground truth, the sandbox's answer to the same query, goes into `truth`."""
    placed = next(m.id for m in next(pages(sdk.Metrics.get_metrics)).data if m.attributes.name == "Placed Order")
    read: dict[str, list[Any]] = {}
    for table in REPORT_TABLES:
        report = BY_TABLE[table].report
        assert report is not None
        span = "last_30_days" if report.interval else "last_365_days"  # a daily series covers 60 days at most
        attributes: dict[str, Any] = {"statistics": list(report.statistics), "timeframe": {"key": span}}
        if report.conversion:
            attributes.update(conversion_metric_id=placed, group_by=list(report.groupings))
        if report.interval:
            attributes["interval"] = report.interval
        method, model = REPORT_CALLS[report.type]
        answer = getattr(sdk.Reporting, method)(model.from_dict({"data": {"type": report.type,
                                                                           "attributes": attributes}}))
        assert not isinstance(answer, dict), "the SDK fell back to a dict"
        read[table] = [tuple(r.groupings[g] for g in report.groupings) for r in answer.data.attributes.results]
        truth[table] = {tuple(r["groupings"][g] for g in report.groupings)
                        for r in sandbox.report(report.type, attributes)["results"]}
    return read
