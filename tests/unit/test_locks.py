"""Run locks: one holder at a time, the holder named, bounded waits, locks of killed runs taken over."""

from __future__ import annotations

import fcntl
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import dlt
import pytest

from klaviyo_source.locks import (
    FileLock,
    Holder,
    LockHeld,
    PostgresLock,
    destination_lock,
    holding,
    pipeline_lock,
)
from klaviyo_source.scheduling import scheduled_run

HOLD = """
import sys, time
from klaviyo_source.locks import FileLock, PostgresLock
lock = FileLock(sys.argv[2], "test") if sys.argv[1] == "file" else PostgresLock(sys.argv[2], sys.argv[3])
assert lock.try_acquire() is None
print("held", flush=True)
time.sleep(600)
"""


def hold_in_child(*args: str) -> subprocess.Popen[str]:
    """Another process that takes the lock and keeps it until it is killed."""
    child = subprocess.Popen([sys.executable, "-c", HOLD, *args], stdout=subprocess.PIPE, text=True,
                             env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])})
    assert child.stdout is not None and child.stdout.readline().strip() == "held"
    return child


def kill(child: subprocess.Popen[str]) -> None:
    child.send_signal(signal.SIGKILL)
    child.wait()


def test_a_file_lock_has_one_holder_and_names_it(tmp_path: Path) -> None:
    path = tmp_path / "pipeline.lock"
    child = hold_in_child("file", str(path))
    try:
        holder = FileLock(path, "pipeline p").try_acquire()
        assert holder is not None and holder.pid == child.pid and holder.host == socket.gethostname()
        assert holder.since is not None and holder.since <= datetime.now(timezone.utc)
    finally:
        kill(child)


def test_a_holder_caught_before_it_wrote_its_record_is_still_named(tmp_path: Path) -> None:
    """Between taking the flock and writing its record a holder may be paused (a loaded machine): the file is
    empty then, and the run locked out waits for the record rather than naming "a process"."""
    path = tmp_path / "pipeline.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # taken, no record yet
        me = Holder.me()
        threading.Timer(0.3, lambda: os.pwrite(fd, me.to_json().encode(), 0)).start()
        assert FileLock(path, "pipeline p").try_acquire() == me
    finally:
        os.close(fd)


def test_the_lock_of_a_killed_run_is_taken_over_and_reported(tmp_path: Path,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "pipeline.lock"
    child = hold_in_child("file", str(path))
    kill(child)  # SIGKILL: no chance to release; the kernel drops the flock, the record stays
    lock = FileLock(path, "pipeline p")
    assert lock.try_acquire() is None
    assert lock.taken_over is not None and lock.taken_over.pid == child.pid
    assert f"took over the lock on pipeline p from pid {child.pid}" in caplog.text
    lock.release()
    assert path.read_text() == "", "a clean release leaves no record"
    again = FileLock(path, "pipeline p")
    assert again.try_acquire() is None and again.taken_over is None
    again.release()


def test_a_released_file_lock_can_be_taken_again_in_the_same_process(tmp_path: Path) -> None:
    first, second = FileLock(tmp_path / "x.lock", "x"), FileLock(tmp_path / "x.lock", "x")
    assert first.try_acquire() is None
    assert second.try_acquire() is not None  # flock excludes other open files, in this process too
    first.release()
    assert second.try_acquire() is None
    second.release()


class ScriptedLock:
    """Held by someone else for `busy` tries, then free."""

    def __init__(self, busy: int, what: str = "dataset d") -> None:
        self.busy = busy
        self.what = what
        self.tries = 0
        self.released = 0
        self.holder = Holder(4242, "db-host", datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc))

    def try_acquire(self) -> Holder | None:
        self.tries += 1
        return self.holder if self.tries <= self.busy else None

    def release(self) -> None:
        self.released += 1


def test_holding_waits_for_a_lock_that_frees_up() -> None:
    slept: list[float] = []
    first, second = ScriptedLock(0, "pipeline p"), ScriptedLock(3)
    with holding([first, second], wait=60, sleep=slept.append):
        assert second.tries == 4
    assert len(slept) == 3 and first.released == second.released == 1


def test_holding_gives_up_after_its_wait_naming_the_holder() -> None:
    first, second = ScriptedLock(0, "pipeline p"), ScriptedLock(10**9)
    with pytest.raises(LockHeld) as caught, holding([first, second], wait=0):
        pytest.fail("entered without the lock")
    message = str(caught.value)
    assert message.startswith("another run holds the lock on dataset d: pid 4242 on db-host "
                              "since 2026-01-02 03:04:05 UTC")
    assert "did nothing" in message and "--lock-wait" in message
    assert first.released == 1, "the locks already taken are let go"


@pytest.fixture
def dsn() -> str:
    value = os.environ.get("KLAVIYO_TEST_POSTGRES_DSN")
    if not value:
        pytest.skip("KLAVIYO_TEST_POSTGRES_DSN is not set")
    return value


@pytest.mark.postgres
def test_postgres_lock_per_dataset_names_its_holder_and_ends_with_a_killed_holder(dsn: str) -> None:
    dataset = f"lock_{uuid.uuid4().hex[:8]}"
    child = hold_in_child("postgres", dsn, dataset)
    other = PostgresLock(dsn, f"{dataset}_other")
    try:
        assert other.try_acquire() is None, "another dataset is another lock"
        mine = PostgresLock(dsn, dataset)
        holder = mine.try_acquire()
        assert holder is not None and holder.pid == child.pid and holder.host == socket.gethostname()[:len(holder.host)]
        kill(child)  # the server ends the session and its lock with it
        deadline = datetime.now(timezone.utc).timestamp() + 30
        while mine.try_acquire() is not None:  # the server notices the closed socket in a moment
            assert datetime.now(timezone.utc).timestamp() < deadline, "the lock outlived its killed holder"
            time.sleep(0.1)
        mine.release()
    finally:
        other.release()
        if child.poll() is None:
            kill(child)


def test_which_lock_guards_which_destination(tmp_path: Path) -> None:
    def pipeline(name: str, destination: Any, dataset: str = "klaviyo") -> dlt.Pipeline:
        return dlt.pipeline(name, destination=destination, dataset_name=dataset, pipelines_dir=str(tmp_path / "p"))

    duck = destination_lock(pipeline("a", dlt.destinations.duckdb(str(tmp_path / "k.duckdb"))))
    assert isinstance(duck, FileLock) and duck.path == tmp_path / "k.duckdb.lock"
    assert destination_lock(pipeline("b", dlt.destinations.duckdb(str(tmp_path / "k.duckdb")), "other")).path \
        == duck.path, "one DuckDB file, one writer: every dataset in it shares the lock"
    files = dlt.destinations.filesystem(str(tmp_path / "bucket"))
    generic = destination_lock(pipeline("c", files))
    assert isinstance(generic, FileLock) and generic.path.parent.name == "locks"
    assert destination_lock(pipeline("d", files)).path == generic.path
    assert destination_lock(pipeline("e", files, "other")).path != generic.path
    assert pipeline_lock(tmp_path / "p" / "a", "a").path == tmp_path / "p" / "a.lock"


def test_scheduled_run_keeps_a_second_run_of_the_pipeline_out(tmp_path: Path) -> None:
    options: dict[str, Any] = {"pipelines_dir": str(tmp_path / "p"), "dataset_name": "d",
                               "destination": dlt.destinations.duckdb(str(tmp_path / "k.duckdb"))}
    with scheduled_run("sched", **options) as pipeline:
        pipeline.run([{"id": 1}], table_name="t")
        with pytest.raises(LockHeld, match=r"^another run holds the lock on pipeline sched \("), \
                scheduled_run("sched", **options):
            pytest.fail("entered while the first run holds the lock")
        with pytest.raises(LockHeld, match=r"^another run holds the lock on DuckDB file "), \
                scheduled_run("other", **options):
            pytest.fail("entered the DuckDB file another run holds")
    with scheduled_run("other", **options) as pipeline:  # released on leaving
        pipeline.run([{"id": 2}], table_name="t")
    assert len(list((tmp_path / "p" / "sched" / "load" / "loaded").iterdir())) == 1, "pruned to one package"
