"""One datetime grammar on every Python: the forms Klaviyo documents parse, the same instant everywhere."""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone

import pyarrow as pa
import pytest

from klaviyo_source.datetimes import UTC_TS, is_datetime, parse_datetime, timestamps

UTC = timezone.utc
NOON = datetime(2024, 1, 15, 10, 30, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "instant"),
    [
        ("2024-01-15T10:30:00+00:00", NOON),
        ("2024-01-15T10:30:00Z", NOON),  # 3.10's fromisoformat rejects these four
        ("2024-01-15T10:30:00.123Z", NOON.replace(microsecond=123000)),
        ("2024-01-15T10:30:00+0000", NOON),
        ("2024-01-15T10:30:00.12+00:00", NOON.replace(microsecond=120000)),
        ("2024-01-15T10:30:00.123456789Z", NOON.replace(microsecond=123456)),  # nanoseconds: truncated
        ("2024-01-15T10:30:00.1234567+00:00", NOON.replace(microsecond=123456)),
        ("2024-01-15 10:30:00Z", NOON),  # Klaviyo's datetime guide lists the space form
        ("2024-01-15t10:30:00z", NOON),
        ("2024-01-15T10:30:00", NOON),  # no offset: UTC, as Klaviyo documents
        ("2024-01-15T10:30:00.000000", NOON),  # metrics' created/updated form
        ("2024-01-15T10:30", NOON),
        ("2024-01-15", NOON.replace(hour=0, minute=0)),
        ("2024-01-15T12:30:00+02:00", NOON),
        ("2024-01-15T05:30:00-05", NOON),
        ("2024-01-15T16:00:00+0530", NOON),
        ("2024-01-15T10:30:00 +0000", NOON),
        ("2024-01-15 10:30:00 UTC", NOON),
        ("2024-01-15T10:30:00,5Z", NOON.replace(microsecond=500000)),
    ],
)
def test_documented_forms_parse_to_one_instant(text: str, instant: datetime) -> None:
    assert parse_datetime(text) == instant
    assert parse_datetime(text).utcoffset() == timedelta(0)
    assert timestamps([text, None]).to_pylist() == [instant, None]


@pytest.mark.parametrize(
    "text",
    ["yesterday", "", "1705314600", "2024-02-30T10:30:00Z", "2023-02-29", "2024-01-15T24:00:00Z",
     "2024-01-15T10:30:60Z", "2024-01-15T10:30:00+24:00", "2024-01-15T10:30:00+01:60", "2024-W03-1",
     "20240115T103000Z", "2024-01-15T10", "2024-01-15T10:30:00ZZ", "0001-01-01T00:00:00+01:00",
     "\uff12\uff10\uff12\uff14-01-15", " 2024-01-15T10:30:00Z", "2024-01-15T10:30:00.Z"],
)
def test_other_strings_are_not_datetimes(text: str) -> None:
    with pytest.raises(ValueError):
        parse_datetime(text)
    assert not is_datetime(text)


def test_non_strings_are_not_datetimes() -> None:
    assert not any(is_datetime(v) for v in (None, 1705314600, 1705314600.0, True, [], {}))


def test_arrow_fast_path_reads_every_value_as_the_parser_does() -> None:
    """The vectorised cast and the parser agree on random values of Klaviyo's forms, offsets included."""
    rng = random.Random(7)
    texts = []
    for _ in range(3000):
        moment = datetime(rng.randint(1971, 2099), rng.randint(1, 12), rng.randint(1, 28), rng.randint(0, 23),
                          rng.randint(0, 59), rng.randint(0, 59), rng.randint(0, 999_999))
        digits = rng.randint(0, 6)
        fraction = f".{moment.microsecond:06d}"[: digits + 1] if digits else ""
        zone = rng.choice(["Z", "+00:00", "+0000", "-07:00", "+05:30", "+1345", "-2359"])
        texts.append(moment.strftime("%Y-%m-%d") + rng.choice("T ") + moment.strftime("%H:%M:%S") + fraction + zone)
    fast = timestamps(texts)
    assert fast.to_pylist() == [parse_datetime(t) for t in texts]
    assert fast.type == UTC_TS
    assert pa.array(texts).cast(UTC_TS).equals(fast)  # the page took the vectorised path


def test_a_page_with_one_odd_form_is_converted_value_by_value() -> None:
    values = ["2024-01-15T10:30:00+00:00", "2024-01-15T10:30:00.123456789Z", None, "2024-01-15"]
    assert timestamps(values).to_pylist() == [NOON, NOON.replace(microsecond=123456), None,
                                             NOON.replace(hour=0, minute=0)]
