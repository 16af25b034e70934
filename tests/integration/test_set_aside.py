"""A record that never fits its table never blocks it and is never lost: it is set aside whole, the rest loads.

Klaviyo's answers are changed on their way into the source (the same records broken on every answer, as a
record stored wrong at Klaviyo would be), then the run is checked: every other record loaded, the cursors
moved, each broken record is one row of `set_aside_records` naming table, id, field, value and reason, with
its raw JSON and load marker; the CLI exits 3 and says how many; `strict` fails the run as before.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from dlt.pipeline.exceptions import PipelineStepFailed

from klaviyo_source import client as client_module
from klaviyo_source import set_aside
from klaviyo_source.errors import InvalidRecordError
from klaviyo_source.failures import root_cause
from klaviyo_source.rows import parse_exact
from klaviyo_source.sandbox import Sandbox
from pipelines.klaviyo_pipeline import main
from tests.integration.conftest import Loader, assert_matches_ground_truth, cursors

Change = Callable[[dict[str, Any]], None]


def break_records(monkeypatch: pytest.MonkeyPatch, changes: dict[str, Change]) -> None:
    """Every answer holding a record with one of these ids carries it changed."""

    def decode(body: bytes) -> Any:
        document = parse_exact(body)
        for record in document.get("data") or ():
            if isinstance(record, dict) and record.get("id") in changes:
                changes[record["id"]](record)
        return document

    monkeypatch.setattr(client_module, "parse_lazy", decode)


def attribute(name: str, value: Any) -> Change:
    return lambda record: record["attributes"].__setitem__(name, value)


def victims(sandbox: Sandbox) -> dict[str, str]:
    truth = sandbox.ground_truth()
    return {table: sorted(truth[table])[0] for table in ("events", "profiles", "catalog_items", "tags")}


SET_ASIDE = "table_name, record_id, field, value, reason, raw, _dlt_load_id"


def test_records_that_never_fit_are_set_aside_whole_and_the_rest_loads(
    loader: Loader, sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = victims(sandbox)
    break_records(monkeypatch, {
        ids["events"]: attribute("timestamp", "soon"),
        ids["profiles"]: attribute("updated", None),  # the cursor of profiles' windows
        ids["catalog_items"]: attribute("price", "n/a"),
        ids["tags"]: lambda record: record.__setitem__("id", None),  # a null id: named as null, not missing
    })
    loader.run()
    assert_matches_ground_truth(loader, set_aside={"events": 1, "profiles": 1, "catalog_items": 1, "tags": 1})
    for table in ("events", "profiles", "catalog_items"):
        assert ids[table] not in loader.keys(table)
    assert ids["tags"] not in loader.keys("tags")
    assert len(loader.keys("tags")) == len(sandbox.ground_truth()["tags"]) - 1
    assert ("events", "") in cursors(loader) and ("profiles", "") in cursors(loader)

    rows = {r[0]: r for r in loader.rows("set_aside_records", SET_ASIDE)}
    assert set(rows) == {"events", "profiles", "catalog_items", "tags"}
    _, record_id, field, value, reason, raw, load_id = rows["events"]
    assert (record_id, field, value) == (ids["events"], "timestamp", '"soon"')
    assert reason == f"record {reason.split()[1]} (id {ids['events']}) of the page: field 'timestamp' is str 'soon', " \
                     "expected an integer"
    assert json.loads(raw)["attributes"]["timestamp"] == "soon" and json.loads(raw)["id"] == ids["events"]
    assert load_id in {r[0] for r in loader.rows("_dlt_loads", "load_id")}
    assert rows["profiles"][2:4] == ("updated", None) and "cursor field 'updated' is null" in rows["profiles"][4]
    assert rows["catalog_items"][2:4] == ("price", '"n/a"')
    assert rows["tags"][1:3] == (None, "id") and "field 'id' is null, expected a string" in rows["tags"][4]

    loader.run()  # seen again: still one row per record, naming the latest load
    assert sorted(r[0] for r in loader.rows("set_aside_records", SET_ASIDE)) == sorted(rows)

    # An operator corrects two records' raw JSON; replay loads them and keeps the others with their reasons.
    with loader.pipeline().sql_client() as client:
        client.execute_sql("update set_aside_records set raw = replace(raw, '\"soon\"', '1705314600') "
                           "where table_name = 'events'")
        client.execute_sql("update set_aside_records set raw = replace(raw, '\"n/a\"', '\"12.50\"') "
                           "where table_name = 'catalog_items'")
    replayed, remaining = set_aside.replay(loader.pipeline())
    assert replayed == {"events": 1, "catalog_items": 1, "profiles": 0, "tags": 0}
    assert remaining == {"profiles": 1, "tags": 1}
    assert ids["events"] in loader.keys("events")
    assert dict(loader.rows("catalog_items", "id, price"))[ids["catalog_items"]] == 12.5
    assert sorted(r[0] for r in loader.rows("set_aside_records", SET_ASIDE)) == ["profiles", "tags"]
    assert_matches_ground_truth(loader, set_aside={"profiles": 1, "tags": 1})


def test_strict_fails_the_run_naming_the_record_and_moves_nothing(
    loader: Loader, sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = victims(sandbox)
    break_records(monkeypatch, {ids["events"]: attribute("datetime", "yesterday")})
    with pytest.raises(PipelineStepFailed) as caught:
        loader.run(resources=["events"], strict=True)
    error = root_cause(caught.value)
    assert isinstance(error, InvalidRecordError)
    assert str(error).startswith("Klaviyo /events: HTTP 200: record ")
    assert f"(id {ids['events']}) of the page: cursor field 'datetime' is str 'yesterday', expected an ISO 8601 " \
           "datetime; the same on two answers" in str(error)
    assert not cursors(loader)


def test_the_command_line_exits_3_and_counts_what_was_set_aside(
    loader: Loader, sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    ids = victims(sandbox)
    break_records(monkeypatch, {ids["events"]: attribute("timestamp", [1]), ids["profiles"]: attribute("email", {})})
    monkeypatch.setenv("SOURCES__KLAVIYO__API_KEY", sandbox.api_key)
    monkeypatch.setenv("SOURCES__KLAVIYO__BASE_URL", sandbox.base_url)
    argv = ["--pipeline-name", loader.name, "--pipelines-dir", str(loader.workdir / "pipelines"),
            "--duckdb-file", str(loader.workdir / "klaviyo.duckdb"), "--dataset", loader.dataset,
            "--log-level", "ERROR", "--resources", "events,profiles"]
    capsys.readouterr()
    assert main(argv) == 3
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == ["warning: 2 record(s) did not fit their table and were set aside in table set_aside_records "
                     "(events 1, profiles 1); everything else loaded"]
    monkeypatch.undo()
    monkeypatch.setenv("SOURCES__KLAVIYO__API_KEY", sandbox.api_key)
    monkeypatch.setenv("SOURCES__KLAVIYO__BASE_URL", sandbox.base_url)
    assert main(argv) == 0  # a later run with nothing set aside is a plain success
    assert main([*argv, "--strict"]) == 0
