"""Every table's columns are declared from the spec: column_types.json matches it, and values convert by type."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import orjson
import pytest

from klaviyo_source import coerce
from klaviyo_source.coerce import Unfit, json_text
from klaviyo_source.rows import COLUMN_TYPES, SHAPES, parse_lazy
from klaviyo_source.typegen import generate, render
from tests.spec import load_spec


def test_column_types_file_is_generated_from_the_spec() -> None:
    """Regenerate with `python -m klaviyo_source.typegen` when the pinned revision changes."""
    generated = generate(load_spec())
    assert generated == COLUMN_TYPES
    assert render(generated) == (SHAPES and render(COLUMN_TYPES))


def test_the_spec_types_of_the_issue_are_declared() -> None:
    kinds = {t: {c[0]: c[1] for c in cols} for t, cols in COLUMN_TYPES["tables"].items()}
    assert kinds["catalog_items"]["price"] == "number"  # once BIGINT + __v_double + __v_text
    assert kinds["catalog_variants"]["inventory_quantity"] == "number"
    assert kinds["catalog_variants"]["inventory_policy"] == "integer"
    assert kinds["events"]["timestamp"] == "integer" and kinds["events"]["datetime"] == "date-time"
    assert kinds["events"]["event_properties"] == "json"
    assert kinds["profiles"]["location__latitude"] == "number"  # "string or number" in the spec
    assert kinds["metrics"]["created"] == "date-time"  # a documented override
    assert kinds["segments"]["is_active"] == "boolean"
    assert "definition" not in kinds["templates"]  # an additional field the source never requests
    assert set(kinds["list_members"]) == {"profile_id", "joined_group_at", "list_id"}
    assert {"campaign_id", "template_id"} <= set(kinds["campaign_messages"])
    assert "audiences" not in kinds["campaign_messages"]


@pytest.mark.parametrize(
    ("kind", "value", "expected"),
    [
        ("number", 42, 42.0), ("number", 42.5, 42.5), ("number", "43.10", 43.1), ("number", " 1e3 ", 1000.0),
        ("number", "", None), ("number", Decimal("19.99"), 19.99),
        ("integer", 42, 42), ("integer", 42.0, 42), ("integer", "42", 42), ("integer", "42.0", 42),
        ("integer", Decimal("7"), 7), ("integer", 2**63 - 1, 2**63 - 1), ("integer", "", None),
        ("boolean", True, True), ("boolean", "false", False), ("boolean", "TRUE", True), ("boolean", 0, False),
        ("string", "x", "x"), ("string", 12345, "12345"), ("string", 19.99, "19.99"),
        ("string", Decimal("123456789012345678901234"), "123456789012345678901234"), ("string", "", ""),
    ],
)
def test_loose_forms_convert(kind: str, value: Any, expected: Any) -> None:
    assert coerce.CONVERT[kind](value) == expected


@pytest.mark.parametrize(
    ("kind", "value"),
    [
        ("number", "abc"), ("number", True), ("number", "1_000"), ("number", "NaN"), ("number", "inf"),
        ("number", {}), ("number", "١٢"),
        ("integer", 42.5), ("integer", "42.5"), ("integer", True), ("integer", 2**63), ("integer", "1e400"),
        ("boolean", "yes"), ("boolean", 2), ("boolean", 1.0),
        ("string", True), ("string", {"a": 1}), ("string", [1]),
        ("date-time", 1705314600), ("date-time", "yesterday"),
    ],
)
def test_values_that_do_not_fit_are_unfit(kind: str, value: Any) -> None:
    with pytest.raises(Unfit):
        coerce.CONVERT[kind](value)


@pytest.mark.parametrize("kind", ["string", "integer", "number", "boolean", "date-time"])
def test_the_vectorised_path_and_the_value_path_agree(kind: str) -> None:
    """A page converts in one Arrow step or value by value; both give the same column for the same values."""
    samples = {
        "string": ["a", None, "b"], "integer": [1, None, -(2**63)], "number": [1, 2.5, None, 2**53 + 1],
        "boolean": [True, None, False], "date-time": ["2024-01-15T10:30:00+00:00", None, "2024-01-15T10:30:00Z"],
    }[kind]
    fast, unfit = coerce.column(kind, samples)
    assert not unfit
    assert fast.to_pylist() == [coerce.CONVERT[kind](v) for v in samples]
    mixed, unfit = coerce.column(kind, [*samples, "not one"] if kind != "string" else [*samples, True])
    assert mixed.to_pylist()[:-1] == fast.to_pylist() and list(unfit) == [len(samples)]


def test_free_form_numbers_keep_the_digits_sent_on_both_parsers() -> None:
    """pysimdjson prints some doubles with binary noise; big integers need the exact parser."""
    body = (b'{"data":[{"p":{"price":19.99,"a":69771.56106,"b":12200.87446,"c":0.30000000000000004,'
            b'"order":"123456789012345678901234","n":[1.5,2,-0.0],"t":"2024-01-15T10:30:00.123456789Z"}}]}')
    expected = body[body.index(b'{"price"'):-3]
    lazy = parse_lazy(body)["data"][0]["p"]
    assert json_text(lazy) == expected
    assert json_text(orjson.loads(body)["data"][0]["p"]) == expected
    big = body.replace(b'"123456789012345678901234"', b"123456789012345678901234")
    exact = parse_lazy(big)["data"][0]["p"]  # pysimdjson refuses it: parsed exactly
    assert isinstance(exact, dict)
    assert json_text(exact) == expected.replace(b'"123456789012345678901234"', b"123456789012345678901234")
    decimals = b'{"data":[{"p":{"x":19.90,"y":1E+2,"z":3.141592653589793238462643}}]}'
    exact_decimals = parse_lazy(decimals.replace(b"19.90", b"19.90,\"w\":99999999999999999999"))
    assert json_text(exact_decimals["data"][0]["p"]) == \
        b'{"x":19.90,"w":99999999999999999999,"y":1E+2,"z":3.141592653589793238462643}'
