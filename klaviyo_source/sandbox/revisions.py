"""What changed between Klaviyo revisions on the endpoints the sandbox serves: one table of facts.

`spec_rules.json` is distilled from the spec of one revision (2026-07-15). Klaviyo answers a request with the
rules of the revision named in its `revision` header, so a parameter, an `include` or `additional-fields` value
or a filter that a later revision introduced is a 400 before that revision, like any unknown parameter. The
facts below are those API-NOTES §6 records from comparing the spec's 2026-01-15, 2026-04-15 and 2026-07-15
branches, plus the rate tiers the spec stated in older revisions (§1.8, §2.16). Nothing else is modelled: a
revision between two releases behaves as the release before it, and the newest public revision, 2026-10-15
(documented by Klaviyo and sent by the official SDK 25), is accepted with the 2026-07-15 rules (its reshaped
campaign model is not in the spec we have).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from datetime import date
from typing import Any

FIRST = date(2023, 2, 22)  # Klaviyo's first GA revision of the JSON:API endpoints
NEWEST = date(2026, 10, 15)  # the newest public revision


@dataclass(frozen=True)
class Since:
    """`parameter` (with `value`, for one value of a list parameter or one filter operator) exists on `endpoints`
    from `revision` on. A filter fact names `field:operator` as its value."""

    revision: date
    endpoints: tuple[str, ...]
    parameter: str
    value: str | None = None


@dataclass(frozen=True)
class RateBefore:
    """Before `revision`, `endpoints` had these limits (overriding the spec's burst/steady)."""

    revision: date
    endpoints: tuple[str, ...]
    limits: dict[str, int]


_PAGED_FROM_2026_04 = (
    "/lists", "/segments", "/templates", "/campaigns", "/catalog-items", "/catalog-variants",
    "/catalog-categories", "/coupons", "/coupon-codes", "/tags",
)
_L_CLASS = ("/profiles", "/lists", "/segments", "/templates", "/lists/{id}/profiles", "/segments/{id}/profiles")

FACTS: tuple[Since, ...] = (
    # §6.1, §6.7: events had no page[size] (fixed 200 per page) before 2026-01-15.
    Since(date(2026, 1, 15), ("/events",), "page[size]"),
    # §6.7: fixed page sizes (the spec's defaults) before 2026-04-15.
    Since(date(2026, 4, 15), _PAGED_FROM_2026_04, "page[size]"),
    Since(date(2026, 4, 15), ("/events",), "filter", "metric:has"),
    Since(date(2026, 4, 15), ("/templates",), "additional-fields[template]"),
    Since(date(2026, 7, 15), ("/profiles",), "include", "conversations"),
    # the sparse fieldset of the included conversations came with them
    Since(date(2026, 7, 15), ("/profiles",), "fields[conversation]"),
)

RATES: tuple[RateBefore, ...] = (
    # §1.8, §6.2: the L class allowed 700/m (not 750/m) up to 2025-10-15.
    RateBefore(date(2026, 1, 15), _L_CLASS, {"steady": 700}),
    # §2.16: templates were 10/s, 150/m up to 2025-07-15 (L class from 2025-10-15).
    RateBefore(date(2025, 10, 15), ("/templates",), {"burst": 10, "steady": 150}),
)


def rule_at(rule: dict[str, Any], template: str, revision: date) -> dict[str, Any]:
    """The endpoint's rule as Klaviyo applied it at `revision` (the newest rule itself when nothing differs)."""
    pending = [f for f in FACTS if template in f.endpoints and revision < f.revision]
    limits = [r for r in RATES if template in r.endpoints and revision < r.revision]
    if not pending and not limits:
        return rule
    out = copy.deepcopy(rule)
    for fact in pending:
        _withdraw(out, fact)
    for older in limits:
        out["rate"] = {**out["rate"], **older.limits}
    return out


def _withdraw(rule: dict[str, Any], fact: Since) -> None:
    """Take what `fact` introduced out of a rule."""
    name, value = fact.parameter, fact.value
    if name == "filter" and value is not None:
        field, op = value.split(":")
        ops = rule["filters"].get(field, {})
        for shape in ("single", "list", "none"):
            if op in ops.get(shape, ()):
                ops[shape] = [o for o in ops[shape] if o != op]
        if not any(ops.get(shape) for shape in ("single", "list", "none")):
            rule["filters"].pop(field, None)
        return
    if value is not None:
        if name == "include":
            rule["include"] = [v for v in rule["include"] if v != value]
            if not rule["include"]:
                rule["query_params"] = [p for p in rule["query_params"] if p != "include"]
        return
    rule["query_params"] = [p for p in rule["query_params"] if p != name]
    if name == "page[size]" and rule["page"] is not None:
        rule["page"] = {**rule["page"], "param": False}
    for prefix, key in (("additional-fields[", "additional_fields"), ("fields[", "fields")):
        if name.startswith(prefix):
            rule[key].pop(name[len(prefix) : -1], None)
