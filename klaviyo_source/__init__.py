"""Klaviyo source for dlt: every resource of a Klaviyo account, incremental, at Klaviyo's rate limits.

    import dlt
    from klaviyo_source import klaviyo_source
    from klaviyo_source.summary import load

    pipeline = dlt.pipeline("klaviyo", destination=dlt.destinations.duckdb("klaviyo_data.duckdb"),
                            dataset_name="klaviyo")
    print(load(pipeline, klaviyo_source(start_date="2024-01-01")))   # or pipeline.run(...)
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import re
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from urllib.parse import urlsplit

import dlt
from dlt.common.configuration.container import Container
from dlt.common.pipeline import PipelineContext
from dlt.extract.resource import DltResource

from klaviyo_source.client import KlaviyoClient
from klaviyo_source.concurrency import Budget
from klaviyo_source.endpoints import BY_TABLE, INCLUDED_BY, INCLUDED_TABLES, NEWEST_REVISION, OLDEST_REVISION
from klaviyo_source.errors import ConfigurationError, KlaviyoAPIError, KlaviyoSourceError
from klaviyo_source.first_load import settle_appends
from klaviyo_source.rate_limit import GovernorRegistry
from klaviyo_source.reports import DEFAULT_CONVERSION_METRIC, AccountFacts, ReportSettings
from klaviyo_source.resources import MAX_CHAINS, RunContext, build_resources
from klaviyo_source.rows import SHAPES
from klaviyo_source.windows import parse_instant

__all__ = [
    "DATASET",
    "DEFAULT_BASE_URL",
    "DEFAULT_REVISION",
    "DUCKDB_FILE",
    "PIPELINE_NAME",
    "TABLES",
    "ConfigurationError",
    "KlaviyoAPIError",
    "KlaviyoSourceError",
    "klaviyo_source",
]

class _ArrowJsonHintNotice(logging.Filter):
    """Drops dlt's per-page warning that our Arrow tables' JSON columns are strings in Arrow.

    That is by design (JSON text in Arrow, a JSON column in the destination), so for our Arrow tables the
    warning would only repeat itself on every run; other resources' warnings pass.
    """

    _ours = tuple(f"In resource: {table}," for table in SHAPES)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not ("merging arrow schema with dlt schema" in message and message.startswith(self._ours))


logging.getLogger("dlt").addFilter(_ArrowJsonHintNotice())

DEFAULT_BASE_URL = "https://a.klaviyo.com/api"
DEFAULT_REVISION = "2026-07-15"
TABLES: tuple[str, ...] = (*BY_TABLE, *INCLUDED_TABLES)
# The names the command line, the README and the SQL session use: a DuckDB file whose name differs from the
# dataset (DuckDB cannot tell catalog `klaviyo` from schema `klaviyo` apart: "Ambiguous reference").
PIPELINE_NAME = "klaviyo"
DATASET = "klaviyo"
DUCKDB_FILE = "klaviyo_data.duckdb"
_REVISION = re.compile(r"^\d{4}-\d{2}-\d{2}(\.[a-z]+)?$")


@dlt.source(name="klaviyo", max_table_nesting=0)
def klaviyo_source(
    api_key: str | None = dlt.secrets.value,
    start_date: str | datetime | None = None,
    end_date: str | datetime | None = None,
    base_url: str = DEFAULT_BASE_URL,
    revision: str = DEFAULT_REVISION,
    resources: Sequence[str] | None = None,
    events_lookback_hours: float = 24.0,
    predictive_analytics: bool = False,
    members_full_refresh: bool = False,
    concurrency: int | None = None,
    rate_share: float = 1.0,
    skip_forbidden: bool = False,
    until: str | datetime | None = None,
    strict: bool = False,
    event_attributions: bool = True,
    reports_conversion_metric: str = DEFAULT_CONVERSION_METRIC,
    reports_lookback_days: float = 30.0,
    reports_history_days: float = 365.0,
    reports_daily_share: float = 0.2,
) -> list[DltResource]:
    """Every Klaviyo table, or those named in `resources`.

    start_date: where a first run starts (None: all history). Later runs continue from their cursors.
    end_date: read the fixed interval [start_date, end_date) and leave the cursors alone (backfills,
        orchestrator intervals); without it a run reads up to its own start and saves that as its cursor.
    events_lookback_hours: each run re-reads this much of the events before its cursor, for late events.
    predictive_analytics: also load profiles' predictive analytics (Klaviyo then allows 10x fewer requests).
    members_full_refresh: re-read whole list and segment memberships and replace them, so removals show.
    concurrency: at most this many requests in flight per endpoint. None (default): as many as the pace
        asks for, i.e. the rate Klaviyo allows times the latency of its answers, within a memory budget.
    rate_share: the share of the account's rate limits this source may use (the rest stays for the
        account's other integrations).
    skip_forbidden: a table the key has no scope for is skipped with a warning instead of failing the run.
    until: cursors advance only up to this instant (chunked backfills); default: the run's start.
    strict: a record that does not fit its table (sent the same way twice) fails the run, loading nothing;
        by default it is set aside in table `set_aside_records` and the rest of its page loads.
    event_attributions: read the events with their attributions (include=attributions) into event_attributions;
        False reads the events alone.
    reports_*: the report tables (reports.py): the conversion metric their conversion figures count (a metric
        name or id), the days each run re-reads (conversions are attributed days after a send), the days a
        first run reads when start_date is not given, and the share of each reporting endpoint's 225 daily
        calls this source may use in a day (what does not fit is deferred to the next run).

    Arguments are checked before the key, and nothing is requested before the run starts. Every table,
    Arrow ones included, gets dlt's per-row load marker `_dlt_load_id`.
    """
    now = datetime.now(timezone.utc).replace(microsecond=0)
    start = _instant("start_date", start_date)
    end = _instant("end_date", end_date)
    stop = _instant("until", until)
    if end is not None and stop is not None:
        raise ConfigurationError("Pass either end_date (a fixed interval) or until (a chunk of a backfill), not both.")
    upper = min(end or stop or now, now)
    if start is not None and start >= upper:
        raise ConfigurationError(
            f"start_date {start.isoformat()} is not before {'end_date' if end else 'now'} ({upper.isoformat()})."
        )
    if events_lookback_hours < 0:
        raise ConfigurationError(f"events_lookback_hours must not be negative, got {events_lookback_hours}.")
    tables = _tables(resources)
    if not event_attributions and resources is not None and "event_attributions" in _names(resources):
        raise ConfigurationError("resources names event_attributions, which event_attributions=False leaves out.")
    reports = ReportSettings(reports_conversion_metric, reports_lookback_days, reports_history_days,
                             reports_daily_share)
    reports.check()
    ctx = make_context(
        api_key, base_url, revision, rate_share, concurrency, skip_forbidden,
        start=start,
        until=upper,
        stateless=end is not None,
        overlaps={"events": timedelta(hours=events_lookback_hours)},
        predictive_analytics=predictive_analytics,
        members_full_refresh=members_full_refresh,
        strict=strict,
        reports=reports,
        without=frozenset(() if event_attributions else ("event_attributions",)),
    )
    _settle_pending()
    return build_resources(ctx, tables)


def make_context(
    api_key: str | None,
    base_url: str,
    revision: str,
    rate_share: float,
    concurrency: int | None,
    skip_forbidden: bool,
    *,
    until: datetime,
    start: datetime | None = None,
    stateless: bool = False,
    overlaps: dict[str, timedelta] | None = None,
    predictive_analytics: bool = False,
    members_full_refresh: bool = False,
    strict: bool = False,
    reports: ReportSettings | None = None,
    without: frozenset[str] = frozenset(),
) -> RunContext:
    """What every reader of one run shares (client, governors, bounds), after checking the connection
    arguments (the key last: a bad argument is reported even without a key); `klaviyo_source` and
    verification (verify.py) build theirs here."""
    _check_base_url(base_url)
    if not _REVISION.match(revision or ""):
        raise ConfigurationError(f"revision {revision!r} is not a Klaviyo revision like {DEFAULT_REVISION!r}.")
    if not OLDEST_REVISION <= revision <= NEWEST_REVISION or "." in revision:
        raise ConfigurationError(
            f"revision {revision} has not been tested with this source: use one from {OLDEST_REVISION} to "
            f"{NEWEST_REVISION} (default {DEFAULT_REVISION}, no beta '.pre' revisions)."
        )
    if not 0 < rate_share <= 1:
        raise ConfigurationError(f"rate_share must be in (0, 1], got {rate_share}.")
    if concurrency is not None and not 1 <= int(concurrency) <= MAX_CHAINS:
        raise ConfigurationError(f"concurrency must be between 1 and {MAX_CHAINS} (or unset), got {concurrency}.")
    _check_key(api_key)

    # dlt adds `_dlt_load_id` to the rows it normalizes, but not to Arrow tables unless this is on: downstream
    # models key on it (which rows did a load add?), so the source turns it on wherever it runs.
    dlt.config["normalize.parquet_normalizer.add_dlt_load_id"] = True
    assert api_key is not None  # _check_key
    client = KlaviyoClient(api_key, base_url, revision)
    governors = _governors(api_key, base_url, rate_share)
    reports = reports or ReportSettings()
    return RunContext(
        client=client,
        governors=governors,
        start=start,
        until=until,
        stateless=stateless,
        concurrency=None if concurrency is None else int(concurrency),
        budget=Budget(),
        overlaps=overlaps or {},
        predictive_analytics=predictive_analytics,
        skip_forbidden=skip_forbidden,
        members_full_refresh=members_full_refresh,
        revision=revision,
        strict=strict,
        reports=reports,
        account=AccountFacts(client, governors, reports),
        without=without,
    )


def _settle_pending() -> None:
    """`pipeline.run(klaviyo_source(...))` loads what a killed run left before anything else: make that safe.

    The source is built before the run starts, so this is the last moment before dlt loads it (see
    first_load.settle_appends). Only the active pipeline is looked at; none is created.
    """
    context = Container()[PipelineContext]
    if context.is_active():
        pipeline = context.pipeline()
        if isinstance(pipeline, dlt.Pipeline) and pipeline.has_pending_data:
            settle_appends(pipeline)


_REGISTRIES: dict[tuple[str, str, float], GovernorRegistry] = {}


def _governors(api_key: str, base_url: str, rate_share: float) -> GovernorRegistry:
    """Klaviyo counts requests per account, not per source instance: runs in one process share governors."""
    account = hashlib.sha256(api_key.encode()).hexdigest()  # a digest, so the key is not kept as a dict key
    return _REGISTRIES.setdefault((base_url, account, rate_share), GovernorRegistry(rate_share))


def _instant(name: str, value: str | datetime | None) -> datetime | None:
    if value is None or value == "":
        return None
    try:
        return parse_instant(value)
    except (ValueError, TypeError) as exc:
        raise ConfigurationError(
            f"{name} {value!r} is not a date or datetime; use ISO 8601, e.g. 2024-01-31 or 2024-01-31T12:00:00Z."
        ) from exc


def _check_key(api_key: str | None) -> None:
    """The key is optional in the signature only so that a missing key gets this message, not dlt's."""
    where = "set [sources.klaviyo] api_key in .dlt/secrets.toml or SOURCES__KLAVIYO__API_KEY to your private API key"
    if api_key is None:
        raise ConfigurationError(f"No Klaviyo API key: {where}.")
    if not isinstance(api_key, str) or not api_key.strip() or api_key.strip() != api_key:
        raise ConfigurationError(f"api_key is empty or has surrounding spaces: {where}.")


def _check_base_url(base_url: str) -> None:
    """HTTPS only, so the key never travels in clear text; plain HTTP only to this machine (the sandbox)."""
    parts = urlsplit(base_url or "")
    if parts.scheme == "https" and parts.hostname:
        return
    if parts.scheme == "http" and parts.hostname and _is_loopback(parts.hostname):
        return
    raise ConfigurationError(
        f"base_url {base_url!r} must be an https:// URL (plain http:// only for 127.0.0.1 or localhost)."
    )


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _names(resources: Sequence[str]) -> list[str]:
    if isinstance(resources, str):
        return [r.strip() for r in resources.split(",") if r.strip()]
    return list(resources)


def _tables(resources: Sequence[str] | str | None) -> list[str]:
    if resources is None:
        return list(TABLES)
    resources = _names(resources)
    unknown = [r for r in resources if r not in TABLES]
    if unknown:
        raise ConfigurationError(f"Unknown resource(s) {', '.join(unknown)}; choose from: {', '.join(TABLES)}.")
    # campaign_messages arrive with campaigns, event_attributions with events: asking for one reads the other.
    chosen = {INCLUDED_BY.get(r, r) for r in resources}
    return [t for t in BY_TABLE if t in chosen]
