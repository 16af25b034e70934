from __future__ import annotations

import gc
import threading
import time
from collections.abc import Iterator

import pytest

from klaviyo_source.concurrency import YOUNG_GC_THRESHOLD, Budget, Cancel, Slots, Task, TaskPool
from klaviyo_source.errors import RunCancelled


def test_every_result_of_every_task_once_including_tasks_added_on_the_way() -> None:
    def task(n: int):
        def run(pool: TaskPool[int]) -> Iterator[int]:
            if n < 40:
                pool.submit(task(n * 2))
                pool.submit(task(n * 2 + 1))
            yield n

        return run

    pool: TaskPool[int] = TaskPool(4)
    assert sorted(pool.results([task(1)])) == list(range(1, 80))


def test_error_in_a_task_reaches_the_consumer() -> None:
    def bad(pool: TaskPool[int]) -> Iterator[int]:
        yield 1
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        list(TaskPool[int](2).results([bad]))


def test_closing_early_stops_the_workers() -> None:
    stop = threading.Event()

    def endless(pool: TaskPool[int]) -> Iterator[int]:
        n = 0
        while not stop.is_set():
            n += 1
            yield n

    results = TaskPool[int](3).results([endless, endless])
    assert next(results) >= 1
    results.close()  # returns only once every worker has finished
    stop.set()
    assert not any(t.name.startswith("klaviyo-") and t.is_alive() for t in threading.enumerate())


def test_young_gc_threshold_is_raised_while_pools_run_and_restored_after_the_last() -> None:
    before = gc.get_threshold()
    seen: list[int] = []

    def inner(pool: TaskPool[int]) -> Iterator[int]:
        seen.append(gc.get_threshold()[0])
        yield 1

    def outer(pool: TaskPool[int]) -> Iterator[int]:
        yield from TaskPool[int](1).results([inner])  # a pool inside a pool (parallel dlt resources)
        seen.append(gc.get_threshold()[0])  # the inner pool ended, the outer one still runs

    assert list(TaskPool[int](1).results([outer])) == [1]
    assert seen == [max(before[0], YOUNG_GC_THRESHOLD)] * 2
    assert gc.get_threshold() == before


def test_disabled_young_collections_stay_disabled() -> None:
    before = gc.get_threshold()
    gc.set_threshold(0)
    try:
        def task(pool: TaskPool[int]) -> Iterator[int]:
            yield gc.get_threshold()[0]

        assert list(TaskPool[int](1).results([task])) == [0]
    finally:
        gc.set_threshold(*before)


class Pace:
    """A target the test moves, and a record of how many steps ran at once.

    Each step holds until the test's expected peak has been seen (5 s at most), then a little longer: the peak
    then depends on what the pool admits, not on how fast a loaded machine starts threads (a fixed sleep
    missed the peak on a busy CI machine). A pool admitting more than expected still shows it."""

    def __init__(self, target: int) -> None:
        self.target = self.expect = target
        self.changed = threading.Condition()
        self.running = self.most = 0

    def step(self) -> None:
        with self.changed:
            self.running += 1
            self.most = max(self.most, self.running)
            self.changed.notify_all()
            self.changed.wait_for(lambda: self.most >= self.expect, timeout=5)
        time.sleep(0.03)  # time for a thread admitted beyond the expected peak to show up
        with self.changed:
            self.running -= 1

    def expecting(self, peak: int) -> None:
        self.most, self.expect = 0, peak


def test_steps_in_progress_follow_the_target_and_the_memory_budget() -> None:
    pace = Pace(target=3)
    slots = Slots(lambda: pace.target, lambda: 1000.0, Budget(total=10_000))

    def chain(pool: TaskPool[int]) -> Iterator[int]:
        for n in range(5):
            pace.step()
            yield n

    assert len(list(TaskPool[int](20, slots).results([chain] * 12))) == 60
    assert pace.most == 3
    pace.target = 50
    pace.expecting(10)  # the budget holds ten answers of 1,000 bytes
    assert len(list(TaskPool[int](20, slots).results([chain] * 12))) == 60
    assert pace.most == 10
    capped = Slots(lambda: pace.target, lambda: 1000.0, Budget(total=10_000), cap=2)  # the user's cap
    pace.expecting(2)
    assert len(list(TaskPool[int](20, capped).results([chain] * 4))) == 20
    assert pace.most == 2


def test_free_slots_are_filled_with_stolen_work() -> None:
    pace = Pace(target=4)
    slots = Slots(lambda: pace.target, lambda: 1.0, Budget())
    work = list(range(40))
    lock = threading.Lock()

    def piece(pool: TaskPool[int]) -> Iterator[int]:
        while True:
            with lock:
                if not work:
                    return
                n = work.pop()
            pace.step()
            yield n

    def steal() -> Task[int] | None:
        with lock:
            return piece if len(work) > 2 else None

    results = TaskPool[int](16, slots, steal).results([piece])  # one chain to start with
    assert sorted(results) == list(range(40))
    assert pace.most == 4  # the free slots were used, and never more than they allow


def test_a_cancelled_run_ends_a_pool_waiting_for_pages_with_the_cause() -> None:
    """A chain stuck in a long wait (a retry, a rate-limit pause) is cut short when another table fails."""
    cancel = Cancel()
    waiting = threading.Event()

    def slow(pool: TaskPool[int]) -> Iterator[int]:
        waiting.set()
        cancel.sleep(600)  # raises RunCancelled as soon as the run is cancelled
        yield 1

    failure = RuntimeError("the events table failed")
    results = TaskPool[int](2, cancel=cancel).results([slow])
    threading.Timer(0.0, lambda: (waiting.wait(), cancel.set(failure))).start()
    with pytest.raises(RunCancelled) as caught:
        next(results)
    assert caught.value.__cause__ is failure  # whoever reports the run reports the real cause
    assert not any(t.name.startswith("klaviyo-") and t.is_alive() for t in threading.enumerate())


def test_the_first_cause_is_kept() -> None:
    cancel = Cancel()
    first, second = ValueError("first"), ValueError("second")
    cancel.set(first)
    cancel.set(second)
    with pytest.raises(RunCancelled) as caught:
        cancel.check()
    assert caught.value.__cause__ is first


def test_batches_hand_over_everything_ready_at_once_and_each_item_once() -> None:
    finished = threading.Semaphore(0)
    taken = threading.Event()  # the consumer has its first batch: the other items come after it

    def task(n: int):
        def run(pool: TaskPool[int]) -> Iterator[int]:
            if n == 0:
                yield 0
            assert taken.wait(timeout=30)
            yield from range(n * 10 + (n == 0), n * 10 + 10)
            finished.release()  # runs once the last item is handed over

        return run

    pool: TaskPool[int] = TaskPool(4, buffered=100)
    batches = pool.batches([task(n) for n in range(4)])
    first = next(batches)
    taken.set()
    for _ in range(4):
        assert finished.acquire(timeout=30)
    rest = list(batches)
    assert first == [0]
    assert len(rest) == 1  # all that was ready, in one piece
    assert sorted(first + rest[0]) == list(range(40))


def test_pages_of_one_table_reach_dlt_joined_other_items_at_once() -> None:
    import pyarrow as pa

    from klaviyo_source import resources

    page = pa.table({"id": ["a", "b"]})
    other = pa.table({"id": ["c"], "n": [1]})  # other columns: another table
    related = {"not": "a table"}
    joiner = resources.Joiner()
    assert list(joiner.add([page, related, page])) == [related]  # pages wait for more
    out = list(joiner.add([other]))  # a page of other columns: the ones before leave first, joined
    assert [t.num_rows for t in out] == [4] and out[0].column("id").to_pylist() == ["a", "b", "a", "b"]
    assert [t.num_rows for t in joiner.flush()] == [1]
    assert list(joiner.flush()) == []
    big = pa.table({"id": ["x"] * resources.JOINED_ROWS})
    assert [t.num_rows for t in joiner.add([big])] == [resources.JOINED_ROWS]  # enough rows: handed on at once
    parent = resources.Joiner(1)  # a parent's pages: its children's reads start from them
    assert [t.num_rows for t in parent.add([page])] == [2]
