"""Checks every page before any of it becomes rows, so bad data fails loudly instead of vanishing.

A record without an id cannot be merged (it would be dropped or doubled), a cursor that is not a datetime
cannot be placed in a window (it would be skipped), and a typed column that does not convert would either
crash the Arrow conversion with an unhelpful message or, for latitude and longitude, quietly become null.
A page holding such a record is treated like a broken body: the client asks for it again (a glitch in
transit or on Klaviyo's side usually clears), and if it persists the run fails naming the endpoint, the
record, the field and the problem. A failed run loads nothing and moves no cursor, so exactly-once holds.

Free-form objects (event properties, profile properties, ...) are JSON columns and are never checked: a
property that is a number in one event and a string in the next loads as it came. Small tables without
an Arrow schema are typed by dlt, which keeps a value of an unexpected type in a variant column.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pyarrow as pa

from klaviyo_source.datetimes import is_datetime
from klaviyo_source.endpoints import Endpoint, Mode
from klaviyo_source.rows import ARRAY, ARROW_SHAPES, OBJECT, UTC_TS, Column, plain


class InvalidPage(ValueError):
    """A page with a record that must not be loaded; the message names the record, field and problem."""


def _is_number(value: Any) -> bool:
    """Numbers, or strings holding one (Klaviyo sends coordinates both ways)."""
    if (isinstance(value, (int, float)) and not isinstance(value, bool)) or value == "":
        return True
    try:
        float(value)
        return True
    except (TypeError, ValueError):
        return False


def _value_check(column: Column) -> tuple[Callable[[Any], bool], str] | None:
    """(accepts a non-null value, what was expected) for a typed column; None for unchecked columns."""
    if column.dlt_type == "json" or column.key:
        return None
    if column.type == UTC_TS:
        return is_datetime, "an ISO 8601 datetime"
    if column.type == pa.int64():
        return (lambda v: isinstance(v, int) and not isinstance(v, bool)), "an integer"
    if column.type == pa.float64():
        return _is_number, "a number"
    return (lambda v: isinstance(v, str)), "a string"


def _describe(value: Any) -> str:
    """The value's type, and the value itself when short: never a long (possibly personal) string.

    Lazily parsed values are described as dicts and lists, so a message does not depend on the parser.
    """
    value = plain(value)
    shown = repr(value)
    return f"{type(value).__name__} {shown}" if len(shown) <= 32 else type(value).__name__


class PageCheck:
    """The checks for one endpoint's pages; called with each JSON:API document, raises InvalidPage."""

    def __init__(self, endpoint: Endpoint) -> None:
        self.cursor = endpoint.cursor if endpoint.mode is Mode.WINDOW else None
        self.needs_type = bool(endpoint.included)  # included resources are matched on (type, id)
        shape = ARROW_SHAPES.get(endpoint.table)
        self.columns: list[tuple[Column, Callable[[Any], bool], str]] = []
        for column in shape.columns if shape else ():
            check = _value_check(column)
            if check is not None and column.name != self.cursor:
                self.columns.append((column, *check))
        self.needs_attributes = shape is not None or self.cursor is not None

    def __call__(self, document: Any) -> None:
        data = document["data"]
        if not isinstance(data, ARRAY):
            raise InvalidPage(f"'data' is {type(plain(data)).__name__}, expected a list of records")
        for index, record in enumerate(data):
            problem = self._problem(record)
            if problem:
                ident = record.get("id") if isinstance(record, OBJECT) else None
                named = f" (id {ident})" if isinstance(ident, str) and ident else ""
                raise InvalidPage(f"record {index}{named} of the page: {problem}")

    def _problem(self, record: Any) -> str | None:
        if not isinstance(record, OBJECT):
            return f"is {type(plain(record)).__name__}, expected an object"
        ident = record.get("id")
        if not isinstance(ident, str) or not ident:
            return "field 'id' is missing" if ident is None else f"field 'id' is {_describe(ident)}, expected a string"
        if self.needs_type and not isinstance(record.get("type"), str):
            return "field 'type' is missing or not a string"
        attributes = record.get("attributes")
        if self.needs_attributes and not isinstance(attributes, OBJECT):
            return "field 'attributes' is missing or not an object"
        if self.cursor is not None:
            value = attributes.get(self.cursor)  # type: ignore[union-attr]
            if not is_datetime(value):
                return f"cursor field '{self.cursor}' is {_describe(value)}, expected an ISO 8601 datetime"
        for column, accepts, expected in self.columns:
            value = column.read(record)
            if value is not None and not accepts(value):
                return f"field '{column.name}' is {_describe(value)}, expected {expected}"
        return None
