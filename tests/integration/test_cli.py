"""The command line as a scheduler or a newcomer runs it: defaults, its folders, its exit codes and one-line errors.

The demo and the README's commands as written are run by test_readme.py.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import duckdb
import pytest

from klaviyo_source.sandbox import Sandbox
from tests.integration.cli_driver import command
from tests.integration.conftest import REPO

CLI = REPO / "pipelines" / "klaviyo_pipeline.py"


def cli(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The CLI in a process of its own, through cli_driver.py: Klaviyo's report pace and verification's counts
    lifted, as in the test process (tests/report_pace.py)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SOURCES__")}
    return subprocess.run(
        command(args), cwd=cwd, env={**clean, "PYTHONPATH": str(REPO), **(env or {})},
        capture_output=True, text=True, timeout=600, check=False,
    )


def test_two_checkouts_each_keep_their_own_database_and_state(sandbox: Sandbox, tmp_path: Path) -> None:
    """Defaults only (no folder options): each folder gets its database and dlt's working folder, and a second
    run in one of them continues from its own state."""
    env = {"SOURCES__KLAVIYO__API_KEY": sandbox.api_key}
    for folder in (tmp_path / "first", tmp_path / "second"):
        folder.mkdir()
        done = cli(["--base-url", sandbox.base_url, "--resources", "events,metrics"], folder, env)
        assert done.returncode == 0, done.stderr[-2000:]
        assert (folder / ".dlt" / "pipelines" / "klaviyo").is_dir()
        with duckdb.connect(str(folder / "klaviyo_data.duckdb"), read_only=True) as db:
            tables = {r[0] for r in db.execute("select table_name from information_schema.tables "
                                               "where table_schema = 'klaviyo'").fetchall()}
        assert {"events", "metrics"} <= tables and "profiles" not in tables
    again = cli(["--base-url", sandbox.base_url, "--resources", "events,metrics"], tmp_path / "first", env)
    assert again.returncode == 0 and "run summary" in again.stderr
    metrics = next(line.split() for line in again.stderr.splitlines() if line.strip().startswith("metrics "))
    assert metrics[1:3] == ["0", str(len(sandbox.ground_truth()["metrics"]))]  # nothing new, all read again


def test_help_tells_where_things_live(tmp_path: Path) -> None:
    done = cli(["--help"], tmp_path)
    text = "".join(done.stdout.split())  # argparse wraps long paths anywhere
    assert done.returncode == 0
    assert f"here{tmp_path / '.dlt' / 'pipelines'}" in text and "(defaultklaviyo_data.duckdb)" in text
    for flag in ("--base-url", "--revision", "--rate-share", "--log-level"):
        assert flag in text


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--resources", "evnts"], {}, "Unknown resource(s) evnts"),
        (["--start-date", "last tuesday"], {}, "start_date 'last tuesday' is not a date"),
        (["--rate-share", "2"], {}, "rate_share must be in (0, 1], got 2.0"),
        (["--revision", "latest"], {}, "revision 'latest' is not a Klaviyo revision"),
        (["--base-url", "http://a.klaviyo.com/api"], {}, "base_url 'http://a.klaviyo.com/api' must be an https:// URL"),
        (["--dataset", "klaviyo_data"], {}, "The DuckDB file klaviyo_data.duckdb and the dataset 'klaviyo_data' share"),
        ([], {"SOURCES__KLAVIYO__API_KEY": ""}, "api_key is empty or has surrounding spaces: set [sources.klaviyo] "
                                                 "api_key in .dlt/secrets.toml or SOURCES__KLAVIYO__API_KEY"),
        ([], None, "No Klaviyo API key: set [sources.klaviyo] api_key in .dlt/secrets.toml or "
                   "SOURCES__KLAVIYO__API_KEY"),
        (["--start-date", "31/01/2024"], None, "start_date '31/01/2024' is not a date"),  # arguments before the key
    ],
    ids=["resource", "start-date", "rate-share", "revision", "http-url", "names-clash", "empty-key", "no-key",
         "bad-argument-and-no-key"],
)
def test_bad_arguments_and_configuration_exit_2_with_one_line(
    sandbox: Sandbox, tmp_path: Path, args: list[str], env: dict[str, str] | None, message: str
) -> None:
    """In a fresh folder: no .dlt/secrets.toml, the key (if any) from the environment."""
    given = {"SOURCES__KLAVIYO__API_KEY": sandbox.api_key, "SOURCES__KLAVIYO__BASE_URL": sandbox.base_url}
    if env is None:
        given.pop("SOURCES__KLAVIYO__API_KEY")
    sandbox.reset_stats()
    done = cli(args, tmp_path, {**given, **(env or {})})
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [done.stderr.strip()] and done.stderr.startswith("error: ")
    assert message in done.stderr
    assert sandbox.stats()["total"] == 0 and not list(tmp_path.glob("*.duckdb"))
