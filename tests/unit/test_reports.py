"""The report planner on its own: timeframes, the daily budget, deferral state, answers to rows, checks."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from klaviyo_source.client import Page
from klaviyo_source.endpoints import BY_TABLE, Report
from klaviyo_source.errors import ConfigurationError, ThrottledUntilError
from klaviyo_source.reports import AccountFacts, CallBudget, ReportReader, ReportSettings, Timeframe, plan
from klaviyo_source.validate import InvalidPage

NY = ZoneInfo("America/New_York")
UNTIL = datetime(2025, 3, 20, 15, 30, tzinfo=timezone.utc)


def report(table: str) -> Report:
    found = BY_TABLE[table].report
    assert found is not None
    return found


def test_values_reports_are_planned_as_calendar_months_newest_first() -> None:
    frames = plan(report("campaign_values_reports"), [(datetime(2024, 11, 15, tzinfo=timezone.utc), UNTIL)], NY)
    assert frames == [Timeframe(date(2025, m, 1), date(2025, m + 1, 1)) for m in (3, 2, 1)] + [
        Timeframe(date(2024, 12, 1), date(2025, 1, 1)), Timeframe(date(2024, 11, 1), date(2024, 12, 1))]


def test_series_are_planned_in_runs_of_60_days_that_cover_the_span_once() -> None:
    lo = UNTIL - timedelta(days=365)
    frames = plan(report("flow_series_reports"), [(lo, UNTIL), (UNTIL - timedelta(days=20), UNTIL)], NY)
    assert frames == sorted(frames, reverse=True) and all((f.end - f.start).days <= 60 for f in frames)
    days = [f.start + timedelta(days=k) for f in frames for k in range((f.end - f.start).days)]
    assert len(days) == len(set(days)) == (UNTIL.astimezone(NY).date() - lo.astimezone(NY).date()).days + 1
    assert frames[0].end == date(2025, 3, 21) and len(frames) == 7  # today included, 366 days in 7 calls


def test_segment_series_start_where_klaviyo_has_data() -> None:
    frames = plan(report("segment_series_reports"), [(datetime(2023, 1, 1, tzinfo=timezone.utc),
                                                      datetime(2023, 7, 1, tzinfo=timezone.utc))], NY)
    assert min(f.start for f in frames) == date(2023, 6, 1)


def test_a_timeframe_is_sent_as_local_midnights_cut_at_the_run_end() -> None:
    lo, hi = Timeframe(date(2025, 3, 1), date(2025, 4, 1)).bounds(NY, UNTIL)
    assert lo.isoformat() == "2025-03-01T00:00:00-05:00" and hi == UNTIL.astimezone(NY)
    assert hi.isoformat() == "2025-03-20T11:30:00-04:00"  # daylight saving time began on March 9


def test_the_budget_is_a_share_of_the_daily_cap_per_utc_day() -> None:
    state: dict[str, Any] = {}
    budget = CallBudget(state, 225, 0.2, UNTIL)
    assert budget.limit == 45 and budget.left == 45
    for _ in range(40):
        budget.spend()
    assert CallBudget(state, 225, 0.2, UNTIL + timedelta(hours=1)).left == 5
    CallBudget(state, 225, 0.2, UNTIL).used_up()
    assert CallBudget(state, 225, 0.2, UNTIL).left == 0
    assert CallBudget(state, 225, 0.2, UNTIL + timedelta(days=1)).left == 45  # a new day


class FakeClient:
    """Answers every report POST with one page per timeframe (or `pages` pages), counting the calls."""

    def __init__(self, pages: int = 1, refuse_after: int | None = None) -> None:
        self.pages_per_call = pages
        self.refuse_after = refuse_after
        self.bodies: list[dict[str, Any]] = []

    def pages(self, path: str, params: Any, governor: Any, label: str, check: Any = None, decode: Any = None,
              body: Any = None) -> Iterator[Page]:
        for page in range(self.pages_per_call):
            if self.refuse_after is not None and len(self.bodies) >= self.refuse_after:
                raise ThrottledUntilError(label, 429, "Daily limit reached.", "throttled", 7200)
            self.bodies.append(body)
            timeframe = body["data"]["attributes"]["timeframe"]
            doc = {"data": {"type": body["data"]["type"], "attributes": {"results": [{
                "groupings": {"campaign_id": "C1", "campaign_message_id": f"M{timeframe['start'][:7]}-{page}",
                              "send_channel": "email"},
                "statistics": {"recipients": 10.0, "open_rate": 0.5}}]}}}
            yield Page(doc, check(doc) if check is not None else None, None)


class FakeFacts:
    def timezone(self) -> ZoneInfo:
        return NY

    def conversion_metric_id(self) -> str | None:
        return "PLACED"


def reader(client: FakeClient, share: float = 0.2) -> ReportReader:
    return ReportReader(BY_TABLE["campaign_values_reports"], client, None, FakeFacts(),  # type: ignore[arg-type]
                        ReportSettings(daily_share=share))


def test_what_does_not_fit_the_budget_is_deferred_and_read_first_next_day() -> None:
    client, state = FakeClient(pages=2), {}
    batches = list(reader(client, share=0.04).rows(state, None, UNTIL, stateless=False))  # 9 calls a day
    assert len(client.bodies) == 8 and len(batches) == 4  # 4 months of 2 pages; a 5th would not fit
    assert [b[0]["timeframe_start"] for b in batches] == [date(2025, m, 1) for m in (3, 2, 1)] + [date(2024, 12, 1)]
    assert len(state["pending"]) == 9 and state["read_through"] == UNTIL.isoformat()
    body = client.bodies[0]["data"]
    assert body["type"] == "campaign-values-report" and body["attributes"]["conversion_metric_id"] == "PLACED"
    assert body["attributes"]["group_by"] == ["campaign_id", "campaign_message_id", "send_channel"]
    assert len(body["attributes"]["statistics"]) == 31

    client = FakeClient()  # later the same day: one call left, the newest month takes it
    assert len(list(reader(client, share=0.04).rows(state, None, UNTIL + timedelta(hours=2), False))) == 1
    assert len(client.bodies) == 1 and len(state["pending"]) == 10  # February joined the deferred

    client = FakeClient(pages=2)
    later = UNTIL + timedelta(days=1)
    batches = list(reader(client, share=0.04).rows(state, None, later, stateless=False))
    starts = [b[0]["timeframe_start"] for b in batches]
    assert starts[:2] == [date(2025, 3, 1), date(2025, 2, 1)]  # the re-read window first, then the history
    assert starts[2:] == [date(2024, 11, 1), date(2024, 10, 1)] and len(state["pending"]) == 7


def test_a_used_up_daily_cap_loads_what_was_read_and_defers_the_rest(caplog: pytest.LogCaptureFixture) -> None:
    client, state = FakeClient(refuse_after=3), {}
    batches = list(reader(client).rows(state, None, UNTIL, stateless=False))
    assert len(batches) == 3 and len(state["pending"]) == 10
    assert state["calls"]["calls"] == 45  # nothing more today
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "daily limit" in warnings[0] and "2 h 0 min" in warnings[0]


def test_an_interval_run_reads_it_whole_and_keeps_the_state() -> None:
    client, state = FakeClient(), {"read_through": "2025-01-01T00:00:00+00:00"}
    list(reader(client).rows(state, datetime(2024, 1, 10, tzinfo=timezone.utc), UNTIL, stateless=True))
    assert len(client.bodies) == 15 and state["read_through"] == "2025-01-01T00:00:00+00:00"


def test_answers_become_typed_rows() -> None:
    read = reader(FakeClient())
    series = ReportReader(BY_TABLE["flow_series_reports"], None, None, FakeFacts(),  # type: ignore[arg-type]
                          ReportSettings())
    frame = Timeframe(date(2025, 3, 1), date(2025, 4, 1))
    doc = {"data": {"attributes": {"results": [{"groupings": {"campaign_id": "C", "campaign_message_id": "M",
                                                              "send_channel": "sms", "variation": "V"},
                                                "statistics": {"recipients": 3.0, "open_rate": 0.25}}]}}}
    (row,) = read.rows_of(doc, frame, NY, "PLACED")
    assert row["campaign_id"] == "C" and "variation" not in row and row["conversion_metric_id"] == "PLACED"
    assert row["recipients"] == 3 and isinstance(row["recipients"], int) and row["open_rate"] == 0.25
    assert row["timeframe_start"] == frame.start and row["timeframe_end"] == frame.end and row["clicks"] is None
    doc = {"data": {"attributes": {
        "date_times": ["2025-03-01T00:00:00-05:00", "2025-03-02T05:00:00+00:00", "2025-03-03T00:00:00+00:00"],
        "results": [{"groupings": {"flow_id": "F", "flow_message_id": "FM", "send_channel": "email"},
                     "statistics": {"recipients": [2, 0, 1], "opens": [1, 0, 0]}}]}}}
    series.check(doc)
    rows = series.rows_of(doc, frame, NY, "PLACED")
    assert [(r["day"], r["recipients"]) for r in rows] == [(date(2025, 3, 1), 2), (date(2025, 3, 3), 1)]


@pytest.mark.parametrize(("attributes", "problem"), [
    ({}, "results"),
    ({"results": [{"groupings": {"flow_id": "F"}, "statistics": {}}], "date_times": []}, "flow_message_id"),
    ({"results": [{"groupings": {"flow_id": "F", "flow_message_id": "M", "send_channel": "email"},
                   "statistics": {"opens": [1]}}], "date_times": ["2025-01-01T00:00:00+00:00"] * 2}, "list of 2"),
    ({"results": [{"groupings": {"flow_id": "F", "flow_message_id": "M", "send_channel": "email"},
                   "statistics": {"opens": ["many"]}}], "date_times": ["2025-01-01T00:00:00+00:00"]}, "number"),
    ({"results": [], "date_times": ["yesterday"]}, "date_times"),
])
def test_broken_answers_are_refused(attributes: dict[str, Any], problem: str) -> None:
    series = ReportReader(BY_TABLE["flow_series_reports"], None, None, FakeFacts(),  # type: ignore[arg-type]
                          ReportSettings())
    with pytest.raises(InvalidPage, match=problem):
        series.check({"data": {"attributes": attributes}})


class MetricsClient:
    def __init__(self, metrics: list[tuple[str | None, str]]) -> None:
        self.metrics = metrics

    def pages(self, path: str, *args: Any) -> Iterator[Page]:
        records = [{"id": i, "attributes": {"name": n, "integration": {"name": "Shopify"}}} for i, n in self.metrics]
        yield Page({"data": [{k: v for k, v in r.items() if v is not None} for r in records]}, None, None)


def facts(metrics: list[tuple[str | None, str]], wanted: str = "Placed Order") -> AccountFacts:
    class Registry:
        def get(self, key: str, tier: Any) -> None:
            return None

    return AccountFacts(MetricsClient(metrics), Registry(), ReportSettings(conversion_metric=wanted))  # type: ignore[arg-type]


def test_the_conversion_metric_is_found_by_name_or_id() -> None:
    assert facts([("A1", "Viewed Product"), ("B2", "Placed Order")]).conversion_metric_id() == "B2"
    assert facts([("A1", "Viewed Product")], "A1").conversion_metric_id() == "A1"
    assert facts([("A1", "Viewed Product")]).conversion_metric_id() is None  # the default, absent: reports skip
    with pytest.raises(ConfigurationError, match=r"B2 \(Shopify\), C3 \(Shopify\)"):
        facts([("B2", "Placed Order"), ("C3", "Placed Order")]).conversion_metric_id()
    with pytest.raises(ConfigurationError, match="neither the name nor the id"):
        facts([("A1", "Viewed Product")], "Ordered Pizza").conversion_metric_id()
    # a record without id (the metrics table sets it aside) is no candidate and fails nothing
    assert facts([(None, "Placed Order"), ("B2", "Placed Order")]).conversion_metric_id() == "B2"


@pytest.mark.parametrize("settings", [ReportSettings(daily_share=0), ReportSettings(lookback_days=-1),
                                      ReportSettings(history_days=0), ReportSettings(conversion_metric=" ")])
def test_bad_settings_say_what_to_fix(settings: ReportSettings) -> None:
    with pytest.raises(ConfigurationError, match="reports_"):
        settings.check()
