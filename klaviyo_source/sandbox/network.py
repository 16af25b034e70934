"""What lies between Klaviyo and its client: time to answer, compression, requests in flight.

Latency has two parts. `latency` seconds pass before a request reaches the API (it is counted against the
rate limits on arrival, as Klaviyo counts it); `latency_per_mb` more seconds per megabyte of JSON pass
while the answer is produced, so a 1,000-event page (about 0.8 MB) takes longer than an empty one, as on
Klaviyo. Benchmarks state the values they use; the defaults are 0 (tests run at full speed).

Answers are gzip-compressed when the client asks for it (`Accept-Encoding: gzip`), as Klaviyo's are, so a
client pays for decompression as it would in production. Level 1: the client's cost of decompressing
hardly depends on the level, and on the shared two-core machines a harder level would only take CPU from
the client being measured.
"""

from __future__ import annotations

import gzip
import threading
import time
from typing import Any

GZIP_LEVEL = 1
GZIP_MIN_BYTES = 1024  # smaller answers go out as they are


class Network:
    """Latency, compression and the count of requests in flight; thread-safe."""

    def __init__(self, latency: float = 0.0, latency_per_mb: float = 0.0, gzip_answers: bool = True) -> None:
        self._lock = threading.Lock()
        self.latency = 0.0
        self.latency_per_mb = 0.0
        self.gzip = True
        self._inflight = 0
        self._peak = 0
        self._area = 0.0  # integral of requests in flight over time
        self._busy = 0.0  # time with any request in flight
        self._last = time.monotonic()
        self.configure(latency=latency, latency_per_mb=latency_per_mb, gzip_answers=gzip_answers)

    def configure(
        self, latency: float | None = None, latency_per_mb: float | None = None, gzip_answers: bool | None = None
    ) -> None:
        for name, value in (("latency", latency), ("latency_per_mb", latency_per_mb)):
            if value is not None and value < 0:
                raise ValueError(f"{name} must be >= 0")
        with self._lock:
            if latency is not None:
                self.latency = float(latency)
            if latency_per_mb is not None:
                self.latency_per_mb = float(latency_per_mb)
            if gzip_answers is not None:
                self.gzip = bool(gzip_answers)

    def settings(self) -> dict[str, Any]:
        with self._lock:
            return {"latency": self.latency, "latency_per_mb": self.latency_per_mb, "gzip": self.gzip}

    # --- one request ----------------------------------------------------------------------------------

    def arrive(self) -> None:
        """A request is on its way: it is in flight from now, and reaches the API after `latency`."""
        with self._lock:
            self._change(+1)
            delay = self.latency
        if delay:
            time.sleep(delay)

    def produce(self, size: int) -> None:
        """The answer has `size` bytes of JSON: the time it takes to produce them."""
        delay = self.latency_per_mb * size / 1e6
        if delay:
            time.sleep(delay)

    def encode(self, body: bytes, accept_encoding: str | None) -> tuple[bytes, dict[str, str]]:
        """The body as it goes on the wire, and the headers that say how."""
        if self.gzip and len(body) >= GZIP_MIN_BYTES and _accepts_gzip(accept_encoding):
            return gzip.compress(body, GZIP_LEVEL, mtime=0), {"Content-Encoding": "gzip"}
        return body, {}

    def leave(self) -> None:
        """The answer has been sent."""
        with self._lock:
            self._change(-1)

    # --- requests in flight ---------------------------------------------------------------------------

    def _change(self, step: int) -> None:
        now = time.monotonic()
        if self._inflight:
            self._area += self._inflight * (now - self._last)
            self._busy += now - self._last
        self._last = now
        self._inflight += step
        self._peak = max(self._peak, self._inflight)

    def reset_stats(self) -> None:
        with self._lock:  # requests under way stay counted
            self._peak = self._inflight
            self._area = self._busy = 0.0
            self._last = time.monotonic()

    def stats(self) -> dict[str, float]:
        """Most requests in flight at once, and the mean while any was (time-weighted)."""
        with self._lock:
            self._change(0)
            mean = self._area / self._busy if self._busy else 0.0
            return {"inflight_peak": self._peak, "inflight_mean": round(mean, 1)}


def _accepts_gzip(header: str | None) -> bool:
    for part in (header or "").split(","):
        coding, _, params = part.strip().partition(";")
        if coding.strip().lower() in ("gzip", "*"):
            return params.replace(" ", "") not in ("q=0", "q=0.0")
    return False
