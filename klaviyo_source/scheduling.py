"""A scheduled run from Python: the locks, the housekeeping and the pipeline, in one `with`.

    import dlt
    from klaviyo_source import klaviyo_source
    from klaviyo_source.scheduling import scheduled_run
    from klaviyo_source.summary import load

    duckdb = dlt.destinations.duckdb("klaviyo_data.duckdb")
    with scheduled_run("klaviyo", destination=duckdb, dataset_name="klaviyo", lock_wait=600) as pipeline:
        print(load(pipeline, klaviyo_source(start_date="2024-01-01")))   # or pipeline.run(...)

The pipeline's lock is taken before dlt opens its folder (so a waiting run reads the state the other run
left), then the destination dataset's; under both, what killed runs left half written is removed, what they
left committed is loaded (on PostgreSQL after dropping the row-id indexes of older versions, which would
fail it, and the parquet load jobs without a row that older versions made empty report tables with, which
dlt's ADBC copy cannot load), and rows doubled by an unlocked overlap or a replayed load job are repaired;
on leaving, completed load packages beyond `keep_packages` are pruned.
A run that cannot get a lock within `lock_wait` seconds raises locks.LockHeld and touches nothing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import dlt
from dlt.common.pipeline import get_dlt_pipelines_dir

from klaviyo_source.backfill import finish_pending
from klaviyo_source.housekeeping import (
    drop_row_id_indexes,
    drop_rowless_parquet_jobs,
    prune_loaded,
    remove_orphans,
    repair_doubles,
)
from klaviyo_source.locks import destination_lock, duckdb_file, holding, pipeline_lock
from klaviyo_source.summary import new_duckdb_file

log = logging.getLogger("klaviyo_source")

DOUBLES_CHECKED = "klaviyo_doubles_checked"  # local state: this folder's dataset was checked for doubled keys
KEEP_PACKAGES = 1  # completed load packages kept in the pipeline folder (the last load's files, for inspection)


@contextmanager
def scheduled_run(
    pipeline_name: str = "klaviyo",
    *,
    pipelines_dir: str | None = None,
    lock_wait: float = 0.0,
    keep_packages: int = KEEP_PACKAGES,
    **pipeline_options: Any,
) -> Iterator[dlt.Pipeline]:
    """Yields `dlt.pipeline(pipeline_name, pipelines_dir=..., **pipeline_options)` while holding its locks.

    lock_wait: seconds to wait in all for the locks another run holds (0: give up at once).
    keep_packages: completed load packages to keep; older ones are deleted when the block ends.
    """
    deadline = time.monotonic() + max(lock_wait, 0.0)
    working_dir = Path(pipelines_dir or get_dlt_pipelines_dir()) / pipeline_name
    with holding([pipeline_lock(working_dir, pipeline_name)], lock_wait):
        pipeline = dlt.pipeline(pipeline_name, pipelines_dir=str(working_dir.parent), **pipeline_options)
        with holding([destination_lock(pipeline)], deadline - time.monotonic()):
            try:
                remove_orphans(pipeline.working_dir, duckdb_file(pipeline))
                drop_rowless_parquet_jobs(pipeline.working_dir)
                # A destination that is not there yet (a DuckDB file not created) has nothing to repair, and
                # connecting would create it.
                exists = pipeline.default_schema_name is not None and new_duckdb_file(pipeline) is None
                if exists:
                    drop_row_id_indexes(pipeline)
                # What a killed run left is loaded first; its replayed load jobs may stage or insert rows a
                # second time, so doubled keys are repaired after it. The doubles of overlaps from before runs
                # were locked are repaired once per pipeline folder (a scan of every table: ~3 s per million
                # rows on PostgreSQL, not worth paying on every run once locks keep runs apart).
                replayed = pipeline.has_pending_data
                finish_pending(pipeline)
                if exists and (replayed or not _checked(pipeline)):
                    repair_doubles(pipeline)
                    pipeline.set_local_state_val(DOUBLES_CHECKED, True)
                yield pipeline
            finally:
                prune_loaded(pipeline.working_dir, keep_packages)


def _checked(pipeline: dlt.Pipeline) -> bool:
    try:
        return bool(pipeline.get_local_state_val(DOUBLES_CHECKED))
    except KeyError:
        return False
