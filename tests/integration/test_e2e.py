"""End to end over real HTTP: the sandbox -> klaviyo_source -> DuckDB (and PostgreSQL), compared with the
sandbox's ground truth after every run."""

from __future__ import annotations

import shutil
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from klaviyo_source import TABLES
from klaviyo_source.sandbox import Sandbox
from tests.integration.conftest import (
    SIZES,
    Loader,
    assert_matches_ground_truth,
    assert_reports_match_ground_truth,
    duckdb_loader,
    requests_sent,
    settle,
)


def test_full_load_equals_ground_truth(loader: Loader) -> None:
    loader.run()
    checked = {**assert_matches_ground_truth(loader), **assert_reports_match_ground_truth(loader)}
    assert set(checked) == set(TABLES)
    assert checked["events"] > 2000 and checked["list_members"] > 0 and checked["campaign_messages"] > 0
    assert checked["event_attributions"] > 0 and checked["flow_series_reports"] > 0


def test_columns_are_typed_for_analysts(loader: Loader) -> None:
    loader.run(resources=["events", "profiles", "list_members", "campaigns", "flows"])
    with loader.pipeline().sql_client() as client:
        def types(table: str) -> dict[str, str]:
            rows = client.execute_sql(
                "select column_name, data_type from information_schema.columns where table_schema = %s "
                "and table_name = %s", loader.dataset, table)
            return {name: kind.upper() for name, kind in rows}

        events = types("events")
        assert events["datetime"].startswith("TIMESTAMP WITH TIME ZONE")
        assert events["event_properties"] == "JSON" and events["timestamp"] == "BIGINT"
        assert {"id", "profile_id", "metric_id"} <= set(events)
        profiles = types("profiles")
        assert profiles["updated"].startswith("TIMESTAMP WITH TIME ZONE") and profiles["properties"] == "JSON"
        assert "location__city" in profiles and profiles["location__latitude"] == "DOUBLE"
        members = types("list_members")
        assert members["joined_group_at"].startswith("TIMESTAMP WITH TIME ZONE")
        assert types("campaigns")["updated_at"].startswith("TIMESTAMP WITH TIME ZONE")
        # JSON columns answer JSON paths in DuckDB.
        value = client.execute_sql(
            """select count(*) from events where event_properties->>'$."$value"' is not null""")[0][0]
        assert value > 0


def test_second_run_adds_nothing_and_sends_few_requests(loader: Loader, sandbox: Sandbox) -> None:
    loader.run()
    before = {t: len(loader.keys(t)) for t in TABLES}
    sandbox.reset_stats()
    loader.run()
    stats = sandbox.stats()
    assert {t: len(loader.keys(t)) for t in TABLES} == before
    # one request per small table, per campaign channel, per list/segment member window, per coupon, and
    # the re-read of the events lookback day: a few dozen, not the hundreds of a full load
    assert requests_sent(stats) < 60, stats
    assert_matches_ground_truth(loader)


def test_mutations_are_picked_up_exactly(loader: Loader, sandbox: Sandbox) -> None:
    loader.run(events_lookback_hours=6)
    new = sandbox.mutate("add_events", count=25)
    late = sandbox.mutate("add_events", count=10, offset_seconds=-3 * 3600)  # inside the lookback
    future = sandbox.mutate("add_events", count=5, offset_seconds=30 * 86400)  # never moves the cursor
    sandbox.mutate("update_profiles", count=15)
    sandbox.mutate("add_profiles", count=7)
    sandbox.mutate("add_members", kind="list", count=6)
    sandbox.mutate("add_members", kind="segment", count=4)
    for channel in ("email", "sms", "mobile_push"):
        sandbox.mutate("add_campaign", channel=channel)
    sandbox.mutate("add_flow")
    settle()
    loader.run(events_lookback_hours=6)
    assert_matches_ground_truth(loader)
    events = set(loader.keys("events"))
    assert set(new["ids"]) <= events and set(late["ids"]) <= events
    assert not set(future["ids"]) & events
    assert (loader.events_until() or datetime.max.replace(tzinfo=timezone.utc)) < datetime.now(timezone.utc)


def test_rerun_on_a_fresh_machine_resumes_from_destination_state(loader: Loader, sandbox: Sandbox) -> None:
    loader.run()
    shutil.rmtree(loader.workdir / "pipelines")  # a new machine: only the destination remains
    sandbox.mutate("add_events", count=12)
    settle()
    sandbox.reset_stats()
    loader.run()
    assert_matches_ground_truth(loader)
    event_requests = sum(r["count"] for r in sandbox.stats()["requests"] if r["path"] == "/api/events")
    assert event_requests <= 3  # the lookback day only, not the whole history again


def test_backdated_event_outside_lookback_needs_a_wider_rescan(loader: Loader, sandbox: Sandbox) -> None:
    loader.run(events_lookback_hours=1)
    old = sandbox.mutate("add_events", count=3, offset_seconds=-5 * 86400)
    loader.run(events_lookback_hours=1)
    assert not set(old["ids"]) & set(loader.keys("events"))  # documented: the lookback bounds late events
    loader.run(events_lookback_hours=24 * 7)
    assert set(old["ids"]) <= set(loader.keys("events"))
    assert_matches_ground_truth(loader, ["events"])


def test_members_full_refresh_catches_removals(loader: Loader, sandbox: Sandbox) -> None:
    loader.run(resources=["list_members"])
    sandbox.mutate("remove_members", kind="list", count=5)
    loader.run(resources=["list_members"])
    assert len(loader.keys("list_members")) == len(sandbox.ground_truth()["list_members"]) + 5
    loader.run(resources=["list_members"], members_full_refresh=True)
    assert_matches_ground_truth(loader, ["list_members"])


def test_members_of_many_parents_are_read_exactly_once(tmp_path: Path) -> None:
    """A first load splits each list's and segment's members into windows from the day it was created, and
    idle chains split them further: every membership must still arrive once, none twice (counted as
    extracted, before the merge would hide a repeat), none missed."""
    anchor = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(minutes=1)
    sizes = {**SIZES, "profiles": 1500, "lists": 3, "members_per_list": 1200, "segments": 4,
             "members_per_segment": 700}
    # answers that take a while: requests in flight follow the latency, so the first plan has windows to split
    with Sandbox(seed=5, rate_limits="off", latency=0.25, anchor=anchor, **sizes) as sandbox:
        loader = duckdb_loader(sandbox, tmp_path)
        tables = ["list_members", "segment_members"]
        pipeline = loader.run(resources=tables)
        extracted = pipeline.last_trace.last_normalize_info.row_counts
        checked = assert_matches_ground_truth(loader, tables)
        assert checked == {"list_members": 3 * 1200, "segment_members": 4 * 700}
        assert {t: extracted[t] for t in tables} == checked  # read once: no row extracted twice
        pages = sum(r["count"] for r in sandbox.stats()["requests"] if r["path"].endswith("/profiles"))
        assert pages > 3 * 12 + 4 * 7  # more than one chain per parent: windows did split the members


def test_fixed_interval_leaves_cursors_alone(loader: Loader, sandbox: Sandbox) -> None:
    truth_until = datetime.now(timezone.utc)
    loader.run(resources=["events"], start_date="2000-01-01", end_date=truth_until.isoformat())
    resources = loader.pipeline().state.get("sources", {}).get("klaviyo", {}).get("resources", {})
    assert not resources.get("events", {}).get("cursors")
    expected = {i for i in sandbox.ground_truth(until=truth_until)["events"]}
    assert set(loader.keys("events")) == expected


@pytest.mark.postgres
def test_full_and_incremental_load_into_postgres(postgres_loader: Loader, sandbox: Sandbox) -> None:
    postgres_loader.run()
    assert_matches_ground_truth(postgres_loader)
    sandbox.mutate("add_events", count=20)
    sandbox.mutate("update_profiles", count=10)
    sandbox.mutate("add_members", kind="segment", count=3)
    settle()
    postgres_loader.run()
    assert_matches_ground_truth(postgres_loader)


def test_predictive_analytics_is_opt_in(loader: Loader, sandbox: Sandbox) -> None:
    loader.run(resources=["profiles"])
    assert loader.rows("profiles", "count(predictive_analytics)")[0][0] == 0
    loader.run(resources=["profiles"], predictive_analytics=True, start_date="2000-01-01",
               end_date=datetime.now(timezone.utc).isoformat())
    assert loader.rows("profiles", "count(predictive_analytics)")[0][0] > 0
    assert_matches_ground_truth(loader, ["profiles"])


def test_long_runs_report_progress(loader: Loader, monkeypatch: pytest.MonkeyPatch,
                                   caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr("klaviyo_source.resources.PROGRESS_EVERY", 0.0)  # every page counts as "a while"
    with caplog.at_level("INFO", logger="klaviyo_source"):
        loader.run(resources=["events"])
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("events: ")]
    assert lines and "rows in" in lines[-1] and "waited" in lines[-1]
