"""A scheduled run from Python: the locks, the housekeeping and the pipeline, in one `with`.

    from klaviyo_source import klaviyo_source
    from klaviyo_source.scheduling import scheduled_run

    with scheduled_run("klaviyo", destination="duckdb", dataset_name="klaviyo", lock_wait=600) as pipeline:
        pipeline.run(klaviyo_source(start_date="2024-01-01"), loader_file_format="parquet")

The pipeline's lock is taken before dlt opens its folder (so a waiting run reads the state the other run
left), then the destination dataset's; under both, what killed runs left is removed and rows an unlocked
overlap doubled are repaired; on leaving, completed load packages beyond `keep_packages` are pruned.
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

from klaviyo_source.housekeeping import prune_loaded, remove_orphans, repair_doubles
from klaviyo_source.locks import destination_lock, duckdb_file, holding, pipeline_lock

log = logging.getLogger("klaviyo_source")

KEEP_PACKAGES = 3  # completed load packages kept in the pipeline folder (their files, for inspection)


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
                if pipeline.default_schema_name:
                    repair_doubles(pipeline)
                yield pipeline
            finally:
                prune_loaded(pipeline.working_dir, keep_packages)
