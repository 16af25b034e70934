"""The SQL session the README opens: an analyst's open session never makes a scheduled run fail."""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
from pathlib import Path

from klaviyo_source.sandbox import Sandbox
from tests.integration.test_cli import cli


def test_an_open_session_does_not_block_the_next_run(sandbox: Sandbox, tmp_path: Path) -> None:
    """DuckDB lets no process write to a file another holds open: the session opens it per statement only."""
    env = {"SOURCES__KLAVIYO__API_KEY": sandbox.api_key, "SOURCES__KLAVIYO__BASE_URL": sandbox.base_url}
    assert cli(["--resources", "metrics"], tmp_path, env).returncode == 0
    session = subprocess.Popen([sys.executable, "-u", "-m", "klaviyo_source.sql"], cwd=tmp_path, text=True,
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])})
    assert session.stdin is not None and session.stdout is not None
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in session.stdout], daemon=True).start()  # type: ignore[union-attr]
    try:
        session.stdin.write("select count(*) as metrics from metrics;\n")
        session.stdin.flush()
        while "└" not in lines.get(timeout=120):  # the first answer is in: the session is open and idle
            pass
        again = cli(["--resources", "metrics"], tmp_path, env)
        assert again.returncode == 0, again.stderr[-2000:]
        session.stdin.write("select count(*) from metrics;\n")
        session.stdin.close()
        assert session.wait(timeout=120) == 0
    finally:
        session.kill()
