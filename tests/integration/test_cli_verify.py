"""Verification on the command line: on by default for scheduled runs with a summary line, `--verify-only`
reports without loading (exit 4 when Klaviyo and the warehouse differ), `--no-verify` skips it."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from klaviyo_source.sandbox import Sandbox
from pipelines.klaviyo_pipeline import main
from tests.integration.conftest import settle
from tests.integration.test_cli import cli


def test_scheduled_runs_verify_themselves(sandbox: Sandbox, tmp_path: Path) -> None:
    env = {"SOURCES__KLAVIYO__API_KEY": sandbox.api_key, "SOURCES__KLAVIYO__BASE_URL": sandbox.base_url}
    database = tmp_path / "k.duckdb"
    base = ["--duckdb-file", str(database), "--pipelines-dir", str(tmp_path / "p"),
            "--resources", "events,metrics,templates,list_members,lists"]
    first = cli(base, tmp_path, env)
    assert first.returncode == 0, first.stderr[-2000:]
    assert "verification: events of 20 metrics" in first.stderr and "0 still differ" in first.stderr

    template = sorted(sandbox.ground_truth()["templates"])[0]
    sandbox.mutate("delete", table="templates", ids=[template])
    sandbox.mutate("add_events", count=4, offset_seconds=-9 * 86400)
    settle()
    report = cli([*base, "--verify-only"], tmp_path, env)
    assert report.returncode == 4, report.stderr[-2000:]
    assert "verification (report only)" in report.stdout and "deleted templates" in report.stdout
    assert "event_count events" in report.stdout
    with duckdb.connect(str(database), read_only=True) as db:
        assert db.execute("select count(deleted_at) from klaviyo.templates").fetchall()[0][0] == 0

    repaired = cli(base, tmp_path, env)
    assert repaired.returncode == 0, repaired.stderr[-2000:]
    assert "deletions flagged: templates 1" in repaired.stderr and "0 still differ" in repaired.stderr
    clean = cli([*base, "--verify-only"], tmp_path, env)
    assert clean.returncode == 0 and "0 differ" in clean.stdout
    with duckdb.connect(str(database), read_only=True) as db:
        assert db.execute("select id from klaviyo.templates where deleted_at is not null").fetchall() == [
            (template,)]
        statuses = dict(db.execute("select status, count(*) from klaviyo.verification_checks group by 1")
                        .fetchall())
    assert statuses.get("repaired", 0) >= 2 and "differs" not in statuses

    skipped = cli([*base, "--no-verify"], tmp_path, env)
    assert skipped.returncode == 0 and "verification" not in skipped.stderr


def test_verify_only_rejects_options_that_load(capsys: pytest.CaptureFixture[str]) -> None:
    for option in ("--no-verify", "--demo", "--full-refresh"):
        assert main(["--verify-only", option]) == 2
        assert "--verify-only loads nothing" in capsys.readouterr().err
