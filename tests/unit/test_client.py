"""The client's retry and error rules, and the page checks, against scripted answers (no network)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from typing import Any

import orjson
import pytest
import requests
from urllib3.exceptions import MaxRetryError, NewConnectionError, ProtocolError

from klaviyo_source import client as client_module
from klaviyo_source.client import KlaviyoClient, RetryPolicy
from klaviyo_source.endpoints import BY_TABLE
from klaviyo_source.errors import (
    AuthenticationError,
    InvalidRecordError,
    KlaviyoAPIError,
    RevisionError,
    RunCancelled,
)
from klaviyo_source.rows import parse_lazy, plain
from klaviyo_source.validate import PageCheck

KEY = "pk_unit_secret_0123456789"
FAST = RetryPolicy(attempts=4, base=0.001, cap=0.002)


class StubGovernor:
    """Records what the client tells the rate governor."""

    def __init__(self) -> None:
        self.acquired = 0
        self.waits: list[float] = []
        self.answers: list[float] = []
        self.sizes: list[int] = []
        self.in_hand = 0

    def acquire(self, sleep: Any = None) -> None:
        self.acquired += 1

    def observe(self, headers: Mapping[str, str]) -> None:
        pass

    def sent(self) -> int:
        return 1

    def returned(self, seconds: float | None, wire: int) -> None:
        if seconds is not None:
            self.answers.append(seconds)

    def sized(self, size: int) -> None:
        self.sizes.append(size)

    def hold(self, change: int) -> None:
        self.in_hand += change

    def decoded(self, seconds: float) -> None:
        pass

    def throttled(self, retry_after: float) -> None:
        self.waits.append(retry_after)


def answer(status: int, body: Any = None, headers: dict[str, str] | None = None, raw: bytes | None = None
           ) -> requests.Response:
    response = requests.Response()
    response.status_code = status
    response._content = raw if raw is not None else orjson.dumps(body if body is not None else {"data": []})
    response.headers.update(headers or {})
    return response


def klaviyo_error(status: int, detail: str, code: str = "error") -> dict[str, Any]:
    return {"errors": [{"id": "x", "code": code, "title": "Error", "detail": detail}]}


def scripted(client: KlaviyoClient, *answers: requests.Response | Exception) -> list[dict[str, Any]]:
    """Makes the client's session answer in this order; returns the list of requests it sent."""
    queue = list(answers)
    sent: list[dict[str, Any]] = []

    def get(url: str, params: Any = None, timeout: Any = None, stream: bool = False) -> requests.Response:
        sent.append({"url": url, "params": params})
        item = queue.pop(0)
        if isinstance(item, Exception):
            raise item
        return item

    client.session.get = get  # type: ignore[method-assign]
    return sent


# Small tables' pages are parsed to dicts, the Arrow tables' lazily: every rule holds for both.
PARSERS = pytest.mark.parametrize("decode", [orjson.loads, parse_lazy], ids=["dicts", "lazy"])


def parsed(document: Any, decode: Any) -> Any:
    """A document as the client hands it over when parsed with `decode`."""
    return decode(orjson.dumps(document))


@pytest.fixture
def client() -> KlaviyoClient:
    return KlaviyoClient(KEY, "https://a.klaviyo.com/api", "2026-07-15", retry=FAST)


def test_key_travels_only_in_the_authorization_header(client: KlaviyoClient) -> None:
    sent = scripted(client, answer(200))
    client.get("https://a.klaviyo.com/api/events", {"page[size]": "10"}, StubGovernor(), "/events")  # type: ignore[arg-type]
    assert client.session.headers["Authorization"] == f"Klaviyo-API-Key {KEY}"
    assert KEY not in repr(sent)


@pytest.mark.parametrize(
    "failure",
    [
        answer(503, klaviyo_error(503, "Service unavailable")),
        answer(500, raw=b"<html>oops</html>"),
        answer(524, raw=b""),
        answer(200, raw=b'{"data": [{"id": "a"'),  # a body cut short
        answer(200, {"errors": []}),  # JSON, but not a JSON:API document
        answer(200, raw=b'"data"'),  # JSON, but not an object
        answer(200, raw=b'{"data": ["\xff"]}'),  # not UTF-8
        requests.ConnectionError(ProtocolError("Connection aborted.", ConnectionResetError(104, "reset"))),
        requests.ReadTimeout("read timed out"),
        requests.exceptions.ChunkedEncodingError("IncompleteRead"),
    ],
    ids=["503", "500-html", "524", "truncated", "not-jsonapi", "not-object", "not-utf8", "reset", "timeout",
         "incomplete"],
)
@PARSERS
def test_transient_failures_are_retried(client: KlaviyoClient, failure: Any, decode: Any) -> None:
    good = {"data": [{"id": "1"}]}
    sent = scripted(client, failure, failure, answer(200, good))
    governor = StubGovernor()
    page = client.get("https://a.klaviyo.com/api/events", None, governor, "/events", decode=decode)  # type: ignore[arg-type]
    assert plain(page.document) == good
    assert len(sent) == 3 and governor.acquired == 3  # every attempt passes the rate governor


def test_persistent_5xx_fails_naming_endpoint_status_and_detail(client: KlaviyoClient) -> None:
    failures = [answer(503, klaviyo_error(503, "Klaviyo is down for maintenance")) for _ in range(FAST.attempts)]
    scripted(client, *failures)
    with pytest.raises(KlaviyoAPIError) as caught:
        client.get("https://a.klaviyo.com/api/events", None, StubGovernor(), "/events")  # type: ignore[arg-type]
    message = str(caught.value)
    assert message == (
        "Klaviyo /events: HTTP 503: Klaviyo is down for maintenance; gave up after 4 attempts."
    )


def test_persistent_reset_says_so_without_the_url(client: KlaviyoClient) -> None:
    reset = requests.ConnectionError(
        ProtocolError("Connection aborted.", ConnectionResetError(104, "Connection reset by peer")),
        request=None,
    )
    scripted(client, *[reset] * FAST.attempts)
    with pytest.raises(KlaviyoAPIError, match=r"^Klaviyo /events: no answer: connection reset; gave up after 4"):
        client.get("https://a.klaviyo.com/api/events?filter=x", None, StubGovernor(), "/events")  # type: ignore[arg-type]


def test_429_waits_retry_after_for_the_whole_endpoint(client: KlaviyoClient) -> None:
    throttled = answer(429, klaviyo_error(429, "Request was throttled."), {"Retry-After": "7"})
    scripted(client, throttled, throttled, answer(200))
    governor = StubGovernor()
    client.get("https://a.klaviyo.com/api/events", None, governor, "/events")  # type: ignore[arg-type]
    assert governor.waits == [7.0, 7.0]


def test_429_without_retry_after_backs_off_never_zero(client: KlaviyoClient) -> None:
    scripted(client, answer(429, klaviyo_error(429, "throttled")), answer(200))
    governor = StubGovernor()
    client.get("https://a.klaviyo.com/api/events", None, governor, "/events")  # type: ignore[arg-type]
    assert len(governor.waits) == 1 and governor.waits[0] > 0


def test_429_asking_for_hours_fails_at_once(client: KlaviyoClient) -> None:
    sent = scripted(client, answer(429, klaviyo_error(429, "Daily limit reached."), {"Retry-After": "7200"}))
    with pytest.raises(KlaviyoAPIError, match=r"^Klaviyo /reports: HTTP 429 \[throttled\]: Daily limit reached") as e:
        client.get("https://a.klaviyo.com/api/reports", None, StubGovernor(), "/reports")  # type: ignore[arg-type]
    assert len(sent) == 1
    assert "(Klaviyo asks to wait 7,200 s, longer than the 300 s a run waits: a daily cap? run again after " \
        in str(e.value)
    assert "waits)" not in str(e.value), "it never waited"


def test_429_that_never_ends_says_how_often_it_waited(client: KlaviyoClient) -> None:
    client.retry = RetryPolicy(attempts=4, base=0.001, cap=0.002, max_throttles=2)
    throttled = answer(429, klaviyo_error(429, "Request was throttled."), {"Retry-After": "1"})
    scripted(client, throttled, throttled, throttled)
    governor = StubGovernor()
    with pytest.raises(KlaviyoAPIError, match=r"\(still throttled after waiting 2 times\)"):
        client.get("https://a.klaviyo.com/api/events", None, governor, "/events")  # type: ignore[arg-type]
    assert governor.waits == [1.0, 1.0]


@pytest.mark.parametrize(
    ("status", "detail", "error", "expected"),
    [
        (401, "Missing or invalid private key.", AuthenticationError, "may be wrong or revoked"),
        (400, "Invalid revision header '2099-01-01'.", RevisionError, "pass a revision Klaviyo supports"),
        (410, "This revision has been retired.", RevisionError, "pass a revision Klaviyo supports"),
        (400, "Invalid filter.", KlaviyoAPIError, "Invalid filter"),
    ],
)
def test_client_errors_are_not_retried(
    client: KlaviyoClient, status: int, detail: str, error: type[KlaviyoAPIError], expected: str
) -> None:
    sent = scripted(client, answer(status, klaviyo_error(status, detail)))
    with pytest.raises(error) as caught:
        client.get("https://a.klaviyo.com/api/events", None, StubGovernor(), "/events")  # type: ignore[arg-type]
    assert type(caught.value) is error and len(sent) == 1
    assert str(caught.value).startswith(f"Klaviyo /events: HTTP {status} [error]: {detail}")
    assert expected in str(caught.value) and "\n" not in str(caught.value)


@PARSERS
def test_a_page_with_a_misfit_is_asked_for_once_more(client: KlaviyoClient, decode: Any) -> None:
    bad = {"data": [{"type": "event", "id": "E1", "attributes": {"datetime": "2024-01-01T00:00:00+00:00"}},
                    {"type": "event", "attributes": {"datetime": "2024-01-01T00:00:00+00:00"}}]}
    good = {"data": bad["data"][:1]}
    check = PageCheck(BY_TABLE["events"])
    url = "https://a.klaviyo.com/api/events"
    sent = scripted(client, answer(200, bad), answer(200, good))
    page = client.get(url, None, StubGovernor(), "/events", check, decode)  # type: ignore[arg-type]
    assert page.checked is not None and page.checked.table.column("id").to_pylist() == ["E1"]
    assert not page.checked.misfits and page.document is None  # a checked page keeps only its tables
    assert len(sent) == 2


@PARSERS
def test_the_same_misfit_twice_is_handed_over_at_once(client: KlaviyoClient, decode: Any,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    """An answer that fails the same check twice will not change: no minute of retries, the page as it is."""
    client.retry = RetryPolicy(attempts=8, base=30.0, cap=30.0)  # a third attempt would wait 15-30 s
    client._backoff = lambda attempt, *args, **kw: attempt + 1  # type: ignore[method-assign]
    bad = {"data": [event("E0"), event(ident=None)]}
    sent = scripted(client, answer(200, bad), answer(200, bad))
    page = client.get("https://a.klaviyo.com/api/events", None, StubGovernor(), "/events",  # type: ignore[arg-type]
                      PageCheck(BY_TABLE["events"]), decode)
    assert len(sent) == 2 and page.checked is not None
    assert page.checked.table.column("id").to_pylist() == ["E0"]
    assert [m.describe() for _, m in page.checked.misfits] == ["record 1 of the page: field 'id' is missing"]


@PARSERS
def test_misfits_that_change_are_retried_until_the_attempts_are_used(client: KlaviyoClient, decode: Any) -> None:
    pages = [answer(200, {"data": [event("E0"), event(f"E{i}", timestamp=f"t{i}")]}) for i in range(FAST.attempts)]
    sent = scripted(client, *pages)
    page = client.get("https://a.klaviyo.com/api/events", None, StubGovernor(), "/events",  # type: ignore[arg-type]
                      PageCheck(BY_TABLE["events"]), decode)
    assert len(sent) == FAST.attempts and page.checked is not None
    assert [m.record_id for _, m in page.checked.misfits] == [f"E{FAST.attempts - 1}"]


@PARSERS
def test_a_page_that_is_no_list_of_records_fails_after_the_retries(client: KlaviyoClient, decode: Any) -> None:
    scripted(client, *[answer(200, {"data": {"id": "E1"}}) for _ in range(FAST.attempts)])
    with pytest.raises(InvalidRecordError) as caught:
        client.get("https://a.klaviyo.com/api/events", None, StubGovernor(), "/events",  # type: ignore[arg-type]
                   PageCheck(BY_TABLE["events"]), decode)
    assert str(caught.value).startswith(
        "Klaviyo /events: HTTP 200: 'data' is dict {'id': 'E1'}, expected a list of records; gave up after 4"
    )


def test_next_link_to_another_host_is_not_followed(client: KlaviyoClient) -> None:
    page = {"data": [], "links": {"next": "https://evil.example.com/api/events?page[cursor]=x"}}
    sent = scripted(client, answer(200, page))
    with pytest.raises(KlaviyoAPIError, match="another host"):
        list(client.pages("/events", {}, StubGovernor(), "/events"))  # type: ignore[arg-type]
    assert len(sent) == 1


def test_backoff_is_exponential_jittered_and_bounded() -> None:
    policy = RetryPolicy(base=0.5, cap=30.0)
    for attempt in range(12):
        step = min(30.0, 0.5 * 2**attempt)
        delays = {policy.delay(attempt) for _ in range(50)}
        assert all(step / 2 <= d <= step for d in delays) and len(delays) > 1


# --- page checks ------------------------------------------------------------------------------------

def event(ident: Any = "E1", **attributes: Any) -> dict[str, Any]:
    base = {"datetime": "2024-05-01T12:00:00+00:00", "timestamp": 1714564800, "uuid": "u",
            "event_properties": {"$value": 3}}
    record: dict[str, Any] = {"type": "event", "attributes": {**base, **attributes},
                              "relationships": {"profile": {"data": {"type": "profile", "id": "P1"}}}}
    if ident is not None:
        record["id"] = ident
    return record


def misfits(check: PageCheck, document: Any, decode: Any) -> list[str]:
    return [m.describe() for _, m in check(parsed(document, decode)).misfits]


@pytest.mark.parametrize(
    ("record", "problem"),
    [
        (event(ident=None), "record 1 of the page: field 'id' is missing"),
        ({**event(ident=None), "id": None}, "record 1 of the page: field 'id' is null, expected a string"),
        (event(ident=17), "record 1 of the page: field 'id' is int 17, expected a string"),
        (event(ident=""), "record 1 of the page: field 'id' is str '', expected a string"),
        (event(timestamp="not-a-number"), "record 1 (id E1) of the page: field 'timestamp' is str 'not-a-number', "
                                          "expected an integer"),
        (event(timestamp=1.5), "field 'timestamp' is float 1.5, expected an integer"),
        (event(timestamp=True), "field 'timestamp' is bool True, expected an integer"),
        (event(datetime="yesterday"), "record 1 (id E1) of the page: cursor field 'datetime' is str 'yesterday', "
                                      "expected an ISO 8601 datetime"),
        (event(datetime="2024-02-30T12:00:00Z"), "cursor field 'datetime' is str '2024-02-30T12:00:00Z'"),
        (event(datetime=1714564800), "cursor field 'datetime' is int 1714564800"),
        (event(datetime=None), "cursor field 'datetime' is null, expected an ISO 8601 datetime"),
        ({"id": "E1", "type": "event", "attributes": {"uuid": "u"}}, "cursor field 'datetime' is missing"),
        (event(uuid=True), "field 'uuid' is bool True, expected a string"),
        ({"id": "E1", "type": "event"}, "field 'attributes' is missing"),
        ({"id": "E1", "type": "event", "attributes": None}, "field 'attributes' is null, expected an object"),
        ([event("E1")], "record 1 of the page: is list, expected an object"),
        (event(uuid={}), "field 'uuid' is dict {}, expected a string"),
    ],
)
@PARSERS
def test_page_check_names_record_field_and_problem(record: dict[str, Any], problem: str, decode: Any) -> None:
    found = misfits(PageCheck(BY_TABLE["events"]), {"data": [event("E0"), record]}, decode)
    assert len(found) == 1 and problem in found[0], found


@PARSERS
def test_page_check_accepts_free_form_properties_of_any_type(decode: Any) -> None:
    check = PageCheck(BY_TABLE["events"])
    assert not misfits(check, {"data": [event("E1", event_properties={"size": 10}),
                                        event("E2", event_properties={"size": "XL"}),
                                        event("E3", event_properties=None, timestamp=None)]}, decode)


@PARSERS
def test_profile_coordinates_may_be_numbers_or_numeric_strings_but_not_words(decode: Any) -> None:
    def profile(latitude: Any) -> dict[str, Any]:
        return {"type": "profile", "id": "P1", "attributes": {
            "email": "a@example.com", "updated": "2024-05-01T12:00:00+00:00", "location": {"latitude": latitude}}}

    check = PageCheck(BY_TABLE["profiles"])
    assert not misfits(check, {"data": [profile(48.1), profile("48.1"), profile(""), profile(None)]}, decode)
    assert misfits(check, {"data": [profile("north")]}, decode) == [
        "record 0 (id P1) of the page: field 'location__latitude' is str 'north', expected a number"]


@PARSERS
def test_long_values_are_not_repeated_in_messages(decode: Any) -> None:
    check = PageCheck(BY_TABLE["profiles"])
    record = {"type": "profile", "id": "P1", "attributes": {"updated": "2024-05-01T12:00:00+00:00",
                                                             "email": ["someone.private@example.com"] * 3}}
    found = misfits(check, {"data": [record]}, decode)
    assert "private" not in found[0] and "field 'email' is list, expected a string" in found[0]


def refused() -> requests.ConnectionError:
    """What requests raises when nothing listens (or no DNS, no route): no connection was made at all."""
    return requests.ConnectionError(MaxRetryError(None, "/api/events", NewConnectionError(None, "refused")))  # type: ignore[arg-type]


def test_unreachable_klaviyo_is_given_up_after_a_time_budget_not_a_count() -> None:
    """Many more attempts than `attempts`, all within the budget; the message says for how long and what to check."""
    budget = RetryPolicy(attempts=2, base=0.001, cap=0.002, unreachable_budget=0.2)
    client = KlaviyoClient(KEY, "https://a.klaviyo.com/api", "2026-07-15", retry=budget)
    sent = scripted(client, *[refused()] * 10_000)
    with pytest.raises(KlaviyoAPIError) as caught:
        client.get("https://a.klaviyo.com/api/events", None, StubGovernor(), "/events")  # type: ignore[arg-type]
    assert len(sent) > 2
    assert str(caught.value) == ("Klaviyo /events: no answer: could not connect to a.klaviyo.com for 0 s; check this "
                                 "machine's network, proxy and the base_url.")


def test_an_answer_restarts_the_unreachable_budget() -> None:
    budget = RetryPolicy(base=0.05, cap=0.05, unreachable_budget=0.12)
    client = KlaviyoClient(KEY, "https://a.klaviyo.com/api", "2026-07-15", retry=budget)
    answers = [refused(), refused(), answer(200)] * 3
    scripted(client, *answers)
    for _ in range(3):  # each request retries for ~0.1 s: together longer than the budget, never unreachable
        client.get("https://a.klaviyo.com/api/events", None, StubGovernor(), "/events")  # type: ignore[arg-type]


def test_a_cancelled_run_sends_nothing_more_and_stops_waiting() -> None:
    """Another table failed: a request about to be sent is not, and a retry wait ends at once."""
    patient = RetryPolicy(base=600.0, cap=600.0)
    client = KlaviyoClient(KEY, "https://a.klaviyo.com/api", "2026-07-15", retry=patient)
    sent = scripted(client, answer(503), answer(200))
    failure = RuntimeError("profiles failed")
    threading.Timer(0.2, client.cancel.set, [failure]).start()
    with pytest.raises(RunCancelled) as caught:  # were the wait not cut short, the 200 would come in 5 to 10 min
        client.get("https://a.klaviyo.com/api/events", None, StubGovernor(), "/events")  # type: ignore[arg-type]
    assert caught.value.__cause__ is failure and len(sent) == 1
    with pytest.raises(RunCancelled):
        client.get("https://a.klaviyo.com/api/events", None, StubGovernor(), "/events")  # type: ignore[arg-type]
    assert len(sent) == 1


def test_retries_are_logged_at_a_pace_a_reader_can_follow(monkeypatch: pytest.MonkeyPatch,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    notices = client_module._Notices()
    clock = [100.0]
    monkeypatch.setattr(client_module.time, "monotonic", lambda: clock[0])
    with caplog.at_level(logging.WARNING, logger="klaviyo_source"):
        for table in ("/events", "/profiles", "/metrics"):
            notices.log(logging.WARNING, "could not connect", f"{table}: could not connect; retry 1")
        notices.log(logging.WARNING, "HTTP 503: down", "/events: HTTP 503: down; retry 2")
        clock[0] += client_module.NOTICE_EVERY
        notices.log(logging.WARNING, "could not connect", "/tags: could not connect; retry 3")
    assert [r.getMessage() for r in caplog.records] == [
        "/events: could not connect; retry 1",
        "/events: HTTP 503: down; retry 2",
        "/tags: could not connect; retry 3 (and 2 more like it since the last such line)",
    ]
