"""One rate governor per Klaviyo endpoint, shared by every thread that calls it.

Klaviyo counts requests per account and endpoint in two fixed windows, a 1-second burst window and a
60-second steady window; going over either answers 429. Retrying after 429s wastes requests and, with
many threads, turns into a storm, so requests wait here *before* they are sent: the governor counts them
so that no window Klaviyo counts in can overflow however late they arrive (the burst window slides), keeps
a configurable share of the quota for the account's other integrations, lowers its budget when
`RateLimit-Remaining` says others are using it, and stops every thread for `Retry-After` seconds when
Klaviyo throttles anyway. No library does arrival-safe, header-fed, shared throttling of this kind, hence
this module.

The governor also knows the pace of its endpoint, so it says how many requests are worth having in flight
(`inflight`): the rate Klaviyo allows times the time an answer takes. One request at a time gets one page per
latency; at 1 s per answer that is 1 of the 75 requests a second profiles may have. The rate is the burst
allowance while the minute's budget lasts (the fastest schedule under Klaviyo's windows is to spend the budget
as fast as the burst window allows), never more than is left of that budget (others' use included), and
halved after each 429.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping

from klaviyo_source.endpoints import Tier

BURST_SECONDS = 1.0
STEADY_SECONDS = 60.0
# Klaviyo counts a request when it arrives, not when we send it, and the time between the two is unknown (at
# most the time to the answer). Counted by the clock second of sending, requests sent in the last part of a
# second may land in the next; charging them to both (as the steady window does, see `margin`) cost a third
# of the burst allowance at 1 s per answer (measured: 60 of 75 profile requests a second). So the burst window
# slides: no more than the allowance in any BURST_SECONDS + `jitter` of sending, which no arrival window can
# then exceed whatever the delay, as long as the delay varies by less than `jitter`. Requests are also spread
# evenly through the window rather than sent at once: arrivals that come all together vary more (the server's
# threads take turns), which cost 429s at 2 s per answer on the sandbox; paced, none. The jitter allowance is a
# share of the latency (more requests are out, and each travels longer, the slower answers are): a fixed 0.1 s
# cost segment members a tenth of their rate at 100 ms per answer. A 429 doubles it.
JITTER_PER_SECOND = 0.05
MIN_JITTER = 0.01
MAX_JITTER = 0.5
# The steady window is counted by the clock minute: requests sent within `margin` of its end count in both.
# Measured without this: 2% of 1,000 member requests answered 429 at 100 ms latency, all at window edges.
INITIAL_MARGIN = 0.25
MAX_MARGIN = 0.5
# Before the first answer the latency is unknown: assume a second (a large Klaviyo page), so that a first load
# starts with enough chains at high latency; at low latency the surplus costs one short request per chain.
DEFAULT_LATENCY = 1.0
# The latency that sizes the requests in flight is a low quantile of the last answers: when our own CPU is
# the bottleneck, answers wait for a thread to read them and look slower than Klaviyo is; more requests in
# flight would not help then, only hold more memory.
LATENCY_SAMPLES = 64
KNEE_SAMPLES = 16  # answers before a knee is fitted (see _pace)
LATENCY_QUANTILE = 0.25
SIZE_WEIGHT = 0.1  # of each new answer in the running average of answer sizes
RECOVERY = 0.02  # of the in-flight share regained per answer after a 429 halved it


class Governor:
    """Admits requests so that neither Klaviyo window is exceeded.

    The burst window slides (see JITTER_PER_SECOND). The steady window is aligned to the clock minute, as Klaviyo's is;
    `observe()` corrects it from the headers when the server disagrees. `margin` is a slowly decaying maximum
    of the time from admission to answer (capped): requests admitted that close to the minute's end also count
    against the next one.
    """

    def __init__(self, tier: Tier, share: float = 1.0, clock: Callable[[], float] = time.time) -> None:
        self.burst_cap = max(1, math.floor(tier.burst * share))
        self.steady_cap = max(1, math.floor(tier.steady * share))
        self._clock = clock
        self._lock = threading.Lock()
        self._burst: deque[float] = deque()  # when the requests of the sliding burst window were admitted
        self._jitter_scale = 1.0  # doubled by each 429
        self._steady_start = -1.0
        self._steady_end = -1.0
        self._steady_used = 0
        self._blocked_until = 0.0
        self._steady_carry = 0  # admitted near the end of the current minute: also charged to the next
        self._sent = threading.local()  # when this thread's request was admitted
        self.margin = INITIAL_MARGIN
        self.waited = 0.0  # seconds threads spent waiting here, for progress reports
        # (requests on the wire when sent, seconds from sending to the answer) of the last answers
        self._latencies: deque[tuple[int, float]] = deque(maxlen=LATENCY_SAMPLES)
        self._wire = 0
        self.latency: float | None = None  # Klaviyo's own time to answer, without queueing (see _pace)
        self.knee: float | None = None  # requests on the wire at which answers take twice as long
        self.page_bytes: float | None = None  # running average of an answer's size (decompressed)
        self.decode_seconds: float | None = None  # running average of the time to read and check an answer
        self.throttles = 0  # 429 answers seen
        self.in_hand = 0  # answers received and waiting for a turn at the CPU
        self._backoff = 1.0  # share of the in-flight target; halved by each 429, regained answer by answer

    def _roll(self, now: float) -> None:
        oldest = now - BURST_SECONDS - self.jitter
        while self._burst and self._burst[0] <= oldest:
            self._burst.popleft()
        if now >= self._steady_end:
            carried = self._steady_carry if now < self._steady_end + STEADY_SECONDS else 0
            self._steady_start = math.floor(now / STEADY_SECONDS) * STEADY_SECONDS
            self._steady_end = self._steady_start + STEADY_SECONDS
            self._steady_used, self._steady_carry = carried, 0

    def acquire(self, sleep: Callable[[float], None] | None = None) -> None:
        """Blocks until a request may be sent, then counts it.

        `sleep` (default time.sleep) waits between checks; a run passes one that raises when it is cancelled.
        """
        sleep = sleep or time.sleep
        while True:
            with self._lock:
                now = self._clock()
                if now >= self._blocked_until:
                    self._roll(now)
                    paced = not self._burst or now >= self._burst[-1] + self._spacing()
                    if self._steady_used < self.steady_cap and len(self._burst) < self.burst_cap and paced:
                        self._steady_used += 1
                        self._burst.append(now)
                        if now >= self._steady_end - self.margin:
                            self._steady_carry += 1
                        self._sent.at = now
                        return
                    if self._steady_used >= self.steady_cap:
                        wake = self._steady_end
                    elif len(self._burst) >= self.burst_cap:  # the oldest request of the sliding window leaves it
                        wake = self._burst[0] + BURST_SECONDS + self.jitter
                    else:
                        wake = self._burst[-1] + self._spacing()
                else:
                    wake = self._blocked_until
                delay = max(wake - now, 0.001)
                self.waited += delay
            sleep(delay)

    @property
    def jitter(self) -> float:
        """Seconds by which the delay to Klaviyo may vary between requests (see JITTER_PER_SECOND)."""
        seconds = self.latency if self.latency is not None else DEFAULT_LATENCY
        return min(MAX_JITTER, max(MIN_JITTER, JITTER_PER_SECOND * seconds) * self._jitter_scale)

    def _spacing(self) -> float:
        return (BURST_SECONDS + self.jitter) / self.burst_cap

    def observe(self, headers: Mapping[str, str]) -> None:
        """Feeds `RateLimit-Limit/Remaining/Reset` of a normal answer into the steady window."""
        self._answered()
        limit = _first_int(headers.get("RateLimit-Limit"))
        remaining = _first_int(headers.get("RateLimit-Remaining"))
        reset = _first_int(headers.get("RateLimit-Reset"))
        if limit is None or remaining is None or reset is None:
            return
        with self._lock:
            now = self._clock()
            self._roll(now)
            server_end = now + reset
            # The server's window ends elsewhere than ours (another clock or alignment): adopt its end,
            # rounded up, because Reset is whole seconds and waiting a little too long costs nothing.
            if abs(server_end - self._steady_end) > 2.0:
                self._steady_end = server_end + 1.0
            # Others use the same account quota: plan on no more than what the server says is left,
            # less the part of the quota we leave to them.
            reserve = max(0, limit - self.steady_cap)
            used_as_seen = self.steady_cap - max(0, remaining - reserve)
            if used_as_seen > self._steady_used:
                self._steady_used = used_as_seen

    def _answered(self) -> None:
        """This thread's request was answered: its time from admission feeds `margin`."""
        sent = getattr(self._sent, "at", None)
        if sent is None:
            return
        self._sent.at = None
        with self._lock:
            self.margin = min(MAX_MARGIN, max(self._clock() - sent, 0.95 * self.margin))

    def throttled(self, retry_after: float) -> None:
        """Klaviyo answered 429: every thread waits `retry_after` seconds, then the windows start anew."""
        with self._lock:
            until = self._clock() + retry_after
            if until > self._blocked_until:
                self._blocked_until = until
            self._steady_end = min(self._steady_end, until)
            self.throttles += 1
            self._backoff = max(0.05, self._backoff / 2)
            self._jitter_scale = min(2 * self._jitter_scale, MAX_JITTER / MIN_JITTER)

    def sent(self) -> int:
        """A request goes out; the requests of this endpoint now on the wire (for `returned`)."""
        with self._lock:
            self._wire += 1
            return self._wire

    def returned(self, seconds: float | None, wire: int) -> None:
        """The request sent with `wire` requests on the wire came back: an answer's headers after `seconds`
        (None: it failed, or was an error answer, which says nothing of how long pages take)."""
        with self._lock:
            self._wire -= 1
            if seconds is None:
                return
            self._latencies.append((wire, seconds))
            self.latency, self.knee = _pace(self._latencies)
            self._backoff = min(1.0, self._backoff + RECOVERY)

    def sized(self, size: int) -> None:
        """An answer's body was `size` bytes (decompressed): what a page in hand costs."""
        with self._lock:
            self.page_bytes = float(size) if self.page_bytes is None else (
                self.page_bytes + SIZE_WEIGHT * (size - self.page_bytes))

    def decoded(self, seconds: float) -> None:
        """An answer took `seconds` to read, parse and check (on a decoder thread)."""
        with self._lock:
            self.decode_seconds = seconds if self.decode_seconds is None else (
                self.decode_seconds + SIZE_WEIGHT * (seconds - self.decode_seconds))

    def patience(self, decoders: int) -> int:
        """Answers in hand that may wait for the CPU before this endpoint asks for more: as many as `decoders`
        threads get through while a new request is answered (at least one).

        A fixed few (4) made chains wait until the CPU had caught up, and then for a whole latency with the CPU
        idle: at 1 s per answer every catch-up left a gap of a second (requests in flight averaged 40 of the
        100 allowed). Sent earlier, the next answers arrive as the CPU gets to them.
        """
        with self._lock:
            if self.latency is None or not self.decode_seconds:
                return 1
            return max(1, math.floor(decoders * self.latency / self.decode_seconds))

    def hold(self, change: int) -> None:
        """An answer of this endpoint starts (+1) or stops (-1) waiting for a turn at the CPU."""
        with self._lock:
            self.in_hand += change

    def last_round_pages(self) -> float | None:
        """Answers this endpoint gets through in one round trip when Klaviyo's burst rate is what holds it back
        (the rate x the latency); None when our own pace of reading answers is slower than that rate, or before
        the first answers (see windows.END_PAGES)."""
        with self._lock:
            if self.latency is None or not self.decode_seconds:
                return None
            spacing = self._spacing()
            if spacing < self.decode_seconds:
                return None
            return self.latency / spacing

    def inflight(self, latency: float | None = None) -> int:
        """Requests worth having in flight now: allowed rate x latency, within what is left of the minute.

        `latency` is the caller's guess while no answer has come back yet.
        """
        with self._lock:
            self._roll(self._clock())
            seconds = self.latency if self.latency is not None else (latency or DEFAULT_LATENCY)
            filling = math.ceil(self.burst_cap * seconds * self._backoff)
            left = self.steady_cap - self._steady_used
            queueing = round(2 * self.knee) if self.knee is not None else filling
            # one more than the formula, so that a request is already on its way when one is answered
            return max(1, min(filling, left, queueing)) + 1


def _pace(samples: Iterable[tuple[int, float]]) -> tuple[float, float | None]:
    """Klaviyo's own latency, and the requests on the wire at which answers would take twice as long.

    Fits latency = base + per_request x requests on the wire over the last answers. Klaviyo's latency does
    not depend on how many requests one client has out, so per_request is about 0 and the base is the
    latency (its low quantile: answers that waited for our CPU look slower than they were). Where answers do
    queue (a server or a link that one client can saturate, or our own CPU), per_request is the time each
    request adds: past base / per_request requests on the wire, answers only take longer, none come sooner.
    """
    points = list(samples)
    seconds = sorted(latency for _, latency in points)
    quantile = seconds[int(LATENCY_QUANTILE * (len(seconds) - 1))]
    wires = [wire for wire, _ in points]
    if len(points) < KNEE_SAMPLES or max(wires) < 2 * min(wires):
        return quantile, None  # too few answers, or all at about the same load: nothing to fit
    mean_wire = sum(wires) / len(points)
    mean_seconds = sum(seconds) / len(points)
    spread = sum((w - mean_wire) ** 2 for w in wires)
    per_request = sum((w - mean_wire) * (s - mean_seconds) for w, s in points) / spread
    base = mean_seconds - per_request * mean_wire
    if per_request <= 0 or base <= 0:
        return quantile, None
    return min(quantile, base), base / per_request


def _first_int(value: str | None) -> int | None:
    """`RateLimit-*` headers may carry a policy list (`700, 700;w=60`); the first number is the value."""
    if not value:
        return None
    head = value.split(",", 1)[0].split(";", 1)[0].strip()
    try:
        return int(float(head))
    except ValueError:
        return None


class GovernorRegistry:
    """Governors by endpoint key, created on first use; one registry per source instance."""

    def __init__(self, share: float) -> None:
        self.share = share
        self._governors: dict[str, Governor] = {}
        self._lock = threading.Lock()

    def get(self, key: str, tier: Tier) -> Governor:
        with self._lock:
            governor = self._governors.get(key)
            if governor is None:
                governor = self._governors[key] = Governor(tier, self.share)
            return governor

    def latency(self) -> float | None:
        """The latency other endpoints of the account have seen: a better first guess than a constant."""
        with self._lock:
            known = [g.latency for g in self._governors.values() if g.latency is not None]
        return sum(known) / len(known) if known else None
