"""The command line as a scheduler or a newcomer runs it: the demo, a scheduled run, its exit codes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from klaviyo_source.sandbox import Sandbox
from tests.integration.conftest import REPO

CLI = REPO / "pipelines" / "klaviyo_pipeline.py"


def cli(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(CLI), *args], cwd=cwd, env={**os.environ, **(env or {})},
        capture_output=True, text=True, timeout=600, check=False,
    )


def test_demo_loads_every_table_and_prints_queries(tmp_path: Path) -> None:
    """Run twice from two folders, as a newcomer might: each run's database lands in its own folder."""
    for folder in (tmp_path / "first", tmp_path / "second"):
        folder.mkdir()
        done = cli(["--demo", "--pipelines-dir", str(tmp_path / "pipelines")], folder)
        assert done.returncode == 0, done.stderr[-2000:]
        assert "Revenue by day" in done.stdout and "campaign_messages" in done.stdout
        assert str(folder / "klaviyo_demo.duckdb") in done.stdout
        with duckdb.connect(str(folder / "klaviyo_demo.duckdb"), read_only=True) as db:
            events = db.execute("select count(*) from klaviyo.events").fetchall()[0][0]
            members = db.execute("select count(*) from klaviyo.segment_members").fetchall()[0][0]
        assert events > 40_000 and members > 0


def test_scheduled_run_with_selected_resources(sandbox: Sandbox, tmp_path: Path) -> None:
    env = {"SOURCES__KLAVIYO__API_KEY": sandbox.api_key, "SOURCES__KLAVIYO__BASE_URL": sandbox.base_url}
    args = ["--resources", "events,metrics", "--duckdb-file", str(tmp_path / "k.duckdb"),
            "--pipelines-dir", str(tmp_path / "p"), "--log-level", "WARNING"]
    first = cli(args, tmp_path, env)
    assert first.returncode == 0, first.stderr[-2000:]
    with duckdb.connect(str(tmp_path / "k.duckdb"), read_only=True) as db:
        tables = {r[0] for r in db.execute("select table_name from information_schema.tables "
                                       "where table_schema = 'klaviyo'").fetchall()}
    assert {"events", "metrics"} <= tables and "profiles" not in tables


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--resources", "evnts"], "Unknown resource(s) evnts"),
        (["--start-date", "last tuesday"], "start_date 'last tuesday' is not a date"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(sandbox: Sandbox, tmp_path: Path, args: list[str], message: str) -> None:
    env = {"SOURCES__KLAVIYO__API_KEY": sandbox.api_key, "SOURCES__KLAVIYO__BASE_URL": sandbox.base_url}
    done = cli([*args, "--pipelines-dir", str(tmp_path / "p")], tmp_path, env)
    assert done.returncode == 2
    assert message in done.stderr and "Traceback" not in done.stderr
