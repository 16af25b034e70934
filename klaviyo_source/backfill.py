"""Chunked first loads: a long backfill committed window by window, so an interruption costs one chunk.

    pipeline = dlt.pipeline("klaviyo", destination=dlt.destinations.duckdb("klaviyo_data.duckdb"),
                            dataset_name="klaviyo")
    backfill(pipeline, start_date="2020-01-01", chunk_days=30)   # events and profiles, chunk by chunk
    pipeline.run(klaviyo_source(start_date="2020-01-01"))        # then everything, as every later run

Each chunk is one dlt run of the source with `until` at the chunk's end: its rows and its cursors are
committed together, so a run killed in chunk k leaves chunks 1..k-1 loaded and the cursors at the end of
k-1. Calling `backfill` again skips every chunk the cursors already cover and continues from there; on
a finished backfill (and on every scheduled run after it) it costs nothing. Chunks read on from the saved
cursor without the events lookback: late events are the concern of the regular runs, whose lookback
still re-reads the last day, and merging on the primary key keeps every row once either way.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

import dlt
from dlt.common.pipeline import LoadInfo
from dlt.common.typing import TRefreshMode

from klaviyo_source import ConfigurationError, klaviyo_source
from klaviyo_source.endpoints import BY_TABLE, Mode
from klaviyo_source.first_load import settle_appends
from klaviyo_source.summary import LOADER_FILE_FORMAT, load, restore_state
from klaviyo_source.windows import parse_instant

log = logging.getLogger("klaviyo_source")

# Tables big enough that a first load is worth committing in chunks.
CHUNKED_TABLES: tuple[str, ...] = ("events", "profiles")


def chunk_ends(start: datetime, days: float, now: datetime) -> Iterator[datetime]:
    """The ends of the chunks [start, start + days), ... that lie before `now` (the last run reads up to now)."""
    if days <= 0:
        raise ConfigurationError(f"chunk_days must be positive, got {days}.")
    step = timedelta(days=days)
    edge = start + step
    while edge < now:
        yield edge
        edge += step


def finish_pending(pipeline: dlt.Pipeline) -> LoadInfo | None:
    """Loads what a killed run left extracted or normalized.

    dlt's `run` loads pending packages and then returns without extracting the new data; finishing them
    first lets this run still read on, so the next run after a crash ends complete.
    """
    if not pipeline.has_pending_data:
        return None
    log.info("loading the data a previous run left pending")
    settle_appends(pipeline)
    info = pipeline.run(loader_file_format=LOADER_FILE_FORMAT)
    if info is not None:  # None when, after syncing with the destination, dlt had nothing left to load
        info.raise_on_failed_jobs()
    return info


def read_through(pipeline: dlt.Pipeline, tables: Sequence[str]) -> datetime | None:
    """The instant all `tables` have been read through (their smallest saved cursor), None if one has none."""
    resources = pipeline.state.get("sources", {}).get("klaviyo", {}).get("resources", {})
    cursors = [resources.get(table, {}).get("cursors", {}).get("") for table in tables]
    if not cursors or any(c is None for c in cursors):
        return None
    return min(parse_instant(c) for c in cursors)


def backfill(
    pipeline: dlt.Pipeline,
    start_date: str | datetime,
    chunk_days: float,
    tables: Sequence[str] = CHUNKED_TABLES,
    refresh: TRefreshMode | None = None,
    **source_options: Any,
) -> list[LoadInfo]:
    """Loads [start_date, now) of `tables` chunk by chunk, skipping the chunks already loaded.

    source_options go to `klaviyo_source` (api_key, base_url, concurrency, ...); `refresh` (e.g.
    "drop_sources") applies to the first chunk and makes the backfill start over.
    Returns the load info of each chunk this call loaded.
    """
    try:
        start = parse_instant(start_date)
    except (ValueError, TypeError) as exc:
        raise ConfigurationError(
            f"start_date {start_date!r} is not a date or datetime; use ISO 8601, e.g. 2024-01-31."
        ) from exc
    unfit = [t for t in tables if not _chunkable(t)]
    if unfit:
        raise ConfigurationError(f"Cannot backfill {', '.join(unfit)} in chunks; choose from {', '.join(CHUNKABLE)}.")
    finish_pending(pipeline)
    if not tables:
        return []
    if refresh is None:
        restore_state(pipeline)  # a new machine continues from the cursors in the destination
        done = read_through(pipeline, tables)
    else:
        done = None
    infos = []
    options = {**source_options, "start_date": start, "resources": list(tables), "events_lookback_hours": 0}
    for edge in chunk_ends(start, chunk_days, datetime.now(timezone.utc)):
        if done is not None and edge <= done:
            continue
        log.info("backfill chunk up to %s: %s", edge.isoformat(), ", ".join(tables))
        summary = load(pipeline, klaviyo_source(**options, until=edge), refresh)
        rows = {t.table: t.read for t in summary.tables.values() if t.read}
        log.info("backfill chunk up to %s loaded: %s", edge.isoformat(), describe_rows(rows))
        if summary.load_info is not None:
            infos.append(summary.load_info)
        refresh = None
    return infos


def _chunkable(table: str) -> bool:
    """One time cursor for the whole table: a windowed endpoint without parents or partitions."""
    endpoint = BY_TABLE.get(table)
    return bool(endpoint and endpoint.mode is Mode.WINDOW and not endpoint.parent and not endpoint.partitions)


CHUNKABLE = tuple(t for t in BY_TABLE if _chunkable(t))


def describe_rows(rows: dict[str, int]) -> str:
    return f"{sum(rows.values()):,} rows" + (": " + ", ".join(f"{t}={n:,}" for t, n in rows.items()) if rows else "")
