"""Any failure of a run -> the one line a scheduler's log shows and the exit status that goes with it.

`describe` is the one place that mapping happens (the command line prints its line and exits with its
code; Python callers can do the same). It asks `explain` first for the true cause: dlt wraps what went
wrong in step, job and client exceptions, and a destination reports a full disk as "Out of Memory" or an
I/O error, while the log needs the cause itself (the disk is full, another process holds a lock, the
destination cannot be reached or refused the credentials). `explain` walks the whole chain of an
exception and returns the first cause it recognizes; otherwise our own errors speak as they are, missing
configuration names its file and variable, and anything else is its innermost error's first line.

Exit statuses (the README's "Exit codes" lists the same): 0 loaded; 1 the run failed; 2 bad arguments
or configuration; 3 loaded, with records set aside (table set_aside_records); 75 another run holds a
lock, or another program the DuckDB file (EX_TEMPFAIL: nothing was done, try again later).
"""

from __future__ import annotations

import errno
import logging
import re
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dlt.common.configuration.exceptions import ConfigFieldMissingException, LookupTraces
from dlt.common.exceptions import DltException

from klaviyo_source.errors import ConfigurationError, KlaviyoSourceError
from klaviyo_source.locks import LockHeld

EXIT_LOADED = 0
EXIT_FAILED = 1  # the run failed: Klaviyo, the network or the destination; the next run can succeed
EXIT_USAGE = 2  # bad arguments or configuration: the command fails the same way until they are fixed
EXIT_SET_ASIDE = 3  # loaded, but records that did not fit their table were set aside (set_aside_records)
EXIT_DIFFERS = 4  # --verify-only: the warehouse and Klaviyo differ (nothing was loaded)
EXIT_LOCKED = 75  # EX_TEMPFAIL (sysexits.h): another run is busy; try again later


@dataclass(frozen=True)
class Failure:
    """A failure as reported: what kind it is, the line to print, the process's exit code."""

    # recognized causes: "locked", "disk full", "file in use", "unreachable", "credentials", "permission",
    # "memory"; then "usage", "klaviyo", "destination", "other" (a step failed), "defect" (a bug of ours)
    kind: str
    message: str
    exit_code: int = EXIT_FAILED


def chain(exc: BaseException) -> Iterator[BaseException]:
    """The exception and everything it wraps: causes, contexts, and exceptions carried in `args`
    (dlt's job and client errors keep the driver's exception there)."""
    seen: set[int] = set()
    todo = [exc]
    while todo:
        current = todo.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        todo.extend(a for a in current.args if isinstance(a, BaseException))
        for attr in ("dbapi_exception", "inner_exc", "exception"):
            inner = getattr(current, attr, None)
            if isinstance(inner, BaseException):
                todo.append(inner)
        for nxt in (current.__cause__, current.__context__):
            if nxt is not None:
                todo.append(nxt)


_NO_SPACE = re.compile(r"no space left on device|disk quota exceeded|not enough space on (the )?disk", re.I)
_QUOTED_PATH = re.compile(r"""["'](/[^"']+)["']""")
_DUCKDB_FILE_LOCK = re.compile(r'Could not set lock on file "([^"]+)": Conflicting lock is held in (.+?) \(PID (\d+)\)')
_PG_UNREACHABLE = re.compile(
    r"connection refused|could not connect|could not translate host name|timeout expired|timed out|"
    r"no route to host|network is unreachable|server closed the connection unexpectedly|"
    r"connection to server .* failed: (?!FATAL)|name or service not known|invalid response to ssl negotiation",
    re.I,
)
_PG_CREDENTIALS = re.compile(
    r"password authentication failed|no password supplied|role \"[^\"]*\" does not exist|"
    r"pg_hba\.conf rejects|permission denied for database|authentication failed", re.I,
)
_PG_NO_DATABASE = re.compile(r'database "([^"]*)" does not exist', re.I)
_PG_SERVER = re.compile(r'connection to server at "([^"]+)"(?:, port (\d+))?')
_OUT_OF_MEMORY = re.compile(r"out of memory", re.I)
LOW_DISK = 64 * 1024 * 1024  # below this free, an "out of memory" of a database that spills to disk is the disk


def explain(exc: BaseException, step: str | None = None, places: Sequence[Path] = ()) -> Failure | None:
    """The recognized cause of `exc` in one line, or None.

    step: dlt's step that failed, if known; places: where this run writes (the pipeline folder, a DuckDB
    file), named when a full disk's error does not say which file it was writing.
    """
    causes = list(chain(exc))
    on_postgres = any(_is_postgres_error(c) for c in causes)
    for cause in causes:
        if isinstance(cause, LockHeld):
            return Failure("locked", str(cause), EXIT_LOCKED)
    for cause in causes:
        if isinstance(cause, KlaviyoSourceError):
            return None  # Klaviyo's own errors already say what happened and what to do
    texts = [f"{type(c).__name__}: {c}" for c in causes]
    for cause in causes:
        failure = _disk_full(cause, step, on_postgres, places)
        if failure:
            return failure
    for text in texts:
        match = _DUCKDB_FILE_LOCK.search(text)
        if match:
            file, program, pid = match.groups()
            return Failure(
                "file in use",
                f"the DuckDB file {file} is open in another process ({Path(program).name}, PID {pid}), and DuckDB "
                "lets one process write to a file at a time: close that session (or open it with read_only=True "
                f"/ `duckdb -readonly`) and run again; {_afterwards(step)}",
                EXIT_LOCKED,
            )
    for cause in causes:
        failure = _postgres(cause, step)
        if failure:
            return failure
    for cause in causes:
        if isinstance(cause, PermissionError) or (isinstance(cause, OSError) and cause.errno == errno.EROFS):
            where = cause.filename or "a file"
            why = "the file system is read-only" if cause.errno == errno.EROFS else "permission denied"
            return Failure("permission", f"cannot write {where} ({why}): run as a user who may write there, or "
                                         f"choose another --pipelines-dir / --duckdb-file; {_afterwards(step)}")
    for cause in causes:
        if isinstance(cause, MemoryError) or _OUT_OF_MEMORY.search(str(cause)):
            spill = _low_disk(_paths_in(str(cause)))
            if spill:
                return spill_full(spill, step)
            return Failure("memory", f"out of memory ({_first_line(cause)}): give the run more memory, or lower "
                                     f"--concurrency; {_afterwards(step)}")
    return None


def _first_line(exc: BaseException) -> str:
    return next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)


def _afterwards(step: str | None) -> str:
    """What state the failed run left, by the step it failed in."""
    if step == "load":
        return "nothing is lost: what was read waits in the pipeline folder and the next run loads it first."
    if step == "normalize":
        return "nothing is lost: what was read waits in the pipeline folder and the next run finishes it."
    if step in ("sync", None):  # None: before any step, e.g. while taking the locks
        return "nothing was read or loaded."
    return "nothing was loaded and no cursor moved; the next run reads it again."


def _paths_in(text: str) -> list[Path]:
    return [Path(p) for p in _QUOTED_PATH.findall(text)]


def _disk_full(cause: BaseException, step: str | None, on_postgres: bool, places: Sequence[Path]) -> Failure | None:
    is_oserror = isinstance(cause, OSError) and cause.errno in (errno.ENOSPC, errno.EDQUOT)
    if not is_oserror and not _NO_SPACE.search(str(cause)):
        return None
    if on_postgres and not is_oserror:
        return Failure("disk full", f"the PostgreSQL server's disk is full ({_first_line(cause)}): free space on "
                                    f"the database server; {_afterwards(step)}")
    path = Path(cause.filename) if isinstance(cause, OSError) and cause.filename else next(
        (p for line in str(cause).splitlines() if _NO_SPACE.search(line) for p in _paths_in(line)), None)
    full = [p for p in places if _free(p) is not None and (_free(p) or 0) < LOW_DISK]
    if path is not None and path.is_absolute() and (not full or (_free(path) or 0) < LOW_DISK):
        where = f" writing {path}{_free_text(path)}"
    else:  # no path, or one on a roomy disk (a temporary name): the places of this run that are full
        where = f" at {', '.join(f'{p}{_free_text(p)}' for p in full)}" if full else ""
    return Failure(
        "disk full",
        f"the disk is full{where}: free space there or move --pipelines-dir / --duckdb-file to a larger disk "
        f"(the next run removes what this one left half written); {_afterwards(step)}",
    )


def spill_full(path: Path, step: str | None) -> Failure:
    """DuckDB reports a spill it cannot write as 'Out of Memory'; the disk it spills to is full."""
    return Failure(
        "disk full",
        f"DuckDB ran past its memory limit and could not spill to disk: the disk of {path}{_free_text(path)} is "
        f"full: free space there or raise --duckdb-memory-limit; {_afterwards(step)}",
    )


def _free(path: Path) -> int | None:
    """Free bytes on the disk of `path` (or of its nearest existing parent)."""
    for folder in (path, *path.parents):
        if folder.exists():
            return shutil.disk_usage(folder).free
    return None


def _free_text(path: Path) -> str:
    free = _free(path)
    return f" ({free / 1e6:.1f} MB free)" if free is not None else ""


def _low_disk(paths: list[Path]) -> Path | None:
    """The first of `paths` on a disk with almost no space left."""
    return next((p for p in paths if (_free(p) if p.is_absolute() else None) is not None
                 and (_free(p) or 0) < LOW_DISK), None)


def _is_postgres_error(cause: BaseException) -> bool:
    return type(cause).__module__.split(".")[0] == "psycopg2" or getattr(cause, "pgcode", None) is not None


def _postgres(cause: BaseException, step: str | None) -> Failure | None:
    if not _is_postgres_error(cause):
        return None
    text = str(cause)
    server = _PG_SERVER.search(text)
    where = f" at {server.group(1)}{':' + server.group(2) if server and server.group(2) else ''}" if server else ""
    first = _first_line(cause).rstrip(".")
    missing = _PG_NO_DATABASE.search(text)
    if missing:
        return Failure("credentials", f"PostgreSQL{where} has no database {missing.group(1)!r}: create it "
                                      "(createdb) or fix the database in [destination.postgres] credentials; "
                                      f"{_afterwards(step)}")
    if _PG_CREDENTIALS.search(text):
        return Failure("credentials", f"PostgreSQL{where} refused the credentials ({first}): fix [destination."
                                      "postgres] credentials in .dlt/secrets.toml or DESTINATION__POSTGRES__"
                                      f"CREDENTIALS; {_afterwards(step)}")
    if _PG_UNREACHABLE.search(text):
        return Failure("unreachable", f"cannot reach PostgreSQL{where} ({first}): check the host and port in "
                                      "[destination.postgres] credentials and that the server runs and accepts "
                                      f"connections from this machine; {_afterwards(step)}")
    return None


_TRACEBACK = "Traceback (most recent call last):"
_NO_ADBC = re.compile(r"parquet file format was requested for table .* but ADBC driver for .* was not installed", re.S)
NO_ADBC_NOTE = (
    "PostgreSQL is loaded with INSERT statements, the slow path: the ADBC driver is not installed "
    '(pip install -e ".[postgres]" or adbc-driver-postgresql brings it; see README "Warehouses")'
)


class OneLineRecords(logging.Filter):
    """Folds the tracebacks dlt logs (a job retried, a trace it could not save) into their last line.

    A scheduler's log then shows what happened in one line each, and the run's own `error:` line stays
    the one that explains; with DEBUG logging nothing is folded. dlt's warning that the ADBC driver is
    missing, repeated for every table on every run into PostgreSQL, becomes one note per process that says
    what it means and how to get the fast path.
    """

    def __init__(self) -> None:
        super().__init__()
        self._adbc_noted = False

    def filter(self, record: logging.LogRecord) -> bool:
        if logging.getLogger().isEnabledFor(logging.DEBUG):
            return True
        message = record.getMessage()
        if _NO_ADBC.search(message):
            if self._adbc_noted:
                return False
            self._adbc_noted = True
            record.msg, record.args = NO_ADBC_NOTE, None
            return True
        summary = ""
        if record.exc_info and record.exc_info[1] is not None:
            summary = f"{type(record.exc_info[1]).__name__}: {_first_line(record.exc_info[1])}"
        if _TRACEBACK in message:
            head, _, trace = message.partition(_TRACEBACK)
            lines = [line.strip() for line in trace.splitlines() if line.strip()]
            message, summary = head.rstrip(), summary or (lines[-1] if lines else "")
        if summary or record.exc_info:
            record.msg = f"{message} ({summary})" if summary else message
            record.args = None
            record.exc_info = record.exc_text = record.stack_info = None
        return True


def fold_dlt_tracebacks() -> None:
    """Installs OneLineRecords on dlt's logger (once)."""
    logger = logging.getLogger("dlt")
    if not any(isinstance(f, OneLineRecords) for f in logger.filters):
        logger.addFilter(OneLineRecords())


# --- any failure -> the command line's line and exit status ----------------------------------------------

def root_cause(exc: BaseException) -> BaseException:
    """The innermost error, or the first of ours on the way down (its message is made for users); a table
    stopped because another failed (RunCancelled) leads to that other table's error."""
    seen = exc
    while True:
        nxt = seen.__cause__ or seen.__context__
        if isinstance(seen, KlaviyoSourceError) or nxt is None:
            return seen
        seen = nxt


def describe(exc: BaseException, places: Sequence[Path] = ()) -> Failure:
    """The line and exit status for any failure of a run (places: where the run writes, see `explain`)."""
    step = getattr(exc, "step", None)
    recognized = explain(exc, step, places)
    if recognized is not None:
        return recognized
    cause = root_cause(exc)
    if isinstance(cause, ConfigurationError):
        return Failure("usage", str(cause), EXIT_USAGE)
    if isinstance(cause, KlaviyoSourceError):
        return Failure("klaviyo", str(cause))
    if isinstance(cause, ConfigFieldMissingException):
        return Failure("usage", _missing_config(cause), EXIT_USAGE)
    first = _first_line(cause)
    if step in ("load", "sync"):
        return Failure("destination", f"the destination failed ({step} step): {first}; {_afterwards(step)}")
    if step or isinstance(exc, DltException):
        return Failure("other", f"{step + ' step: ' if step else ''}{type(cause).__name__}: {first}")
    # Outside dlt's steps and not one of ours: a bug of this program rather than a failure of the run. Still one
    # line (a scheduler's log greps for it); the traceback is a --log-level DEBUG away.
    return Failure("defect", f"{type(cause).__name__}: {first} (an unexpected error in klaviyo-dlt itself: "
                             "--log-level DEBUG shows its traceback; please report it)")


def _missing_config(exc: ConfigFieldMissingException) -> str:
    """dlt's message lists every place it looked; users need the file and the variable for each field."""
    wanted = []
    for field, traces in exc.traces.items():
        path = _config_path(field, traces)
        if not path:
            wanted.append(field)
            continue
        toml = f"[{'.'.join(path[:-1])}] {path[-1]}" if len(path) > 1 else path[0]
        wanted.append(f"{toml} in .dlt/secrets.toml or {'__'.join(path).upper()}")
    return f"Missing configuration: set {'; '.join(wanted)}."


def _config_path(field: str, traces: Sequence[Any]) -> list[str]:
    """Where a field lives (sections and name), from the first place dlt looked for it."""
    for trace in traces:
        if isinstance(trace, LookupTraces):  # the field is a configuration itself (credentials)
            for inner in trace.traces.values():
                sections = _config_path("", inner)
                return sections[:-1] if sections and sections[-1] == "" else sections
        sections = list(getattr(trace, "sections", None) or [])
        return [*sections, field]
    return []
