"""Load a Klaviyo account with dlt: the command for scheduled runs, and `--demo` against the sandbox.

    python pipelines/klaviyo_pipeline.py --demo
    python pipelines/klaviyo_pipeline.py --start-date 2024-01-01              # DuckDB file klaviyo.duckdb
    python pipelines/klaviyo_pipeline.py --destination postgres --dataset klaviyo --resources events,profiles

The API key comes from .dlt/secrets.toml ([sources.klaviyo] api_key) or SOURCES__KLAVIYO__API_KEY.
Exit status: 0 loaded, 1 the run failed (one line on stderr says why), 2 bad arguments, 3 loaded, but records
that did not fit their table were set aside in table set_aside_records (one line on stderr counts them).
A failed run loads nothing and moves no cursor: run it again, it continues where the last good run ended.
With --chunk-days an interrupted first load continues at its last completed chunk.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from datetime import datetime, timedelta, timezone
from typing import Any

import dlt
from dlt.common.exceptions import DltException
from dlt.common.typing import TRefreshMode
from dlt.destinations.impl.duckdb.configuration import DuckDbCredentials
from dlt.pipeline.exceptions import PipelineStepFailed

from klaviyo_source import TABLES, ConfigurationError, KlaviyoSourceError, klaviyo_source, set_aside
from klaviyo_source.backfill import (
    CHUNKED_TABLES,
    LOADER_FILE_FORMAT,
    backfill,
    describe_rows,
    finish_pending,
    loaded_rows,
)

log = logging.getLogger("klaviyo_pipeline")

DEMO_QUERIES = {
    "Revenue by day (Placed Order)": """
        select date_trunc('day', e.datetime) as day, count(*) as orders,
               round(sum((e.event_properties->>'$."$value"')::double), 2) as revenue
        from events e join metrics m on m.id = e.metric_id
        where m.name = 'Placed Order'
        group by 1 order by 1 desc limit 5""",
    "Largest lists": """
        select l.name, count(*) as members, max(lm.joined_group_at) as last_join
        from list_members lm join lists l on l.id = lm.list_id
        group by 1 order by 2 desc limit 5""",
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--demo", action="store_true", help="start the local Klaviyo sandbox and load it")
    parser.add_argument("--destination", default="duckdb", help="any dlt destination name (default duckdb)")
    parser.add_argument("--duckdb-file", default=None, help="DuckDB file (default <pipeline name>.duckdb)")
    parser.add_argument("--duckdb-memory-limit", default="128MB",
                        help="DuckDB's memory limit while loading (default 128MB; it spills to disk beyond)")
    parser.add_argument("--dataset", default="klaviyo", help="dataset (schema) name")
    parser.add_argument("--pipeline-name", default="klaviyo")
    parser.add_argument("--pipelines-dir", default=None, help="dlt's working folder (default ~/.dlt/pipelines)")
    parser.add_argument("--resources", default=None, help=f"comma-separated tables, default all: {','.join(TABLES)}")
    parser.add_argument("--start-date", default=None, help="first run starts here (default: all history)")
    parser.add_argument("--end-date", default=None, help="load only [start, end) and leave cursors alone")
    parser.add_argument("--chunk-days", type=float, default=None,
                        help="commit a long first load of events/profiles in chunks of this many days")
    parser.add_argument("--events-lookback-hours", type=float, default=None)
    parser.add_argument("--concurrency", type=int, default=None,
                        help="at most this many requests in flight per endpoint (default: as the pace asks for)")
    parser.add_argument("--members-full-refresh", action="store_true",
                        help="re-read whole memberships so removed members disappear")
    parser.add_argument("--predictive-analytics", action="store_true")
    parser.add_argument("--skip-forbidden", action="store_true", help="skip tables the key has no scope for")
    parser.add_argument("--replay-set-aside", action="store_true",
                        help="load the records of table set_aside_records that fit now (after an upgrade, or after "
                             "correcting their raw JSON) into their tables, and do nothing else")
    parser.add_argument("--strict", action="store_true",
                        help="a record that does not fit its table fails the run (default: it is set aside in "
                             "table set_aside_records and the rest loads)")
    parser.add_argument("--full-refresh", action="store_true", help="drop the tables and cursors, load anew")
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING, ERROR")
    return parser.parse_args(argv)


def source_options(args: argparse.Namespace) -> dict[str, Any]:
    options: dict[str, Any] = {
        "start_date": args.start_date,
        "end_date": args.end_date,
        "resources": args.resources,
        "members_full_refresh": args.members_full_refresh,
        "predictive_analytics": args.predictive_analytics,
        "skip_forbidden": args.skip_forbidden,
        "strict": args.strict or None,
    }
    if args.events_lookback_hours is not None:
        options["events_lookback_hours"] = args.events_lookback_hours
    if args.concurrency is not None:
        options["concurrency"] = args.concurrency
    return {k: v for k, v in options.items() if v is not None}


def make_pipeline(args: argparse.Namespace) -> dlt.Pipeline:
    destination: Any = args.destination
    if destination == "duckdb":
        # DuckDB's own default (80% of RAM) let a 1M-event merge reach 2.4 GB; with a limit it spills to disk
        # instead (measured: 1M events at the same speed in ~400 MB), and unordered inserts need less memory.
        credentials = DuckDbCredentials(
            # absolute: dlt would otherwise place a relative path where the pipeline first ran, not here
            os.path.abspath(args.duckdb_file or f"{args.pipeline_name}.duckdb"),
            global_config={"memory_limit": args.duckdb_memory_limit, "preserve_insertion_order": False},
        )
        destination = dlt.destinations.duckdb(credentials)
    options: dict[str, Any] = {"pipelines_dir": args.pipelines_dir} if args.pipelines_dir else {}
    return dlt.pipeline(
        pipeline_name=args.pipeline_name, destination=destination, dataset_name=args.dataset, **options
    )


def run(args: argparse.Namespace, extra: dict[str, Any] | None = None) -> dlt.Pipeline:
    """One scheduled run: what a killed run left, the chunked first load if asked, then every chosen table."""
    options = {**source_options(args), **(extra or {})}
    pipeline = make_pipeline(args)
    refresh: TRefreshMode | None = "drop_sources" if args.full_refresh else None
    finish_pending(pipeline)
    if args.chunk_days and not args.end_date:
        if not args.start_date:
            raise ConfigurationError("--chunk-days needs --start-date (where the chunks begin).")
        chosen = [t for t in CHUNKED_TABLES if not args.resources or t in args.resources.split(",")]
        shared = {k: v for k, v in options.items() if k not in ("start_date", "resources")}
        if backfill(pipeline, args.start_date, args.chunk_days, chosen, refresh, **shared):
            refresh = None
    load(pipeline, klaviyo_source(**options), refresh)
    return pipeline


def load(pipeline: dlt.Pipeline, source: Any, refresh: TRefreshMode | None) -> None:
    started = time.monotonic()
    # dlt annotates refresh without None, though None (its default) means no refresh
    info = pipeline.run(source, refresh=refresh, loader_file_format=LOADER_FILE_FORMAT)  # type: ignore[arg-type]
    log.info("loaded %s in %.1f s", describe_rows(loaded_rows(pipeline)), time.monotonic() - started)
    info.raise_on_failed_jobs()


def root_cause(exc: BaseException) -> BaseException:
    """dlt wraps a source's error in step and extraction errors; users need the innermost one."""
    seen = exc
    while True:
        nxt = seen.__cause__ or seen.__context__
        if isinstance(seen, KlaviyoSourceError) or nxt is None:
            return seen
        seen = nxt


def one_line(exc: BaseException) -> str:
    """The message a scheduler shows: the innermost error's first line, and where it happened."""
    cause = root_cause(exc)
    if isinstance(cause, KlaviyoSourceError):
        return str(cause)
    first = next((line.strip() for line in str(cause).splitlines() if line.strip()), type(cause).__name__)
    step = getattr(exc, "step", None)
    if step in ("load", "sync"):
        after = ("nothing was read or loaded" if step == "sync"
                 else "what was read waits in the pipeline folder and the next run loads it first")
        return (f"the destination failed ({step} step): {first} - check its credentials and that it is reachable; "
                f"{after}.")
    where = f"{step} step: " if step else ""
    return f"{where}{type(cause).__name__}: {first}"


@contextmanager
def demo_sandbox(args: argparse.Namespace) -> Iterator[dict[str, Any]]:
    from klaviyo_source.sandbox import Sandbox  # the connector itself never needs the sandbox

    # History ends a minute ago, so the first load is the whole account; the demo always loads anew.
    anchor = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(minutes=1)
    with Sandbox(seed=1, events=50_000, profiles=5_000, rate_limits="real", anchor=anchor) as sandbox:
        args.full_refresh = True
        args.duckdb_file = args.duckdb_file or "klaviyo_demo.duckdb"
        args.pipeline_name = "klaviyo_demo" if args.pipeline_name == "klaviyo" else args.pipeline_name
        print(f"Klaviyo sandbox at {sandbox.base_url} (seeded, 50,000 events, 5,000 profiles)")
        yield {"api_key": sandbox.api_key, "base_url": sandbox.base_url}


def print_demo_summary(pipeline: dlt.Pipeline) -> None:
    with pipeline.sql_client() as client:
        print(f"\nLoaded into {pipeline.destination_client().config} dataset {pipeline.dataset_name}:")
        for table in TABLES:
            try:
                count = (client.execute_sql(f"select count(*) from {table}") or [[0]])[0][0]
            except Exception:  # a table the run did not create
                continue
            print(f"  {table:<20} {count:>9,}")
        for title, sql in DEMO_QUERIES.items():
            print(f"\n-- {title}{sql};")
            for row in client.execute_sql(sql) or []:
                print("   ", " | ".join(str(v) for v in row))
    file = pipeline.destination_client().config.credentials
    where = getattr(file, "database", file)
    print(f"\nTry it yourself: duckdb {where}  (tables are in schema {pipeline.dataset_name})")


def report_set_aside(pipeline: dlt.Pipeline, since: datetime) -> int:
    """One line on stderr when this invocation set records aside; the exit status that says so."""
    counts = set_aside.counts(pipeline, since)
    if not counts:
        return 0
    per_table = ", ".join(f"{table} {n:,}" for table, n in counts.items())
    print(f"warning: {sum(counts.values()):,} record(s) did not fit their table and were set aside in table "
          f"{set_aside.TABLE} ({per_table}); everything else loaded", file=sys.stderr)
    return 3


def replay(args: argparse.Namespace) -> int:
    """--replay-set-aside: 0 when every set-aside record loaded, 3 when some still do not fit."""
    pipeline = make_pipeline(args)
    replayed, remaining = set_aside.replay(pipeline, args.resources.split(",") if args.resources else None)
    print(f"replayed {sum(replayed.values()):,} set-aside record(s)"
          + (f"; {sum(remaining.values()):,} still do not fit (see {set_aside.TABLE}.reason)" if remaining else ""),
          file=sys.stderr)
    return 3 if remaining else 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    started = datetime.now(timezone.utc)
    try:
        context: AbstractContextManager[dict[str, Any]] = demo_sandbox(args) if args.demo else nullcontext({})
        if args.replay_set_aside:
            return replay(args)
        with context as extra:
            pipeline = run(args, extra)
            if args.demo:
                print_demo_summary(pipeline)
            return report_set_aside(pipeline, started)
    except (KlaviyoSourceError, PipelineStepFailed, DltException) as exc:
        log.debug("the failure in full", exc_info=exc)  # --log-level DEBUG shows the traceback
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return 2 if isinstance(root_cause(exc), ConfigurationError) else 1


if __name__ == "__main__":
    sys.exit(main())
