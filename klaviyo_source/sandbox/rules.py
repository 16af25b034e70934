"""Request validation against the spec rules (spec_rules.json): routing, query parameters, report bodies.

Turns a raw request into a `model.Query` (or report attributes), or raises `ApiError` with the status,
code and source parameter Klaviyo would answer with.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import date, datetime
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any

from klaviyo_source.sandbox import filters, revisions
from klaviyo_source.sandbox.model import Query

RULES_PATH = Path(__file__).with_name("spec_rules.json")
_REVISION = re.compile(r"(\d{4}-\d{2}-\d{2})(\.[A-Za-z0-9]+)?", re.ASCII)
_ID = r"([^/]+)"
_PAGE_SIZE = re.compile(r"[+-]?\d+", re.ASCII)
REPORT_SPAN_DAYS = 366


class ApiError(Exception):
    """A JSON:API error answer."""

    def __init__(
        self,
        status: int,
        code: str,
        title: str,
        detail: str,
        parameter: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.title = title
        self.detail = detail
        self.parameter = parameter
        self.headers = headers or {}


def invalid(detail: str, parameter: str | None = None) -> ApiError:
    """Klaviyo's 400 for bad input."""
    return ApiError(400, "invalid", "Invalid input.", detail, parameter)


@dataclass(frozen=True)
class Route:
    """A matched endpoint: method, spec path template (without /api), its rules and the path id."""

    method: str
    template: str
    rule: dict[str, Any]
    path_id: str | None


class Rules:
    """The spec rules plus the validators that apply them."""

    def __init__(self, data: dict[str, Any] | None = None) -> None:
        self.data = data if data is not None else json.loads(RULES_PATH.read_text())
        self.revision = date.fromisoformat(self.data["revision"])
        self._routes = [
            (method, re.compile("^" + template.replace("{id}", _ID) + "$"), template, rule)
            for method, table in (("GET", self.data["get"]), ("POST", self.data["post"]))
            for template, rule in table.items()
        ]

    @cached_property
    def all_scopes(self) -> tuple[str, ...]:
        """Every scope any served endpoint needs: what the default key holds."""
        rules = [*self.data["get"].values(), *self.data["post"].values()]
        return tuple(sorted({s for r in rules for s in r["scopes"]}))

    def route(self, method: str, path: str) -> Route:
        """Match a path below /api (no trailing slash) to an endpoint; 404/405 like Klaviyo otherwise."""
        known_path = False
        for route_method, pattern, template, rule in self._routes:
            m = pattern.match(path)
            if m:
                known_path = True
                if route_method == method:
                    return Route(method, template, rule, m.group(1) if m.groups() else None)
        if known_path:
            raise ApiError(405, "method_not_allowed", "Method not allowed.", f'Method "{method}" not allowed.')
        raise ApiError(404, "not_found", "Not found.", f"The path /api{path} could not be found.")

    def check_revision(self, value: str | None) -> date:
        """The `revision` header must be present, well formed and a public revision; answers its date."""
        if not value:
            raise invalid("The revision header is required (format: YYYY-MM-DD[.suffix]).", "revision")
        m = _REVISION.fullmatch(value.strip())
        try:
            day = date.fromisoformat(m.group(1)) if m else None
        except ValueError:
            day = None
        if day is None:
            raise invalid(f"Invalid revision header '{value}'; expected YYYY-MM-DD[.suffix].", "revision")
        if not revisions.FIRST <= day <= revisions.NEWEST:
            raise invalid(
                f"Revision '{value}' is not a valid revision. Valid revisions are between "
                f"{revisions.FIRST.isoformat()} and {revisions.NEWEST.isoformat()}.",
                "revision",
            )
        return day

    def at(self, route: Route, revision: date) -> Route:
        """The route with its rule as of `revision` (parameters a later revision added withdrawn)."""
        return Route(route.method, route.template, self._rule_at(route.template, route.method, revision), route.path_id)

    @lru_cache(maxsize=512)  # noqa: B019 - one Rules per server, kept for its lifetime
    def _rule_at(self, template: str, method: str, revision: date) -> dict[str, Any]:
        table = self.data["get" if method == "GET" else "post"]
        return revisions.rule_at(table[template], template, revision)

    def build_query(self, route: Route, params: list[tuple[str, str]], account: str, origin: str = "") -> Query:
        """Validate a GET's query parameters against the endpoint's rules and build the store's Query."""
        rule = route.rule
        values = _single_values(params, rule["query_params"])
        page = rule["page"]
        page_size = None
        if page is not None:
            page_size = page["default"]
            if "page[size]" in values:
                page_size = _page_size(values["page[size]"], page)
        sort = None
        if "sort" in values:
            raw = values["sort"]
            if raw not in rule["sort"]:
                raise invalid(f"'{raw}' is not a valid sort field. Valid options: {', '.join(rule['sort'])}.", "sort")
            sort = (raw.lstrip("-"), raw.startswith("-"))
        fields = _list_params(values, "fields", rule["fields"])
        additional = _list_params(values, "additional-fields", rule["additional_fields"])
        include: tuple[str, ...] = ()
        if "include" in values:
            include = _list_values(values["include"], rule["include"], "include")
        conds: tuple[Any, ...] = ()
        if "filter" in values:
            try:
                conds = filters.conditions(values["filter"], rule["filters"])
            except filters.FilterError as err:
                raise invalid(str(err), "filter") from None
        _check_required_filter(rule, conds)
        cursor = values.get("page[cursor]")
        if cursor is not None and not cursor.strip():
            raise invalid("'page[cursor]' must not be empty; omit it for the first page.", "page[cursor]")
        return Query(
            endpoint=route.template,
            path_id=route.path_id,
            conds=conds,
            sort=sort,
            page_size=page_size,
            cursor=cursor,
            fields=fields,
            additional_fields=additional,
            include=include,
            account=account,
            origin=origin,
        )

    def report_attributes(self, route: Route, params: list[tuple[str, str]], body: bytes) -> dict[str, Any]:
        """Validate a reporting POST (query and JSON body) and return its `data.attributes`."""
        rule = route.rule
        _single_values(params, rule["query_params"])
        try:
            doc = json.loads(body or b"null")
        except (ValueError, RecursionError):
            raise invalid("The request body is not valid JSON.") from None
        data = doc.get("data") if isinstance(doc, dict) else None
        if not isinstance(data, dict):
            raise ApiError(400, "invalid", "Invalid input.", "'data' is a required object.")
        if data.get("type") != rule["type"]:
            raise invalid(f"'data.type' must be '{rule['type']}'.")
        attrs = data.get("attributes")
        if not isinstance(attrs, dict):
            raise invalid("'data.attributes' is a required object.")
        unknown = sorted(set(attrs) - set(rule["attributes"]))
        if unknown:
            raise invalid(f"Unknown attributes: {', '.join(unknown)}.")
        missing = [name for name in rule["required"] if attrs.get(name) is None]
        if missing:
            raise invalid(f"Missing required attributes: {', '.join(missing)}.")
        _check_report_statistics(attrs["statistics"], rule["statistics"])
        _check_timeframe(attrs["timeframe"], rule["timeframe_keys"])
        if "conversion_metric_id" in attrs and not isinstance(attrs["conversion_metric_id"], str):
            raise invalid("'conversion_metric_id' must be a string.")
        if "interval" in attrs and attrs["interval"] not in rule["intervals"]:
            raise invalid(f"'interval' must be one of: {', '.join(rule['intervals'])}.")
        group_by = attrs.get("group_by")
        if group_by is not None:
            if not isinstance(group_by, list) or any(g not in rule["group_by"] for g in group_by):
                raise invalid(f"'group_by' values must be among: {', '.join(rule['group_by'])}.")
            missing = [g for g in rule["group_by_required"] if g not in group_by]
            if missing:
                raise invalid(f"'group_by' must include: {', '.join(missing)}.")
        report_filter = attrs.get("filter")
        if report_filter is not None:
            _check_report_filter(report_filter, rule["filter_fields"])
        return attrs


def _single_values(params: list[tuple[str, str]], allowed: list[str]) -> dict[str, str]:
    """Query parameters as a dict; unknown or repeated parameters are 400s."""
    values: dict[str, str] = {}
    for name, value in params:
        if name not in allowed:
            raise invalid(f"'{name}' is not a valid query parameter for this endpoint.", name)
        if name in values:
            raise invalid(f"'{name}' was given more than once.", name)
        values[name] = value
    return values


def _page_size(raw: str, page: dict[str, Any]) -> int:
    if not _PAGE_SIZE.fullmatch(raw) or len(raw) > 12:
        raise invalid(f"'page[size]' must be an integer, got '{raw[:40]}'.", "page[size]")
    size = int(raw)
    if size > page["max"]:
        raise invalid(f"'page[size]' must be less than or equal to {page['max']}.", "page[size]")
    if size < page["min"]:
        raise invalid(f"'page[size]' must be greater than or equal to {page['min']}.", "page[size]")
    return size


def _list_values(raw: str, allowed: list[str], parameter: str) -> tuple[str, ...]:
    """A comma-separated parameter whose every value must be in the spec's enum."""
    items = tuple(raw.split(","))
    bad = [item for item in items if item not in allowed]
    if bad:
        raise invalid(
            f"Invalid value(s) {', '.join(repr(b) for b in bad)} for '{parameter}'. "
            f"Valid options: {', '.join(allowed)}.",
            parameter,
        )
    return items


def _list_params(values: dict[str, str], prefix: str, enums: dict[str, list[str]]) -> dict[str, tuple[str, ...]]:
    """`fields[type]` / `additional-fields[type]` parameters -> type -> values."""
    out = {}
    for rtype, allowed in enums.items():
        name = f"{prefix}[{rtype}]"
        if name in values:
            out[rtype] = _list_values(values[name], allowed, name)
    return out


def _check_required_filter(rule: dict[str, Any], conds: tuple[Any, ...]) -> None:
    if not rule["filter_required"]:
        return
    needed = rule["required_filter_fields"]
    if not conds or (needed and not any(c.field in needed for c in conds)):
        names = " or ".join(needed) if needed else "a filter"
        raise invalid(f"A filter on {names} is required for this endpoint.", "filter")


def _check_report_statistics(statistics: Any, allowed: list[str]) -> None:
    if not isinstance(statistics, list) or not statistics or any(s not in allowed for s in statistics):
        raise invalid(f"'statistics' must be a non-empty list of: {', '.join(allowed)}.")


def _check_timeframe(timeframe: Any, keys: list[str]) -> None:
    """{"key": one of the enum} or {"start", "end"} datetimes, start < end, span at most one year."""
    if isinstance(timeframe, dict) and set(timeframe) == {"key"}:
        if timeframe["key"] not in keys:
            raise invalid(f"'timeframe.key' must be one of: {', '.join(keys)}.")
        return
    if not isinstance(timeframe, dict) or set(timeframe) != {"start", "end"}:
        raise invalid("'timeframe' must be {'key': ...} or {'start': ..., 'end': ...}.")
    try:
        # The offset is ignored (the account timezone applies), so compare wall-clock times.
        start, end = (_wall_clock(timeframe[k]) for k in ("start", "end"))
    except filters.FilterError:
        raise invalid("'timeframe.start' and 'timeframe.end' must be ISO 8601 datetimes.") from None
    if end <= start:
        raise invalid("'timeframe.end' must be after 'timeframe.start'.")
    if (end - start).days > REPORT_SPAN_DAYS:
        raise invalid("The timeframe must not be longer than 1 year.")


def _wall_clock(value: Any) -> datetime:
    """A report datetime in Klaviyo's grammar (the filters' one), as its wall-clock time."""
    if not isinstance(value, str):
        raise filters.FilterError(f"{value!r} is not a datetime")
    return filters.local_datetime(value.strip()).replace(tzinfo=None)


def _check_report_filter(text: Any, attributes: list[str]) -> None:
    """Report filters: string syntax, known attributes, one filter per attribute."""
    if not isinstance(text, str):
        raise invalid("'filter' must be a string.")
    try:
        conds = filters.parse(text)
    except filters.FilterError as err:
        raise invalid(str(err)) from None
    fields = [c.field for c in conds]
    unknown = [f for f in fields if f not in attributes]
    if unknown or len(set(fields)) != len(fields):
        raise invalid("Report filters take each of the group-by attributes at most once.")
