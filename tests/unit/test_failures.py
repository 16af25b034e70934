"""Failure causes named truthfully: each cause its own line, found however deep dlt wrapped it."""

from __future__ import annotations

import io
import logging
import shutil
from collections import namedtuple
from pathlib import Path
from typing import Any

import dlt
import duckdb
import psycopg2
import pytest
from dlt.destinations.exceptions import DatabaseTransientException, DestinationConnectionError

from klaviyo_source.errors import AuthenticationError, ConfigurationError, KlaviyoAPIError, RunCancelled
from klaviyo_source.failures import (
    EXIT_FAILED,
    EXIT_LOCKED,
    EXIT_USAGE,
    NO_ADBC_NOTE,
    OneLineRecords,
    describe,
    explain,
)
from klaviyo_source.locks import Holder, LockHeld


def wrapped(inner: BaseException) -> BaseException:
    """As dlt hands it over: a step failure whose cause is a job failure whose cause is the real error."""
    try:
        try:
            raise inner
        except BaseException as exc:
            raise RuntimeError("job failed") from exc
    except RuntimeError as outer:
        try:
            raise ValueError("Pipeline execution failed at stage load") from outer
        except ValueError as step:
            return step


def disk_full_error() -> OSError:
    with pytest.raises(OSError) as caught, open("/dev/full", "w") as full:
        full.write("x")
        full.flush()
    return caught.value


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_a_full_disk_is_named_with_the_place_and_not_blamed_on_credentials(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    error = disk_full_error()  # as dlt's writers see it: ENOSPC, no file name
    usage = namedtuple("usage", "total used free")
    full, roomy = tmp_path / "pipelines", Path("/")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(1, 1, 20_000 if Path(p) == tmp_path else 10**12))
    failure = explain(wrapped(error), step="extract", places=[roomy, full])
    assert failure is not None and failure.kind == "disk full" and failure.exit_code == 1
    assert failure.message.startswith(f"the disk is full at {full} (0.0 MB free): free space there")
    assert "nothing was loaded and no cursor moved" in failure.message and "credentials" not in failure.message


def test_duckdb_reports_of_a_full_disk_are_a_full_disk(tmp_path: Path) -> None:
    wal = tmp_path / "k.duckdb.wal"
    error = duckdb.TransactionException(
        f'TransactionContext Error: Failed to commit: Could not write file "{wal}": No space left on device')
    failure = explain(wrapped(DatabaseTransientException(error)), step="load")
    assert failure is not None and failure.kind == "disk full"
    assert f"writing {wal} (" in failure.message and "MB free)" in failure.message
    assert "what was read waits in the pipeline folder" in failure.message


def test_duckdb_out_of_memory_on_a_full_disk_is_the_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda _: usage(10**9, 10**9 - 4096, 4096))
    error = duckdb.OutOfMemoryException(
        f'Out of Memory Error: failed to offload data block of size 256.0 KiB (128.0 MiB/128.0 MiB used) to '
        f'"{tmp_path / "k.duckdb.tmp"}"')
    failure = explain(wrapped(DatabaseTransientException(error)), step="load")
    assert failure is not None and failure.kind == "disk full" and "could not spill to disk" in failure.message
    monkeypatch.setattr(shutil, "disk_usage", lambda _: usage(10**12, 0, 10**12))
    failure = explain(wrapped(DatabaseTransientException(error)), step="load")
    assert failure is not None and failure.kind == "memory"


def test_a_duckdb_file_open_elsewhere_names_the_process() -> None:
    error = duckdb.IOException('IO Error: Could not set lock on file "/data/k.duckdb": Conflicting lock is held in '
                               '/usr/bin/duckdb (PID 4882). See also https://duckdb.org/docs/current/connect/concurrency')
    failure = explain(wrapped(DatabaseTransientException(error)), step="sync")
    assert failure is not None and failure.kind == "file in use" and failure.exit_code == EXIT_LOCKED
    assert failure.message.startswith("the DuckDB file /data/k.duckdb is open in another process (duckdb, PID 4882)")
    assert failure.message.endswith("nothing was read or loaded.")


def connect_error(dsn: str) -> psycopg2.OperationalError:
    with pytest.raises(psycopg2.OperationalError) as caught:
        psycopg2.connect(dsn, connect_timeout=5)
    return caught.value


def test_an_unreachable_postgres_is_unreachable() -> None:
    error = connect_error("postgresql://loader:pw@127.0.0.1:1/db")  # nothing listens on port 1
    failure = explain(wrapped(DestinationConnectionError("postgres", "klaviyo", str(error), error)), step="sync")
    assert failure is not None and failure.kind == "unreachable"
    assert failure.message.startswith('cannot reach PostgreSQL at 127.0.0.1:1 (connection to server at "127.0.0.1"')
    assert "the server runs" in failure.message


@pytest.mark.parametrize(
    ("text", "kind", "start"),
    [
        ('connection to server at "db", port 5432 failed: FATAL:  password authentication failed for user "loader"',
         "credentials", "PostgreSQL at db:5432 refused the credentials"),
        ('connection to server at "db", port 5432 failed: FATAL:  role "nobody" does not exist',
         "credentials", "PostgreSQL at db:5432 refused the credentials"),
        ('connection to server at "db", port 5432 failed: FATAL:  database "nodb" does not exist',
         "credentials", "PostgreSQL at db:5432 has no database 'nodb'"),
        ("could not extend file \"base/16384/2619\": No space left on device",
         "disk full", "the PostgreSQL server's disk is full"),
    ],
)
def test_postgres_refusals_are_named(text: str, kind: str, start: str) -> None:
    failure = explain(wrapped(DatabaseTransientException(psycopg2.OperationalError(text))), step="load")
    assert failure is not None and failure.kind == kind and failure.message.startswith(start), failure


def test_lock_held_has_its_own_exit_code_and_klaviyo_errors_speak_for_themselves() -> None:
    held = LockHeld("pipeline klaviyo", Holder(7, "h", None), 0)
    failure = explain(wrapped(held))
    assert failure is not None and failure.exit_code == EXIT_LOCKED and failure.message == str(held)
    assert explain(wrapped(AuthenticationError("/events", 401, "bad key"))) is None
    assert explain(wrapped(KeyError("something else"))) is None


def test_dlt_tracebacks_are_folded_into_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    stream = io.StringIO()
    logger = logging.getLogger("dlt.test_failures")
    handler = logging.StreamHandler(stream)
    logger.addHandler(handler)
    logger.addFilter(OneLineRecords())
    monkeypatch.setattr(logger, "propagate", False)
    try:
        try:
            raise OSError(28, "No space left on device")
        except OSError:
            logger.warning("Failed to create trace dump via pickle", exc_info=True)
        logger.warning("Job retried with message %s", 'Traceback (most recent call last):\n  File "x", line 1\n'
                                                        "OSError: disk full\n")
    finally:
        logger.removeHandler(handler)
    lines = stream.getvalue().splitlines()
    assert lines == ["Failed to create trace dump via pickle (OSError: [Errno 28] No space left on device)",
                     "Job retried with message (OSError: disk full)"]


def test_nothing_is_folded_at_debug(monkeypatch: pytest.MonkeyPatch) -> None:
    record: Any = logging.LogRecord("dlt", logging.WARNING, "x", 1, "msg", None, (OSError, OSError("e"), None))
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.DEBUG)
    try:
        assert OneLineRecords().filter(record) and record.exc_info is not None
    finally:
        root.setLevel(level)


# --- describe: the command line's line and exit status for any failure ------------------------------------

class StepFailed(Exception):
    """Stands for dlt's PipelineStepFailed: the step, and the cause chained below."""

    def __init__(self, step: str) -> None:
        super().__init__(f"Pipeline execution failed at `step={step}`")
        self.step = step


def failed(step: str, cause: BaseException) -> BaseException:
    try:
        try:
            raise cause
        except BaseException as inner:
            raise StepFailed(step) from inner
    except StepFailed as outer:
        return outer


def test_a_table_stopped_by_another_reports_the_other_tables_error() -> None:
    real = KlaviyoAPIError("/metrics", 403, "You do not have permission.", "permission_denied")
    failure = describe(failed("extract", RunCancelled(real)))
    assert failure == describe(failed("extract", real))
    assert failure.message == "Klaviyo /metrics: HTTP 403 [permission_denied]: You do not have permission."
    assert failure.exit_code == EXIT_FAILED


def test_bad_configuration_is_a_usage_error() -> None:
    failure = describe(failed("extract", ConfigurationError("concurrency must be between 1 and 64, got 0.")))
    assert (failure.message, failure.exit_code) == ("concurrency must be between 1 and 64, got 0.", EXIT_USAGE)


def test_missing_destination_credentials_name_the_file_and_the_variable(tmp_path: Path) -> None:
    pipeline = dlt.pipeline("failures_unit", destination="postgres", dataset_name="x", pipelines_dir=str(tmp_path))
    with pytest.raises(Exception) as caught:
        pipeline.destination_client()
    failure = describe(caught.value)
    assert failure.exit_code == EXIT_USAGE
    assert failure.message == ("Missing configuration: set [destination.postgres] credentials in .dlt/secrets.toml "
                               "or DESTINATION__POSTGRES__CREDENTIALS.")


def test_an_unrecognized_destination_error_is_its_first_line_and_what_the_run_left() -> None:
    binder = failed("load", RuntimeError('Binder Error: Ambiguous reference to catalog or schema "klaviyo"\nmore'))
    assert describe(binder).message == ('the destination failed (load step): Binder Error: Ambiguous reference to '
                                        'catalog or schema "klaviyo"; nothing is lost: what was read waits in the '
                                        'pipeline folder and the next run loads it first.')


def test_a_bug_of_ours_is_one_line_that_says_so_and_a_step_failure_is_not() -> None:
    defect = describe(KeyError("window"))
    assert (defect.kind, defect.exit_code) == ("defect", EXIT_FAILED)
    assert defect.message.startswith("KeyError: 'window' (an unexpected error in klaviyo-dlt itself: ")
    assert "--log-level DEBUG" in defect.message and "\n" not in defect.message
    step = describe(failed("normalize", KeyError("window")))
    assert (step.kind, step.message) == ("other", "normalize step: KeyError: 'window'")


def test_the_missing_adbc_driver_is_one_note_that_says_what_it_costs() -> None:
    folding = OneLineRecords()

    def shown(table: str) -> str | None:
        record = logging.LogRecord("dlt", logging.WARNING, "x", 1, "parquet file format was requested for table "
                                   "%s but ADBC driver for postgresql was not installed:\n No module named "
                                   "'adbc_driver_manager'\n Read more: https://dlthub.com/docs", (table,), None)
        return record.getMessage() if folding.filter(record) else None

    assert shown("events") == NO_ADBC_NOTE and "INSERT statements" in NO_ADBC_NOTE
    assert shown("profiles") is None, "once per process, not once per table"
