"""Scheduled runs as cron starts them: overlapping, killed, on a full disk; nothing doubled, nothing kept forever.

Each test runs the CLI in processes of its own against a process-mode sandbox, into DuckDB and PostgreSQL.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import dlt
import pytest

from klaviyo_source.housekeeping import folder_size
from klaviyo_source.locks import FileLock
from klaviyo_source.sandbox import Sandbox
from klaviyo_source.scheduling import KEEP_PACKAGES
from tests.integration.cli_driver import finish, run_cli, start_cli
from tests.integration.conftest import SIZES, Loader, assert_matches_ground_truth, drop_dataset, duckdb_loader
from tests.integration.test_faults import change_the_account

EXIT_LOCKED = 75


@pytest.fixture
def process_sandbox() -> Iterator[Sandbox]:
    anchor = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(minutes=1)
    with Sandbox(seed=7, rate_limits="off", anchor=anchor, mode="process", **SIZES) as sb:
        yield sb


def postgres_dsn() -> str:
    dsn = os.environ.get("KLAVIYO_TEST_POSTGRES_DSN")
    if not dsn:
        pytest.skip("KLAVIYO_TEST_POSTGRES_DSN is not set (.ci/run starts a PostgreSQL server and sets it)")
    return dsn


def make_loader(kind: str, sandbox: Sandbox, tmp_path: Path) -> Loader:
    if kind == "duckdb":
        return duckdb_loader(sandbox, tmp_path)
    return Loader(sandbox, dlt.destinations.postgres(postgres_dsn()), tmp_path)


# What a pipeline folder keeps after a run (the last load package, dlt's trace) differs a little from run to run:
# a run's verification checks more or fewer days (~1% of the folder); one package or run's leftovers kept too
# many is more than 10%.
FOLDER_SLACK = 1.1


def assert_folder_kept(first_size: int, size: int) -> None:
    """Later runs keep the pipeline folder about as large as the first run left it: nothing accumulates."""
    assert size <= first_size * FOLDER_SLACK, f"the pipeline folder grew from {first_size:,} to {size:,} bytes"


def assert_locked_out(status: int, stderr: str) -> None:
    """The run that lost the race: its own exit code and, last, one line naming the holder (before it at most
    the notice that it took over the pipeline lock of a killed run)."""
    assert status == EXIT_LOCKED, stderr
    lines = stderr.strip().splitlines()
    assert lines[-1].startswith("error: another run holds the lock on ") and "Traceback" not in stderr, stderr
    assert all("took over the lock" in line for line in lines[:-1]), stderr
    assert " pid " in lines[-1] and " since " in lines[-1] and "did nothing" in lines[-1]


def test_a_run_that_finds_the_lock_held_exits_75_or_waits_for_it(process_sandbox: Sandbox, tmp_path: Path) -> None:
    loader = duckdb_loader(process_sandbox, tmp_path)
    held = FileLock(tmp_path / "klaviyo.duckdb.lock", "test")
    assert held.try_acquire() is None
    try:
        status, stderr = run_cli(loader)
        assert_locked_out(status, stderr)
        assert f"DuckDB file {tmp_path / 'klaviyo.duckdb'}: pid {os.getpid()} on " in stderr
        assert not (tmp_path / "klaviyo.duckdb").exists(), "a locked-out run wrote nothing"
        waiting = start_cli(loader, "--lock-wait", "300")
        assert waiting.stderr is not None
        assert "waiting up to" in waiting.stderr.readline()  # it waits instead of failing
    finally:
        held.release()
    status, stderr = finish(waiting)
    assert status == 0, stderr
    assert_matches_ground_truth(loader)
    pipeline_lock = FileLock(tmp_path / "pipelines" / f"{loader.name}.lock", "test")
    assert pipeline_lock.try_acquire() is None
    try:
        status, stderr = run_cli(loader)
        assert_locked_out(status, stderr)
        assert f"the lock on pipeline {loader.name} (" in stderr
    finally:
        pipeline_lock.release()


@pytest.mark.parametrize("kind", ["duckdb", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_overlapping_runs_double_nothing(kind: str, process_sandbox: Sandbox, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    """Three runs started at once, two pipelines into one dataset, one of them twice; again after changes."""
    loader = make_loader(kind, process_sandbox, tmp_path)
    outcomes: list[int] = []
    try:
        for _ in range(3):
            runs = [start_cli(loader), start_cli(loader, name="other_pipeline"), start_cli(loader)]
            for status, stderr in map(finish, runs):
                if status != 0:
                    assert_locked_out(status, stderr)
                assert "ADBC" not in stderr, "parquet goes into PostgreSQL on dlt's fast path, without warnings"
                outcomes.append(status)
            change_the_account(process_sandbox)
        status, stderr = run_cli(loader, "--lock-wait", "300")
        assert status == 0, stderr
        rows = sum(assert_matches_ground_truth(loader).values())
    finally:
        drop_dataset(loader)
    assert outcomes.count(0) >= 3, "each round, one run loads"
    with capsys.disabled():
        print(f"\nscheduling | {kind} | 3 rounds of 3 overlapping runs: {outcomes.count(0)} loaded, "
              f"{outcomes.count(EXIT_LOCKED)} locked out | rows checked {rows}")


def test_killed_runs_leave_nothing_that_grows(process_sandbox: Sandbox, tmp_path: Path) -> None:
    loader = duckdb_loader(process_sandbox, tmp_path)
    status, stderr = run_cli(loader)
    assert status == 0, stderr
    pipeline_dir = tmp_path / "pipelines" / loader.name
    first_size = folder_size(pipeline_dir)
    change_the_account(process_sandbox)
    killed = start_cli(loader, kill_at="extract:5")
    assert finish(killed)[0] == -9
    leftovers = [p for p in (pipeline_dir / "normalize").iterdir() if p.is_dir() and p.name != "extracted"]
    assert leftovers, "the killed extract left its folder (the case proves nothing otherwise)"
    lock_file = tmp_path / "pipelines" / f"{loader.name}.lock"
    assert f'"pid": {killed.pid}' in lock_file.read_text(), "the killed run's record stays in its lock file"
    for _ in range(KEEP_PACKAGES + 2):
        status, stderr = run_cli(loader)
        assert status == 0, stderr
        change_the_account(process_sandbox)
    assert f"took over the lock on pipeline {loader.name}" in stderr or lock_file.read_text() == ""
    assert not any(p.exists() for p in leftovers), "leftovers of the killed run were removed"
    assert len(list((pipeline_dir / "load" / "loaded").iterdir())) == KEEP_PACKAGES
    assert_folder_kept(first_size, folder_size(pipeline_dir))
    status, stderr = run_cli(loader)
    assert status == 0, stderr
    assert_matches_ground_truth(loader)


@pytest.mark.parametrize("kind", ["duckdb", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_doubles_an_unlocked_overlap_left_are_repaired(kind: str, process_sandbox: Sandbox, tmp_path: Path) -> None:
    loader = make_loader(kind, process_sandbox, tmp_path)
    try:
        loader.run()  # a pipeline of the days before locks (never checked for doubles)
        with loader.pipeline().sql_client() as client:  # what two unlocked merges at once left behind
            for table in ("list_members", "segment_members", "events", "profiles", "lists"):
                columns = [r[0] for r in client.execute_sql(
                    "select column_name from information_schema.columns where table_name = %s "
                    "and lower(table_schema) = %s order by ordinal_position", table, loader.dataset.lower())]
                # _dlt_id is unique where dlt creates it (PostgreSQL enforces it)
                values = [f"{c} || 'x'" if c == "_dlt_id" else c for c in columns]
                qualified = client.make_qualified_table_name(table)
                client.execute_sql(f"insert into {qualified} ({', '.join(columns)}) "
                                   f"select {', '.join(values)} from {qualified}")
        status, stderr = run_cli(loader)
        assert status == 0, stderr
        assert "list_members: removed 120 doubled row(s)" in stderr
        assert_matches_ground_truth(loader)
        status, stderr = run_cli(loader)  # checked once: later runs do not scan every table again
        assert status == 0 and "doubled" not in stderr, stderr
    finally:
        drop_dataset(loader)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MB file system of its own (tmpfs); skipped where this process may not mount one."""
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_says_so_and_the_next_run_cleans_up(process_sandbox: Sandbox, small_disk: Path) -> None:
    loader = duckdb_loader(process_sandbox, small_disk)  # the pipeline folder and the DuckDB file on it
    status, stderr = run_cli(loader)
    assert status == 1, stderr
    lines = stderr.strip().splitlines()
    assert "Traceback" not in stderr and lines[-1].startswith("error: the disk is full "), stderr
    assert str(small_disk) in lines[-1] and "credentials" not in lines[-1]
    subprocess.run(["mount", "-o", "remount,size=200m", str(small_disk)], check=True)
    status, stderr = run_cli(loader)
    assert status == 0, stderr
    pipeline_dir = small_disk / "pipelines" / loader.name
    assert [p.name for p in (pipeline_dir / "normalize").iterdir() if p.is_dir()] == ["extracted"]
    assert_matches_ground_truth(loader)
