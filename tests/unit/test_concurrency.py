from __future__ import annotations

import gc
import threading
from collections.abc import Iterator

import pytest

from klaviyo_source.concurrency import YOUNG_GC_THRESHOLD, TaskPool


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
