"""Fixtures for end-to-end runs: a sandbox over real HTTP, a pipeline into DuckDB (or PostgreSQL), and
helpers to compare every table with the sandbox's ground truth."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from datetime import time as midnight
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import dlt
import pytest
import requests

from klaviyo_source import TABLES, klaviyo_source
from klaviyo_source import client as client_module
from klaviyo_source.client import RetryPolicy
from klaviyo_source.endpoints import BY_TABLE
from klaviyo_source.sandbox import Sandbox
from klaviyo_source.verify import Report, verify
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

MEMBER_KEYS = {"list_members": ("list_id", "profile_id"), "segment_members": ("segment_id", "profile_id"),
               "event_attributions": ("id", "event_id", "attributed_event_id", "campaign_id", "campaign_message_id",
                                      "flow_id", "flow_message_id", "flow_message_variation_id")}
REPORT_TABLES = tuple(t for t, e in BY_TABLE.items() if e.report is not None)
ID_TABLES = tuple(t for t in TABLES if t not in REPORT_TABLES)  # compared with the ground truth's ids


# For the CLI in its own process (tests/integration/cli_driver.py lifts the report pace there too): 20 days of
# reports take 1 or 2 calls a table instead of a year's 13, which these tests do not need.
SHORT_REPORT_HISTORY = {"SOURCES__KLAVIYO__REPORTS_HISTORY_DAYS": "20"}


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

    def verify(self, **options: Any) -> Report:
        """The verification a scheduled run does after its load (klaviyo_source.verify)."""
        options.setdefault("api_key", self.sandbox.api_key)
        options.setdefault("base_url", self.sandbox.base_url)
        return verify(self.pipeline(), **options)

    def held(self, table: str) -> list[Any]:
        """Keys of the rows the table holds: not soft-deleted (`deleted_at`) or ended (`removed_at`)."""
        columns = self.pipeline().default_schema.get_table_columns(table)
        live = " and ".join(f"{c} is null" for c in ("deleted_at", "removed_at") if c in columns) or "true"
        keys = ", ".join(MEMBER_KEYS.get(table, ("id",)))
        with self.pipeline().sql_client() as client:
            rows = [tuple(r) for r in client.execute_sql(f"select {keys} from {table} where {live}")]
        return rows if table in MEMBER_KEYS else [r[0] for r in rows]

    def rows(self, table: str, columns: str = "id") -> list[tuple[Any, ...]]:
        with self.pipeline().sql_client() as client:
            return [tuple(r) for r in client.execute_sql(f"select {columns} from {table}")]

    def keys(self, table: str) -> list[Any]:
        if table in MEMBER_KEYS:
            return self.rows(table, ", ".join(MEMBER_KEYS[table]))
        if table in REPORT_TABLES:
            return self.rows(table, ", ".join(BY_TABLE[table].primary_key))
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
def postgres_loader(sandbox: Sandbox, tmp_path: Path) -> Iterator[Loader]:
    """A loader into its own dataset, dropped afterwards: each dataset left behind makes every later connection
    slower (ADBC reads the whole catalog of column types when it connects)."""
    dsn = os.environ.get("KLAVIYO_TEST_POSTGRES_DSN")
    if not dsn:
        pytest.skip("KLAVIYO_TEST_POSTGRES_DSN is not set (.ci/run starts a PostgreSQL server and sets it)")
    loader = Loader(sandbox, dlt.destinations.postgres(dsn), tmp_path)
    yield loader
    drop_dataset(loader)


def drop_dataset(loader: Loader) -> None:
    """Drops a PostgreSQL loader's dataset and the staging dataset of its merges; DuckDB files go with tmp_path."""
    if isinstance(loader.destination, dlt.destinations.postgres):
        with loader.pipeline().sql_client() as client:
            for schema in (loader.dataset, f"{loader.dataset}_staging"):
                client.execute_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def assert_matches_ground_truth(loader: Loader, tables: list[str] | None = None,
                                set_aside: dict[str, int] | None = None) -> dict[str, int]:
    """Every table holds exactly the sandbox's ids: none missing, none extra, none twice.

    `set_aside`: records per table known to be in `set_aside_records`; at most that many may be missing.
    """
    truth = loader.sandbox.ground_truth(until=loader.events_until())
    checked: dict[str, int] = {}
    for table in tables or ID_TABLES:
        keys = loader.keys(table)
        assert len(keys) == len(set(keys)), f"{table}: duplicated keys"
        expected = truth[table]
        missing, extra = expected - set(keys), set(keys) - expected
        assert len(missing) <= (set_aside or {}).get(table, 0) and not extra, \
            f"{table}: {len(missing)} missing, {len(extra)} extra, {(set_aside or {}).get(table, 0)} set aside"
        checked[table] = len(keys)
    return checked


def assert_held_equals_ground_truth(loader: Loader, tables: list[str] | None = None) -> dict[str, int]:
    """The rows each table holds (deleted and removed ones left out) are exactly the sandbox's, and so are
    their change markers and each event's profile: edits and merges arrived too."""
    truth = loader.sandbox.ground_truth(until=loader.events_until())
    versions = loader.sandbox.versions()
    checked: dict[str, int] = {}
    for table in tables or ID_TABLES:
        keys = loader.held(table)
        assert len(keys) == len(set(keys)), f"{table}: duplicated keys"
        missing, extra = truth[table] - set(keys), set(keys) - truth[table]
        assert not missing and not extra, f"{table}: {len(missing)} missing, {len(extra)} extra"
        checked[table] = len(keys)
        marker = {"campaigns": "updated_at", "campaign_messages": "updated_at", "events": "profile_id"}.get(
            table, "updated")
        if table in versions:
            held = dict(loader.rows(table, f"id, {marker}"))
            same = (lambda a, b: a == b) if marker == "profile_id" else (
                lambda a, b: a is not None and parse_instant(a) == parse_instant(b))
            wrong = [i for i in keys if i in versions[table] and not same(held[i], versions[table][i])]
            assert not wrong, f"{table}: {len(wrong)} rows differ in {marker}, e.g. {wrong[:1]}"
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


# --- report tables ------------------------------------------------------------------------------------------

Frame = tuple[date, date]  # days [start, end) in the account's timezone


def report_until(loader: Loader, table: str) -> datetime:
    """The instant the last run read a report table through (its run's upper bound)."""
    resources = loader.pipeline().state["sources"]["klaviyo"]["resources"]
    return parse_instant(resources[table]["read_through"])


def account_facts(sandbox: Sandbox) -> tuple[ZoneInfo, str]:
    """The account's timezone and the id of its Placed Order metric, as a client reads them."""
    headers = {"Authorization": f"Klaviyo-API-Key {sandbox.api_key}", "revision": "2026-07-15"}
    account = requests.get(sandbox.base_url + "/accounts", headers=headers, timeout=30).json()["data"][0]
    metrics = requests.get(sandbox.base_url + "/metrics", headers=headers, timeout=30).json()["data"]
    placed = next(m["id"] for m in metrics if m["attributes"]["name"] == "Placed Order")
    return ZoneInfo(account["attributes"]["timezone"]), placed


def report_frames(table: str, lo: datetime, hi: datetime, tz: ZoneInfo) -> list[Frame]:
    """The months (values reports) or days (series reports) that [lo, hi) touches."""
    report = BY_TABLE[table].report
    assert report is not None
    first, last = lo.astimezone(tz).date(), (hi - timedelta(microseconds=1)).astimezone(tz).date()
    if report.earliest:
        first = max(first, report.earliest)
    if report.interval:
        return [(first + timedelta(days=k), first + timedelta(days=k + 1)) for k in range((last - first).days + 1)]
    months, day = [], first.replace(day=1)
    while day <= last:
        following = (day + timedelta(days=32)).replace(day=1)
        months.append((day, following))
        day = following
    return months


def report_truth(sandbox: Sandbox, table: str, frames: list[Frame], until: datetime
                 ) -> dict[Frame, set[tuple[Any, ...]]]:
    """The rows each frame of a report table should hold, from the sandbox's report ground truth, in the
    column order of `report_columns`; a frame's last instant is cut at `until` as the run cut it."""
    report = BY_TABLE[table].report
    assert report is not None
    tz, placed = account_facts(sandbox)

    def local(day: date) -> str:
        return min(datetime.combine(day, midnight(), tz), until.astimezone(tz)).isoformat()

    out: dict[Frame, set[tuple[Any, ...]]] = {frame: set() for frame in frames}
    chunks = ([frames[k:k + 60] for k in range(0, len(frames), 60)] if report.interval else [[f] for f in frames])
    for chunk in chunks:
        attributes: dict[str, Any] = {"statistics": list(report.statistics),
                                      "timeframe": {"start": local(chunk[0][0]), "end": local(chunk[-1][1])}}
        if report.conversion:
            attributes.update(conversion_metric_id=placed, group_by=list(report.groupings))
        if report.interval:
            attributes["interval"] = report.interval
        answer = sandbox.report(report.type, attributes)
        for result in answer["results"]:
            key = tuple(result["groupings"][g] for g in report.groupings) + ((placed,) if report.conversion else ())
            stats = result["statistics"]
            if report.interval:
                for k, stamp in enumerate(answer["date_times"]):
                    day = datetime.fromisoformat(stamp).date()
                    values = tuple(stats[s][k] for s in report.statistics)
                    if any(values):  # days a grouping had nothing are no rows
                        out[(day, day + timedelta(days=1))].add((*key, day, *values))
            else:
                out[chunk[0]].add((*key, chunk[0][0], *(stats[s] for s in report.statistics)))
    return out


def report_columns(table: str) -> str:
    report = BY_TABLE[table].report
    assert report is not None
    return ", ".join((*report.groupings, *report.period, *report.statistics))


def assert_report_rows(loader: Loader, table: str, expected: dict[Frame, set[tuple[Any, ...]]]) -> int:
    """The table holds exactly the expected rows of every frame (none missing, none extra, none twice)."""
    rows = loader.rows(table, report_columns(table))
    assert len(rows) == len(set(rows)), f"{table}: duplicated rows"
    want = set().union(*expected.values())
    missing, extra = want - set(rows), set(rows) - want
    assert not missing and not extra, (f"{table}: {len(missing)} missing, {len(extra)} extra",
                                       sorted(missing, key=str)[:2], sorted(extra, key=str)[:2])
    return len(rows)


def assert_reports_match_ground_truth(loader: Loader, history: timedelta = timedelta(days=365)) -> dict[str, int]:
    """After a first run: every report table holds Klaviyo's figures for every timeframe of its history."""
    checked = {}
    for table in REPORT_TABLES:
        until = report_until(loader, table)
        frames = report_frames(table, until - history, until, account_facts(loader.sandbox)[0])
        checked[table] = assert_report_rows(loader, table, report_truth(loader.sandbox, table, frames, until))
    return checked
