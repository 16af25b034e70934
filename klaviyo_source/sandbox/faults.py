"""Fault injection: the failures a connector must survive against the real Klaviyo.

A fault fires by probability (seeded RNG, so runs repeat) or on every N-th matching request, optionally
only under a path prefix. Kinds:
  status     answer with an HTTP 5xx error envelope (500/502/503/504)
  reset      close the socket without an answer (TCP RST)
  truncate   send the full Content-Length but only part of the body, then close
  malformed  drop `id` from one record, or give one attribute the wrong type
  outage     from the K-th matching request after configuration on, answer every request with `status`
             (default 503) until cleared
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass, field
from typing import Any

PRE_KINDS = ("status", "reset", "outage")  # decided before the request is processed
POST_KINDS = ("truncate", "malformed")  # applied to a successful answer
KINDS = PRE_KINDS + POST_KINDS
MALFORMED_VARIANTS = ("drop_id", "wrong_type")


@dataclass
class Fault:
    """One configured fault. Exactly one trigger: `probability`, `every`, or (outage) `from_request`."""

    kind: str
    status: int = 503
    probability: float | None = None
    every: int | None = None
    path: str | None = None
    from_request: int | None = None
    variant: str = "drop_id"
    matched: int = field(default=0, repr=False)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; expected one of {KINDS}")
        if self.variant not in MALFORMED_VARIANTS:
            raise ValueError(f"unknown malformed variant {self.variant!r}")
        if self.kind == "status" and self.status not in (500, 502, 503, 504):
            raise ValueError("status faults answer 500, 502, 503 or 504")
        triggers = [t for t in (self.probability, self.every, self.from_request) if t is not None]
        if self.kind == "outage":
            self.from_request = self.from_request or 1
        elif len(triggers) != 1 or self.from_request is not None:
            raise ValueError(f"fault {self.kind!r} needs exactly one of probability or every")

    @classmethod
    def from_dict(cls, spec: dict[str, Any]) -> Fault:
        allowed = {"kind", "status", "probability", "every", "path", "from_request", "variant"}
        unknown = set(spec) - allowed
        if unknown:
            raise ValueError(f"unknown fault settings {sorted(unknown)}")
        return cls(**spec)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "status": self.status,
            "probability": self.probability,
            "every": self.every,
            "path": self.path,
            "from_request": self.from_request,
            "variant": self.variant,
        }


class Faults:
    """The sandbox's fault settings and the per-request dice; thread-safe."""

    def __init__(self, seed: int = 0, faults: list[dict[str, Any]] | None = None) -> None:
        self._lock = threading.Lock()
        self._rng = random.Random(seed)
        self.faults: list[Fault] = [Fault.from_dict(f) for f in faults or ()]

    def configure(self, faults: list[dict[str, Any]] | None = None) -> None:
        """Replace the fault list (an empty list clears all faults)."""
        parsed = None if faults is None else [Fault.from_dict(f) for f in faults]
        with self._lock:
            if parsed is not None:
                self.faults = parsed

    def settings(self) -> dict[str, Any]:
        with self._lock:
            return {"faults": [f.to_dict() for f in self.faults]}

    def roll(self, path: str) -> list[Fault]:
        """Count one /api request and return the faults that fire for it (in configuration order)."""
        with self._lock:
            fired = []
            for fault in self.faults:
                if fault.path and not path.startswith(fault.path):
                    continue
                fault.matched += 1
                if fault.kind == "outage":
                    hit = fault.matched >= (fault.from_request or 1)
                elif fault.every is not None:
                    hit = fault.matched % fault.every == 0
                else:
                    hit = self._rng.random() < (fault.probability or 0.0)
                if hit:
                    fired.append(fault)
            return fired

    def pick_index(self, n: int) -> int:
        with self._lock:
            return self._rng.randrange(n)


def malform(data: list[dict[str, Any]], fault: Fault, index: int) -> list[dict[str, Any]]:
    """`data` with record `index` broken as `fault.variant` says; copies, so the store's dicts stay intact."""
    if not data:
        return data
    record = dict(data[index])
    if fault.variant == "drop_id":
        record.pop("id", None)
    else:
        attributes = dict(record.get("attributes") or {})
        name = next(iter(attributes), "id")
        attributes[name] = 12345 if isinstance(attributes.get(name), str) else "not-a-number"
        record["attributes"] = attributes
    return [*data[:index], record, *data[index + 1 :]]
