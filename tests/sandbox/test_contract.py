"""The sandbox against Klaviyo's OpenAPI spec: answers match its schemas, spec_rules.json matches it."""

from __future__ import annotations

import json
import re
from typing import Any

import jsonschema
import pytest

from klaviyo_source.sandbox import specgen
from klaviyo_source.sandbox.rules import Rules

RULES = Rules().data


def openapi_to_jsonschema(node: Any) -> Any:
    """OpenAPI 3.0 -> JSON Schema: `nullable: true` becomes an explicit null alternative.

    `oneOf` becomes `anyOf`: the spec's alternatives overlap without a discriminator (e.g. a campaign's
    `send_options` `{"use_smart_sending": true}` fits the email, SMS and push variants alike), so real
    Klaviyo answers would fail a strict "exactly one".
    """
    if isinstance(node, list):
        return [openapi_to_jsonschema(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {"anyOf" if k == "oneOf" else k: openapi_to_jsonschema(v) for k, v in node.items() if k != "nullable"}
    if not node.get("nullable"):
        return out
    if "type" in out and "enum" not in out:
        out["type"] = [out["type"], "null"]
        return out
    return {"anyOf": [out, {"type": "null"}]}


@pytest.fixture(scope="module")
def validator_for(spec: dict[str, Any]) -> Any:
    """ref -> a validator over the whole (converted) spec, so every $ref resolves inside it."""
    root = openapi_to_jsonschema(spec)
    # Klaviyo sends `"next": null` / `"prev": null` at the ends of a collection (the connector must treat
    # null as the end), although CollectionLinks declares plain strings; accept both.
    for name in ("next", "prev"):
        root["components"]["schemas"]["CollectionLinks"]["properties"][name] = {"type": ["string", "null"]}

    def make(ref: str) -> jsonschema.Draft202012Validator:
        return jsonschema.Draft202012Validator({**root, "$ref": ref})

    return make


def first_id(client: Any, path: str, params: dict[str, str] | None = None) -> str:
    response = client.get(path, params)
    assert response.status_code == 200, response.text
    return response.json()["data"][0]["id"]


def endpoint_requests(client: Any) -> list[tuple[str, str, dict[str, str]]]:
    """(template, path, params) for every served GET, plus its include / additional-fields variants."""
    email = {"filter": "equals(messages.channel,'email')"}
    list_id = first_id(client, "/lists")
    segment_id = first_id(client, "/segments")
    campaign_id = first_id(client, "/campaigns", email)
    flow_id = first_id(client, "/flows")
    action_id = first_id(client, f"/flows/{flow_id}/flow-actions")
    coupon_id = first_id(client, "/coupons")
    tagged = {path: next(r["id"] for r in client.walk(path) if r["relationships"]["tags"]["data"])
              for path in ("/lists", "/segments")}  # so that include=tags has something to include
    concrete = {
        "/lists/{id}": f"/lists/{tagged['/lists']}",
        "/segments/{id}": f"/segments/{tagged['/segments']}",
        "/lists/{id}/profiles": f"/lists/{list_id}/profiles",
        "/segments/{id}/profiles": f"/segments/{segment_id}/profiles",
        "/campaigns/{id}/campaign-messages": f"/campaigns/{campaign_id}/campaign-messages",
        "/flows/{id}/flow-actions": f"/flows/{flow_id}/flow-actions",
        "/flow-actions/{id}/flow-messages": f"/flow-actions/{action_id}/flow-messages",
    }
    required = {"/campaigns": email, "/coupon-codes": {"filter": f"equals(coupon.id,'{coupon_id}')"}}
    out = []
    for template, rule in RULES["get"].items():
        path = concrete.get(template, template)
        base = required.get(template, {})
        out.append((template, path, base))
        if rule["include"]:
            out.append((template, path, {**base, "include": ",".join(rule["include"])}))
        for rtype, values in rule["additional_fields"].items():
            out.append((template, path, {**base, f"additional-fields[{rtype}]": ",".join(values)}))
    return out


def test_every_endpoint_matches_its_response_schema(client: Any, validator_for: Any) -> None:
    for template, path, params in endpoint_requests(client):
        response = client.get(path, params)
        assert response.status_code == 200, (template, params, response.text)
        assert response.headers["Content-Type"] == "application/vnd.api+json"
        doc = response.json()
        assert doc["data"], (template, params, "no records to validate")
        errors = list(validator_for(RULES["get"][template]["response_schema"]).iter_errors(doc))
        assert not errors, (template, params, [f"{list(e.absolute_path)}: {e.message[:300]}" for e in errors[:5]])
        if "include" in params:
            assert doc.get("included"), (template, params, "include gave no included resources")
        records = [doc["data"]] if RULES["get"][template]["single"] else doc["data"]
        for rtype, values in ((k[18:-1], v) for k, v in params.items() if k.startswith("additional-fields[")):
            # Some additional fields exist only on some records (a template's definition: drag-and-drop only).
            returned = {name for r in records if r["type"] == rtype for name in r["attributes"]}
            assert set(values.split(",")) <= returned, (template, values)


def test_report_answers_match_their_schemas(client: Any, validator_for: Any) -> None:
    metric_id = first_id(client, "/metrics")
    for path, rule in RULES["post"].items():
        if rule["type"] == "metric-aggregate":
            continue  # its own body: test_metric_aggregates_match_their_schema
        attributes: dict[str, Any] = {"statistics": rule["statistics"][:3], "timeframe": {"key": "last_365_days"}}
        if "conversion_metric_id" in rule["required"]:
            attributes["conversion_metric_id"] = metric_id
        if rule["intervals"]:
            attributes.update(interval="weekly")
        response = client.post(path, {"data": {"type": rule["type"], "attributes": attributes}})
        assert response.status_code == 200, response.text
        doc = response.json()
        assert doc["data"]["attributes"]["results"], (path, "no results to validate")
        errors = list(validator_for(rule["response_schema"]).iter_errors(doc))
        assert not errors, (path, [e.message for e in errors[:5]])


def test_metric_aggregates_match_their_schema(client: Any, validator_for: Any) -> None:
    rule = RULES["post"]["/metric-aggregates"]
    for metric_id in (first_id(client, "/metrics"),):
        for by in ([], ["$message"]):
            body = {"data": {"type": "metric-aggregate", "attributes": {
                "metric_id": metric_id, "measurements": ["count", "sum_value", "unique"], "interval": "day",
                "timezone": "America/New_York", "by": by,
                "filter": ["greater-or-equal(datetime,2000-01-01T00:00:00)", "less-than(datetime,2000-12-01T00:00:00)"],
            }}}
            response = client.post("/metric-aggregates", body)
            assert response.status_code == 200, response.text
            errors = list(validator_for(rule["response_schema"]).iter_errors(response.json()))
            assert not errors, [e.message for e in errors[:5]]


def test_error_answers_match_the_client_error_schema(client: Any, spec: dict[str, Any]) -> None:
    schema = openapi_to_jsonschema(
        spec["components"]["responses"]["ClientError"]["content"]["application/vnd.api+json"]["schema"]
    )
    for response in (
        client.get("/events", {"page[size]": "5000"}),
        client.get("/events", Authorization=None),
        client.get("/events", revision=None),
    ):
        assert 400 <= response.status_code < 500
        jsonschema.validate(response.json(), schema)


# --- spec_rules.json against the spec ------------------------------------------------------------------


def operation(spec: dict[str, Any], path: str, method: str = "get") -> dict[str, Any]:
    return spec["paths"]["/api" + path][method]


def test_spec_rules_file_is_up_to_date(spec: dict[str, Any]) -> None:
    assert specgen.build_rules(spec) == RULES, "run: python -m klaviyo_source.sandbox.specgen"


def test_page_caps_match_parameter_schemas(spec: dict[str, Any]) -> None:
    for path, rule in RULES["get"].items():
        params = {p["name"]: p for p in operation(spec, path)["parameters"]}
        if "page[size]" in params:
            m = re.fullmatch(r"Default: (\d+)\. Min: (\d+)\. Max: (\d+)\.", params["page[size]"]["description"])
            assert m, path
            assert (rule["page"]["default"], rule["page"]["min"], rule["page"]["max"]) == tuple(map(int, m.groups()))
        elif "page[cursor]" not in params:
            assert rule["page"] is None, path
    assert RULES["get"]["/events"]["page"]["max"] == 1000  # the schema, not the stale "200" in the prose
    assert RULES["get"]["/metrics"]["page"]["param"] is False


def test_sorts_filters_and_scopes_match_the_prose(spec: dict[str, Any]) -> None:
    """Cross-check the machine-readable rules against the human-readable descriptions."""
    for path, rule in RULES["get"].items():
        op = operation(spec, path)
        params = {p["name"]: p for p in op["parameters"]}
        assert set(rule["sort"]) == set(params["sort"]["schema"]["enum"]) if "sort" in params else not rule["sort"]
        if "filter" in params:
            prose = dict(re.findall(r"`([\w.]+)`: ((?:`[\w-]+`(?:, )?)+)", params["filter"]["description"]))
            assert set(prose) == set(rule["filters"]), path
            for field, ops in prose.items():
                stated = set(re.findall(r"`([\w-]+)`", ops))
                allowed = {o for shape in ("single", "list", "none") for o in rule["filters"][field].get(shape, [])}
                assert stated == allowed, (path, field)
        scopes = re.findall(r"`([\w-]+:[\w-]+)`", op["description"].split("**Scopes:**")[1])
        assert sorted(scopes) == sorted(rule["scopes"]), path
    profile_ops = RULES["get"]["/profiles"]["filters"]["updated"]
    assert profile_ops["single"] == ["greater-than", "less-than"]
    assert RULES["get"]["/campaigns"]["required_filter_fields"] == ["messages.channel"]
    assert RULES["get"]["/coupon-codes"]["required_filter_fields"] == ["coupon.id", "profile.id"]


def test_rate_tiers_match_the_prose(spec: dict[str, Any]) -> None:
    for method, table in (("get", RULES["get"]), ("post", RULES["post"])):
        for path, rule in table.items():
            text = operation(spec, path, method)["description"]
            burst, steady = re.search(r"Burst: `(\d+)/s`<br>Steady: `(\d+)/m`", text).groups()  # type: ignore[union-attr]
            assert (rule["rate"]["burst"], rule["rate"]["steady"]) == (int(burst), int(steady)), path
    for path in ("/profiles", "/lists/{id}/profiles", "/segments/{id}/profiles"):
        assert RULES["get"][path]["reduced_tiers"] == {"profile.predictive_analytics": {"burst": 10, "steady": 150}}
    for path, rtype in (("/lists/{id}", "list"), ("/segments/{id}", "segment")):
        assert RULES["get"][path]["reduced_tiers"] == {f"{rtype}.profile_count": {"burst": 1, "steady": 15}}
    assert RULES["post"]["/metric-aggregates"]["rate"] == {"burst": 3, "steady": 60}
    assert RULES["post"]["/campaign-values-reports"]["rate"] == {"burst": 1, "steady": 2, "daily": 225}


def test_rules_file_is_plain_json() -> None:
    """The runtime file must load without the spec (users' machines have none)."""
    assert json.loads(specgen.RULES_PATH.read_text())["revision"] == "2026-07-15"
