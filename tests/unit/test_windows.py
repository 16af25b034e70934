from __future__ import annotations

from datetime import datetime, timedelta, timezone
from itertools import pairwise

import pytest

from klaviyo_source.windows import SPECULATIVE_PIECES, Plan, Window, klaviyo_time, parse_instant, plan

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


def test_a_first_load_is_planned_evenly_and_all_history_splits_the_last_year() -> None:
    hi = datetime(2025, 1, 1, tzinfo=UTC)
    known = plan(Window(hi - timedelta(days=10), hi), 5)
    assert [w.hi - w.lo for w in known] == [timedelta(days=2)] * 5  # type: ignore[operator]
    assert [w.hi for w in known] == [hi - timedelta(days=2 * i) for i in range(5)]  # newest first
    history = plan(Window(None, hi), 5)
    assert history[0] == Window(None, hi - timedelta(days=365))  # before the last year: one window, asked first
    assert [w.hi - w.lo for w in history[1:]] == [timedelta(days=365 / 4)] * 4  # type: ignore[operator]
    assert history[1].hi == hi
    assert all(a.hi == b.lo for a, b in pairwise([history[0], *reversed(history[1:])]))
    assert plan(Window(None, hi), 1) == [Window(None, hi)]
    year = timedelta(days=365)
    many = plan(Window(None, hi), 80)  # enough chains: each of the three years before the last one its own window
    assert many[:4] == [Window(None, hi - 4 * year), Window(hi - 4 * year, hi - 3 * year),
                        Window(hi - 3 * year, hi - 2 * year), Window(hi - 2 * year, hi - year)]
    assert len(many) == 80 and many[4].hi == hi and many[-1].lo == hi - year
    assert all(a.hi == b.lo for a, b in pairwise([*many[:4], *reversed(many[4:])]))


def test_a_parents_windows_are_planned_from_where_its_data_begins_and_still_cover_everything() -> None:
    hi = datetime(2025, 1, 1, tzinfo=UTC)
    created = hi - timedelta(days=10)  # a segment's members joined after it was created, as far as we know
    for window in (Window(None, hi), Window(hi - timedelta(days=400), hi)):
        windows = plan(window, 5, since=created)
        assert windows[0].lo == window.lo  # open below: a member that joined earlier is read all the same
        # the window open below first, then the rest newest first
        assert [w.hi for w in windows] == [created + timedelta(days=2 * i) for i in (1, 5, 4, 3, 2)]
        assert all(a.hi == b.lo for a, b in pairwise([windows[0], *reversed(windows[1:])]))
        instant = hi - timedelta(days=400)
        while instant < hi:  # every instant in exactly one window
            assert sum(w.contains(instant) for w in windows) == 1
            instant += timedelta(hours=5, seconds=1)
    # a start after the parent's creation, or a parent created a moment ago: planned as without it
    later = Window(hi - timedelta(days=5), hi)
    assert plan(later, 5, since=created) == plan(later, 5)
    assert plan(Window(None, hi), 5, since=hi - timedelta(seconds=3)) == plan(Window(None, hi), 5)


def test_an_idle_chain_takes_half_of_the_window_with_most_rows_ahead() -> None:
    t0 = datetime(2025, 1, 1, tzinfo=UTC)
    hour = timedelta(hours=1)
    spans = Plan(page_size=100)
    small, large = spans.add([Window(t0, t0 + 4 * hour), Window(t0 + 4 * hour, t0 + 20 * hour)])
    assert spans.steal() is None  # nothing read yet: no density to go by
    spans.read(small, t0, t0 + hour, 100, 100)  # 100 rows an hour: 300 ahead
    spans.read(large, t0 + 4 * hour, t0 + 5 * hour, 100, 100)  # as dense: 1,500 ahead
    taken = spans.steal()
    assert taken is not None and taken.key == large.key
    assert (large.hi, taken.lo, taken.hi) == (t0 + 12.5 * hour, t0 + 12.5 * hour, t0 + 20 * hour)
    again = spans.steal()  # either half is halved again, the taken one before it is read at all
    assert again is not None and again.hi - again.lo == 3.75 * hour
    everything = [small, large, taken, again]
    instant = t0
    while instant < t0 + 20 * hour:  # every instant still belongs to exactly one span
        assert sum(Window(s.lo, s.hi).contains(instant) for s in everything) == 1
        instant += timedelta(minutes=7)


def test_a_window_none_of_whose_pages_has_come_back_is_not_split() -> None:
    """Its width says nothing of its rows: a year planned as one window may hold nothing at all."""
    t0 = datetime(2025, 1, 1, tzinfo=UTC)
    hour = timedelta(hours=1)
    spans = Plan(page_size=100)
    read, unread = spans.add([Window(t0, t0 + 4 * hour), Window(t0 + 4 * hour, t0 + 365 * 24 * hour)])
    spans.read(read, t0, t0 + hour, 100, 100)  # 300 ahead; at this density the year would hold 876,000
    taken = spans.steal()
    assert taken is not None and (taken.lo, taken.hi) == (t0 + 2.5 * hour, t0 + 4 * hour)
    assert unread.hi == t0 + 365 * 24 * hour
    spans.read(unread, t0 + 4 * hour, t0 + 5 * hour, 100, 100)  # its first page: now it is the largest
    taken = spans.steal()
    assert taken is not None and taken.hi == t0 + 365 * 24 * hour


def test_a_burst_is_split_where_it_is_reached_not_by_the_average_before_it() -> None:
    t0 = datetime(2025, 1, 1, tzinfo=UTC)
    spans = Plan(page_size=1000)
    (span,) = spans.add([Window(t0, t0 + timedelta(days=30))])
    spans.read(span, t0, t0 + timedelta(days=20), 1000, 1000)  # sparse: 50 rows a day, 500 ahead
    assert spans.steal() is None
    burst = t0 + timedelta(days=20, minutes=2)
    spans.read(span, t0 + timedelta(days=20), burst, 1000, 1000)  # a campaign send: 1,000 rows in two minutes
    taken = spans.steal()
    assert taken is not None and taken.lo == burst + timedelta(minutes=2)  # the owner keeps one page's worth


def test_a_page_tied_on_one_second_is_no_burst() -> None:
    """A page whose rows share one second (a bulk import) is taken over the distance read, not over that second."""
    t0 = datetime(2025, 1, 1, tzinfo=UTC)
    spans = Plan(page_size=100)
    (span,) = spans.add([Window(t0, t0 + timedelta(days=30))])
    spans.read(span, t0, t0 + timedelta(days=1), 100, 100)  # 100 rows a day
    batch = t0 + timedelta(days=2)
    spans.read(span, batch, batch, 100, 100)  # the next day's 100 rows, all on one second
    assert span.density == 100 / timedelta(days=1).total_seconds()
    spans.read(span, batch, batch, 100, 100)  # more of that second: nothing new is learnt of what follows
    assert span.density == 100 / timedelta(days=1).total_seconds()
    taken = spans.steal()
    assert taken is not None and taken.lo == batch + timedelta(days=14)  # halves, not a piece of a second


def test_nothing_is_split_at_one_page_ahead_nor_after_the_last_page() -> None:
    t0 = datetime(2025, 1, 1, tzinfo=UTC)
    spans = Plan(page_size=100)
    (c,) = spans.add([Window(t0, t0 + timedelta(hours=2, minutes=30))])
    spans.read(c, t0, t0 + timedelta(hours=1), 100, 100)  # 150 ahead: two requests side by side, not in a row
    taken = spans.steal()
    assert taken is not None and taken.key == c.key
    spans.close(c)
    spans.close(taken)
    a, b = spans.add([Window(t0, t0 + timedelta(hours=3)), Window(t0 + timedelta(hours=3), t0 + timedelta(hours=9))])
    spans.read(a, t0, t0 + timedelta(hours=1), 100, 100)  # 200 ahead
    spans.read(b, t0 + timedelta(hours=3), t0 + timedelta(hours=4), 60)  # its last page: b has ended
    taken = spans.steal()
    assert taken is not None and taken.key == a.key
    spans.close(b)
    assert spans.steal() is None  # a's part is one page now, the taken part one page too


def test_a_bursts_pieces_grow_so_that_a_fading_burst_is_covered_in_one_round() -> None:
    t0 = datetime(2025, 1, 1, tzinfo=UTC)
    spans = Plan(page_size=1000)
    (span,) = spans.add([Window(t0, t0 + timedelta(days=30))])
    spans.read(span, t0, t0 + timedelta(days=20), 1000, 1000)  # sparse: 50 rows a day
    burst = t0 + timedelta(days=20, seconds=100)
    spans.read(span, t0 + timedelta(days=20), burst, 1000, 1000)  # 1,000 rows in 100 s
    cut = [spans.steal() for _ in range(SPECULATIVE_PIECES)]
    assert all(piece is not None for piece in cut)
    pieces = [span, *[p for p in cut if p is not None]]
    widths = [(p.hi - (p.at or p.lo)).total_seconds() for p in pieces[:-1]]  # the last holds the rest
    assert widths[0] == 100  # a page's worth at the density seen
    assert all(b >= 1.2 * a for a, b in pairwise(widths))  # each next piece wider
    assert sum(widths) > 20 * 100  # more than the 24 pages that pieces of one page each would cover
    assert all(a.hi == b.lo for a, b in pairwise(pieces[1:]))
    spans.read(pieces[-1], pieces[-1].lo, pieces[-1].lo + timedelta(seconds=50), 1000, 1000)  # denser still
    again = spans.steal()
    assert again is not None and again.lo == pieces[-1].lo + timedelta(seconds=100)  # a page at the new density


def test_a_split_never_cuts_below_the_page_a_chain_holds() -> None:
    t0 = datetime(2025, 1, 1, tzinfo=UTC)
    hour = timedelta(hours=1)
    spans = Plan(page_size=100)
    (span,) = spans.add([Window(t0, t0 + 2.8 * hour)], key="a")
    spans.read(span, t0, t0 + hour, 100, 100)  # 100 rows an hour: 180 ahead
    # the next page has arrived, up to 2 h, and is being filtered to where the window ends now; an idle chain
    # splits the window before the page is recorded: halving from the last recorded row (1 h) would cut at 1.9 h,
    # inside the page in hand, and the rows from 1.9 h to 2 h would be read twice
    hi = spans.reach(span, t0 + 2 * hour)
    assert hi == t0 + 2.8 * hour
    taken = spans.steal()
    assert taken is None or taken.lo > t0 + 2 * hour
    assert span.hi >= t0 + 2 * hour

def test_in_the_last_round_trip_spans_are_split_from_part_of_a_page() -> None:
    t0 = datetime(2025, 1, 1, tzinfo=UTC)
    hour = timedelta(hours=1)
    spans = Plan(page_size=100)
    (span,) = spans.add([Window(t0, t0 + 1.8 * hour)], key="a")
    spans.read(span, t0, t0 + hour, 100, 100)  # 100 rows an hour: 80 ahead, under a page
    assert spans.steal() is None  # mid-run: a span thought to hold less than a page is read whole
    assert spans.steal(last_round=0.5) is None  # more rows ahead than a round trip gets through: not the last
    taken = spans.steal(last_round=1)  # the last round trip: 40 and 40 rows side by side
    assert taken is not None and taken.key == "a"
    assert (span.hi, taken.lo, taken.hi) == (t0 + 1.4 * hour, t0 + 1.4 * hour, t0 + 1.8 * hour)
    assert spans.steal(last_round=1) is None  # 40 rows ahead each: under END_PAGES


def test_an_idle_chain_starts_where_a_hinted_burst_begins_before_any_split_by_density() -> None:
    """A campaign's send announces a burst: the next idle chain reads from there, even before a page of the span
    is back; a start the span's chain has read past, or within a second of the span's edges, is no cut."""
    t0 = datetime(2025, 1, 1, tzinfo=UTC)
    day = timedelta(days=1)
    spans = Plan(page_size=1000)
    read, unread = spans.add([Window(t0, t0 + 10 * day), Window(t0 + 10 * day, t0 + 20 * day)])
    spans.read(read, t0, t0 + 4 * day, 1000, 1000)  # read up to day 4
    spans.hint([t0 + 2 * day, t0 + 6 * day, t0 + 15 * day, t0 + 20 * day - timedelta(milliseconds=500)])
    taken = [spans.steal() for _ in range(3)]
    assert [(s.lo, s.hi) for s in taken if s is not None] == [(t0 + 15 * day, t0 + 20 * day),
                                                              (t0 + 6 * day, t0 + 10 * day)]
    assert unread.hi == t0 + 15 * day and read.hi == t0 + 6 * day
    assert taken[1] is not None and taken[1].density is None  # nothing known of it until its first page
    assert taken[2] is None or taken[2].lo > t0 + 4 * day  # the start behind the frontier was dropped
    everything = [read, unread, *(s for s in taken if s is not None)]
    instant = t0
    while instant < t0 + 20 * day:  # every instant still belongs to exactly one span
        assert sum(Window(s.lo, s.hi).contains(instant) for s in everything) == 1
        instant += timedelta(minutes=37)
