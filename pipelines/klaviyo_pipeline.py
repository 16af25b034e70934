"""Load a Klaviyo account with dlt: the command for scheduled runs, and `--demo` against the sandbox.

    python pipelines/klaviyo_pipeline.py --demo
    python pipelines/klaviyo_pipeline.py --start-date 2024-01-01     # into klaviyo_data.duckdb, schema klaviyo
    python pipelines/klaviyo_pipeline.py --destination postgres --resources events,profiles
    python pipelines/klaviyo_pipeline.py --transform                 # then the dbt models (klaviyo_dbt)

The API key comes from .dlt/secrets.toml ([sources.klaviyo] api_key) or SOURCES__KLAVIYO__API_KEY.
Every run then verifies itself against Klaviyo's own counts, repairs what differs and carries deletions over
(--no-verify skips that; --verify-only compares and reports without loading anything).
Exit status: 0 loaded, 1 the run failed, 2 bad arguments or configuration (a failure prints one line on stderr
that says what to fix), 3 loaded, but records that did not fit their table were set aside in table
set_aside_records (one line on stderr counts them), 4 --verify-only found the warehouse and Klaviyo differ,
75 another run holds the pipeline's or the dataset's lock (this run did nothing; see README "Scheduling").
A failed run loads nothing and moves no cursor: run it again, it continues where the last good run ended.
With --chunk-days an interrupted first load continues at its last chunk.
Each run ends with a summary per table (rows new or changed, re-read, requests, 429s, time) and a line of
what its verification compared, repaired and flagged, at INFO.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import dlt
from dlt.common.typing import TRefreshMode
from dlt.destinations.impl.duckdb.configuration import DuckDbCredentials

from klaviyo_dbt.runner import analytics_schema, dbt_installed
from klaviyo_source import (
    DATASET,
    DUCKDB_FILE,
    PIPELINE_NAME,
    TABLES,
    ConfigurationError,
    klaviyo_source,
    set_aside,
)
from klaviyo_source.backfill import CHUNKED_TABLES, backfill
from klaviyo_source.failures import EXIT_DIFFERS, EXIT_LOADED, EXIT_SET_ASIDE, describe, fold_dlt_tracebacks
from klaviyo_source.scheduling import KEEP_PACKAGES, scheduled_run
from klaviyo_source.summary import RunSummary, load
from klaviyo_source.verify import Report, verify

log = logging.getLogger("klaviyo_pipeline")

DEMO_DUCKDB_FILE = "klaviyo_demo.duckdb"
DEMO_PIPELINE_NAME = "klaviyo_demo"
# Pipeline working folders (state, pending packages) live beside what they load, in the folder the command
# runs in: two checkouts never share a pipeline's state, whatever user runs them (dlt's own default is
# ~/.dlt/pipelines, or /var/dlt/pipelines for root).
PIPELINES_DIR = os.path.join(".dlt", "pipelines")
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
# Campaign performance from the dbt models (klaviyo_dbt), in schema <dataset>_analytics.
DEMO_CAMPAIGNS = """
        with sent as (
            select campaign_id, sum(recipients) as recipients, sum(delivered) as delivered,
                   sum(opens_unique) as opened, sum(clicks_unique) as clicked
            from {schema}.klaviyo__message_performance
            where campaign_id is not null and conversion_metric_name = 'Placed Order'
            group by campaign_id
        )
        select c.campaign_name as campaign, c.channel, cast(c.send_time as date) as sent, s.recipients,
               round(100.0 * s.opened / nullif(s.delivered, 0), 1) as open_pct,
               round(100.0 * s.clicked / nullif(s.delivered, 0), 1) as click_pct,
               c.attributed_orders as orders, round(c.attributed_revenue, 2) as revenue
        from {schema}.klaviyo__campaigns c join sent s on s.campaign_id = c.campaign_id
        order by c.attributed_revenue desc, c.send_time desc limit 10"""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--demo", action="store_true", help="start the local Klaviyo sandbox and load it "
                        f"into {DEMO_DUCKDB_FILE}")
    parser.add_argument("--destination", default="duckdb", help="any dlt destination name (default duckdb)")
    parser.add_argument("--duckdb-file", default=None, help=f"DuckDB file (default {DUCKDB_FILE})")
    parser.add_argument("--duckdb-memory-limit", default="128MB",
                        help="DuckDB's memory limit while loading (default 128MB; it spills to disk beyond)")
    parser.add_argument("--dataset", default=DATASET, help=f"dataset (schema) of the tables (default {DATASET})")
    parser.add_argument("--pipeline-name", default=None, help=f"dlt pipeline name (default {PIPELINE_NAME})")
    parser.add_argument("--pipelines-dir", default=PIPELINES_DIR,
                        help=f"where dlt keeps the pipeline's working folder (default: {PIPELINES_DIR} in the "
                        f"current folder, here {os.path.abspath(PIPELINES_DIR)})")
    parser.add_argument("--resources", default=None, help=f"comma-separated tables, default all: {','.join(TABLES)}")
    parser.add_argument("--start-date", default=None, help="first run starts here (default: all history)")
    parser.add_argument("--end-date", default=None, help="load only [start, end) and leave cursors alone")
    parser.add_argument("--chunk-days", type=float, default=None,
                        help="commit a long first load of events/profiles in chunks of this many days")
    parser.add_argument("--events-lookback-hours", type=float, default=None,
                        help="re-read this much of the events before the cursor (default 24)")
    parser.add_argument("--concurrency", type=int, default=None,
                        help="at most this many requests in flight per endpoint (default: as the pace asks for)")
    parser.add_argument("--rate-share", type=float, default=None,
                        help="share of the account's rate limits to use, the rest is left to other integrations "
                        "(default 1.0)")
    parser.add_argument("--base-url", default=None, help="Klaviyo API base URL (default https://a.klaviyo.com/api)")
    parser.add_argument("--revision", default=None, help="Klaviyo API revision (default 2026-07-15)")
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
    parser.add_argument("--transform", action="store_true",
                        help="after a successful load, build the dbt models (klaviyo_dbt) on the same destination")
    parser.add_argument("--lock-wait", type=float, default=0.0, metavar="SECONDS",
                        help="wait this long for another run of the pipeline or into the dataset to end (default 0: "
                             "exit 75 at once)")
    parser.add_argument("--keep-packages", type=int, default=KEEP_PACKAGES, metavar="N",
                        help=f"completed load packages kept in the pipeline folder (default {KEEP_PACKAGES})")
    parser.add_argument("--no-verify", action="store_true", help="skip the verification after the load")
    parser.add_argument("--verify-only", action="store_true",
                        help="compare the warehouse with Klaviyo and report, loading nothing (exit 4 if they differ)")
    parser.add_argument("--deletions", choices=("soft", "hard"), default="soft",
                        help="rows Klaviyo deleted: soft sets deleted_at / removed_at (default), hard removes them "
                             "with their memberships and the events Klaviyo removed")
    parser.add_argument("--verify-days", type=float, default=None,
                        help="also verify this many days of events before the run's end (default 30)")
    parser.add_argument("--profile-sweep-hours", type=float, default=None,
                        help="hours between sweeps for deleted profiles (a request per 100 profiles; default: every "
                             "run up to 10,000 profiles, else daily)")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                        type=str.upper, help="INFO (default) shows progress and the run summary")
    return parser.parse_args(argv)


def source_options(args: argparse.Namespace) -> dict[str, Any]:
    """Arguments given on the command line; the others come from .dlt/ config, the environment or defaults."""
    options: dict[str, Any] = {
        "start_date": args.start_date,
        "end_date": args.end_date,
        "resources": args.resources,
        "events_lookback_hours": args.events_lookback_hours,
        "concurrency": args.concurrency,
        "rate_share": args.rate_share,
        "base_url": args.base_url,
        "revision": args.revision,
    }
    flags = ("members_full_refresh", "predictive_analytics", "skip_forbidden", "strict")
    options.update({flag: True for flag in flags if getattr(args, flag)})
    return {k: v for k, v in options.items() if v is not None}


def make_destination(args: argparse.Namespace) -> Any:
    """The destination the arguments name: a DuckDB file with a memory limit, PostgreSQL without row-id indexes."""
    destination: Any = args.destination
    if destination == "duckdb":
        path = os.path.abspath(args.duckdb_file or DUCKDB_FILE)
        catalog = os.path.splitext(os.path.basename(path))[0]
        if catalog == args.dataset:
            raise ConfigurationError(
                f"The DuckDB file {os.path.basename(path)} and the dataset {args.dataset!r} share a name, which "
                "DuckDB cannot tell apart in queries: pass another --duckdb-file or --dataset."
            )
        # DuckDB's own default (80% of RAM) let a 1M-event merge reach 2.4 GB; with a limit it spills to disk
        # instead (measured: 1M events at the same speed in ~400 MB), and unordered inserts need less memory.
        credentials = DuckDbCredentials(
            path,  # absolute: dlt would otherwise place a relative path where the pipeline first ran, not here
            global_config={"memory_limit": args.duckdb_memory_limit, "preserve_insertion_order": False},
        )
        destination = dlt.destinations.duckdb(credentials)
    elif destination == "postgres":
        destination = dlt.destinations.postgres(create_indexes=False)  # see .dlt/config.toml [destination.postgres]
    return destination


def locked_pipeline(args: argparse.Namespace) -> AbstractContextManager[dlt.Pipeline]:
    """The pipeline, held under its own lock and its dataset's (klaviyo_source.scheduling): what killed runs
    left is cleaned up or loaded first, completed packages beyond --keep-packages are pruned at the end."""
    return scheduled_run(args.pipeline_name or PIPELINE_NAME, pipelines_dir=os.path.abspath(args.pipelines_dir),
                         lock_wait=args.lock_wait, keep_packages=args.keep_packages,
                         destination=make_destination(args), dataset_name=args.dataset)


def written_places(args: argparse.Namespace) -> list[Path]:
    """Where a run writes: named when a full disk's error does not say which file it was writing."""
    places = [Path(args.pipelines_dir).absolute()]
    if args.destination == "duckdb":
        places.append(Path(args.duckdb_file or DUCKDB_FILE).absolute())
    return places


def verify_options(args: argparse.Namespace, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Arguments of `verify` for this command line: the same tables and connection, and the period a fixed
    interval or a chunked backfill covered."""
    options: dict[str, Any] = {
        "resources": args.resources,
        "skip_forbidden": args.skip_forbidden,
        "deletions": args.deletions,
        "repair": not args.verify_only,
        "since": args.start_date if (args.end_date or args.chunk_days) else None,
        "until": args.end_date,
        "verify_days": args.verify_days,
        "profile_sweep_hours": args.profile_sweep_hours,
        "concurrency": args.concurrency,
        "rate_share": args.rate_share,
        "base_url": args.base_url,
        "revision": args.revision,
        **{k: v for k, v in (extra or {}).items() if k in ("api_key", "base_url")},
    }
    return {k: v for k, v in options.items() if v is not None}


def check(args: argparse.Namespace, pipeline: dlt.Pipeline, extra: dict[str, Any] | None = None) -> Report:
    report = verify(pipeline, **verify_options(args, extra))
    if args.verify_only:
        print(report.summary())
        for item in report.differing:
            where = f" on {item.day}" if item.day else ""
            print(f"  {item.check} {item.table} {item.subject_name or item.subject_id or ''}{where}: "
                  f"Klaviyo {item.klaviyo}, warehouse {item.warehouse}")
    return report


def run(
    args: argparse.Namespace, extra: dict[str, Any] | None = None
) -> tuple[dlt.Pipeline, RunSummary | None, Report | None]:
    """One scheduled run under its locks: what a killed run left, the chunked first load if asked, then every
    chosen table, then its verification (None with --no-verify; no summary with --verify-only, which loads
    nothing)."""
    options = {**source_options(args), **(extra or {})}
    if args.chunk_days and not args.end_date and not args.start_date:
        raise ConfigurationError("--chunk-days needs --start-date (where the chunks begin).")
    make_destination(args)  # checks the names before the key
    source = klaviyo_source(**options)  # checks every argument, then the key, before anything is read or written
    refresh: TRefreshMode | None = "drop_sources" if args.full_refresh else None
    with locked_pipeline(args) as pipeline:
        if args.verify_only:
            pipeline.sync_destination()  # a fresh machine compares what the destination holds
            return pipeline, None, check(args, pipeline, extra)
        if args.chunk_days and not args.end_date:
            chosen = [t for t in CHUNKED_TABLES if not args.resources or t in args.resources.split(",")]
            shared = {k: v for k, v in options.items() if k not in ("start_date", "resources")}
            if backfill(pipeline, args.start_date, args.chunk_days, chosen, refresh, **shared):
                refresh = None
                source = klaviyo_source(**options)  # read on up to now, not to before the backfill
        summary = load(pipeline, source, refresh)
        log.info("%s", summary)
        report = None if args.no_verify else check(args, pipeline, extra)  # models are built on repaired tables
        if args.transform or (args.demo and dbt_installed()):  # the demo without the dbt extra loads only
            from klaviyo_dbt import build  # needs the dbt extra; the loader alone does not

            # under the locks: the models write into the same database, which one run at a time may write
            build(pipeline, full_refresh=args.full_refresh, quiet=logging.getLogger().level > logging.INFO)
    return pipeline, summary, report


@contextmanager
def demo_sandbox(args: argparse.Namespace) -> Iterator[dict[str, Any]]:
    from klaviyo_source.sandbox import Sandbox  # the connector itself never needs the sandbox

    # History ends a minute ago, so the first load is the whole account; the demo always loads anew.
    anchor = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(minutes=1)
    with Sandbox(seed=1, events=50_000, profiles=5_000, rate_limits="real", anchor=anchor) as sandbox:
        args.full_refresh = True
        args.duckdb_file = args.duckdb_file or DEMO_DUCKDB_FILE
        args.pipeline_name = args.pipeline_name or DEMO_PIPELINE_NAME
        print(f"Klaviyo sandbox at {sandbox.base_url} (seeded, 50,000 events, 5,000 profiles)")
        # Klaviyo allows 2 report calls a minute: the demo reads the last month of reports (2 calls per
        # report table), not the year a first run reads by default.
        yield {"api_key": sandbox.api_key, "base_url": sandbox.base_url, "reports_history_days": 30}


def print_demo_summary(pipeline: dlt.Pipeline, summary: RunSummary) -> None:
    path = str(getattr(pipeline.destination_client().config.credentials, "database", ""))
    print(f"\nLoaded into {path}, schema {pipeline.dataset_name}:")
    for table in summary.tables.values():
        print(f"  {table.table:<20} {table.read:>9,}")
    with pipeline.sql_client() as client:
        for title, sql in DEMO_QUERIES.items():
            print(f"\n-- {title}{sql};")
            for row in client.execute_sql(sql) or []:
                print("   ", " | ".join(str(v) for v in row))
        if dbt_installed():
            print_campaign_performance(client, analytics_schema(pipeline.dataset_name))
        else:
            print("\n-- Campaign performance: the analyst models need the dbt extra (pip install -e '.[dbt]')")
    python = os.path.relpath(sys.executable) if sys.executable.startswith(os.getcwd()) else sys.executable
    here = os.path.relpath(path) if path.startswith(os.getcwd()) else path
    print(f"\nQuery it yourself: {python} -m klaviyo_source.sql {here}")


def report_set_aside(pipeline: dlt.Pipeline, since: datetime) -> int:
    """One line on stderr when this invocation set records aside; the exit status that says so."""
    counts = set_aside.counts(pipeline, since)
    if not counts:
        return EXIT_LOADED
    per_table = ", ".join(f"{table} {n:,}" for table, n in counts.items())
    print(f"warning: {sum(counts.values()):,} record(s) did not fit their table and were set aside in table "
          f"{set_aside.TABLE} ({per_table}); everything else loaded", file=sys.stderr)
    return EXIT_SET_ASIDE


def replay(args: argparse.Namespace) -> int:
    """--replay-set-aside: 0 when every set-aside record loaded, 3 when some still do not fit."""
    with locked_pipeline(args) as pipeline:
        replayed, remaining = set_aside.replay(pipeline, args.resources.split(",") if args.resources else None)
    print(f"replayed {sum(replayed.values()):,} set-aside record(s)"
          + (f"; {sum(remaining.values()):,} still do not fit (see {set_aside.TABLE}.reason)" if remaining else ""),
          file=sys.stderr)
    return EXIT_SET_ASIDE if remaining else EXIT_LOADED


def print_campaign_performance(client: Any, schema: str) -> None:
    sql = DEMO_CAMPAIGNS.format(schema=schema)
    print(f"\n-- Campaign performance (dbt models, schema {schema}){sql};")
    with client.execute_query(sql) as cursor:
        header = [column[0] for column in cursor.description]
        rows = [[("" if v is None else str(v)) for v in row] for row in cursor.fetchall()]
    widths = [max(len(text) for text in column) for column in zip(header, *rows, strict=True)]
    for row in [header, *rows]:
        print("   ", " | ".join(text.ljust(width) for text, width in zip(row, widths, strict=True)))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)  # argparse itself exits 2 on unknown options
    if args.verify_only and (args.no_verify or args.demo or args.full_refresh):
        print("error: --verify-only loads nothing: leave out --no-verify, --demo and --full-refresh.", file=sys.stderr)
        return 2
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    fold_dlt_tracebacks()  # the error line below explains; dlt's tracebacks on the way are one line each
    started = datetime.now(timezone.utc)
    try:
        context: AbstractContextManager[dict[str, Any], bool | None] = nullcontext({})
        if args.demo:
            context = demo_sandbox(args)
        if args.replay_set_aside:
            return replay(args)
        with context as extra:
            pipeline, summary, report = run(args, extra)
            if args.verify_only:
                return EXIT_DIFFERS if report is not None and report.differing else 0
            if args.demo and summary is not None:
                print_demo_summary(pipeline, summary)
            return report_set_aside(pipeline, started)
    except Exception as exc:
        failure = describe(exc, places=written_places(args))
        log.debug("the failure in full", exc_info=exc)  # --log-level DEBUG shows the traceback
        print(f"error: {failure.message}", file=sys.stderr)
        return failure.exit_code


if __name__ == "__main__":
    sys.exit(main())
