"""The declarative table: one row per Klaviyo endpoint the source reads.

Klaviyo's endpoints differ only in data (path, key, cursor, page cap, rate tier, parent), so each is
described once here and `resources.py` turns rows into dlt resources. Adding an endpoint is adding a
row (and a test). Page caps, tiers and scopes are those of the pinned revision (2026-07-15); a unit test
checks them against Klaviyo's OpenAPI spec. Where a query parameter came later than the oldest revision the
source supports, the row says from which revision it exists (`since`), and older revisions go without it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from enum import Enum
from typing import Literal


@dataclass(frozen=True)
class Tier:
    """A Klaviyo rate-limit tier: requests per 1-second burst window and per 60-second steady window."""

    burst: int
    steady: int


XS = Tier(1, 15)
S = Tier(3, 60)
M = Tier(10, 150)
L = Tier(75, 750)
XL = Tier(350, 3500)

# The revisions the source is tested against, end to end (tests/integration/test_revisions.py): from the oldest
# whose differences API-NOTES §6 records to the pinned one. 2026-10-15 reshapes campaigns and is not yet supported.
OLDEST_REVISION = "2026-01-15"
NEWEST_REVISION = "2026-07-15"
PAGE_SIZE_SINCE_2026_04 = {"page[size]": "2026-04-15"}  # lists, segments, templates, campaigns, catalog, coupons, tags


class Mode(str, Enum):
    """How a table stays current."""

    WINDOW = "window"  # read [cursor - overlap, run start) on a server-side filter + sort, merge on key
    FULL = "full"  # read everything every run, replace the table (deletions disappear)
    CHILDREN = "children"  # read everything below each parent the parent resource yields, merge on key


@dataclass(frozen=True)
class Endpoint:
    """One Klaviyo collection endpoint and the table it fills.

    path: relative to the base URL; `{id}` is filled with a parent's id.
    page_size: Klaviyo's maximum `page[size]`, or None where the endpoint takes no page size.
    cursor: the attribute windows are read on (server-side filter and sort); only for WINDOW.
    strict_lower: the endpoint filters the cursor only with greater-than (profiles), so the lower
        edge is sent one second early and the edge rows are filtered here.
    overlap: how far each run re-reads behind its saved cursor (late or skewed writes).
    parent: the table whose rows fill `{id}` (or `parent_filter`); parent_key names their column here.
    partitions: one query (and one cursor) per value of `partition_filter`, e.g. campaign channels;
        `partition_column` names the column that carries the value in the rows (a campaign's channel).
    included: JSON:API `included` resource type -> table it is loaded into (with its parent's id).
    Columns and their types are not here: they are declared per table in column_types.json, from the spec.
    since: query parameter -> the first revision that has it; with an older revision it is not sent (without
        `page[size]`, Klaviyo answers pages of the endpoint's default size).
    """

    table: str
    path: str
    scopes: tuple[str, ...]
    tier: Tier
    page_size: int | None
    mode: Mode = Mode.FULL
    primary_key: tuple[str, ...] = ("id",)
    cursor: str | None = None
    strict_lower: bool = False
    overlap: timedelta = timedelta(minutes=2)
    parent: str | None = None
    parent_key: str | None = None
    parent_filter: str | None = None
    partition_filter: str | None = None
    partitions: tuple[str, ...] = ()
    partition_column: str | None = None
    params: dict[str, str] = field(default_factory=dict)
    included: dict[str, str] = field(default_factory=dict)
    membership: bool = False  # rows are (parent_key, profile_id, joined_group_at), not whole resources
    since: dict[str, str] = field(default_factory=dict)
    immutable: bool = False  # a record never changes once written: a first load appends (first_load.py)

    def sends(self, parameter: str, revision: str) -> bool:
        """Whether `parameter` exists at `revision` (a date, maybe with a suffix; dates compare as text)."""
        return revision[:10] >= self.since.get(parameter, "")

    @property
    def write_disposition(self) -> Literal["merge", "replace"]:
        return "replace" if self.mode is Mode.FULL else "merge"


CAMPAIGN_CHANNELS = ("email", "sms", "mobile_push")

ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint("accounts", "/accounts", ("accounts:read",), XS, None),
    Endpoint(
        "events", "/events", ("events:read",), XL, 1000, Mode.WINDOW, cursor="datetime",
        overlap=timedelta(hours=24), since={"page[size]": "2026-01-15"}, immutable=True,
    ),
    Endpoint(
        "profiles", "/profiles", ("profiles:read",), L, 100, Mode.WINDOW, cursor="updated",
        strict_lower=True, params={"additional-fields[profile]": "subscriptions"},
    ),
    Endpoint("metrics", "/metrics", ("metrics:read",), M, None),
    Endpoint("lists", "/lists", ("lists:read",), L, 10, since=PAGE_SIZE_SINCE_2026_04),
    Endpoint("segments", "/segments", ("segments:read",), L, 10, since=PAGE_SIZE_SINCE_2026_04),
    Endpoint(
        "list_members", "/lists/{id}/profiles", ("lists:read", "profiles:read"), L, 100, Mode.WINDOW,
        primary_key=("list_id", "profile_id"), cursor="joined_group_at", parent="lists",
        parent_key="list_id", params={"fields[profile]": "joined_group_at"}, membership=True,
    ),
    Endpoint(
        "segment_members", "/segments/{id}/profiles", ("segments:read", "profiles:read"), L, 100,
        Mode.WINDOW, primary_key=("segment_id", "profile_id"), cursor="joined_group_at",
        parent="segments", parent_key="segment_id", params={"fields[profile]": "joined_group_at"},
        membership=True,
    ),
    Endpoint(
        "campaigns", "/campaigns", ("campaigns:read",), M, 100, Mode.WINDOW, cursor="updated_at",
        partition_filter="equals(messages.channel,'{}')", partitions=CAMPAIGN_CHANNELS, partition_column="channel",
        params={"include": "campaign-messages"}, included={"campaign-message": "campaign_messages"},
        since=PAGE_SIZE_SINCE_2026_04,
    ),
    Endpoint(
        "flows", "/flows", ("flows:read",), S, 50, Mode.WINDOW, cursor="updated",
    ),
    Endpoint(
        "flow_actions", "/flows/{id}/flow-actions", ("flows:read",), S, 50, Mode.CHILDREN,
        parent="flows", parent_key="flow_id",
    ),
    Endpoint(
        "flow_messages", "/flow-actions/{id}/flow-messages", ("flows:read",), S, 50, Mode.CHILDREN,
        parent="flow_actions", parent_key="flow_action_id",
    ),
    Endpoint(
        "templates", "/templates", ("templates:read",), L, 10, Mode.WINDOW, cursor="updated",
        since=PAGE_SIZE_SINCE_2026_04,
    ),
    Endpoint("tags", "/tags", ("tags:read",), S, 50, since=PAGE_SIZE_SINCE_2026_04),
    Endpoint(
        "catalog_items", "/catalog-items", ("catalogs:read",), XL, 100,
        since=PAGE_SIZE_SINCE_2026_04,
    ),
    Endpoint(
        "catalog_variants", "/catalog-variants", ("catalogs:read",), XL, 100,
        since=PAGE_SIZE_SINCE_2026_04,
    ),
    Endpoint("catalog_categories", "/catalog-categories", ("catalogs:read",), XL, 100, since=PAGE_SIZE_SINCE_2026_04),
    Endpoint("coupons", "/coupons", ("coupons:read",), L, 100, since=PAGE_SIZE_SINCE_2026_04),
    Endpoint(
        "coupon_codes", "/coupon-codes", ("coupon-codes:read",), XL, 100, parent="coupons",
        parent_key="coupon_id", parent_filter='any(coupon.id,["{}"])', since=PAGE_SIZE_SINCE_2026_04,
    ),
)

# Tables filled from another endpoint's `included` documents (see Endpoint.included).
INCLUDED_TABLES: tuple[str, ...] = ("campaign_messages",)

BY_TABLE: dict[str, Endpoint] = {e.table: e for e in ENDPOINTS}

# Requesting predictive analytics moves profile reads to a ten times slower tier (spec description).
PREDICTIVE_TIER = M
