"""No input of any kind makes the sandbox answer 500: filters, sorts, page parameters, headers, raw query strings
and the bodies of the reporting and metric-aggregates POSTs, fuzzed.

Requests are built from Klaviyo's grammar with mistakes mixed in (fields of other endpoints, operators a field
does not take, calendar-invalid datetimes, odd offsets, quotes, nesting, unknown parameters, stray revisions
and keys) plus raw text, so most of them reach deep into validation and the store. Every answer must be a
200 page or a 4xx in Klaviyo's error shape. The suite runs a fixed set of examples (derandomized, so a run
is repeatable); `-m slow` runs a longer, random one.
"""

from __future__ import annotations

from typing import Any

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from klaviyo_source.sandbox import Sandbox
from klaviyo_source.sandbox.filters import OPERATORS
from klaviyo_source.sandbox.rules import Rules

RULES = Rules().data["get"]
TEMPLATES = sorted(RULES)
ALL_FIELDS = sorted({f for rule in RULES.values() for f in rule["filters"]})
EXPECTED = {200, 400, 401, 403, 404, 405}

text = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=40)
ascii_text = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=40)


def one_in(draw: st.DrawFn, n: int) -> bool:
    """True about once in `n` draws. A middle value, because hypothesis favours the ends of a range."""
    return draw(st.integers(1, n)) == n // 2 + 1


@st.composite
def datetimes(draw: st.DrawFn) -> str:
    """A datetime in one of Klaviyo's forms, half of the time with one part broken (off the calendar, out of
    range, wrong letter case, a malformed offset)."""
    parts = {
        "year": f"{draw(st.integers(1970, 2040)):04d}", "month": f"{draw(st.integers(1, 12)):02d}",
        "day": f"{draw(st.integers(1, 28)):02d}", "sep": draw(st.sampled_from(["T", " "])),
        "hour": f"{draw(st.integers(0, 23)):02d}", "minute": f"{draw(st.integers(0, 59)):02d}",
        "second": f"{draw(st.integers(0, 59)):02d}", "fraction": draw(st.text("0123456789", min_size=1, max_size=12)),
        "offset": draw(st.sampled_from(["", "Z", "+00:00", "+0000", "-05:30", "+0530", "-23:59"])),
    }
    form = draw(st.sampled_from(["seconds", "seconds", "fraction", "minutes", "date"]))
    if draw(st.booleans()):
        impossible = st.sampled_from([  # well-formed, but not a moment on the calendar or a real offset
            ("day", "30"), ("offset", "+25:00"), ("day", "31"), ("day", "29"), ("month", "13"), ("month", "00"),
            ("day", "00"), ("year", "0000"), ("hour", "24"), ("hour", "25"), ("minute", "60"), ("second", "60"),
            ("offset", "+24:00"), ("offset", "-2400"), ("offset", "+01:60"),
        ])
        malformed = st.sampled_from([
            ("day", "32"), ("year", "20255"), ("second", "61"), ("sep", "t"), ("sep", "_"), ("offset", "z"),
            ("offset", "+00"), ("offset", " 00:00"), ("offset", "%2B00:00"), ("offset", "+00:00:00"),
            ("fraction", ""), ("fraction", "5Z,"),
        ])
        part, broken = draw(malformed if one_in(draw, 4) else impossible)
        parts[part] = broken
        if part in ("hour", "minute", "sep", "offset") and form == "date":
            form = "minutes"
        if part == "second" and form in ("date", "minutes"):
            form = "seconds"
        if part == "fraction":
            form = "fraction"
        if part == "day":
            parts["month"] = draw(st.sampled_from(["02", "04", "06", "09", "11"]))
    p = parts
    out = f"{p['year']}-{p['month']}-{p['day']}"
    if form != "date":
        out += f"{p['sep']}{p['hour']}:{p['minute']}"
        if form in ("seconds", "fraction"):
            out += f":{p['second']}"
        if form == "fraction":
            out += f".{p['fraction']}"
        out += p["offset"]
    return out


values = st.one_of(
    datetimes(),
    st.integers(min_value=-(10**30), max_value=10**30).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["true", "false", "null", "None", "1e999", "-0", "0x10", "''", '""', "[]", "[[1]]"]),
    ascii_text.map(lambda s: f"'{s}'"),
    text.map(lambda s: '"' + s.replace('"', '\\"') + '"'),
    st.lists(st.one_of(ascii_text.map(lambda s: f"'{s}'"), st.integers().map(str), datetimes()), max_size=4).map(
        lambda items: "[" + ",".join(items) + "]"
    ),
    ascii_text,
)


def typed(rule: dict[str, Any]) -> st.SearchStrategy[str]:
    """Values of the field's own type (enum members, quoted strings, numbers, booleans, datetimes)."""
    if rule.get("format") == "date-time":
        return datetimes()
    if rule.get("type") == "boolean":
        return st.sampled_from(["true", "false"])
    if rule.get("type") in ("number", "integer"):
        return st.one_of(st.integers(-(10**12), 10**12).map(str), st.floats(allow_nan=False).map(repr))
    if "enum" in rule:
        return st.sampled_from(rule["enum"]).map(lambda v: f"'{v}'")
    return text.map(lambda s: "'" + s.replace("\\", "\\\\").replace("'", "\\'") + "'")


@st.composite
def expressions(draw: st.DrawFn, template: str, depth: int = 0) -> str:
    """Mostly a field the endpoint filters on with an operator it takes and a value of its type; else anything."""
    rules = RULES[template]["filters"]
    if rules and not one_in(draw, 4):
        field = draw(st.sampled_from(sorted(rules)))
        rule = rules[field]
        shape, op = draw(st.sampled_from([(s, o) for s in ("single", "list", "none") for o in rule.get(s, [])]))
        value = draw(values if one_in(draw, 5) else typed(rule))
        if shape == "list":
            value = "[" + ",".join(draw(st.lists(typed(rule), min_size=0, max_size=3))) + "]"
        return f"{op}({field})" if shape == "none" else f"{op}({field},{value})"
    op = draw(st.sampled_from([*sorted(OPERATORS), "and", "or", "not", "AND", ""]))
    if op == "and" and depth < 3:
        inner = draw(st.lists(expressions(template, depth + 1), min_size=1, max_size=3))
        return "and(" + ",".join(inner) + ")"
    field = draw(st.sampled_from([*rules, *ALL_FIELDS, "", "x", "datetime ", "a.b.c"]))
    if draw(st.booleans()):
        return f"{op}({field})"
    return f"{op}({field},{draw(values)})" + draw(st.sampled_from(["", "", ")", " ", ",", "("]))


REQUIRED = {"/campaigns": "equals(messages.channel,'email')", "/coupon-codes": "any(coupon.id,['x'])"}


@st.composite
def filters(draw: st.DrawFn, template: str) -> str:
    if template in REQUIRED and not one_in(draw, 5):
        return ",".join([REQUIRED[template], *draw(st.lists(expressions(template), max_size=2))])
    choice = draw(st.integers(0, 9))
    dated = [f for f, rule in RULES[template]["filters"].items() if rule.get("format") == "date-time"]
    if dated and choice in (3, 4, 5):  # a window on a datetime field, the commonest filter of all
        field = draw(st.sampled_from(dated))
        ops = RULES[template]["filters"][field]["single"]
        return ",".join(f"{draw(st.sampled_from(ops))}({field},{draw(datetimes())})" for _ in range(choice - 2))
    if choice == 0:
        return draw(text)
    if choice == 1:
        return "and(" * draw(st.integers(1, 300)) + "has(profile)" + ")" * draw(st.integers(0, 300))
    if choice == 2:
        return "any(id," + "[" * draw(st.integers(1, 300)) + "'a'" + "]" * draw(st.integers(0, 300)) + ")"
    return ",".join(draw(st.lists(expressions(template), min_size=1, max_size=3)))


def mostly(draw: st.DrawFn, good: st.SearchStrategy[str], bad: st.SearchStrategy[str]) -> str:
    """A good value four times in five: one bad parameter answers 400 before the others are looked at."""
    return draw(bad if one_in(draw, 5) else good)


@st.composite
def requests_(draw: st.DrawFn) -> tuple[str, dict[str, str], dict[str, str]]:
    template = draw(st.sampled_from(TEMPLATES))
    rule = RULES[template]
    params: dict[str, str] = {}
    if rule["filters"] and not one_in(draw, 4):
        params["filter"] = draw(filters(template))
    if rule["sort"] and draw(st.booleans()):
        bad = st.one_of(st.sampled_from([s.lstrip("-") + "x" for s in rule["sort"]] + ["-", "", "--id", "id,name"]),
                        ascii_text)
        params["sort"] = mostly(draw, st.sampled_from(rule["sort"]), bad)
    page = rule["page"]
    if page and page["param"] and draw(st.booleans()):
        params["page[size]"] = mostly(draw, st.integers(page["min"], page["max"]).map(str), st.one_of(
            st.integers(-5, 2000).map(str), ascii_text,
            st.sampled_from(["", " 5", "5 ", "+5", "1.0", "1e2", "٣", "99999999999999999999999", "0x10"])))
    if one_in(draw, 6):
        params["page[cursor]"] = draw(st.one_of(st.sampled_from(["", " ", "=", "AAAA", "a" * 300]), ascii_text))
    for prefix, enums in (("fields", rule["fields"]), ("additional-fields", rule["additional_fields"])):
        if enums and draw(st.booleans()):
            rtype = mostly(draw, st.sampled_from(sorted(enums)), st.just("nope"))
            good = st.lists(st.sampled_from(enums.get(rtype, ["id"])), min_size=1, max_size=4).map(",".join)
            params[f"{prefix}[{rtype}]"] = mostly(draw, good, st.sampled_from(["", "x", ",", "id,,id"]))
    if rule["include"] and draw(st.booleans()):
        good = st.lists(st.sampled_from(rule["include"]), min_size=1, max_size=3).map(",".join)
        params["include"] = mostly(draw, good, st.sampled_from(["", "nope", ",", f"{rule['include'][0]},"]))
    if one_in(draw, 10):
        params[draw(ascii_text)] = draw(text)
    path = template
    if "{id}" in template:
        parent = mostly(draw, st.just("PARENT"), st.sampled_from(["nope", "%00", "..", "a%2Fb"]))
        path = template.replace("{id}", parent)
    revision = draw(st.sampled_from(["2026-07-15", "2024-10-15", "2026-01-15", "2026-04-15", "2026-10-15"]))
    if one_in(draw, 10):
        revision = draw(st.one_of(st.sampled_from(
            ["2026-10-15.pre", "2023-02-22", "2026-02-30", "2026-10-16", "1999-01-01", "", "2026-07-15.",
             "2026-07-15.pre.pre"]), ascii_text.map(str.lstrip)))
    headers = {"revision": revision}
    if one_in(draw, 10):
        headers["Authorization"] = draw(st.sampled_from(["", "Klaviyo-API-Key", "Bearer x", "Klaviyo-API-Key  KEY"]))
    if one_in(draw, 10):
        headers["Accept"] = draw(ascii_text.map(str.lstrip))
    return path, params, headers


@pytest.fixture(scope="module")
def parents(sandbox: Sandbox, client: Any) -> dict[str, str]:
    """A real parent id per nested template, so nested requests reach the store too."""
    flow = client.get("/flows").json()["data"][0]["id"]
    list_id, segment = client.get("/lists").json()["data"][0]["id"], client.get("/segments").json()["data"][0]["id"]
    return {
        "/lists/{id}": list_id,
        "/lists/{id}/profiles": list_id,
        "/segments/{id}": segment,
        "/segments/{id}/profiles": segment,
        "/campaigns/{id}/campaign-messages": client.get(
            "/campaigns", {"filter": "equals(messages.channel,'email')"}).json()["data"][0]["id"],
        "/flows/{id}/flow-actions": flow,
        "/flow-actions/{id}/flow-messages": client.get(f"/flows/{flow}/flow-actions").json()["data"][0]["id"],
    }


def check(sandbox: Sandbox, parents: dict[str, str], request: tuple[str, dict[str, str], dict[str, str]]) -> None:
    path, params, headers = request
    for template, parent in parents.items():
        if path == template.replace("{id}", "PARENT"):
            path = template.replace("{id}", parent)
    sent = {"Authorization": f"Klaviyo-API-Key {sandbox.api_key}", **headers}
    if "Authorization" in headers:
        sent["Authorization"] = headers["Authorization"].replace("KEY", sandbox.api_key)
    response = requests.get(sandbox.base_url + path, params=params, headers=sent, timeout=30)
    assert response.status_code in EXPECTED, (response.status_code, path, params, headers, response.text[:300])
    doc = response.json()
    if response.status_code == 200 and isinstance(doc["data"], dict):  # a detail endpoint: one resource
        assert doc["data"]["id"] and set(doc["links"]) == {"self"}
    elif response.status_code == 200:
        assert isinstance(doc["data"], list) and set(doc["links"]) >= {"self", "next", "prev"}
    else:
        error = doc["errors"][0]
        assert {"id", "code", "title", "detail"} <= set(error) and error["status"] == response.status_code


@settings(max_examples=400, derandomize=True, deadline=None, suppress_health_check=list(HealthCheck))
@given(request=requests_())
def test_no_request_makes_the_sandbox_fail(sandbox: Sandbox, parents: dict[str, str],
                                           request: tuple[str, dict[str, str], dict[str, str]]) -> None:
    check(sandbox, parents, request)


@settings(max_examples=300, derandomize=True, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_no_filter_makes_the_sandbox_fail(sandbox: Sandbox, parents: dict[str, str], data: st.DataObject) -> None:
    """Filters alone, on requests that are otherwise right, so that every one of them reaches the parser."""
    template = data.draw(st.sampled_from([t for t in TEMPLATES if RULES[t]["filters"]]))
    revision = data.draw(st.sampled_from(["2026-07-15", "2024-10-15", "2026-10-15"]))
    check(sandbox, parents, ("PARENT".join(template.split("{id}")), {"filter": data.draw(filters(template))},
                             {"revision": revision}))


@pytest.mark.slow
@settings(max_examples=5000, deadline=None, suppress_health_check=list(HealthCheck))
@given(request=requests_())
def test_no_request_makes_the_sandbox_fail_long(sandbox: Sandbox, parents: dict[str, str],
                                                request: tuple[str, dict[str, str], dict[str, str]]) -> None:
    check(sandbox, parents, request)


@settings(max_examples=120, derandomize=True, deadline=None, suppress_health_check=list(HealthCheck))
@given(query=st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), max_size=120))
def test_no_raw_query_string_makes_the_sandbox_fail(sandbox: Sandbox, query: str) -> None:
    """Whatever bytes follow `?` (stray `%`, `+`, `&`, `=`, brackets), the answer is a page or a 4xx."""
    for path in ("/events", "/profiles", "/campaigns"):
        response = requests.get(f"{sandbox.base_url}{path}?{query}", timeout=30, headers={
            "Authorization": f"Klaviyo-API-Key {sandbox.api_key}", "revision": "2026-07-15"})
        assert response.status_code in EXPECTED, (path, query, response.text[:300])


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | text,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(text, children, max_size=4),
    max_leaves=12,
)
POSTS = {path: rule for path, rule in Rules().data["post"].items()}


@st.composite
def report_bodies(draw: st.DrawFn, rule: dict[str, Any], metric: str) -> Any:
    """A reporting or metric-aggregates POST body: a good one with, most of the time, one attribute made odd."""
    if one_in(draw, 10):
        return draw(json_values)
    window = [f"greater-or-equal(datetime,{draw(datetimes())})", f"less-than(datetime,{draw(datetimes())})"]
    if rule["type"] == "metric-aggregate":
        attributes: dict[str, Any] = {
            "metric_id": metric, "measurements": ["count"], "interval": "day", "by": [], "timezone": "UTC",
            "page_size": 500, "filter": ["greater-or-equal(datetime,2024-01-01T00:00:00Z)",
                                         "less-than(datetime,2024-03-01T00:00:00Z)"],
        }
        odd: dict[str, st.SearchStrategy[Any]] = {
            "filter": st.one_of(st.just(window), st.lists(st.one_of(text, datetimes()), max_size=3)),
            "measurements": st.lists(st.sampled_from([*rule["measurements"], "x"]), max_size=3),
            "interval": st.sampled_from([*rule["interval"], "year", 3]),
            "by": st.lists(st.sampled_from([*rule["by"], "nope"]), max_size=2),
            "timezone": st.sampled_from(["America/New_York", "Asia/Kathmandu", "Mars/Olympus", "", 5]),
            "page_size": st.sampled_from(["10", 10.5, True, 0, 1, 501, -1, 10**30]),
            "sort": st.one_of(st.sampled_from(rule["sort"]), text), "page_cursor": text, "metric_id": st.integers(),
        }
    else:
        attributes = {"statistics": ["opens", "clicks"], "conversion_metric_id": metric,
                      "timeframe": {"start": "2024-01-01T00:00:00", "end": "2024-02-01T00:00:00"}}
        odd = {
            "statistics": st.lists(st.sampled_from([*rule["statistics"], "x"]), max_size=4),
            "timeframe": st.one_of(st.fixed_dictionaries({"start": datetimes(), "end": datetimes()}),
                                   st.fixed_dictionaries({"key": st.sampled_from([*rule["timeframe_keys"], "x"])})),
            "conversion_metric_id": st.one_of(text, st.integers()),
            "group_by": st.lists(st.sampled_from([*rule["group_by"], "x"]), max_size=4),
            "filter": st.one_of(text, st.sampled_from(
                [f"equals({g},'x')" for g in rule["group_by"]] + ["contains-any(tag_id,['a'])", "and("])),
        }
    for _ in range(draw(st.integers(0, 2))):
        name = draw(st.sampled_from(sorted(odd)))
        attributes[name] = draw(st.one_of(odd[name], json_values) if one_in(draw, 3) else odd[name])
    if one_in(draw, 6):
        attributes[draw(text)] = draw(json_values)
    if one_in(draw, 6):
        attributes.pop(draw(st.sampled_from(sorted(attributes))))
    return {"data": {"type": mostly(draw, st.just(rule["type"]), text), "attributes": attributes}}


@settings(max_examples=150, derandomize=True, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_no_report_or_aggregate_body_makes_the_sandbox_fail(sandbox: Sandbox, client: Any,
                                                           data: st.DataObject) -> None:
    path = data.draw(st.sampled_from(sorted(POSTS)))
    metric = client.get("/metrics").json()["data"][0]["id"]
    body = data.draw(report_bodies(POSTS[path], metric))
    response = requests.post(sandbox.base_url + path, json=body, timeout=60, headers={
        "Authorization": f"Klaviyo-API-Key {sandbox.api_key}", "revision": "2026-07-15"})
    assert response.status_code in EXPECTED, (path, body, response.text[:300])
    doc = response.json()
    assert "data" in doc if response.status_code == 200 else doc["errors"][0]["status"] == response.status_code


ODD_VALUES: list[Any] = [None, "", "x", "10", 0, -1, 1, 501, 10**30, 10.5, True, False, [], ["x"], [None], {}, {"x": 1},
                         {"key": "last_30_days"}, {"start": "2024-02-30T00:00:00Z", "end": "2024-03-01T00:00:00Z"},
                         ["greater-or-equal(datetime,2024-01-01T00:00:00Z)"], "2024-01-01T00:00:00+25:00"]


@pytest.mark.parametrize("path", sorted(POSTS))
def test_every_body_attribute_with_every_odd_value(sandbox: Sandbox, client: Any, path: str) -> None:
    """Each attribute of a good body, alone, replaced by each value of another type or range: 4xx, never 500."""
    rule = POSTS[path]
    metric = client.get("/metrics").json()["data"][0]["id"]
    good = {"metric_id": metric, "measurements": ["count"], "interval": "day", "by": [], "timezone": "UTC",
            "page_size": 500, "filter": ["greater-or-equal(datetime,2024-01-01T00:00:00Z)",
                                         "less-than(datetime,2024-03-01T00:00:00Z)"]}
    if rule["type"] != "metric-aggregate":
        good = {"statistics": rule["statistics"][:1],
                "timeframe": {"start": "2024-01-01T00:00:00", "end": "2024-02-01T00:00:00"}}
        if "conversion_metric_id" in rule["attributes"]:  # campaign and flow reports
            good.update(conversion_metric_id=metric, group_by=rule["group_by_required"])
        if rule["intervals"]:  # series reports require one
            good["interval"] = "daily"
    session = requests.Session()
    session.headers.update({"Authorization": f"Klaviyo-API-Key {sandbox.api_key}", "revision": "2026-07-15"})
    assert session.post(sandbox.base_url + path, json={"data": {"type": rule["type"], "attributes": good}}).ok
    for name in sorted(set(rule["attributes"])):
        for value in ODD_VALUES:
            body = {"data": {"type": rule["type"], "attributes": {**good, name: value}}}
            response = session.post(sandbox.base_url + path, json=body)
            assert response.status_code in EXPECTED, (path, name, value, response.text[:300])
