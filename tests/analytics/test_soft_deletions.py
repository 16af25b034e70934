"""Soft deletions (deleted_at on deleted rows, removed_at on memberships that ended: the loader's contract with
issue14) are respected where the columns exist: here they are added to a loaded dataset by hand, the way a later
load would write them, and an incremental build takes them out."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import dlt
import pytest

from klaviyo_dbt import build
from klaviyo_source.sandbox import Sandbox
from tests.analytics.conftest import Modelled, new_account
from tests.analytics.test_incremental import incremental_tables, rebuilt
from tests.integration.conftest import ID_TABLES, Loader


@pytest.fixture
def account() -> Iterator[Sandbox]:
    with new_account(events=1500, profiles=60) as sandbox:
        yield sandbox


def test_deleted_rows_and_ended_memberships_leave_the_models(account: Sandbox, tmp_path: Path) -> None:
    loader = Loader(account, dlt.destinations.duckdb(str(tmp_path / "k.duckdb")), tmp_path)
    # Deletions made by hand here leave Klaviyo's own reports as they were (a real deletion changes them too),
    # so the report tables stay out: klaviyo__reconciliation would rightly flag the difference.
    pipeline = loader.run(resources=ID_TABLES)
    build(pipeline, quiet=True)
    d = loader.dataset
    with pipeline.sql_client() as client:
        def one(sql: str) -> str:
            return str(client.execute_sql(sql.format(d=d))[0][0])

        newest = one("select max(load_id) from {d}._dlt_loads")
        marked = f"{float(newest) + 1:.6f}"  # a later load, as the one that found the deletions
        client.execute_sql(f"insert into {d}._dlt_loads (load_id, schema_name, status, inserted_at, "
                           f"schema_version_hash) select '{marked}', schema_name, 0, now(), schema_version_hash "
                           f"from {d}._dlt_loads where load_id = '{newest}'")
        person = one("select profile_id from {d}.events group by 1 order by count(*) desc limit 1")
        event = one(f"select id from {{d}}.events where metric_id in (select id from {{d}}.metrics "
                    f"where name = 'Placed Order') and profile_id <> '{person}' order by id limit 1")
        campaign = one("select campaign_id from {d}.campaign_messages order by campaign_id limit 1")
        member = client.execute_sql(f"select list_id, profile_id from {d}.list_members where profile_id <> '{person}' "
                                    "order by 1, 2 limit 1")[0]
        for table, column, where in (
                ("events", "deleted_at", f"id = '{event}'"),
                ("profiles", "deleted_at", f"id = '{person}'"),
                ("campaigns", "deleted_at", f"id = '{campaign}'"),
                ("list_members", "removed_at", f"list_id = '{member[0]}' and profile_id = '{member[1]}'")):
            client.execute_sql(f"alter table {d}.{table} add column if not exists {column} timestamp with time zone")
            client.execute_sql(f"update {d}.{table} set {column} = now(), _dlt_load_id = '{marked}' where {where}")
    after = Modelled(loader, pipeline, build(pipeline, quiet=True))

    assert after.query(f"select count(*) from {{m}}.klaviyo__events where event_id = '{event}'") == [(0,)]
    assert after.query(f"select count(*) from {{m}}.klaviyo__events where person_id = '{person}'") == [(0,)]
    assert after.query(f"select count(*) from {{m}}.klaviyo__persons where person_id = '{person}'") == [(0,)]
    assert after.query(f"select count(*) from {{m}}.klaviyo__campaigns where campaign_id = '{campaign}'") == [(0,)]
    removed = after.query(f"select sum(members_removed) from {{m}}.klaviyo__list_growth where list_id = '{member[0]}'")
    assert removed == [(1,)]
    # the build recomputed the people these changes touched, not everyone
    for model in ("klaviyo__person_campaign_flow", "klaviyo__persons"):
        total, recomputed = after.query(f"select count(*), count(case when _processed_through_load_id = '{marked}' "
                                        f"then 1 end) from {{m}}.{model}")[0]
        assert 0 < recomputed < total / 4, model
    assert incremental_tables(after) == rebuilt(after)
