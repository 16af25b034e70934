"""One datetime grammar for every supported Python: the forms Klaviyo and its integrations send.

Python 3.10's `datetime.fromisoformat` rejects `Z`, `+0000`, and fractions that are not 3 or 6 digits
long; 3.11 accepts them and more (week dates, basic format). Whichever it is, the same account would load
on one Python and fail on another, so every datetime the source reads (page checks, Arrow columns,
window cursors, user arguments) goes through `parse_datetime`, which behaves the same everywhere.

Accepted (Klaviyo's datetime guide and what its integrations send):
    2024-01-15                          a date: midnight UTC
    2024-01-15T10:30 / T10:30:00        no offset: UTC (Klaviyo's times are UTC unless they say otherwise)
    2024-01-15 10:30:00                 a space instead of T; t and z in lower case
    ...:00.1 / .123 / .123456789        fractions of any length, truncated to microseconds
    ...Z / +00:00 / +0000 / +05 / -07:00 / " UTC"   the offset, with or without a colon or a space
Anything else (Unix numbers, week dates, invalid days or hours, offsets of 24 h or more) is rejected.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

import pyarrow as pa
import pyarrow.compute as pc

UTC_TS = pa.timestamp("us", tz="UTC")

_GRAMMAR = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})"
    r"(?:[Tt ]([0-9]{2}):([0-9]{2})(?::([0-9]{2})(?:[.,]([0-9]+))?)?"
    r" ?(?:([Zz]|UTC|GMT)|([+-])([0-9]{2})(?::?([0-9]{2}))?)?)?",
    re.ASCII,
)

# The forms Arrow's own string -> timestamp cast reads exactly as `parse_datetime` does (checked by a unit
# test): a page whose datetimes all have this shape is converted in one vectorised cast.
ARROW_FORM = r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(\.\d{1,6})?(Z|[+-]\d{2}:?\d{2})$"


def parse_datetime(text: str) -> datetime:
    """The instant `text` names, as an aware UTC datetime; ValueError says why it is not one."""
    match = _GRAMMAR.fullmatch(text)
    if match is None:
        raise ValueError("is not an ISO 8601 datetime")
    year, month, day, hour, minute, second, fraction, _, sign, off_hours, off_minutes = match.groups()
    micro = int(fraction[:6].ljust(6, "0")) if fraction else 0
    try:
        value = datetime(int(year), int(month), int(day), int(hour or 0), int(minute or 0), int(second or 0),
                         micro, tzinfo=timezone.utc)
        if sign:
            offset = timedelta(hours=int(off_hours), minutes=int(off_minutes or 0))
            if offset >= timedelta(hours=24) or int(off_minutes or 0) > 59:
                raise ValueError("offset out of range")
            value = value - offset if sign == "+" else value + offset
    except (ValueError, OverflowError) as exc:
        raise ValueError(f"is not a valid datetime ({exc})") from None
    return value


def is_datetime(value: object) -> bool:
    if not isinstance(value, str):
        return False
    try:
        parse_datetime(value)
    except ValueError:
        return False
    return True


def timestamps(values: list[str | None]) -> pa.Array:
    """Strings (all valid per `parse_datetime`, or None) as a timestamp[us, UTC] array.

    Klaviyo's own form converts in one Arrow cast; a page holding any other form (or nanoseconds, which
    Arrow refuses to truncate) is converted value by value.
    """
    strings = pa.array(values, pa.string())
    if strings.null_count < len(strings) and pc.all(pc.match_substring_regex(strings, ARROW_FORM)).as_py():
        return strings.cast(UTC_TS)
    return pa.array([None if v is None else parse_datetime(v) for v in values], UTC_TS)
