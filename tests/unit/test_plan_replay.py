"""Every row of a first load is read exactly once however its windows are split, with answers in flight.

The window tests check one split at a time; here `windows.plan` and `Plan.steal` run a whole first load in
simulated time (tests/benchmarks/plan_replay.py): a hundred chains with requests in flight, splits cut while
a chain's next page is on its way, spans that end inside a page, data that is even, skewed, bursty, tied on
whole seconds or all older than the planned years.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest

from tests.benchmarks.plan_replay import replay

NOW = 1_790_000_000.0
DAY = 86_400.0
YEAR = 365 * DAY
ROWS = 20_000


def _even(r: random.Random) -> float:
    return NOW - YEAR * r.random()


def _recent(r: random.Random) -> float:  # an account that grows: most rows in the last months
    return NOW - 4 * YEAR * r.random() ** 2.5


def _burst(r: random.Random) -> float:  # a campaign send: most rows within an hour
    return NOW - 7 * DAY + 3600 * r.random() if r.random() < 0.7 else NOW - 2 * YEAR * r.random()


def _tied(r: random.Random) -> float:  # whole seconds, ten rows on each
    return float(int(NOW - 2_000 * r.random()))


def _old(r: random.Random) -> float:  # nothing since the planned years
    return NOW - 6 * YEAR + YEAR * r.random()


@pytest.mark.parametrize("strict_lower", [True, False], ids=["greater-than", "greater-or-equal"])
@pytest.mark.parametrize("draw", [_even, _recent, _burst, _tied, _old])
def test_every_row_is_read_exactly_once(draw: Callable[[random.Random], float], strict_lower: bool) -> None:
    r = random.Random(7)
    values = sorted(draw(r) for _ in range(ROWS))
    result = replay(values, NOW, 100, strict_lower=strict_lower, latency=1.0, rate=70.0, limit=80, parts=76)
    doubled = [i for i, n in result.delivered.items() if n > 1]
    assert not doubled, f"{len(doubled)} rows read twice"
    assert len(result.delivered) == ROWS, f"{ROWS - len(result.delivered)} rows never read"
    assert result.requests >= ROWS // 100


def test_skewed_data_is_split_and_read_in_few_more_requests_than_pages() -> None:
    """Data that grows towards the present leaves most planned windows short: idle chains take over the rest
    of the long ones, and each split costs at most a partly filled page."""
    r = random.Random(3)
    values = sorted(_recent(r) for _ in range(ROWS))
    result = replay(values, NOW, 100, strict_lower=True, latency=1.0, rate=70.0, limit=80, parts=76)
    assert result.splits > 20
    assert result.requests <= ROWS // 100 + 76 + result.splits


@pytest.mark.parametrize("strict_lower", [True, False], ids=["greater-than", "greater-or-equal"])
def test_rows_imported_a_hundred_on_one_second_are_read_in_few_more_requests_than_pages(strict_lower: bool) -> None:
    """A bulk import writes its rows a hundred on one second. Read as bursts, such pages had what followed them cut
    into pieces of a second, nearly all empty: 2,200-2,800 requests for these 200 pages."""
    r = random.Random(5)
    values = sorted(t for _ in range(200) for t in [float(int(NOW - 7 * DAY * r.random()))] * 100)
    result = replay(values, NOW, 100, strict_lower=strict_lower, latency=1.0, rate=70.0, limit=80, parts=76)
    assert len(result.delivered) == len(values) and max(result.delivered.values()) == 1
    assert result.requests < 4 * len(values) // 100
