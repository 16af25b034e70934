"""The models run three ways: from Python (the other tests), `klaviyo_pipeline.py --transform` after a load,
and plain `dbt build` from the project's folder with the profile that ships there."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import dlt
import duckdb
import pytest
from dbt.adapters.base.impl import BaseAdapter

from klaviyo_dbt import PROJECT_DIR, build
from klaviyo_source.sandbox import Sandbox
from tests.analytics.conftest import Modelled
from tests.integration.conftest import REPO

CAMPAIGNS = "select campaign_id, attributed_orders, attributed_revenue, count_opened_email from {}.klaviyo__campaigns"


def test_plain_dbt_build_from_its_folder(modelled_duckdb: Modelled, tmp_path: Path) -> None:
    """The README's plain `dbt build` on a copy of the DuckDB file: a full build of its own (--full-refresh, the
    copy holds build()'s models) with the figures build() made."""
    database = tmp_path / "copy.duckdb"
    shutil.copy(Path(modelled_duckdb.pipeline.destination_client().config.credentials.database), database)
    plain_dbt_build({"KLAVIYO_DUCKDB_PATH": str(database), "KLAVIYO_DATASET": modelled_duckdb.loader.dataset},
                    tmp_path, "--full-refresh")
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


def test_models_see_every_loaded_table_whatever_dbts_relation_cache_holds(
        modelled_duckdb: Modelled, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """dbt caches the relations of the models' schemas, not of the loaded tables'. The first thread to look at the
    loaded tables' schema adds them to the cache one by one, and another thread that looks meanwhile finds the
    schema cached with tables missing: on PostgreSQL, with 4 threads, klaviyo__events was once built with every
    events column null. Here the cache answers that schema with no tables at all; the models read the same."""
    database = tmp_path / "copy.duckdb"
    shutil.copy(Path(modelled_duckdb.pipeline.destination_client().config.credentials.database), database)
    copy = dlt.pipeline("cache_race", destination=dlt.destinations.duckdb(str(database)),
                        dataset_name=modelled_duckdb.loader.dataset, pipelines_dir=str(tmp_path / "p"))
    list_relations = BaseAdapter.list_relations

    def partial(adapter: BaseAdapter, database: str | None, schema: str) -> list[Any]:
        return [] if schema == copy.dataset_name else list_relations(adapter, database, schema)

    monkeypatch.setattr(BaseAdapter, "list_relations", partial)
    outputs = key_outputs(Modelled(modelled_duckdb.loader, copy, build(copy, quiet=True, full_refresh=True)))
    assert all(outputs) and outputs == key_outputs(modelled_duckdb)


# the figures analysts ask for: revenue per campaign and flow, unique opens and clicks per message, person totals
KEY_OUTPUTS = (
    "select campaign_id, attributed_orders, attributed_revenue from {m}.klaviyo__campaigns",
    "select flow_id, attributed_orders, attributed_revenue from {m}.klaviyo__flows",
    "select message_id, variation_id, send_day, conversion_metric_id, opens_unique, clicks_unique, conversion_value "
    "from {m}.klaviyo__message_performance",
    "select person_id, order_count, lifetime_revenue, attributed_revenue, organic_revenue from {m}.klaviyo__persons",
)


def key_outputs(modelled: Modelled) -> list[list[tuple[Any, ...]]]:
    return [sorted(modelled.query(sql), key=repr) for sql in KEY_OUTPUTS]


def plain_dbt_build(env: dict[str, str], tmp_path: Path, *options: str) -> str:
    """`cd klaviyo_dbt && dbt build` as the README says (the shipped profiles.yml, settings from the environment);
    dbt's target and logs in `tmp_path`, so parallel tests do not share dbt's partial-parse file."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DBT_")} | env | {
        "DBT_TARGET_PATH": str(tmp_path / "target"), "DBT_LOG_PATH": str(tmp_path / "logs")}
    dbt = Path(sys.executable).with_name("dbt")
    done = subprocess.run([str(dbt), "build", *options], cwd=PROJECT_DIR, env=env, capture_output=True, text=True,
                          timeout=900, check=False)
    assert done.returncode == 0, done.stdout[-3000:]
    assert "ERROR=0" in done.stdout and "PASS=" in done.stdout
    return done.stdout


def test_plain_dbt_build_on_postgres(modelled_postgres: Modelled, tmp_path: Path) -> None:
    """The README's plain `dbt build` with KLAVIYO_DBT_TARGET=postgres and the server in KLAVIYO_PG_*: it runs as
    an incremental build over the models build() made (nothing new loaded) and leaves their figures as they were."""
    dsn = urlsplit(os.environ["KLAVIYO_TEST_POSTGRES_DSN"])
    before = key_outputs(modelled_postgres)
    out = plain_dbt_build({
        "KLAVIYO_DBT_TARGET": "postgres", "KLAVIYO_DATASET": modelled_postgres.loader.dataset,
        "KLAVIYO_PG_HOST": dsn.hostname or "", "KLAVIYO_PG_PORT": str(dsn.port or 5432),
        "KLAVIYO_PG_USER": unquote(dsn.username or ""), "KLAVIYO_PG_PASSWORD": unquote(dsn.password or ""),
        "KLAVIYO_PG_DATABASE": dsn.path.lstrip("/")}, tmp_path)
    assert "adapter: postgres" in out
    assert key_outputs(modelled_postgres) == before
    assert any(before[0]) and any(before[2])
