"""The declarative table: one row per Klaviyo endpoint the source reads.

Klaviyo's endpoints differ only in data (path, key, cursor, page cap, rate tier, parent), so each is
described once here and `resources.py` turns rows into dlt resources. Adding an endpoint is adding a
row (and a test). Page caps, tiers and scopes are those of the pinned revision (2026-07-15); a unit test
checks them against Klaviyo's OpenAPI spec. Where a query parameter came later than the oldest revision the
source supports, the row says from which revision it exists (`since`), and older revisions go without it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import date, timedelta
from enum import Enum
from typing import Literal


@dataclass(frozen=True)
class Tier:
    """A Klaviyo rate-limit tier: requests per 1-second burst window and per 60-second steady window, and
    per day where Klaviyo caps that too (the reporting endpoints)."""

    burst: int
    steady: int
    daily: int | None = None


XS = Tier(1, 15)
S = Tier(3, 60)
M = Tier(10, 150)
L = Tier(75, 750)
XL = Tier(350, 3500)
REPORTING = Tier(1, 2, 225)

# The revisions the source is tested against, end to end (tests/integration/test_revisions.py): from the oldest
# whose differences API-NOTES §6 records to the pinned one. 2026-10-15 reshapes campaigns and is not yet supported.
OLDEST_REVISION = "2026-01-15"
NEWEST_REVISION = "2026-07-15"
PAGE_SIZE_SINCE_2026_04 = {"page[size]": "2026-04-15"}  # lists, segments, templates, campaigns, catalog, coupons, tags


class Mode(str, Enum):
    """How a table stays current, or what a check reads."""

    WINDOW = "window"  # read [cursor - overlap, run start) on a server-side filter + sort, merge on key
    FULL = "full"  # read everything every run, replace the table (deletions disappear)
    CHILDREN = "children"  # read everything below each parent the parent resource yields, merge on key
    REPORT = "report"  # POST a reporting query per planned timeframe (reports.py); each timeframe read
    # replaces the rows of that timeframe (merge on the key; `Report.period` is the merge key)
    COUNT = "count"  # checks: one GET per parent answers a count (`count_attribute`) of the `counts` table
    AGGREGATE = "aggregate"  # checks: one POST /metric-aggregates per parent metric and period: events a day


@dataclass(frozen=True)
class Report:
    """What a reporting endpoint is asked for and how its answer becomes rows.

    groupings: `group_by` as sent, and the leading key columns (Klaviyo's names).
    statistics: every statistic the endpoint offers, asked for on every call (columns of the same names).
    conversion: the endpoint needs `conversion_metric_id` (campaign and flow reports).
    interval: series reports: the `interval` (one row per grouping and interval start, column `day`);
        None for values reports (one row per grouping and timeframe, columns `timeframe_start/end`).
    days_per_call: the longest timeframe one call may cover; values reports read calendar months instead.
    paged: the endpoint offers `page_cursor`.
    earliest: Klaviyo has no data before this date (account timezone).
    """

    type: str
    groupings: tuple[str, ...]
    statistics: tuple[str, ...]
    conversion: bool = True
    interval: Literal["daily"] | None = None
    days_per_call: int = 366
    paged: bool = True
    earliest: date | None = None

    @property
    def period(self) -> tuple[str, ...]:
        """The key columns after the groupings: the conversion metric and the day or the timeframe."""
        return (*(("conversion_metric_id",) if self.conversion else ()), "day" if self.interval else "timeframe_start")


@dataclass(frozen=True)
class Bursts:
    """Where an endpoint's data comes in bursts that another endpoint announces: events follow a campaign's send.

    table: the announcing endpoint (read in each of its partitions); at: its attribute holding the instant;
    cursor: the attribute its records are filtered on to a window and sorted on, newest first.
    """

    table: str
    at: str
    cursor: str


@dataclass(frozen=True)
class Sweep:
    """How to list every id of a table that Klaviyo still holds, so that deletions can be carried over.

    params: query parameters of the sweep (sparse fieldsets: `fields[template]=id` returns ids only).
    cursor: an immutable attribute the sweep is windowed on (profiles: `created`), so that a large sweep
        runs as concurrent chains like an incremental read.
    included: children that come along (`include=...`) in full: their ids are swept and, where their own
        `updated` differs from the warehouse, their rows are loaded (edits below unchanged parents).
    marker: the change marker compared for the rows of this table itself (flow messages: `updated`).
    """

    params: dict[str, str] = field(default_factory=dict)
    cursor: str | None = None
    included: dict[str, str] = field(default_factory=dict)
    marker: str | None = None


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
    parent_since: the parent's attribute before which its children's cursors are not expected (a list's
        or segment's `created`): a first load plans each parent's windows from there (windows.plan).
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
    parent_since: str | None = None
    partition_filter: str | None = None
    partitions: tuple[str, ...] = ()
    partition_column: str | None = None
    params: dict[str, str] = field(default_factory=dict)
    included: dict[str, str] = field(default_factory=dict)
    membership: bool = False  # rows are (parent_key, profile_id, joined_group_at), not whole resources
    since: dict[str, str] = field(default_factory=dict)
    immutable: bool = False  # a record never changes once written: a first load appends (first_load.py)
    report: Report | None = None  # Mode.REPORT: what is asked for (POST bodies, timeframes: reports.py)
    sweep: Sweep | None = None  # how deletions are found (see Sweep); None: not swept
    bursts: Bursts | None = None  # a first load cuts its windows where these begin (windows.Plan.hint)
    counts: str | None = None  # checks: the table whose rows this endpoint counts
    count_attribute: str | None = None  # COUNT checks: the attribute holding the count

    def sends(self, parameter: str, revision: str) -> bool:
        """Whether `parameter` exists at `revision` (a date, maybe with a suffix; dates compare as text)."""
        return revision[:10] >= self.since.get(parameter, "")

    @property
    def write_disposition(self) -> Literal["merge", "replace"]:
        return "replace" if self.mode is Mode.FULL else "merge"

    @property
    def deletion_column(self) -> str | None:
        """The nullable timestamp a soft deletion sets: `removed_at` on memberships, `deleted_at` on merged
        tables (replaced tables simply lose deleted rows)."""
        if self.write_disposition != "merge" or self.table in CHECK_TABLES or self.report is not None:
            return None  # report rows are Klaviyo's figures of a period, replaced when it is read again
        return "removed_at" if self.membership else "deleted_at"

    def sweep_endpoint(self) -> Endpoint:
        """This table's sweep as an endpoint row of its own: the same path, read in full, without cursors."""
        assert self.sweep is not None
        sweep = self.sweep
        return replace(
            self,
            mode=Mode.WINDOW if sweep.cursor else (Mode.CHILDREN if self.parent else Mode.FULL),
            cursor=sweep.cursor,
            params=dict(sweep.params),
            included=dict(sweep.included),
        )


CAMPAIGN_CHANNELS = ("email", "sms", "mobile_push")
# The statistics of the campaign and flow reports (a unit test holds them to the spec's enum).
MESSAGE_STATISTICS = (
    "average_order_value", "bounce_rate", "bounced", "bounced_or_failed", "bounced_or_failed_rate", "click_rate",
    "click_to_open_rate", "clicks", "clicks_unique", "conversion_rate", "conversion_uniques", "conversion_value",
    "conversions", "delivered", "delivery_rate", "failed", "failed_rate", "message_segment_count_sum", "open_rate",
    "opens", "opens_unique", "recipients", "revenue_per_recipient", "spam_complaint_rate", "spam_complaints",
    "text_message_credit_usage_amount", "text_message_roi", "text_message_spend", "unsubscribe_rate",
    "unsubscribe_uniques", "unsubscribes",
)
SEGMENT_STATISTICS = ("members_added", "members_removed", "net_members_changed", "total_members")
CAMPAIGN_GROUPINGS = ("campaign_id", "campaign_message_id", "send_channel")  # Klaviyo's default group_by
FLOW_GROUPINGS = ("flow_id", "flow_message_id", "send_channel")

ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint("accounts", "/accounts", ("accounts:read",), XS, None),
    Endpoint(
        "events", "/events", ("events:read",), XL, 1000, Mode.WINDOW, cursor="datetime",
        overlap=timedelta(hours=24), params={"include": "attributions"},
        included={"attribution": "event_attributions"}, since={"page[size]": "2026-01-15"}, immutable=True,
        bursts=Bursts("campaigns", at="send_time", cursor="scheduled_at"),
    ),
    Endpoint(
        "profiles", "/profiles", ("profiles:read",), L, 100, Mode.WINDOW, cursor="updated",
        strict_lower=True, params={"additional-fields[profile]": "subscriptions"},
        sweep=Sweep({"fields[profile]": "created"}, cursor="created"),
    ),
    Endpoint("metrics", "/metrics", ("metrics:read",), M, None),
    Endpoint("lists", "/lists", ("lists:read",), L, 10, since=PAGE_SIZE_SINCE_2026_04),
    Endpoint("segments", "/segments", ("segments:read",), L, 10, since=PAGE_SIZE_SINCE_2026_04),
    Endpoint(
        "list_members", "/lists/{id}/profiles", ("lists:read", "profiles:read"), L, 100, Mode.WINDOW,
        primary_key=("list_id", "profile_id"), cursor="joined_group_at", parent="lists",
        parent_key="list_id", parent_since="created", params={"fields[profile]": "joined_group_at"}, membership=True,
    ),
    Endpoint(
        "segment_members", "/segments/{id}/profiles", ("segments:read", "profiles:read"), L, 100,
        Mode.WINDOW, primary_key=("segment_id", "profile_id"), cursor="joined_group_at",
        parent="segments", parent_key="segment_id", parent_since="created",
        params={"fields[profile]": "joined_group_at"}, membership=True,
    ),
    Endpoint(
        "campaigns", "/campaigns", ("campaigns:read",), M, 100, Mode.WINDOW, cursor="updated_at",
        partition_filter="equals(messages.channel,'{}')", partitions=CAMPAIGN_CHANNELS, partition_column="channel",
        params={"include": "campaign-messages"}, included={"campaign-message": "campaign_messages"},
        since=PAGE_SIZE_SINCE_2026_04,
        sweep=Sweep({"fields[campaign]": "id", "include": "campaign-messages"},
                    included={"campaign-message": "campaign_messages"}),
    ),
    Endpoint(
        "flows", "/flows", ("flows:read",), S, 50, Mode.WINDOW, cursor="updated",
        sweep=Sweep({"fields[flow]": "id", "include": "flow-actions"}, included={"flow-action": "flow_actions"}),
    ),
    Endpoint(
        "flow_actions", "/flows/{id}/flow-actions", ("flows:read",), S, 50, Mode.CHILDREN,
        parent="flows", parent_key="flow_id",
    ),
    Endpoint(
        "flow_messages", "/flow-actions/{id}/flow-messages", ("flows:read",), S, 50, Mode.CHILDREN,
        parent="flow_actions", parent_key="flow_action_id",
        sweep=Sweep(marker="updated"),  # in full below each action: no parent tells of their edits
    ),
    Endpoint(
        "templates", "/templates", ("templates:read",), L, 10, Mode.WINDOW, cursor="updated",
        since=PAGE_SIZE_SINCE_2026_04, sweep=Sweep({"fields[template]": "id"}),
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
    Endpoint(
        "campaign_values_reports", "/campaign-values-reports", ("campaigns:read",), REPORTING, None, Mode.REPORT,
        primary_key=(*CAMPAIGN_GROUPINGS, "conversion_metric_id", "timeframe_start"),
        report=Report("campaign-values-report", CAMPAIGN_GROUPINGS, MESSAGE_STATISTICS),
    ),
    Endpoint(
        "flow_values_reports", "/flow-values-reports", ("flows:read",), REPORTING, None, Mode.REPORT,
        primary_key=(*FLOW_GROUPINGS, "conversion_metric_id", "timeframe_start"),
        report=Report("flow-values-report", FLOW_GROUPINGS, MESSAGE_STATISTICS),
    ),
    Endpoint(
        "flow_series_reports", "/flow-series-reports", ("flows:read",), REPORTING, None, Mode.REPORT,
        primary_key=(*FLOW_GROUPINGS, "conversion_metric_id", "day"),
        report=Report("flow-series-report", FLOW_GROUPINGS, MESSAGE_STATISTICS, interval="daily", days_per_call=60),
    ),
    Endpoint(
        "segment_series_reports", "/segment-series-reports", ("segments:read",), REPORTING, None, Mode.REPORT,
        primary_key=("segment_id", "day"),
        report=Report("segment-series-report", ("segment_id",), SEGMENT_STATISTICS, conversion=False,
                      interval="daily", days_per_call=60, paged=False, earliest=date(2023, 6, 1)),
    ),
)

# Change markers of children that arrive with a sweep of their parents: table -> attribute.
CHILD_MARKERS: dict[str, str] = {"campaign_messages": "updated_at", "flow_actions": "updated"}

# Checks: what Klaviyo says it holds, to compare with the warehouse (verify.py). The count of a list or a
# segment moves the detail GET to its own 1/s, 15/m tier; metric aggregates have theirs (3/s, 60/m).
CHECKS: tuple[Endpoint, ...] = (
    Endpoint(
        "event_counts", "/metric-aggregates", ("metrics:read",), S, None, Mode.AGGREGATE,
        primary_key=("metric_id", "day"), parent="metrics", parent_key="metric_id", counts="events",
    ),
    Endpoint(
        "list_member_counts", "/lists/{id}", ("lists:read",), XS, None, Mode.COUNT, parent="lists",
        parent_key="list_id", params={"additional-fields[list]": "profile_count", "fields[list]": "profile_count"},
        counts="list_members", count_attribute="profile_count",
    ),
    Endpoint(
        "segment_member_counts", "/segments/{id}", ("segments:read",), XS, None, Mode.COUNT, parent="segments",
        parent_key="segment_id",
        params={"additional-fields[segment]": "profile_count", "fields[segment]": "profile_count"},
        counts="segment_members", count_attribute="profile_count",
    ),
)
CHECK_TABLES = frozenset(c.table for c in CHECKS)

BY_TABLE: dict[str, Endpoint] = {e.table: e for e in ENDPOINTS}
# Tables filled from another endpoint's `included` documents (Endpoint.included) -> the table whose reads
# bring them (asking for one reads the other).
INCLUDED_BY: dict[str, str] = {table: e.table for e in ENDPOINTS for table in e.included.values()}
INCLUDED_TABLES: tuple[str, ...] = tuple(INCLUDED_BY)

# Requesting predictive analytics moves profile reads to a ten times slower tier (spec description).
PREDICTIVE_TIER = M
