"""Klaviyo's `filter` query parameter: parse it, type its values, check it against the endpoint's rules.

Grammar (API-NOTES §1.7): comma-separated expressions ANDed, optionally wrapped in `and(...)` (nested);
an expression is `operator(field[,value])`; values are quoted strings (single or double quotes, with
backslash escapes), `true`/`false`, `null`, numbers, JSON-style lists, or bare datetimes. A datetime must
be bare: a quoted datetime on a datetime field is rejected, as Klaviyo does.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timezone
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

_DATETIME = re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(\.\d{1,6})?(Z|[+-]\d{2}:\d{2})?")
_NUMBER = re.compile(r"-?\d+(\.\d+)?([eE][+-]?\d+)?")
_INTEGER = re.compile(r"-?\d+")
_NAME = re.compile(r"[A-Za-z_$][\w.$-]*")


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

    def expression(self) -> list[RawCond]:
        op = self.name()
        self.expect("(")
        if op == "and":
            inner = self.expressions()
            self.expect(")")
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
        items: list[Any] = []
        self.skip_spaces()
        if self.peek() == "]":
            self.pos += 1
            return items
        while True:
            items.append(self.value())
            self.skip_spaces()
            if self.peek() == "]":
                self.pos += 1
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
    """A bare Klaviyo datetime -> aware UTC datetime; no offset means UTC."""
    if not _DATETIME.fullmatch(text):
        raise FilterError(f"Invalid filter provided: '{text}' is not a valid datetime.")
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc)


def _typed(field: str, rule: dict[str, Any], token: Any) -> Any:
    """Convert one literal to the field's declared type, rejecting literals of the wrong kind."""
    kind = rule.get("type")
    if token == Bare("null"):
        return None
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
        return int(text) if _INTEGER.fullmatch(text) else float(text)
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
