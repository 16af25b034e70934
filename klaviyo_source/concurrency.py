"""Runs many serial cursor chains at once and streams their pages out in bounded memory.

A Klaviyo cursor chain is serial (page N+1 needs page N's `links.next`), so speed comes from running
several chains over disjoint windows or parents. Tasks here may add tasks (a window that turns out to be
large splits its remainder while workers are idle), which a plain executor.map cannot express; results
pass through a bounded queue so a slow consumer (dlt writing files) holds the workers back instead of
letting pages pile up in memory.
"""

from __future__ import annotations

import contextlib
import gc
import queue
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")

Task = Callable[["TaskPool[T]"], Iterable[T]]

_DONE = object()

# Parsed pages are trees of thousands of dicts, freed by reference counting, never cyclic. With Python's
# default first-generation threshold (700) every page triggers dozens of young collections that promote
# the pages other threads hold, and full collections then ran every couple of pages: measured at 40% of
# extraction time for 300k events. While pools run, young collections wait for this many allocations.
YOUNG_GC_THRESHOLD = 50_000


class _GcThreshold:
    """Raises gc's first threshold while any pool runs and restores the caller's when the last one ends."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._users = 0
        self._saved: tuple[int, int, int] = gc.get_threshold()

    @contextlib.contextmanager
    def raised(self) -> Iterator[None]:
        with self._lock:
            if self._users == 0:
                self._saved = gc.get_threshold()
                young, *older = self._saved
                if young:  # 0 means the caller disabled automatic collection: leave it so
                    gc.set_threshold(max(young, YOUNG_GC_THRESHOLD), *older)
            self._users += 1
        try:
            yield
        finally:
            with self._lock:
                self._users -= 1
                if self._users == 0:
                    gc.set_threshold(*self._saved)


_gc_threshold = _GcThreshold()


class TaskPool(Generic[T]):
    """`workers` threads run tasks; `results()` yields what they produce, in completion order."""

    def __init__(self, workers: int, buffered: int | None = None) -> None:
        self.workers = max(1, workers)
        self._pending: deque[Task[T]] = deque()
        self._running = 0
        self._cond = threading.Condition()
        self._out: queue.Queue[object] = queue.Queue(maxsize=buffered or 2 * self.workers)
        self._stop = threading.Event()
        self._error: BaseException | None = None

    def submit(self, task: Task[T]) -> None:
        with self._cond:
            self._pending.append(task)
            self._cond.notify()

    def idle(self) -> int:
        """Workers that would pick up a new task right now: a chain may split when this is positive."""
        with self._cond:
            return self.workers - self._running - len(self._pending)

    def results(self, tasks: Iterable[Task[T]]) -> Iterator[T]:
        with _gc_threshold.raised():
            yield from self._results(tasks)

    def _results(self, tasks: Iterable[Task[T]]) -> Iterator[T]:
        for task in tasks:
            self.submit(task)
        threads = [threading.Thread(target=self._work, daemon=True, name=f"klaviyo-{i}") for i in range(self.workers)]
        for thread in threads:
            thread.start()
        finished = 0
        try:
            while finished < len(threads):
                item = self._out.get()
                if item is _DONE:
                    finished += 1
                    continue
                yield item  # type: ignore[misc]
            if self._error is not None:
                raise self._error
        finally:
            self._stop.set()
            with self._cond:
                self._cond.notify_all()
            self._drain(threads)

    def _work(self) -> None:
        try:
            while not self._stop.is_set():
                with self._cond:
                    while not self._pending and self._running and not self._stop.is_set():
                        self._cond.wait(0.5)
                    if self._stop.is_set() or not self._pending:
                        self._cond.notify_all()  # nothing left anywhere: let the others finish too
                        return
                    task = self._pending.popleft()
                    self._running += 1
                try:
                    for item in task(self):
                        if not self._put(item):
                            return
                except BaseException as exc:  # handed to the consumer, which re-raises it
                    if self._error is None:
                        self._error = exc
                    self._stop.set()
                    return
                finally:
                    with self._cond:
                        self._running -= 1
                        self._cond.notify_all()
        finally:
            self._put(_DONE, force=True)

    def _put(self, item: object, force: bool = False) -> bool:
        while force or not self._stop.is_set():
            try:
                self._out.put(item, timeout=0.2)
                return True
            except queue.Full:
                if force and self._stop.is_set():
                    self._drop_one()
        return False

    def _drop_one(self) -> None:
        """On shutdown nobody reads results any more; make room for a worker's final marker."""
        with contextlib.suppress(queue.Empty):
            self._out.get_nowait()

    def _drain(self, threads: list[threading.Thread]) -> None:
        while any(t.is_alive() for t in threads):
            self._drop_one()
            for t in threads:
                t.join(0.05)
