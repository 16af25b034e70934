"""The sandbox at Klaviyo's edges: revisions, the datetime grammar of filters, envelope details."""

from __future__ import annotations

import socket
from datetime import date, datetime, timezone
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from klaviyo_source.sandbox import Sandbox, revisions
from klaviyo_source.sandbox.rules import Rules
from tests.sandbox.conftest import Client
from tests.sandbox.test_http import assert_error

RULES = Rules().data["get"]

# --- revisions -------------------------------------------------------------------------------------------

# (path, params, the first revision that accepts them): API-NOTES §6
INTRODUCED = [
    ("/events", {"page[size]": "1000"}, "2026-01-15"),
    ("/lists", {"page[size]": "10"}, "2026-04-15"),
    ("/segments", {"page[size]": "10"}, "2026-04-15"),
    ("/templates", {"page[size]": "10"}, "2026-04-15"),
    ("/campaigns", {"page[size]": "100", "filter": "equals(messages.channel,'email')"}, "2026-04-15"),
    ("/catalog-items", {"page[size]": "100"}, "2026-04-15"),
    ("/catalog-variants", {"page[size]": "100"}, "2026-04-15"),
    ("/catalog-categories", {"page[size]": "100"}, "2026-04-15"),
    ("/coupons", {"page[size]": "100"}, "2026-04-15"),
    ("/tags", {"page[size]": "50"}, "2026-04-15"),
    ("/templates", {"additional-fields[template]": "definition"}, "2026-04-15"),
    ("/events", {"filter": "has(metric)"}, "2026-04-15"),
    ("/profiles", {"include": "conversations"}, "2026-07-15"),
]


def day_before(text: str) -> str:
    return date.fromordinal(date.fromisoformat(text).toordinal() - 1).isoformat()


@pytest.mark.parametrize(("path", "params", "since"), INTRODUCED)
def test_parameters_are_400_before_the_revision_that_introduced_them(
    client: Any, path: str, params: dict[str, str], since: str
) -> None:
    parameter = next(k for k in params if k != "filter" or "has(" in params[k])
    for older in ("2024-10-15", day_before(since)):
        assert_error(client.get(path, params, revision=older), 400, parameter)
    for newer in (since, "2026-07-15", "2026-10-15"):
        assert client.get(path, params, revision=newer).status_code == 200, (path, newer)


def test_coupon_codes_page_size_arrived_in_2026_04_15(client: Any) -> None:
    coupon = client.get("/coupons").json()["data"][0]["id"]
    params = {"filter": f"equals(coupon.id,'{coupon}')", "page[size]": "100"}
    assert_error(client.get("/coupon-codes", params, revision="2026-01-15"), 400, "page[size]")
    assert client.get("/coupon-codes", params, revision="2026-04-15").status_code == 200


def test_without_page_size_older_revisions_get_the_fixed_pages(client: Any) -> None:
    old = client.get("/events", revision="2024-10-15").json()
    assert len(old["data"]) == 200 and old["links"]["next"]  # events were fixed at 200 a page
    assert "page%5Bsize%5D" not in old["links"]["next"]
    assert len(client.get("/tags", revision="2026-01-15").json()["data"]) <= 50


def test_between_releases_a_revision_behaves_as_the_release_before(client: Any) -> None:
    assert_error(client.get("/lists", {"page[size]": "5"}, revision="2026-04-14"), 400, "page[size]")
    assert client.get("/lists", {"page[size]": "5"}, revision="2026-05-01").status_code == 200


def test_newest_public_revision_is_accepted_and_nothing_newer(client: Any) -> None:
    assert date(2026, 10, 15) == revisions.NEWEST
    assert client.get("/events", revision="2026-10-15").status_code == 200
    assert client.get("/events", revision="2026-10-15.pre").status_code == 200
    assert_error(client.get("/events", revision="2026-10-16"), 400, "revision")


@pytest.fixture
def real_limits(sandbox: Sandbox) -> Any:
    sandbox.configure(rate_limits="real")
    yield sandbox
    sandbox.configure(rate_limits="off")


def test_rate_tiers_follow_the_revision(client: Any, real_limits: Sandbox) -> None:
    """L class 700/m up to 2025-10-15 and 750/m from 2026-01-15; templates 150/m before 2025-10-15."""
    limit = {r: client.get("/profiles", revision=r).headers["RateLimit-Limit"] for r in ("2025-10-15", "2026-01-15")}
    assert limit == {"2025-10-15": "700", "2026-01-15": "750"}
    assert client.get("/templates", revision="2025-07-15").headers["RateLimit-Limit"] == "150"
    assert client.get("/templates", revision="2025-10-15").headers["RateLimit-Limit"] == "700"
    assert client.get("/events", revision="2024-10-15").headers["RateLimit-Limit"] == "3500"


def present(rule: dict[str, Any], fact: revisions.Since) -> bool:
    """Whether a rule holds what `fact` introduced."""
    if fact.parameter == "filter":
        field, op = (fact.value or "").split(":")
        ops = rule["filters"].get(field, {})
        return any(op in ops.get(shape, ()) for shape in ("single", "list", "none"))
    if fact.value is not None:
        return fact.value in rule["include"]
    return fact.parameter in rule["query_params"]


def test_every_revision_fact_names_something_the_spec_has() -> None:
    """The table withdraws only what the newest rules hold, exactly before the revision that brought it."""
    for fact in revisions.FACTS:
        for path in fact.endpoints:
            rule = RULES[path]
            assert present(rule, fact), (path, fact)
            before = date.fromordinal(fact.revision.toordinal() - 1)
            assert not present(revisions.rule_at(rule, path, before), fact), (path, fact)
            assert present(revisions.rule_at(rule, path, fact.revision), fact), (path, fact)
    for older in revisions.RATES:
        for path in older.endpoints:
            assert set(older.limits) <= set(RULES[path]["rate"]), path


# --- datetimes in filters --------------------------------------------------------------------------------

INSTANT = "2025-03-04T05:06:07Z"
SAME_INSTANT = [
    "2025-03-04T05:06:07Z",
    "2025-03-04T05:06:07+00:00",
    "2025-03-04T05:06:07+0000",
    "2025-03-04T05:06:07",
    "2025-03-04 05:06:07Z",
    "2025-03-04 05:06:07",
    "2025-03-04T08:06:07+03:00",
    "2025-03-04T08:06:07+0300",
    "2025-03-04T00:06:07-0500",
    "2025-03-04T05:06:07.000Z",
    "2025-03-04T05:06:07.000000000Z",  # nanoseconds
    "2025-03-04T05:06:07.0000000000000+00:00",
]
SAME_MINUTE = ["2025-03-04T05:06", "2025-03-04T05:06Z", "2025-03-04 05:06+00:00", "2025-03-04T05:06:00.0Z"]
SAME_DAY = ["2025-03-04", "2025-03-04T00:00", "2025-03-04T00:00:00Z"]
NOT_DATETIMES = [
    "2024-02-30T00:00:00Z",  # not on the calendar
    "2023-02-29",
    "2025-13-01T00:00:00Z",
    "2025-00-10",
    "2025-01-32",
    "2025-01-01T25:00:00Z",
    "2025-01-01T24:00:00Z",
    "2025-01-01T12:60:00Z",
    "2025-01-01T12:00:60Z",
    "2025-01-01T00:00:00+25:00",
    "2025-01-01T00:00:00+24:00",
    "2025-01-01T00:00:00+01:60",
    "0000-01-01",
    "0001-01-01T00:00:00+01:00",  # before year 1 in UTC
    "9999-12-31T23:59:59-01:00",  # after year 9999 in UTC
    "2025-01-01t00:00:00z",  # letters are upper-case
    "2025-01-01T00:00:00 00:00",  # '+' decoded as a space
    "2025-01-01T00:00:00+00",
    "2025-01-01T00",
    "2025-01-01Z",
    "20250101",
    "2025-1-1",
    "2025-01-01T00:00:00.Z",
    "2025-01-01T00:00:00,5Z",
    "1735689600",
    "today",
    "\uff12\uff10\uff12\uff15-01-01",  # full-width digits
]


def ids(client: Any, path: str, filter_: str) -> set[str]:
    return {r["id"] for r in client.walk(path, {"filter": filter_})}


@pytest.mark.parametrize("value", SAME_INSTANT)
def test_every_documented_datetime_form_names_the_same_instant(client: Any, value: str) -> None:
    expected = ids(client, "/events", f"greater-or-equal(datetime,{INSTANT})")
    assert ids(client, "/events", f"greater-or-equal(datetime,{value})") == expected


def test_minutes_without_seconds_and_date_only(client: Any) -> None:
    for forms in (SAME_MINUTE, SAME_DAY):
        found = [ids(client, "/events", f"less-than(datetime,{value})") for value in forms]
        assert all(f == found[0] for f in found), forms


@pytest.mark.parametrize("value", NOT_DATETIMES)
def test_anything_else_is_a_400_in_klaviyos_shape(client: Any, value: str) -> None:
    for path, field in (("/events", "datetime"), ("/profiles", "updated"), ("/flows", "updated")):
        op = "greater-than"
        error = assert_error(client.get(path, {"filter": f"{op}({field},{value})"}), 400, "filter")
        assert error["code"] == "invalid" and error["status"] == 400


def test_plus_offsets_as_airbyte_sends_them(client: Any) -> None:
    """Airbyte formats every bound with %z (`+0000`); the window must hold what the Z form holds."""
    window = "greater-or-equal(datetime,{}),less-than(datetime,{})"
    plus = window.format("2024-01-01T00:00:00+0000", "2030-01-01T00:00:00+0000")
    zulu = window.format("2024-01-01T00:00:00Z", "2030-01-01T00:00:00Z")
    found = ids(client, "/events", plus)
    assert found and found == ids(client, "/events", zulu)


def test_report_timeframes_take_the_same_grammar(client: Any) -> None:
    metric = client.get("/metrics").json()["data"][0]["id"]
    body = {"data": {"type": "campaign-values-report", "attributes": {
        "statistics": ["opens"], "conversion_metric_id": metric,
        "timeframe": {"start": "2025-01-01T00:00:00+0000", "end": "2025-02-01T00:00:00+0000"}}}}
    assert client.post("/campaign-values-reports", body).status_code == 200
    body["data"]["attributes"]["timeframe"] = {"start": "2025-02-30T00:00:00Z", "end": "2025-03-01T00:00:00Z"}
    assert_error(client.post("/campaign-values-reports", body), 400)


# --- envelope --------------------------------------------------------------------------------------------


def test_links_prev_is_null_on_a_first_page_and_leads_back_afterwards(client: Any) -> None:
    params = {"page[size]": "7", "sort": "datetime", "filter": "greater-than(datetime,2000-01-01T00:00:00Z)"}
    first = client.get("/events", params).json()
    assert "prev" in first["links"] and first["links"]["prev"] is None
    second = client.get(first["links"]["next"]).json()
    third = client.get(second["links"]["next"]).json()
    assert second["links"]["prev"] and third["links"]["prev"]
    back = client.get(third["links"]["prev"]).json()
    assert [r["id"] for r in back["data"]] == [r["id"] for r in second["data"]]
    assert client.get(back["links"]["next"]).json()["data"] == third["data"]
    start = client.get(back["links"]["prev"]).json()
    assert [r["id"] for r in start["data"]] == [r["id"] for r in first["data"]]
    assert start["links"]["prev"] is None


def test_prev_links_walk_every_record_back_in_every_order(client: Any) -> None:
    for path, params in (("/profiles", {"sort": "-updated"}), ("/tags", {}), ("/events", {"sort": "-timestamp"})):
        params = {**params, "page[size]": "3"}
        pages, doc = [], client.get(path, params).json()
        while True:
            pages.append([r["id"] for r in doc["data"]])
            if not doc["links"]["next"]:
                break
            doc = client.get(doc["links"]["next"]).json()
        backwards = []
        while doc["links"]["prev"]:
            doc = client.get(doc["links"]["prev"]).json()
            backwards.append([r["id"] for r in doc["data"]])
        assert backwards == pages[-2::-1], path


def test_next_links_percent_encode_brackets(client: Any) -> None:
    doc = client.get("/profiles", {"page[size]": "5", "filter": "greater-than(updated,2000-01-01T00:00:00+00:00)",
                                   "fields[profile]": "email"}).json()
    query = urlsplit(doc["links"]["next"]).query
    assert "page%5Bcursor%5D=" in query and "page%5Bsize%5D=5" in query and "fields%5Bprofile%5D=email" in query
    assert "[" not in doc["links"]["next"] and "]" not in doc["links"]["next"]
    assert "%2B00%3A00" in query  # the offset's '+' survives
    assert parse_qs(query)["filter"] == ["greater-than(updated,2000-01-01T00:00:00+00:00)"]


def test_relationships_carry_klaviyos_links(client: Any) -> None:
    checked = 0
    for path, params in (("/events", {}), ("/events", {"fields[event]": "datetime"}),
                         ("/campaigns", {"filter": "equals(messages.channel,'email')", "include": "campaign-messages"}),
                         ("/flows", {}), ("/coupon-codes", None), ("/profiles", {"include": "push-tokens"})):
        if params is None:
            coupon = client.get("/coupons").json()["data"][0]["id"]
            params = {"filter": f"equals(coupon.id,'{coupon}')"}
        doc = client.get(path, params).json()
        for resource in doc["data"] + doc.get("included", []):
            own = resource["links"]["self"]
            assert own.startswith(client.sb.base_url + "/") and own.endswith(f"/{resource['id']}/")
            for name, rel in resource.get("relationships", {}).items():
                assert rel["links"] == {"self": f"{own}relationships/{name}/", "related": f"{own}{name}/"}
                checked += 1
    assert checked > 100


def test_related_link_of_campaign_messages_is_served(client: Any) -> None:
    """Airbyte reads a campaign's messages from `relationships.campaign-messages.links.related`."""
    campaign = client.get("/campaigns", {"filter": "equals(messages.channel,'email')"}).json()["data"][0]
    related = client.get(campaign["relationships"]["campaign-messages"]["links"]["related"])
    assert related.status_code == 200
    expected = {m["id"] for m in campaign["relationships"]["campaign-messages"]["data"]}
    assert {m["id"] for m in related.json()["data"]} == expected


def test_400_answers_carry_ratelimit_headers(client: Any, real_limits: Sandbox) -> None:
    ok = client.get("/events")
    bad = client.get("/events", {"filter": "greater-than(datetime,2024-02-30T00:00:00Z)"})
    assert_error(bad, 400, "filter")
    assert bad.headers["RateLimit-Limit"] == ok.headers["RateLimit-Limit"] == "3500"
    assert int(bad.headers["RateLimit-Remaining"]) < int(ok.headers["RateLimit-Remaining"])
    assert 1 <= int(bad.headers["RateLimit-Reset"]) <= 60
    missing = client.get("/lists/nope/profiles")
    assert_error(missing, 404)
    assert missing.headers["RateLimit-Limit"] == "750"


@pytest.mark.parametrize("cursor", ["", " "])
def test_an_empty_page_cursor_is_a_400(client: Any, cursor: str) -> None:
    assert_error(client.get("/events", {"page[cursor]": cursor}), 400, "page[cursor]")
    assert_error(client.get(client.sb.base_url + "/profiles?page%5Bcursor%5D="), 400, "page[cursor]")


def test_profiles_without_email_match_no_suppression_filter() -> None:
    """`subscriptions.email` is null for a profile without an email: no suppression filter may match it (with
    this seed and size, three of them had suppressions behind their null subscriptions)."""
    with Sandbox(seed=7, rate_limits="off", events=10, profiles=2000) as sb:
        client = Client(sb)
        profiles = client.walk("/profiles", {"additional-fields[profile]": "subscriptions", "page[size]": "100"})
        check_suppression_filters(client, profiles)


def check_suppression_filters(client: Any, profiles: list[dict[str, Any]]) -> None:
    without_email = {p["id"] for p in profiles if p["attributes"]["subscriptions"]["email"] is None}
    assert len(without_email) > 50
    field = "subscriptions.email.marketing.suppression"
    for reason in ("HARD_BOUNCE", "UNSUBSCRIBE", "SPAM_COMPLAINT", "USER_SUPPRESSED", "INVALID_EMAIL"):
        found = client.walk("/profiles", {"filter": f"equals({field}.reason,'{reason}')",
                                          "additional-fields[profile]": "subscriptions"})
        assert not {p["id"] for p in found} & without_email
        for p in found:
            reasons = [s["reason"] for s in p["attributes"]["subscriptions"]["email"]["marketing"]["suppression"]]
            assert reason in reasons
    since = client.walk("/profiles", {"filter": f"greater-than({field}.timestamp,2000-01-01T00:00:00Z)"})
    assert not {p["id"] for p in since} & without_email


def raw_request(sb: Sandbox, head: str) -> bytes:
    """Send a hand-written request (what `requests` refuses to send) and read the whole answer."""
    host, port = urlsplit(sb.base_url).hostname, urlsplit(sb.base_url).port
    with socket.create_connection((host, port), timeout=10) as conn:
        conn.sendall(head.encode("latin-1"))
        chunks = []
        while chunk := conn.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


@pytest.mark.parametrize(("length", "status"), [("abc", 400), ("-1", 400), ("1e3", 400), ("99999999999", 413)])
def test_unreadable_content_length_is_answered_not_dropped(sandbox: Sandbox, length: str, status: int) -> None:
    answer = raw_request(sandbox, f"POST /api/campaign-values-reports HTTP/1.1\r\nHost: x\r\n"
                                  f"Content-Length: {length}\r\nConnection: close\r\n\r\n")
    assert answer.startswith(f"HTTP/1.1 {status} ".encode()) and b'"errors"' in answer


def test_timestamps_and_datetimes_agree_at_a_datetime_edge(client: Any) -> None:
    """A filter on `timestamp` (Singer's) and one on `datetime` select the same events."""
    moment = datetime(2025, 3, 4, 5, 6, 7, tzinfo=timezone.utc)
    by_datetime = ids(client, "/events", f"greater-or-equal(datetime,{moment.isoformat()})")
    by_timestamp = ids(client, "/events", f"greater-or-equal(timestamp,{int(moment.timestamp())})")
    assert by_datetime == by_timestamp


def test_other_methods_get_klaviyos_answers_not_the_servers(client: Any, sandbox: Sandbox) -> None:
    head = client.session.head(sandbox.base_url + "/tags", headers=client.headers)
    assert head.status_code == 200 and head.content == b"" and int(head.headers["Content-Length"]) > 0
    assert client.get("/tags").status_code == 200  # the kept-alive connection is still in step
    options = client.session.options(sandbox.base_url + "/tags", headers=client.headers)
    assert_error(options, 405)
    for method, status in (("BREW", 405), ("PROPFIND", 405)):
        answer = raw_request(sandbox, f"{method} /api/events HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert answer.startswith(f"HTTP/1.1 {status} ".encode()) and b'"errors"' in answer
    assert raw_request(sandbox, "BREW /api/nothing HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").startswith(
        b"HTTP/1.1 404 ")
