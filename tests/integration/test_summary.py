"""The run summary says what a run did, per table: rows new or changed, rows read again, requests, 429s, time.

Checked against what is known independently: the sandbox's own request counts and the changes made to the
account between two runs (new and late events are exactly the new rows; the rest of the lookback is re-read).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from klaviyo_source import TABLES, klaviyo_source
from klaviyo_source.endpoints import BY_TABLE, CAMPAIGN_CHANNELS
from klaviyo_source.sandbox import Sandbox
from klaviyo_source.summary import RunSummary, load
from tests.integration.conftest import Loader, settle


def run(loader: Loader, **options: Any) -> RunSummary:
    source = klaviyo_source(api_key=loader.sandbox.api_key, base_url=loader.sandbox.base_url, **options)
    return load(loader.pipeline(), source)


def sandbox_requests(sandbox: Sandbox, table: str, status: int | None = None) -> int:
    path = "/api" + BY_TABLE[table].path
    return sum(r["count"] for r in sandbox.stats()["requests"]
               if r["path"] == path and (status is None or r["status"] == status))


def test_first_run_is_all_new_and_counts_requests_as_klaviyo_saw_them(loader: Loader, sandbox: Sandbox) -> None:
    sandbox.reset_stats()
    summary = run(loader)
    assert set(summary.tables) == set(TABLES)
    for table, line in summary.tables.items():
        assert (line.new, line.reread) == (len(loader.keys(table)), 0), table
        if table in BY_TABLE:
            # The report tables look up the account's timezone and the conversion metric once per run (one
            # page each here), and a first load of events the newest campaign sends of each channel (where its
            # bursts begin), counted apart from the accounts, metrics and campaigns tables' own reads.
            lookups = {"accounts": 1, "metrics": 1, "campaigns": len(CAMPAIGN_CHANNELS)}.get(table, 0)
            assert line.requests == sandbox_requests(sandbox, table) - lookups, table
            assert line.throttled == 0 and line.seconds is not None
    assert summary.tables["campaign_messages"].requests is None  # read along with the campaigns
    text = str(summary)
    assert text.startswith(f"run summary ({len(TABLES)} tables, ") and "new/changed" in text and "\n  total " in text


def test_second_run_tells_new_rows_from_rows_read_again(loader: Loader, sandbox: Sandbox) -> None:
    sandbox.mutate("add_events", count=20, offset_seconds=-2 * 3600)  # so that the lookback holds loaded events
    settle()
    run(loader)
    saved = loader.events_until()
    assert saved is not None
    with loader.pipeline().sql_client() as client:
        def count(sql: str, *args: Any) -> int:
            return int(client.execute_sql(sql, *args)[0][0])

        in_lookback = count("select count(*) from events where datetime >= %s and datetime < %s",
                            saved - timedelta(hours=24), saved)
        metrics = count("select count(*) from metrics")
    assert in_lookback >= 20  # the check below can fail
    sandbox.mutate("add_events", count=25)
    sandbox.mutate("add_events", count=10, offset_seconds=-3 * 3600)  # late: inside the lookback
    settle()
    summary = run(loader)
    events = summary.tables["events"]
    assert (events.new, events.reread, events.read) == (35, in_lookback, 35 + in_lookback)
    assert (summary.tables["metrics"].new, summary.tables["metrics"].reread) == (0, metrics)
    # nothing else changed: whatever else was read (overlaps, replaced tables, rows below parents) was there;
    # except in the report tables, whose figures the new events may change (a flow's day with its first open)
    reports = [t for t in summary.tables if BY_TABLE.get(t) and BY_TABLE[t].report]
    assert len(reports) == 4 and all(summary.tables[t].reread for t in reports)  # their re-read window
    assert {t: line.new for t, line in summary.tables.items() if t != "events" and t not in reports} == \
        {t: 0 for t in summary.tables if t != "events" and t not in reports}


def test_a_refresh_loads_everything_anew(loader: Loader) -> None:
    run(loader, resources=["events", "metrics"])
    source = klaviyo_source(api_key=loader.sandbox.api_key, base_url=loader.sandbox.base_url,
                            resources=["events", "metrics"])
    summary = load(loader.pipeline(), source, refresh="drop_sources")
    assert all(line.reread == 0 and line.new == line.read for line in summary.tables.values())
