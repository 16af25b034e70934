"""Verification's calendar: days of the account's timezone (DST included), request spans, change markers."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from itertools import pairwise
from zoneinfo import ZoneInfo

from klaviyo_source.verify import MAX_SPAN, Check, Report, _changed, _day_edges, _spans

NEW_YORK = ZoneInfo("America/New_York")
UTC = timezone.utc


def test_days_are_local_midnights_across_daylight_saving() -> None:
    # 2026-03-08: clocks go forward in New York, the day has 23 hours; 2026-11-01 has 25
    lo, hi = datetime(2026, 3, 6, 12, tzinfo=UTC), datetime(2026, 3, 10, 15, 30, tzinfo=UTC)
    edges = _day_edges(lo, hi, NEW_YORK)
    assert edges[0] == datetime(2026, 3, 6, 5, tzinfo=UTC)  # midnight EST
    assert edges[-1] == hi
    assert [e.astimezone(NEW_YORK).hour for e in edges[:-1]] == [0, 0, 0, 0, 0]
    lengths = [(b - a) for a, b in pairwise(edges[:-1])]
    assert timedelta(hours=23) in lengths
    fall = _day_edges(datetime(2026, 11, 1, 4, tzinfo=UTC), datetime(2026, 11, 3, tzinfo=UTC), NEW_YORK)
    assert fall[1] - fall[0] == timedelta(hours=25)


def test_days_in_a_half_hour_zone() -> None:
    edges = _day_edges(datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 3, tzinfo=UTC), ZoneInfo("Asia/Kolkata"))
    assert edges[0] == datetime(2025, 12, 31, 18, 30, tzinfo=UTC)
    assert all((b - a) == timedelta(days=1) for a, b in pairwise(edges[:-1]))


def test_spans_cover_the_period_in_pieces_one_request_may_ask_for() -> None:
    edges = _day_edges(datetime(2024, 1, 1, tzinfo=UTC), datetime(2026, 6, 1, tzinfo=UTC), ZoneInfo("UTC"))
    pieces = _spans(edges, MAX_SPAN)
    assert pieces[0][0] == edges[0] and pieces[-1][1] == edges[-1]
    assert all(b - a <= MAX_SPAN for a, b in pieces)
    assert all(a2 == b1 for (_, b1), (a2, _) in pairwise(pieces))
    assert len(pieces) == 3
    month = _day_edges(datetime(2026, 5, 1, tzinfo=UTC), datetime(2026, 6, 1, tzinfo=UTC), NEW_YORK)
    assert len(_spans(month, MAX_SPAN)) == 1  # a normal run: one request per metric


def test_change_markers_compare_instants_not_text() -> None:
    held = {"a": datetime(2026, 1, 1, 12, tzinfo=UTC), "b": datetime(2026, 1, 1, 12, tzinfo=UTC), "c": None}
    assert not _changed("a", "2026-01-01T12:00:00+00:00", held)
    assert not _changed("a", "2026-01-01T07:00:00-05:00", held)
    assert not _changed("a", datetime(2026, 1, 1, 7, tzinfo=ZoneInfo("America/Lima")), held)
    assert _changed("b", "2026-01-01T12:00:01Z", held)
    assert _changed("c", "2026-01-01T12:00:00Z", held)
    assert _changed("new", "2026-01-01T12:00:00Z", held)


def test_summary_names_what_was_repaired_and_what_still_differs() -> None:
    at = datetime(2026, 5, 31, tzinfo=UTC)
    report = Report(at, "America/New_York", (at - timedelta(days=30), at), "soft", True, requests=31)
    report.checks = [
        Check("event_count", "events", "m1", "Placed Order", None, 10, 9, 10, "repaired"),
        Check("event_count", "events", "m1", "Placed Order", at.date(), 3, 2, 3, "repaired"),
        Check("member_count", "list_members", "l1", "VIP", None, 5, 6, 6, "differs"),
    ]
    report.flagged = {"profiles": 2}
    line = report.summary()
    assert "events of 1 metrics" in line and "1 metric-days repaired" in line
    assert "1 lists/segments: 0 repaired" in line and "deletions flagged: profiles 2" in line
    assert line.endswith("1 still differ; 31 requests")
    assert report.differing == [report.checks[2]]
