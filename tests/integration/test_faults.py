"""The fault matrix: whatever Klaviyo or the machine does, the run that follows leaves every row exactly once.

Each case loads under a fault, checks every table against the sandbox's ground truth (nothing missing,
nothing extra, nothing twice), then changes the account and loads again under the same fault. Runs that
must fail (an outage, a record broken on every answer, a killed process) are checked to have left the
destination and the cursors as they were, and the clean rerun to finish the job.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from dlt.pipeline.exceptions import PipelineStepFailed

from klaviyo_source import TABLES
from klaviyo_source import client as client_module
from klaviyo_source.endpoints import BY_TABLE
from klaviyo_source.errors import KlaviyoAPIError
from klaviyo_source.failures import root_cause
from klaviyo_source.rows import parse_exact
from klaviyo_source.sandbox import Sandbox
from tests.integration.cli_driver import run_cli
from tests.integration.conftest import (
    REPORT_TABLES,
    SHORT_REPORT_HISTORY,
    SIZES,
    Loader,
    assert_cursors_moved_by,
    assert_matches_ground_truth,
    cursors,
    duckdb_loader,
    settle,
)

# Rate limits far below what the governor expects (Klaviyo's published tiers): it learns of them only
# from 429 answers, so every burst of the run is throttled and must wait for Retry-After.
STORM = {"/events": (2, 100_000), "/profiles": (2, 100_000), "/lists/{id}/profiles": (2, 100_000),
         "/segments/{id}/profiles": (2, 100_000), "/campaigns": (1, 100_000),
         # not the reports: at Klaviyo's 2 a minute a storm there is minutes of Retry-After per run
         **{BY_TABLE[t].path: (100, 100_000) for t in REPORT_TABLES}}

TRANSIENT_CASES: dict[str, dict[str, Any]] = {
    "429 storm": {"rate_limits": STORM},
    "5xx at 10%": {"faults": [{"kind": "status", "status": 503, "probability": 0.05},
                              {"kind": "status", "status": 500, "probability": 0.02},
                              {"kind": "status", "status": 502, "probability": 0.02},
                              {"kind": "status", "status": 504, "probability": 0.01}]},
    "connection resets": {"faults": [{"kind": "reset", "probability": 0.1}]},
    "truncated bodies": {"faults": [{"kind": "truncate", "probability": 0.1}]},
    "malformed records": {"faults": [{"kind": "malformed", "variant": "drop_id", "probability": 0.08},
                                     {"kind": "malformed", "variant": "wrong_type", "probability": 0.08}]},
}


def change_the_account(sandbox: Sandbox) -> None:
    """Changes between two scheduled runs, a second before the next one starts."""
    sandbox.mutate("add_events", count=40)
    sandbox.mutate("add_events", count=5, offset_seconds=-3600)  # late, inside the lookback
    sandbox.mutate("update_profiles", count=12)
    sandbox.mutate("add_members", kind="list", count=5)
    sandbox.mutate("add_campaign", channel="email")
    settle()


def load_and_check(loader: Loader) -> int:
    """One run that must succeed; returns the rows checked against the ground truth.

    A malformed answer is asked for again; should the retry be malformed the same way by chance (likely on
    one-record pages), the record is set aside: then it must be in `set_aside_records`, never lost.
    """
    before = cursors(loader)
    loader.run()
    assert_cursors_moved_by(before, cursors(loader), datetime.now(timezone.utc))
    return sum(assert_matches_ground_truth(loader, set_aside=loader.set_aside()).values())


def failing_run(loader: Loader) -> BaseException:
    """A run that must fail: returns its innermost error after checking it changed nothing."""
    before = cursors(loader)
    counts = {t: len(loader.keys(t)) for t in TABLES} if before else None
    with pytest.raises(PipelineStepFailed) as caught:
        loader.run()
    assert cursors(loader) == before, "a failed run moved the cursors"
    if counts is not None:
        assert {t: len(loader.keys(t)) for t in TABLES} == counts, "a failed run changed the destination"
    return root_cause(caught.value)


@pytest.mark.parametrize("case", TRANSIENT_CASES)
def test_transient_faults_lose_and_double_nothing(
    case: str, loader: Loader, sandbox: Sandbox, fast_retries: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    sandbox.configure(**TRANSIENT_CASES[case])
    rows = load_and_check(loader)
    change_the_account(sandbox)
    rows += load_and_check(loader)
    stats = sandbox.stats()
    fired = stats["throttled"] if case == "429 storm" else sum(stats["faults"].values())
    assert fired > 0, f"{case}: the fault never fired, the case proves nothing"
    with capsys.disabled():
        print(f"\nfault matrix | {case} | runs 2 | faults fired {fired} | rows checked {rows}")


def test_outage_mid_run_changes_nothing_and_a_clean_rerun_completes(
    loader: Loader, sandbox: Sandbox, fast_retries: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = load_and_check(loader)
    change_the_account(sandbox)
    sandbox.configure(faults=[{"kind": "outage", "status": 503, "from_request": 8}])
    error = failing_run(loader)
    assert isinstance(error, KlaviyoAPIError)
    assert str(error).startswith("Klaviyo /")
    assert ": HTTP 503: An injected fault occurred; gave up after 6 attempts." in str(error)
    sandbox.clear_faults()
    rows += load_and_check(loader)
    with capsys.disabled():
        print(f"\nfault matrix | outage mid-run + clean rerun | runs 3 (1 failed) | rows checked {rows}")


def test_a_property_that_changes_type_loads_as_sent(loader: Loader, monkeypatch: pytest.MonkeyPatch) -> None:
    """Event properties are free-form: `size` a number in one event, a string in the next, both load."""
    changed: list[str] = []

    def decode(body: bytes) -> Any:
        document = parse_exact(body)
        events = [r for r in document.get("data") or () if r.get("type") == "event"]
        if not changed and len(events) >= 2:
            for value, record in zip((42, "forty-two"), events, strict=False):
                record["attributes"]["event_properties"] = {**record["attributes"]["event_properties"], "size": value}
                changed.append(record["id"])
        return document

    monkeypatch.setattr(client_module, "parse_lazy", decode)
    loader.run(resources=["events"])
    assert len(changed) == 2
    sizes = dict(loader.rows("events", """id, event_properties->>'$.size'"""))
    assert {sizes[changed[0]], sizes[changed[1]]} == {"42", "forty-two"}
    assert_matches_ground_truth(loader, ["events"])


# --- killed processes ------------------------------------------------------------------------------

@pytest.fixture
def process_sandbox() -> Iterator[Sandbox]:
    anchor = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(minutes=1)
    with Sandbox(seed=5, rate_limits="off", anchor=anchor, mode="process", **SIZES) as sb:
        yield sb


@pytest.mark.parametrize(
    ("kill_at", "incremental"),
    [("extract:6", False), ("load:4", False), ("extract:4", True), ("load:6", True),
     ("load:events", False),
     ("load:events", True)],
    ids=["mid-extract-first-load", "mid-load-first-load", "mid-extract-incremental", "mid-load-incremental",
         "inside-events-job-first-load", "inside-events-job-incremental"],
)
def test_sigkill_then_rerun_loses_and_doubles_nothing(
    kill_at: str, incremental: bool, process_sandbox: Sandbox, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    loader = duckdb_loader(process_sandbox, tmp_path)
    rows = runs = 0
    if incremental:
        assert run_cli(loader, env=SHORT_REPORT_HISTORY)[0] == 0
        rows, runs = sum(assert_matches_ground_truth(loader).values()), 1
        change_the_account(process_sandbox)
    before = cursors(loader) if incremental else {}
    status, stderr = run_cli(loader, kill_at=kill_at, env=SHORT_REPORT_HISTORY)
    assert status == -9, stderr
    if kill_at.startswith("extract"):
        # killed before anything was committed: the destination and the cursors are as they were
        assert (cursors(loader) if incremental else {}) == before
    status, stderr = run_cli(loader, env=SHORT_REPORT_HISTORY)
    assert status == 0, stderr
    assert_cursors_moved_by(before, cursors(loader), datetime.now(timezone.utc))
    rows += sum(assert_matches_ground_truth(loader).values())
    with capsys.disabled():
        print(f"\nfault matrix | SIGKILL {kill_at} {'incremental' if incremental else 'first load'} + rerun "
              f"| runs {runs + 2} (1 killed) | rows checked {rows}")


@pytest.mark.parametrize("kill_at", ["extract:12", "load:9"])
def test_sigkill_during_a_chunked_first_load_resumes_at_the_last_chunk(
    kill_at: str, process_sandbox: Sandbox, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    loader = duckdb_loader(process_sandbox, tmp_path)
    assert process_sandbox.anchor is not None
    start = process_sandbox.anchor - timedelta(days=5 * 365 + 30)
    # a few chains per table, so that the first chunks take only a few pages each and a kill at the 12th page
    # falls after the first chunk was committed (by default a first load plans dozens of windows per table)
    chunked = ("--start-date", start.isoformat(), "--chunk-days", "365", "--concurrency", "2")
    status, stderr = run_cli(loader, *chunked, kill_at=kill_at, env=SHORT_REPORT_HISTORY)
    assert status == -9, stderr
    committed = cursors(loader)
    assert committed and min(committed.values()) > start, "no chunk was committed before the kill"
    status, stderr = run_cli(loader, *chunked, env=SHORT_REPORT_HISTORY)
    assert status == 0, stderr
    assert_cursors_moved_by(committed, cursors(loader), datetime.now(timezone.utc))
    rows = sum(assert_matches_ground_truth(loader).values())
    with capsys.disabled():
        print(f"\nfault matrix | SIGKILL {kill_at} in a chunked first load + rerun | runs 2 (1 killed) "
              f"| rows checked {rows}")
