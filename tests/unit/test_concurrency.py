from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from klaviyo_source.concurrency import TaskPool


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
