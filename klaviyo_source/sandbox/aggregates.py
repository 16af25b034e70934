"""POST /api/metric-aggregates: Klaviyo's counts, sums and uniques of one metric's events per time bucket.

As documented (spec `MetricAggregateQuery`, API-NOTES §3 and §7): `metric_id`, `measurements` (count,
sum_value, unique) and `filter` are required; the filter is a list of strings and must bound `datetime` with
`greater-or-equal` and `less-than` (a range of at most one year); `interval` is hour, day (the default),
week or month; buckets and naive datetimes in the filter are read in `timezone` (IANA, default UTC); `by`
groups rows by event properties (`$message`, `$flow`, ...), and filters on those dimensions narrow the
events. Counts come from the same events the GET endpoints serve, so a correct copy of the account counts
the same; what the sandbox does not model (paging past `page_size` rows) is refused, never answered wrongly.
"""

from __future__ import annotations

import uuid
from bisect import bisect_right
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import orjson

from klaviyo_source.sandbox import filters
from klaviyo_source.sandbox.model import StoreError

if TYPE_CHECKING:
    from klaviyo_source.sandbox.store import Store

TYPE = "metric-aggregate"
MAX_SPAN = timedelta(days=366)
DIMENSION_OPS = ("equals", "any", "contains-any")


def answer(store: Store, rule: dict[str, Any], params: list[tuple[str, str]], body: bytes, self_url: str) -> bytes:
    """The whole JSON:API answer to one POST, or a StoreError with Klaviyo's 400/404 detail."""
    unknown = [name for name, _ in params if name not in rule["query_params"]]
    if unknown:
        raise StoreError(400, "invalid", f"'{unknown[0]}' is not a valid query parameter for this endpoint.",
                         unknown[0])
    attributes = _attributes(rule, body)
    result = aggregate(store, attributes, rule["by"])
    links = {"self": self_url}
    return orjson.dumps({"data": {"type": TYPE, "id": str(uuid.uuid4()), "attributes": result, "links": links},
                         "links": links})


def _attributes(rule: dict[str, Any], body: bytes) -> dict[str, Any]:
    try:
        doc = orjson.loads(body or b"null")
    except orjson.JSONDecodeError:
        raise _invalid("The request body is not valid JSON.") from None
    data = doc.get("data") if isinstance(doc, dict) else None
    if not isinstance(data, dict) or data.get("type") != rule["type"]:
        raise _invalid(f"'data' must be an object of type '{rule['type']}'.")
    attrs = data.get("attributes")
    if not isinstance(attrs, dict):
        raise _invalid("'data.attributes' is a required object.")
    unknown = sorted(set(attrs) - set(rule["attributes"]))
    if unknown:
        raise _invalid(f"Unknown attributes: {', '.join(unknown)}.")
    missing = [name for name in rule["required"] if attrs.get(name) in (None, [], "")]
    if missing:
        raise _invalid(f"Missing required attributes: {', '.join(missing)}.")
    measurements = attrs["measurements"]
    if not isinstance(measurements, list) or any(m not in rule["measurements"] for m in measurements):
        raise _invalid(f"'measurements' must be a list of: {', '.join(rule['measurements'])}.", "measurements")
    if attrs.get("interval") is not None and attrs["interval"] not in rule["interval"]:
        raise _invalid(f"'interval' must be one of: {', '.join(rule['interval'])}.", "interval")
    by = attrs.get("by") or []
    if not isinstance(by, list) or any(b not in rule["by"] for b in by):
        raise _invalid("'by' must be a list of supported dimensions.", "by")
    if attrs.get("sort") is not None and attrs["sort"] not in rule["sort"]:
        raise _invalid(f"'{attrs['sort']}' is not a valid sort.", "sort")
    if attrs.get("page_cursor"):
        raise _invalid("The page cursor is invalid.", "page_cursor")  # the sandbox never hands one out
    size = attrs.get("page_size")
    if size is not None and (type(size) is not int or not 1 <= size <= rule["page_size"]):
        raise _invalid(f"'page_size' must be an integer from 1 to {rule['page_size']}.", "page_size")
    if not isinstance(attrs["filter"], list) or not all(isinstance(f, str) for f in attrs["filter"]):
        raise _invalid("'filter' must be a list of filter strings.", "filter")
    if not isinstance(attrs["metric_id"], str):
        raise _invalid("'metric_id' must be a string.", "metric_id")
    return attrs


def _invalid(detail: str, parameter: str | None = None) -> StoreError:
    return StoreError(400, "invalid", detail, parameter)


def _zone(name: Any) -> ZoneInfo:
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        raise _invalid(f"'{name}' is not a supported timezone.", "timezone") from None


def _instant(text: str, zone: ZoneInfo) -> int:
    """A filter datetime as epoch seconds; without an offset it is wall-clock time in the query's timezone."""
    try:  # Klaviyo's datetime grammar, the filters' one
        return int(filters.local_datetime(text, naive=zone).timestamp())
    except (filters.FilterError, OverflowError, ValueError):
        raise _invalid(f"Invalid filter provided: '{text}' is not a valid datetime.", "filter") from None


def _conditions(texts: list[str], zone: ZoneInfo, dimensions: list[str]
                ) -> tuple[int, int, list[tuple[str, str, list[str]]]]:
    """[lo, hi) in epoch seconds and the dimension filters, from the `filter` list."""
    lo: int | None = None
    hi: int | None = None
    picks: list[tuple[str, str, list[str]]] = []
    try:
        raw = [c for text in texts for c in filters.parse(text)]
    except filters.FilterError as exc:
        raise _invalid(str(exc), "filter") from None
    for cond in raw:
        if cond.field == "datetime":
            if not isinstance(cond.value, filters.Bare):
                raise _invalid("Invalid filter provided: datetime values must not be quoted.", "filter")
            edge = _instant(cond.value.text, zone)
            if cond.op in ("greater-or-equal", "greater-than"):
                edge += cond.op == "greater-than"
                lo = edge if lo is None else max(lo, edge)
            elif cond.op in ("less-than", "less-or-equal"):
                edge += cond.op == "less-or-equal"
                hi = edge if hi is None else min(hi, edge)
            else:
                raise _invalid(f"Invalid filter provided: '{cond.op}' is not allowed on datetime.", "filter")
        elif cond.field in dimensions and cond.op in DIMENSION_OPS:
            values = cond.value if isinstance(cond.value, list) else [cond.value]
            picks.append((cond.op, cond.field, [getattr(v, "text", "") for v in values]))
        else:
            raise _invalid(f"Invalid filter provided: {cond.op}({cond.field}) is not supported.", "filter")
    if lo is None or hi is None:
        raise _invalid("The filter must bound datetime with greater-or-equal and less-than.", "filter")
    if hi <= lo or hi - lo > MAX_SPAN.total_seconds():
        raise _invalid("The datetime range must end after it starts and span at most one year.", "filter")
    return lo, hi, picks


def bucket_starts(lo: int, hi: int, interval: str, zone: ZoneInfo) -> list[datetime]:
    """Starts of the buckets that cover [lo, hi), aligned in `zone` (days at local midnight, weeks on Monday)."""
    first = datetime.fromtimestamp(lo, zone)
    if interval == "hour":
        first = first.replace(minute=0, second=0, microsecond=0)
    else:
        first = first.replace(hour=0, minute=0, second=0, microsecond=0)
        if interval == "week":
            first -= timedelta(days=first.weekday())
        elif interval == "month":
            first = first.replace(day=1)
    starts = []
    current = first
    while current.timestamp() < hi:
        starts.append(current)
        current = _next(current, interval, zone)
    return starts


def _next(start: datetime, interval: str, zone: ZoneInfo) -> datetime:
    if interval == "hour":
        return datetime.fromtimestamp(start.timestamp() + 3600, zone)
    if interval == "month":
        year, month = divmod(start.year * 12 + start.month, 12)
        return datetime(year, month + 1, 1, tzinfo=zone)
    days = 7 if interval == "week" else 1
    day = date(start.year, start.month, start.day) + timedelta(days=days)
    return datetime(day.year, day.month, day.day, tzinfo=zone)  # local midnight, whatever DST did


def aggregate(store: Store, attributes: dict[str, Any], dimensions: list[str]) -> dict[str, Any]:
    """`data.attributes` of the answer: the bucket dates and one row of measurements per dimension group.

    `dimensions` are those Klaviyo allows in `by` and in dimension filters; an event's value for one is the
    event property of that name.
    """
    from klaviyo_source.sandbox.store import LOW

    zone = _zone(attributes.get("timezone"))
    interval = attributes.get("interval") or "day"
    by: list[str] = attributes.get("by") or []
    measurements: list[str] = attributes["measurements"]
    lo, hi, picks = _conditions(attributes["filter"], zone, dimensions)
    starts = bucket_starts(lo, hi, interval, zone)
    edges = [int(s.timestamp()) for s in starts]
    with store.locked():
        metrics = store.rows("metrics")
        metric = metrics.by_id.get(attributes["metric_id"])
        if metric is None:
            raise StoreError(404, "not_found", f"A metric with id {attributes['metric_id']!r} does not exist.")
        events = store.events
        index = events.index(("metric", "datetime"))
        records = index.arr[index.position((metric, lo, LOW)):index.position((metric, hi, LOW))]
        need_properties = bool(by or picks or "sum_value" in measurements)
        ts, profile = store.world.events.ts, store.world.events.profile
        rows: dict[tuple[str, ...], dict[str, Any]] = {}
        for i in records:
            props = events.view.properties(i) if need_properties else {}
            if not all(_keeps(op, props.get(field), values) for op, field, values in picks):
                continue
            key = tuple("" if props.get(d) is None else str(props.get(d)) for d in by)
            row = rows.get(key)
            if row is None:
                row = rows[key] = {"count": [0] * len(starts), "sum_value": [0.0] * len(starts),
                                   "unique": [set() for _ in starts]}
            k = bisect_right(edges, ts[i]) - 1
            row["count"][k] += 1
            row["sum_value"][k] += float(props.get("$value") or 0)
            row["unique"][k].add(profile[i])
    if not by and not rows:
        rows[()] = {"count": [0] * len(starts), "sum_value": [0.0] * len(starts), "unique": [set() for _ in starts]}
    data = []
    for key in sorted(rows):
        row = rows[key]
        values = {"count": row["count"], "sum_value": [round(v, 2) for v in row["sum_value"]],
                  "unique": [len(people) for people in row["unique"]]}
        data.append({"dimensions": list(key), "measurements": {m: values[m] for m in measurements}})
    page_size = attributes.get("page_size") or 500
    if len(data) > page_size:
        raise _invalid("More result rows than page_size; the sandbox does not page aggregates.", "page_size")
    return {"dates": [s.isoformat() for s in starts], "data": data}


def _keeps(op: str, actual: Any, values: list[str]) -> bool:
    if op == "equals":
        return actual is not None and str(actual) == values[0]
    return actual is not None and str(actual) in values
