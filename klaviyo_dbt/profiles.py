"""A dbt profile for the destination a dlt pipeline loads into, so the models run where the data is.

dlt's own dbt runner is not used: its DuckDB profile loads the `httpfs` extension, which is downloaded at run
time and fails without network. Ours names no extension. The profile holds the destination's password, so it
is written to a private temporary folder and removed after the run (runner.py), never to the project.
"""

from __future__ import annotations

import os
from typing import Any

import dlt

from klaviyo_source.errors import ConfigurationError

SUPPORTED = ("duckdb", "postgres")


def profile_for(pipeline: dlt.Pipeline, schema: str, threads: int) -> dict[str, Any]:
    """The `klaviyo` profile (one target) for the pipeline's destination, models written to `schema`."""
    kind = pipeline.destination.destination_name if pipeline.destination else None
    if kind not in SUPPORTED:
        raise ConfigurationError(
            f"--transform runs the dbt models on {' and '.join(SUPPORTED)}, not on {kind or 'no destination'}; "
            "for another warehouse run `dbt build` in klaviyo_dbt/ with a profile of your own."
        )
    credentials: Any = pipeline.destination_client().config.credentials
    if kind == "duckdb":
        target: dict[str, Any] = {"type": "duckdb", "path": os.path.abspath(credentials.database)}
    else:
        target = {
            "type": "postgres",
            "host": credentials.host,
            "port": int(credentials.port or 5432),
            "user": credentials.username,
            "password": credentials.password or "",
            "dbname": credentials.database,
        }
    target.update(schema=schema, threads=threads)
    return {"klaviyo": {"target": kind, "outputs": {kind: target}}}
