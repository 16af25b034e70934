"""Locks that keep scheduled runs from overlapping: one per pipeline folder, one per destination dataset.

Two runs of one pipeline at once corrupt its working folder (one run deletes the package the other is
loading); two pipelines merging into one dataset at once double rows (both delete, then both insert) or
deadlock. So a run holds two locks, always taken in this order (no deadlock between runs):

1. the pipeline's: a lock file beside its working folder (`<pipelines_dir>/<name>.lock`);
2. the destination dataset's, by what holds a lock reliably there:
   - DuckDB: a lock file beside the database file (`<file>.lock`), for every dataset in that file, since
     DuckDB lets one process write to a file at a time anyway;
   - PostgreSQL: a session advisory lock on a connection held for the whole run, per database and dataset;
   - anything else: a lock file per destination and dataset in dlt's data folder (`/var/dlt/locks` or
     `~/.dlt/locks`), which keeps runs on one machine apart; runs on several machines need the scheduler's
     own exclusion (an Airflow pool, a GitHub Actions concurrency group).

Every lock dies with its holder: lock files are `flock`ed (the kernel releases them when the process dies,
even on SIGKILL) and an advisory lock ends with its session. A lock a killed run left is therefore taken
over at once; the lock file still holds the killed run's record, which is reported. A run that finds a
lock held waits up to a bounded time, then raises LockHeld naming the holder (pid, host, since when).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import re
import socket
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol

from klaviyo_source.errors import KlaviyoSourceError

log = logging.getLogger("klaviyo_source")

POLL_SECONDS = 1.0  # how often a waiting run looks again
RECORD_WAIT = 1.0  # how long a locked-out run waits for the holder's record to be written


@dataclass(frozen=True)
class Holder:
    """Who holds a lock: a run's process id, host and start time."""

    pid: int | None
    host: str
    since: datetime | None

    @classmethod
    def me(cls) -> Holder:
        return cls(os.getpid(), socket.gethostname(), datetime.now(timezone.utc).replace(microsecond=0))

    def describe(self, now: datetime | None = None) -> str:
        who = f"pid {self.pid}" if self.pid is not None else "a process"
        text = f"{who} on {self.host}" if self.host else who
        if self.since is not None:
            age = int(((now or datetime.now(timezone.utc)) - self.since).total_seconds())
            text += f" since {self.since.strftime('%Y-%m-%d %H:%M:%S')} UTC ({_duration(age)} ago)"
        return text

    def to_json(self) -> str:
        since = self.since.isoformat() if self.since else None
        return json.dumps({"pid": self.pid, "host": self.host, "since": since})

    @classmethod
    def from_json(cls, text: str) -> Holder | None:
        try:
            record = json.loads(text)
            since = datetime.fromisoformat(record["since"]) if record.get("since") else None
            return cls(record.get("pid"), str(record.get("host") or ""), since)
        except (ValueError, TypeError, KeyError, AttributeError):
            return None


def _duration(seconds: int) -> str:
    if seconds < 120:
        return f"{max(seconds, 0)} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"


class LockHeld(KlaviyoSourceError):
    """Another run holds a lock this run needs; nothing was read or written."""

    def __init__(self, what: str, holder: Holder | None, waited: float) -> None:
        self.what = what
        self.holder = holder
        self.waited = waited
        held_by = holder.describe() if holder else "another process"
        wait = f"waited {waited:.0f} s; " if waited >= 1 else ""
        super().__init__(
            f"another run holds the lock on {what}: {held_by}; this run {wait}did nothing (the next run "
            "continues where that one ends): run again later, or pass --lock-wait SECONDS to wait for it."
        )


class RunLock(Protocol):
    """One lock: `try_acquire` returns None once held, else who holds it; `release` lets it go."""

    what: str

    def try_acquire(self) -> Holder | None: ...

    def release(self) -> None: ...


class FileLock:
    """An exclusive `flock` on a file that holds its holder's record while held (and after a kill)."""

    def __init__(self, path: str | os.PathLike[str], what: str) -> None:
        self.path = Path(path)
        self.what = what
        self.taken_over: Holder | None = None  # the record of a run that died holding this lock
        self._fd: int | None = None

    def try_acquire(self) -> Holder | None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                return _holder_of(fd)
            finally:
                os.close(fd)
        except BaseException:
            os.close(fd)
            raise
        previous = _read(fd)
        if previous is not None:
            # A clean release empties the file: a record left behind is a run that was killed holding it.
            self.taken_over = previous
            log.warning("took over the lock on %s from %s, which ended without releasing it (killed?)",
                        self.what, previous.describe())
        os.ftruncate(fd, 0)
        os.pwrite(fd, Holder.me().to_json().encode(), 0)
        self._fd = fd
        return None

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            os.ftruncate(fd, 0)
        finally:
            os.close(fd)  # closing the last descriptor releases the flock


def _holder_of(fd: int) -> Holder:
    """The record of the run that holds the flock on `fd`. A run writes it right after taking the lock, so an
    empty file is that moment: look again for a while (a loaded machine may pause the writer in between;
    seen in CI: a locked-out run named "a process" instead of the holder)."""
    deadline = time.monotonic() + RECORD_WAIT
    while (holder := _read(fd)) is None and time.monotonic() < deadline:
        time.sleep(0.02)
    return holder or Holder(None, "", None)


def _read(fd: int) -> Holder | None:
    data = os.pread(fd, 4096, 0).decode(errors="replace").strip()
    return Holder.from_json(data) if data else None


# Advisory locks are keyed by two int4: our namespace and the dataset.
_PG_NAMESPACE = zlib.crc32(b"klaviyo-dlt run lock") & 0x7FFFFFFF
_APP_NAME = re.compile(r"^klaviyo-dlt (?P<pid>\d+)@(?P<host>\S*) (?P<since>\S+)$")


class PostgresLock:
    """A session advisory lock per dataset, held on a connection of its own for the whole run.

    The holder is found through pg_stat_activity: the connection's application_name carries pid, host and
    start time. Keepalives make the server notice a holder whose machine vanished, so its lock ends too.
    Needs a session-level connection: through PgBouncer in transaction mode a session lock is not held.
    """

    def __init__(self, dsn: str, dataset: str, connect_timeout: int = 15) -> None:
        self.dsn = dsn
        self.dataset = dataset
        self.what = f"PostgreSQL dataset {dataset}"
        self.key = zlib.crc32(dataset.encode()) & 0x7FFFFFFF
        self.connect_timeout = connect_timeout
        self._conn: Any = None

    def _connect(self) -> Any:
        import psycopg2  # the postgres extra; only needed when loading into PostgreSQL

        me = Holder.me()
        since = me.since.strftime("%Y-%m-%dT%H:%M:%SZ") if me.since else "-"
        room = 63 - len(f"klaviyo-dlt {me.pid}@ {since}")  # application_name keeps 63 bytes
        conn = psycopg2.connect(
            self.dsn, connect_timeout=self.connect_timeout,
            application_name=f"klaviyo-dlt {me.pid}@{me.host[:max(room, 0)]} {since}",
            keepalives=1, keepalives_idle=30, keepalives_interval=10, keepalives_count=3,
        )
        conn.autocommit = True
        with conn.cursor() as cur:  # the server side too: a vanished client's session (and lock) ends
            cur.execute("set tcp_keepalives_idle = 30; set tcp_keepalives_interval = 10; "
                        "set tcp_keepalives_count = 3")
        return conn

    def try_acquire(self) -> Holder | None:
        if self._conn is None:
            self._conn = self._connect()
        with self._conn.cursor() as cur:
            cur.execute("select pg_try_advisory_lock(%s, %s)", (_PG_NAMESPACE, self.key))
            if cur.fetchone()[0]:
                return None
            cur.execute(
                "select a.application_name, a.pid, coalesce(host(a.client_addr), 'local socket'), a.backend_start "
                "from pg_locks l join pg_stat_activity a on a.pid = l.pid "
                "where l.locktype = 'advisory' and l.granted and l.classid = %s and l.objid = %s and l.objsubid = 2",
                (_PG_NAMESPACE, self.key),
            )
            row = cur.fetchone()
        return _pg_holder(row) if row else Holder(None, "", None)

    def release(self) -> None:
        if self._conn is None:
            return
        conn, self._conn = self._conn, None
        try:
            conn.close()  # ending the session releases its advisory locks
        except Exception as exc:  # the lock ended with the connection either way
            log.debug("closing the lock connection: %s", exc)


def _pg_holder(row: Sequence[Any]) -> Holder:
    application_name, backend_pid, client, backend_start = row
    match = _APP_NAME.match(application_name or "")
    if match:
        try:
            since = datetime.strptime(match["since"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
        except ValueError:
            since = backend_start
        return Holder(int(match["pid"]), match["host"], since)
    # Not one of ours (or a server that hides other sessions' names): the server's view of it.
    return Holder(None, f"{client} (server pid {backend_pid})", backend_start)


@contextmanager
def holding(locks: Sequence[RunLock], wait: float = 0.0, sleep: Callable[[float], None] = time.sleep) -> Iterator[None]:
    """Holds every lock in order for the block, waiting up to `wait` seconds in all; raises LockHeld."""
    deadline = time.monotonic() + max(wait, 0.0)
    started = time.monotonic()
    with ExitStack() as stack:
        for lock in locks:
            stack.callback(lock.release)
            announced = False
            while (holder := lock.try_acquire()) is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise LockHeld(lock.what, holder, time.monotonic() - started)
                if not announced:
                    log.warning("waiting up to %.0f s for the lock on %s, held by %s", left, lock.what,
                                holder.describe())
                    announced = True
                sleep(min(POLL_SECONDS, left))
        yield


def pipeline_lock(working_dir: str | os.PathLike[str], pipeline_name: str) -> FileLock:
    """The lock of one pipeline folder: a file beside it (dlt may wipe the folder itself)."""
    folder = Path(working_dir)
    return FileLock(folder.parent / f"{folder.name}.lock", f"pipeline {pipeline_name} ({folder})")


def destination_lock(pipeline: Any) -> RunLock:
    """The lock that keeps other runs out of this pipeline's destination dataset (see the module doc)."""
    destination = pipeline.destination
    name = getattr(destination, "destination_name", "") or ""
    kind = getattr(destination, "destination_type", "") or ""
    config = pipeline.destination_client().config
    credentials: Any = getattr(config, "credentials", None)
    database = duckdb_file(pipeline)
    if database is not None:
        return FileLock(f"{database}.lock", f"DuckDB file {database}")
    if kind.endswith(".postgres"):
        return PostgresLock(credentials.to_native_representation(), pipeline.dataset_name,
                            int(getattr(credentials, "connect_timeout", 15) or 15))
    from dlt.common.runtime import run_context

    fingerprint = config.fingerprint() if hasattr(config, "fingerprint") else ""
    digest = hashlib.sha256(f"{kind}|{fingerprint}|{pipeline.dataset_name}".encode()).hexdigest()[:16]
    folder = Path(run_context.active().get_data_entity("locks"))
    return FileLock(folder / f"{name or 'destination'}-{digest}.lock",
                    f"{name or kind} dataset {pipeline.dataset_name}")


def duckdb_file(pipeline: Any) -> Path | None:
    """The database file of a pipeline that loads into a local DuckDB file, else None."""
    if not str(getattr(pipeline.destination, "destination_type", "")).endswith(".duckdb"):
        return None
    database = getattr(pipeline.destination_client().config.credentials, "database", None)
    if not database or str(database).startswith(":"):
        return None
    return Path(str(database)).resolve()
