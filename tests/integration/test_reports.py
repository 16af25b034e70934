"""Event attributions and Klaviyo's reports as tables, end to end over HTTP: equal to the sandbox's ground
truth after first and incremental runs, re-read windows overwritten, the daily budget kept, deferred
timeframes picked up on the next day, and a used-up daily cap told in one line while the other tables load."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from dlt.pipeline.exceptions import PipelineStepFailed

from klaviyo_source import klaviyo_source, reports, resources
from klaviyo_source.errors import MissingScopeError
from klaviyo_source.failures import root_cause
from klaviyo_source.sandbox import Sandbox
from klaviyo_source.scheduling import scheduled_run
from tests.integration.conftest import (
    REPORT_TABLES,
    SIZES,
    Frame,
    Loader,
    account_facts,
    assert_matches_ground_truth,
    assert_report_rows,
    duckdb_loader,
    report_frames,
    report_truth,
    report_until,
    settle,
)

LOOKBACK = timedelta(days=30)  # the default reports_lookback_days
HISTORY = timedelta(days=365)  # the default reports_history_days


@pytest.fixture
def days_later(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Moves the report budget's day forward, as if the next run came a day later (Klaviyo's daily cap and
    ours reset); the sandbox's own daily window is reset by reconfiguring its limits."""
    shift = {"days": 0}
    original = reports.CallBudget.__init__

    def init(self: reports.CallBudget, state: dict[str, Any], cap: int, share: float, now: datetime) -> None:
        original(self, state, cap, share, now + timedelta(days=shift["days"]))

    monkeypatch.setattr(reports.CallBudget, "__init__", init)
    return shift


def truth_of(loader: Loader, table: str, lo: datetime, until: datetime) -> dict[Frame, set[tuple[Any, ...]]]:
    tz, _ = account_facts(loader.sandbox)
    return report_truth(loader.sandbox, table, report_frames(table, lo, until, tz), until)


@pytest.fixture(params=["duckdb", pytest.param("postgres", marks=pytest.mark.postgres)])
def any_loader(request: pytest.FixtureRequest, sandbox: Sandbox, tmp_path: Path) -> Loader:
    """A loader into DuckDB, or into PostgreSQL through ADBC, whose load job of a parquet file fails on one
    without a row."""
    if request.param == "duckdb":
        return duckdb_loader(sandbox, tmp_path)
    loader: Loader = request.getfixturevalue("postgres_loader")
    return loader


def calls(sandbox: Sandbox) -> dict[str, int]:
    return {row["path"]: row["count"] for row in sandbox.stats()["requests"] if row["method"] == "POST"}


def test_attributions_and_reports_equal_the_ground_truth_after_first_and_incremental_runs(loader: Loader) -> None:
    sandbox = loader.sandbox
    tables = ["event_attributions", *REPORT_TABLES]
    loader.run(resources=tables)
    assert assert_matches_ground_truth(loader, ["events", "event_attributions"])["event_attributions"] > 20
    first: dict[str, dict[Frame, set[tuple[Any, ...]]]] = {}
    for table in REPORT_TABLES:
        until = report_until(loader, table)
        first[table] = truth_of(loader, table, until - HISTORY, until)
        assert assert_report_rows(loader, table, first[table]) > 0, table

    # A click and the order it earns, segment members joining and leaving: all inside the re-read window.
    profile = sorted(sandbox.ground_truth()["profiles"])[0]
    click = sandbox.mutate("add_events", metric="Clicked Email", profile_id=profile)["ids"][0]
    order = sandbox.mutate("add_events", metric="Placed Order", profile_id=profile)["ids"][0]
    segment = sorted(sandbox.ground_truth()["segments"])[0]
    sandbox.mutate("add_members", kind="segment", parent_id=segment, count=5)
    sandbox.mutate("remove_members", kind="segment", parent_id=segment, count=2)
    settle()
    loader.run(resources=tables)
    attributions = assert_matches_ground_truth(loader, ["events", "event_attributions"])
    assert (order, click) in {(r[0], r[1]) for r in loader.rows("event_attributions", "event_id, attributed_event_id")}
    for table in REPORT_TABLES:
        until = report_until(loader, table)
        reread = truth_of(loader, table, until - LOOKBACK, until)
        expected = {**first[table], **reread}  # older timeframes keep the first run's figures
        assert assert_report_rows(loader, table, expected), table
    assert attributions["event_attributions"] > 20
    with loader.pipeline().sql_client() as client:
        today = client.execute_sql("select members_added, members_removed from segment_series_reports "
                                   "where segment_id = %s order by day desc limit 1", segment)
    assert today[0][0] >= 1 and today[0][1] >= 2


@pytest.fixture
def large_account() -> Iterator[Sandbox]:
    """Thousands of campaigns over a year; report answers paged 100 results at a time."""
    anchor = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(minutes=1)
    sizes = {**SIZES, "campaigns": 2400, "events": 24_000, "profiles": 1500, "flows": 12, "segments": 6}
    with Sandbox(seed=8, rate_limits="off", anchor=anchor, **sizes) as sb:
        sb._server.store.reports.page_size = 100  # type: ignore[union-attr]  # thread mode: the store is at hand
        yield sb


def test_budget_planner_on_a_large_account(large_account: Sandbox, tmp_path: Path, days_later: dict[str, int],
                                           caplog: pytest.LogCaptureFixture) -> None:
    """No day uses more than its share of the cap, what does not fit waits for the next day, and once the
    history is in, a daily run needs a couple of calls per table."""
    sandbox = large_account
    loader = duckdb_loader(sandbox, tmp_path)
    share, limit = 0.1, 22  # 10% of 225
    options = {"resources": list(REPORT_TABLES), "reports_daily_share": share}
    caplog.set_level(logging.INFO, logger="klaviyo_source")

    loader.run(**options)
    first_until = {table: report_until(loader, table) for table in REPORT_TABLES}
    day_one = calls(sandbox)
    assert all(n <= limit for n in day_one.values()), day_one
    assert day_one["/api/campaign-values-reports"] >= limit - 3  # the budget was the limit, not the work
    assert "deferred to the next run" in caplog.text
    pending = loader.pipeline().state["sources"]["klaviyo"]["resources"]["campaign_values_reports"]["pending"]
    assert pending

    sandbox.reset_stats()
    loader.run(**options)  # the same day: nothing left in the budget
    assert calls(sandbox).get("/api/campaign-values-reports", 0) == 0

    for day in range(1, 4):  # the following days read the rest, newest first
        days_later["days"] = day
        sandbox.reset_stats()
        loader.run(**options)
        assert all(n <= limit for n in calls(sandbox).values())
    state = loader.pipeline().state["sources"]["klaviyo"]["resources"]
    assert all(not state[t]["pending"] for t in REPORT_TABLES), {t: state[t]["pending"] for t in REPORT_TABLES}

    for table in REPORT_TABLES:  # nothing changed in between: every timeframe holds what Klaviyo says now
        expected = truth_of(loader, table, first_until[table] - HISTORY, report_until(loader, table))
        assert assert_report_rows(loader, table, expected), table

    days_later["days"] = 5
    sandbox.reset_stats()
    loader.run(**options)  # a daily run: the last 30 days, two months at most, a few pages each
    steady = calls(sandbox)
    assert steady["/api/flow-series-reports"] <= 2 and steady["/api/segment-series-reports"] == 1
    assert steady["/api/campaign-values-reports"] <= 2 * 4 and steady["/api/flow-values-reports"] <= 2 * 2


def test_a_used_up_daily_cap_is_one_line_and_the_other_tables_load(loader: Loader, days_later: dict[str, int],
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    sandbox = loader.sandbox
    # Another integration used the rest of today's campaign reports (endpoints not named keep real limits).
    sandbox.configure(rate_limits={"/campaign-values-reports": (100, 100, 3), "/flow-values-reports": (100, 100),
                                   "/metrics": (100, 1000), "/accounts": (100, 1000)})
    tables = ["campaign_values_reports", "flow_values_reports", "metrics"]
    caplog.set_level(logging.WARNING, logger="klaviyo_source")
    loader.run(resources=tables)
    sandbox.configure(rate_limits="off")  # the next day, for the sandbox: its daily window starts over
    first_until = report_until(loader, "campaign_values_reports")
    lines = [r.getMessage() for r in caplog.records if r.name == "klaviyo_source"]
    capped = [line for line in lines if "daily limit" in line]
    assert len(capped) == 1 and capped[0].startswith("campaign_values_reports: Klaviyo's daily limit"), lines
    assert [line for line in lines if line.startswith("campaign_values_reports")] == capped  # that one line
    assert "deferred 10 (" in capped[0] and "the other tables load as usual" in capped[0]
    assert len(loader.keys("metrics")) > 0
    until = report_until(loader, "flow_values_reports")
    assert_report_rows(loader, "flow_values_reports", truth_of(loader, "flow_values_reports", until - HISTORY, until))
    state = loader.pipeline().state["sources"]["klaviyo"]["resources"]["campaign_values_reports"]
    assert len(state["pending"]) == 10 and state["calls"]["calls"] == 45  # the newest 3 months read; none more today

    days_later["days"] = 1  # and for our budget
    settle()
    loader.run(resources=tables)
    until = report_until(loader, "campaign_values_reports")
    expected = truth_of(loader, "campaign_values_reports", first_until - HISTORY, until)
    assert_report_rows(loader, "campaign_values_reports", expected)


def test_a_key_without_the_scopes_the_reports_read_besides_is_told_which(loader: Loader) -> None:
    """Report tables read the account's timezone and the metrics too: a key lacking accounts:read hears so."""
    key = loader.sandbox.create_key(["campaigns:read", "metrics:read"])
    with pytest.raises(PipelineStepFailed) as failed:
        loader.run(api_key=key, resources=["campaign_values_reports"])
    error = root_cause(failed.value)
    assert isinstance(error, MissingScopeError) and error.scopes == ("accounts:read",)
    assert "accounts:read for table 'campaign_values_reports'" in str(error)


def report_table_columns(loader: Loader, table: str) -> tuple[int, set[str], set[str]]:
    """Rows of the destination's table, its columns there, and the columns dlt's schema declares for it."""
    declared = set(loader.pipeline().default_schema.get_table_columns(table))
    with loader.pipeline().sql_client() as client:
        rows = client.execute_sql(f"select count(*) from {table}")[0][0]
        made = {name for (name,) in client.execute_sql(
            "select column_name from information_schema.columns where table_name = %s and table_schema = %s",
            table, loader.dataset)}
    return rows, made, declared


@pytest.mark.parametrize("why", ["daily cap used up", "no conversion metric"])
def test_a_report_table_read_nothing_today_is_made_all_the_same(any_loader: Loader, why: str,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """The other two ways a report table gets no rows on its first run: another integration used up today's
    calls before our first one, or the account has no 'Placed Order' metric to count conversions of. Either
    way the table is there with its declared columns, so a query of it answers no rows instead of failing."""
    loader = any_loader
    if why == "daily cap used up":
        loader.sandbox.configure(rate_limits={"/campaign-values-reports": (100, 100, 0)})
    else:
        monkeypatch.setattr(reports.AccountFacts, "conversion_metric_id", lambda self: None)
    loader.run(resources=["campaign_values_reports"])
    loader.sandbox.configure(rate_limits="off")
    if why == "daily cap used up":  # every timeframe waits for tomorrow's calls
        state = loader.pipeline().state["sources"]["klaviyo"]["resources"]["campaign_values_reports"]
        assert state["pending"], state
    rows, made, declared = report_table_columns(loader, "campaign_values_reports")
    assert rows == 0
    assert {"campaign_id", "timeframe_start", "conversion_value", "recipients"} <= made == declared


def test_a_later_run_that_reads_no_report_rows_keeps_the_table_and_leaves_nothing_pending(any_loader: Loader) -> None:
    """An hourly schedule uses up the day's report calls, and its later runs that day read no report rows. The
    table keeps its rows and the run loads. (On PostgreSQL each such run failed its load: dlt's load job there
    cannot load the parquet file without a row that makes the table, and the package left pending failed every
    later run too; found by the long soak.)"""
    loader = any_loader
    table = "campaign_values_reports"
    loader.run(resources=[table])
    rows = report_table_columns(loader, table)[0]
    assert rows > 0
    loader.sandbox.configure(rate_limits={"/campaign-values-reports": (100, 100, 0)})  # today's calls used up
    loader.run(resources=[table])
    loader.sandbox.configure(rate_limits="off")
    assert report_table_columns(loader, table)[0] == rows
    assert not loader.pipeline().has_pending_data


@pytest.mark.postgres
def test_a_package_an_earlier_version_left_wedged_loads_on_the_next_scheduled_run(
        postgres_loader: Loader, monkeypatch: pytest.MonkeyPatch) -> None:
    """Before report tables loaded in a row format, a run that read no report rows left a package on PostgreSQL
    whose parquet file without a row failed every later run. The next scheduled run drops that file (it holds
    nothing) and loads the rest."""
    loader = postgres_loader
    table = "campaign_values_reports"
    loader.run(resources=[table])
    rows = report_table_columns(loader, table)[0]
    monkeypatch.setattr(resources, "_row_format_hints", lambda: None)  # what earlier versions did
    loader.sandbox.configure(rate_limits={"/campaign-values-reports": (100, 100, 0)})
    with pytest.raises(PipelineStepFailed):
        loader.run(resources=[table, "tags"])
    assert loader.pipeline().has_pending_data
    monkeypatch.undo()
    loader.sandbox.configure(rate_limits="off")
    with scheduled_run(loader.name, pipelines_dir=str(loader.workdir / "pipelines"), destination=loader.destination,
                       dataset_name=loader.dataset) as pipeline:
        assert not pipeline.has_pending_data
        pipeline.run(klaviyo_source(api_key=loader.sandbox.api_key, base_url=loader.sandbox.base_url,
                                    resources=[table]), loader_file_format="parquet").raise_on_failed_jobs()
    assert report_table_columns(loader, table)[0] == rows
    assert len(loader.keys("tags")) > 0  # the rest of the wedged package was loaded


def test_a_report_read_empty_is_still_a_table_with_its_columns(loader: Loader) -> None:
    """A day of history without a campaign send (the demo's month, an account's quiet week): the table is made
    with its declared columns, so an analyst's query of it answers no rows instead of failing; rows read later
    load into it."""
    loader.run(resources=["campaign_values_reports"], reports_history_days=1, reports_lookback_days=1)
    rows, made, declared = report_table_columns(loader, "campaign_values_reports")
    assert rows == 0
    assert {"campaign_id", "timeframe_start", "conversion_value", "recipients"} <= made == declared
    until = report_until(loader, "campaign_values_reports")
    loader.run(resources=["campaign_values_reports"], start_date=until - HISTORY, end_date=until)
    rows = assert_report_rows(loader, "campaign_values_reports",
                              truth_of(loader, "campaign_values_reports", until - HISTORY, until))
    assert rows > 0
