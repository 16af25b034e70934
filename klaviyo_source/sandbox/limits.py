"""Klaviyo-style rate limiting: fixed windows per (account, endpoint, tier).

Klaviyo counts requests in fixed windows aligned to the clock: burst = 1 s, steady = 60 s, plus a daily
window on some endpoints (reports: 225/d). Over any window -> 429 with `Retry-After`; normal answers
carry RateLimit-* headers describing the steady window. Rejected requests do not consume quota.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

# Window lengths in seconds, keyed by the name x-klaviyo-ratelimit uses.
WINDOWS = {"burst": 1, "steady": 60, "daily": 86400}


@dataclass(frozen=True)
class Decision:
    """The verdict for one request; `headers` go on the answer (RateLimit-* or Retry-After)."""

    allowed: bool
    headers: dict[str, str]


class RateLimiter:
    """Thread-safe fixed-window counters.

    mode: "real" (the spec's limits), "off", a number (multiplier applied to the spec's limits), or a
    mapping endpoint -> (burst, steady[, daily]) overriding those endpoints ("/events" or "/api/events");
    endpoints not in the mapping keep the spec's limits.
    """

    def __init__(self, mode: Any = "real", clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, str, str, str], tuple[int, int]] = {}
        self.mode: Any = "real"
        self.configure(mode)

    def configure(self, mode: Any) -> None:
        """Switch mode; counters restart so a new limit takes effect at once."""
        if isinstance(mode, Mapping):
            mode = {_strip_api(k): tuple(int(n) for n in v) for k, v in mode.items()}
        elif isinstance(mode, (int, float)) and not isinstance(mode, bool):
            if mode <= 0:
                raise ValueError("rate-limit multiplier must be positive")
        elif mode not in ("real", "off"):
            raise ValueError(f"unknown rate-limit mode {mode!r}")
        with self._lock:
            self.mode = mode
            self._counts.clear()

    def limits_for(self, endpoint: str, spec: Mapping[str, int]) -> dict[str, int] | None:
        """The effective {burst, steady[, daily]} for an endpoint, or None when limits are off."""
        mode = self.mode
        if mode == "off":
            return None
        if isinstance(mode, dict):
            if endpoint in mode:
                return dict(zip(("burst", "steady", "daily"), mode[endpoint], strict=False))
            return dict(spec)
        if mode == "real":
            return dict(spec)
        return {name: max(1, math.floor(n * mode)) for name, n in spec.items()}

    def check(self, account: str, endpoint: str, tier: str, spec: Mapping[str, int]) -> Decision:
        """Count one request against every window of (account, endpoint, tier), or refuse it."""
        limits = self.limits_for(endpoint, spec)
        if limits is None:
            return Decision(True, {})
        now = self.clock()
        with self._lock:
            current: list[tuple[tuple[str, str, str, str], int, int, int]] = []
            for name, limit in limits.items():
                length = WINDOWS[name]
                window = int(now // length)
                key = (account, endpoint, tier, name)
                seen_window, count = self._counts.get(key, (window, 0))
                if seen_window != window:
                    count = 0
                if count >= limit:
                    retry = math.ceil((window + 1) * length - now)
                    return Decision(False, {"Retry-After": str(max(1, retry))})
                current.append((key, window, count, limit))
            for key, window, count, _ in current:
                self._counts[key] = (window, count + 1)
        steady = next(c for c in current if c[0][3] == "steady")
        _, window, count, limit = steady
        reset = max(1, math.ceil((window + 1) * WINDOWS["steady"] - now))
        return Decision(
            True,
            {
                "RateLimit-Limit": str(limit),
                "RateLimit-Remaining": str(limit - count - 1),
                "RateLimit-Reset": str(reset),
            },
        )


def _strip_api(endpoint: str) -> str:
    return endpoint[len("/api") :] if endpoint.startswith("/api/") else endpoint


def retry_after_detail(headers: Mapping[str, str]) -> str:
    """Klaviyo's 429 detail text."""
    return f"Request was throttled. Expected available in {headers['Retry-After']} seconds."
