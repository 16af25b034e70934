"""How runs end when something fails: promptly, quietly, with one line last, and nothing left behind."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
import requests

from klaviyo_source import client as client_module
from klaviyo_source.client import RetryPolicy
from klaviyo_source.endpoints import ENDPOINTS
from klaviyo_source.sandbox import Sandbox
from pipelines.klaviyo_pipeline import main
from tests.integration.conftest import REPO, SIZES, duckdb_loader

CLI = REPO / "pipelines" / "klaviyo_pipeline.py"


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_one_table_failing_for_good_stops_the_others_at_once(sandbox: Sandbox, tmp_path: Path) -> None:
    """A key without metrics:read fails /metrics while slow answers keep the other tables busy for seconds.

    Before the run-wide cancel signal, dlt waited for them and logged "Shutdown of dlt thread pool ... could not
    be completed" after the error line; now they stop, and the error line is the last word.
    """
    sandbox.configure(latency=1.0)
    key = sandbox.create_key(sorted({s for e in ENDPOINTS for s in e.scopes} - {"metrics:read"}))
    env = {**os.environ, "SOURCES__KLAVIYO__API_KEY": key}
    done = subprocess.run([sys.executable, str(CLI), "--base-url", sandbox.base_url], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300, check=False)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1, done.stderr
    assert lines[-1].startswith("error: Klaviyo /metrics: HTTP 403") and "metrics:read" in lines[-1]
    assert "thread pool" not in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert sum(line.startswith("error:") for line in lines) == 1
    assert not (tmp_path / "klaviyo_data.duckdb").exists()  # nothing was loaded, so no database either


def test_unreachable_klaviyo_gives_up_after_its_time_budget(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                             capsys: pytest.CaptureFixture[str],
                                                             caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(client_module, "DEFAULT_RETRY", RetryPolicy(unreachable_budget=2.0))
    monkeypatch.setenv("SOURCES__KLAVIYO__API_KEY", "pk_unreachable_0123456789")
    port = closed_port()
    with caplog.at_level(logging.WARNING, logger="klaviyo_source"):
        status = main(["--base-url", f"http://127.0.0.1:{port}/api", "--pipelines-dir", str(tmp_path / "p"),
                       "--duckdb-file", str(tmp_path / "k.duckdb")])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 1 and len(err) == 1 and err[0].startswith("error: Klaviyo /"), err
    assert f"no answer: could not connect to 127.0.0.1:{port} for 2 s; check this machine's network" in err[0]
    retries = [r.getMessage() for r in caplog.records if "retry" in r.getMessage()]
    # 19 tables retried for 2 s: one line stands for all (the next would come 5 s later)
    assert len(retries) == 1 and "could not connect; retry 1 in" in retries[0], retries
    assert not (tmp_path / "k.duckdb").exists()


def test_a_run_that_cannot_resolve_klaviyo_stops_without_thread_pool_noise(tmp_path: Path) -> None:
    """No name resolution at all (the first day on a machine without network), with the real 30 s budget: by
    then every table has its planned chains retrying, a hundred threads or more. The cancelled pools used to
    join them one by one (0.05 s each), past dlt's 2 s pool shutdown, which then logged its ERROR."""
    env = {**os.environ, "SOURCES__KLAVIYO__API_KEY": "pk_unreachable_0123456789"}
    done = subprocess.run([sys.executable, str(CLI), "--base-url", "https://klaviyo.invalid/api"], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=300, check=False)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1 and lines[-1].startswith("error: Klaviyo /"), done.stderr
    assert "could not connect to klaviyo.invalid for" in lines[-1]
    assert "thread pool" not in done.stderr and "ERROR" not in done.stderr, done.stderr
    assert not (tmp_path / "klaviyo_data.duckdb").exists()


def test_the_connection_pool_holds_every_thread_that_runs(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Many lists fan out into many member readers at once: at --concurrency 1 the old fixed pool (8) overflowed."""
    in_flight = peak = 0
    lock = threading.Lock()
    original = requests.Session.get

    def get(self: requests.Session, *args: Any, **kwargs: Any) -> requests.Response:
        nonlocal in_flight, peak
        with lock:
            in_flight += 1
            peak = max(peak, in_flight)
        try:
            return original(self, *args, **kwargs)
        finally:
            with lock:
                in_flight -= 1

    monkeypatch.setattr(requests.Session, "get", get)
    sizes = {**SIZES, "lists": 40, "segments": 20, "members_per_list": 5, "members_per_segment": 5}
    with Sandbox(seed=4, rate_limits="off", latency=0.2, **sizes) as sandbox, \
            caplog.at_level(logging.WARNING, logger="urllib3"):
        loader = duckdb_loader(sandbox, tmp_path)
        loader.run(concurrency=1)
    assert peak > 8  # more threads than the old pool held: the check below can fail
    assert not [r for r in caplog.records if "pool is full" in r.getMessage()]
