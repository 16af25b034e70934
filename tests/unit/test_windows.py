from __future__ import annotations

from datetime import datetime, timedelta, timezone
from itertools import pairwise

import pytest

from klaviyo_source.windows import Window, estimate_pages, klaviyo_time, parse_instant

UTC = timezone.utc


def test_instants_compare_as_datetimes_not_strings() -> None:
    assert parse_instant("2024-05-01T10:00:00Z") == parse_instant("2024-05-01T10:00:00+00:00")
    assert parse_instant("2024-05-01T12:00:00+02:00") == datetime(2024, 5, 1, 10, tzinfo=UTC)
    assert parse_instant("2024-05-01") == datetime(2024, 5, 1, tzinfo=UTC)
    with pytest.raises(ValueError):
        parse_instant("yesterday-ish")


def test_filter_times_are_utc_with_z() -> None:
    assert klaviyo_time(parse_instant("2024-05-01T12:00:00+02:00")) == "2024-05-01T10:00:00Z"


def test_split_is_a_partition_on_whole_seconds() -> None:
    window = Window(datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 1, 1, 0, 0, 10, tzinfo=UTC))
    parts = list(window.split(3))
    assert parts[0].lo == window.lo and parts[-1].hi == window.hi
    assert all(a.hi == b.lo for a, b in pairwise(parts))
    assert all(p.lo.microsecond == 0 for p in parts)  # type: ignore[union-attr]
    # Every instant of the window is in exactly one part.
    instant = window.lo
    while instant < window.hi:  # type: ignore[operator]
        assert sum(p.contains(instant) for p in parts) == 1
        instant += timedelta(milliseconds=250)  # type: ignore[operator]


def test_split_never_makes_more_parts_than_seconds() -> None:
    window = Window(datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 1, 1, 0, 0, 2, tzinfo=UTC))
    assert len(list(window.split(50))) == 2


def test_filters_half_open_and_strict_lower_sends_one_second_early() -> None:
    window = Window(datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 2, 1, tzinfo=UTC))
    assert window.filter("datetime", strict_lower=False) == [
        "greater-or-equal(datetime,2024-01-01T00:00:00Z)",
        "less-than(datetime,2024-02-01T00:00:00Z)",
    ]
    assert window.filter("updated", strict_lower=True)[0] == "greater-than(updated,2023-12-31T23:59:59Z)"
    assert Window(None, window.hi).filter("updated", strict_lower=True) == ["less-than(updated,2024-02-01T00:00:00Z)"]


def test_estimate_pages_scales_with_density() -> None:
    window = Window(None, datetime(2024, 1, 1, 1, tzinfo=UTC))
    first = datetime(2024, 1, 1, tzinfo=UTC)
    assert estimate_pages(window, first, first + timedelta(minutes=6)) == pytest.approx(9.0)
