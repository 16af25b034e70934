"""The governor admits what Klaviyo's windows allow, and no more (a fake clock: no sleeping)."""

from __future__ import annotations

import itertools
import math
from collections import Counter

import pytest

from klaviyo_source import rate_limit
from klaviyo_source.endpoints import Tier
from klaviyo_source.rate_limit import Governor


class FakeClock:
    def __init__(self, start: float) -> None:
        self.now = start
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock(1_000_020.0)  # 20 s into a minute
    monkeypatch.setattr(rate_limit.time, "sleep", fake.sleep)
    return fake


def admitted_per_window(governor: Governor, clock: FakeClock, requests: int) -> dict[int, int]:
    per_second: dict[int, int] = {}
    for _ in range(requests):
        governor.acquire()
        per_second[int(clock.now)] = per_second.get(int(clock.now), 0) + 1
    return per_second


def test_burst_window_caps_each_second(clock: FakeClock) -> None:
    governor = Governor(Tier(burst=3, steady=100), clock=clock)
    counts = admitted_per_window(governor, clock, 10)
    assert max(counts.values()) == 3 and sum(counts.values()) == 10


def test_steady_window_caps_each_minute(clock: FakeClock) -> None:
    governor = Governor(Tier(burst=50, steady=60), clock=clock)
    per_minute: dict[int, int] = {}
    for _ in range(150):
        governor.acquire()
        per_minute[int(clock.now // 60)] = per_minute.get(int(clock.now // 60), 0) + 1
    assert max(per_minute.values()) == 60
    assert sum(per_minute.values()) == 150


def test_share_leaves_room_for_other_integrations(clock: FakeClock) -> None:
    governor = Governor(Tier(burst=10, steady=100), share=0.5, clock=clock)
    assert (governor.burst_cap, governor.steady_cap) == (5, 50)


def test_remaining_header_lowers_the_budget(clock: FakeClock) -> None:
    governor = Governor(Tier(burst=100, steady=100), clock=clock)
    governor.acquire()
    governor.observe({"RateLimit-Limit": "100", "RateLimit-Remaining": "2", "RateLimit-Reset": "40"})
    start = clock.now
    governor.acquire()
    governor.acquire()
    assert clock.now < start + 0.1  # the two the server still allows (paced through the second)
    governor.acquire()
    assert clock.now >= start + 39  # the third waits for the server's window to reset


def test_retry_after_stops_every_caller(clock: FakeClock) -> None:
    governor = Governor(Tier(burst=100, steady=1000), clock=clock)
    governor.throttled(7)
    start = clock.now
    governor.acquire()
    assert clock.now >= start + 7


def test_header_policy_lists_are_parsed() -> None:
    assert rate_limit._first_int("700, 700;w=60") == 700
    assert rate_limit._first_int("") is None


@pytest.mark.parametrize("delay", [0.0, 0.1, 0.25, 0.5, 0.9, 1.0, 1.7])
def test_no_arrival_second_gets_more_than_the_burst_whatever_the_delay(clock: FakeClock, delay: float) -> None:
    # Klaviyo counts a request when it arrives, some unknown time after it is sent (varying by up to the
    # jitter): whatever that delay, no clock second of arrivals may hold more than the burst allowance.
    governor = Governor(Tier(burst=5, steady=1000), clock=clock)
    sent = []
    for k in range(60):
        clock.now += 0.013 * (k % 7)  # requests come in unevenly
        governor.acquire()
        sent.append(clock.now)
    for spread in (0.0, governor.jitter * 0.9):
        arrivals = [t + delay + spread * (k % 2) for k, t in enumerate(sent)]
        per_second = Counter(math.floor(t) for t in arrivals)
        assert max(per_second.values()) <= 5, (spread, per_second)
    # and the allowance is used: 60 requests take 12 sliding windows, evenly paced through each
    assert sent[-1] - sent[0] < 12 * (1 + governor.jitter)


def test_requests_are_paced_through_the_window(clock: FakeClock) -> None:
    # A burst sent at once arrives at once, and the server's clock second it lands in then depends on how its
    # threads happen to be scheduled; spread evenly, arrivals vary far less (measured on the sandbox at 2 s per
    # answer: 4 of 452 profile requests answered 429 with bursts, none paced).
    governor = Governor(Tier(burst=4, steady=1000), clock=clock)
    sent = []
    for _ in range(8):
        governor.acquire()
        sent.append(clock.now)
    gaps = [b - a for a, b in itertools.pairwise(sent)]
    assert min(gaps) >= (1 + governor.jitter) / 4 - 1e-9


def test_the_jitter_allowance_follows_the_latency_and_doubles_with_each_429(clock: FakeClock) -> None:
    governor = Governor(Tier(burst=2, steady=1000), clock=clock)
    assert governor.jitter == rate_limit.JITTER_PER_SECOND * rate_limit.DEFAULT_LATENCY  # no answer yet
    for _ in range(20):
        answer(governor, 2.0)
    assert governor.jitter == pytest.approx(2.0 * rate_limit.JITTER_PER_SECOND)
    for _ in range(80):
        answer(governor, 0.05)
    assert governor.jitter == rate_limit.MIN_JITTER
    governor.throttled(0)
    assert governor.jitter == 2 * rate_limit.MIN_JITTER
    for _ in range(20):
        governor.throttled(0)
    assert governor.jitter == rate_limit.MAX_JITTER


def test_margin_follows_the_time_requests_take(clock: FakeClock) -> None:
    governor = Governor(Tier(burst=100, steady=1000), clock=clock)
    for _ in range(100):
        governor.acquire()
        clock.now += 0.05
        governor.observe({})
    assert 0.05 <= governor.margin < 0.06
    governor.acquire()
    clock.now += 3.0  # a slow answer: the margin grows, but never past a fraction of the burst window
    governor.observe({})
    assert governor.margin == rate_limit.MAX_MARGIN


def answer(governor: Governor, seconds: float, wire: int = 1) -> None:
    governor.returned(seconds, governor.sent() + wire - 1)


def test_requests_in_flight_are_the_allowed_rate_times_the_latency(clock: FakeClock) -> None:
    governor = Governor(Tier(burst=75, steady=750), clock=clock)
    assert governor.inflight() == 75 + 1  # before any answer: a second per answer is assumed
    assert governor.inflight(latency=0.2) == 15 + 1  # or what other endpoints have seen
    for _ in range(20):
        answer(governor, 2.0)
        governor.sized(90_000)
    assert governor.inflight() == 150 + 1  # one more, so a request is already under way when one is answered
    for _ in range(20):
        answer(governor, 0.1)
    assert governor.inflight() == 8 + 1
    assert governor.page_bytes == pytest.approx(90_000)


def test_a_few_slow_answers_do_not_raise_the_latency(clock: FakeClock) -> None:
    # answers that waited for our own busy CPU look slow; requests in flight should not grow for them
    governor = Governor(Tier(burst=75, steady=750), clock=clock)
    for seconds in [1.0] * 30 + [6.0] * 8:
        answer(governor, seconds)
    assert governor.latency == 1.0


def test_requests_in_flight_never_exceed_what_is_left_of_the_minute(clock: FakeClock) -> None:
    governor = Governor(Tier(burst=75, steady=750), clock=clock)
    answer(governor, 1.0)
    governor.acquire()
    governor.observe({"RateLimit-Limit": "750", "RateLimit-Remaining": "10", "RateLimit-Reset": "30"})
    assert governor.inflight() == 10 + 1  # others used the rest of the account's quota
    clock.now += 31  # a new minute: the whole budget again
    assert governor.inflight() == 75 + 1


def test_a_429_halves_requests_in_flight_and_answers_win_them_back(clock: FakeClock) -> None:
    governor = Governor(Tier(burst=100, steady=10_000), clock=clock)
    answer(governor, 1.0)
    before = governor.inflight()
    governor.throttled(1)
    governor.throttled(1)
    assert governor.inflight() == 25 + 1 and governor.throttles == 2
    for _ in range(100):
        answer(governor, 1.0)
    assert governor.inflight() == before


def test_answers_that_queue_hold_requests_in_flight_to_where_latency_would_double(clock: FakeClock) -> None:
    # a server one client can saturate: each request on the wire adds 10 ms to every answer
    governor = Governor(Tier(burst=350, steady=3500), clock=clock)
    for wire in [100] * 16 + [60] * 16 + [20] * 16 + [5] * 16:
        answer(governor, 0.01 + 0.01 * wire, wire)
    assert governor.latency == pytest.approx(0.01)
    assert governor.knee == pytest.approx(1.0)
    assert governor.inflight() == 2 + 1  # not 350 requests a second x the 1 s the queued answers took


def test_latency_that_does_not_grow_with_the_load_sets_no_knee(clock: FakeClock) -> None:
    governor = Governor(Tier(burst=75, steady=750), clock=clock)
    for wire in [70] * 20 + [10] * 20 + [40] * 24:
        answer(governor, 1.0 + (0.001 if wire % 20 else 0.0), wire)
    assert governor.knee is None or governor.knee > 1000
    assert governor.inflight() == 75 + 1


def test_answers_may_wait_for_the_cpu_as_long_as_a_new_request_takes(clock: FakeClock) -> None:
    governor = Governor(Tier(burst=350, steady=3500), clock=clock)
    assert governor.patience(2) == 1  # nothing known yet: the caller's minimum applies
    for _ in range(20):
        answer(governor, 1.0)
        governor.decoded(0.025)
    assert governor.patience(2) == 80  # two decoders get through 80 answers while a new one is on its way
    for _ in range(64):
        answer(governor, 0.1)
    assert governor.patience(2) == 8
    for _ in range(100):
        governor.decoded(1.0)  # a slow CPU: no answer needs to wait for it
    assert governor.patience(2) == 1


def test_the_last_round_counts_only_where_klaviyos_rate_sets_the_pace(clock: FakeClock) -> None:
    governor = Governor(Tier(burst=75, steady=750), clock=clock)
    assert governor.last_round_pages() is None  # nothing answered yet
    for _ in range(20):
        answer(governor, 1.0)
        governor.decoded(0.01)  # we read 100 answers a second: the 75 a second Klaviyo allows set the pace
    rounds = governor.last_round_pages()
    assert rounds is not None and 70 < rounds < 75  # the burst less its jitter allowance, times 1 s
    for _ in range(100):
        governor.decoded(0.05)  # 20 a second: our CPU sets the pace, splitting would only queue answers
    assert governor.last_round_pages() is None
