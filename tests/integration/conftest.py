"""Fixtures for end-to-end runs: a sandbox over real HTTP, a pipeline into DuckDB (or PostgreSQL), and
helpers to compare every table with the sandbox's ground truth."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import dlt
import pytest

from klaviyo_source import client as client_module
from klaviyo_source import klaviyo_source
from klaviyo_source.client import RetryPolicy
from klaviyo_source.endpoints import BY_TABLE
from klaviyo_source.sandbox import Sandbox
from klaviyo_source.windows import parse_instant

SIZES: dict[str, int] = {
    "events": 3000,
    "profiles": 400,
    "lists": 3,
    "segments": 3,
    "members_per_list": 40,
    "members_per_segment": 30,
    "campaigns": 9,
    "flows": 3,
    "actions_per_flow": 2,
    "messages_per_action": 1,
    "templates": 12,
    "tags": 6,
    "catalog_items": 25,
    "variants_per_item": 2,
    "catalog_categories": 4,
    "coupons": 2,
    "codes_per_coupon": 30,
}

REPO = Path(__file__).resolve().parents[2]

MEMBER_KEYS = {"list_members": ("list_id", "profile_id"), "segment_members": ("segment_id", "profile_id")}


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    # History ends a minute ago: records stamped in the very second a run starts are (rightly) left to the
    # next run, which would make a first load differ from the ground truth for reasons of timing alone.
    anchor = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(minutes=1)
    with Sandbox(seed=3, rate_limits="off", anchor=anchor, **SIZES) as sb:
        yield sb


@dataclass
class Loader:
    """Runs the source against a sandbox into one destination, the way a scheduled job would."""

    sandbox: Sandbox
    destination: Any
    workdir: Path
    dataset: str = field(default_factory=lambda: f"klaviyo_{uuid.uuid4().hex[:8]}")
    name: str = "klaviyo_test"

    def pipeline(self) -> dlt.Pipeline:
        return dlt.pipeline(
            pipeline_name=self.name,
            destination=self.destination,
            dataset_name=self.dataset,
            pipelines_dir=str(self.workdir / "pipelines"),
        )

    def run(self, **options: Any) -> dlt.Pipeline:
        options.setdefault("api_key", self.sandbox.api_key)
        options.setdefault("base_url", self.sandbox.base_url)
        pipeline = self.pipeline()
        info = pipeline.run(klaviyo_source(**options), loader_file_format="parquet")
        info.raise_on_failed_jobs()
        return pipeline

    def rows(self, table: str, columns: str = "id") -> list[tuple[Any, ...]]:
        with self.pipeline().sql_client() as client:
            return [tuple(r) for r in client.execute_sql(f"select {columns} from {table}")]

    def keys(self, table: str) -> list[Any]:
        if table in MEMBER_KEYS:
            return self.rows(table, ", ".join(MEMBER_KEYS[table]))
        return [r[0] for r in self.rows(table)]

    def set_aside(self) -> dict[str, int]:
        """Records set aside per table (none when the table was never created)."""
        with self.pipeline().sql_client() as client:
            if not client.has_dataset() or "set_aside_records" not in self.pipeline().default_schema.tables:
                return {}
            rows = client.execute_sql("select table_name, count(*) from set_aside_records group by 1")
        return {table: int(n) for table, n in rows or ()}

    def events_until(self) -> datetime | None:
        """The upper bound the last run read events to (its saved cursor), None if it read no events."""
        resources = self.pipeline().state["sources"]["klaviyo"].get("resources", {})
        saved = resources.get("events", {}).get("cursors", {}).get("")
        return parse_instant(saved) if saved else None


def duckdb_loader(sandbox: Sandbox, tmp_path: Path) -> Loader:
    return Loader(sandbox, dlt.destinations.duckdb(str(tmp_path / "klaviyo.duckdb")), tmp_path)


@pytest.fixture
def loader(sandbox: Sandbox, tmp_path: Path) -> Loader:
    return duckdb_loader(sandbox, tmp_path)


@pytest.fixture
def postgres_loader(sandbox: Sandbox, tmp_path: Path) -> Loader:
    dsn = os.environ.get("KLAVIYO_TEST_POSTGRES_DSN")
    if not dsn:
        pytest.skip("KLAVIYO_TEST_POSTGRES_DSN is not set (.ci/run starts a PostgreSQL server and sets it)")
    return Loader(sandbox, dlt.destinations.postgres(dsn), tmp_path)


def assert_matches_ground_truth(loader: Loader, tables: list[str] | None = None,
                                set_aside: dict[str, int] | None = None) -> dict[str, int]:
    """Every table holds exactly the sandbox's ids: none missing, none extra, none twice.

    `set_aside`: records per table known to be in `set_aside_records`; at most that many may be missing.
    """
    truth = loader.sandbox.ground_truth(until=loader.events_until())
    checked: dict[str, int] = {}
    for table in tables or [*BY_TABLE, "campaign_messages"]:
        keys = loader.keys(table)
        assert len(keys) == len(set(keys)), f"{table}: duplicated keys"
        expected = truth[table]
        missing, extra = expected - set(keys), set(keys) - expected
        assert len(missing) <= (set_aside or {}).get(table, 0) and not extra, \
            f"{table}: {len(missing)} missing, {len(extra)} extra, {(set_aside or {}).get(table, 0)} set aside"
        checked[table] = len(keys)
    return checked


def settle() -> None:
    """Mutations are stamped with the current second; a run that starts within that same second rightly
    leaves them to the next run (its window is [.., start)), so tests that expect them now wait a second."""
    time.sleep(1.1)


def requests_sent(stats: dict[str, Any]) -> int:
    return int(stats["total"])


@pytest.fixture
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> RetryPolicy:
    """Backoff in milliseconds, so cases that exhaust their retries (outages) fail in a moment."""
    policy = RetryPolicy(attempts=6, base=0.01, cap=0.05)
    monkeypatch.setattr(client_module, "DEFAULT_RETRY", policy)
    return policy


def cursors(loader: Loader) -> dict[tuple[str, str], datetime]:
    """Every saved cursor of the pipeline: (table, partition) -> instant read through."""
    resources = loader.pipeline().state.get("sources", {}).get("klaviyo", {}).get("resources", {})
    return {
        (table, key): parse_instant(value)
        for table, state in resources.items()
        for key, value in (state.get("cursors") or {}).items()
    }


def assert_cursors_moved_by(before: dict[tuple[str, str], datetime], after: dict[tuple[str, str], datetime],
                            ran_until: datetime) -> None:
    """A run's cursors never go back, never pass the moment the run ended, and none is lost."""
    assert set(before) <= set(after), f"cursors lost: {set(before) - set(after)}"
    for key, instant in after.items():
        assert instant <= ran_until, f"{key} skipped ahead to {instant} (run ended {ran_until})"
        assert key not in before or instant >= before[key], f"{key} went back from {before[key]} to {instant}"
