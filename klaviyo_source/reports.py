"""Klaviyo's reporting API as tables: which timeframes a run asks for, the POST bodies, the daily budget.

The reporting endpoints answer with the figures Klaviyo's UI shows, counted by send date in the account's
timezone, and they are expensive: 1 request/s, 2/min and 225/day per endpoint, shared with every other
integration of the account. So each run plans its calls (endpoints.Report says what is asked for):

- It re-reads the last `lookback_days` (conversions are attributed days after a send, opens and clicks keep
  coming) plus anything not read since the last run; a first run reads `history_days` back (or from
  `start_date`). Segment reports have no data before 2023-06-01.
- Values reports are read one calendar month per call (account timezone): a row per grouping and month,
  so a campaign, sent once, has one row per conversion metric. Series reports are read in daily intervals,
  up to 60 days per call (Klaviyo's limit for `interval=daily`): a row per grouping and day. One call
  covers every campaign or flow (group_by), and `page_cursor` pages are followed where Klaviyo sends them.
- Timeframes are read newest first, and none is started once the table has used its share of the day's
  cap (`daily_share` of 225, counted per UTC day in the table's state), or when what is left is less than
  the pages the biggest timeframe of the run took. A timeframe once started is read to its last page, and
  its rows are loaded only when complete: they replace that timeframe's rows.
  What did not fit is deferred: logged, kept in the table's state, and read first thing next run.
- A 429 whose Retry-After is too long to wait for (the day's cap is used up, maybe by another
  integration) ends the table's run with one line; what was read is loaded, the rest deferred, and the
  other tables load as usual.

The state lives in dlt's resource state and is committed with the data, so a failed run changes nothing.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import orjson
import pyarrow as pa

from klaviyo_source.client import KlaviyoClient
from klaviyo_source.endpoints import BY_TABLE, Endpoint, Report
from klaviyo_source.errors import ConfigurationError, ThrottledUntilError
from klaviyo_source.rate_limit import Governor, GovernorRegistry
from klaviyo_source.rows import ARRAY, OBJECT
from klaviyo_source.validate import CheckedPage, InvalidPage
from klaviyo_source.windows import parse_instant

log = logging.getLogger("klaviyo_source")



@dataclass
class ReportPage(CheckedPage):
    """A checked report answer: its rows (the client keeps no parsed document once a page is checked)."""

    rows: list[dict[str, Any]] = field(default_factory=list)


DEFAULT_CONVERSION_METRIC = "Placed Order"
# Statistics that count things (loaded as integers); the rest are rates, money and averages.
COUNTS = frozenset({
    "bounced", "bounced_or_failed", "clicks", "clicks_unique", "conversion_uniques", "conversions", "delivered",
    "failed", "message_segment_count_sum", "opens", "opens_unique", "recipients", "spam_complaints",
    "unsubscribe_uniques", "unsubscribes", "members_added", "members_removed", "net_members_changed",
    "total_members",
})


@dataclass(frozen=True)
class ReportSettings:
    """How report tables are read (klaviyo_source's reports_* arguments)."""

    conversion_metric: str = DEFAULT_CONVERSION_METRIC  # a metric name or id
    lookback_days: float = 30.0
    history_days: float = 365.0
    daily_share: float = 0.2

    def check(self) -> None:
        if not self.conversion_metric or not self.conversion_metric.strip():
            raise ConfigurationError("reports_conversion_metric is empty: give a metric name (e.g. 'Placed Order') "
                                     "or a metric id.")
        if not 0 <= self.lookback_days <= 366:
            raise ConfigurationError(f"reports_lookback_days must be between 0 and 366, got {self.lookback_days}.")
        if not 0 < self.history_days <= 3660:
            raise ConfigurationError(f"reports_history_days must be between 1 and 3660, got {self.history_days}.")
        if not 0 < self.daily_share <= 1:
            raise ConfigurationError(f"reports_daily_share must be in (0, 1], got {self.daily_share}.")


class AccountFacts:
    """What every report table of a run needs once: the account's timezone and the conversion metric id."""

    def __init__(self, client: KlaviyoClient, governors: GovernorRegistry, settings: ReportSettings) -> None:
        self.client = client
        self.governors = governors
        self.settings = settings
        self._lock = threading.Lock()
        self._timezone: ZoneInfo | None = None
        self._metric: tuple[str | None] | None = None

    def _documents(self, table: str) -> Iterator[Any]:
        endpoint = BY_TABLE[table]
        governor = self.governors.get(endpoint.path, endpoint.tier)
        # Counted apart from the table's own reads (the run summary's requests of `accounts` and `metrics`).
        for page in self.client.pages(endpoint.path, {}, governor, f"{endpoint.path}#reports"):
            yield page.document

    def timezone(self) -> ZoneInfo:
        """Custom timeframes are read in the account's timezone, so timeframes are planned in it too."""
        with self._lock:
            if self._timezone is None:
                accounts = [a for doc in self._documents("accounts") for a in doc["data"]]
                name = ((accounts[0].get("attributes") or {}).get("timezone") if accounts else None) or "UTC"
                try:
                    self._timezone = ZoneInfo(str(name))
                except (ZoneInfoNotFoundError, ValueError):
                    log.warning("reports: the account's timezone %r is unknown here; timeframes are planned in UTC",
                                name)
                    self._timezone = ZoneInfo("UTC")
            return self._timezone

    def conversion_metric_id(self) -> str | None:
        """The metric id for `conversion_metric` (a name or an id); None when the default is not in the account."""
        with self._lock:
            if self._metric is None:
                self._metric = (self._resolve(),)
            return self._metric[0]

    def _resolve(self) -> str | None:
        wanted = self.settings.conversion_metric.strip()
        # Raw pages, not the metrics table's checked ones: a record without an id (the metrics table sets it
        # aside) cannot be the conversion metric, and must not fail the report tables.
        metrics = [m for doc in self._documents("metrics") for m in doc["data"] if isinstance(m.get("id"), str)]
        if any(m.get("id") == wanted for m in metrics):
            return wanted
        named = [m for m in metrics if (m.get("attributes") or {}).get("name") == wanted]
        if len(named) == 1:
            return str(named[0]["id"])
        if len(named) > 1:
            choices = ", ".join(f"{m['id']} ({((m.get('attributes') or {}).get('integration') or {}).get('name')})"
                                for m in named)
            raise ConfigurationError(f"Several metrics are named {wanted!r}: {choices}. Set reports_conversion_metric "
                                     "to the id of the one the reports should count conversions of.")
        if wanted == DEFAULT_CONVERSION_METRIC:
            return None
        known = sorted({str((m.get("attributes") or {}).get("name")) for m in metrics})
        raise ConfigurationError(f"reports_conversion_metric {wanted!r} is neither the name nor the id of a metric of "
                                 f"this account; metrics: {', '.join(known[:30])}.")


@dataclass(frozen=True, order=True)
class Timeframe:
    """Days [start, end) in the account's timezone."""

    start: date
    end: date

    def bounds(self, tz: ZoneInfo, until: datetime) -> tuple[datetime, datetime]:
        """The instants it covers, the last one cut at the run's upper bound."""
        lo = datetime.combine(self.start, time(), tz)
        return lo, min(datetime.combine(self.end, time(), tz), until.astimezone(tz))


def _next_month(day: date) -> date:
    return date(day.year + day.month // 12, day.month % 12 + 1, 1)


def _merged(spans: list[tuple[datetime, datetime]]) -> list[tuple[datetime, datetime]]:
    out: list[tuple[datetime, datetime]] = []
    for lo, hi in sorted(s for s in spans if s[0] < s[1]):
        if out and lo <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], hi))
        else:
            out.append((lo, hi))
    return out


def plan(report: Report, spans: list[tuple[datetime, datetime]], tz: ZoneInfo) -> list[Timeframe]:
    """The timeframes that cover `spans`, newest first: calendar months (values reports) or runs of up to
    `days_per_call` days (series reports)."""
    frames: set[Timeframe] = set()
    for lo, hi in _merged(spans):
        first = lo.astimezone(tz).date()
        last = (hi - timedelta(microseconds=1)).astimezone(tz).date()
        if report.earliest is not None:
            first = max(first, report.earliest)
        if first > last:
            continue
        if report.interval is None:
            month = first.replace(day=1)
            while month <= last:
                frames.add(Timeframe(month, _next_month(month)))
                month = _next_month(month)
        else:
            end = last + timedelta(days=1)
            while end > first:
                start = max(first, end - timedelta(days=report.days_per_call))
                frames.add(Timeframe(start, end))
                end = start
    return sorted(frames, reverse=True)


class CallBudget:
    """The calls a report table may still make today: its share of the endpoint's daily cap, less the calls
    it made earlier today (Klaviyo's daily window is taken as the UTC day)."""

    def __init__(self, state: dict[str, Any], cap: int, share: float, now: datetime) -> None:
        self.state = state
        self.cap = cap
        self.limit = max(1, math.floor(cap * share))
        self.today = now.astimezone(timezone.utc).date().isoformat()
        if state.get("day") != self.today:
            state.update(day=self.today, calls=0)

    @property
    def left(self) -> int:
        return max(0, self.limit - int(self.state["calls"]))

    def spend(self) -> None:
        self.state["calls"] = int(self.state["calls"]) + 1

    def used_up(self) -> None:
        """Klaviyo refused for the day: nothing more today, whatever our own count says."""
        self.state["calls"] = max(int(self.state["calls"]), self.limit)


class ReportReader:
    """Reads one report table for one run: plans, calls within budget, turns answers into rows."""

    def __init__(self, endpoint: Endpoint, client: KlaviyoClient, governor: Governor, facts: AccountFacts,
                 settings: ReportSettings) -> None:
        assert endpoint.report is not None
        self.ep = endpoint
        self.report: Report = endpoint.report
        self.client = client
        self.governor = governor
        self.facts = facts
        self.settings = settings
        self.frames_read: list[Timeframe] = []  # this run's, complete: their rows replace the destination's

    def rows(self, state: dict[str, Any], start: datetime | None, until: datetime, stateless: bool
             ) -> Iterator[list[dict[str, Any]]]:
        """Row batches, one per timeframe read; updates `state` (pending spans, read_through, calls)."""
        table = self.ep.table
        metric = self.facts.conversion_metric_id() if self.report.conversion else None
        if self.report.conversion and metric is None:
            log.warning("%s: skipped: this account has no metric named %r; set reports_conversion_metric to the "
                        "metric (name or id) whose conversions the reports should count", table,
                        DEFAULT_CONVERSION_METRIC)
            return
        tz = self.facts.timezone()
        history = until - timedelta(days=self.settings.history_days)
        if stateless:  # an explicit interval is read whole
            spans = [(start or history, until)]
        else:
            # A first run reads history_days back, or from a later start_date: an early start_date (for the
            # events) must not turn into years of report calls at 2 a minute; reports_history_days can.
            lo = max(start, history) if start is not None else history
            read_through = state.get("read_through")
            if read_through is not None:
                lo = max(min(parse_instant(read_through), until - timedelta(days=self.settings.lookback_days)), history)
            spans = [(lo, until), *((parse_instant(a), parse_instant(b)) for a, b in state.get("pending", []))]
        frames = plan(self.report, spans, tz)
        cap = self.ep.tier.daily or 1
        budget = CallBudget(state.setdefault("calls", {}), cap, self.settings.daily_share, until)
        deferred: list[Timeframe] = []
        calls = pages = 0  # pages: the most one timeframe took this run, what the next one is expected to take
        throttled = False
        for k, frame in enumerate(frames):
            if budget.left <= 0 or (calls and budget.left < pages):
                deferred = frames[k:]
                break
            try:
                batch, used = self._read(frame, tz, until, metric, budget)
            except ThrottledUntilError as exc:
                budget.used_up()
                deferred = frames[k:]
                log.warning("%s: Klaviyo's daily limit for %s is used up (it allows calls again in %s); loaded %d "
                            "timeframe(s), deferred %d (%s to %s) to the next run; the other tables load as usual",
                            table, self.ep.path, _duration(exc.retry_after), k, len(deferred), deferred[-1].start,
                            deferred[0].end - timedelta(days=1))
                throttled = True
                break
            calls += used
            pages = max(pages, used)
            self.frames_read.append(frame)
            if batch:
                yield batch
        if deferred and not throttled:
            oldest, newest = deferred[-1], deferred[0]
            log.warning("%s: %d timeframe(s) from %s to %s deferred to the next run (this table's budget: %d of %d "
                        "daily calls, reports_daily_share=%s)", table, len(deferred), oldest.start,
                        newest.end - timedelta(days=1), budget.limit, cap, self.settings.daily_share)
        log.info("%s: %d timeframe(s) read in %d call(s); %d of today's %d budgeted calls left", table,
                 len(frames) - len(deferred), calls, budget.left, budget.limit)
        if not stateless:
            state["pending"] = [[b.isoformat() for b in frame.bounds(tz, until)] for frame in deferred]
            state["read_through"] = until.isoformat()

    def _read(self, frame: Timeframe, tz: ZoneInfo, until: datetime, metric: str | None, budget: CallBudget
              ) -> tuple[list[dict[str, Any]], int]:
        """Every page of one timeframe as rows, and the calls it took."""
        lo, hi = frame.bounds(tz, until)
        attributes: dict[str, Any] = {
            "statistics": list(self.report.statistics),
            "timeframe": {"start": lo.isoformat(), "end": hi.isoformat()},
        }
        if self.report.interval:
            attributes["interval"] = self.report.interval
        if self.report.conversion:
            attributes["conversion_metric_id"] = metric
            attributes["group_by"] = list(self.report.groupings)
        body = {"data": {"type": self.report.type, "attributes": attributes}}
        rows: list[dict[str, Any]] = []
        calls = 0

        def check(document: Any) -> ReportPage:
            self.check(document)
            return ReportPage(pa.table({}), rows=self.rows_of(document, frame, tz, metric))

        pages = self.client.pages(self.ep.path, {}, self.governor, self.ep.path, check, orjson.loads, body)
        for page in pages:
            calls += 1
            budget.spend()
            assert isinstance(page.checked, ReportPage)
            rows.extend(page.checked.rows)
        return rows, calls

    def rows_of(self, document: Mapping[str, Any], frame: Timeframe, tz: ZoneInfo, metric: str | None
                ) -> list[dict[str, Any]]:
        attributes = document["data"]["attributes"]
        report = self.report
        out = []
        days = [_day(text, tz) for text in attributes.get("date_times") or ()] if report.interval else []
        for result in attributes["results"]:
            key: dict[str, Any] = {name: result["groupings"][name] for name in report.groupings}
            if report.conversion:
                key["conversion_metric_id"] = metric
            stats = result["statistics"]
            if report.interval:
                # Klaviyo pads a grouping's series with zeros on days it had nothing: those are no rows (the
                # padding depends on the timeframe asked for, the table would depend on how calls were cut).
                for k, day in enumerate(days):
                    values = {name: _value(name, (stats.get(name) or [None] * len(days))[k])
                              for name in report.statistics}
                    if any(values.values()):
                        out.append({**key, "day": day, **values})
            else:
                out.append({**key, "timeframe_start": frame.start, "timeframe_end": frame.end,
                            **{name: _value(name, stats.get(name)) for name in report.statistics}})
        return out

    def check(self, document: Any) -> None:
        """A report answer's shape; a broken one is asked for again, then fails the table naming the problem."""
        data = document.get("data")
        attributes = data.get("attributes") if isinstance(data, OBJECT) else None
        results = attributes.get("results") if isinstance(attributes, OBJECT) else None
        if not isinstance(results, ARRAY):
            raise InvalidPage("'data.attributes.results' is missing or not a list")
        size = None
        if self.report.interval:
            date_times = attributes.get("date_times")  # type: ignore[union-attr]
            if not isinstance(date_times, ARRAY) or not all(_is_datetime(t) for t in date_times):
                raise InvalidPage("'data.attributes.date_times' is missing or not a list of datetimes")
            size = len(date_times)
        for index, result in enumerate(results):
            groupings = result.get("groupings") if isinstance(result, OBJECT) else None
            stats = result.get("statistics") if isinstance(result, OBJECT) else None
            if not isinstance(groupings, OBJECT) or not isinstance(stats, OBJECT):
                raise InvalidPage(f"result {index}: 'groupings' or 'statistics' is missing")
            missing = [g for g in self.report.groupings if not isinstance(groupings.get(g), str)]
            if missing:
                raise InvalidPage(f"result {index}: grouping(s) {', '.join(missing)} missing")
            for name, value in stats.items():
                values = value if size is not None and isinstance(value, ARRAY) else [value]
                if size is not None and (not isinstance(value, ARRAY) or len(value) != size):
                    raise InvalidPage(f"result {index}: statistic {name!r} is not a list of {size} values")
                if any(v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))) for v in values):
                    raise InvalidPage(f"result {index}: statistic {name!r} is not a number")


def _value(name: str, value: Any) -> Any:
    """Counts as integers (Klaviyo may write 12.0), everything else as sent."""
    if name in COUNTS and isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _is_datetime(value: Any) -> bool:
    try:
        return isinstance(value, str) and bool(datetime.fromisoformat(value))
    except ValueError:
        return False


def _day(text: str, tz: ZoneInfo) -> date:
    """An interval start as a day of the account's calendar: as written when it is a midnight (Klaviyo
    writes local midnights), else converted to the account's timezone."""
    moment = datetime.fromisoformat(text)
    if moment.time() == time() or moment.tzinfo is None:
        return moment.date()
    return moment.astimezone(tz).date()


def _duration(seconds: float) -> str:
    hours, rest = divmod(int(seconds), 3600)
    return f"{hours} h {rest // 60} min" if hours else f"{rest // 60} min {rest % 60} s"
