"""Klaviyo's attribution model over the sandbox's events: which message a conversion is credited to.

Klaviyo credits a conversion to the last message interaction inside the account's attribution windows
(help centre, 2024-2025): the last email open, email click or SMS click by the same profile before the
conversion, each kind with its own lookback. Every event of a metric that is not a message metric is a
conversion (the reporting API lets any metric be the conversion metric). At revision 2026-07-15 the API
returns the credit as `attribution` resources, with `include=attributions` on GET /api/events: no
attributes, relationships `event`, `attributed-event`, and `campaign` + `campaign-message` or `flow` +
`flow-message` + `flow-message-variation` (spec: AttributionResponseObjectResource).

One pass over the events in time order (ties by record number, as the store sorts them) computes every
conversion's credit and every send's time (the first message event of an episode); it is recomputed
lazily when events were added or deleted. The reports module reads the same ledger, so the report
figures and the attributions the API returns never disagree.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from klaviyo_source.sandbox.data import DAY, METRICS, M, World
from klaviyo_source.sandbox.ids import mix64

if TYPE_CHECKING:
    from klaviyo_source.sandbox.store import Events

# Touch kinds and the metric that makes each; conversions are every metric without a message channel.
EMAIL_OPEN, EMAIL_CLICK, SMS_CLICK = 0, 1, 2
TOUCHES = {M["Opened Email"]: EMAIL_OPEN, M["Clicked Email"]: EMAIL_CLICK, M["Clicked SMS"]: SMS_CLICK}
CONVERSIONS = frozenset(i for i, m in enumerate(METRICS) if m.channel is None)
MESSAGE_EVENTS = frozenset(i for i, m in enumerate(METRICS) if m.channel is not None)


@dataclass(frozen=True)
class Windows:
    """The account's attribution windows in seconds; Klaviyo's defaults for accounts made since 2024-10-09."""

    email_open: int = 5 * DAY
    email_click: int = 5 * DAY
    sms_click: int = 5 * DAY

    def by_kind(self) -> tuple[int, int, int]:
        return self.email_open, self.email_click, self.sms_click


class Ledger:
    """The outcome of one pass: conversion -> credited touch, and each episode's send time."""

    def __init__(self, credit: dict[int, int], sends: dict[int, int]) -> None:
        self.credit = credit  # conversion event -> the touch event it is attributed to
        self.sends = sends  # episode -> time of its first message event (when that message was sent)


class Attributions:
    """The attribution model of one store; thread-safe (the store's lock guards callers anyway)."""

    def __init__(self, world: World, events: Events, windows: Windows | None = None) -> None:
        self.world = world
        self.events = events
        self.windows = windows or Windows()
        self.salt = world.seed * 131 + 23
        self._lock = threading.Lock()
        self._ledger: Ledger | None = None
        self._seen = -1

    def ledger(self) -> Ledger:
        """The current ledger; recomputed when events were added or deleted since the last pass."""
        with self._lock:
            if self._ledger is None or self.events.version != self._seen:
                self._ledger = self._compute()
                self._seen = self.events.version
            return self._ledger

    def configure(self, windows: Windows) -> None:
        with self._lock:
            self.windows = windows
            self._ledger = None

    def _compute(self) -> Ledger:
        ev = self.world.events
        ts, profile, metric, ref, episode = ev.ts, ev.profile, ev.metric, ev.ref, ev.episode
        window = self.windows.by_kind()
        last: dict[int, list[tuple[int, int] | None]] = {}  # profile -> last touch (time, event) per kind
        credit: dict[int, int] = {}
        sends: dict[int, int] = {}
        for i in self.events.index(("datetime",)).arr:  # alive events in time order
            m = metric[i]
            if m in CONVERSIONS:
                touches = last.get(profile[i])
                if touches is None:
                    continue
                t = ts[i]
                best = None
                for kind, touch in enumerate(touches):
                    if touch is not None and t - touch[0] <= window[kind] and (best is None or touch > best):
                        best = touch
                if best is not None:
                    credit[i] = best[1]
                continue
            if m not in MESSAGE_EVENTS:
                continue
            sends.setdefault(episode[i], ts[i])
            touch_kind = TOUCHES.get(m)
            if touch_kind is not None and ref[i] >= 0:
                slots = last.get(profile[i])
                if slots is None:
                    slots = last[profile[i]] = [None, None, None]
                slots[touch_kind] = (ts[i], i)
        return Ledger(credit, sends)

    # --- the API's view ---------------------------------------------------------------------------------

    def ident(self, conversion: int) -> str:
        """An attribution's id (32 hex digits, as Klaviyo's), derived from its conversion event."""
        return f"{mix64(conversion, self.salt):016x}{mix64(conversion, self.salt + 1):016x}"

    def of(self, event: int) -> int | None:
        """The touch an event is attributed to, or None."""
        return self.ledger().credit.get(event)

    def refs_json(self, events: list[int]) -> list[str]:
        """Each event's `relationships.attributions.data` as JSON text (the events render path)."""
        credit = self.ledger().credit
        return [f'[{{"type":"attribution","id":"{self.ident(i)}"}}]' if i in credit else "[]" for i in events]

    def targets(self, conversion: int) -> dict[str, tuple[str, str]]:
        """Relationship name -> (type, id) of one attribution, in the spec's order."""
        w = self.world
        touch = self.ledger().credit[conversion]
        view = self.events.view
        out = {"event": ("event", view.ident(conversion)), "attributed-event": ("event", view.ident(touch))}
        message = w.messages[w.events.ref[touch]]
        row = w.rows[message.table][message.row]
        if message.table == "campaign_messages":
            campaign = w.rows["campaigns"][row.parent]  # type: ignore[index]
            out["campaign"] = ("campaign", campaign.id)
            out["campaign-message"] = ("campaign-message", row.id)
        else:
            flow = w.rows["flows"][w.rows["flow_actions"][row.parent].parent]  # type: ignore[index]
            out["flow"] = ("flow", flow.id)
            out["flow-message"] = ("flow-message", row.id)
            out["flow-message-variation"] = ("flow-message", row.id)
        return out

    def relationships(self, conversion: int) -> dict[str, Any]:
        return {name: {"data": {"type": rtype, "id": ident}}
                for name, (rtype, ident) in self.targets(conversion).items()}

    def ground_truth(self, limit: int | None) -> list[list[str | None]]:
        """Every attribution as a table row: id, event_id, attributed_event_id, campaign_id,
        campaign_message_id, flow_id, flow_message_id, flow_message_variation_id (conversions before `limit`)."""
        ts = self.world.events.ts
        rows = []
        for conversion in self.ledger().credit:
            if limit is not None and ts[conversion] >= limit:
                continue
            targets = self.targets(conversion)
            rows.append([self.ident(conversion), *((targets.get(name) or (None, None))[1] for name in (
                "event", "attributed-event", "campaign", "campaign-message", "flow", "flow-message",
                "flow-message-variation"))])
        return sorted(rows, key=lambda r: str(r[0]))
