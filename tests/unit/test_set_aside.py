"""Records set aside: what lies below them is still read."""

from __future__ import annotations

import pyarrow as pa

from klaviyo_source import set_aside
from klaviyo_source.resources import _parent_ids
from klaviyo_source.rows import Misfit


def test_the_children_of_a_record_set_aside_are_read_below_it() -> None:
    """A flow action whose `created` does not fit is set aside; its id is good, and its messages are read.

    Before, a child resource took parent ids only from rows with an `id`: the set-aside rows have none, and the
    action's messages were never asked for (CI: a flow message missing under malformed records).
    """
    bad = Misfit(1, {"id": "60628103", "attributes": {"created": 12345}}, "created", 12345, "is int 12345")
    no_id = Misfit(2, {"attributes": {}}, "id", None, "is missing")
    other = Misfit(0, {"id": "x1"}, "name", 3, "is int 3")
    rows = set_aside.rows([("flow_actions", bad), ("flow_actions", no_id), ("flow_messages", other)],
                          "/flows/{id}/flow-actions", "flow-1")
    assert _parent_ids(rows, "flow_actions") == ["60628103"]
    assert _parent_ids(pa.table({"id": ["a1", "a2"]}), "flow_actions") == ["a1", "a2"]
    assert _parent_ids([{"id": "a3"}, {"id": None}], "flow_actions") == ["a3"]
