"""Self-verifying loads: after each kind of change no cursor can see, one scheduled run with verification
makes every table equal to the sandbox's ground truth (deletions flagged, or removed when chosen), with the
extra requests counted and bounded; a run with nothing changed costs a stated handful of requests.

The normal suite runs the no-change run (every check and sweep, on every Python of CI); the repairs, about 20 s
each, run with `pytest -m slow tests/integration/test_verify.py` (and test_cli_verify.py covers a repair
through the command line in the normal suite)."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from datetime import datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from klaviyo_source.rate_limit import Governor
from klaviyo_source.sandbox import Sandbox
from klaviyo_source.verify import RESULTS_TABLE, Report, Verification
from tests.integration.conftest import SIZES, Loader, assert_held_equals_ground_truth, settle

# what one verification of the test account reads when nothing changed: one metric-aggregates request per
# metric, one profile_count per list and segment, the id sweeps (campaigns per channel, flows with their
# actions, templates 10 a page, profiles 100 a page) and flow messages below each send action
METRICS = 20
GROUPS = SIZES["lists"] + SIZES["segments"]
SWEEPS = 3 + 1 + math.ceil(SIZES["templates"] / 10) + math.ceil(SIZES["profiles"] / 100)
# the profile sweep is read in windows on `created`: an idle chain may split one off where more than a page lies
# ahead (windows.py), a partial page more
SPLIT = 1


@pytest.fixture(autouse=True)
def unpaced(monkeypatch: pytest.MonkeyPatch) -> None:
    """These sandboxes have no rate limits: our governors need not pace the 1/s and 3/s check tiers here
    (they are tested on their own; the README's timings are measured with Klaviyo's real limits)."""
    monkeypatch.setattr(Governor, "acquire", lambda self, sleep=None: None)


def scheduled_run(loader: Loader, **verify_options: Any) -> Report:
    """What the command line does on a schedule: load what changed, then verify and repair."""
    settle()
    loader.run()
    loader.sandbox.reset_stats()
    return loader.verify(**verify_options)


def requests(sandbox: Sandbox) -> Counter[str]:
    return Counter({r["path"]: r["count"] for r in sandbox.stats()["requests"]})


def send_actions(loader: Loader) -> int:
    return sum(1 for (kind,) in loader.rows("flow_actions", "definition->>'$.type'") if kind.startswith("send-"))


def handful(loader: Loader) -> int:
    """What a verification of the test account reads at most when nothing changed (measured: this, or one less
    when the profile sweep was not split)."""
    return METRICS + GROUPS + SWEEPS + SPLIT + send_actions(loader)


def about_a_handful(requests: int, loader: Loader, extra: int = 0) -> bool:
    return handful(loader) - SPLIT + extra <= requests <= handful(loader) + extra


def repairs(report: Report) -> tuple[int, int]:
    """(metric-days whose count differed, lists and segments read again) in a verification's repair."""
    days = sum(c.check == "event_count" and c.day is not None and c.status == "repaired" for c in report.checks)
    groups = sum(c.check == "member_count" and c.status == "repaired" for c in report.checks)
    return days, groups


def metric_days(loader: Loader, event_ids: Iterable[str], zone: str = "America/New_York") -> int:
    """The metric-days (of the account's timezone) the given loaded events lie on: each a slice to read again
    when Klaviyo removed or moved them."""
    wanted = set(event_ids)
    rows = loader.rows("events", "id, metric_id, datetime")
    return len({(m, at.astimezone(ZoneInfo(zone)).date()) for i, m, at in rows if i in wanted})


def test_no_change_run_costs_a_handful_of_requests_and_repairs_nothing(loader: Loader, sandbox: Sandbox) -> None:
    loader.run()
    loader.verify()
    report = scheduled_run(loader)
    sent = requests(sandbox)
    assert sent["/api/metric-aggregates"] == METRICS
    assert sent["/api/lists/{id}"] + sent["/api/segments/{id}"] == GROUPS
    assert sent["/api/flow-actions/{id}/flow-messages"] == send_actions(loader)
    assert sum(sent.values()) == report.requests and about_a_handful(report.requests, loader)
    assert not report.differing and not report.flagged and not any(report.loaded.values())
    assert {c.status for c in report.checks} == {"ok"}
    assert "0 still differ" in report.summary()
    statuses = Counter(status for (status,) in loader.rows(RESULTS_TABLE, "status"))
    assert statuses == {"ok": 2 * len(report.checks)}  # both verifications recorded, all ok
    assert_held_equals_ground_truth(loader)


@pytest.mark.slow
def test_backdated_and_vanished_events_are_repaired_slice_by_slice(loader: Loader, sandbox: Sandbox) -> None:
    loader.run(events_lookback_hours=1)
    late = sandbox.mutate("add_events", count=12, offset_seconds=-5 * 86400)  # far beyond the lookback
    older = sandbox.mutate("add_events", count=4, offset_seconds=-20 * 86400, metric="Placed Order")
    # within the verified 30 days, on other days than the late ones: an event added and one deleted on the same
    # metric-day leave its count as it was, which no count can tell (the README says so)
    now = datetime.now(timezone.utc)
    recent = sorted(i for i, at in loader.rows("events", "id, datetime")
                    if now - timedelta(days=15) < at < now - timedelta(days=8))
    gone = sandbox.mutate("delete_events", ids=recent[:6])
    report = scheduled_run(loader)
    held = set(loader.held("events"))
    assert set(late["ids"]) | set(older["ids"]) <= held and not set(gone["ids"]) & held
    flagged = dict(loader.rows("events", "id, deleted_at is not null"))
    assert all(flagged[e] for e in gone["ids"] if e in flagged)  # soft: still there, with deleted_at
    assert report.flagged["events"] == sum(e in flagged for e in gone["ids"])
    days = [c for c in report.checks if c.check == "event_count" and c.day is not None]
    assert days and {c.status for c in days} == {"repaired"} and not report.differing
    assert_held_equals_ground_truth(loader)
    # extra requests: the re-read metric-days (a page each here) beyond the no-change handful
    sent = requests(sandbox)
    assert sent["/api/events"] <= len(days)
    assert report.requests <= handful(loader) + len(days)
    again = scheduled_run(loader)
    assert not again.differing and not again.flagged and not any(again.loaded.values())


@pytest.mark.slow
def test_deleted_and_merged_profiles(loader: Loader, sandbox: Sandbox) -> None:
    loader.run()
    truth = sandbox.ground_truth()
    members = sorted({p for _, p in truth["list_members"]} | {p for _, p in truth["segment_members"]})
    deleted = sandbox.mutate("delete_profiles", ids=members[:2])  # events and memberships go with them
    kept = sandbox.mutate("delete_profiles", ids=members[2:3], events="keep")
    merged = sandbox.mutate("merge_profiles", ids=members[3:4], into=members[4])  # events and lists move
    silent = sandbox.mutate("delete_profiles", ids=[p for p in truth["profiles"] if p not in members][:1])
    slices = metric_days(loader, [*deleted["event_ids"], *merged["events_moved"], *silent["event_ids"]])
    report = scheduled_run(loader)
    assert report.timezone == "America/New_York"
    assert_held_equals_ground_truth(loader)  # also: moved events name the profile they were merged into
    gone = set(deleted["ids"]) | set(kept["ids"]) | set(merged["ids"]) | set(silent["ids"])
    flagged = {i for i, at in loader.rows("profiles", "id, deleted_at") if at is not None}
    assert flagged == gone and report.flagged["profiles"] == len(gone)
    assert set(kept["event_ids"]) <= set(loader.held("events"))  # Klaviyo kept them: so do we
    assert set(deleted["event_ids"]) <= {i for i, at in loader.rows("events", "id, deleted_at") if at}
    ended = {p for p, at in loader.rows("list_members", "profile_id, removed_at") if at}
    assert ended >= {p for _, p in deleted["memberships_removed"].get("list", [])}
    assert not report.differing
    # extra requests: the events of each profile gone, the days of those Klaviyo removed or moved (a page each
    # here), the lists and segments read again
    groups = repairs(report)[1]
    assert report.requests <= handful(loader) + len(gone) + slices + groups


@pytest.mark.slow
def test_removed_members_end_without_replacing_the_membership(loader: Loader, sandbox: Sandbox) -> None:
    loader.run()
    out = [sandbox.mutate("remove_members", kind=kind, count=4) for kind in ("list", "segment", "list")]
    before = {t: len(loader.rows(t, "profile_id")) for t in ("list_members", "segment_members")}
    report = scheduled_run(loader)
    assert_held_equals_ground_truth(loader, ["list_members", "segment_members"])
    for table in ("list_members", "segment_members"):
        assert len(loader.rows(table, "profile_id")) == before[table]  # rows stay, marked removed_at
    removed = {(g, p) for o in out for p in o["ids"] for g in [o["parent_id"]]}
    ended = {(g, p) for g, p, at in loader.rows("list_members", "list_id, profile_id, removed_at") if at}
    ended |= {(g, p) for g, p, at in loader.rows("segment_members", "segment_id, profile_id, removed_at") if at}
    assert ended == removed
    assert report.loaded.get("list_members", 0) == report.loaded.get("segment_members", 0) == 0
    groups = [c for c in report.checks if c.check == "member_count" and c.status == "repaired"]
    assert {c.subject_id for c in groups} == {o["parent_id"] for o in out}
    sent = requests(sandbox)  # one sweep of each changed list or segment (a page each here)
    assert sent["/api/lists/{id}/profiles"] + sent["/api/segments/{id}/profiles"] == len(groups)
    assert about_a_handful(report.requests, loader, len(groups))
    # a member who comes back is held again
    settle()
    sandbox.mutate("add_members", kind="list", parent_id=out[0]["parent_id"], ids=out[0]["ids"][:1])
    scheduled_run(loader)
    assert_held_equals_ground_truth(loader, ["list_members"])


@pytest.mark.slow
def test_deleted_campaigns_flows_templates_and_children(loader: Loader, sandbox: Sandbox) -> None:
    loader.run()
    truth = sandbox.ground_truth()
    sandbox.mutate("delete", table="campaigns", ids=sorted(truth["campaigns"])[:2])
    flow = sandbox.mutate("delete", table="flows", ids=sorted(truth["flows"])[:1])
    sandbox.mutate("delete", table="templates", ids=sorted(truth["templates"])[:3])
    remaining = sorted(set(truth["flow_actions"]) - set(flow["cascaded"].get("flow_actions", [])))
    sandbox.mutate("delete", table="flow_actions", ids=remaining[:1])  # a child on its own
    report = scheduled_run(loader)
    assert_held_equals_ground_truth(loader)
    for table in ("campaigns", "campaign_messages", "flows", "flow_actions", "flow_messages", "templates"):
        gone = set(truth[table]) - sandbox.ground_truth()[table]
        flagged = {i for i, at in loader.rows(table, "id, deleted_at") if at is not None}
        assert flagged == gone, table
    assert report.flagged["templates"] == 3 and not report.differing
    assert report.requests <= handful(loader)  # found by the sweeps every run reads anyway


@pytest.mark.slow
def test_edited_children_of_unchanged_parents_arrive(loader: Loader, sandbox: Sandbox) -> None:
    loader.run()
    edited = {table: sandbox.mutate("edit_children", table=table, count=2)["ids"]
              for table in ("campaign_messages", "flow_actions", "flow_messages")}
    report = scheduled_run(loader)
    assert_held_equals_ground_truth(loader)  # every row's updated equals the sandbox's
    for table, ids in edited.items():
        # the edited rows and no others were loaded again (unless the run itself re-read them: a flow
        # changed within the cursor's overlap brings its actions along)
        assert 0 < report.loaded[table] <= len(ids) or table == "flow_actions", table
    assert about_a_handful(report.requests, loader)  # children come along with the sweeps: no extra request


@pytest.mark.slow
def test_hard_deletion_removes_rows_and_what_belongs_to_them(loader: Loader, sandbox: Sandbox) -> None:
    loader.run()
    truth = sandbox.ground_truth()
    member = sorted(truth["list_members"])[0][1]
    deleted = sandbox.mutate("delete_profiles", ids=[member])
    sandbox.mutate("delete", table="campaigns", ids=sorted(truth["campaigns"])[:1])
    slices = metric_days(loader, deleted["event_ids"])
    report = scheduled_run(loader, deletions="hard")
    assert_held_equals_ground_truth(loader)
    assert member not in loader.keys("profiles")
    assert member not in {p for _, p in loader.keys("list_members")}
    assert not set(deleted["event_ids"]) & set(loader.keys("events"))
    assert len(loader.keys("campaigns")) == len(sandbox.ground_truth()["campaigns"])
    assert loader.rows("profiles", "count(deleted_at)")[0][0] == 0
    assert "deletions removed" in report.summary()
    assert report.requests <= handful(loader) + 1 + slices + repairs(report)[1]


@pytest.mark.slow
def test_verify_only_reports_and_loads_nothing(loader: Loader, sandbox: Sandbox) -> None:
    loader.run()
    sandbox.mutate("add_events", count=5, offset_seconds=-4 * 86400)
    sandbox.mutate("remove_members", kind="segment", count=2)
    sandbox.mutate("delete", table="templates", ids=sorted(sandbox.ground_truth()["templates"])[:1])
    before = {t: loader.rows(t, "count(*)") for t in ("events", "segment_members", "templates")}
    report = loader.verify(repair=False)
    assert {c.check for c in report.differing} >= {"event_count", "member_count"}
    assert "report only" in report.summary() and not report.flagged
    assert [c for c in report.differing if c.check == "deleted" and c.table == "templates"]
    assert {t: loader.rows(t, "count(*)") for t in before} == before
    assert RESULTS_TABLE not in loader.pipeline().default_schema.tables


@pytest.mark.slow
def test_what_stays_different_is_reported_and_not_read_again(loader: Loader, sandbox: Sandbox,
                                                             monkeypatch: pytest.MonkeyPatch,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    loader.run(events_lookback_hours=1)
    sandbox.mutate("add_events", count=3, offset_seconds=-6 * 86400, metric="Placed Order")
    monkeypatch.setattr(Verification, "_read_slices", lambda self, plan: iter(()))  # a repair that fails
    with caplog.at_level("WARNING", logger="klaviyo_source"):
        report = scheduled_run(loader)
    left = report.differing
    assert left and {c.check for c in left} == {"event_count"} and "1 still differ" in report.summary().replace(
        f"{len(left)} still", "1 still")
    assert any("verification: event_count" in r.getMessage() for r in caplog.records)
    rows = loader.rows(RESULTS_TABLE, "status, detail")
    assert ("differs", "still differs after the day was read again") in rows
    sandbox.reset_stats()
    again = loader.verify()
    assert [c for c in again.differing if c.day] and all("not read again" in c.detail
                                                         for c in again.differing if c.day)
    assert requests(sandbox)["/api/events"] == 0


@pytest.mark.slow
@pytest.mark.postgres
def test_verification_repairs_on_postgres(postgres_loader: Loader, sandbox: Sandbox) -> None:
    """PostgreSQL hands JSON back as objects and holds locks per transaction: repairs load all the same."""
    postgres_loader.run()
    truth = sandbox.ground_truth()
    sandbox.mutate("delete_profiles", ids=sorted(p for _, p in truth["list_members"])[:2])
    sandbox.mutate("add_events", count=5, offset_seconds=-3 * 86400)
    sandbox.mutate("remove_members", kind="segment", count=3)
    sandbox.mutate("delete", table="campaigns", ids=sorted(truth["campaigns"])[:1])
    sandbox.mutate("edit_children", table="flow_messages", count=1)
    report = scheduled_run(postgres_loader)
    assert_held_equals_ground_truth(postgres_loader)
    assert report.flagged["profiles"] == 2 and not report.differing
    assert not scheduled_run(postgres_loader).flagged  # and the next run finds nothing left to do
