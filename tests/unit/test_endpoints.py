"""The endpoint table agrees with Klaviyo's spec at the pinned revision: caps, tiers, scopes, cursors."""

from __future__ import annotations

import re
from typing import Any

import pytest

from klaviyo_source.endpoints import (
    CHECKS,
    ENDPOINTS,
    NEWEST_REVISION,
    OLDEST_REVISION,
    PREDICTIVE_TIER,
    Endpoint,
    Mode,
)
from tests.spec import load_spec


def operation(endpoint: Endpoint) -> dict[str, Any]:
    return load_spec()["paths"]["/api" + endpoint.path]["post" if endpoint.mode is Mode.REPORT else "get"]


def resolve(ref: str) -> dict[str, Any]:
    node: Any = load_spec()
    for part in ref.lstrip("#/").split("/"):
        node = node[part]
    return node  # type: ignore[no-any-return]


def report_resource(endpoint: Endpoint) -> dict[str, Any]:
    """The request body's `data` schema of a reporting endpoint."""
    body = resolve(operation(endpoint)["requestBody"]["content"]["application/vnd.api+json"]["schema"]["$ref"])
    return resolve(body["properties"]["data"]["$ref"])


REPORTS = [e for e in ENDPOINTS if e.mode is Mode.REPORT]


def parameter(op: dict[str, Any], name: str) -> dict[str, Any] | None:
    return next((p for p in op["parameters"] if p.get("name") == name), None)


def rate(value: str) -> int:
    return int(re.match(r"(\d+)/", value).group(1))  # type: ignore[union-attr]


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=lambda e: e.table)
def test_page_size_is_the_spec_maximum(endpoint: Endpoint) -> None:
    page = parameter(operation(endpoint), "page[size]")
    if endpoint.page_size is None:
        assert page is None
    else:
        assert page is not None and page["schema"]["maximum"] == endpoint.page_size


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=lambda e: e.table)
def test_rate_tier_and_scopes(endpoint: Endpoint) -> None:
    op = operation(endpoint)
    limits = op["x-klaviyo-ratelimit"]
    assert (rate(limits["burst"]), rate(limits["steady"])) == (endpoint.tier.burst, endpoint.tier.steady)
    assert (rate(limits["daily"]) if "daily" in limits else None) == endpoint.tier.daily
    assert set(op["x-klaviyo-scopes"]) == set(endpoint.scopes)


@pytest.mark.parametrize("endpoint", REPORTS, ids=lambda e: e.table)
def test_reports_ask_for_what_the_spec_offers(endpoint: Endpoint) -> None:
    """Every statistic the endpoint offers, groupings it allows (those it requires), its interval, its paging."""
    report = endpoint.report
    assert report is not None
    resource = report_resource(endpoint)
    attributes = resource["properties"]["attributes"]
    props, required = attributes["properties"], attributes["required"]
    assert [report.type] == resolve(resource["properties"]["type"]["$ref"])["enum"]
    assert list(report.statistics) == props["statistics"]["items"]["enum"]
    if "group_by" in props:
        assert set(report.groupings) <= set(props["group_by"]["items"]["enum"])
        named = re.search(r"required: ([\w, ]+)", props["group_by"]["description"]).group(1)  # type: ignore[union-attr]
        assert {g.strip() for g in named.split(",")} <= set(report.groupings)
    else:
        assert report.groupings == ("segment_id",) and "segment_id" in props["filter"]["description"]
    assert report.conversion == ("conversion_metric_id" in required)
    if report.interval:
        assert "interval" in required and report.interval in props["interval"]["enum"]
        assert f"If {report.interval} is used, the timeframe cannot be longer than {report.days_per_call} days" in (
            props["interval"]["description"])
    paged = parameter(operation(endpoint), "page_cursor") is not None
    assert paged == report.paged
    assert endpoint.primary_key[: len(report.groupings)] == report.groupings
    assert endpoint.primary_key[len(report.groupings):] == report.period


@pytest.mark.parametrize("endpoint", [e for e in ENDPOINTS if e.mode is Mode.WINDOW], ids=lambda e: e.table)
def test_cursor_is_sortable_and_filterable_as_used(endpoint: Endpoint) -> None:
    op = operation(endpoint)
    assert endpoint.cursor in parameter(op, "sort")["schema"]["enum"]  # type: ignore[index]
    operators = op["x-klaviyo-filters"][endpoint.cursor]["operators"]["single"]
    lower = "greater-than" if endpoint.strict_lower else "greater-or-equal"
    assert lower in operators and "less-than" in operators
    if not endpoint.strict_lower:
        assert "greater-than" in operators  # sanity: strict_lower is only for endpoints lacking >=


def test_profiles_need_strict_lower_bound() -> None:
    """Profiles' updated filter has no greater-or-equal: the table must know it."""
    profiles = next(e for e in ENDPOINTS if e.table == "profiles")
    ops = operation(profiles)["x-klaviyo-filters"]["updated"]["operators"]["single"]
    assert "greater-or-equal" not in ops and profiles.strict_lower


@pytest.mark.parametrize("endpoint", [e for e in ENDPOINTS if e.params], ids=lambda e: e.table)
def test_extra_parameters_are_allowed_values(endpoint: Endpoint) -> None:
    op = operation(endpoint)
    for name, value in endpoint.params.items():
        param = parameter(op, name)
        assert param is not None, name
        schema = param["schema"]
        allowed = schema.get("items", schema).get("enum")
        for part in value.split(","):
            assert allowed is None or part in allowed, (name, part)


def test_predictive_tier_is_in_the_spec_text() -> None:
    text = operation(next(e for e in ENDPOINTS if e.table == "profiles"))["description"]
    assert f"{PREDICTIVE_TIER.burst}/s" in text and f"{PREDICTIVE_TIER.steady}/m" in text


@pytest.mark.parametrize("endpoint", [e for e in ENDPOINTS if e.parent_filter or e.partition_filter],
                         ids=lambda e: e.table)
def test_fixed_filters_use_allowed_fields(endpoint: Endpoint) -> None:
    filters = operation(endpoint)["x-klaviyo-filters"]
    for template in (endpoint.parent_filter, endpoint.partition_filter):
        if template:
            op, field, value = re.match(r"([a-z-]+)\(([^,]+),(.*)\)$", template).groups()  # type: ignore[union-attr]
            shape = "list" if value.startswith("[") else "single"
            assert op in filters[field]["operators"].get(shape, ()), (template, shape)


def test_parameters_the_oldest_supported_revision_lacks_agree_with_the_sandbox() -> None:
    """`since` says what the sandbox's revision table (API-NOTES §6) says, for every parameter the source sends."""
    from klaviyo_source.sandbox import revisions

    for endpoint in ENDPOINTS:
        for name in ("page[size]",):
            facts = [f for f in revisions.FACTS if endpoint.path in f.endpoints and f.parameter == name]
            expected = facts[0].revision.isoformat() if facts else ""
            assert endpoint.since.get(name, "") == expected, endpoint.table
    events = next(e for e in ENDPOINTS if e.table == "events")
    lists = next(e for e in ENDPOINTS if e.table == "lists")
    assert events.sends("page[size]", OLDEST_REVISION) and not lists.sends("page[size]", OLDEST_REVISION)
    assert lists.sends("page[size]", "2026-04-15") and lists.sends("page[size]", NEWEST_REVISION)
    assert lists.sends("sort", OLDEST_REVISION) and lists.sends("page[size]", "2026-04-15.pre")


@pytest.mark.parametrize("check", CHECKS, ids=lambda e: e.table)
def test_checks_are_served_as_used(check: Endpoint) -> None:
    """Count checks: the spec's method, scopes and tier (profile_count's own tier is stated in the prose)."""
    spec = load_spec()["paths"]["/api" + check.path]
    op = spec["post" if check.mode is Mode.AGGREGATE else "get"]
    assert set(op["x-klaviyo-scopes"]) == set(check.scopes)
    if check.mode is Mode.AGGREGATE:
        limits = op["x-klaviyo-ratelimit"]
        assert (rate(limits["burst"]), rate(limits["steady"])) == (check.tier.burst, check.tier.steady)
        return
    stated = op["description"].split("profile_count` parameter")[1]
    assert f"Burst: `{check.tier.burst}/s`" in stated and f"Steady: `{check.tier.steady}/m`" in stated
    for name, value in check.params.items():
        param = parameter(op, name)
        assert param is not None and value in param["schema"]["items"]["enum"], name


@pytest.mark.parametrize("endpoint", [e for e in ENDPOINTS if e.sweep], ids=lambda e: e.table)
def test_sweeps_use_allowed_sparse_fieldsets_includes_and_cursors(endpoint: Endpoint) -> None:
    sweep = endpoint.sweep_endpoint()
    op = operation(sweep)
    for name, value in sweep.params.items():
        param = parameter(op, name)
        assert param is not None, name
        assert all(part in param["schema"]["items"]["enum"] for part in value.split(",")), (name, value)
    if sweep.cursor:  # windowed like an incremental read, on a field that never changes
        assert sweep.cursor in parameter(op, "sort")["schema"]["enum"]  # type: ignore[index]
        operators = op["x-klaviyo-filters"][sweep.cursor]["operators"]["single"]
        assert "less-than" in operators and ("greater-or-equal" in operators or sweep.strict_lower)
    assert bool(sweep.included) == ("include" in sweep.params)  # children come along only when included


def test_merged_tables_carry_a_deletion_column() -> None:
    columns = {e.table: e.deletion_column for e in ENDPOINTS}
    assert columns["list_members"] == columns["segment_members"] == "removed_at"
    assert columns["events"] == columns["profiles"] == columns["flow_messages"] == "deleted_at"
    assert columns["lists"] is None  # replaced every run: a deleted list simply goes
