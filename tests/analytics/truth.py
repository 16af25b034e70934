"""What the analyst models must say about a sandbox account, computed in plain Python from the sandbox's own
columns (the simulator's event arrays, messages and episodes), never from the loaded tables or SQL.

Two attributions: Klaviyo's own (the sandbox's attribution ledger, what `event_attributions` holds) and the
session-based last touch the models fall back to without it, implemented here independently: per person,
events in time order (touches first within a second), the latest eligible touch of each channel, credited
when the event is within that channel's lookback; of those, the latest.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import date, datetime, timezone
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from klaviyo_source.sandbox.data import METRICS
from klaviyo_source.sandbox.store import Store

HOUR = 3600
ELIGIBLE = frozenset({"Opened Email", "Clicked Email", "Clicked SMS"})
WINDOWS = {"email": 120 * HOUR, "sms": 24 * HOUR, "push": 24 * HOUR}  # dbt_project.yml defaults
ORDER = "Placed Order"


@dataclass(frozen=True)
class Owner:
    """A message and what it belongs to."""

    message_id: str
    campaign_id: str | None
    flow_id: str | None
    channel: str


def cents(value: Any) -> Decimal:
    return Decimal(str(value)).quantize(Decimal("0.01"))


class AccountTruth:
    """The loaded part of a sandbox account (events before `until`) and the figures the models must show."""

    def __init__(self, store: Store, until: datetime | None) -> None:
        w = store.world
        ev = w.events
        limit = int(until.timestamp()) if until else None
        self.store = store
        self.tz = ZoneInfo(w.brand.timezone)
        self.events = [i for i in store.events.index(("datetime",)).arr if limit is None or ev.ts[i] < limit]
        self.ident = {i: store.events.ident(i) for i in self.events}
        self.person = {i: store.profiles.ident(ev.profile[i]) for i in self.events}
        self.metric = {i: METRICS[ev.metric[i]].name for i in self.events}
        self.owners = [self._owner(m) for m in range(len(w.messages))]
        # an event is about a message when it is a message metric that names one ($message)
        self.own = {i: self.owners[ev.ref[i]] for i in self.events
                    if METRICS[ev.metric[i]].channel and ev.ref[i] >= 0}
        first_send: dict[int, int] = {}
        for i in self.events:
            if i in self.own:
                first_send.setdefault(ev.episode[i], ev.ts[i])
        self._first_send = first_send

    def _owner(self, m: int) -> Owner:
        w = self.store.world
        msg = w.messages[m]
        row = w.rows[msg.table][msg.row]
        if msg.table == "campaign_messages":
            return Owner(row.id, w.rows["campaigns"][row.parent].id, None, msg.channel)  # type: ignore[index]
        action = w.rows["flow_actions"][row.parent]  # type: ignore[index]
        return Owner(row.id, None, w.rows["flows"][action.parent].id, msg.channel)  # type: ignore[index]

    def value(self, i: int) -> Decimal:
        raw = self.store.events.view.properties(i).get("$value")
        return Decimal(str(raw)) if raw is not None else Decimal(0)

    def day(self, ts: int) -> date:
        return datetime.fromtimestamp(ts, timezone.utc).astimezone(self.tz).date()

    # --- attribution ---------------------------------------------------------------------------------------

    def native_credit(self) -> dict[int, int]:
        """Conversion -> the touch Klaviyo credits (the sandbox's attribution ledger), loaded events only."""
        loaded = set(self.events)
        ledger = self.store.attributions.ledger()  # type: ignore[attr-defined]
        return {c: t for c, t in ledger.credit.items() if c in loaded}

    def session_credit(self) -> dict[int, int]:
        """Event -> touch by the models' session rule, for events not about a message of their own."""
        ev = self.store.world.events
        by_person: dict[str, list[int]] = defaultdict(list)
        for i in self.events:
            by_person[self.person[i]].append(i)
        credit: dict[int, int] = {}
        for events in by_person.values():
            touch = {i: i in self.own and self.metric[i] in ELIGIBLE for i in events}
            events.sort(key=lambda i: (ev.ts[i], 0 if touch[i] else 1, self.ident[i]))
            last: dict[str, int] = {}
            for i in events:
                if touch[i]:
                    last[self.own[i].channel] = i
                elif i not in self.own:
                    live = [t for ch, t in last.items() if ev.ts[i] - ev.ts[t] <= WINDOWS[ch]]
                    if live:
                        credit[i] = max(live, key=lambda t: (ev.ts[t], self.ident[t]))
        return credit

    # --- figures -------------------------------------------------------------------------------------------

    def revenue_by_owner(self, credit: dict[int, int]) -> dict[tuple[str, str], tuple[int, Decimal]]:
        """(campaign|flow, id) -> (attributed orders, attributed revenue)."""
        out: dict[tuple[str, str], list[Any]] = defaultdict(lambda: [0, Decimal(0)])
        for conversion, touch in credit.items():
            if self.metric[conversion] != ORDER:
                continue
            owner = self.own[touch]
            key = ("campaign", owner.campaign_id) if owner.campaign_id else ("flow", owner.flow_id)
            out[key][0] += 1  # type: ignore[index]
            out[key][1] += self.value(conversion)  # type: ignore[index]
        return {k: (n, cents(v)) for k, (n, v) in out.items()}  # type: ignore[misc]

    def persons(self, credit: dict[int, int]) -> dict[str, tuple[int, Decimal, Decimal]]:
        """profile id -> (orders, lifetime revenue, attributed revenue)."""
        out: dict[str, list[Any]] = defaultdict(lambda: [0, Decimal(0), Decimal(0)])
        for i in self.events:
            if self.metric[i] == ORDER:
                row = out[self.person[i]]
                row[0] += 1
                row[1] += self.value(i)
                if i in credit:
                    row[2] += self.value(i)
        return {p: (n, cents(v), cents(a)) for p, (n, v, a) in out.items()}

    def send_day(self, i: int) -> date:
        """The day a message event counts on: its campaign's send, or the flow episode's first event."""
        campaign_send = self.store.world.messages[self.store.world.events.ref[i]].send_ts
        ts = campaign_send if campaign_send is not None else self._first_send[self.store.world.events.episode[i]]
        return self.day(ts)

    def message_days(self) -> dict[tuple[str, date], dict[str, int]]:
        """(message id, send day) -> delivered, opens, opens_unique, clicks, clicks_unique."""
        counts: dict[tuple[str, date], dict[str, Any]] = defaultdict(
            lambda: {"delivered": 0, "opens": 0, "clicks": 0, "opened": set(), "clicked": set()})
        for i, owner in self.own.items():
            row = counts[(owner.message_id, self.send_day(i))]
            name = self.metric[i]
            if name.startswith("Received"):
                row["delivered"] += 1
            elif name in ("Opened Email", "Opened Push"):
                row["opens"] += 1
                row["opened"].add(self.person[i])
            elif name in ("Clicked Email", "Clicked SMS"):
                row["clicks"] += 1
                row["clicked"].add(self.person[i])
        return {k: {"delivered": r["delivered"], "opens": r["opens"], "opens_unique": len(r["opened"]),
                    "clicks": r["clicks"], "clicks_unique": len(r["clicked"])} for k, r in counts.items()}

    # --- people ------------------------------------------------------------------------------------------------

    def consent(self) -> dict[str, tuple[str | None, bool, str | None, bool, bool]]:
        """profile id -> (email consent, can receive email marketing, sms consent, can receive sms marketing,
        can receive push marketing), from the simulator's own subscriptions of each live profile."""
        profiles = self.store.profiles
        out = {}
        for i in profiles.records():
            subs = profiles.view.subscriptions(i)
            email = (subs.get("email") or {}).get("marketing") or {}
            sms = (subs.get("sms") or {}).get("marketing") or {}
            push = (subs.get("mobile_push") or {}).get("marketing") or {}
            out[profiles.ident(i)] = (email.get("consent"), bool(email.get("can_receive_email_marketing")),
                                      sms.get("consent"), bool(sms.get("can_receive_sms_marketing")),
                                      bool(push.get("can_receive_push_marketing")))
        return out

    def rfm(self) -> dict[str, tuple[int, int, int]]:
        """profile id -> (recency, frequency, monetary) scores 1..5 of the people who ordered: quintiles of the
        latest order, the order count and the lifetime revenue, ties scored as the first of them."""
        ev = self.store.world.events
        orders: dict[str, list[Any]] = defaultdict(lambda: [0, 0, Decimal(0)])
        for i in self.events:
            if self.metric[i] == ORDER:
                row = orders[self.person[i]]
                row[0] = max(row[0], ev.ts[i])
                row[1] += 1
                row[2] += self.value(i)
        people = sorted(orders)

        def scores(measure: int) -> dict[str, int]:
            values = sorted(orders[p][measure] for p in people)
            first = {v: values.index(v) for v in values}  # rank - 1 of the first of equal values
            n = len(values)
            return {p: min(5, 1 + (5 * first[orders[p][measure]]) // (n - 1)) if n > 1 else 1 for p in people}

        recency, frequency, monetary = scores(0), scores(1), scores(2)
        return {p: (recency[p], frequency[p], monetary[p]) for p in people}

    # --- lists, segments and cohorts ---------------------------------------------------------------------------

    def growth(self, kind: str) -> tuple[dict[tuple[str, date], int], dict[str, int]]:
        """list or segment: ((group id, day) -> members who joined that day, group id -> members now), from the
        simulator's memberships (a member's latest join, as Klaviyo keeps it)."""
        w = self.store.world
        added: dict[tuple[str, date], int] = defaultdict(int)
        totals: dict[str, int] = {}
        for g, members in enumerate(w.members[kind]):
            group = w.rows[f"{kind}s"][g].id  # type: ignore[attr-defined]
            totals[group] = len(members)
            for joined in members.values():
                added[(group, self.day(joined))] += 1
        return dict(added), {g: n for g, n in totals.items() if n}

    def cohorts(self) -> dict[tuple[date, date], tuple[int, int, int, Decimal]]:
        """(month of first order, order month) -> (cohort size, customers who ordered, orders, revenue), months in
        the account's timezone, for the months with orders."""
        ev = self.store.world.events
        month = {i: self.day(ev.ts[i]).replace(day=1) for i in self.events if self.metric[i] == ORDER}
        first: dict[str, date] = {}
        for i, m in month.items():
            first[self.person[i]] = min(m, first.get(self.person[i], m))
        size: dict[date, int] = defaultdict(int)
        for m in first.values():
            size[m] += 1
        cells: dict[tuple[date, date], list[Any]] = defaultdict(lambda: [set(), 0, Decimal(0)])
        for i, m in month.items():
            cell = cells[(first[self.person[i]], m)]
            cell[0].add(self.person[i])
            cell[1] += 1
            cell[2] += self.value(i)
        return {k: (size[k[0]], len(people), n, cents(v)) for k, (people, n, v) in cells.items()}

