"""Event attributions from the events pages' `included`: typed, parented, set aside, batched, on both parsers."""

from __future__ import annotations

from typing import Any

import orjson
import pyarrow as pa
import pytest

from klaviyo_source.endpoints import BY_TABLE
from klaviyo_source.resources import IncludedBatches
from klaviyo_source.rows import parse_lazy
from klaviyo_source.validate import PageCheck
from klaviyo_source.windows import parse_instant


def event(ident: str, attributions: list[str | None]) -> dict[str, Any]:
    return {"type": "event", "id": ident, "attributes": {"datetime": "2025-01-01T00:00:00+00:00", "timestamp": 1,
                                                         "uuid": "u", "event_properties": {}},
            "relationships": {"metric": {"data": {"type": "metric", "id": "M"}},
                              "profile": {"data": {"type": "profile", "id": "P"}},
                              "attributions": {"data": [{"type": "attribution", "id": a} for a in attributions]}}}


def attribution(ident: str, event_id: str | None, flow: bool = False) -> dict[str, Any]:
    rels: dict[str, Any] = {"attributed-event": {"data": {"type": "event", "id": "T"}}}
    if event_id is not None:
        rels["event"] = {"data": {"type": "event", "id": event_id}}
    if flow:
        rels.update({"flow": {"data": {"type": "flow", "id": "F"}},
                     "flow-message": {"data": {"type": "flow-message", "id": "FM"}},
                     "flow-message-variation": {"data": {"type": "flow-message", "id": "FV"}}})
    else:
        rels.update({"campaign": {"data": {"type": "campaign", "id": "C"}},
                     "campaign-message": {"data": {"type": "campaign-message", "id": "CM"}}})
    return {"type": "attribution", "id": ident, "relationships": rels, "links": {"self": "https://x/"}}


@pytest.mark.parametrize("decode", [orjson.loads, parse_lazy], ids=["dicts", "lazy"])
def test_rows_are_the_relationships(decode: Any) -> None:
    page = decode(orjson.dumps({"data": [event("E1", ["A1"]), event("E2", ["A2"])],
                                "included": [attribution("A1", "E1"), attribution("A2", None, flow=True)]}))
    checked = PageCheck(BY_TABLE["events"])(page)
    assert not checked.misfits and checked.table.num_rows == 2
    assert checked.included["event_attributions"].to_pylist() == [
        {"id": "A1", "event_id": "E1", "attributed_event_id": "T", "campaign_id": "C", "campaign_message_id": "CM",
         "flow_id": None, "flow_message_id": None, "flow_message_variation_id": None},
        # an attribution that does not name its event is parented by the event that lists it
        {"id": "A2", "event_id": "E2", "attributed_event_id": "T", "campaign_id": None, "campaign_message_id": None,
         "flow_id": "F", "flow_message_id": "FM", "flow_message_variation_id": "FV"},
    ]


def test_a_run_without_attributions_reads_none() -> None:
    page = {"data": [event("E1", ["A1"])], "included": [attribution("A1", "E1")]}
    assert PageCheck(BY_TABLE["events"], {})(page).included == {}


def test_an_attribution_without_an_id_is_set_aside() -> None:
    broken = attribution("A1", "E1")
    broken["id"] = None
    for named in (True, False):  # found through its own `event`, or through the event that lists it
        if not named:
            del broken["relationships"]["event"]
        checked = PageCheck(BY_TABLE["events"])({"data": [event("E1", [None])], "included": [broken]})
        assert checked.table.num_rows == 1 and checked.included["event_attributions"].num_rows == 0
        assert [(t, m.field) for t, m in checked.misfits] == [("event_attributions", "id")]


def test_pages_of_attributions_are_written_in_batches() -> None:
    batches = IncludedBatches()
    small = pa.table({"id": ["a"] * 7})
    out = [batches.add("t", small) for _ in range(IncludedBatches.ROWS // 7 + 1)]
    full = [t for t in out if t is not None]
    assert len(full) == 1 and full[0].num_rows >= IncludedBatches.ROWS
    assert batches.add("t", small.slice(0, 0)) is None
    assert [(name, t.num_rows) for name, t in batches.drain()] == []  # nothing left over after the batch
    batches.add("t", small)
    assert [(name, t.num_rows) for name, t in batches.drain()] == [("t", 7)]


@pytest.mark.parametrize("decode", [orjson.loads, parse_lazy], ids=["dicts", "lazy"])
@pytest.mark.parametrize("named", [True, False], ids=["named", "walked"])
def test_a_page_cut_at_a_split_takes_only_its_own_events_attributions(decode: Any, named: bool) -> None:
    """The events past a split are the other chain's, and so are their attributions: it reads them with them."""
    events = [event(f"E{i}", [f"A{i}"]) for i in range(4)]
    for i, record in enumerate(events):
        record["attributes"]["datetime"] = f"2025-01-01T00:00:0{i}+00:00"
    page = decode(orjson.dumps({"data": events,
                                "included": [attribution(f"A{i}", f"E{i}" if named else None) for i in range(4)]}))
    checked = PageCheck(BY_TABLE["events"])(page, None, lambda last: parse_instant("2025-01-01T00:00:02Z"))
    assert checked.table.column("id").to_pylist() == ["E0", "E1"]
    rows = checked.included["event_attributions"].select(["id", "event_id"]).to_pylist()
    assert rows == [{"id": "A0", "event_id": "E0"}, {"id": "A1", "event_id": "E1"}]
