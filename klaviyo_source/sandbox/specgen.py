"""Generate `spec_rules.json` from Klaviyo's OpenAPI spec.

The sandbox must enforce exactly what the spec declares (page caps, sorts, filter operators,
fields, includes, rate tiers, scopes), yet users' machines have no spec. So this script distils
the spec once into a small JSON file that is committed and read at runtime.

Run: `python -m klaviyo_source.sandbox.specgen [spec.json]` (default: the spec shipped in the repository,
spec/openapi-stable-2026-07-15.json).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

SPEC_NAME = "openapi-stable-2026-07-15.json"
REPO_ROOT = Path(__file__).resolve().parents[2]
RULES_PATH = Path(__file__).with_name("spec_rules.json")

SERVED_GETS = (
    "/accounts",
    "/events",
    "/metrics",
    "/profiles",
    "/lists",
    "/lists/{id}",
    "/lists/{id}/profiles",
    "/segments",
    "/segments/{id}",
    "/segments/{id}/profiles",
    "/campaigns",
    "/campaigns/{id}/campaign-messages",
    "/flows",
    "/flows/{id}/flow-actions",
    "/flow-actions/{id}/flow-messages",
    "/templates",
    "/tags",
    "/catalog-items",
    "/catalog-variants",
    "/catalog-categories",
    "/coupons",
    "/coupon-codes",
)
SERVED_REPORTS = (
    "/campaign-values-reports",
    "/flow-values-reports",
    "/flow-series-reports",
    "/segment-values-reports",
    "/segment-series-reports",
)
SERVED_AGGREGATES = ("/metric-aggregates",)

# Additional fields whose use moves a request to a lower rate tier (named in the spec's prose).
REDUCED_TIER_FIELDS = (("profile", "predictive_analytics"), ("list", "profile_count"), ("segment", "profile_count"))


def default_spec_path() -> Path:
    """The spec shipped in the repository (spec/, MIT licensed by Klaviyo)."""
    return REPO_ROOT / "spec" / SPEC_NAME


def parse_rate(text: str) -> int:
    """'350/s' -> 350."""
    return int(text.split("/")[0])


def rate_of(op: dict[str, Any]) -> dict[str, int]:
    """The operation's x-klaviyo-ratelimit as integers (burst per s, steady per min, daily)."""
    return {k: parse_rate(v) for k, v in op["x-klaviyo-ratelimit"].items()}


def reduced_tier(description: str, rtype: str, value: str) -> dict[str, int] | None:
    """The lower tier stated in prose after e.g. 'additional-fields[profile]=predictive_analytics'."""
    at = description.find(f"additional-fields[{rtype}]={value}")
    if at < 0:
        return None
    m = re.search(r"Burst: `(\d+)/s`.*?Steady: `(\d+)/m`", description[at:], re.S)
    return {"burst": int(m.group(1)), "steady": int(m.group(2))} if m else None


def enum_of(param: dict[str, Any]) -> list[str]:
    schema = param.get("schema", {})
    return list(schema.get("items", schema).get("enum", []))


def page_rule(op: dict[str, Any], params: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    """page[size] default/min/max from the parameter schema; a fixed size from prose if no parameter."""
    if "page[size]" in params:
        schema = params["page[size]"]["schema"]
        return {
            "default": schema["default"],
            "min": schema["minimum"],
            "max": schema["maximum"],
            "param": True,
        }
    if "page[cursor]" in params:
        m = re.search(r"maximum of (\d+) \w+ per page", op.get("description", ""))
        size = int(m.group(1)) if m else 100
        return {"default": size, "min": size, "max": size, "param": False}
    return None


def filter_rules(op: dict[str, Any]) -> dict[str, Any]:
    """x-klaviyo-filters as field -> {single/list/none: [ops], type, format?, enum?}."""
    out: dict[str, Any] = {}
    for field, spec in op.get("x-klaviyo-filters", {}).items():
        value = spec.get("value", {})
        rule: dict[str, Any] = {shape: sorted(ops) for shape, ops in spec["operators"].items()}
        rule["type"] = value.get("type")
        if "format" in value:
            rule["format"] = value["format"]
        if "enum" in value:
            rule["enum"] = value["enum"]
        out[field] = rule
    return out


def required_filter_fields(op: dict[str, Any], filters: dict[str, Any]) -> list[str]:
    """Which filter fields satisfy a required filter, read from the operation's prose.

    Campaigns: "`?filter=equals(messages.channel,'email')`"; coupon codes: "A coupon/coupons or a
    profile/profiles must be provided".
    """
    text = op.get("description", "")
    fields = set(re.findall(r"filter=[\w-]+\(([\w.]+),", text))
    m = re.search(r"A (\w+)/\w+ or a (\w+)/\w+ must be provided", text)
    if m:
        fields |= {f"{word}.id" for word in m.groups()}
    return sorted(f for f in fields if f in filters)


def get_rules(spec: dict[str, Any], path: str) -> dict[str, Any]:
    op = spec["paths"]["/api" + path]["get"]
    params = {p["name"]: p for p in op["parameters"] if p["in"] == "query"}
    filters = filter_rules(op)
    filter_param = params.get("filter")
    filter_required = bool(filter_param and filter_param.get("required"))
    rule: dict[str, Any] = {
        "operation": op["operationId"],
        "query_params": sorted(params),
        "page": page_rule(op, params),
        "sort": enum_of(params["sort"]) if "sort" in params else [],
        "filters": filters,
        "filter_required": filter_required,
        "required_filter_fields": required_filter_fields(op, filters) if filter_required else [],
        "fields": {n[len("fields[") : -1]: enum_of(p) for n, p in params.items() if n.startswith("fields[")},
        "include": enum_of(params["include"]) if "include" in params else [],
        "additional_fields": {
            n[len("additional-fields[") : -1]: enum_of(p)
            for n, p in params.items()
            if n.startswith("additional-fields[")
        },
        "rate": rate_of(op),
        "scopes": op["x-klaviyo-scopes"],
        "response_schema": op["responses"]["200"]["content"]["application/vnd.api+json"]["schema"]["$ref"],
    }
    # a detail endpoint (one resource, `data` an object) rather than a collection
    rule["single"] = resolve(spec, rule["response_schema"])["properties"]["data"].get("type") != "array"
    rule["reduced_tiers"] = reduced_tiers(spec, op, rule)
    return rule


def reduced_tiers(spec: dict[str, Any], op: dict[str, Any], rule: dict[str, Any]) -> dict[str, Any]:
    """additional-field value -> lower tier, for operations that accept the field.

    The spec's prose states the predictive_analytics tier on /profiles and /lists/{id}/profiles but not on
    /segments/{id}/profiles; Klaviyo applies it to every profile collection, so any operation that
    accepts the field gets the tier stated by the operations that do describe it. `profile_count` on a
    list or segment is stated where it is accepted (1/s, 15/m).
    """
    out = {}
    for rtype, value in REDUCED_TIER_FIELDS:
        if value not in rule["additional_fields"].get(rtype, []):
            continue
        tier = reduced_tier(op.get("description", ""), rtype, value)
        if tier is None:
            stated = (reduced_tier(o["get"].get("description", ""), rtype, value)
                      for o in spec["paths"].values() if "get" in o)
            tier = next((t for t in stated if t), None)
        if tier:
            out[f"{rtype}.{value}"] = tier
    return out


def resolve(spec: dict[str, Any], ref: str) -> dict[str, Any]:
    node: Any = spec
    for part in ref.lstrip("#/").split("/"):
        node = node[part]
    return node


def report_rules(spec: dict[str, Any], path: str) -> dict[str, Any]:
    """Body rules of a reporting POST: data.type, required attributes, statistics/group_by/interval/timeframe
    enums (segment reports have no group_by, values reports no interval)."""
    op = spec["paths"]["/api" + path]["post"]
    body = resolve(spec, op["requestBody"]["content"]["application/vnd.api+json"]["schema"]["$ref"])
    resource = resolve(spec, body["properties"]["data"]["$ref"])
    attrs = resource["properties"]["attributes"]
    props = attrs["properties"]
    timeframes = [resolve(spec, alt["$ref"]) for alt in props["timeframe"]["oneOf"]]
    group_by = props.get("group_by", {})
    return {
        "operation": op["operationId"],
        "type": resolve(spec, resource["properties"]["type"]["$ref"])["enum"][0],
        "required": attrs["required"],
        "attributes": sorted(props),
        "statistics": props["statistics"]["items"]["enum"],
        "group_by": group_by.get("items", {}).get("enum", []),
        "group_by_required": required_group_by(group_by.get("description", "")),
        "intervals": props.get("interval", {}).get("enum", []),
        "filter_fields": filter_fields(props["filter"].get("description", "")),
        "timeframe_keys": next(t["properties"]["key"]["enum"] for t in timeframes if "key" in t["required"]),
        "query_params": sorted(p["name"] for p in op["parameters"] if p["in"] == "query"),
        "rate": rate_of(op),
        "scopes": op["x-klaviyo-scopes"],
        "response_schema": op["responses"]["200"]["content"]["application/vnd.api+json"]["schema"]["$ref"],
    }


def filter_fields(description: str) -> list[str]:
    """The attributes a report filter may name: 'Scalar attributes (a, b): ...', 'List attributes (c): ...'
    or 'Allowed filters are segment_id.'."""
    found = re.findall(r"attributes \(([\w, ]+)\)", description) or re.findall(r"Allowed filters are ([\w, ]+)\.",
                                                                              description)
    return sorted({name.strip() for group in found for name in group.split(",")})


def required_group_by(description: str) -> list[str]:
    """'The following group by attributes are required: campaign_id, campaign_message_id' -> the names."""
    m = re.search(r"group by attributes are required: ([\w, ]+)", description)
    return [name.strip() for name in m.group(1).split(",")] if m else []


def aggregate_rules(spec: dict[str, Any], path: str) -> dict[str, Any]:
    """Body rules of POST /metric-aggregates: data.type, attributes, required ones and their enums."""
    op = spec["paths"]["/api" + path]["post"]
    body = resolve(spec, op["requestBody"]["content"]["application/vnd.api+json"]["schema"]["$ref"])
    resource = resolve(spec, body["properties"]["data"]["$ref"])
    attrs = resource["properties"]["attributes"]
    props = attrs["properties"]
    return {
        "operation": op["operationId"],
        "type": resolve(spec, resource["properties"]["type"]["$ref"])["enum"][0],
        "required": attrs["required"],
        "attributes": sorted(props),
        "measurements": props["measurements"]["items"]["enum"],
        "interval": props["interval"]["enum"],
        "by": props["by"]["items"]["enum"],
        "sort": props["sort"]["enum"],
        "page_size": props["page_size"]["default"],
        "query_params": sorted(p["name"] for p in op["parameters"] if p["in"] == "query"),
        "rate": rate_of(op),
        "scopes": op["x-klaviyo-scopes"],
        "response_schema": op["responses"]["200"]["content"]["application/vnd.api+json"]["schema"]["$ref"],
    }


def build_rules(spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "revision": spec["info"]["version"],
        "get": {path: get_rules(spec, path) for path in SERVED_GETS},
        "post": {
            **{path: report_rules(spec, path) for path in SERVED_REPORTS},
            **{path: aggregate_rules(spec, path) for path in SERVED_AGGREGATES},
        },
    }


def main(argv: list[str]) -> None:
    spec_path = Path(argv[0]) if argv else default_spec_path()
    spec = json.loads(spec_path.read_text())
    RULES_PATH.write_text(json.dumps(build_rules(spec), indent=1, sort_keys=True) + "\n")
    print(f"wrote {RULES_PATH} from {spec_path}")


if __name__ == "__main__":
    main(sys.argv[1:])
