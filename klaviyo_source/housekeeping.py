"""Housekeeping of a scheduled pipeline, so a folder that lives for years stays the size of one run.

dlt keeps every completed load package (`load/loaded/<load_id>`, all its data files) and never removes
what a failed or killed run left half written. Run under the pipeline's lock (klaviyo_source.locks), so
no other run is working in the folder:

- `remove_orphans` before a run: extract folders of runs that died before committing
  (`normalize/<random id>`), normalized packages whose source package is gone (`load/new/<load_id>`),
  dlt's temporary files, and DuckDB's spill files of processes that no longer live (`<file>.tmp/`).
  Committed packages (`normalize/extracted`, `load/normalized`) are never touched: they carry the data
  and cursors of a killed run that the next run loads first.
- `prune_loaded` after a run: completed packages beyond the newest `keep`.
- `repair_doubles`: rows that share a primary key, which runs that overlapped before runs were locked
  left in merge tables (a merge only repairs the keys it touches again, so memberships kept them forever).
- `drop_rowless_parquet_jobs` before a run: parquet load jobs without a row in packages still to load, which
  earlier versions wrote to make an empty report table and which dlt's ADBC copy (PostgreSQL) cannot load.
- `drop_row_id_indexes`: the unique indexes on dlt's row ids (`_dlt_id`) that PostgreSQL datasets created
  before `create_indexes = false` still carry (a load job a killed run left is replayed and stages its rows
  a second time; the index then failed that job, and so every later run, for ever).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger("klaviyo_source")

# dlt's folders in a pipeline's working dir that hold committed data: never removed here.
_NORMALIZE_KEEP = {"extracted"}
_TEMP_NAME = re.compile(r"^[0-9a-f]{8}$")  # dlt writes files atomically through <8 hex chars> temp files
_DUCKDB_TEMP = re.compile(r"^duckdb_temp_(\d+)_")  # DuckDB names spill files after its process id


@dataclass
class Removed:
    """What housekeeping removed, for the log."""

    paths: list[Path] = field(default_factory=list)
    size: int = 0

    def add(self, path: Path) -> None:
        size = folder_size(path)
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        self.paths.append(path)
        self.size += size

    def __bool__(self) -> bool:
        return bool(self.paths)


def folder_size(path: str | os.PathLike[str]) -> int:
    """Bytes used by the files under `path` (or the file itself)."""
    root = Path(path)
    if not root.exists():
        return 0
    if root.is_file():
        return root.stat().st_size
    total = 0
    for folder, _, files in os.walk(root):
        for name in files:
            with contextlib.suppress(FileNotFoundError):
                total += os.lstat(os.path.join(folder, name)).st_size
    return total


def _children(folder: Path) -> Iterator[Path]:
    return iter(sorted(folder.iterdir())) if folder.is_dir() else iter(())


def remove_orphans(working_dir: str | os.PathLike[str], duckdb_file: str | os.PathLike[str] | None = None) -> Removed:
    """Removes what failed or killed runs left half written; call it holding the pipeline's lock."""
    root = Path(working_dir)
    removed = Removed()
    normalize = root / "normalize"
    for child in _children(normalize):
        if child.is_dir() and child.name not in _NORMALIZE_KEEP:
            removed.add(child)  # an extract that never committed (it is renamed into `extracted` when it does)
    extracted = normalize / "extracted"
    for package in _children(root / "load" / "new"):
        # normalizing writes here, then moves the package to load/normalized and deletes its extracted
        # source; with the source still there dlt normalizes it again and rewrites this folder
        if not (extracted / package.name).exists():
            removed.add(package)
    for child in _children(root):
        if child.is_file() and _TEMP_NAME.match(child.name):
            removed.add(child)
    if duckdb_file is not None:
        for spill in _children(Path(f"{duckdb_file}.tmp")):
            match = _DUCKDB_TEMP.match(spill.name)
            if match and not _alive(int(match.group(1))):
                removed.add(spill)
    if removed:
        log.info("removed %d leftover(s) of failed or killed runs (%s)", len(removed.paths), _size(removed.size))
    return removed


def drop_rowless_parquet_jobs(working_dir: str | os.PathLike[str]) -> Removed:
    """Removes parquet load jobs without a row from the packages still to load; call it holding the lock.

    Versions before report tables loaded in a row format (resources.ROW_FORMATS) made or kept a report table
    that a run read no rows of with such a file. dlt's ADBC copy (PostgreSQL) fails on it, and so did every
    later run, which loads the package left pending first. The file holds nothing to load.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    removed = Removed()
    for package in _children(Path(working_dir) / "load" / "normalized"):
        for job in (j for folder in ("new_jobs", "started_jobs") for j in _children(package / folder)):
            if job.suffix != ".parquet":
                continue
            try:
                rowless = pq.read_metadata(job).num_rows == 0
            except (OSError, pa.ArrowException):  # not for us to judge: dlt's load says what is wrong with it
                continue
            if rowless:
                removed.add(job)
    if removed:
        log.info("removed %d parquet load job(s) without a row that an earlier version left pending (dlt's "
                 "ADBC copy cannot load them)", len(removed.paths))
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def prune_loaded(working_dir: str | os.PathLike[str], keep: int) -> Removed:
    """Deletes completed load packages but the newest `keep` (load ids are timestamps: they sort by age)."""
    removed = Removed()
    packages = [p for p in _children(Path(working_dir) / "load" / "loaded") if p.is_dir()]
    packages.sort(key=lambda p: _load_id_order(p.name))
    for package in packages[: max(len(packages) - max(keep, 0), 0)]:
        removed.add(package)
    if removed:  # every run prunes the one before: routine, not news for a scheduler's log
        log.debug("pruned %d completed load package(s) (%s), kept the newest %d",
                  len(removed.paths), _size(removed.size), keep)
    return removed


def _load_id_order(load_id: str) -> tuple[float, str]:
    try:
        return float(load_id), load_id
    except ValueError:
        return float("inf"), load_id


def _size(size: int) -> str:
    return f"{size / 1e6:.1f} MB" if size >= 100_000 else f"{size / 1e3:.0f} kB"


# --- doubled rows --------------------------------------------------------------------------------

# How each SQL destination names a row: doubles are told apart by it when the rows are otherwise equal.
_ROW_ID = {"duckdb": "rowid", "motherduck": "rowid", "postgres": "ctid"}


def repair_doubles(pipeline: Any) -> dict[str, int]:
    """Deletes all but one row (the newest load's) of every primary key that occurs more than once.

    Checks every table of the pipeline's schema that has a primary key and exists in the destination;
    returns the rows removed per table. Destinations without a row id (warehouses) are only checked.
    """
    from dlt.common.schema.utils import get_columns_names_with_prop

    schema = pipeline.default_schema
    kind = pipeline.destination.destination_name
    row_id = _ROW_ID.get(kind)
    removed: dict[str, int] = {}
    with pipeline.sql_client() as client:
        existing = _existing_tables(client)
        for name, table in schema.tables.items():
            keys = get_columns_names_with_prop(table, "primary_key")
            if name.startswith("_dlt") or not keys or name.lower() not in existing:
                continue
            qualified = client.make_qualified_table_name(name)
            key_list = ", ".join(client.escape_column_name(k) for k in keys)
            distinct = key_list if len(keys) == 1 else f"({key_list})"
            rows = client.execute_sql(f"select count(*) - count(distinct {distinct}) from {qualified}")
            surplus = int(rows[0][0]) if rows else 0
            if not surplus:
                continue
            if row_id is None:
                log.warning("%s holds %d row(s) whose key occurs twice; remove them with the destination's tools",
                            name, surplus)
                continue
            newest = (f"{client.escape_column_name('_dlt_load_id')} desc, "
                      if "_dlt_load_id" in table.get("columns", {}) else "")
            client.execute_sql(
                f"delete from {qualified} where {row_id} in (select {row_id} from (select {row_id}, row_number() "
                f"over (partition by {key_list} order by {newest}{row_id} desc) as n from {qualified}) d "
                "where n > 1)"
            )
            log.warning("%s: removed %d doubled row(s), left by an unlocked overlap or a killed run's "
                        "replayed load job", name, surplus)
            removed[name] = surplus
    return removed


def _existing_tables(client: Any) -> set[str]:
    rows = client.execute_sql(
        "select table_name from information_schema.tables where lower(table_schema) = %s", client.dataset_name.lower()
    )
    return {str(r[0]).lower() for r in rows or ()}


# --- row-id indexes of PostgreSQL datasets made before create_indexes = false ------------------------------

_ROW_ID_INDEXES = """
select c.conrelid::regclass::text, quote_ident(c.conname)
from pg_constraint c
join pg_namespace n on n.oid = c.connamespace
join pg_attribute a on a.attrelid = c.conrelid and a.attnum = c.conkey[1]
where c.contype = 'u' and cardinality(c.conkey) = 1 and a.attname = '_dlt_id' and n.nspname in (%s, %s)
"""


def drop_row_id_indexes(pipeline: Any) -> list[str]:
    """Drops the unique constraints on `_dlt_id` in the pipeline's PostgreSQL dataset and its staging dataset,
    when the pipeline is configured without them (create_indexes = false); returns the tables changed.

    One catalog query when there is nothing to drop. Other destinations, and pipelines that ask for the
    indexes, are left alone.
    """
    if not str(getattr(pipeline.destination, "destination_type", "")).endswith(".postgres"):
        return []
    client_config = pipeline.destination_client().config
    if getattr(client_config, "create_indexes", True):
        return []
    with pipeline.sql_client() as client:
        found = client.execute_sql(_ROW_ID_INDEXES, client.dataset_name, client.staging_dataset_name) or []
        for table, constraint in found:
            client.execute_sql(f"alter table {table} drop constraint if exists {constraint}")
    if found:
        log.info("dropped the unique index on _dlt_id of %d table(s) that an earlier version created (a load job "
                 "replayed after a killed run would fail on it)", len(found))
    return [str(table) for table, _ in found]
