"""The API key never leaves the Authorization header: not in logs, errors, dlt traces, progress output,
the pipeline's working folder, the destination, or any URL."""

from __future__ import annotations

import logging
import os
import subprocess
import traceback
from pathlib import Path
from typing import Any

import pytest
from dlt.pipeline.exceptions import PipelineStepFailed

from klaviyo_source.client import KlaviyoClient
from klaviyo_source.endpoints import ENDPOINTS
from klaviyo_source.sandbox import Sandbox
from tests.integration.cli_driver import command
from tests.integration.conftest import SHORT_REPORT_HISTORY, Loader

REPO = Path(__file__).resolve().parents[2]


def files_holding(root: Path, secrets: list[str]) -> list[str]:
    """Every file under root (text or binary: pickled traces, DuckDB, parquet) that holds a secret."""
    found = []
    for path in root.rglob("*"):
        if path.is_file():
            content = path.read_bytes()
            found += [f"{path}: {s[:12]}..." for s in secrets if s.encode() in content]
    return found


def test_key_appears_nowhere(loader: Loader, sandbox: Sandbox, caplog: pytest.LogCaptureFixture,
                             monkeypatch: pytest.MonkeyPatch, fast_retries: Any) -> None:
    limited = sandbox.create_key(sorted({s for e in ENDPOINTS for s in e.scopes} - {"events:read"}))
    wrong = "pk_" + "7" * 34  # a revoked key is still a secret
    keys = [sandbox.api_key, limited, wrong]
    urls: list[str] = []
    original_get = KlaviyoClient.get

    def get(self: KlaviyoClient, url: str, params: Any, *args: Any) -> Any:
        urls.append(f"{url} {params}")
        return original_get(self, url, params, *args)

    monkeypatch.setattr(KlaviyoClient, "get", get)
    texts: list[str] = []
    # urllib3's own logger too: whatever set its level before (Klaviyo's SDK sets it to WARNING when a test of the
    # sandbox builds one in the same process) would otherwise hide the request lines this test reads
    caplog.set_level(logging.DEBUG, logger="urllib3")
    with caplog.at_level(logging.DEBUG):
        loader.run()  # a good run
        sandbox.mutate("add_events", count=10)
        sandbox.configure(faults=[{"kind": "outage", "from_request": 5}])
        for key in (sandbox.api_key, limited, wrong):  # failures: outage, missing scope, wrong key
            with pytest.raises(PipelineStepFailed) as caught:
                loader.run(api_key=key)
            texts += [str(caught.value), repr(caught.value), *traceback.format_exception(caught.value)]
            sandbox.clear_faults()
        pipeline = loader.pipeline()
        texts.append(str(pipeline.last_trace))
        texts.append(repr(pipeline.last_trace.asdict()))
    texts += [record.getMessage() for record in caplog.records]
    assert len(caplog.records) > 20 and len(urls) > 20  # the run did log and request (the check can fail)
    assert any("HTTP 403" in t for t in texts) and any("HTTP 401" in t for t in texts)
    for key in keys:
        assert not [t for t in texts if key in t], "the key leaked into a message, trace or log line"
        assert not [u for u in urls if key in u], "the key leaked into a URL"
    assert files_holding(loader.workdir, keys) == []


def test_cli_output_and_folder_hold_no_key(loader: Loader, sandbox: Sandbox) -> None:
    """The CLI at DEBUG (dlt's progress, urllib3's request lines) through a good and a failed run."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "SOURCES__KLAVIYO__API_KEY": sandbox.api_key,
           "SOURCES__KLAVIYO__BASE_URL": sandbox.base_url, **SHORT_REPORT_HISTORY}
    cli = command(["--pipeline-name", loader.name, "--pipelines-dir", str(loader.workdir / "pipelines"),
                   "--duckdb-file", str(loader.workdir / "klaviyo.duckdb"), "--dataset", loader.dataset,
                   "--log-level", "DEBUG"])
    good = subprocess.run(cli, env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert good.returncode == 0, good.stderr
    limited = sandbox.create_key(["accounts:read"])
    env["SOURCES__KLAVIYO__API_KEY"] = limited
    bad = subprocess.run(cli, env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert bad.returncode == 1 and "HTTP 403" in bad.stderr
    output = good.stdout + good.stderr + bad.stdout + bad.stderr
    assert "GET /api/events?" in output  # urllib3's DEBUG lines are there: the check can fail
    assert sandbox.api_key not in output and limited not in output
    assert files_holding(loader.workdir, [sandbox.api_key, limited]) == []
