"""klaviyo__events and the person rollups are incremental on the load marker: after late events, lookback re-reads
and a loader full refresh, an incremental build equals a full rebuild and the independently computed attribution,
on DuckDB and on PostgreSQL."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dlt
import pytest

from klaviyo_dbt import analytics_schema, build
from klaviyo_source import klaviyo_source
from klaviyo_source.sandbox import Sandbox
from tests.analytics.conftest import Modelled, new_account
from tests.analytics.truth import AccountTruth
from tests.integration.conftest import Loader, drop_dataset, settle

# a few people with many events each, so late touches land before events the models already hold
SMALL = {"events": 600, "profiles": 6, "campaigns": 6, "flows": 2}
COLUMNS = ("event_id, metric_name, person_id, attribution_source, campaign_id, flow_id, message_id, variation_id, "
           "send_at, attributed_event_id, _dlt_load_id")


@pytest.fixture
def small_account() -> Iterator[Sandbox]:
    with new_account(**SMALL) as sandbox:
        yield sandbox


@pytest.fixture(params=["duckdb", pytest.param("postgres", marks=pytest.mark.postgres)])
def small_loader(request: pytest.FixtureRequest, small_account: Sandbox, tmp_path: Path) -> Iterator[Loader]:
    """A loader of the small account into DuckDB or into a dataset of its own on PostgreSQL (dropped after)."""
    if request.param == "duckdb":
        yield Loader(small_account, dlt.destinations.duckdb(str(tmp_path / "k.duckdb")), tmp_path)
        return
    dsn = os.environ.get("KLAVIYO_TEST_POSTGRES_DSN")
    if not dsn:
        pytest.skip("KLAVIYO_TEST_POSTGRES_DSN is not set (.ci/run starts a PostgreSQL server and sets it)")
    loader = Loader(small_account, dlt.destinations.postgres(dsn), tmp_path)
    yield loader
    with loader.pipeline().sql_client() as client:
        client.execute_sql(f'DROP SCHEMA IF EXISTS "{analytics_schema(loader.dataset)}" CASCADE')
    drop_dataset(loader)


def events_table(modelled: Modelled) -> list[tuple[Any, ...]]:
    return modelled.query(f"select {COLUMNS} from {{m}}.klaviyo__events order by event_id")


def credited(modelled: Modelled) -> dict[str, tuple[str | None, str]]:
    """event -> (campaign or flow, touch) of every attributed event."""
    return {r[0]: (r[1], r[2]) for r in modelled.query(
        "select event_id, coalesce(campaign_id, flow_id), attributed_event_id from {m}.klaviyo__events "
        "where attribution_source in ('native', 'session')")}


def expected_credit(truth: AccountTruth, modelled: Modelled) -> dict[str, tuple[str | None, str]]:
    native = modelled.query("select count(*) from {m}.stg_klaviyo__event_attributions")[0][0]
    credit = truth.native_credit() if native else truth.session_credit()
    return {truth.ident[c]: (truth.own[t].campaign_id or truth.own[t].flow_id, truth.ident[t])
            for c, t in credit.items()}


# the incremental models and their keys
INCREMENTAL = {"klaviyo__events": "event_id", "klaviyo__person_campaign_flow": "person_campaign_flow_key",
               "klaviyo__persons": "person_id"}
# the models built from them, with the figures analysts ask for (revenue per campaign and flow, unique opens and
# clicks per message) and the comparison with Klaviyo's reports
ROLLUPS = {"klaviyo__campaigns": "campaign_id", "klaviyo__flows": "flow_id",
           "klaviyo__message_performance": "message_performance_key", "klaviyo__reconciliation": "reconciliation_key"}


def incremental_tables(modelled: Modelled) -> dict[str, list[dict[str, Any]]]:
    """Every row of every incremental model and of the rollups built from them, but their watermarks (the load a
    row was computed after: a full rebuild computes all rows after the latest one)."""
    tables = {}
    with modelled.pipeline.sql_client() as client:
        for model, key in {**INCREMENTAL, **ROLLUPS}.items():
            with client.execute_query(f"select * from {modelled.schema}.{model} order by {key}") as cursor:
                names = [d[0] for d in cursor.description]
                tables[model] = [{n: v for n, v in zip(names, row, strict=True) if n != "_processed_through_load_id"}
                                 for row in cursor.fetchall()]
    return tables


def rebuilt(modelled: Modelled) -> dict[str, list[dict[str, Any]]]:
    """The incremental models and their rollups built from scratch over the same tables."""
    build(modelled.pipeline, quiet=True, full_refresh=True)
    return incremental_tables(modelled)


def test_late_touches_and_rereads_recompute_earlier_events(small_account: Sandbox, small_loader: Loader) -> None:
    loader = small_loader
    store = small_account._server.store  # type: ignore[union-attr]
    old_clicks = small_account.mutate("add_events", count=6, metric="Clicked Email", offset_seconds=-50 * 3600)
    small_account.mutate("add_events", count=12, metric="Placed Order", offset_seconds=-2 * 3600)
    settle()
    pipeline = loader.run()
    modelled_before = {row[0] for row in events_table(Modelled(loader, pipeline, build(pipeline, quiet=True)))}

    # clicks that arrive late, stamped before orders already modelled; new orders that the clicks of two days
    # ago (loaded before, outside the 24 h the loader re-reads) should take; the re-read of the last 24 h
    late_clicks = small_account.mutate("add_events", count=6, metric="Clicked Email", offset_seconds=-3 * 3600)
    new_orders = small_account.mutate("add_events", count=12, metric="Placed Order")
    settle()
    pipeline = loader.run()
    second = Modelled(loader, pipeline, build(pipeline, quiet=True))
    assert second.built.count("pass") > 0 and not second.built.count("fail", "error")

    after = credited(second)
    assert after == expected_credit(AccountTruth(store, loader.events_until()), second)
    # the cases this test is about did occur
    assert {e for e, (_, touch) in after.items() if e in modelled_before and touch in set(late_clicks["ids"])}
    assert {e for e, (_, touch) in after.items() if e in set(new_orders["ids"]) and touch in set(old_clicks["ids"])}
    assert incremental_tables(second) == rebuilt(second)


def test_loader_full_refresh_drops_vanished_events(small_account: Sandbox, tmp_path: Path) -> None:
    loader = Loader(small_account, dlt.destinations.duckdb(str(tmp_path / "k.duckdb")), tmp_path)
    pipeline = loader.run()
    before = events_table(Modelled(loader, pipeline, build(pipeline, quiet=True)))
    gone = small_account.mutate("delete_profiles", count=1)
    assert gone["events_deleted"] > 0
    # Klaviyo leaves no trace of a deletion: a loader full refresh is how it reaches the tables
    source = klaviyo_source(api_key=small_account.api_key, base_url=small_account.base_url,
                            end_date=loader.events_until())
    pipeline.run(source, refresh="drop_sources", loader_file_format="parquet").raise_on_failed_jobs()
    after = Modelled(loader, pipeline, build(pipeline, quiet=True))
    rows = events_table(after)
    assert gone["ids"][0] not in {r[2] for r in rows}
    assert len(rows) == len(before) - gone["events_deleted"]
    assert incremental_tables(after) == rebuilt(after)
