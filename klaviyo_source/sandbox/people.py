"""Profiles and events leaving the account: deletions and merges, with configurable effects.

Klaviyo deletes a profile (an API or UI deletion, or a privacy request) and merges profiles
(`POST /api/profile-merge` moves the source profiles' data into the destination profile and deletes the
sources) without leaving a trace in any GET endpoint (API-NOTES §5.4). What becomes of a deleted profile's
events and memberships is not documented, so tests choose:

- `delete_profiles(ids | count, events="delete"|"keep", memberships="remove"|"keep")`
- `merge_profiles(ids, into, events="move"|"delete"|"keep", memberships="move"|"remove")`: moved events keep
  their ids and name the destination profile; moved memberships make the destination a member of the
  sources' lists and segments (joined now, unless it already was); the destination's `updated` moves on.
- `delete_events(ids | count, metric=...)`: events Klaviyo no longer holds.

The ground truth follows: deleted profiles and events leave it, kept events stay, moved ones change profile.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any

from klaviyo_source.sandbox.data import iso
from klaviyo_source.sandbox.model import StoreError

if TYPE_CHECKING:
    from klaviyo_source.sandbox.store import Store

EVENT_EFFECTS = ("delete", "keep")
MERGE_EVENT_EFFECTS = ("move", "delete", "keep")
MEMBERSHIP_EFFECTS = ("remove", "keep")
MERGE_MEMBERSHIP_EFFECTS = ("move", "remove")


def operations(store: Store) -> dict[str, Callable[..., dict[str, Any]]]:
    """The mutations of this module, bound to a store (called with the store's lock held)."""
    return {
        "delete_profiles": partial(delete_profiles, store),
        "merge_profiles": partial(merge_profiles, store),
        "delete_events": partial(delete_events, store),
    }


def _choose(option: str, name: str, allowed: tuple[str, ...]) -> str:
    if option not in allowed:
        raise StoreError(400, "invalid", f"{name} must be one of {', '.join(allowed)}, got {option!r}.")
    return option


def delete_profiles(store: Store, now: int, count: int | None = None, ids: list[str] | None = None,
                    events: str = "delete", memberships: str = "remove") -> dict[str, Any]:
    """Klaviyo's deletion: the profiles vanish; by default their memberships and events go with them."""
    _choose(events, "events", EVENT_EFFECTS)
    _choose(memberships, "memberships", MEMBERSHIP_EFFECTS)
    chosen = store.pick(store.profiles, ids, count)
    gone = [store.profiles.ident(i) for i in chosen]
    deleted_events = _drop_events(store, chosen) if events == "delete" else []
    left = _leave_groups(store, chosen) if memberships == "remove" else {}
    store.profiles.deleted(chosen)
    return {"ids": gone, "events_deleted": len(deleted_events), "event_ids": deleted_events,
            "memberships_removed": left}


def merge_profiles(store: Store, now: int, ids: list[str], into: str, events: str = "move",
                   memberships: str = "move") -> dict[str, Any]:
    """Merge the profiles `ids` into `into`: their data moves (or goes), then they are deleted."""
    _choose(events, "events", MERGE_EVENT_EFFECTS)
    _choose(memberships, "memberships", MERGE_MEMBERSHIP_EFFECTS)
    sources = store.profiles.find(list(ids))
    target = store.profiles.find([into])[0]
    if target in sources:
        raise StoreError(400, "invalid", "A profile cannot be merged into itself.")
    world = store.world
    moved: list[str] = []
    deleted_events: list[str] = []
    if events == "move":
        records = store.events.of_profiles(sources)

        def repoint() -> None:
            for i in records:
                world.events.profile[i] = target
                world.profile_last_event[target] = max(world.profile_last_event[target], world.events.ts[i])

        store.events.changed(records, repoint)
        moved = [store.events.ident(i) for i in records]
    elif events == "delete":
        deleted_events = _drop_events(store, sources)
    joined: dict[str, list[str]] = {}
    if memberships == "move":
        for kind, groups in world.members.items():
            for g, members in enumerate(groups):
                if any(s in members for s in sources) and target not in members:
                    group = store.members_of(kind, g)
                    members[target] = now
                    group.added([target])
                    joined.setdefault(kind, []).append(_group_id(store, kind, g))
    left = _leave_groups(store, sources)

    def touch() -> None:
        world.profile_updated[target] = max(now, world.profile_updated[target])

    store.profiles.changed([target], touch)
    gone = [store.profiles.ident(i) for i in sources]
    store.profiles.deleted(sources)
    return {"ids": gone, "into": into, "updated": iso(now), "events_moved": moved, "event_ids": deleted_events,
            "memberships_removed": left, "memberships_joined": joined}


def delete_events(store: Store, now: int, ids: list[str] | None = None, count: int | None = None,
                  metric: str | None = None) -> dict[str, Any]:
    """Events Klaviyo no longer holds: the given ids, or `count` random ones (of `metric`, if named)."""
    events = store.events
    if ids is not None:
        wanted = set(ids)
        chosen = [i for i in events.records() if events.ident(i) in wanted]
        if len(chosen) != len(wanted):
            raise StoreError(404, "not_found", "Some of these events do not exist.")
    else:
        live = list(events.records())
        if metric is not None:
            metrics = store.rows("metrics")
            if metric not in metrics.by_id:
                raise StoreError(404, "not_found", f"No metric with id {metric!r}.")
            live = [i for i in live if store.world.events.metric[i] == metrics.by_id[metric]]
        chosen = sorted(store.rng.sample(live, min(len(live), 1 if count is None else int(count))))
    gone = [events.ident(i) for i in chosen]
    events.deleted(chosen)
    return {"ids": gone}


def _drop_events(store: Store, profiles: list[int]) -> list[str]:
    records = store.events.of_profiles(profiles)
    gone = [store.events.ident(i) for i in records]
    store.events.deleted(records)
    return gone


def _leave_groups(store: Store, profiles: list[int]) -> dict[str, list[list[str]]]:
    """Remove the profiles from every list and segment; answers kind -> [group id, profile id] pairs."""
    left: dict[str, list[list[str]]] = {}
    for kind, groups in store.world.members.items():
        for g, members in enumerate(groups):
            leaving = [i for i in profiles if i in members]
            if leaving:
                store.members_of(kind, g).deleted(leaving)
                left.setdefault(kind, []).extend([_group_id(store, kind, g), store.profiles.ident(i)]
                                                 for i in leaving)
    return left


def _group_id(store: Store, kind: str, group: int) -> str:
    return store.rows("lists" if kind == "list" else "segments").ident(group)
