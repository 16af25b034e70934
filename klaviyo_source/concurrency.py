"""Runs many serial cursor chains at once, as many as the API's pace asks for, in bounded memory.

A Klaviyo cursor chain is serial (page N+1 needs page N's `links.next`), so speed comes from running
several chains over disjoint windows or parents. How many requests are worth having in flight is not a
constant: it is the rate Klaviyo allows times the time an answer takes (`Governor.inflight`), so the 8
chains that ride the limit at 100 ms per answer use a tenth of it at one second. `Slots` holds an
endpoint to that number, to the user's cap and to the run's memory budget for answers in hand; `TaskPool`
runs the chains, a thread each, and whenever a slot is free and no chain waits it asks its `steal` hook for
more work (windows.Plan splits off the largest remainder of a window). A plain executor cannot express
tasks that create tasks or a pool that grows and shrinks with the pace, hence this module. Results pass
through a bounded queue, so a slow consumer (dlt writing files) holds the workers back instead of letting
pages pile up in memory.
"""

from __future__ import annotations

import contextlib
import gc
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Generic, TypeVar

from klaviyo_source.errors import RunCancelled

T = TypeVar("T")

Task = Callable[["TaskPool[T]"], Iterable[T]]

_DONE = object()

# Parsed pages are trees of thousands of dicts, freed by reference counting, never cyclic. With Python's
# default first-generation threshold (700) every page triggers dozens of young collections that promote
# the pages other threads hold, and full collections then ran every couple of pages: measured at 40% of
# extraction time for 300k events. While pools run, young collections wait for this many allocations.
YOUNG_GC_THRESHOLD = 50_000
# Answers a run may hold at once (requests in flight and pages not yet handed to dlt), all endpoints
# together. A 1,000-event page is about 0.8 MB of JSON and as much again while it becomes Arrow, so this
# allows about 120 such pages: 60 pages a second (Klaviyo's steady limit for events) at 2 s per answer.
MEMORY_BUDGET = 192 * 2**20
RESULTS_BUFFERED = 16  # pages handed over but not yet taken by the consumer
# Answers in hand that wait for the CPU (or for the consumer) before an endpoint sends no more requests, at
# least: when our side is the bottleneck, more requests in flight only hold more pages in memory. An
# endpoint's `patience` raises it to what the CPU gets through while a new request is answered (see
# Governor.patience); bodies wait in their sockets meanwhile, and the memory budget bounds the slots anyway.
ANSWERS_WAITING = 4


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

# How often a consumer waiting for pages looks at the run's cancel signal, and how long a cancelled pool
# waits for workers still inside a request before leaving them (daemon threads that check the signal
# before their next request, so they end on their own).
CANCEL_POLL = 0.1
CANCEL_PATIENCE = 1.0


class Cancel:
    """A run-wide stop signal: the first table that fails for good sets it, and every chain of every table
    checks it (while waiting for pages, before each request, in retry and rate-limit waits). Without it a
    failed run kept retrying other tables for minutes after its error was known."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.cause: BaseException | None = None

    def set(self, cause: BaseException) -> None:
        if not self._event.is_set():
            self.cause = cause
            self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()

    def check(self) -> None:
        """Raises RunCancelled if the run was cancelled."""
        if self._event.is_set():
            raise RunCancelled(self.cause)

    def sleep(self, seconds: float) -> None:
        """time.sleep that ends at once, raising RunCancelled, when the run is cancelled."""
        if self._event.wait(seconds):
            raise RunCancelled(self.cause)


class Budget:
    """Bytes of answers a run may hold at once, shared by the slots of every endpoint it reads."""

    def __init__(self, total: int = MEMORY_BUDGET) -> None:
        self.total = total
        self.held = 0
        self.cond = threading.Condition()


class Slots:
    """Steps (one request and its page) of one endpoint in progress at once, shared by all its pools.

    The number follows the endpoint's pace (`target`, re-read on every decision, so it grows when answers
    turn out slow and shrinks after a 429 or when the minute's budget runs low), never above the user's
    `cap`, and each step reserves an answer's typical size from the run's memory budget.
    """

    def __init__(
        self,
        target: Callable[[], int],
        page_bytes: Callable[[], float],
        budget: Budget,
        cap: int | None = None,
        waiting: Callable[[], int] = lambda: 0,
        patience: Callable[[], int] = lambda: ANSWERS_WAITING,
    ) -> None:
        self._target = target
        self._page_bytes = page_bytes
        self._waiting = waiting  # answers in hand waiting for the CPU
        self._patience = patience  # how many of them may wait before the endpoint asks for more
        self.budget = budget
        self.cap = cap
        self.busy = 0
        self.queued = 0  # threads waiting for a slot: they take the next ones, before any new work is split off
        self.stalled = 0  # steps whose page waits for the consumer to take it
        self.peak = 0  # most steps in progress at once, for progress reports and benchmarks

    def limit(self) -> int:
        target = self._target()
        if self.cap is not None:
            target = min(target, self.cap)
        return max(1, min(target, int(self.budget.total // max(self._page_bytes(), 1.0))))

    def free(self) -> int:
        """Slots neither taken nor promised to a thread waiting for one."""
        with self.budget.cond:
            return 0 if self._backlogged() else self.limit() - self.busy - self.queued

    def _backlogged(self) -> bool:
        """Our side is the bottleneck: pages are in hand that the CPU or the consumer has not got to yet."""
        return self._waiting() + self.stalled >= max(ANSWERS_WAITING, self._patience())

    def acquire(self, stop: threading.Event) -> int | None:
        """Waits for a slot; the bytes it reserved, or None when `stop` was set meanwhile."""
        size = int(self._page_bytes())
        cond = self.budget.cond
        queued = False
        with cond:
            try:
                while not stop.is_set():
                    fits = self.budget.held + size <= self.budget.total or self.busy == 0
                    # a thread that just released its slot queues behind those already waiting (another
                    # parent's first windows) instead of taking the slot back at once
                    turn = queued or self.queued == 0
                    if fits and turn and self.busy < self.limit() and not self._backlogged():
                        self.busy += 1
                        self.budget.held += size
                        self.peak = max(self.peak, self.busy)
                        return size
                    if not queued:
                        self.queued += 1
                        queued = True
                    # the target also moves with time (a new minute's budget), not only on release
                    cond.wait(0.1)
            finally:
                if queued:
                    self.queued -= 1
        return None

    def release(self, size: int) -> None:
        with self.budget.cond:
            self.busy -= 1
            self.budget.held -= size
            self.budget.cond.notify_all()


class TaskPool(Generic[T]):
    """Runs tasks, one thread each (at most `workers` threads); `results()` yields what they produce.

    A task is a generator; each item it yields is one step (a page). With `slots`, every step holds a slot
    of its endpoint until its item is handed over, and whenever the slots allow more steps than this pool's
    threads are ready to take, `steal` is asked for another task (None: nothing worth splitting). With
    `cancel`, `results()` raises RunCancelled as soon as the run is cancelled (another table failed).
    """

    def __init__(
        self,
        workers: int,
        slots: Slots | None = None,
        steal: Callable[[], Task[T] | None] | None = None,
        buffered: int = RESULTS_BUFFERED,
        cancel: Cancel | None = None,
    ) -> None:
        self.workers = max(1, workers)
        self.slots = slots
        self._steal = steal
        self._cancel = cancel
        self._pending: deque[Task[T]] = deque()
        self._threads = 0  # alive
        self._spawned = 0  # ever started
        self._alive: set[threading.Thread] = set()
        self._holding = 0  # threads inside a step (holding a slot)
        self._acquiring = 0  # threads asking for a slot (counted in the slots' `queued` once they wait)
        self._cond = threading.Condition()
        self._out: queue.Queue[object] = queue.Queue(maxsize=buffered)
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._started = False

    def submit(self, task: Task[T]) -> None:
        with self._cond:
            self._pending.append(task)
        if self._started:
            self._grow()

    def results(self, tasks: Iterable[Task[T]]) -> Iterator[T]:
        for batch in self.batches(tasks):
            yield from batch

    def batches(self, tasks: Iterable[Task[T]]) -> Iterator[list[T]]:
        """What the tasks produce, as lists of everything ready at the moment (at least one item each).

        A consumer that falls behind gets its backlog in one piece, so what it does per item, it does less often.
        """
        with _gc_threshold.raised():
            yield from self._batches(tasks)

    def _batches(self, tasks: Iterable[Task[T]]) -> Iterator[list[T]]:
        with self._cond:
            self._pending.extend(tasks)
            self._started = True
        self._grow()
        ended = 0  # threads whose final marker arrived: everything they produced came before it
        try:
            finished = False
            while not finished:
                batch: list[T] = []
                item = self._next()
                while True:
                    if item is _DONE:
                        ended += 1
                        with self._cond:
                            last = ended == self._spawned
                            finished = last and (not self._pending or self._stop.is_set())
                        if last and not finished:  # a task was added as the last thread left: start one for it
                            self._grow()
                    else:
                        batch.append(item)  # type: ignore[arg-type]
                    if finished:
                        break
                    try:
                        item = self._out.get_nowait()
                    except queue.Empty:
                        break
                if batch:
                    yield batch
            if self._error is not None:
                raise self._error
        finally:
            self._stop.set()
            with self._cond:
                self._cond.notify_all()
            self._drain()

    # --- threads ------------------------------------------------------------------------------------

    def _grow(self) -> None:
        """Starts threads for waiting tasks, or steals work, while the slots allow more steps than run."""
        while not self._stop.is_set():
            with self._cond:
                if self._threads >= self.workers:
                    return
                ready = self._threads - self._holding - self._acquiring  # started, about to ask for a slot
                pending = bool(self._pending)
                if not pending and self._threads == 0 and self._steal is None:
                    return
                # A planned task gets its thread at once, to queue for a slot (see Slots.acquire): a pool that
                # started threads only as slots came free lost every slot to the chains of pools started before.
                # No more threads queue than the endpoint has slots, but every pool has one.
                planned = len(self._pending) > ready and (
                    self._threads == 0 or self.slots is None or self.slots.queued < self.slots.limit())
            if not planned:
                free = self.slots.free() if self.slots is not None else self.workers - ready
                if free <= ready:
                    return
            if not pending:
                task = self._steal() if self._steal is not None else None
                if task is None:
                    return
                with self._cond:
                    self._pending.append(task)
            thread = threading.Thread(target=self._work, daemon=True, name=f"klaviyo-{id(self) % 10_000}")
            with self._cond:
                if self._stop.is_set():  # checked with the count, so a draining consumer sees every thread
                    return
                self._threads += 1
                self._spawned += 1
                self._alive.add(thread)
            thread.start()

    def _next(self) -> object:
        """The next result or worker marker; raises RunCancelled once the run is cancelled."""
        if self._cancel is None:
            return self._out.get()
        while True:
            self._cancel.check()
            try:
                return self._out.get(timeout=CANCEL_POLL)
            except queue.Empty:
                continue

    def _work(self) -> None:
        try:
            while not self._stop.is_set():
                with self._cond:
                    task = self._pending.popleft() if self._pending else None
                    others_ready = self._threads - self._holding - self._acquiring - 1
                if task is None:
                    # this thread's slot is free now: take the rest of a large window, unless others will
                    if self._steal is None or (self.slots is not None and self.slots.free() <= others_ready):
                        return
                    task = self._steal()
                    if task is None:
                        return
                self._run(task)
        except BaseException as exc:  # handed to the consumer, which re-raises it
            if self._error is None:
                self._error = exc
            self._stop.set()
        finally:
            with self._cond:
                self._threads -= 1
                self._cond.notify_all()  # a draining consumer sees it at once
            self._put(_DONE, force=True)

    def _run(self, task: Task[T]) -> None:
        items = iter(task(self))
        while not self._stop.is_set():
            with self._cond:
                self._acquiring += 1
            try:
                size = self.slots.acquire(self._stop) if self.slots is not None else 0
            finally:
                with self._cond:
                    self._acquiring -= 1
            if size is None:
                return
            with self._cond:
                self._holding += 1
            # Another thread queues for the next free slot: otherwise a pool whose threads all wait here grows
            # only when one of its own steps ends, one round trip later, while other pools of the endpoint
            # (the members of the parents listed before) take every slot that frees meanwhile.
            self._grow()
            try:
                try:
                    item = next(items)
                except StopIteration:
                    return
                if not self._put(item):
                    return
            finally:
                with self._cond:
                    self._holding -= 1
                if self.slots is not None:
                    self.slots.release(size)
            self._grow()

    def _put(self, item: object, force: bool = False) -> bool:
        try:
            self._out.put_nowait(item)
            return True
        except queue.Full:
            pass
        self._stall(+1)
        try:
            while force or not self._stop.is_set():
                try:
                    self._out.put(item, timeout=0.2)
                    return True
                except queue.Full:
                    if force and self._stop.is_set():
                        self._drop_one()
            return False
        finally:
            self._stall(-1)

    def _stall(self, change: int) -> None:
        if self.slots is not None:
            with self.slots.budget.cond:
                self.slots.stalled += change
                if change < 0:
                    self.slots.budget.cond.notify_all()

    def _drop_one(self) -> None:
        """On shutdown nobody reads results any more; make room for a worker's final marker."""
        with contextlib.suppress(queue.Empty):
            self._out.get_nowait()

    def _drain(self) -> None:
        """Waits for every thread to end (each leaves a marker, for which room is made); a cancelled run
        leaves threads still inside a request after CANCEL_PATIENCE (they check the signal before the next)."""
        deadline: float | None = None
        while True:
            with self._cond:
                running = self._threads
                threads = list(self._alive)
            if not running:  # every thread was started and has left its loop: wait for the last steps
                for t in threads:
                    t.join()
                return
            if self._cancel is not None and self._cancel.is_set():
                deadline = deadline or time.monotonic() + CANCEL_PATIENCE
                if time.monotonic() > deadline:
                    return
            self._drop_one()
            # One short wait per sweep, not one per thread: with a hundred threads inside a request, a
            # join(0.05) each kept a cancelled run here for 5 s, past dlt's 2 s pool shutdown (its ERROR line).
            with self._cond:
                self._cond.wait(0.05)
