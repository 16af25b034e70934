"""Self-verifying loads: after a run the warehouse is compared with Klaviyo's own figures, what differs is
repaired, and deletions are carried over.

    pipeline.run(klaviyo_source(start_date="2024-01-01"))
    report = verify(pipeline)          # the CLI does this after every scheduled run
    print(report.summary())

What is compared (read through the endpoint table: the CHECKS rows and each table's Sweep):
- events, per metric and day of the account's timezone, over the period the run touched plus `verify_days`,
  with `POST /metric-aggregates`: one request per metric (per year of period);
- members of each list and segment with `profile_count` (its own tier, 1/s and 15/m: at most `group_checks`
  a run, those checked longest ago first);
- ids, with sparse fieldsets: campaigns with their messages, flows with their actions, and templates every
  run; flow messages below up to `flow_message_reads` actions a run (their own `updated` tells edits no
  parent shows); profiles every run while the account has at most 10,000, else every `profile_sweep_hours`.

How it is repaired, in one more load: a metric's day that differs is read again and replaces exactly that
slice (late events arrive, events Klaviyo no longer holds leave); a list or segment whose count differs is
read again and members no longer there get `removed_at`; rows Klaviyo deleted get `deleted_at` (soft, the
default) or are removed with what belongs to them (hard: memberships, and events Klaviyo removed too);
children whose own `updated` moved are loaded. Then the repaired figures are compared again: what still
differs is reported, never hidden. The comparisons are loaded into `verification_checks`.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta, timezone
from typing import Any, Literal
from zoneinfo import ZoneInfo

import dlt
import orjson
import pyarrow as pa
from dlt.common.configuration import known_sections, with_config
from dlt.extract.resource import DltResource

from klaviyo_source import DEFAULT_BASE_URL, DEFAULT_REVISION, ConfigurationError, _instant, _tables, make_context
from klaviyo_source.backfill import LOADER_FILE_FORMAT, finish_pending
from klaviyo_source.endpoints import BY_TABLE, CHECKS, CHILD_MARKERS, Endpoint, Mode
from klaviyo_source.resources import Batch, EndpointReader, Partition, RunContext, Slice, repair_resource
from klaviyo_source.warehouse import Warehouse, grouped
from klaviyo_source.windows import Window, parse_instant

log = logging.getLogger("klaviyo_source")

RESULTS_TABLE = "verification_checks"
CHECK = {c.table: c for c in CHECKS}
MEMBER_CHECKS: dict[str, Endpoint] = {str(c.counts): c for c in CHECKS if c.mode is Mode.COUNT}  # table -> check
AUTO_SWEEP_PROFILES = 10_000  # up to this many profiles (100 requests) a sweep runs every run
MAX_SPAN = timedelta(days=365)  # what one metric-aggregates request may cover
FIRST_LOAD_SPAN = timedelta(days=364)  # how far back a run that read all history is verified: one request
SOURCE_SECTIONS = (known_sections.SOURCES, "klaviyo_source", "klaviyo")

Deletions = Literal["soft", "hard"]


@dataclass
class Check:
    """One comparison: a row of `verification_checks`."""

    check: str  # event_count, member_count, deleted, changed
    table: str
    subject_id: str | None
    subject_name: str | None
    day: date | None
    klaviyo: int
    warehouse: int
    after_repair: int | None = None
    status: str = "ok"  # ok, repaired, differs
    detail: str = ""


@dataclass
class Report:
    """What one verification compared, repaired and left different."""

    verified_at: datetime
    timezone: str | None
    period: tuple[datetime, datetime] | None
    deletions: str
    repaired: bool
    checks: list[Check] = field(default_factory=list)
    flagged: dict[str, int] = field(default_factory=dict)  # table -> rows soft-deleted or removed
    loaded: dict[str, int] = field(default_factory=dict)  # table -> rows (re)loaded by repairs
    requests: int = 0

    @property
    def differing(self) -> list[Check]:
        return [c for c in self.checks if c.status == "differs"]

    def summary(self) -> str:
        """The one line a run summary shows."""
        events = [c for c in self.checks if c.check == "event_count" and c.day is None]
        groups = [c for c in self.checks if c.check == "member_count"]
        days = [c for c in self.checks if c.check == "event_count" and c.day is not None]
        parts = []
        if events and self.period:
            span = f"{self.period[0].date()}..{self.period[1].date()} {self.timezone}"
            fixed = sum(c.status == "repaired" for c in days)
            parts.append(f"events of {len(events)} metrics ({span}): {fixed} metric-days repaired")
        if groups:
            parts.append(f"{len(groups)} lists/segments: {sum(c.status == 'repaired' for c in groups)} repaired")
        gone = {t: n for t, n in self.flagged.items() if n}
        verb = "removed" if self.deletions == "hard" else "flagged"
        parts.append(f"deletions {verb}: " + (", ".join(f"{t} {n}" for t, n in sorted(gone.items())) or "none"))
        changed = {t: n for t, n in self.loaded.items() if n and t not in ("events",) and not t.endswith("members")}
        if changed:
            parts.append("children re-read: " + ", ".join(f"{t} {n}" for t, n in sorted(changed.items())))
        left = self.differing
        head = "verification" if self.repaired else "verification (report only)"
        still = f"{len(left)} still differ" if self.repaired else f"{len(left)} differ"
        return f"{head}: " + "; ".join(parts) + f"; {still}; {self.requests} requests"


@with_config(sections=SOURCE_SECTIONS)
def verify(
    pipeline: dlt.Pipeline,
    api_key: str = dlt.secrets.value,
    base_url: str = DEFAULT_BASE_URL,
    revision: str = DEFAULT_REVISION,
    resources: Sequence[str] | str | None = None,
    rate_share: float = 1.0,
    concurrency: int | None = None,
    skip_forbidden: bool = False,
    since: str | datetime | None = None,
    until: str | datetime | None = None,
    deletions: Deletions = "soft",
    verify_days: float = 30.0,
    profile_sweep_hours: float | None = None,
    group_checks: int = 15,
    flow_message_reads: int = 60,
    repair: bool = True,
    event_attributions: bool = True,
) -> Report:
    """Compares the pipeline's tables with Klaviyo, repairs what differs (unless `repair=False`) and loads the
    comparisons into `verification_checks`; returns the report.

    resources: the tables the run loaded (default all); only those are verified.
    since / until: the period of events to verify (default: what the last run read, from its saved state,
        plus `verify_days` before its end).
    deletions: "soft" sets `deleted_at` / `removed_at`; "hard" removes the rows and what belongs to them.
    profile_sweep_hours: hours between profile sweeps (a request per 100 profiles); None sweeps every run
        while the account has at most 10,000 profiles, else daily; 0 every run.
    group_checks / flow_message_reads: per-run budgets of the 1/s count checks and of the 3/s flow message reads.
    event_attributions: as the source's: events read again bring their attributions (False: not).
    """
    if deletions not in ("soft", "hard"):
        raise ConfigurationError(f"deletions must be 'soft' or 'hard', got {deletions!r}.")
    if verify_days < 0 or group_checks < 0 or flow_message_reads < 0:
        raise ConfigurationError("verify_days, group_checks and flow_message_reads must not be negative.")
    if profile_sweep_hours is not None and profile_sweep_hours < 0:
        raise ConfigurationError(f"profile_sweep_hours must not be negative, got {profile_sweep_hours}.")
    now = datetime.now(timezone.utc).replace(microsecond=0)
    tables = _tables(resources)
    ctx = make_context(api_key, base_url, revision, rate_share, concurrency, skip_forbidden, until=now,
                       stateless=True, without=frozenset(() if event_attributions else ("event_attributions",)))
    options = Options(deletions, timedelta(days=verify_days), profile_sweep_hours, group_checks, flow_message_reads,
                      repair)
    job = Verification(pipeline, ctx, tables, options, _instant("since", since), _instant("until", until), now)
    return job.run()


@dataclass(frozen=True)
class Options:
    deletions: Deletions
    trailing: timedelta
    profile_sweep_hours: float | None
    group_checks: int
    flow_message_reads: int
    repair: bool


@dataclass
class Plan:
    """What the comparisons found to repair."""

    slices: set[tuple[str, datetime, datetime]] = field(default_factory=set)  # (metric, lo, hi) to read again
    groups: dict[str, list[str]] = field(default_factory=dict)  # member table -> groups to sweep
    gone: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))  # table -> ids Klaviyo deleted
    left: dict[str, set[tuple[str, str]]] = field(default_factory=lambda: defaultdict(set))  # members removed
    changed: dict[str, pa.Table] = field(default_factory=dict)  # rows to load again

    def __bool__(self) -> bool:
        return bool(self.slices or self.groups or any(self.gone.values()) or any(self.left.values())
                    or any(t.num_rows for t in self.changed.values()))


class Verification:
    """One verification of one pipeline: read Klaviyo's figures, compare, repair, compare again, record."""

    def __init__(self, pipeline: dlt.Pipeline, ctx: RunContext, tables: list[str], options: Options,
                 since: datetime | None, until: datetime | None, now: datetime) -> None:
        self.pipeline = pipeline
        self.ctx = ctx
        self.tables = set(tables)
        self.options = options
        self.now = now
        self.wh = Warehouse(pipeline)
        sources = pipeline.state.get("sources", {}).get("klaviyo", {})
        self.saved: dict[str, Any] = dict(sources.get("verify") or {})
        events_state = (sources.get("resources") or {}).get("events") or {}
        saved_until = (events_state.get("cursors") or {}).get("")
        touched = events_state.get("touched")
        self.until = until or (parse_instant(saved_until) if saved_until else None)
        self.touched_from: datetime | None = since
        if since is None and touched:
            self.touched_from = parse_instant(touched[0]) if touched[0] else None
            self.all_history = touched[0] is None
        else:
            self.all_history = False
        self.zone = "UTC"
        self.edges: list[datetime] = []
        self.metric_names: dict[str, str] = {}
        self.klaviyo_events: dict[tuple[str, int], int] = {}
        self.group_figures: list[tuple[str, str, str, int]] = []  # (member table, group id, name, Klaviyo count)
        self.group_names: dict[str, dict[str, str]] = {}  # member table -> every list (segment) id -> name
        self.live: dict[str, set[str]] = {}  # table -> ids Klaviyo holds (complete sweeps only)
        self.read_rows: dict[str, pa.Table] = {}  # children read in full
        self.actions_read: list[str] = []  # flow actions whose messages were read
        self.checks: list[Check] = []
        self.flagged: dict[str, int] = defaultdict(int)
        self.loaded: dict[str, int] = defaultdict(int)
        self.hard: dict[str, Any] = {}

    # --- the whole job ----------------------------------------------------------------------------

    def run(self) -> Report:
        started = time.monotonic()
        with self.wh.session():
            self._read()
            plan = self._compare()
        if self.options.repair and plan:
            self._repair(plan)
            with self.wh.session():
                self._recheck(plan)
        report = Report(self.now, self.zone, (self.edges[0], self.edges[-1]) if self.edges else None,
                        self.options.deletions, self.options.repair, self.checks, dict(self.flagged),
                        dict(self.loaded), sum(self.ctx.client.requests.values()))
        if self.options.repair:
            self._record(report)
        log.info("%s (%.1f s)", report.summary(), time.monotonic() - started)
        for check in report.differing if self.options.repair else ():
            log.warning("verification: %s %s %s%s: Klaviyo %s, warehouse %s after repair (%s)", check.check,
                        check.table, check.subject_name or check.subject_id or "",
                        f" on {check.day}" if check.day else "", check.klaviyo, check.after_repair, check.detail)
        return report

    # --- what Klaviyo holds -----------------------------------------------------------------------

    def _read(self) -> None:
        """Counts and sweeps, each on its own endpoint and governor, side by side."""
        jobs = [self._event_counts, self._group_counts, self._sweep_campaigns, self._sweep_flows,
                self._sweep_templates, self._sweep_profiles]
        with ThreadPoolExecutor(len(jobs), thread_name_prefix="klaviyo-verify") as pool:
            for future in [pool.submit(job) for job in jobs]:
                future.result()

    def _lean(self, endpoint: Endpoint, name: str | None = None) -> EndpointReader:
        return EndpointReader(endpoint, self.ctx, lean=True, zone=self.zone, name=name)

    def _batches(self, reader: EndpointReader, slices: Sequence[Slice]) -> tuple[list[Batch], bool]:
        """Every batch of the slices, and whether the read was complete: not skipped for a missing scope, and
        every record readable (a record without an id could be any of them)."""
        out: list[Batch] = []
        reading = reader.read_slices(slices)
        while True:
            try:
                out.extend(next(reading))
            except StopIteration as done:
                return out, bool(done.value) and not any(b.incomplete for b in out)

    def _records(self, reader: EndpointReader, slices: Sequence[Slice]) -> list[dict[str, Any]]:
        """The rows of a small read (names, counts) as dicts."""
        batches, _ = self._batches(reader, slices)
        return [row for b in batches for row in b.rows.to_pylist()]

    def _timezone(self) -> str:
        found = self.wh.timezone()
        if found:
            return found
        rows = self._records(self._lean(BY_TABLE["accounts"]), [Slice(Partition())])
        return str(rows[0].get("timezone") or "UTC") if rows else "UTC"

    def _names(self, table: str) -> dict[str, str]:
        """id -> name of metrics, lists or segments: from the warehouse when this run replaced that table,
        else from Klaviyo (a table the run did not load may be stale)."""
        found = self.wh.names(table) if table in self.tables else {}
        if found:
            return found
        endpoint = BY_TABLE[table]
        rtype = endpoint.path.strip("/")[:-1]
        rows = self._records(self._lean(replace(endpoint, params={f"fields[{rtype}]": "name"})), [Slice(Partition())])
        return {str(r["id"]): str(r.get("name") or "") for r in rows}

    def _event_counts(self) -> None:
        if "events" not in self.tables or self.until is None:
            return
        self.zone = self._timezone()
        zone = ZoneInfo(self.zone)
        hi = self.until
        starts = [hi - self.options.trailing]
        if self.touched_from is not None:
            starts.append(self.touched_from)
        elif self.all_history:
            starts.append(hi - FIRST_LOAD_SPAN)
        lo = min(starts)
        self.edges = _day_edges(lo, hi, zone)
        self.metric_names = self._names("metrics")
        pieces = _spans(self.edges, MAX_SPAN)
        slices = [Slice(Partition(m, parent_id=m), Window(a, b)) for m in sorted(self.metric_names) for a, b in pieces]
        index = {e.astimezone(zone).date().isoformat(): k for k, e in enumerate(self.edges[:-1])}
        counts: dict[tuple[str, int], int] = {}
        for row in self._records(self._lean(CHECK["event_counts"], "event counts"), slices):
            k = index.get(row["day"])
            if k is not None and row["count"]:
                counts[(row["metric_id"], k)] = counts.get((row["metric_id"], k), 0) + row["count"]
        self.klaviyo_events = counts

    def _group_counts(self) -> None:
        """Counts of the lists and segments checked longest ago, within the per-run budget."""
        checked: dict[str, str] = self.saved.get("groups_checked") or {}
        candidates = []
        for table, check in MEMBER_CHECKS.items():
            if table in self.tables and check.parent:
                self.group_names[table] = self._names(check.parent)
                candidates += [(table, gid, name) for gid, name in self.group_names[table].items()]
        candidates.sort(key=lambda c: (checked.get(c[1], ""), c[1]))
        chosen = candidates[: self.options.group_checks]
        for table, check in MEMBER_CHECKS.items():
            slices = _below(gid for t, gid, _ in chosen if t == table)
            if not slices:
                continue
            names = {gid: name for t, gid, name in chosen if t == table}
            assert check.parent_key is not None
            for row in self._records(self._lean(CHECK[check.table], check.table.replace("_", " ")), slices):
                gid = str(row[check.parent_key])
                self.group_figures.append((table, gid, names[gid], int(row["count"])))

    def _sweep(self, table: str, slices: Sequence[Slice] | None = None) -> list[Batch] | None:
        """A table's sweep: its batches, or None when it could not be read completely."""
        sweep = BY_TABLE[table].sweep_endpoint()
        reader = self._lean(sweep, f"{table} sweep")
        if slices is None:
            window = Window(None, self.now) if sweep.cursor else None
            slices = [Slice(part, window) for part in reader.partitions()]  # split where it proves large
        batches, complete = self._batches(reader, slices)
        return batches if complete else None

    def _keep(self, table: str, batches: list[Batch]) -> None:
        """The ids a complete sweep found, per table; children that came along, in full."""
        self.live[table] = _id_set(b.rows for b in batches if b.table == table)
        for child in BY_TABLE[table].sweep_endpoint().included.values():
            rows = [b.rows for b in batches if b.table == child]
            self.live[child] = _id_set(rows)
            read = _concat(rows)
            if read is not None:
                self.read_rows[child] = read

    def _sweep_campaigns(self) -> None:
        if "campaigns" in self.tables:
            batches = self._sweep("campaigns")
            if batches is not None:
                self._keep("campaigns", batches)

    def _sweep_templates(self) -> None:
        if "templates" in self.tables:
            batches = self._sweep("templates")
            if batches is not None:
                self._keep("templates", batches)

    def _sweep_flows(self) -> None:
        """Flows with their actions in full; then flow messages below the actions due for a re-read."""
        if "flows" not in self.tables:
            return
        batches = self._sweep("flows")
        if batches is None:
            return
        self._keep("flows", batches)
        if "flow_messages" not in self.tables or "flow_actions" not in self.live:
            return
        actions = self.read_rows["flow_actions"].to_pylist() if "flow_actions" in self.read_rows else []
        held = self.wh.markers("flow_actions", "updated")
        changed = {str(a["id"]) for a in actions if _changed(str(a["id"]), a.get("updated"), held)}
        read_at: dict[str, str] = self.saved.get("flow_messages_read") or {}
        order = sorted((str(a["id"]) for a in actions if _may_have_messages(a)),
                       key=lambda a: (a not in changed, read_at.get(a, ""), a))
        self.actions_read = order[: self.options.flow_message_reads]
        if self.actions_read:
            read = self._sweep("flow_messages", _below(self.actions_read))
            if read is None:
                self.actions_read = []
            else:
                self.live["flow_messages"] = _id_set(b.rows for b in read if b.table == "flow_messages")
                rows = _concat([b.rows for b in read if b.table == "flow_messages"])
                if rows is not None:
                    self.read_rows["flow_messages"] = rows

    def _sweep_profiles(self) -> None:
        if "profiles" not in self.tables or not self._profiles_due():
            return
        batches = self._sweep("profiles")
        if batches is not None:
            self._keep("profiles", batches)

    def _profiles_due(self) -> bool:
        hours = self.options.profile_sweep_hours
        last = self.saved.get("profiles_swept")
        if hours is None:
            if self.wh.count("profiles") <= AUTO_SWEEP_PROFILES:
                return True
            hours = 24.0
        return last is None or self.now - parse_instant(last) >= timedelta(hours=hours)

    # --- comparing ----------------------------------------------------------------------------------

    def _compare(self) -> Plan:
        plan = Plan()
        self._compare_events(plan)
        self._compare_groups(plan)
        self._compare_ids(plan)
        self._follow_deleted_profiles(plan)
        return plan

    def _compare_events(self, plan: Plan) -> None:
        if not self.edges:
            return
        known: dict[str, list[int]] = self.saved.get("known_differences") or {}
        held = self.wh.event_counts(self.edges)
        zone = ZoneInfo(self.zone)
        for metric in sorted(self.metric_names):
            days = range(len(self.edges) - 1)
            klaviyo = sum(self.klaviyo_events.get((metric, k), 0) for k in days)
            warehouse = sum(held.get((metric, k), 0) for k in days)
            self.checks.append(Check("event_count", "events", metric, self.metric_names[metric], None, klaviyo,
                                     warehouse, detail=f"{len(days)} days"))
            for k in days:
                a, b = self.klaviyo_events.get((metric, k), 0), held.get((metric, k), 0)
                if a == b:
                    continue
                day = self.edges[k].astimezone(zone).date()
                check = Check("event_count", "events", metric, self.metric_names[metric], day, a, b,
                              status="differs")
                self.checks.append(check)
                if known.get(f"{metric}|{day}") == [a, b]:
                    check.detail = "differed the same way after the last repair; not read again"
                    continue
                plan.slices.add((metric, self.edges[k], self.edges[k + 1]))

    def _compare_groups(self, plan: Plan) -> None:
        for table, check in MEMBER_CHECKS.items():
            if table not in self.tables:
                continue
            assert check.parent_key is not None
            held = self.wh.counts(table, check.parent_key)
            names = self.group_names.get(table)
            if names:  # members of lists (segments) that no longer exist end with them
                for gid in sorted(set(held) - set(names)):
                    members = self.wh.ids(table, "profile_id", where={check.parent_key: gid})
                    plan.left[table] |= {(gid, p) for p in members}
            for t, gid, name, count in self.group_figures:
                if t != table:
                    continue
                ours = held.get(gid, 0)
                self.checks.append(Check("member_count", table, gid, name, None, count, ours,
                                         status="ok" if ours == count else "differs"))
                if ours != count:
                    plan.groups.setdefault(table, []).append(gid)

    def _compare_ids(self, plan: Plan) -> None:
        """Rows Klaviyo no longer holds, and children whose own change marker moved."""
        held: dict[str, set[str]] = {}
        for table, live in self.live.items():
            if table != "flow_messages":  # read below some actions only: compared below those
                held[table] = self.wh.ids(table)
                plan.gone[table] |= held[table] - live
        if "flow_actions" in self.live:  # below deleted actions (and flows), their messages
            plan.gone["flow_messages"] |= self.wh.where_in("flow_messages", "flow_action_id", plan.gone["flow_actions"])
        if self.actions_read:
            held["flow_messages"] = self.wh.where_in("flow_messages", "flow_action_id", self.actions_read)
            plan.gone["flow_messages"] |= held["flow_messages"] - self.live["flow_messages"]
        for table in held:
            gone = plan.gone[table]
            below = f"below {len(self.actions_read)} flow actions; " if table == "flow_messages" else ""
            self.checks.append(Check("deleted", table, None, None, None, len(self.live[table]), len(held[table]),
                                     status="differs" if gone else "ok",
                                     detail=below + (f"{len(gone)} rows Klaviyo no longer holds" if gone else "")))
        for table, rows in self.read_rows.items():
            marker = _marker(table)
            plan.changed[table] = rows.filter(_changed_mask(rows, marker, self.wh.markers(table, marker)))
            changed = plan.changed[table].num_rows
            # Klaviyo's rows, and how many of them the warehouse holds as they are now
            self.checks.append(Check("changed", table, None, None, None, rows.num_rows, rows.num_rows - changed,
                                     status="differs" if changed else "ok",
                                     detail=f"{changed} new or changed by their own {marker}" if changed else ""))

    def _follow_deleted_profiles(self, plan: Plan) -> None:
        """Memberships of deleted profiles end; their events are checked where Klaviyo may have removed them."""
        gone = sorted(plan.gone.get("profiles") or ())
        if not gone:
            return
        for table, check in MEMBER_CHECKS.items():
            if table in self.tables:
                assert check.parent_key is not None
                # hard deletion removes every row of the profile, also those that ended before
                plan.left[table] |= self.wh.pairs(table, check.parent_key, "profile_id", gone,
                                                  held_only=self.options.deletions == "soft")
        if "events" not in self.tables:
            return
        held = self.wh.events_of(gone)
        if not held:
            return
        endpoint = replace(BY_TABLE["events"], mode=Mode.FULL, cursor=None, params={"fields[event]": "id"})
        slices = [Slice(Partition(p, filter=f"equals(profile_id,'{p}')")) for p in gone]
        batches, complete = self._batches(self._lean(endpoint, "events of deleted profiles"), slices)
        if not complete:
            return
        kept = _id_set(b.rows for b in batches)
        zone = ZoneInfo(self.zone)
        for _, metric, at in (e for e in held if e[0] not in kept):
            lo = _local_midnight(at, zone)
            plan.slices.add((metric, lo, min(_next_midnight(lo, zone), self.until or self.now)))

    # --- repairing ----------------------------------------------------------------------------------

    def _repair(self, plan: Plan) -> None:
        resources: list[DltResource] = []
        tables = set(plan.gone) | set(plan.changed) | set(plan.left) | set(plan.groups)
        if plan.slices:
            tables.add("events")
        for table in sorted(tables):
            resources.append(repair_resource(table, self._repair_items(table, plan), self.ctx))
        log.info("verification: repairing %s", ", ".join(sorted(tables)))
        self._load(resources)
        for table, keys in self.hard.items():
            if keys:
                key_columns = ("id",) if table not in MEMBER_CHECKS else (MEMBER_CHECKS[table].parent_key, "profile_id")
                self.wh.delete(table, keys, key_columns)  # type: ignore[arg-type]
                if table == "events":  # an event's attributions go with it
                    self.wh.delete("event_attributions", keys, ("event_id",))

    def _repair_items(self, table: str, plan: Plan) -> Iterator[Any]:
        """Everything one table's repair loads: rows read again, changed children, and soft deletions."""
        if table == "events":
            yield from self._read_slices(plan)
        if table in plan.groups:
            yield from self._sweep_members(table, plan)
        rows = plan.changed.get(table)
        if rows is not None and rows.num_rows:
            self.loaded[table] += rows.num_rows
            yield rows
        gone = plan.gone.get(table) or set()
        if table in MEMBER_CHECKS:
            yield from self._end_memberships(table, plan.left.get(table) or set())
        elif gone:
            yield from self._delete(table, gone)

    def _read_slices(self, plan: Plan) -> Iterator[Any]:
        """Reads each differing metric-day again: what Klaviyo holds replaces what the warehouse holds."""
        held: set[str] = set()
        slices = []
        for metric, lo, hi in sorted(plan.slices):
            held |= self.wh.slice_ids(metric, lo, hi)
            slices.append(Slice(Partition(metric, filter=f"equals(metric_id,'{metric}')"), Window(lo, hi)))
        reader = EndpointReader(BY_TABLE["events"], self.ctx, name="events repair")
        found: set[str] = set()
        for item in (item for batch in reader.read_slices(slices) for item in batch):
            if isinstance(item, pa.Table):  # else records set aside, for their own table
                found |= _id_set([item])
                self.loaded["events"] += item.num_rows
            yield item
        yield from self._delete("events", held - found)

    def _sweep_members(self, table: str, plan: Plan) -> Iterator[Any]:
        """Reads the whole membership of each differing group: new members load, missing ones end."""
        endpoint = BY_TABLE[table]
        key = endpoint.parent_key
        assert key is not None
        groups = plan.groups[table]
        held = {g: self.wh.ids(table, "profile_id", where={key: g}) for g in groups}
        found: dict[str, set[str]] = defaultdict(set)
        reader = EndpointReader(endpoint, self.ctx, name=f"{table} repair")
        for item in (item for batch in reader.read_slices(_below(groups)) for item in batch):
            if not isinstance(item, pa.Table):  # records set aside, for their own table
                yield item
                continue
            pairs = list(zip(item.column(key).to_pylist(), item.column("profile_id").to_pylist(), strict=True))
            for g, p in pairs:
                found[g].add(p)
            new = pa.array([p not in held[g] for g, p in pairs])
            fresh = item.filter(new)
            if fresh.num_rows:
                self.loaded[table] += fresh.num_rows
                yield fresh
        for g in groups:
            plan.left[table] |= {(g, p) for p in held[g] - found[g]}

    def _end_memberships(self, table: str, pairs: set[tuple[str, str]]) -> Iterator[Any]:
        if not pairs:
            return
        keys = grouped(sorted(pairs))
        self.flagged[table] += len(pairs)
        if self.options.deletions == "hard":
            self.hard[table] = keys
            return
        rows = self.wh.read_back(table, keys, (MEMBER_CHECKS[table].parent_key or "", "profile_id"))
        yield self._flagged(table, rows, "removed_at")

    def _delete(self, table: str, ids: set[str]) -> Iterator[Any]:
        """Rows Klaviyo no longer holds: flagged `deleted_at` (soft) or, after the load, removed (hard)."""
        if not ids:
            return
        self.flagged[table] += len(ids)
        if self.options.deletions == "hard":
            self.hard[table] = sorted(ids)
            return
        yield self._flagged(table, self.wh.read_back(table, sorted(ids)), "deleted_at")
        if table == "events":  # an event's attributions go with it
            related = self.wh.read_back("event_attributions", sorted(ids), ("event_id",))
            if related:
                rows = self._flagged("event_attributions", related, "deleted_at")
                yield dlt.mark.with_table_name(rows, "event_attributions")

    def _flagged(self, table: str, rows: list[dict[str, Any]], column: str) -> Any:
        """Rows read back with their deletion time set, in the form the table was loaded in."""
        for row in rows:
            row[column] = self.now
        return self.wh.as_arrow(table, rows) if self.wh.loaded_as_arrow(table) else rows

    # --- comparing again ----------------------------------------------------------------------------

    def _recheck(self, plan: Plan) -> None:
        """After the repair load: the figures that differed, compared again (Klaviyo asked again if still)."""
        self._recheck_events()
        self._recheck_groups()
        for check in self.checks:
            if check.check != "deleted":
                continue
            held = self.wh.ids(check.table)
            if check.table == "flow_messages":
                held = self.wh.where_in("flow_messages", "flow_action_id", self.actions_read)
            check.after_repair = len(held)
            extra = held - self.live[check.table]
            flagged = self.flagged.get(check.table, 0)
            verb = "removed" if self.options.deletions == "hard" else "flagged deleted_at"
            check.status = "differs" if extra else "repaired" if flagged else "ok"
            check.detail = "; ".join(filter(None, [check.detail, f"{flagged} {verb}" if flagged else "",
                                                   f"{len(extra)} remain" if extra else ""]))
        for check in self.checks:
            if check.check == "changed" and check.status == "differs":
                marker = _marker(check.table)
                rows = self.read_rows[check.table]
                mask = _changed_mask(rows, marker, self.wh.markers(check.table, marker))
                check.after_repair = rows.num_rows - sum(mask.to_pylist())
                check.status = "repaired" if check.after_repair == check.klaviyo else "differs"
                check.detail += ", loaded again"

    def _recheck_events(self) -> None:
        days = [c for c in self.checks if c.check == "event_count" and c.day is not None]
        if not days:
            return
        held = self.wh.event_counts(self.edges)
        zone = ZoneInfo(self.zone)
        index = {e.astimezone(zone).date(): k for k, e in enumerate(self.edges[:-1])}
        still = {str(c.subject_id) for c in days if held.get((str(c.subject_id), index[c.day]), 0) != c.klaviyo}  # type: ignore[index]
        if still:  # Klaviyo's own figures may have moved since: ask again for these metrics
            pieces = _spans(self.edges, MAX_SPAN)
            slices = [Slice(Partition(m, parent_id=m), Window(a, b)) for m in sorted(still) for a, b in pieces]
            fresh: dict[tuple[str, int], int] = defaultdict(int)
            day_index = {d.isoformat(): k for d, k in index.items()}
            for row in self._records(self._lean(CHECK["event_counts"], "event counts"), slices):
                if row["day"] in day_index:
                    fresh[(row["metric_id"], day_index[row["day"]])] += row["count"]
            for c in days:
                if c.subject_id in still:
                    c.klaviyo = fresh.get((str(c.subject_id), index[c.day]), 0)  # type: ignore[index]
        for c in days:
            c.after_repair = held.get((str(c.subject_id), index[c.day]), 0)  # type: ignore[index]
            if c.after_repair == c.klaviyo:
                c.status, c.detail = "repaired", c.detail or "read again"
            elif not c.detail:
                c.detail = "still differs after the day was read again"
        for c in self.checks:
            if c.check == "event_count" and c.day is None:
                metric_days = [d for d in days if d.subject_id == c.subject_id]
                c.after_repair = sum(held.get((str(c.subject_id), k), 0) for k in range(len(self.edges) - 1))
                if any(d.status == "differs" for d in metric_days):
                    c.status = "differs"
                elif metric_days:
                    c.status = "repaired"

    def _recheck_groups(self) -> None:
        groups = [c for c in self.checks if c.check == "member_count" and c.status == "differs"]
        if not groups:
            return
        for table, check in MEMBER_CHECKS.items():
            mine = [c for c in groups if c.table == table]
            if not mine:
                continue
            assert check.parent_key is not None
            held = self.wh.counts(table, str(check.parent_key))
            again = [c for c in mine if held.get(str(c.subject_id), 0) != c.klaviyo]
            if again:  # a count may have moved since (segments recompute): ask once more
                rows = self._records(self._lean(CHECK[check.table]), _below(str(c.subject_id) for c in again))
                fresh = {row[check.parent_key]: int(row["count"]) for row in rows}
                for c in again:
                    c.klaviyo = fresh.get(c.subject_id, c.klaviyo)
            for c in mine:
                c.after_repair = held.get(str(c.subject_id), 0)
                c.status = "repaired" if c.after_repair == c.klaviyo else "differs"
                c.detail = "members read again" + ("" if c.status == "repaired" else "; still differs")

    # --- recording ----------------------------------------------------------------------------------

    def _record(self, report: Report) -> None:
        """Loads the comparisons and the rotation state (which groups, actions and sweeps are due next)."""
        now = self.now.isoformat()
        groups = dict(self.saved.get("groups_checked") or {})
        groups.update({gid: now for _, gid, _, _ in self.group_figures})
        actions = dict(self.saved.get("flow_messages_read") or {})
        actions.update(dict.fromkeys(self.actions_read, now))
        live_actions = self.live.get("flow_actions")
        if live_actions is not None:
            actions = {a: t for a, t in actions.items() if a in live_actions}
        known = {f"{c.subject_id}|{c.day}": [c.klaviyo, c.after_repair] for c in report.checks
                 if c.check == "event_count" and c.day is not None and c.status == "differs"}
        state = {
            "groups_checked": groups,
            "flow_messages_read": actions,
            "profiles_swept": now if "profiles" in self.live else self.saved.get("profiles_swept"),
            "known_differences": known,
        }
        period = report.period

        def results() -> Iterator[list[dict[str, Any]]]:
            dlt.current.source_state()["verify"] = state
            yield [{"verified_at": self.now, "kind": c.check, "table_name": c.table, "subject_id": c.subject_id,
                    "subject_name": c.subject_name, "day": c.day, "klaviyo": c.klaviyo, "warehouse": c.warehouse,
                    "after_repair": c.after_repair, "status": c.status, "detail": c.detail,
                    "period_start": period[0] if period and c.check == "event_count" else None,
                    "period_end": period[1] if period and c.check == "event_count" else None}
                   for c in report.checks]

        self._load([dlt.resource(results, name=RESULTS_TABLE, write_disposition="append", columns=RESULT_COLUMNS)])

    def _load(self, resources: list[DltResource]) -> None:
        """One load into the source's schema. Packages a failed load left go first: dlt would otherwise load
        them instead of these resources."""
        finish_pending(self.pipeline)
        info = self.pipeline.run(resources, schema=self.pipeline.default_schema, loader_file_format=LOADER_FILE_FORMAT)
        info.raise_on_failed_jobs()


RESULT_COLUMNS: dict[str, Any] = {
    "verified_at": {"data_type": "timestamp", "nullable": False},
    "kind": {"data_type": "text", "nullable": False},
    "table_name": {"data_type": "text", "nullable": False},
    "subject_id": {"data_type": "text"},
    "subject_name": {"data_type": "text"},
    "day": {"data_type": "date"},
    "period_start": {"data_type": "timestamp"},
    "period_end": {"data_type": "timestamp"},
    "klaviyo": {"data_type": "bigint"},
    "warehouse": {"data_type": "bigint"},
    "after_repair": {"data_type": "bigint"},
    "status": {"data_type": "text", "nullable": False},
    "detail": {"data_type": "text"},
}


def _day_edges(lo: datetime, hi: datetime, zone: ZoneInfo) -> list[datetime]:
    """Local midnights from the one at or before `lo` up to `hi`, then `hi`: the days to compare."""
    edges = [_local_midnight(lo, zone)]
    while True:
        nxt = _next_midnight(edges[-1], zone)
        if nxt >= hi:
            break
        edges.append(nxt)
    return [*edges, hi]


def _local_midnight(instant: datetime, zone: ZoneInfo) -> datetime:
    local = instant.astimezone(zone)
    return datetime(local.year, local.month, local.day, tzinfo=zone).astimezone(timezone.utc)


def _next_midnight(midnight: datetime, zone: ZoneInfo) -> datetime:
    day = midnight.astimezone(zone).date() + timedelta(days=1)
    return datetime(day.year, day.month, day.day, tzinfo=zone).astimezone(timezone.utc)


def _spans(edges: Sequence[datetime], longest: timedelta) -> list[tuple[datetime, datetime]]:
    """[edges[0], edges[-1]) cut at day edges into pieces no longer than `longest`."""
    out = []
    start = edges[0]
    for k, edge in enumerate(edges[1:], 1):
        if edge - start > longest:
            out.append((start, edges[k - 1]))
            start = edges[k - 1]
    out.append((start, edges[-1]))
    return out


def _marker(table: str) -> str:
    """The change marker of a table whose rows a sweep reads in full."""
    sweep = BY_TABLE[table].sweep if table in BY_TABLE else None
    marker = CHILD_MARKERS.get(table) or (sweep.marker if sweep else None)
    assert marker is not None, table
    return marker


def _changed(ident: str, value: Any, held_markers: dict[str, datetime | None]) -> bool:
    """A row read from Klaviyo is new, or its change marker moved since the warehouse's copy."""
    if ident not in held_markers:
        return True
    held = held_markers[ident]
    if value is None or held is None:
        return value is not None or held is not None
    return _instant_of(value) != _instant_of(held)


def _instant_of(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    return parse_instant(str(value))


def _changed_mask(rows: pa.Table, marker: str, held_markers: dict[str, datetime | None]) -> pa.Array:
    ids, values = rows.column("id").to_pylist(), rows.column(marker).to_pylist()
    return pa.array([_changed(str(i), v, held_markers) for i, v in zip(ids, values, strict=True)], pa.bool_())


def _below(parent_ids: Iterable[str]) -> list[Slice]:
    """Slices reading below each parent (a list's members, a metric's events: the parent's id in the path)."""
    return [Slice(Partition(p, parent_id=p)) for p in parent_ids]


def _id_set(tables: Iterable[pa.Table]) -> set[str]:
    return {str(v) for t in tables for v in t.column("id").to_pylist()}


def _concat(tables: list[pa.Table]) -> pa.Table | None:
    tables = [t for t in tables if t.num_rows]
    return pa.concat_tables(tables, promote_options="permissive") if tables else None


def _may_have_messages(action: dict[str, Any]) -> bool:
    """Send actions have messages; time delays, splits and the like have none (when Klaviyo says so)."""
    definition = action.get("definition")
    if isinstance(definition, (str, bytes)):
        definition = orjson.loads(definition)
    kind = definition.get("type") if isinstance(definition, dict) else None
    return kind is None or str(kind).startswith("send-")
