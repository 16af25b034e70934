"""The models run three ways: from Python (the other tests), `klaviyo_pipeline.py --transform` after a load,
and plain `dbt build` from the project's folder with the profile that ships there."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import duckdb

from klaviyo_dbt import PROJECT_DIR
from klaviyo_source.sandbox import Sandbox
from tests.analytics.conftest import Modelled
from tests.integration.conftest import REPO

CAMPAIGNS = "select campaign_id, attributed_orders, attributed_revenue, count_opened_email from {}.klaviyo__campaigns"


def test_plain_dbt_build_from_its_folder(modelled_duckdb: Modelled, tmp_path: Path) -> None:
    database = tmp_path / "copy.duckdb"
    shutil.copy(Path(modelled_duckdb.pipeline.destination_client().config.credentials.database), database)
    env = {**os.environ, "KLAVIYO_DUCKDB_PATH": str(database), "KLAVIYO_DATASET": modelled_duckdb.loader.dataset,
           "DBT_TARGET_PATH": str(tmp_path / "target"), "DBT_LOG_PATH": str(tmp_path / "logs")}
    dbt = Path(sys.executable).with_name("dbt")
    done = subprocess.run([str(dbt), "build", "--full-refresh"], cwd=PROJECT_DIR, env=env, capture_output=True,
                          text=True, timeout=900, check=False)
    assert done.returncode == 0, done.stdout[-3000:]
    assert "ERROR=0" in done.stdout and "PASS=" in done.stdout
    with duckdb.connect(str(database), read_only=True) as db:
        plain = sorted(db.execute(CAMPAIGNS.format(modelled_duckdb.schema)).fetchall())
    assert plain == sorted(modelled_duckdb.query(CAMPAIGNS.format("{m}")))


def test_transform_after_a_partial_load(tmp_path: Path) -> None:
    """--transform on a load of two tables: every model builds (tables not loaded count as empty)."""
    with Sandbox(seed=2, rate_limits="off", events=400, profiles=40) as sandbox:
        env = {**os.environ, "SOURCES__KLAVIYO__API_KEY": sandbox.api_key,
               "SOURCES__KLAVIYO__BASE_URL": sandbox.base_url}
        done = subprocess.run(
            [sys.executable, str(REPO / "pipelines" / "klaviyo_pipeline.py"), "--resources", "events,metrics",
             "--transform", "--duckdb-file", str(tmp_path / "k.duckdb"), "--pipelines-dir", str(tmp_path / "p"),
             "--log-level", "WARNING"],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    with duckdb.connect(str(tmp_path / "k.duckdb"), read_only=True) as db:
        events = db.execute("select count(*), count(metric_name) from klaviyo_analytics.klaviyo__events").fetchone()
        persons = db.execute("select count(*) from klaviyo_analytics.klaviyo__persons").fetchone()
    assert events is not None and events[0] == events[1] > 300  # every event, with its metric's name
    assert persons == (0,)  # profiles were not loaded
