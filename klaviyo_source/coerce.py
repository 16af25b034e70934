"""Values of a declared column type: the loose forms Klaviyo and its integrations send convert, others are unfit.

A column is one of the spec's types (string, integer, number, boolean, date-time) or JSON. A column of a
page converts in one vectorised Arrow step when its values already have the declared type (the common
case); otherwise value by value with the rules below, which are the same on every Python:
    string     strings; numbers become their JSON text (zip codes, phone numbers and ids sent as numbers)
    integer    integers within 64 bits; integral floats and numeric strings ("42", "42.0")
    number     integers and floats; numeric strings ("43.10", "1e3")
    boolean    true/false; the strings "true"/"false" (any case); the integers 0 and 1
    date-time  every form `datetimes.parse_datetime` reads
    ""         null, for every type but string
    json       anything, kept as JSON text with the digits Klaviyo sent (see `json_text`)
A value that fits none of these is unfit: the record is set aside whole, never loaded half.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import simdjson

from klaviyo_source.datetimes import ARROW_FORM, UTC_TS, parse_datetime

LAZY = (simdjson.Object, simdjson.Array)
INT64 = (-(2**63), 2**63 - 1)
_NUMERIC = re.compile(r"\s*[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?\s*", re.ASCII)

ARROW_TYPES: dict[str, pa.DataType] = {
    "string": pa.string(), "integer": pa.int64(), "number": pa.float64(), "boolean": pa.bool_(),
    "date-time": UTC_TS, "json": pa.string(),
}
DLT_TYPES = {"string": "text", "integer": "bigint", "number": "double", "boolean": "bool",
             "date-time": "timestamp", "json": "json"}
EXPECTED = {"string": "a string", "integer": "an integer", "number": "a number", "boolean": "a boolean",
            "date-time": "an ISO 8601 datetime", "json": "JSON"}


class Unfit(ValueError):
    """A value that does not fit its column."""


def plain(value: Any) -> Any:
    """A lazily parsed value as the dicts and lists orjson would have built; other values as they are."""
    if isinstance(value, simdjson.Object):
        return value.as_dict()
    return value.as_list() if isinstance(value, simdjson.Array) else value


def describe(value: Any) -> str:
    """`null`, or the value's type and the value itself when short: never a long (possibly personal) string.

    Lazily parsed values are described as dicts and lists, so a message does not depend on the parser.
    """
    if value is None:
        return "null"
    value = plain(value)
    name = "int" if isinstance(value, Decimal) and value == value.to_integral_value() else type(value).__name__
    name = "float" if name == "Decimal" else name
    shown = str(value) if isinstance(value, Decimal) else repr(value)
    return f"{name} {shown}" if len(shown) <= 32 else name


# --- JSON text -------------------------------------------------------------------------------------

def _exact(value: Any) -> Any:
    if isinstance(value, Decimal):  # pages parsed exactly (rows.parse_lazy) carry their numbers as Decimal
        return orjson.Fragment(str(value))
    raise TypeError(f"{type(value).__name__} is not JSON")


# pysimdjson prints some doubles with binary noise (19.99 as 19.990000000000002; 78 of 200,000 random
# prices): 16 or 17 significant digits. A value holding a run of 16 digits is re-serialised by orjson,
# which prints the shortest form that reads back as the same double, i.e. the digits that were sent.
_DIGIT_RUNS = bytes(0x30 if (0x30 <= c <= 0x39 or c == 0x2E) else 0x20 for c in range(256))
_NOISE = b"0" * 16


def json_text(value: Any) -> bytes | None:
    """JSON text for a JSON column (Arrow takes UTF-8 bytes as a string)."""
    if value is None:
        return None
    if isinstance(value, LAZY):
        text: Any = value.mini  # bytes (typed str in the stubs)
        return text if text.translate(_DIGIT_RUNS).find(_NOISE) < 0 else orjson.dumps(orjson.loads(text))
    return orjson.dumps(value, default=_exact)


# --- one value -------------------------------------------------------------------------------------

def _numeric(value: Any) -> Decimal | None:
    """A number, or a string holding one, as a Decimal; None for anything else (bool included)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, Decimal)):
        return Decimal(value)
    if isinstance(value, float):
        return Decimal(repr(value)) if value == value and abs(value) != float("inf") else None
    if isinstance(value, str) and _NUMERIC.fullmatch(value):
        return Decimal(value.strip())
    return None


def _blank(value: Any) -> bool:
    return isinstance(value, str) and not value.strip()


def to_string(value: Any) -> Any:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, (int, float, Decimal)) and not isinstance(value, bool):
        return orjson.dumps(value, default=_exact).decode()
    raise Unfit


def to_integer(value: Any) -> Any:
    if value is None or _blank(value):
        return None
    if type(value) is int:
        number: Decimal | None = Decimal(value)
    else:
        number = _numeric(value)
    try:
        if number is None or number != number.to_integral_value():
            raise Unfit
    except InvalidOperation:
        raise Unfit from None
    result = int(number)
    if not INT64[0] <= result <= INT64[1]:
        raise Unfit
    return result


def to_number(value: Any) -> Any:
    if value is None or _blank(value):
        return None
    number = _numeric(value)
    if number is None or not number.is_finite():
        raise Unfit
    result = float(number)
    if result in (float("inf"), float("-inf")):
        raise Unfit
    return result


def to_boolean(value: Any) -> Any:
    if value is None or isinstance(value, bool):
        return value
    if _blank(value):
        return None
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    if type(value) is int and value in (0, 1):
        return bool(value)
    raise Unfit


def to_datetime(value: Any) -> Any:
    if value is None or _blank(value):
        return None
    if not isinstance(value, str):
        raise Unfit
    try:
        return parse_datetime(value)
    except ValueError:
        raise Unfit from None


def to_json(value: Any) -> Any:
    return json_text(value)


CONVERT: dict[str, Callable[[Any], Any]] = {
    "string": to_string, "integer": to_integer, "number": to_number, "boolean": to_boolean,
    "date-time": to_datetime, "json": to_json,
}


# --- one column of a page --------------------------------------------------------------------------

_FAST_ERRORS = (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError, TypeError, ValueError)


def _fast(kind: str, values: Sequence[Any]) -> pa.Array | None:
    """The column in one Arrow step when its values have the declared type already; None otherwise."""
    try:
        if kind in ("string", "boolean"):
            return pa.array(values, ARROW_TYPES[kind])  # strict: a number or string of another type raises
        if kind in ("integer", "number"):
            inferred = pa.array(values)  # no bools, strings or floats slip through a cast to int64
            if inferred.type == pa.int64() or pa.types.is_null(inferred.type):
                return inferred.cast(ARROW_TYPES[kind])
            return inferred if kind == "number" and inferred.type == pa.float64() else None
        if kind == "date-time":
            strings = pa.array(values, pa.string())
            if strings.null_count < len(strings) and pc.all(pc.match_substring_regex(strings, ARROW_FORM)).as_py():
                return strings.cast(UTC_TS)
            return None
        return pa.array([json_text(v) for v in values], pa.string())
    except _FAST_ERRORS:
        return None


def column(kind: str, values: Sequence[Any]) -> tuple[pa.Array, dict[int, Any]]:
    """(the Arrow column, {index: value} of the values that do not fit, which are null in the column)."""
    fast = _fast(kind, values)
    if fast is not None:
        return fast, {}
    convert = CONVERT[kind]
    out: list[Any] = []
    unfit: dict[int, Any] = {}
    for index, value in enumerate(values):
        try:
            out.append(convert(value))
        except Unfit:
            out.append(None)
            unfit[index] = value
    return pa.array(out, ARROW_TYPES[kind]), unfit
