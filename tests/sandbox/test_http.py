"""The sandbox over real HTTP: Klaviyo's error answers, paging, filters, rate limits, faults, admin API."""

from __future__ import annotations

import os
import re
from datetime import datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from klaviyo_source.sandbox import Sandbox
from klaviyo_source.sandbox.rules import Rules

RULES = Rules().data["get"]
EMAIL = {"filter": "equals(messages.channel,'email')"}


def assert_error(response: requests.Response, status: int, parameter: str | None = None) -> dict[str, Any]:
    """A JSON:API error envelope with the given status (and source.parameter when given)."""
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"] == "application/vnd.api+json"
    errors = response.json()["errors"]
    assert len(errors) == 1
    error = errors[0]
    assert {"id", "code", "title", "detail"} <= set(error)
    if parameter is not None:
        assert error["source"]["parameter"] == parameter
    return error


def dt(text: str) -> datetime:
    return datetime.fromisoformat(text)


# --- auth, revision, routing -----------------------------------------------------------------------------


def test_missing_or_wrong_key_is_401(client: Any) -> None:
    assert_error(client.get("/events", Authorization=None), 401)
    assert_error(client.get("/events", Authorization="Klaviyo-API-Key pk_nope"), 401)
    error = assert_error(client.get("/events", Authorization=f"Bearer {client.sb.api_key}"), 401)
    assert error["code"] == "not_authenticated"


def test_key_without_scope_is_403(client: Any, sandbox: Sandbox) -> None:
    events_only = sandbox.create_key(["events:read"])
    assert client.get("/events", Authorization=f"Klaviyo-API-Key {events_only}").status_code == 200
    assert_error(client.get("/profiles", Authorization=f"Klaviyo-API-Key {events_only}"), 403)
    lists_only = sandbox.create_key(["lists:read"])
    list_id = client.get("/lists").json()["data"][0]["id"]
    response = client.get(f"/lists/{list_id}/profiles", Authorization=f"Klaviyo-API-Key {lists_only}")
    assert "profiles:read" in assert_error(response, 403)["detail"]


@pytest.mark.parametrize("revision", [None, "", "2026/07/15", "July 2026", "2026-13-01", "2026-10-16", "2022-10-17"])
def test_bad_revision_is_400(client: Any, revision: str | None) -> None:
    assert_error(client.get("/events", revision=revision), 400, "revision")


@pytest.mark.parametrize("revision", ["2026-07-15", "2024-10-15", "2026-07-15.pre", "2023-02-22", "2026-10-15"])
def test_known_revisions_are_accepted(client: Any, revision: str) -> None:
    assert client.get("/events", revision=revision).status_code == 200


def test_unknown_path_is_404_and_wrong_method_is_405(client: Any) -> None:
    assert_error(client.get("/nothing-here"), 404)
    assert_error(client.post("/events", {}), 405)


def test_trailing_slash_is_the_same_endpoint(client: Any) -> None:
    plain, slashed = client.get("/tags"), client.get("/tags/")
    assert plain.status_code == slashed.status_code == 200
    assert [r["id"] for r in plain.json()["data"]] == [r["id"] for r in slashed.json()["data"]]


# --- parameter validation --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "params", "parameter"),
    [
        ("/events", {"page[size]": "1001"}, "page[size]"),
        ("/events", {"page[size]": "0"}, "page[size]"),
        ("/events", {"page[size]": "ten"}, "page[size]"),
        ("/profiles", {"page[size]": "101"}, "page[size]"),
        ("/lists", {"page[size]": "11"}, "page[size]"),
        ("/metrics", {"page[size]": "10"}, "page[size]"),
        ("/events", {"sort": "created"}, "sort"),
        ("/profiles", {"sort": "-name"}, "sort"),
        ("/coupons", {"sort": "id"}, "sort"),
        ("/events", {"fields[event]": "datetime,nope"}, "fields[event]"),
        ("/events", {"fields[list]": "name"}, "fields[list]"),
        ("/events", {"include": "metric,lists"}, "include"),
        ("/profiles", {"additional-fields[profile]": "definition"}, "additional-fields[profile]"),
        ("/events", {"bogus": "1"}, "bogus"),
        ("/profiles", {"filter": "greater-or-equal(updated,2024-01-01T00:00:00Z)"}, "filter"),
        ("/profiles", {"filter": "greater-than(updated,'2024-01-01T00:00:00Z')"}, "filter"),
        ("/profiles", {"filter": "greater-than(updated,2024-01-01T00:00:00 00:00)"}, "filter"),
        ("/profiles", {"filter": "equals(first_name,'Ann')"}, "filter"),
        ("/profiles", {"filter": "equals(email,ann@example.com)"}, "filter"),
        ("/profiles", {"filter": "any(email,'a@example.com')"}, "filter"),
        ("/events", {"filter": "equals(metric_id,'x'"}, "filter"),
        ("/events", {"filter": "or(has(profile),has(metric))"}, "filter"),
        ("/campaigns", {}, "filter"),
        ("/campaigns", {"filter": "contains(name,'Sale')"}, "filter"),
        ("/campaigns", {"filter": "equals(messages.channel,'fax')"}, "filter"),
        ("/coupon-codes", {}, "filter"),
        ("/coupon-codes", {"filter": "equals(status,'USED')"}, "filter"),
    ],
)
def test_invalid_parameters_are_400(client: Any, path: str, params: dict[str, str], parameter: str) -> None:
    assert_error(client.get(path, params), 400, parameter)


def test_plus_offset_decoded_as_space_is_400_but_encoded_plus_works(client: Any) -> None:
    base = client.sb.base_url + "/events?filter=greater-than(datetime,2024-01-01T00:00:00{}00:00)"
    assert_error(client.get(base.format("+")), 400, "filter")
    assert client.get(base.format("%2B")).status_code == 200


@pytest.mark.parametrize(
    "value",
    [
        "2023-08-15T12:30:00",
        "2023-08-15T12:30:00Z",
        "2023-08-15 12:30:00Z",
        "2023-08-15T15:30:00+03:00",
        "2023-08-15T12:30:00.250Z",
    ],
)
def test_datetime_forms_klaviyo_accepts(client: Any, value: str) -> None:
    assert client.get("/events", {"filter": f"greater-or-equal(datetime,{value})"}).status_code == 200


# --- envelope, links, paging -----------------------------------------------------------------------------


def test_envelope_and_next_link_carry_the_original_query(client: Any) -> None:
    params = {
        "filter": "greater-or-equal(datetime,2000-01-01T00:00:00Z)",
        "sort": "-datetime",
        "fields[event]": "datetime,timestamp",
        "include": "metric",
        "page[size]": "7",
    }
    response = client.get("/events", params)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/vnd.api+json"
    doc = response.json()
    assert len(doc["data"]) == 7 and "included" in doc
    assert doc["data"][0]["links"]["self"].startswith(client.sb.base_url + "/")
    next_url = doc["links"]["next"]
    assert next_url.startswith(client.sb.base_url + "/events?")
    query = {k: v[0] for k, v in parse_qs(urlsplit(next_url).query).items()}
    assert query.pop("page[cursor]")
    assert query == params
    rendered = client.get("/events", {"include": "profile", "page[size]": "50"}).json()  # the events fast path
    links = [r["links"]["self"] for r in rendered["data"] + rendered["included"]]
    assert rendered["included"] and all(link.startswith(client.sb.base_url + "/") for link in links)


def test_non_paginated_endpoints_answer_everything_at_once(client: Any) -> None:
    doc = client.get("/accounts").json()
    assert len(doc["data"]) == 1 and doc["links"]["next"] is None
    campaign_id = client.get("/campaigns", EMAIL).json()["data"][0]["id"]
    doc = client.get(f"/campaigns/{campaign_id}/campaign-messages").json()
    assert doc["data"] and doc["links"]["next"] is None


def collections(client: Any) -> list[tuple[str, dict[str, str], str]]:
    """(path, required params, template) for every paginated collection, nested ones once per parent."""
    out = []
    ids = {
        name: [r["id"] for r in client.walk(path, params)]
        for name, path, params in (
            ("lists", "/lists", {}),
            ("segments", "/segments", {}),
            ("flows", "/flows", {}),
            ("coupons", "/coupons", {}),
        )
    }
    actions = [a["id"] for f in ids["flows"] for a in client.walk(f"/flows/{f}/flow-actions")]
    for template, rule in RULES.items():
        if rule["page"] is None:
            continue
        if template == "/campaigns":
            out += [
                (template, {"filter": f"equals(messages.channel,'{c}')"}, template)
                for c in ("email", "sms", "mobile_push")
            ]
        elif template == "/coupon-codes":
            out += [(template, {"filter": f"equals(coupon.id,'{c}')"}, template) for c in ids["coupons"]]
        elif "{id}" in template:
            parents = {
                "lists": ids["lists"],
                "segments": ids["segments"],
                "flows": ids["flows"],
                "flow-actions": actions,
            }[template.split("/")[1]]
            out += [(template.replace("{id}", p), {}, template) for p in parents]
        else:
            out.append((template, {}, template))
    return out


def test_every_page_size_returns_every_record_exactly_once(client: Any) -> None:
    for path, params, template in collections(client):
        page = RULES[template]["page"]
        reference = [r["id"] for r in client.walk(path, params)]
        assert len(reference) == len(set(reference)), path
        sizes = range(page["min"], page["max"] + 1) if page["param"] else [None]
        for size in sizes:
            if size is not None and size > len(reference) + 1 and size != page["max"]:
                continue  # larger pages all behave like one page: the max stands for them
            sized = {**params, "page[size]": str(size)} if size else params
            ids = [r["id"] for r in client.walk(path, sized)]
            assert sorted(ids) == sorted(reference) and len(ids) == len(set(ids)), (path, size)


def test_collections_hold_the_ground_truth(client: Any, sandbox: Sandbox) -> None:
    truth = sandbox.ground_truth()
    assert set(r["id"] for r in client.walk("/events", {"page[size]": "1000"})) == truth["events"]
    assert set(r["id"] for r in client.walk("/profiles", {"page[size]": "100"})) == truth["profiles"]
    members = {
        (list_id, r["id"])
        for list_id in truth["lists"]
        for r in client.walk(f"/lists/{list_id}/profiles", {"page[size]": "100"})
    }
    assert members == truth["list_members"]


# --- filters and sorts against brute force ---------------------------------------------------------------


def test_event_datetime_window_and_sort_match_brute_force(client: Any) -> None:
    events = client.walk("/events", {"page[size]": "1000"})
    times = sorted(dt(e["attributes"]["datetime"]) for e in events)
    low, high = times[len(times) // 4], times[3 * len(times) // 4]
    expected = sorted(
        (e for e in events if low <= dt(e["attributes"]["datetime"]) < high),
        key=lambda e: dt(e["attributes"]["datetime"]),
        reverse=True,
    )
    window = f"greater-or-equal(datetime,{low:%Y-%m-%dT%H:%M:%SZ}),less-than(datetime,{high:%Y-%m-%dT%H:%M:%SZ})"
    got = client.walk("/events", {"filter": window, "sort": "-datetime", "page[size]": "13"})
    assert sorted(e["id"] for e in got) == sorted(e["id"] for e in expected)
    got_times = [dt(e["attributes"]["datetime"]) for e in got]
    assert got_times == sorted(got_times, reverse=True)


def test_event_metric_filter_matches_brute_force(client: Any) -> None:
    events = client.walk("/events", {"page[size]": "1000"})
    metric_id = events[0]["relationships"]["metric"]["data"]["id"]
    expected = {e["id"] for e in events if e["relationships"]["metric"]["data"]["id"] == metric_id}
    got = client.walk("/events", {"filter": f"equals(metric_id,'{metric_id}')", "page[size]": "50"})
    assert {e["id"] for e in got} == expected


def test_profile_updated_filter_and_sort_match_brute_force(client: Any) -> None:
    profiles = client.walk("/profiles", {"page[size]": "100"})
    middle = sorted(dt(p["attributes"]["updated"]) for p in profiles)[len(profiles) // 2]
    expected = {p["id"] for p in profiles if dt(p["attributes"]["updated"]) > middle}
    got = client.walk(
        "/profiles",
        {"filter": f"greater-than(updated,{middle.isoformat().replace('+00:00', 'Z')})", "sort": "updated"},
    )
    assert {p["id"] for p in got} == expected
    updated = [dt(p["attributes"]["updated"]) for p in got]
    assert updated == sorted(updated)


def test_any_filter_matches_brute_force(client: Any) -> None:
    profiles = client.walk("/profiles", {"page[size]": "100"})
    wanted = [p["id"] for p in profiles[::7]]
    got = client.walk("/profiles", {"filter": "any(id,[" + ",".join(f'"{i}"' for i in wanted) + "])"})
    assert {p["id"] for p in got} == set(wanted)


# --- rate limits -----------------------------------------------------------------------------------------


@pytest.fixture
def limited(sandbox: Sandbox) -> Any:
    yield sandbox
    sandbox.configure(rate_limits="off")


def test_over_the_limit_is_429_with_retry_after(client: Any, limited: Sandbox) -> None:
    limited.configure(rate_limits={"/events": (1000, 3)})
    responses = [client.get("/events") for _ in range(7)]  # a minute boundary can reset the count once
    statuses = [r.status_code for r in responses]
    assert 429 in statuses
    before, throttled = responses[statuses.index(429) - 1], responses[statuses.index(429)]
    assert before.headers["RateLimit-Limit"] == "3" and before.headers["RateLimit-Remaining"] == "0"
    assert 1 <= int(before.headers["RateLimit-Reset"]) <= 60
    error = assert_error(throttled, 429)
    assert error["code"] == "throttled"
    retry_after = int(throttled.headers["Retry-After"])
    assert 1 <= retry_after <= 60
    assert error["detail"] == f"Request was throttled. Expected available in {retry_after} seconds."
    assert not any(h.lower().startswith("ratelimit-") for h in throttled.headers)
    assert client.get("/profiles").status_code == 200  # other endpoints keep their own windows
    assert limited.stats()["throttled"] >= 1


def test_real_limits_and_the_predictive_analytics_tier(client: Any, limited: Sandbox) -> None:
    limited.configure(rate_limits="real")
    plain = client.get("/profiles")
    predictive = client.get("/profiles", {"additional-fields[profile]": "predictive_analytics"})
    assert plain.headers["RateLimit-Limit"] == "750"
    assert predictive.headers["RateLimit-Limit"] == "150"
    assert int(predictive.headers["RateLimit-Remaining"]) == 149  # its own window, not the plain one
    assert client.get("/events").headers["RateLimit-Limit"] == "3500"


def test_rate_limit_off_sends_no_headers(client: Any) -> None:
    assert "RateLimit-Limit" not in client.get("/events").headers


# --- faults ----------------------------------------------------------------------------------------------


@pytest.fixture
def faulty(sandbox: Sandbox) -> Any:
    yield sandbox
    sandbox.clear_faults()
    sandbox.configure(latency=0.0)


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_status_faults_answer_error_envelopes(client: Any, faulty: Sandbox, status: int) -> None:
    faulty.configure(faults=[{"kind": "status", "status": status, "every": 2, "path": "/api/tags"}])
    statuses = [client.get("/tags").status_code for _ in range(4)]
    assert statuses == [200, status, 200, status]
    assert client.get("/events").status_code == 200  # other paths untouched


def test_status_fault_body_is_an_error_envelope(client: Any, faulty: Sandbox) -> None:
    faulty.configure(faults=[{"kind": "status", "status": 502, "every": 1}])
    assert_error(client.get("/tags"), 502)


def test_connection_reset_fault(client: Any, faulty: Sandbox) -> None:
    faulty.configure(faults=[{"kind": "reset", "every": 1}])
    with pytest.raises(requests.ConnectionError):
        client.get("/tags")
    faulty.clear_faults()
    assert client.get("/tags").status_code == 200


def test_truncated_body_fault(client: Any, faulty: Sandbox) -> None:
    faulty.configure(faults=[{"kind": "truncate", "every": 1}])
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        client.get("/tags")


def test_malformed_record_faults(client: Any, faulty: Sandbox) -> None:
    clean = client.get("/tags").json()["data"]
    faulty.configure(faults=[{"kind": "malformed", "every": 1, "variant": "drop_id"}])
    assert sum("id" not in r for r in client.get("/tags").json()["data"]) == 1
    faulty.configure(faults=[{"kind": "malformed", "every": 1, "variant": "wrong_type"}])
    broken = client.get("/tags").json()["data"]
    changed = [(a, b) for a, b in zip(clean, broken, strict=True) if a != b]
    assert len(changed) == 1
    ((before, after),) = changed
    name = next(iter(before["attributes"]))
    assert type(before["attributes"][name]) is not type(after["attributes"][name])


def test_probability_faults_are_seeded_and_partial(client: Any, faulty: Sandbox) -> None:
    faulty.configure(faults=[{"kind": "status", "status": 503, "probability": 0.5}])
    statuses = [client.get("/tags").status_code for _ in range(40)]
    assert 0 < statuses.count(503) < 40 and set(statuses) == {200, 503}


def test_outage_until_cleared(client: Any, faulty: Sandbox) -> None:
    faulty.configure(faults=[{"kind": "outage", "from_request": 3}])
    assert [client.get("/tags").status_code for _ in range(5)] == [200, 200, 503, 503, 503]
    faulty.clear_faults()
    assert client.get("/tags").status_code == 200


def test_latency_setting_is_applied(client: Any, faulty: Sandbox) -> None:
    assert faulty.configure(latency=0.01)["latency"] == 0.01
    assert client.get("/tags").status_code == 200


# --- admin API and handle --------------------------------------------------------------------------------


def test_stats_count_by_method_template_and_status(client: Any, sandbox: Sandbox) -> None:
    sandbox.reset_stats()
    list_id = client.get("/lists").json()["data"][0]["id"]
    client.get(f"/lists/{list_id}/profiles")
    client.get("/events", Authorization=None)
    stats = sandbox.stats()
    rows = {(r["method"], r["path"], r["status"]): r["count"] for r in stats["requests"]}
    assert rows == {
        ("GET", "/api/lists", 200): 1,
        ("GET", "/api/lists/{id}/profiles", 200): 1,
        ("GET", "/api/events", 401): 1,
    }
    assert stats["total"] == 3 and stats["throttled"] == 0


def test_mutation_shows_up_in_ground_truth_and_the_api(client: Any, sandbox: Sandbox) -> None:
    before = sandbox.ground_truth()["events"]
    sandbox.mutate("add_events", count=5, offset_seconds=-60)
    after = sandbox.ground_truth()["events"]
    assert len(after - before) == 5 and before <= after
    assert {e["id"] for e in client.walk("/events", {"page[size]": "1000"})} == after


def test_ground_truth_until_is_a_subset(sandbox: Sandbox) -> None:
    everything = sandbox.ground_truth()
    early = sandbox.ground_truth(until=datetime(2000, 1, 1))
    assert all(early[name] <= ids for name, ids in everything.items())


def test_admin_health_and_unknown_action(sandbox: Sandbox) -> None:
    assert sandbox.health()["base_url"] == sandbox.base_url
    origin = sandbox.base_url[: -len("/api")]
    assert requests.get(origin + "/__admin/nothing").status_code == 404
    assert requests.post(origin + "/__admin/configure", json={"faults": [{"kind": "meteor"}]}).status_code == 400


def test_api_key_looks_like_a_sandbox_key(sandbox: Sandbox) -> None:
    assert re.fullmatch(r"pk_sandbox_[0-9a-f]{32}", sandbox.api_key)


def test_process_mode_starts_and_stops() -> None:
    sb = Sandbox(seed=3, mode="process", rate_limits="off", events=30, profiles=10, startup_timeout=120)
    with sb:
        pid = sb.pid
        assert pid != os.getpid()
        response = requests.get(
            sb.base_url + "/events",
            headers={"Authorization": f"Klaviyo-API-Key {sb.api_key}", "revision": "2026-07-15"},
        )
        assert response.status_code == 200
        assert len(sb.ground_truth()["events"]) == 30
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
