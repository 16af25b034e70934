"""Runs the pipeline CLI in this process, as a scheduler starts it, with Klaviyo's report pace lifted
(tests/report_pace.py); given a moment, kills the process with SIGKILL then.

    python -m tests.integration.cli_driver -- --pipeline-name ... (CLI arguments)
    python -m tests.integration.cli_driver extract:12 -- ...
    python -m tests.integration.cli_driver load:3 -- ...
    python -m tests.integration.cli_driver load:events -- ...

`extract:N` dies when the N-th Klaviyo page has arrived (pages still being read, nothing committed);
`load:N` dies when the N-th load job has finished (some tables loaded, the package half done);
`load:<table>` dies inside the first load job of that table, right after its work is done and before
dlt records the job as done (dlt then runs the job again on the next run).
`retries:fast` kills nothing: retries back off in milliseconds, so a run through an outage fails at once.
SIGKILL gives the run no chance to clean up, like a killed container or an OOM kill.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dlt
from dlt.common.destination.client import RunnableLoadJob

from klaviyo_source import client as client_module
from klaviyo_source.client import KlaviyoClient, RetryPolicy
from klaviyo_source.rate_limit import GovernorRegistry
from pipelines.klaviyo_pipeline import main
from tests.report_pace import lifted

if TYPE_CHECKING:  # the driver runs as a script too: it does not import the tests' fixtures
    from tests.integration.conftest import Loader

REPO = Path(__file__).resolve().parents[2]


def die_on_call(owner: type, name: str, calls: int) -> None:
    """Wraps owner.name so that the process is killed right after the `calls`-th call returns."""
    original: Callable[..., Any] = getattr(owner, name)
    lock = threading.Lock()
    count = 0

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        nonlocal count
        result = original(*args, **kwargs)
        with lock:
            count += 1
            if count >= calls:
                os.kill(os.getpid(), signal.SIGKILL)
        return result

    setattr(owner, name, wrapper)


def die_inside_job(table: str) -> None:
    """Kills the process inside the first load job of `table`, once the job's own work has finished."""
    original = RunnableLoadJob.run_managed

    def run_managed(self: RunnableLoadJob, *args: Any) -> None:
        if self.load_table_name == table:
            run = self.run

            def run_then_die() -> None:
                run()
                os.kill(os.getpid(), signal.SIGKILL)

            self.run = run_then_die  # type: ignore[method-assign]
        original(self, *args)

    RunnableLoadJob.run_managed = run_managed  # type: ignore[method-assign]


def command(cli_args: list[str], kill_at: str | None = None) -> list[str]:
    """The command line that runs the CLI with `cli_args` through this driver."""
    return [sys.executable, "-m", "tests.integration.cli_driver", *([kill_at] if kill_at else []), "--", *cli_args]


def start_cli(loader: Loader, *extra: str, name: str | None = None, kill_at: str | None = None,
              env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """The CLI in its own process, as a scheduler starts it, on the loader's sandbox, folder and destination
    (SIGKILLed at `kill_at` if given)."""
    environment = {**os.environ, "PYTHONPATH": str(REPO), "SOURCES__KLAVIYO__API_KEY": loader.sandbox.api_key,
                   "SOURCES__KLAVIYO__BASE_URL": loader.sandbox.base_url, **(env or {})}
    args = ["--pipeline-name", name or loader.name, "--pipelines-dir", str(loader.workdir / "pipelines"),
            "--dataset", loader.dataset, "--log-level", "WARNING", *extra]
    if isinstance(loader.destination, dlt.destinations.postgres):
        environment["DESTINATION__POSTGRES__CREDENTIALS"] = os.environ["KLAVIYO_TEST_POSTGRES_DSN"]
        args += ["--destination", "postgres"]
    else:
        args += ["--duckdb-file", str(loader.workdir / "klaviyo.duckdb")]
    return subprocess.Popen(command(args, kill_at), env=environment, cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def finish(process: subprocess.Popen[str]) -> tuple[int, str]:
    """Waits for a started CLI: its exit status (-9 when killed) and what it wrote to stderr."""
    _, stderr = process.communicate(timeout=600)
    return process.returncode, stderr


def run_cli(loader: Loader, *extra: str, **options: Any) -> tuple[int, str]:
    """start_cli, then finish."""
    return finish(start_cli(loader, *extra, **options))


def prepare(moment: str) -> None:
    step, at = moment.split(":")
    if step == "retries":
        client_module.DEFAULT_RETRY = RetryPolicy(attempts=4, base=0.01, cap=0.05)
    elif step == "extract":
        die_on_call(KlaviyoClient, "get", int(at))
    elif at.isdigit():
        die_on_call(RunnableLoadJob, "run_managed", int(at))
    else:
        die_inside_job(at)


if __name__ == "__main__":
    separator = sys.argv.index("--")
    GovernorRegistry.get = lifted(GovernorRegistry.get)  # type: ignore[method-assign]
    for moment in sys.argv[1:separator]:
        prepare(moment)
    sys.exit(main(sys.argv[separator + 1:]))
