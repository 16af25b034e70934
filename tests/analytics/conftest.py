"""One sandbox account, loaded once into DuckDB and once into PostgreSQL, with the dbt models built on each;
the model tests share them (a load and a build take seconds each, so CI pays them once)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import dlt
import pytest

from klaviyo_dbt import BuildResult, analytics_schema, build
from klaviyo_source.sandbox import Sandbox
from klaviyo_source.sandbox.store import Store
from tests.analytics.truth import AccountTruth
from tests.integration.conftest import Loader

SIZES: dict[str, int] = {
    "events": 12_000,
    "profiles": 600,
    "lists": 3,
    "segments": 3,
    "members_per_list": 60,
    "members_per_segment": 40,
    "campaigns": 12,
    "flows": 4,
    "actions_per_flow": 3,
    "messages_per_action": 2,
    "templates": 5,
    "tags": 4,
    "catalog_items": 12,
    "variants_per_item": 1,
    "catalog_categories": 3,
    "coupons": 1,
    "codes_per_coupon": 5,
}


@dataclass
class Modelled:
    """A loaded dataset with the models built over it."""

    loader: Loader
    pipeline: dlt.Pipeline
    built: BuildResult

    @property
    def schema(self) -> str:
        return analytics_schema(self.loader.dataset)

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        """Rows of `sql`, with {m} standing for the models' schema."""
        with self.pipeline.sql_client() as client:
            return [tuple(r) for r in client.execute_sql(sql.format(m=self.schema)) or []]


def new_account(**sizes: int) -> Sandbox:
    anchor = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(minutes=1)
    return Sandbox(seed=11, rate_limits="off", anchor=anchor, **{**SIZES, **sizes})


def load_and_build(loader: Loader, **build_options: Any) -> Modelled:
    pipeline = loader.run()
    return Modelled(loader, pipeline, build(pipeline, quiet=True, **build_options))


@dataclass
class Warehouses:
    """The account loaded and modelled on DuckDB and (where a server is configured) PostgreSQL; its sandbox is
    stopped once both loads are done (no server thread outlives this fixture's setup), its store kept."""

    store: Store
    duckdb: Modelled
    postgres: Modelled | None


@pytest.fixture(scope="session")
def warehouses(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Warehouses]:
    dsn = os.environ.get("KLAVIYO_TEST_POSTGRES_DSN")
    with new_account() as sandbox:
        assert sandbox._server is not None  # thread mode: the store is in this process
        store = sandbox._server.store
        work = tmp_path_factory.mktemp("duckdb_models")
        duckdb = load_and_build(Loader(sandbox, dlt.destinations.duckdb(str(work / "klaviyo.duckdb")), work))
        postgres = None
        if dsn:
            work = tmp_path_factory.mktemp("postgres_models")
            postgres = load_and_build(Loader(sandbox, dlt.destinations.postgres(dsn), work,
                                             dataset=f"klaviyo_{uuid.uuid4().hex[:8]}"))
    yield Warehouses(store, duckdb, postgres)
    if postgres is not None:
        with postgres.pipeline.sql_client() as client:
            for schema in (postgres.schema, postgres.loader.dataset):
                client.execute_sql(f"drop schema if exists {schema} cascade")


@pytest.fixture
def modelled_duckdb(warehouses: Warehouses) -> Modelled:
    return warehouses.duckdb


@pytest.fixture
def modelled_postgres(warehouses: Warehouses) -> Modelled:
    if warehouses.postgres is None:
        pytest.skip("KLAVIYO_TEST_POSTGRES_DSN is not set (.ci/run starts a PostgreSQL server and sets it)")
    return warehouses.postgres


@pytest.fixture(params=["duckdb", "postgres"])
def modelled(request: pytest.FixtureRequest) -> Modelled:
    return request.getfixturevalue(f"modelled_{request.param}")


@pytest.fixture
def truth(warehouses: Warehouses, modelled: Modelled) -> AccountTruth:
    """The account as the modelled load saw it (events before its cursor)."""
    return AccountTruth(warehouses.store, modelled.loader.events_until())
