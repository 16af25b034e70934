"""Soak: many scheduled runs against a changing account, with faults, overlaps and kills between them.

Each tick changes the account, then does what a scheduler and a machine do to a run: a plain run, a run
through transient faults (5xx, resets, cut bodies), an outage that fails the run, two or three runs started
at once (one pipeline twice and a second pipeline into the same dataset), a run killed mid-extract or
mid-load. At the end one more run finishes the job, and every table must equal the sandbox's ground truth,
no row doubled; the pipeline folder must be no larger than after the first load, and the state small.

The suite runs a short soak per destination (ten ticks on DuckDB, five on PostgreSQL);
`pytest -m slow tests/integration/test_soak.py` runs the long one (KLAVIYO_SOAK_TICKS ticks, default 150).
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from klaviyo_source.housekeeping import folder_size
from klaviyo_source.sandbox import Sandbox
from klaviyo_source.scheduling import KEEP_PACKAGES
from tests.integration.cli_driver import finish, run_cli, start_cli
from tests.integration.conftest import SIZES, Loader, assert_matches_ground_truth
from tests.integration.test_faults import change_the_account
from tests.integration.test_scheduling import (
    EXIT_LOCKED,
    assert_folder_kept,
    assert_locked_out,
    drop_dataset,
    make_loader,
)

TRANSIENT = [{"kind": "status", "status": 503, "probability": 0.05}, {"kind": "reset", "probability": 0.05},
             {"kind": "truncate", "probability": 0.05}]
KILLS = ["extract:3", "extract:8", "load:2", "load:5", "load:events"]
# Ticks of the short soak, in order; the long soak draws them at random. On PostgreSQL the short soak keeps what
# the destination changes (overlaps and kills, loads replayed): each run there costs several times more.
ACTIONS = ["plain", "overlap", "kill", "faults", "overlap", "outage", "kill", "overlap", "plain", "kill"]
SHORT = {"duckdb": ACTIONS, "postgres": ["overlap", "kill", "overlap", "kill", "plain"]}


@pytest.fixture
def soak_sandbox() -> Iterator[Sandbox]:
    anchor = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(minutes=1)
    with Sandbox(seed=13, rate_limits="off", anchor=anchor, mode="process", **SIZES) as sb:
        yield sb


def tick(action: str, loader: Loader, sandbox: Sandbox, rng: random.Random, tally: dict[str, int]) -> None:
    """One scheduled moment: its runs, checked for their exit code and their one line."""
    if action == "plain":
        status, stderr = run_cli(loader)
        assert status == 0, stderr
    elif action == "faults":
        sandbox.configure(faults=TRANSIENT)
        status, stderr = run_cli(loader)
        sandbox.clear_faults()
        assert status == 0, stderr
    elif action == "outage":
        sandbox.configure(faults=[{"kind": "outage", "status": 503, "from_request": rng.randint(2, 20)}])
        status, stderr = run_cli(loader, kill_at="retries:fast")
        sandbox.clear_faults()
        lines = stderr.strip().splitlines()
        assert status == 1 and lines[-1].startswith("error: Klaviyo /") and "Traceback" not in stderr, stderr
    elif action == "overlap":
        runs = [start_cli(loader), start_cli(loader, name="other_pipeline")]
        if rng.random() < 0.5:
            runs.append(start_cli(loader))
        for status, stderr in map(finish, runs):
            if status == EXIT_LOCKED:
                assert_locked_out(status, stderr)
                tally["locked out"] += 1
            else:
                assert status == 0, stderr
    elif action == "kill":
        status, stderr = finish(start_cli(loader, kill_at=rng.choice(KILLS)))
        assert status in (-9, 0), stderr  # 0: the run ended before the moment came (a small load)
        tally["killed"] += status == -9
    tally[action] += 1


def soak(kind: str, ticks: list[str], sandbox: Sandbox, tmp_path: Path) -> dict[str, Any]:
    loader = make_loader(kind, sandbox, tmp_path)
    rng = random.Random(11)
    tally: dict[str, int] = {"locked out": 0, "killed": 0}
    folder = tmp_path / "pipelines" / loader.name
    try:
        status, stderr = run_cli(loader)
        assert status == 0, stderr
        first_size, first_state = folder_size(folder), (folder / "state.json").stat().st_size
        for action in ticks:
            change_the_account(sandbox)
            tally.setdefault(action, 0)
            tick(action, loader, sandbox, rng, tally)
        status, stderr = run_cli(loader, "--lock-wait", "300")
        assert status == 0, stderr
        rows = sum(assert_matches_ground_truth(loader).values())
        size, state = folder_size(folder), (folder / "state.json").stat().st_size
    finally:
        drop_dataset(loader)
    assert_folder_kept(first_size, size)
    assert state <= first_state * 1.2, f"the state grew from {first_state:,} to {state:,} bytes"
    assert len(list((folder / "load" / "loaded").iterdir())) <= KEEP_PACKAGES
    assert not [p for p in (folder / "normalize").iterdir() if p.is_dir() and p.name != "extracted"]
    return {"kind": kind, "ticks": len(ticks), **tally, "rows checked": rows, "folder after first": first_size,
            "folder at end": size, "state after first": first_state, "state at end": state}


def report(capsys: pytest.CaptureFixture[str], result: dict[str, Any]) -> None:
    with capsys.disabled():
        print(f"\nsoak | {json.dumps(result)}")


@pytest.mark.parametrize("kind", ["duckdb", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_soak(kind: str, soak_sandbox: Sandbox, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    report(capsys, soak(kind, SHORT[kind], soak_sandbox, tmp_path))


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["duckdb", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_soak_long(kind: str, soak_sandbox: Sandbox, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rng = random.Random(int(os.environ.get("KLAVIYO_SOAK_SEED", "5")))  # another seed, another sequence of ticks
    ticks = [rng.choice(ACTIONS) for _ in range(int(os.environ.get("KLAVIYO_SOAK_TICKS", "150")))]
    report(capsys, soak(kind, ticks, soak_sandbox, tmp_path))
