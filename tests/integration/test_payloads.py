"""Realistic payload variants through the whole path, into DuckDB and PostgreSQL, field by field.

`tests/payloads/corpus.json` holds answers as real accounts send them (written for this project from the
spec's schemas and examples and Klaviyo's documented datetime forms): every datetime form, numbers as
strings, strings as numbers, nulls, big integers and decimals in free-form JSON, nested objects, pages that
continue with `links.next`, related records sent along, and records that cannot fit. A small HTTP server plays
Klaviyo with them; the source loads them; then every field of every table is compared with the payload,
and the records that cannot fit must be in `set_aside_records`, whole, and nowhere else.

The expected values are computed here from the payload with independent means (pendulum for datetimes,
Decimal for numbers), not with the source's own converters.
"""

from __future__ import annotations

import json
import os
import threading
import uuid
from collections.abc import Iterator
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import dlt
import orjson
import pendulum
import pytest

from klaviyo_source import TABLES, klaviyo_source
from klaviyo_source.endpoints import BY_TABLE
from klaviyo_source.rows import COLUMN_TYPES

CORPUS_PATH = Path(__file__).resolve().parents[1] / "payloads" / "corpus.json"
CORPUS = json.loads(CORPUS_PATH.read_text(), parse_float=Decimal, parse_int=Decimal)
KEY = "pk_corpus_0123456789abcdef0123"


def render(document: Any) -> bytes:
    """JSON with every number as written in the corpus (Decimal digits, integers of any size)."""
    return orjson.dumps(document, default=lambda d: orjson.Fragment(str(d)))


class Klaviyo(BaseHTTPRequestHandler):
    """Answers GETs from the corpus; partitions and parents are told apart by the filter or the path."""

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        path = url.path.removeprefix("/api").rstrip("/")
        query = parse_qs(url.query)
        key = path
        filter_ = (query.get("filter") or [""])[0]
        if path == "/campaigns":
            key = next(f"/campaigns?{c}" for c in ("email", "sms", "mobile_push") if f"'{c}'" in filter_)
        elif path == "/coupon-codes":
            key = "/coupon-codes?" + filter_.split('["', 1)[1].split('"', 1)[0]
        pages = CORPUS.get(key)
        if pages is None:
            self.send_response(404)
            self.end_headers()
            return
        index = int((query.get("page[cursor]") or ["0"])[0])
        page = dict(pages[index])
        if (page.get("links") or {}).get("next"):
            host = f"http://{self.headers['Host']}"
            page["links"] = {**page["links"], "next": f"{host}{url.path}?page%5Bcursor%5D={index + 1}"}
        body = render(page)
        self.send_response(200)
        self.send_header("Content-Type", "application/vnd.api+json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def klaviyo() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Klaviyo)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/api"
    server.shutdown()


def destinations() -> list[Any]:
    out: list[Any] = ["duckdb"]
    out.append(pytest.param("postgres", marks=pytest.mark.postgres))
    return out


@pytest.fixture(params=destinations())
def pipeline(request: pytest.FixtureRequest, tmp_path: Path) -> dlt.Pipeline:
    if request.param == "duckdb":
        destination: Any = dlt.destinations.duckdb(str(tmp_path / "corpus.duckdb"))
    else:
        dsn = os.environ.get("KLAVIYO_TEST_POSTGRES_DSN")
        if not dsn:
            pytest.skip("KLAVIYO_TEST_POSTGRES_DSN is not set (.ci/run starts a PostgreSQL server and sets it)")
        destination = dlt.destinations.postgres(dsn)
    return dlt.pipeline(pipeline_name="corpus", destination=destination, dataset_name=f"corpus_{uuid.uuid4().hex[:8]}",
                        pipelines_dir=str(tmp_path / "pipelines"))


# --- what the payload says each column must hold ------------------------------------------------------

def instant(text: str) -> Any:
    parsed = pendulum.parse(text.replace(" UTC", "Z"), tz="UTC")
    return parsed.replace(microsecond=parsed.microsecond)  # pendulum already truncates to microseconds


def expected_value(kind: str, value: Any) -> Any:
    if value is None or (kind not in ("string", "json") and value == ""):
        return None
    if kind == "string":
        return value if isinstance(value, str) else str(value)
    if kind == "integer":
        return int(Decimal(str(value)))
    if kind == "number":
        return float(Decimal(str(value)))
    if kind == "boolean":
        return value if isinstance(value, bool) else str(value).lower() == "true"
    if kind == "date-time":
        return instant(value)
    return exact(render(value))  # json: the same structure, every number exact


def exact(text: str | bytes) -> Any:
    return json.loads(text, parse_float=Decimal, parse_int=Decimal)


def read(resource: dict[str, Any], source: str) -> Any:
    parts = source.split(".")
    if parts == ["id"]:
        return resource.get("id")
    if parts[0] == "relationships":
        data = ((resource.get("relationships") or {}).get(parts[1]) or {}).get("data")
        return data.get("id") if isinstance(data, dict) else None
    value: Any = resource.get("attributes") or {}
    for part in parts[1:]:
        value = value.get(part) if isinstance(value, dict) else None
    return value


Key = tuple[str | None, ...]


def records(table: str) -> dict[Key, tuple[dict[str, Any], dict[str, str]]]:
    """Every record the corpus sends for a table, with the parent columns it is read below, by those columns' values
    and its id: one profile is a member of two lists, one row each."""
    out: dict[Key, tuple[dict[str, Any], dict[str, str]]] = {}

    def add(record: dict[str, Any], parent: dict[str, str]) -> None:
        out[(*(parent[k] for k in sorted(parent)), record.get("id"))] = (record, parent)

    endpoint = BY_TABLE.get(table)
    for key, pages in CORPUS.items():
        if not key.startswith("/"):
            continue
        path, _, part = key.partition("?")
        for page in pages:
            if table == "campaign_messages":
                if path == "/campaigns":
                    parents = {m["id"]: c["id"] for c in page["data"]
                               for m in c["relationships"]["campaign-messages"]["data"]}
                    for r in page.get("included", ()):
                        add(r, {"campaign_id": parents[r["id"]]})
                continue
            if table == "event_attributions":
                if path == "/events":  # an attribution names its event, or the event that lists it is its parent
                    parents = {a["id"]: e["id"] for e in page["data"]
                               for a in ((e.get("relationships") or {}).get("attributions") or {}).get("data", ())}
                    for r in page.get("included", ()):
                        add(r, {"event_id": parents[r["id"]]})
                continue
            assert endpoint is not None
            parent: dict[str, str] = {}
            if endpoint.parent and "{id}" in endpoint.path:
                prefix, suffix = endpoint.path.split("{id}")
                if not (path.startswith(prefix) and path.endswith(suffix)):
                    continue
                parent = {str(endpoint.parent_key): path[len(prefix):-len(suffix)]}
            elif path != endpoint.path:
                continue
            if endpoint.parent_filter:
                parent = {str(endpoint.parent_key): part}
            for r in page["data"]:
                add(r, parent)
    return out


def query(pipeline: dlt.Pipeline, table: str, columns: list[list[str]]) -> list[dict[str, Any]]:
    postgres = pipeline.destination.destination_name == "postgres"
    names = [c[0] for c in columns]
    select = ", ".join(f'"{n}"::text' if kind == "json" and postgres else f'"{n}"' for n, kind, _ in columns)
    with pipeline.sql_client() as client:
        rows = client.execute_sql(f"select {select} from {client.make_qualified_table_name(table)}")
    return [dict(zip(names, row, strict=True)) for row in rows or ()]


def test_every_field_loads_as_sent_and_misfits_are_set_aside(klaviyo: str, pipeline: dlt.Pipeline) -> None:
    tables = [t for t in COLUMN_TYPES["tables"] if t in TABLES]  # every table but the reports (POSTs, no corpus)
    pipeline.run(klaviyo_source(api_key=KEY, base_url=klaviyo, resources=tables),
                 loader_file_format="parquet").raise_on_failed_jobs()
    set_aside = CORPUS["set_aside"]
    compared = 0
    for table, columns in COLUMN_TYPES["tables"].items():
        sent = records(table)
        assert sent, f"the corpus has no {table}"
        parents = sorted({k for _, parent in sent.values() for k in parent})
        # (rows may repeat: this server ignores the time filters, so each planned window reads the same page)
        loaded = {(*(row[k] for k in parents), row[columns[0][0]]): row for row in query(pipeline, table, columns)}
        wanted = {key: r for key, r in sent.items() if key[-1] not in set_aside.get(table, ())}
        assert set(loaded) == set(wanted), f"{table}: loaded {set(loaded)} != sent {set(wanted)}"
        for ident, (resource, parent) in wanted.items():
            for name, kind, source in columns:
                value = parent[name] if source == "parent" else read(resource, source)
                if name in parent:
                    value = parent[name]
                got = loaded[ident][name]
                if kind == "json" and got is not None:
                    got = exact(got)
                assert got == expected_value(kind, value), f"{table} {ident} {name}: {got!r} != {value!r}"
                compared += 1
    assert compared > 400

    with pipeline.sql_client() as client:
        rows = client.execute_sql(
            f"select table_name, record_id, raw, reason, _dlt_load_id from "
            f"{client.make_qualified_table_name('set_aside_records')}")
    kept = sorted((t, i) for t, i, _, _, _ in rows)
    assert kept == sorted((t, i) for t, ids in set_aside.items() for i in ids), kept
    for table, ident, raw, reason, load_id in rows:
        resource = next(r for key, (r, _) in records(table).items() if key[-1] == ident)
        assert exact(raw) == exact(render(resource))
        assert reason.startswith("record ") and load_id
