"""Run the dbt project from Python against a dlt pipeline's destination (`klaviyo_pipeline.py --transform`).

dbt runs in this process through its programmatic entry point (dbtRunner), with a profile generated for the
pipeline (profiles.py) and its target and log folders in the pipeline's working folder, so nothing is written
into the project and dbt's partial parsing speeds up the next run.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dlt

from klaviyo_dbt.profiles import profile_for
from klaviyo_source.errors import KlaviyoSourceError

log = logging.getLogger("klaviyo_dbt")

PROJECT_DIR = Path(__file__).resolve().parent
ANALYTICS_SUFFIX = "_analytics"


class TransformError(KlaviyoSourceError):
    """dbt failed: a model that did not build or a test that did not pass (the message names them)."""


@dataclass
class BuildResult:
    """What a dbt invocation did: nodes by status, and how long it took."""

    command: str
    schema: str
    seconds: float
    statuses: dict[str, str] = field(default_factory=dict)  # node name -> success / pass / error / fail / ...

    def count(self, *statuses: str) -> int:
        return sum(1 for s in self.statuses.values() if s in statuses)


def dbt_installed() -> bool:
    """Whether the `dbt` extra is installed (the loader alone runs without it)."""
    return importlib.util.find_spec("dbt") is not None and importlib.util.find_spec("dbt.cli") is not None


def analytics_schema(dataset: str) -> str:
    """Where the models of a dataset go: `<dataset>_analytics`, beside the loaded tables."""
    return f"{dataset}{ANALYTICS_SUFFIX}"


def build(
    pipeline: dlt.Pipeline,
    *,
    command: str = "build",
    full_refresh: bool = False,
    select: list[str] | None = None,
    variables: dict[str, Any] | None = None,
    threads: int = 4,
    quiet: bool = False,
) -> BuildResult:
    """Run `dbt <command>` (build, run, test) on the pipeline's destination; raise TransformError if any
    model or test fails. `variables` override the project's vars (dbt_project.yml), e.g. attribution windows."""
    try:
        from dbt.cli.main import dbtRunner
    except ImportError as exc:
        raise TransformError(
            "the analyst models need dbt: install the extra with pip install -e '.[dbt]'"
        ) from exc
    schema = analytics_schema(pipeline.dataset_name)
    work = Path(pipeline.working_dir) / "dbt"
    args = [
        command,
        "--project-dir", str(PROJECT_DIR),
        "--target-path", str(work / "target"),
        "--log-path", str(work / "logs"),
        "--vars", json.dumps({"klaviyo_source_schema": pipeline.dataset_name, **(variables or {})}),
        "--threads", str(threads),
    ]
    if full_refresh:
        args.append("--full-refresh")
    if select:
        args += ["--select", *select]
    if quiet:
        args.append("--quiet")
    if not sys.stdout.isatty():
        args.append("--no-use-colors")
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="klaviyo-dbt-") as profiles_dir:
        profile = Path(profiles_dir) / "profiles.yml"
        profile.touch(mode=0o600)
        # JSON is YAML; the file holds the destination's password and lives only for this run
        profile.write_text(json.dumps(profile_for(pipeline, schema, threads)))
        env = {"DBT_SEND_ANONYMOUS_USAGE_STATS": "false"}
        previous = {name: os.environ.get(name) for name in env}
        os.environ.update(env)
        try:
            outcome = dbtRunner().invoke([*args, "--profiles-dir", profiles_dir])
        finally:
            for name, value in previous.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
    result = BuildResult(command, schema, time.monotonic() - started)
    for node in getattr(outcome.result, "results", None) or ():
        result.statuses[node.node.name] = str(node.status)
    if not outcome.success:
        failed = [
            f"{node.node.name} ({node.status}): {(node.message or '').strip().splitlines()[0] if node.message else ''}"
            for node in getattr(outcome.result, "results", None) or ()
            if str(node.status) in ("error", "fail")
        ]
        cause = "; ".join(failed[:5]) or str(outcome.exception or "dbt failed")
        raise TransformError(f"dbt {command} failed: {cause} (details: {work / 'logs' / 'dbt.log'})")
    log.info("dbt %s: %d models, %d tests passed in %.1f s (schema %s)", command,
             result.count("success"), result.count("pass"), result.seconds, schema)
    return result
