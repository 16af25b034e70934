"""The reporting POSTs (campaign, flow and segment values and series reports), computed from the events.

Klaviyo's definitions, as the reporting docs give them:
- Figures are counted by **send date**, in the account's timezone: a campaign's by the campaign's send
  time, a flow message's by each recipient's send (the first message event of the episode). An open, a
  click or an attributed conversion days later counts where its send counts.
- Conversions are the events of the conversion metric attributed to the message by the attribution model
  (attribution.py), so the reports and `include=attributions` always agree.
- "unique" means distinct profiles, within a grouping and a timeframe (a series: within each interval).
- Custom timeframes are read as wall-clock times in the account timezone (the offset is ignored); series
  intervals start on interval boundaries (local midnight, Monday, the first of a month).
- Segment reports count members joining and leaving (members_added/removed, net, total at the interval's
  end); there is no data before 2023-06-01.
Results are sorted by their groupings and paged with `page_cursor` where the spec offers it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import itertools
import json
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from klaviyo_source.sandbox import filters
from klaviyo_source.sandbox.attribution import Ledger
from klaviyo_source.sandbox.data import MESSAGE_METRICS, M, World
from klaviyo_source.sandbox.model import StoreError

if TYPE_CHECKING:
    from klaviyo_source.sandbox.store import Store

MESSAGE_STATISTICS = frozenset({
    "average_order_value", "bounce_rate", "bounced", "bounced_or_failed", "bounced_or_failed_rate",
    "click_rate", "click_to_open_rate", "clicks", "clicks_unique", "conversion_rate", "conversion_uniques",
    "conversion_value", "conversions", "delivered", "delivery_rate", "failed", "failed_rate",
    "message_segment_count_sum", "open_rate", "opens", "opens_unique", "recipients", "revenue_per_recipient",
    "spam_complaint_rate", "spam_complaints", "text_message_credit_usage_amount", "text_message_roi",
    "text_message_spend", "unsubscribe_rate", "unsubscribe_uniques", "unsubscribes",
})
SEGMENT_STATISTICS = frozenset({"members_added", "members_removed", "net_members_changed", "total_members"})
CAMPAIGN_GROUPS = frozenset({"campaign_id", "campaign_message_id", "campaign_message_name", "group", "group_name",
                             "send_channel", "tag_id", "tag_name", "text_message_format", "variation",
                             "variation_name"})
FLOW_GROUPS = frozenset({"flow_id", "flow_message_id", "flow_message_name", "flow_name", "send_channel", "tag_id",
                         "tag_name", "text_message_format", "variation", "variation_name"})


@dataclass(frozen=True)
class Kind:
    """One report type: whose messages it counts (None: segments), its groupings and whether it is a series."""

    table: str | None
    groups: frozenset[str]
    default_group: tuple[str, ...]
    required_group: tuple[str, ...]
    series: bool
    paged: bool  # the spec offers `page_cursor`


KINDS = {
    "campaign-values-report": Kind("campaign_messages", CAMPAIGN_GROUPS, ("campaign_id", "campaign_message_id",
                                   "send_channel"), ("campaign_id", "campaign_message_id"), False, True),
    "flow-values-report": Kind("flow_messages", FLOW_GROUPS, ("flow_id", "flow_message_id", "send_channel"),
                               ("flow_id", "flow_message_id"), False, True),
    "flow-series-report": Kind("flow_messages", FLOW_GROUPS, ("flow_id", "flow_message_id", "send_channel"),
                               ("flow_id", "flow_message_id"), True, True),
    "segment-values-report": Kind(None, frozenset({"segment_id"}), ("segment_id",), (), False, False),
    "segment-series-report": Kind(None, frozenset({"segment_id"}), ("segment_id",), (), True, False),
}
# Longest timeframe per series interval (the spec's description of `interval`).
INTERVAL_SPAN = {"hourly": timedelta(days=7), "daily": timedelta(days=60), "weekly": timedelta(days=366),
                 "monthly": timedelta(weeks=52)}
SEGMENT_DATA_FROM = datetime(2023, 6, 1)  # local wall-clock time, like custom timeframes
PAGE_SIZE = 500  # results per page where `page_cursor` is offered

_TALLY_FIELD = {
    M["Received Email"]: "received", M["Received SMS"]: "received", M["Received Push"]: "received",
    M["Opened Email"]: "opens", M["Opened Push"]: "opens", M["Clicked Email"]: "clicks",
    M["Clicked SMS"]: "clicks", M["Bounced Email"]: "bounced", M["Failed to Deliver SMS"]: "failed",
    M["Unsubscribed"]: "unsubscribes", M["Unsubscribed from SMS Marketing"]: "unsubscribes",
    M["Marked Email as Spam"]: "spam",
}
_UNIQUE = {"opens": "opened", "clicks": "clicked", "unsubscribes": "unsubscribed", "conversions": "converted"}
SMS_SEGMENT_PRICE = 0.0107  # USD per SMS segment, Klaviyo's US list price


class Tally:
    """Counts of one message's events in one bucket, plus the people behind the unique counts."""

    def __init__(self) -> None:
        self.counts = dict.fromkeys(("received", "opens", "clicks", "bounced", "failed", "unsubscribes", "spam",
                                     "conversions"), 0)
        self.value = 0.0
        self.people: dict[str, set[int]] = {name: set() for name in _UNIQUE.values()}

    def add(self, field: str, profile: int, value: float = 0.0) -> None:
        self.counts[field] += 1
        self.value += value
        unique = _UNIQUE.get(field)
        if unique:
            self.people[unique].add(profile)

    def merge(self, other: Tally) -> None:
        for name, n in other.counts.items():
            self.counts[name] += n
        self.value += other.value
        for name, people in other.people.items():
            self.people[name] |= people


def statistics(t: Tally, segments_per_message: int, names: Iterable[str]) -> dict[str, Any]:
    """Klaviyo's statistics from a tally; rates are fractions (0 where the denominator is 0)."""
    c = t.counts
    recipients = c["received"] + c["bounced"] + c["failed"]
    delivered = c["received"]
    opened, clicked = len(t.people["opened"]), len(t.people["clicked"])
    converted, unsubscribed = len(t.people["converted"]), len(t.people["unsubscribed"])
    segments = delivered * segments_per_message
    spend = round(segments * SMS_SEGMENT_PRICE, 4)
    value = round(t.value, 2)

    def rate(a: float, b: float) -> float:
        return round(a / b, 6) if b else 0.0

    stats = {
        "recipients": recipients, "delivered": delivered, "bounced": c["bounced"], "failed": c["failed"],
        "bounced_or_failed": c["bounced"] + c["failed"], "bounce_rate": rate(c["bounced"], recipients),
        "failed_rate": rate(c["failed"], recipients),
        "bounced_or_failed_rate": rate(c["bounced"] + c["failed"], recipients),
        "delivery_rate": rate(delivered, recipients), "opens": c["opens"], "opens_unique": opened,
        "open_rate": rate(opened, delivered), "clicks": c["clicks"], "clicks_unique": clicked,
        "click_rate": rate(clicked, delivered), "click_to_open_rate": rate(clicked, opened),
        "conversions": c["conversions"], "conversion_uniques": converted, "conversion_value": value,
        "conversion_rate": rate(converted, delivered), "average_order_value": rate(value, c["conversions"]),
        "revenue_per_recipient": rate(value, delivered), "unsubscribes": c["unsubscribes"],
        "unsubscribe_uniques": unsubscribed, "unsubscribe_rate": rate(unsubscribed, delivered),
        "spam_complaints": c["spam"], "spam_complaint_rate": rate(c["spam"], delivered),
        "message_segment_count_sum": segments, "text_message_credit_usage_amount": segments,
        "text_message_spend": spend, "text_message_roi": rate(value - spend, spend),
    }
    return {name: stats[name] for name in names}


@dataclass
class ReportPage:
    """One answer: `data` (type, attributes, relationships) and the cursor of the next page, if any."""

    data: dict[str, Any]
    next_cursor: str | None = None


class Buckets:
    """The intervals of a timeframe in the account timezone: one bucket for a values report."""

    def __init__(self, tz: ZoneInfo, start: datetime, end: datetime, interval: str | None) -> None:
        self.start, self.end = int(start.timestamp()), int(end.timestamp())
        if interval is None:
            self.starts = [start]
        else:
            self.starts = []
            edge = _align(start, interval)
            while edge < end:
                self.starts.append(edge)
                edge = _next(edge, interval, tz)
        self.edges = [int(s.timestamp()) for s in self.starts[1:]]
        self.tz = tz

    def index(self, ts: int) -> int | None:
        """The bucket of an instant, None outside the timeframe."""
        if not self.start <= ts < self.end:
            return None
        lo, hi = 0, len(self.edges)
        while lo < hi:
            mid = (lo + hi) // 2
            if ts < self.edges[mid]:
                hi = mid
            else:
                lo = mid + 1
        return lo

    def ends(self) -> list[int]:
        return [*self.edges, self.end]


def _align(moment: datetime, interval: str) -> datetime:
    if interval == "hourly":
        return moment.replace(minute=0, second=0, microsecond=0)
    day = moment.replace(hour=0, minute=0, second=0, microsecond=0)
    if interval == "weekly":
        return day - timedelta(days=day.weekday())
    return day.replace(day=1) if interval == "monthly" else day


def _next(edge: datetime, interval: str, tz: ZoneInfo) -> datetime:
    """The next boundary in wall-clock terms (a day is a local day, DST or not)."""
    naive = edge.replace(tzinfo=None)
    if interval == "hourly":
        return datetime.fromtimestamp(edge.timestamp() + 3600, tz)
    if interval == "monthly":
        y, m = divmod(naive.year * 12 + naive.month, 12)
        return naive.replace(year=y, month=m + 1).replace(tzinfo=tz)
    return (naive + timedelta(days=7 if interval == "weekly" else 1)).replace(tzinfo=tz)


class SegmentHistory:
    """Who joined and left each segment when: the generated memberships, some members that left again
    before the anchor (the GET endpoints never show them), and every change made since."""

    def __init__(self, world: World) -> None:
        self.log: list[list[tuple[int, int]]] = []  # per segment: (time, +1 or -1), unordered
        rng = random.Random(world.seed * 7 + 29)
        n = len(world.profile_created)
        for g, members in enumerate(world.members["segment"]):
            entries = [(t, 1) for t in members.values()]
            created = world.rows["segments"][g].vals["created"]
            former = [p for p in rng.sample(range(n), min(n, len(members) // 3 + 1)) if p not in members]
            for p in former:
                joined = max(created, world.profile_created[p])
                joined += int((world.anchor - joined) * rng.random())
                entries += [(joined, 1), (joined + int((world.anchor - joined) * rng.random()), -1)]
            self.log.append(entries)

    def changed(self, group: int, now: int, joined: int = 0, left: int = 0) -> None:
        while len(self.log) <= group:
            self.log.append([])
        self.log[group] += [(now, 1)] * joined + [(now, -1)] * left

    def figures(self, group: int, buckets: Buckets) -> dict[str, list[int]]:
        ends = buckets.ends()
        added, removed = [0] * len(ends), [0] * len(ends)
        entries = sorted(self.log[group]) if group < len(self.log) else []
        running, totals, at = 0, [], 0
        for end in ends:  # members at each interval's end: every change before it
            while at < len(entries) and entries[at][0] < end:
                running += entries[at][1]
                at += 1
            totals.append(running)
        for ts, delta in entries:
            k = buckets.index(ts)
            if k is not None:
                (added if delta > 0 else removed)[k] += 1
        return {"members_added": added, "members_removed": removed,
                "net_members_changed": [a - r for a, r in zip(added, removed, strict=True)],
                "total_members": totals}


class Reports:
    """Answers reporting POSTs for one store (called under the store's lock)."""

    def __init__(self, store: Store, secret: bytes) -> None:
        self.store = store
        self.world = store.world
        self.secret = secret
        self.segments = SegmentHistory(store.world)
        self.page_size = PAGE_SIZE

    def answer(self, kind_name: str, attributes: dict[str, Any], cursor: str | None = None) -> ReportPage:
        kind = KINDS.get(kind_name)
        if kind is None:
            raise StoreError(400, "invalid", f"Unknown report type {kind_name!r}.")
        names = list(attributes.get("statistics") or ())
        allowed = MESSAGE_STATISTICS if kind.table else SEGMENT_STATISTICS
        if not names or any(s not in allowed for s in names):
            raise StoreError(400, "invalid", f"'statistics' must be a non-empty list of: {', '.join(sorted(allowed))}.",
                             "statistics")
        tz = ZoneInfo(self.world.brand.timezone)
        start, end = self.timeframe(attributes.get("timeframe"), tz)
        interval = attributes.get("interval") if kind.series else None
        if kind.series:
            if interval not in INTERVAL_SPAN:
                raise StoreError(400, "invalid", f"'interval' must be one of: {', '.join(INTERVAL_SPAN)}.", "interval")
            if end - start > INTERVAL_SPAN[interval]:
                raise StoreError(400, "invalid", f"A {interval} series covers at most "
                                 f"{INTERVAL_SPAN[interval].days} days.", "timeframe")
        buckets = Buckets(tz, start, end, interval)
        if kind.table is None:
            if start.replace(tzinfo=None) < SEGMENT_DATA_FROM:
                raise StoreError(400, "invalid", "Data is unavailable before June 1st, 2023. Please use a time "
                                 "frame after this date.", "timeframe")
            results = self._segments(attributes.get("filter"), buckets, names, kind.series)
            relationships: dict[str, Any] = {}
        else:
            results, relationships = self._messages(kind, attributes, buckets, names)
        data: dict[str, Any] = {"type": kind_name, "attributes": {"results": results}}
        if kind.series:
            data["attributes"]["date_times"] = [s.isoformat() for s in buckets.starts]
        next_cursor = None
        if kind.paged:
            fingerprint = hashlib.blake2s(json.dumps([kind_name, attributes], sort_keys=True, default=str).encode(),
                                          digest_size=6).hexdigest()
            offset = self._decode(cursor, fingerprint) if cursor else 0
            page = results[offset:offset + self.page_size]
            data["attributes"]["results"] = page
            if offset + self.page_size < len(results):
                next_cursor = self._encode(fingerprint, offset + self.page_size)
            relationships = self._relationships(kind, page)
        elif cursor:
            raise StoreError(400, "invalid", "This report has no pages.", "page_cursor")
        if relationships:
            data["relationships"] = relationships
        return ReportPage(data, next_cursor)

    # --- campaign and flow reports ------------------------------------------------------------------------

    def _messages(self, kind: Kind, attributes: dict[str, Any], buckets: Buckets, names: list[str]
                  ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        group_by = tuple(attributes.get("group_by") or kind.default_group)
        if any(g not in kind.groups for g in group_by) or any(r not in group_by for r in kind.required_group):
            raise StoreError(400, "invalid", f"group_by must use {', '.join(sorted(kind.groups))} and include "
                                             f"{' and '.join(kind.required_group)}.", "group_by")
        keep = _message_filter(attributes.get("filter"), kind.groups)
        metrics = self.store.rows("metrics")
        conversion = metrics.by_id.get(str(attributes.get("conversion_metric_id")))
        if conversion is None:
            raise StoreError(400, "invalid", "conversion_metric_id is not a metric of this account.",
                             "conversion_metric_id")
        assert kind.table is not None
        size = len(buckets.starts)
        groups: dict[tuple[Any, ...], list[Tally]] = {}
        parts: dict[tuple[Any, ...], int] = {}
        for m, tallies in self._tally(kind.table, buckets, conversion).items():
            facts, segments = self._message_facts(m)
            if not keep(facts):
                continue
            values = (facts[g] for g in group_by)
            for combo in itertools.product(*([v] if not isinstance(v, tuple) else v for v in values)):
                merged = groups.setdefault(combo, [Tally() for _ in range(size)])
                for k, tally in tallies.items():
                    merged[k].merge(tally)
                parts[combo] = max(parts.get(combo, 0), segments)
        results = []
        for combo in sorted(groups, key=lambda c: json.dumps(c, default=str)):
            per_bucket = [statistics(t, parts[combo], names) for t in groups[combo]]
            stats = {name: [b[name] for b in per_bucket] for name in names} if kind.series else per_bucket[0]
            results.append({"groupings": dict(zip(group_by, combo, strict=True)), "statistics": stats})
        return results, {}

    def _tally(self, table: str, buckets: Buckets, conversion: int) -> dict[int, dict[int, Tally]]:
        """message -> bucket -> tally, for every send in the timeframe (events after it included)."""
        w, store = self.world, self.store
        ev = w.events
        ledger: Ledger = store.attributions.ledger()
        index = store.events.index(("datetime",))
        first = index.position((buckets.start, -1))  # every event of a send comes at or after the send
        rows = w.rows[table]
        out: dict[int, dict[int, Tally]] = {}

        def bucket_of(event: int, m: int) -> int | None:
            send = w.messages[m].send_ts
            if send is None:
                send = ledger.sends.get(ev.episode[event], ev.ts[event])
            return buckets.index(send)

        for i in index.arr[first:]:
            metric = ev.metric[i]
            value = 0.0
            if metric in MESSAGE_METRICS:
                m, touch, field = ev.ref[i], i, _TALLY_FIELD[metric]
            elif metric == conversion and i in ledger.credit:
                touch = ledger.credit[i]
                m, field = ev.ref[touch], "conversions"
                value = float(store.events.view.properties(i).get("$value") or 0.0)
            else:
                continue
            if m < 0 or w.messages[m].table != table or not rows[w.messages[m].row].alive:
                continue
            k = bucket_of(touch, m)
            if k is None:
                continue
            tallies = out.setdefault(m, {})
            tally = tallies.get(k)
            if tally is None:
                tally = tallies[k] = Tally()
            tally.add(field, ev.profile[i], value)
        return out

    def _message_facts(self, m: int) -> tuple[dict[str, Any], int]:
        """The grouping values of one message (tags as tuples) and its SMS segment count."""
        w = self.world
        msg = w.messages[m]
        row = w.rows[msg.table][msg.row]
        channel = {"email": "email", "sms": "sms", "push": "push-notification"}[msg.channel]
        if msg.table == "campaign_messages":
            owner = w.rows["campaigns"][row.parent]  # type: ignore[index]
            label = row.attrs["definition"].get("label") or owner.attrs["name"]
            body = row.attrs["definition"]["content"].get("body") or ""
            audience = (owner.attrs["audiences"]["included"] or [None])[0]
            groups = {r.id: r.attrs["name"] for t in ("lists", "segments") for r in w.rows[t]}
            facts: dict[str, Any] = {
                "campaign_id": owner.id, "campaign_message_id": row.id, "campaign_message_name": label,
                "group": audience, "group_name": groups.get(audience)}
        else:
            owner = w.rows["flows"][w.rows["flow_actions"][row.parent].parent]  # type: ignore[index]
            label = row.vals["name"]
            body = row.attrs["definition"].get("body") or ""
            facts = {"flow_id": owner.id, "flow_message_id": row.id, "flow_message_name": label,
                     "flow_name": owner.attrs["name"]}
        tags = [w.rows["tags"][t] for t in owner.refs["tags"] if w.rows["tags"][t].alive]
        facts.update({"send_channel": channel, "variation": row.id, "variation_name": label,
                      "text_message_format": "SMS" if msg.channel == "sms" else None,
                      "tag_id": tuple(t.id for t in tags), "tag_name": tuple(t.attrs["name"] for t in tags)})
        return facts, (len(body) + 159) // 160 if msg.channel == "sms" else 0

    def _relationships(self, kind: Kind, results: list[dict[str, Any]]) -> dict[str, Any]:
        """The campaigns or flows (and flow messages) a page of results names, as the spec lists them."""
        def related(rtype: str, key: str) -> dict[str, Any]:
            ids = sorted({r["groupings"][key] for r in results if r["groupings"].get(key)})
            return {"data": [{"type": rtype, "id": i} for i in ids]}

        if kind.table == "campaign_messages":
            return {"campaigns": related("campaign", "campaign_id")}
        if kind.table == "flow_messages":
            rels = {"flows": related("flow", "flow_id")}
            if kind.series:
                rels["flow-messages"] = related("flow-message", "flow_message_id")
            return rels
        return {}

    # --- segment reports ----------------------------------------------------------------------------------

    def _segments(self, text: str | None, buckets: Buckets, names: list[str], series: bool
                  ) -> list[dict[str, Any]]:
        segments = self.store.rows("segments")
        wanted = _segment_filter(text)
        results = []
        for g in sorted(segments.records(), key=segments.ident):
            if wanted is not None and segments.ident(g) not in wanted:
                continue
            figures = self.segments.figures(g, buckets)
            stats = {name: figures[name] if series else figures[name][0] for name in names}
            results.append({"groupings": {"segment_id": segments.ident(g)}, "statistics": stats})
        return results

    # --- timeframes and cursors ---------------------------------------------------------------------------

    def timeframe(self, timeframe: Any, tz: ZoneInfo) -> tuple[datetime, datetime]:
        """[start, end) as aware datetimes in the account timezone; keys resolve against today's date."""
        if isinstance(timeframe, dict) and "key" in timeframe:
            today = datetime.now(tz).replace(hour=0, minute=0, second=0, microsecond=0)
            month = today.replace(day=1)

            def months(n: int) -> datetime:
                y, m = divmod(month.year * 12 + month.month - 1 + n, 12)
                return month.replace(year=y, month=m + 1)

            week = today - timedelta(days=today.weekday())
            days = {"last_7_days": 7, "last_30_days": 30, "last_90_days": 90, "last_365_days": 365}
            spans = {
                "today": (today, today + timedelta(days=1)), "yesterday": (today - timedelta(days=1), today),
                "this_week": (week, week + timedelta(days=7)), "last_week": (week - timedelta(days=7), week),
                "this_month": (month, months(1)), "last_month": (months(-1), month),
                "last_3_months": (months(-3), month), "last_12_months": (months(-12), month),
                "this_year": (months(1 - month.month), months(13 - month.month)),
                "last_year": (months(-11 - month.month), months(1 - month.month)),
                **{k: (today - timedelta(days=n), today) for k, n in days.items()},
            }
            span = spans.get(timeframe["key"])
            if span is None:
                raise StoreError(400, "invalid", f"Unknown timeframe key {timeframe['key']!r}.", "timeframe")
            return span
        try:
            start, end = (filters.local_datetime(str(timeframe[k]).strip()).replace(tzinfo=tz)
                          for k in ("start", "end"))
        except (KeyError, TypeError, ValueError) as exc:  # FilterError is a ValueError
            raise StoreError(400, "invalid", "timeframe needs a key or a start and an end.", "timeframe") from exc
        if end <= start or end - start > timedelta(days=366):
            raise StoreError(400, "invalid", "timeframe must end after it starts and span at most a year.",
                             "timeframe")
        return start, end

    def _encode(self, fingerprint: str, offset: int) -> str:
        payload = json.dumps([fingerprint, offset]).encode()
        mac = hmac.new(self.secret, payload, hashlib.blake2s).digest()[:8]
        return base64.urlsafe_b64encode(mac + payload).rstrip(b"=").decode()

    def _decode(self, cursor: str, fingerprint: str) -> int:
        try:
            raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        except (binascii.Error, ValueError):
            raw = b""
        mac, payload = raw[:8], raw[8:]
        if len(raw) <= 8 or not hmac.compare_digest(mac, hmac.new(self.secret, payload, hashlib.blake2s).digest()[:8]):
            raise StoreError(400, "invalid", "The page cursor is invalid.", "page_cursor")
        issued_for, offset = json.loads(payload)
        if issued_for != fingerprint:
            raise StoreError(400, "invalid", "The page cursor was issued for a different report.", "page_cursor")
        return int(offset)



def _message_filter(text: str | None, allowed: frozenset[str]) -> Callable[[dict[str, Any]], bool]:
    """Campaign and flow report filters: equals / contains-any on scalars, contains-any / -all on tags."""
    if not text:
        return lambda facts: True
    conds = _parse(text)
    for op, field, _ in conds:
        if field not in allowed or op not in ("equals", "contains-any", "contains-all", "any"):
            raise StoreError(400, "invalid", f"Cannot filter a report with {op}({field}).", "filter")

    def test(op: str, actual: Any, value: Any) -> bool:
        have = set(actual) if isinstance(actual, tuple) else {actual}  # tags are lists, the rest scalars
        wanted = value if isinstance(value, list) else [value]
        return (all if op == "contains-all" else any)(v in have for v in wanted)

    return lambda facts: all(test(op, facts[field], value) for op, field, value in conds)


def _segment_filter(text: str | None) -> set[str] | None:
    """Segment report filters: equals or any on segment_id, at most 100 ids."""
    if not text:
        return None
    conds = _parse(text)
    if len(conds) != 1 or conds[0][1] != "segment_id" or conds[0][0] not in ("equals", "any"):
        raise StoreError(400, "invalid", "Segment reports filter on segment_id with equals or any only.", "filter")
    value = conds[0][2]
    ids = value if isinstance(value, list) else [value]
    if len(ids) > 100:
        raise StoreError(400, "invalid", "At most 100 segment ids per filter.", "filter")
    return {str(i) for i in ids}


def _parse(text: str) -> list[tuple[str, str, Any]]:
    try:
        raw = filters.parse(text)
    except filters.FilterError as exc:
        raise StoreError(400, "invalid", str(exc), "filter") from exc
    return [(c.op, c.field, [v.text for v in c.value] if isinstance(c.value, list) else getattr(c.value, "text", None))
            for c in raw]
