"""What an analyst finds in the tables: a load marker on every row, each table's own columns, campaigns' channel."""

from __future__ import annotations

from typing import Any

import dlt

from klaviyo_source import TABLES, klaviyo_source
from tests.integration.conftest import Loader


def query(loader: Loader, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    with loader.pipeline().sql_client() as client:
        return [tuple(r) for r in client.execute_sql(sql, *args) or []]


def columns(loader: Loader, table: str) -> set[str]:
    sql = "select column_name from information_schema.columns where table_schema = %s and table_name = %s"
    return {r[0] for r in query(loader, sql, loader.dataset, table)}


def test_every_row_of_every_table_carries_the_load_that_wrote_it(loader: Loader) -> None:
    """Also on the plain Python path: nothing in this test sets dlt's add_dlt_load_id, the source does."""
    dlt.config["normalize.parquet_normalizer.add_dlt_load_id"] = False  # as in a process that never set it
    loader.run()
    loads = {r[0] for r in loader.rows("_dlt_loads", "load_id")}
    for table in TABLES:
        marked = query(loader, f"select distinct _dlt_load_id from {table}")
        assert marked and {load_id for (load_id,) in marked} <= loads, table


def test_campaign_messages_have_their_own_columns_and_campaigns_their_channel(loader: Loader) -> None:
    loader.run(resources=["campaigns"])
    assert not {"audiences", "send_options", "tracking_options", "send_strategy"} & columns(loader, "campaign_messages")
    assert {"audiences", "send_options"} <= columns(loader, "campaigns")
    pairs = query(loader, "select c.channel, m.definition->>'$.channel' from campaigns c "
                          "join campaign_messages m on m.campaign_id = c.id")
    assert pairs and all(channel == message_channel for channel, message_channel in pairs)
    assert {c for c, _ in pairs} == {"email", "sms", "mobile_push"}


def test_a_table_loaded_before_the_load_marker_takes_it(loader: Loader) -> None:
    """Events loaded by a version without `_dlt_load_id` (as the CLI's first users have them) load on."""
    with loader.pipeline().sql_client() as client:
        client.create_dataset()
        client.execute_sql(f"create table {client.make_qualified_table_name('events')} (id varchar not null, "
                           "datetime timestamptz, timestamp bigint, uuid varchar, event_properties json, "
                           "profile_id varchar, metric_id varchar)")
        client.execute_sql(f"insert into {client.make_qualified_table_name('events')} (id) values ('old')")
    pipeline = loader.pipeline()
    pipeline.run(klaviyo_source(api_key=loader.sandbox.api_key, base_url=loader.sandbox.base_url,
                                resources=["events"]), loader_file_format="parquet")
    rows = dict(loader.rows("events", "id, _dlt_load_id"))
    assert rows.pop("old") is None and rows and all(rows.values())
