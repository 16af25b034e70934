"""Time windows on a cursor field: the unit of incremental reads, of concurrency and of exactly-once.

A window is half-open, [lo, hi): a record belongs to exactly one window of a split, so windows read at
the same time never double a record at their edges. A chain that finds its window large while workers
are idle hands the rest of its window to them (split on demand), which balances skewed data (a burst of
orders, years of sparse history) without knowing the distribution up front.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from itertools import pairwise

from klaviyo_source.datetimes import parse_datetime

SECOND = timedelta(seconds=1)


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


def estimate_pages(window: Window, first: datetime, last: datetime) -> float:
    """Pages left in [last, hi) if data stays as dense as the page that covered [first, last]."""
    covered = max((last - first).total_seconds(), 1.0)
    return (window.hi - last).total_seconds() / covered
