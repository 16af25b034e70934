"""Generate `column_types.json`: every table's columns and their types, distilled from Klaviyo's OpenAPI spec.

A column's type must never depend on which value arrived first (catalog prices 42, 42.5 and "43.10" on one
page once made three columns), so each table's columns are declared up front from the spec's attribute
types. The connector must not read the 15 MB spec at run time, so this script distils it once into a small
JSON file that is committed beside it (as `sandbox/specgen.py` does for the sandbox's rules), and a unit test
checks that the file still matches the spec.

Per table, a list of [column, type, source]:
    type    string | integer | number | boolean | date-time | json (objects, arrays, one-of shapes)
    source  "id", "attributes.<name>[.<name>]", "relationships.<name>" (a to-one id) or "parent"
            (the id of the parent the rows were read below, e.g. list_id)

Run: `python -m klaviyo_source.typegen [spec.json]` (default: $KLAVIYO_OPENAPI_SPEC, else the repo's spec/).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from klaviyo_source.endpoints import ENDPOINTS, INCLUDED_TABLES, Endpoint

TYPES_PATH = Path(__file__).with_name("column_types.json")
SPEC_NAME = "openapi-stable-2026-07-15.json"

# Objects whose fields are worth columns of their own; every other object is one JSON column.
FLATTEN = frozenset({"location"})
# The spec types metrics' created/updated as plain strings, though it describes them as ISO 8601 datetimes
# (API-NOTES 6.6); an analyst wants them as timestamps like every other resource's.
OVERRIDES = {("metrics", "created"): "date-time", ("metrics", "updated"): "date-time"}
# Additional fields the source may request (profiles: predictive_analytics is a setting); the endpoint's
# `additional-fields` parameter lists the others, which are never requested and so never columns.
OPTIONAL_FIELDS = frozenset({("profiles", "predictive_analytics")})


def default_spec_path() -> Path:
    """$KLAVIYO_OPENAPI_SPEC, else the spec shipped in the repo (spec/), else the shared folder beside it."""
    env = os.environ.get("KLAVIYO_OPENAPI_SPEC")
    if env:
        return Path(env)
    repo = Path(__file__).resolve().parents[1]
    shipped = repo / "spec" / SPEC_NAME
    return shipped if shipped.is_file() else repo.parent / "shared" / "klaviyo" / SPEC_NAME


class Schemas:
    """`$ref`s resolved and `allOf`s merged, so a resource reads as one object schema."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.components = spec["components"]["schemas"]

    def resolve(self, schema: dict[str, Any]) -> dict[str, Any]:
        while "$ref" in schema:
            rest = {k: v for k, v in schema.items() if k != "$ref"}
            schema = {**self.components[schema["$ref"].rsplit("/", 1)[-1]], **rest}
        if "allOf" in schema:
            merged: dict[str, Any] = {"type": "object", "properties": {}}
            for part in schema["allOf"]:
                for name, prop in self.resolve(part).get("properties", {}).items():
                    old = merged["properties"].get(name)
                    if old is not None and self.resolve(prop).get("properties") and self.resolve(old).get("properties"):
                        prop = {"allOf": [old, prop]}
                    merged["properties"][name] = prop
            schema = {**merged, **{k: v for k, v in schema.items() if k != "allOf"}}
        return schema

    def kind(self, schema: dict[str, Any]) -> str:
        """The column type of an attribute's schema."""
        schema = self.resolve(schema)
        shapes = schema.get("oneOf") or schema.get("anyOf")
        if shapes:
            kinds = {self.kind(s) for s in shapes}
            # latitude/longitude: "string or number" -> a number (numeric strings convert)
            return "number" if kinds == {"string", "number"} else "json"
        kind = schema.get("type")
        if kind == "string":
            return "date-time" if schema.get("format") == "date-time" else "string"
        if kind in ("integer", "number", "boolean"):
            return str(kind)
        return "json"

    def collection_resource(self, endpoint: Endpoint) -> tuple[dict[str, Any], dict[str, Any]]:
        """(the GET operation, the schema of one resource of its `data`)."""
        operation = self.spec["paths"][f"/api{endpoint.path}"]["get"]
        content = operation["responses"]["200"]["content"]
        document = self.resolve(next(iter(content.values()))["schema"])
        return operation, self.resolve(document["properties"]["data"]["items"])

    def included_resource(self, endpoint: Endpoint, resource_type: str) -> dict[str, Any]:
        operation = self.spec["paths"][f"/api{endpoint.path}"]["get"]
        document = self.resolve(next(iter(operation["responses"]["200"]["content"].values()))["schema"])
        items = document["properties"]["included"]["items"]
        for option in items.get("oneOf", [items]):
            resource = self.resolve(option)
            if resource_type in self.resolve(resource["properties"]["type"]).get("enum", ()):
                return resource
        raise KeyError(f"{endpoint.path} includes no {resource_type!r}")


def _additional_fields(operation: dict[str, Any]) -> set[str]:
    fields: set[str] = set()
    for param in operation.get("parameters", ()):
        if param.get("name", "").startswith("additional-fields["):
            schema = param.get("schema", {})
            fields |= set(schema.get("items", schema).get("enum", ()))
    return fields


def table_columns(schemas: Schemas, table: str, resource: dict[str, Any], endpoint: Endpoint,
                  operation: dict[str, Any] | None) -> list[list[str]]:
    """[column, type, source] for one table, in the order an analyst reads them: id, attributes, ids."""
    attributes = schemas.resolve(resource["properties"].get("attributes", {})).get("properties", {})
    requested = {v for k, v in endpoint.params.items() if k.startswith("additional-fields[")}
    requested = {f for value in requested for f in value.split(",")}
    wanted_fields = next((v.split(",") for k, v in endpoint.params.items() if k.startswith("fields[")), None)
    skipped = (_additional_fields(operation) if operation else set()) - requested
    columns = [["profile_id" if endpoint.membership else "id", "string", "id"]]
    for name, prop in attributes.items():
        if wanted_fields is not None and name not in wanted_fields:
            continue
        if name in skipped and (table, name) not in OPTIONAL_FIELDS:
            continue
        sub = schemas.resolve(prop)
        if name in FLATTEN and sub.get("properties"):
            for child, child_prop in sub["properties"].items():
                columns.append([f"{name}__{child}", schemas.kind(child_prop), f"attributes.{name}.{child}"])
            continue
        columns.append([name, OVERRIDES.get((table, name), schemas.kind(prop)), f"attributes.{name}"])
    if not endpoint.membership:
        relationships = schemas.resolve(resource["properties"].get("relationships", {})).get("properties", {})
        for name, rel in relationships.items():
            data = schemas.resolve(schemas.resolve(rel).get("properties", {}).get("data", {}))
            if data.get("type") == "object":  # to-one: its id; to-many relationships are tables of their own
                columns.append([f"{name.replace('-', '_')}_id", "string", f"relationships.{name}"])
    if endpoint.parent_key and endpoint.parent_key not in {c[0] for c in columns}:
        columns.append([endpoint.parent_key, "string", "parent"])
    return columns


def generate(spec: dict[str, Any]) -> dict[str, Any]:
    schemas = Schemas(spec)
    tables: dict[str, list[list[str]]] = {}
    for endpoint in ENDPOINTS:
        if endpoint.report is not None:
            continue  # report rows are groupings and statistics (reports.py), not resources
        operation, resource = schemas.collection_resource(endpoint)
        tables[endpoint.table] = table_columns(schemas, endpoint.table, resource, endpoint, operation)
        for resource_type, table in endpoint.included.items():
            included = schemas.included_resource(endpoint, resource_type)
            tables[table] = table_columns(schemas, table, included, Endpoint(table, "", (), endpoint.tier, None), None)
    assert set(INCLUDED_TABLES) <= set(tables)
    return {"revision": spec["info"]["version"], "tables": tables}


def render(types: dict[str, Any]) -> str:
    """One line per column: small diffs when the spec changes."""
    lines = ["{", f'  "revision": {json.dumps(types["revision"])},', '  "tables": {']
    tables = list(types["tables"].items())
    for t, (table, columns) in enumerate(tables):
        lines.append(f"    {json.dumps(table)}: [")
        lines += [f"      {json.dumps(c)}{',' if i < len(columns) - 1 else ''}" for i, c in enumerate(columns)]
        lines.append(f"    ]{',' if t < len(tables) - 1 else ''}")
    lines += ["  }", "}", ""]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    path = Path(argv[1]) if len(argv) > 1 else default_spec_path()
    TYPES_PATH.write_text(render(generate(json.loads(path.read_text()))))
    print(f"wrote {TYPES_PATH} from {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
