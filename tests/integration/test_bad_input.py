"""Ordinary mistakes get one clear line, never a traceback, and leave nothing written and no cursor moved.

Each mistake is made twice: from Python (the exception and its message) and through the CLI (exit
status and the single line on stderr), and each time the destination and the pipeline state are checked
to be untouched.
"""

from __future__ import annotations

import logging
from typing import Any

import duckdb
import pytest
from dlt.pipeline.exceptions import PipelineStepFailed

import klaviyo_source as klaviyo_module
from klaviyo_source import ConfigurationError, klaviyo_source
from klaviyo_source.endpoints import ENDPOINTS
from klaviyo_source.errors import AuthenticationError, MissingScopeError, RevisionError
from klaviyo_source.failures import root_cause
from klaviyo_source.sandbox import Sandbox
from pipelines.klaviyo_pipeline import main
from tests.integration.conftest import ID_TABLES, Loader, assert_matches_ground_truth, cursors

ALL_SCOPES = sorted({scope for endpoint in ENDPOINTS for scope in endpoint.scopes})


def destination_tables(loader: Loader) -> list[str]:
    """Tables in the loader's dataset (none when the DuckDB file or the dataset was never created)."""
    path = loader.workdir / "klaviyo.duckdb"
    if not path.exists():
        return []
    with duckdb.connect(str(path), read_only=True) as db:
        rows = db.execute("select table_name from information_schema.tables where table_schema = ?",
                          [loader.dataset]).fetchall()
    return [r[0] for r in rows]


def assert_nothing_written(loader: Loader) -> None:
    assert destination_tables(loader) == []
    assert cursors(loader) == {}
    assert not loader.pipeline().has_pending_data


def cli(loader: Loader, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str,
        api_key: str | None = None) -> tuple[int, str]:
    """The CLI as a scheduler runs it; returns (exit status, stderr)."""
    monkeypatch.setenv("SOURCES__KLAVIYO__API_KEY", api_key or loader.sandbox.api_key)
    monkeypatch.setenv("SOURCES__KLAVIYO__BASE_URL", loader.sandbox.base_url)
    capsys.readouterr()
    status = main(["--pipeline-name", loader.name, "--pipelines-dir", str(loader.workdir / "pipelines"),
                   "--duckdb-file", str(loader.workdir / "klaviyo.duckdb"), "--dataset", loader.dataset,
                   "--log-level", "ERROR", *args])
    return status, capsys.readouterr().err


def assert_one_line(stderr: str, *parts: str) -> None:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: ") and "Traceback" not in stderr
    for part in parts:
        assert part in lines[0], lines[0]


def failed_run(loader: Loader, **options: Any) -> BaseException:
    with pytest.raises(PipelineStepFailed) as caught:
        loader.run(**options)
    return root_cause(caught.value)


def test_wrong_or_revoked_key(loader: Loader, monkeypatch: pytest.MonkeyPatch,
                              capsys: pytest.CaptureFixture[str]) -> None:
    wrong = "pk_0000000000000000000000000000000000"
    error = failed_run(loader, api_key=wrong)
    assert isinstance(error, AuthenticationError)
    assert ": HTTP 401 [not_authenticated]: Missing or invalid private key. Check the private API key" in str(error)
    assert "may be wrong or revoked" in str(error) and wrong not in str(error)
    assert_nothing_written(loader)
    status, stderr = cli(loader, monkeypatch, capsys, api_key=wrong)
    assert status == 1
    assert_one_line(stderr, "HTTP 401", "may be wrong or revoked")
    assert_nothing_written(loader)


def test_key_without_a_scope_names_scope_and_table(loader: Loader, sandbox: Sandbox,
                                                   monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    key = sandbox.create_key([s for s in ALL_SCOPES if s != "events:read"])
    error = failed_run(loader, api_key=key)
    assert isinstance(error, MissingScopeError)
    assert str(error).startswith("Klaviyo /events: HTTP 403 [permission_denied]: ")
    assert "The key needs scope(s) events:read for table 'events'" in str(error)
    assert "skip_forbidden=True" in str(error)
    assert_nothing_written(loader)
    status, stderr = cli(loader, monkeypatch, capsys, api_key=key)
    assert status == 1
    assert_one_line(stderr, "events:read", "'events'")
    assert_nothing_written(loader)


def test_skip_forbidden_loads_every_other_table(loader: Loader, sandbox: Sandbox,
                                                caplog: pytest.LogCaptureFixture) -> None:
    key = sandbox.create_key([s for s in ALL_SCOPES if s != "events:read"])
    with caplog.at_level(logging.WARNING, logger="klaviyo_source"):
        loader.run(api_key=key, skip_forbidden=True)
    assert any(r.getMessage().startswith("events skipped: Klaviyo /events: HTTP 403") for r in caplog.records)
    assert "events" not in destination_tables(loader)
    assert ("events", "") not in cursors(loader)
    others = [t for t in ID_TABLES if t not in ("events", "event_attributions")]  # attributions come with events
    assert set(assert_matches_ground_truth(loader, others)) == set(others)


@pytest.mark.parametrize(
    ("options", "argv", "message"),
    [
        ({"start_date": "31/01/2024"}, ["--start-date", "31/01/2024"],
         "start_date '31/01/2024' is not a date or datetime; use ISO 8601, e.g. 2024-01-31"),
        ({"end_date": "2024-13-01", "start_date": "2024-01-01"}, ["--end-date", "2024-13-01"],
         "end_date '2024-13-01' is not a date or datetime"),
        ({"start_date": "2999-01-01"}, ["--start-date", "2999-01-01"], "start_date 2999-01-01T00:00:00+00:00 is not "
                                                                      "before now"),
        ({"resources": ["events", "orders"]}, ["--resources", "events,orders"],
         "Unknown resource(s) orders; choose from: accounts, events"),
        ({"revision": "latest"}, None, "revision 'latest' is not a Klaviyo revision like '2026-07-15'"),
        ({"revision": "2026-10-15"}, None,
         "revision 2026-10-15 has not been tested with this source: use one from 2026-01-15 to 2026-07-15"),
        ({"revision": "2024-10-15"}, None, "revision 2024-10-15 has not been tested with this source"),
        ({"revision": "2026-07-15.pre"}, None, "no beta '.pre' revisions"),
        ({"base_url": "http://a.klaviyo.com/api"}, None,
         "base_url 'http://a.klaviyo.com/api' must be an https:// URL (plain http:// only for 127.0.0.1 or localhost)"),
        ({"base_url": "a.klaviyo.com"}, None, "must be an https:// URL"),
        ({"api_key": " pk_with_spaces "}, None, "api_key is empty or has surrounding spaces"),
    ],
    ids=["start-date", "end-date", "start-in-future", "unknown-resource", "revision-format", "revision-newer",
         "revision-older", "revision-beta", "http-url",
         "no-scheme", "key-spaces"],
)
def test_bad_arguments_fail_before_any_request(
    options: dict[str, Any], argv: list[str] | None, message: str, loader: Loader, sandbox: Sandbox,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    sandbox.reset_stats()
    with pytest.raises(ConfigurationError) as caught:
        klaviyo_source(**{"api_key": sandbox.api_key, "base_url": sandbox.base_url, **options})
    assert message in str(caught.value) and "\n" not in str(caught.value)
    if argv is not None:
        status, stderr = cli(loader, monkeypatch, capsys, *argv)
        assert status == 2
        assert_one_line(stderr, message)
    assert sandbox.stats()["total"] == 0
    assert_nothing_written(loader)


def test_revision_klaviyo_rejects(loader: Loader, monkeypatch: pytest.MonkeyPatch) -> None:
    """Should Klaviyo refuse a revision the source accepts (one retired early), the run fails with its detail."""
    monkeypatch.setattr(klaviyo_module, "NEWEST_REVISION", "2099-12-31")
    error = failed_run(loader, revision="2099-01-01")
    assert isinstance(error, RevisionError)
    assert ": HTTP 400 [invalid]: Revision '2099-01-01' is not a valid revision." in str(error)
    assert "pass a revision Klaviyo supports" in str(error)
    assert_nothing_written(loader)


def test_chunked_load_needs_a_start(loader: Loader, monkeypatch: pytest.MonkeyPatch,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    status, stderr = cli(loader, monkeypatch, capsys, "--chunk-days", "30")
    assert status == 2
    assert_one_line(stderr, "--chunk-days needs --start-date")
    assert_nothing_written(loader)


def test_unreachable_destination(loader: Loader, monkeypatch: pytest.MonkeyPatch,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("DESTINATION__POSTGRES__CREDENTIALS", "postgresql://loader:hunter2secret@127.0.0.1:9/klaviyo")
    loader.sandbox.reset_stats()
    status, stderr = cli(loader, monkeypatch, capsys, "--destination", "postgres")
    assert status == 1
    assert_one_line(stderr, "cannot reach PostgreSQL at 127.0.0.1:9 (", "Connection refused",
                    "check the host and port in [destination.postgres] credentials", "nothing was read or loaded")
    assert "hunter2secret" not in stderr
    assert loader.sandbox.stats()["total"] == 0
    assert_nothing_written(loader)
