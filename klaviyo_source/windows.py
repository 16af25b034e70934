"""Time windows on a cursor field: the unit of incremental reads, of concurrency and of exactly-once.

A window is half-open, [lo, hi): a record belongs to exactly one window of a split, so windows read at
the same time never double a record at their edges. A first load plans its windows up front, as many as
requests are worth having in flight, so every chain is busy from the first second (`plan`); from then on
each chain's pages tell how dense its window is, and a chain that has nothing left to read takes the back
half of the window with the most rows still ahead (`Plan.steal`). That balances skewed data (a burst of
orders, years of sparse history) without knowing the distribution up front, at the cost of at most one
partly filled page per split.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from itertools import pairwise
from typing import Any

from klaviyo_source.datetimes import parse_datetime

SECOND = timedelta(seconds=1)
# Where a first load without a start date splits: the last year evenly (where most of an account's data
# is), each of the HISTORY_YEARS years before it as one window, and everything older as one more; idle chains
# split them once their first pages show their density. Probing for the oldest record first would cost a
# whole round trip before any chain starts. All history in one window was read from its oldest, sparsest
# end: its first page showed a fraction of what lay ahead (an account grows towards the present), and it was
# found out by halving, a round trip at a time. A window per year measures each year's density in the first
# round trip: at 1 s per answer, profiles' extraction went from 7.94 to 7.49 s (7 paired runs) and events'
# from 10.98 to 10.24 s (9 pairs). Only where enough chains start that the last year keeps nearly all of them.
HORIZON = timedelta(days=365)
HISTORY_YEARS = 3
CHAINS_PER_HISTORY_YEAR = 16


def parse_instant(value: str | datetime) -> datetime:
    """A Klaviyo or user datetime as an aware UTC datetime (`...Z` and `...+00:00` are one instant)."""
    if not isinstance(value, datetime):
        return parse_datetime(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc)


def klaviyo_time(value: datetime) -> str:
    """Rendered for a filter: UTC with `Z`, bare (Klaviyo rejects quoted datetimes)."""
    return value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S") + (
        f".{value.microsecond:06d}Z" if value.microsecond else "Z"
    )


@dataclass(frozen=True)
class Window:
    """[lo, hi) on the cursor; lo None means from the beginning of the data."""

    lo: datetime | None
    hi: datetime

    def filter(self, field: str, strict_lower: bool) -> list[str]:
        """Klaviyo filter expressions for this window.

        With only greater-than available (profiles), [lo, ...) is sent as greater-than(lo - 1s); the extra
        second is dropped again by `contains`, so the window stays exact whatever the data's precision.
        """
        parts = []
        if self.lo is not None:
            if strict_lower:
                parts.append(f"greater-than({field},{klaviyo_time(self.lo - SECOND)})")
            else:
                parts.append(f"greater-or-equal({field},{klaviyo_time(self.lo)})")
        parts.append(f"less-than({field},{klaviyo_time(self.hi)})")
        return parts

    def contains(self, value: datetime | None) -> bool:
        return value is not None and (self.lo is None or value >= self.lo) and value < self.hi

    def split(self, parts: int, start: datetime | None = None) -> Iterator[Window]:
        """The window from `start` (default lo) to hi in up to `parts` windows on whole seconds."""
        lo = start or self.lo
        if lo is None:
            raise ValueError("cannot split a window without a lower bound")
        span = int((self.hi - lo).total_seconds())
        parts = max(1, min(parts, span))
        edges = [lo + timedelta(seconds=span * i // parts) for i in range(parts)] + [self.hi]
        for a, b in pairwise(edges):
            if a < b:
                yield Window(a, b)


def plan(window: Window, parts: int, horizon: timedelta = HORIZON, since: datetime | None = None) -> list[Window]:
    """`window` in up to `parts` windows to read at once, split evenly on whole seconds, in the order to ask.

    `since`: where the data is expected to begin (a segment's members joined after it was created): the
    windows divide [since, hi) and the first one stays open below, so whatever lies before `since` is read
    all the same, exactly once.

    The wide windows (open below, a whole year) are asked for first, then the even ones newest first. At 1 s per
    answer a first round of 76 requests takes a second to send, so the last ones are answered two seconds in, and
    until a window's first page is in, nothing of it is split (`Plan.steal`). Accounts grow, and most data
    usually lies in the newest windows: asked for last, they left idle chains nothing to split for a second
    (30k profiles updated within the last 7, 30 or 90 days, replayed at 1 s per answer: 9.5, 8.5 and 8.4 s; newest
    first 7.9, 7.6 and 7.6 s, no slower where data spreads over years: tests/benchmarks/plan_replay.py; measured
    on the sandbox, 7% fewer requests and a smaller gain in time: tests/benchmarks/results.md).
    """
    if parts <= 1:
        return [window]
    wide: list[Window] = []
    if since is not None and since < window.hi - parts * SECOND and (window.lo is None or since > window.lo):
        first, *even = Window(since, window.hi).split(parts)
        wide = [Window(window.lo, first.hi)]
    elif window.lo is None:
        years = min(HISTORY_YEARS, parts // CHAINS_PER_HISTORY_YEAR)
        edges = [window.hi - horizon * (back + 1) for back in range(years + 1)]  # a year ago, two, ...
        wide = [Window(None, edges[-1]), *(Window(a, b) for a, b in pairwise(reversed(edges)))]
        even = list(Window(edges[0], window.hi).split(parts - len(wide)))
    else:
        even = list(window.split(parts))
    return [*wide, *reversed(even)]


# A page that shows its span dense lets up to this many pieces of what follows be read at once, before any
# of them is: data comes in bursts (a campaign send), and a burst read one page per round trip by one chain
# would set the pace of the whole table. The first piece is a page's worth at the density seen, and each
# next one PIECE_GROWTH times wider: a burst fades (its density falls while we cannot see it yet), so pieces
# of equal width left its tail to a few chains reading page after page (measured on the sandbox's campaign
# sends at 2 s per answer: 8 equal pieces, 47 s of extraction; 24 growing ones, 20 s). A burst that ends
# sooner costs one short request per piece too many; pieces are cut only for chains that would idle.
SPECULATIVE_PIECES = 24
PIECE_GROWTH = 1.25
BURST = 3.0  # a page this many times denser than the average so far is a burst
# A span is split when more than this many pages lie ahead of it. Split in halves, 1.5 pages cost two requests
# side by side instead of two one after the other (a full page, then the rest): the same requests, one round
# trip less. (Two pages, as before, left chains of members reading their last pages one round trip at a time:
# where the data grows denser towards the end, a page's density underestimates what follows it.)
STEAL_PAGES = 1.0
# In an endpoint's last round trip, where Klaviyo's rate rather than our CPU sets the pace, a span is split from
# this much of a page ahead. A page's estimate of what follows it is often short (data grows denser towards the
# present), and a span thought to hold most of a page that holds a little more costs a round trip of its own after
# every other chain has ended. Profiles at 1 s per answer ended that way about 0.9 s after their last full second
# of requests; splitting from 0.6 of a page there sends ~25 more requests (of ~395) and cut their extraction from
# 7.60 to 7.37 s on average (4 paired runs; segment members 11.3 to 10.5 s in 2). Where our CPU is the bottleneck
# (events), a split only queues one more answer for it: events at 1 s were 0.8 s slower when it applied to them.
END_PAGES = 0.6


@dataclass(eq=False)
class Span:
    """A window one chain reads, as far as it has got. `hi` moves down when another chain takes the rest."""

    lo: datetime | None
    hi: datetime
    key: Any = None  # what else the chain needs (its partition), passed on to spans split off it
    at: datetime | None = None  # cursor of the last row read
    density: float | None = None  # rows per second of cursor where this span reads now (or is expected to)
    pieces: int = 0  # pieces that may still be cut off at that density before one is read
    width: float | None = None  # seconds of cursor the next piece cut off keeps (grows piece by piece)
    held: datetime | None = None  # cursor of the last row of the page in hand (see Plan.reach)


@dataclass
class Plan:
    """The open spans of one read and the stealing of their remainders; thread-safe.

    An idle chain takes work from the span with the most rows ahead. A span that has read a full page knows
    the density where it reads now, so what follows is cut into page-sized pieces at that density (a burst
    is read by several chains at once); a span nothing is known of is estimated at the average density
    seen so far and cut in halves. Either way every cut leaves each side at least a second.
    """

    page_size: int
    _open: set[Span] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _rows: int = 0  # rows read by every span, over
    _covered: float = 0.0  # the seconds of cursor they spanned: the average density
    _starts: list[datetime] = field(default_factory=list)  # where bursts begin, not cut at yet (see `hint`)
    splits: int = 0

    def add(self, windows: list[Window], key: Any = None) -> list[Span]:
        spans = [Span(w.lo, w.hi, key) for w in windows]
        with self._lock:
            self._open.update(spans)
        return spans

    def reach(self, span: Span, last: datetime) -> datetime:
        """A page of `span` ends at `last`: from now on no split cuts below it. Returns where `span` ends now.

        Until `read` records how far the span got, a split would start from its previous page: cut below rows
        this page already holds, filtered with the end read here, they were read twice (CI saw 64 of 2,800
        segment memberships doubled when more windows were split near the end).
        """
        with self._lock:
            if span.held is None or last > span.held:
                span.held = last
            return span.hi

    def read(self, span: Span, first: datetime, last: datetime, rows: int, page: int | None = None) -> None:
        """A page of `span` gave `rows` rows with cursors from `first` to `last`; `page` is the size of the
        page as answered when more pages follow (None: it was the span's last page)."""
        with self._lock:
            covered = (last - (span.at or span.lo or first)).total_seconds()
            self._rows += rows
            self._covered += max(covered, 1.0)
            span.at = last
            if page is None:  # nothing left to take from it
                self._open.discard(span)
                return
            self.page_size = page  # what the endpoint answers (the page size asked for, or its default)
            spread = (last - first).total_seconds()
            # A page whose rows share one second (a bulk import writes hundreds at once) says nothing of how near
            # the next rows are. Taken over that second, it read as a burst and what followed was cut into pieces
            # of a second, nearly all empty. It is taken over the distance read to reach it instead; a page that
            # goes on in a second already reached tells nothing new, and the span's estimate stays as it was.
            if spread < 1 and covered < 1:
                return
            span.density = rows / (spread if spread >= 1 else covered)
            span.pieces = SPECULATIVE_PIECES
            span.width = None  # the next piece cut off is a page's worth at the density now seen

    def hint(self, starts: Iterable[datetime]) -> None:
        """Instants where a burst begins (a campaign's send). The next idle chain takes the rest of the span that
        holds one from there, before any split by density: the burst's first page then shows its density soon
        after the hint, where otherwise it waited for the chain reading up to it (the sandbox's campaign sends,
        read that way, were the last 0.5-0.9 s of events' first loads at 1 s per answer: results.md)."""
        with self._lock:
            self._starts = sorted({*self._starts, *starts})

    def _cut_at_start(self) -> Span | None:
        """The rest of an open span from the newest hinted start ahead of its frontier (under the lock)."""
        while self._starts:
            start = self._starts.pop()
            for span in self._open:
                frontier = _frontier(span)
                if (frontier is None or start - frontier >= SECOND) and span.hi - start >= SECOND:
                    taken = Span(start, span.hi, span.key)
                    span.hi = start
                    self._open.add(taken)
                    self.splits += 1
                    return taken
        return None

    def close(self, span: Span) -> None:
        with self._lock:
            self._open.discard(span)

    def steal(self, last_round: float | None = None) -> Span | None:
        """A piece of the open span with the most rows ahead (more than STEAL_PAGES pages), or None.

        `last_round`: the pages the endpoint gets through in one round trip when Klaviyo's rate holds it back
        (Governor.last_round_pages). Once fewer rows than that are ahead of all spans together, spans from
        END_PAGES of a page are split too (see there).
        """
        with self._lock:
            hinted = self._cut_at_start()
            if hinted is not None:
                return hinted
            average = self._rows / self._covered if self._covered else None
            best: Span | None = None
            total = 0.0
            ahead_of: list[tuple[float, Span]] = []
            for span in self._open:
                if span.at is None and span.density is None:
                    # no page of it back yet: its width says nothing of its rows (at the average density of the
                    # dense windows answered first, an old year nothing of which is in would be split over and over)
                    continue
                start = _frontier(span)
                density = span.density if span.pieces else average
                if start is None or not density:
                    continue
                ahead = density * max((span.hi - start).total_seconds(), 0.0)
                total += ahead
                if span.hi - start >= 2 * SECOND:
                    ahead_of.append((ahead, span))
            last = last_round is not None and total < last_round * self.page_size
            most = (END_PAGES if last else STEAL_PAGES) * self.page_size
            for ahead, span in ahead_of:
                if ahead > most:
                    best, most = span, ahead
            if best is None:
                return None
            start = _frontier(best)
            assert start is not None
            remaining = (best.hi - start).total_seconds()
            density = best.density if best.pieces else None
            if density and average and density > BURST * average:
                # a burst: keep a piece of it (the first a page's worth, each next one wider), let the next
                # chain start right behind (it may end any moment)
                keep = min(best.width or self.page_size / density, remaining / 2)
                taken = Span(start, best.hi, best.key, density=density, pieces=best.pieces - 1,
                             width=keep * PIECE_GROWTH)
                best.pieces = 0
            else:  # as dense as elsewhere: halves, each of which may be halved again before it is read
                keep = remaining / 2
                best.pieces = max(0, best.pieces - 1)
                taken = Span(start, best.hi, best.key, density=density, pieces=best.pieces)
            cut = start + timedelta(seconds=max(1, round(keep)))
            if cut >= best.hi:
                return None
            taken.lo, best.hi = cut, cut
            self._open.add(taken)
            self.splits += 1
            return taken


def _frontier(span: Span) -> datetime | None:
    """Where what `span`'s chain has not read yet begins: past its last page read or in hand."""
    start = span.at or span.lo
    if span.held is not None and (start is None or span.held > start):
        return span.held
    return start
