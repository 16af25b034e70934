"""The README as a new user follows it: its commands, its Python example and its SQL, run verbatim in a fresh
folder, so that the README cannot drift from the code.

The folder holds what a clone of the repository holds; the sandbox stands in for Klaviyo (the key goes where step 2
says, the base URL comes from SOURCES__KLAVIYO__BASE_URL) and nothing beyond 127.0.0.1 is reached. Only the package
index is stood in for: `python3 -m venv .venv` and `.venv/bin/pip install -q -e ".[dbt]"` run as written, against shims
that build a virtual environment seeing the packages this test runs with (CI's own set-up proves the real
install). Code blocks are found by language: `bash` (commands, one a line), `python`, `sql` (pasted into the SQL
session the README opens), `crontab` (the command of the entry) and `toml` (must parse).
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
import sysconfig
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import duckdb
import pytest
import tomlkit

from klaviyo_source.endpoints import ENDPOINTS
from klaviyo_source.sandbox import Sandbox
from tests.integration.conftest import REPO, SIZES

README = (REPO / "README.md").read_text()
BLOCKS = re.findall(r"^```(\w*)\n(.*?)^```", README, flags=re.M | re.S)
SETUP = 'python3 -m venv .venv && .venv/bin/pip install -q -e ".[dbt]" && '
CI_COMMAND = "bash .ci/run"  # the test suite itself: CI runs it, this test does not


def blocks(language: str) -> list[str]:
    return [body for lang, body in BLOCKS if lang == language]


def commands() -> list[str]:
    return [line.strip() for body in blocks("bash") for line in body.splitlines()
            if line.strip() and not line.strip().startswith("#")]


def inline(prefix: str) -> str:
    """The inline `code` of the README that starts with `prefix`."""
    found = re.search(rf"`({re.escape(prefix)}[^`]*)`", README)
    assert found, f"the README no longer says `{prefix}...`"
    return found.group(1)


PIP_SHIM = """#!/bin/sh
# Stands in for the package index: the packages are already there (see the test's docstring).
[ "$*" = "install -q -e .[dbt]" ] && [ -f pyproject.toml ] && exit 0
echo "the README test stands in for 'pip install -q -e .[dbt]' only, got: pip $*" >&2
exit 1
"""


def python3_shim(real_python3: str) -> str:
    """`python3 -m venv .venv` makes a light venv that sees this test's packages and the folder's code."""
    site_packages = sysconfig.get_paths()["purelib"]
    return f"""#!{sys.executable}
import os, subprocess, sys
if sys.argv[1:] != ["-m", "venv", ".venv"]:
    os.execv({real_python3!r}, ["python3", *sys.argv[1:]])
subprocess.run([{sys.executable!r}, "-m", "venv", "--without-pip", ".venv"], check=True)
purelib = subprocess.run([".venv/bin/python", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                         check=True, capture_output=True, text=True).stdout.strip()
with open(os.path.join(purelib, "readme_test.pth"), "w") as pth:
    pth.write(os.getcwd() + "\\nimport site; site.addsitedir({site_packages!r})\\n")
with open(".venv/bin/pip", "w") as pip:
    pip.write({PIP_SHIM!r})
os.chmod(".venv/bin/pip", 0o755)
"""


@dataclass
class Folder:
    """A fresh clone's folder, a shell to type into, and the sandbox standing in for Klaviyo."""

    path: Path
    env: dict[str, str]
    sandbox: Sandbox

    def sh(self, command: str, stdin: str | None = None, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(["bash", "-c", command], cwd=self.path, env=self.env, input=stdin,
                              stdin=None if stdin is not None else subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=timeout, check=False)
        output = f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        assert done.returncode == 0, f"$ {command}\nexit {done.returncode}\n{output}"
        return done

    def put_key(self) -> None:
        """Step 2 of the README: copy the example file, put the key in it."""
        self.sh(inline("cp .dlt/secrets.toml.example"))
        secrets = self.path / ".dlt" / "secrets.toml"
        text = secrets.read_text()
        assert 'api_key = "pk_your_private_key"' in text
        secrets.write_text(text.replace("pk_your_private_key", self.sandbox.api_key))


@pytest.fixture
def folder(tmp_path: Path) -> Iterator[Folder]:
    path = tmp_path / "klaviyo-dlt"
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=REPO,
                           capture_output=True, text=True, check=True).stdout.split("\0")
    for name in filter(None, files):
        if (REPO / name).is_file():
            (path / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, path / name)
    shims = tmp_path / "bin"
    shims.mkdir()
    real_python3 = shutil.which("python3", path=os.defpath) or shutil.which("python3")
    assert real_python3
    (shims / "python3").write_text(python3_shim(real_python3))
    (shims / "python3").chmod(stat.S_IRWXU)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SOURCES__", "DESTINATION__", "VIRTUAL_ENV"))}
    env["PATH"] = f"{shims}{os.pathsep}{env.get('PATH', os.defpath)}"
    env.pop("PYTHONPATH", None)
    # History ends a minute ago (see conftest.sandbox); the real rate limits, as Klaviyo's.
    anchor = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(minutes=1)
    # Except for the reports: at Klaviyo's 2 calls a minute (the source keeps to them) a first run's year of
    # reports takes 6 minutes (13 monthly calls per values table), so the runs here read the last month (at
    # most 2 calls per table: no waiting within a run), and the sandbox lets runs follow each other at once.
    reports = {e.path: (1, 60, 225) for e in ENDPOINTS if e.report is not None}
    with Sandbox(seed=11, anchor=anchor, rate_limits=reports, **SIZES) as sandbox:
        env["SOURCES__KLAVIYO__BASE_URL"] = sandbox.base_url
        env["SOURCES__KLAVIYO__REPORTS_HISTORY_DAYS"] = "30"  # a month: campaigns' reports for the README's SQL
        yield Folder(path, env, sandbox)


def paste_queries(folder: Folder, session: str) -> None:
    """Every `sql` block of the README, pasted into the SQL session: each statement answers a result table."""
    for sql in blocks("sql"):
        done = folder.sh(session, stdin=sql)
        results = len(duckdb.extract_statements(sql))
        assert "Error" not in done.stderr and done.stdout.count("┌") == results, done.stdout + done.stderr


def test_every_readme_command_example_and_query_works_as_written(folder: Folder) -> None:
    lines = commands()
    setup = next(line for line in lines if line.startswith(SETUP))
    assert setup.endswith("pipelines/klaviyo_pipeline.py --demo") and CI_COMMAND in lines
    assert (folder.path / ".ci" / "run").is_file()

    # the first command: set-up and the demo, before any key exists
    demo = folder.sh(setup)
    assert "Revenue by day" in demo.stdout and "campaign_messages" in demo.stdout
    assert "Campaign performance" in demo.stdout and "open_pct" in demo.stdout  # the dbt models, built
    with duckdb.connect(str(folder.path / "klaviyo_demo.duckdb"), read_only=True) as db:
        assert db.execute("select count(*) from klaviyo.events").fetchall()[0][0] > 40_000
        assert db.execute("select count(*) from klaviyo.segment_members").fetchall()[0][0] > 0
    session = next(line for line in lines if "-m klaviyo_source.sql" in line)
    assert f"{session} klaviyo_demo.duckdb" in demo.stdout  # the demo says how to query it
    paste_queries(folder, f"{session} klaviyo_demo.duckdb")  # a month of the demo: report tables may be empty

    # with a key: the account commands in the README's order, as a user would try them one after the other
    folder.put_key()
    runs = [line for line in lines if line.startswith(".venv/bin/python pipelines/klaviyo_pipeline.py")]
    assert len(runs) >= 3
    for command in runs:
        if "--destination postgres" in command:
            continue  # test_readme_postgres_command
        done = folder.sh(command)
        assert "run summary" in done.stderr and "error" not in done.stderr.lower(), done.stderr
    assert (folder.path / "klaviyo_data.duckdb").is_file()
    assert (folder.path / ".dlt" / "pipelines" / "klaviyo").is_dir()  # where the README says state lives

    # the SQL session as documented: typed (here: piped) statements; every query block runs as pasted
    folder.sh(session)
    paste_queries(folder, session)

    # the Python examples that run on their own (the first steps' and the scheduled one; others are fragments),
    # then the cron entry's command (its log must hold the run's summary)
    examples = blocks("python")
    runnable = [examples[0], *(example for example in examples[1:] if "scheduled_run(" in example)]
    assert len(runnable) == 2, "the README's scheduled_run example is missing"
    for number, example in enumerate(runnable):
        (folder.path / f"readme_example_{number}.py").write_text(example)
        done = folder.sh(f".venv/bin/python readme_example_{number}.py")
        assert "run summary" in done.stdout
    for entry in blocks("crontab"):
        fields = entry.strip().split(None, 5)
        command = re.sub(r"^cd \S+ && ", "", fields[5])  # cron changes to the installed folder: this one
        folder.sh(command)
        log = re.search(r">> ?(\S+)", command)
        output = (folder.path / log.group(1)).read_text() if log else ""
        assert "run summary" in output and "error:" not in output, output

    for config in blocks("toml"):
        tomlkit.parse(config)


@pytest.mark.postgres
def test_readme_postgres_command(folder: Folder) -> None:
    """`--destination postgres` as written, credentials where the README's Warehouses section puts them."""
    dsn = os.environ.get("KLAVIYO_TEST_POSTGRES_DSN")
    if not dsn:
        pytest.skip("KLAVIYO_TEST_POSTGRES_DSN is not set (.ci/run starts a PostgreSQL server and sets it)")
    command = next(line for line in commands() if "--destination postgres" in line)
    section = next(c for c in blocks("toml") if "[destination.postgres]" in c)
    assert "credentials = " in section
    import psycopg2  # the postgres extra: the README's own command uses the schema `klaviyo`, so a database of its own

    database = f"readme_{uuid.uuid4().hex[:8]}"
    admin = psycopg2.connect(dsn)
    admin.autocommit = True
    try:
        admin.cursor().execute(f"create database {database}")
        folder.sh(SETUP + "true")  # the set-up part of the README's first command
        folder.put_key()
        secrets = folder.path / ".dlt" / "secrets.toml"
        secrets.write_text(secrets.read_text() + f'\n[destination.postgres]\ncredentials = "{dsn.rsplit("/", 1)[0]}/'
                           f'{database}"\n')
        done = folder.sh(command)
        assert "run summary" in done.stderr
    finally:
        admin.cursor().execute(f"drop database if exists {database} with (force)")
        admin.close()
