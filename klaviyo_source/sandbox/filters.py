"""Klaviyo's `filter` query parameter: parse it, type its values, check it against the endpoint's rules.

Grammar (API-NOTES §1.7): comma-separated expressions ANDed, optionally wrapped in `and(...)` (nested);
an expression is `operator(field[,value])`; values are quoted strings (single or double quotes, with
backslash escapes), `true`/`false`, numbers, JSON-style lists of those, or bare datetimes. A datetime must
be bare: a quoted datetime on a datetime field is rejected, as Klaviyo does.

Datetimes follow Klaviyo's datetime guides: `YYYY-MM-DD`, optionally followed by `T` or a space, `HH:MM`,
optional `:SS` with an optional fraction of any length (kept to the microsecond), and an optional `Z`,
`+HH:MM` or `+HHMM` offset; no offset means UTC. Letters are upper-case. A value of that shape that is not on
the calendar (February 30th, month 13, hour 25, offset +25:00) is a 400 like any other malformed value.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone, tzinfo
from typing import Any

from klaviyo_source.sandbox.model import Cond

OPERATORS = frozenset(
    {
        "equals",
        "any",
        "greater-or-equal",
        "greater-than",
        "less-or-equal",
        "less-than",
        "contains",
        "contains-any",
        "contains-all",
        "starts-with",
        "ends-with",
        "has",
    }
)

_DATETIME = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})(?:[T ](\d{2}):(\d{2})(?::(\d{2})(?:\.(\d+))?)?(Z|[+-]\d{2}:?\d{2})?)?", re.ASCII
)
_NUMBER = re.compile(r"-?\d+(\.\d+)?([eE][+-]?\d+)?", re.ASCII)
_INTEGER = re.compile(r"-?\d+", re.ASCII)
_NAME = re.compile(r"[A-Za-z_$][\w.$-]*", re.ASCII)
MAX_DEPTH = 16  # nested and(...) / lists: deep enough for any real filter, shallow enough for the parser


class FilterError(ValueError):
    """The filter is malformed or not allowed here; `str(err)` is the detail shown to the client."""


@dataclass(frozen=True)
class Quoted:
    """A quoted string literal (kept apart from bare tokens so types can be checked)."""

    text: str


@dataclass(frozen=True)
class Bare:
    """An unquoted token: boolean, null, number or datetime, decided once the field's type is known."""

    text: str


@dataclass(frozen=True)
class RawCond:
    op: str
    field: str
    value: Any  # Quoted | Bare | list[Quoted | Bare] | None (no operand)
    has_value: bool


class _Parser:
    """Recursive-descent parser over the filter string."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.depth = 0

    def fail(self, what: str) -> FilterError:
        return FilterError(f"Invalid filter provided: {what} at position {self.pos} of '{self.text}'.")

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def skip_spaces(self) -> None:
        while self.peek() == " ":
            self.pos += 1

    def expect(self, char: str) -> None:
        self.skip_spaces()
        if self.peek() != char:
            raise self.fail(f"expected '{char}'")
        self.pos += 1

    def name(self) -> str:
        self.skip_spaces()
        m = _NAME.match(self.text, self.pos)
        if not m:
            raise self.fail("expected a name")
        self.pos = m.end()
        return m.group(0)

    def expressions(self) -> list[RawCond]:
        out = self.expression()
        self.skip_spaces()
        while self.peek() == ",":
            self.pos += 1
            out += self.expression()
            self.skip_spaces()
        return out

    def nest(self) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise self.fail("nested too deeply")

    def expression(self) -> list[RawCond]:
        op = self.name()
        self.expect("(")
        if op == "and":
            self.nest()
            inner = self.expressions()
            self.expect(")")
            self.depth -= 1
            return inner
        if op not in OPERATORS:
            raise FilterError(f"Invalid filter provided: unknown operator '{op}'.")
        field = self.name()
        self.skip_spaces()
        value: Any = None
        has_value = self.peek() == ","
        if has_value:
            self.pos += 1
            value = self.value()
        self.expect(")")
        return [RawCond(op, field, value, has_value)]

    def value(self) -> Any:
        self.skip_spaces()
        char = self.peek()
        if char == "[":
            return self.list_value()
        if char in "'\"":
            return self.quoted(char)
        start = self.pos
        while self.pos < len(self.text) and self.text[self.pos] not in ",)]":
            self.pos += 1
        token = self.text[start : self.pos].strip()
        if not token:
            raise self.fail("expected a value")
        return Bare(token)

    def list_value(self) -> list[Any]:
        self.pos += 1
        self.nest()
        items: list[Any] = []
        self.skip_spaces()
        if self.peek() == "]":
            self.pos += 1
            self.depth -= 1
            return items
        while True:
            items.append(self.value())
            self.skip_spaces()
            if self.peek() == "]":
                self.pos += 1
                self.depth -= 1
                return items
            self.expect(",")

    def quoted(self, quote: str) -> Quoted:
        self.pos += 1
        chars: list[str] = []
        while True:
            char = self.peek()
            if not char:
                raise self.fail("unterminated string")
            self.pos += 1
            if char == "\\":
                if not self.peek():
                    raise self.fail("unterminated string")
                chars.append(self.peek())
                self.pos += 1
            elif char == quote:
                return Quoted("".join(chars))
            else:
                chars.append(char)


def parse(text: str) -> list[RawCond]:
    """Parse the whole filter string into untyped conditions (syntax only)."""
    parser = _Parser(text)
    conds = parser.expressions()
    parser.skip_spaces()
    if parser.pos != len(text):
        raise parser.fail("unexpected trailing text")
    return conds


def parse_datetime(text: str) -> datetime:
    """A bare Klaviyo datetime -> aware UTC datetime; no offset means UTC (see the module's grammar)."""
    try:
        return local_datetime(text).astimezone(timezone.utc)
    except OverflowError:  # a valid wall-clock time whose UTC instant is outside year 1..9999
        raise FilterError(f"Invalid filter provided: '{text}' is not a valid datetime.") from None


def local_datetime(text: str, naive: tzinfo = timezone.utc) -> datetime:
    """A Klaviyo datetime as written: aware, in its own offset (in `naive` when it has none)."""
    m = _DATETIME.fullmatch(text)
    if not m:
        raise FilterError(f"Invalid filter provided: '{text}' is not a valid datetime.")
    year, month, day, hour, minute, second, fraction, offset = m.groups()
    try:
        return datetime(int(year), int(month), int(day), int(hour or 0), int(minute or 0), int(second or 0),
                        int((fraction or "0")[:6].ljust(6, "0")), tzinfo=naive if offset is None else _zone(offset))
    except ValueError:
        raise FilterError(f"Invalid filter provided: '{text}' is not a valid datetime.") from None


def _zone(offset: str) -> timezone:
    """`Z`, `+HH:MM` or `+HHMM` (hours up to 23, minutes up to 59); ValueError otherwise."""
    if offset == "Z":
        return timezone.utc
    digits = offset[1:].replace(":", "")
    hours, minutes = int(digits[:2]), int(digits[2:])
    if hours > 23 or minutes > 59:
        raise ValueError(offset)
    delta = timedelta(hours=hours, minutes=minutes)
    return timezone(-delta if offset[0] == "-" else delta)


def _typed(field: str, rule: dict[str, Any], token: Any) -> Any:
    """Convert one literal to the field's declared type, rejecting literals of the wrong kind."""
    kind = rule.get("type")
    if isinstance(token, list):
        raise FilterError(f"Invalid filter provided: a list inside a list is not a valid value for '{field}'.")
    if rule.get("format") == "date-time":
        if not isinstance(token, Bare):
            raise FilterError(f"Invalid filter provided: datetime values for '{field}' must not be quoted.")
        return parse_datetime(token.text)
    if kind == "string":
        if not isinstance(token, Quoted):
            raise FilterError(f"Invalid filter provided: the value for '{field}' must be a quoted string.")
        if "enum" in rule and token.text not in rule["enum"]:
            allowed = ", ".join(rule["enum"])
            raise FilterError(f"Invalid filter provided: '{field}' must be one of {allowed}.")
        return token.text
    if isinstance(token, Quoted):
        raise FilterError(f"Invalid filter provided: the value for '{field}' must not be quoted.")
    text = token.text
    if kind == "boolean" and text in ("true", "false"):
        return text == "true"
    if kind in ("number", "integer") and _NUMBER.fullmatch(text):
        try:
            return int(text) if _INTEGER.fullmatch(text) else float(text)
        except ValueError:  # more digits than Python converts
            pass
    raise FilterError(f"Invalid filter provided: '{text}' is not a valid {kind} for '{field}'.")


def _allowed(rule: dict[str, Any], shape: str) -> tuple[str, ...]:
    """Operators allowed with this operand shape.

    `equals` that takes a list also takes a single value: the spec's own example for coupon codes is
    `equals(coupon.id,'10OFF')` although x-klaviyo-filters lists `equals` there only with a list.
    """
    allowed = tuple(rule.get(shape, ()))
    if shape == "single" and "equals" in rule.get("list", ()):
        allowed += ("equals",)
    return allowed


def conditions(text: str, rules: dict[str, dict[str, Any]]) -> tuple[Cond, ...]:
    """Parse `text` and check every condition against `rules` (field -> x-klaviyo-filters entry)."""
    out: list[Cond] = []
    for raw in parse(text):
        rule = rules.get(raw.field)
        if rule is None:
            raise FilterError(f"Invalid filter provided: '{raw.field}' is not a filterable field.")
        shape = "list" if isinstance(raw.value, list) else "single" if raw.has_value else "none"
        if raw.op not in _allowed(rule, shape):
            allowed = sorted({op for s in ("single", "list", "none") for op in rule.get(s, ())})
            raise FilterError(
                f"Invalid filter provided: operator '{raw.op}' with a {shape} operand is not allowed "
                f"for field '{raw.field}'; allowed: {', '.join(allowed)}."
            )
        if shape == "list":
            value: Any = [_typed(raw.field, rule, item) for item in raw.value]
        elif shape == "single":
            value = _typed(raw.field, rule, raw.value)
        else:
            value = None
        out.append(Cond(raw.op, raw.field, value))
    return tuple(out)
