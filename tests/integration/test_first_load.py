"""A first load of events into an empty table appends (no merge); every other load merges; a crash that
makes dlt replay an append job still leaves every event once, through the CLI and the plain Python path. Every
file a run extracts goes to the load as it is, not rewritten by normalize."""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import Iterable
from datetime import datetime, timedelta
from pathlib import Path

import dlt
import pyarrow.parquet as pq
import pytest
from dlt.common.libs.pyarrow import should_normalize_arrow_schema

from klaviyo_source import klaviyo_source, windows
from klaviyo_source.sandbox import Sandbox
from klaviyo_source.windows import parse_instant
from tests.integration.conftest import REPO, Loader, assert_matches_ground_truth, settle
from tests.sandbox.conftest import Client


def disposition(loader: Loader) -> str:
    return str(loader.pipeline().default_schema.tables["events"]["write_disposition"])


def test_a_first_load_of_events_appends_and_later_runs_merge(loader: Loader, sandbox: Sandbox) -> None:
    loader.run(resources=["events"], events_lookback_hours=6)
    assert disposition(loader) == "append"
    assert_matches_ground_truth(loader, ["events"])
    sandbox.mutate("add_events", count=10, offset_seconds=-3600)  # late, inside the lookback: read again
    settle()
    loader.run(resources=["events"], events_lookback_hours=6)
    assert disposition(loader) == "merge"
    assert_matches_ground_truth(loader, ["events"])


def test_a_table_with_rows_but_no_cursor_is_merged(loader: Loader, sandbox: Sandbox) -> None:
    assert sandbox.anchor is not None
    end = sandbox.anchor - timedelta(days=3)
    # an orchestrator's interval run: rows loaded, cursors left alone
    loader.run(resources=["events"], start_date=end - timedelta(days=60), end_date=end)
    assert loader.keys("events")
    loader.run(resources=["events"])  # no cursor yet, but the table is not empty: merge, or that interval doubles
    assert disposition(loader) == "merge"
    assert_matches_ground_truth(loader, ["events"])


def test_every_extracted_file_is_loaded_as_it_is(loader: Loader, sandbox: Sandbox) -> None:
    """dlt's normalize rewrites an Arrow file whose columns differ from the table's schema, in order too; ours
    match, on the first run (which creates the tables) and on the next: normalize then only moves the files."""
    pipeline = loader.pipeline()
    expected = {"events", "profiles", "event_attributions", "list_members", "campaign_messages", "flow_actions"}
    for run in range(2):
        if run:  # the next run: new rows of the incremental tables
            sandbox.mutate("add_events", count=10, offset_seconds=-60)
            sandbox.mutate("update_profiles", count=5)
            settle()
            expected = {"events", "profiles"}
        pipeline.extract(klaviyo_source(api_key=sandbox.api_key, base_url=sandbox.base_url),
                         loader_file_format="parquet")
        schema = pipeline.default_schema
        files = sorted(Path(pipeline.working_dir, "normalize", "extracted").glob("*/new_jobs/*.parquet"))
        assert expected <= {file.name.split(".")[0] for file in files}
        for file in files:
            table = file.name.split(".")[0]
            check = should_normalize_arrow_schema(pq.read_schema(file), schema.get_table_columns(table),
                                                  schema.naming, pipeline.destination.capabilities())
            assert not check.should_normalize, (
                f"{table}: file columns {list(check.rename_mapping.values())}, schema {list(check.columns)}")
        pipeline.normalize()
        pipeline.load().raise_on_failed_jobs()
    assert_matches_ground_truth(loader, ["events", "profiles"])


KILLED_PLAIN_RUN = """
import sys
import dlt
from klaviyo_source import klaviyo_source
from tests.integration.cli_driver import die_inside_job

database, workdir, dataset, api_key, base_url = sys.argv[1:]
die_inside_job("events")
pipeline = dlt.pipeline("plain", destination=dlt.destinations.duckdb(database), dataset_name=dataset,
                        pipelines_dir=workdir)
pipeline.run(klaviyo_source(api_key=api_key, base_url=base_url, resources=["events"]))
"""


def test_plain_python_path_killed_inside_the_events_job_loads_each_event_once(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    database, workdir = str(tmp_path / "plain.duckdb"), str(tmp_path / "pipelines")
    killed = subprocess.run(
        [sys.executable, "-c", KILLED_PLAIN_RUN, database, workdir, "plain_ds", sandbox.api_key, sandbox.base_url],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert killed.returncode == -9, killed.stderr
    loader = Loader(sandbox, dlt.destinations.duckdb(database), tmp_path, dataset="plain_ds", name="plain")
    pipeline = loader.pipeline()
    assert pipeline.has_pending_data
    # what a user types: the first run loads what the killed one left (dlt then stops), the second reads on
    for _ in range(2):
        pipeline.run(klaviyo_source(api_key=sandbox.api_key, base_url=sandbox.base_url, resources=["events"]))
    assert_matches_ground_truth(loader, ["events"])


def test_a_first_load_of_events_is_told_where_campaign_sends_begin(
        loader: Loader, sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """The send times of the account's campaigns, read beside the first round, reach the plan of the events'
    windows (where their bursts begin); a key that may not read campaigns loads every event all the same and
    says in one line that it went without."""
    hinted: list[datetime] = []
    original = windows.Plan.hint

    def hint(self: windows.Plan, starts: Iterable[datetime]) -> None:
        starts = list(starts)
        hinted.extend(starts)
        original(self, starts)

    monkeypatch.setattr(windows.Plan, "hint", hint)
    loader.run(resources=["events"])
    assert_matches_ground_truth(loader, ["events"])
    client = Client(sandbox)
    sent = {parse_instant(c["attributes"]["send_time"]) for channel in ("email", "sms", "mobile_push")
            for c in client.get("/campaigns", {"filter": f"equals(messages.channel,'{channel}')"}).json()["data"]
            if c["attributes"].get("send_time")}
    assert sent and set(hinted) == sent

    key = sandbox.create_key(["events:read"])
    caplog.set_level(logging.INFO, logger="klaviyo_source")
    other = Loader(sandbox, loader.destination, loader.workdir / "other")
    other.run(api_key=key, resources=["events"], event_attributions=False)
    assert_matches_ground_truth(other, ["events"])
    told = [r.getMessage() for r in caplog.records if "/campaigns not read" in r.getMessage()]
    assert len(told) == 1 and "campaigns:read" in told[0], told
