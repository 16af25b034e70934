"""Arrow pages are the same table whether a page was parsed to dicts or lazily (pysimdjson)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from klaviyo_source.rows import EVENTS, PROFILES, SHAPES, parse_lazy
from klaviyo_source.windows import parse_instant


def both(page: dict[str, Any]) -> tuple[list[Any], Any]:
    body = orjson.dumps(page)
    return orjson.loads(body)["data"], parse_lazy(body)["data"]


EVENT_PAGE = {"data": [
    {"type": "event", "id": "E1", "attributes": {
        "datetime": "2024-05-01T12:00:00+00:00", "timestamp": 1714564800, "uuid": "u1",
        "event_properties": {"$value": 3.5, "name": "Crème \"brûlée\"\n", "items": [1, {"a": None}], "big": 2**62,
                             "empty": {}, "flag": False}},
     "relationships": {"profile": {"data": {"type": "profile", "id": "P1"}},
                       "metric": {"data": {"type": "metric", "id": "M1"}}}},
    {"type": "event", "id": "E2", "attributes": {
        "datetime": "2024-05-01T14:00:00+02:00", "timestamp": None, "uuid": None, "event_properties": "plain"},
     "relationships": {"profile": {"data": None}}},
    {"type": "event", "id": "E3", "attributes": {"datetime": "2024-05-01T12:00:01Z", "event_properties": None}},
]}

PROFILE_PAGE = {"data": [
    {"type": "profile", "id": "P1", "attributes": {
        "email": "a@example.com", "updated": "2024-05-01T12:00:00+00:00", "created": None,
        "location": {"city": "Zürich", "latitude": "47.37", "longitude": 8.54},
        "properties": {"tier": "gold", "n": [1, 2]}, "subscriptions": {"email": {"marketing": {"consent": "YES"}}}}},
    {"type": "profile", "id": "P2", "attributes": {"updated": "2024-05-01T12:00:00Z", "location": None,
                                                    "properties": {}}},
]}


@pytest.mark.parametrize(("shape", "page"), [(EVENTS, EVENT_PAGE), (PROFILES, PROFILE_PAGE)],
                         ids=["events", "profiles"])
def test_lazy_pages_give_the_same_table(shape: Any, page: dict[str, Any]) -> None:
    dicts, lazy = both(page)
    expected, table = shape.table_of(dicts), shape.table_of(lazy)
    assert table.equals(expected), (table.to_pylist(), expected.to_pylist())
    name = "event_properties" if shape is EVENTS else "properties"
    assert [v and orjson.loads(v) for v in table.column(name).to_pylist()] == \
        [r["attributes"].get(name) for r in page["data"]]


def test_integers_beyond_64_bits_keep_their_digits() -> None:
    page = {"data": [dict(EVENT_PAGE["data"][0], id="E9")]}
    body = orjson.dumps(page).replace(b'"big":4611686018427387904', b'"big":-99999999999999999999')
    assert b"-99999999999999999999" in body
    table = EVENTS.table_of(parse_lazy(body)["data"])
    assert '"big":-99999999999999999999,' in table.column("event_properties")[0].as_py()


def test_lazy_membership_pages_give_the_same_table() -> None:
    page = {"data": [{"type": "profile", "id": "P1", "attributes": {"joined_group_at": "2024-05-01T12:00:00Z"}}]}
    shape = SHAPES["segment_members"]
    dicts, lazy = both(page)
    assert shape.table_of(lazy, {"segment_id": "S1"}).equals(shape.table_of(dicts, {"segment_id": "S1"}))


def test_cursor_column_is_one_instant_whatever_the_form() -> None:
    expected = [parse_instant(t) for t in ("2024-05-01T12:00:00Z", "2024-05-01T12:00:00Z", "2024-05-01T12:00:01Z")]
    for records in both(EVENT_PAGE):
        assert EVENTS.table_of(records).column("datetime").to_pylist() == expected


def test_every_table_has_a_shape_with_its_key_first_and_not_null() -> None:
    for table, shape in SHAPES.items():
        assert shape.columns[0].name in ("id", "profile_id"), table
        assert not shape.schema.field(shape.key).nullable


def test_an_undeclared_attribute_loads_as_text() -> None:
    page = {"data": [{"type": "tag", "id": "T1", "attributes": {"name": "a", "color": "red"}},
                     {"type": "tag", "id": "T2", "attributes": {"name": "b", "color": {"hex": 16711680}}}]}
    for records in both(page):
        table = SHAPES["tags"].table_of(records)
        assert table.column("color").to_pylist() == ["red", b'{"hex":16711680}'.decode()]


def test_related_records_of_a_parent_set_aside_keep_their_own_link() -> None:
    from klaviyo_source.endpoints import BY_TABLE
    from klaviyo_source.validate import PageCheck

    message = {"type": "campaign-message", "id": "M1", "attributes": {"created_at": "2024-01-01T00:00:00Z"},
               "relationships": {"campaign": {"data": {"type": "campaign", "id": "C1"}}}}
    link = {"campaign-messages": {"data": [{"type": "campaign-message", "id": "M1"}]}}
    page = {"data": [{"type": "campaign", "attributes": {"updated_at": "2024-01-01T00:00:00Z"}, "relationships": link},
                     {"type": "campaign", "id": "C2", "attributes": {"updated_at": "2024-01-01T00:00:00Z"},
                      "relationships": {"campaign-messages": {"data": []}}}],
            "included": [message]}
    for decode in (orjson.loads, parse_lazy):
        checked = PageCheck(BY_TABLE["campaigns"])(decode(orjson.dumps(page)))
        assert checked.table.column("id").to_pylist() == ["C2"]
        assert [(t, m.field, m.reason) for t, m in checked.misfits] == [("campaigns", "id", "is missing")]
        assert checked.included["campaign_messages"].select(["id", "campaign_id"]).to_pylist() == \
            [{"id": "M1", "campaign_id": "C1"}]


def test_a_page_past_a_split_converts_only_the_records_before_it() -> None:
    """A window split while its chain reads: the records past the split (the other chain's) are left out before
    they are converted; the cut is told the page's last cursor; a cursor that is not a datetime keeps the page
    whole (its misfit is set aside as usual, and the chain's own filter drops what lies past the split)."""
    from klaviyo_source.endpoints import BY_TABLE
    from klaviyo_source.validate import PageCheck

    def event(i: int, when: str) -> dict[str, Any]:
        return {"type": "event", "id": f"E{i}", "attributes": {"datetime": when, "event_properties": {}}}

    times = [f"2024-05-01T12:00:{s:02d}Z" for s in range(10)]
    check = PageCheck(BY_TABLE["events"])
    told: list[Any] = []

    def cut_at(second: int) -> Any:
        def cut(last: Any) -> Any:
            told.append(last)
            return parse_instant(f"2024-05-01T12:00:{second:02d}Z")
        return cut

    for decode in (orjson.loads, parse_lazy):
        for second, kept in ((4, 4), (0, 0), (9, 9), (10, 10), (5, 5)):
            page = decode(orjson.dumps({"data": [event(i, t) for i, t in enumerate(times)]}))
            checked = check(page, None, cut_at(second))
            assert checked.table.column("id").to_pylist() == [f"E{i}" for i in range(kept)], second
            assert checked.reached == (parse_instant(times[-1]), parse_instant(f"2024-05-01T12:00:{second:02d}Z"))
        assert told[-1] == parse_instant(times[-1])
        bad = [event(i, t) for i, t in enumerate(times)]
        bad[4]["attributes"]["datetime"] = "yesterday"
        checked = check(decode(orjson.dumps({"data": bad})), None, cut_at(2))
        assert checked.table.num_rows == 9 and [m.field for _, m in checked.misfits] == ["datetime"]
        bad[-1]["attributes"]["datetime"] = "never"  # no last cursor: not cut here, the chain cuts after converting
        checked = check(decode(orjson.dumps({"data": bad})), None, cut_at(2))
        assert checked.table.num_rows == 8 and checked.reached is None
