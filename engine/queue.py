"""Queue: one per side. A run loop drives rounds (gate, pull, seal, advance); a worker pool leases tasks.

A task is in exactly one place: the bounded pending buffer, the delayed heap (waiting out a backoff),
or in flight with a lease deadline. An expired lease returns the task; a stale report is dropped.
"""

from __future__ import annotations

import heapq
import itertools
import random
import threading
import time
from collections import deque
from typing import Callable, Protocol

from engine.coordinator import QueueCoordinator
from engine.model import Task, display
from engine.settings import Settings
from engine.threads import ThreadLimit, start_thread


class Outcome:
    """What a worker reports. `children` carry discoveries; `error` a failure's reason."""

    __slots__ = ("ok", "error", "transient", "children", "kind", "bytes", "stop_run")

    def __init__(self, ok=True, error=None, transient=False, children=(), kind="", bytes=0, stop_run=False):
        self.ok, self.error, self.transient = ok, error, transient
        self.children, self.kind, self.bytes, self.stop_run = children, kind, bytes, stop_run


class Mode(Protocol):
    name: str
    gated: bool  # does the coordinator gate this mode's rounds

    def first_round(self) -> int | None: ...

    def begin_round(self, r: int) -> int:
        """Make round r's level ready; return how many tasks it holds (0: nothing to do)."""

    def ends_when_empty(self, r: int) -> bool:
        """Does a round with nothing to do end the mode (traversal), or is it skipped (copy)?"""

    def take(self, r: int, limit: int) -> list[Task]:
        """Under the queue lock: up to limit tasks from the level cache, marked in progress."""

    def prepare(self, tasks: list[Task]) -> list[Task]:
        """Outside the lock: attach what execution needs."""

    def execute(self, task: Task, heartbeat: Callable[[], None]) -> Outcome:
        """One task. A mode may instead offer `execute_batch(tasks, heartbeat) -> outcomes` and `batch_size`:
        a worker then leases up to batch_size tasks at once (short tasks: listings, small copies), and
        heartbeat(task) extends one task's lease while the batch runs."""

    def complete(self, task: Task, outcome: Outcome) -> None: ...

    def fail(self, task: Task, message: str) -> None: ...

    def requeue(self, task: Task) -> None:
        """Under the lock: a buffered task that will not run now goes back to pending (stop)."""

    def round_done(self, r: int) -> bool: ...

    def seal(self, r: int, final: bool) -> None: ...

    def next_round(self, r: int) -> int | None: ...


class Queue:
    def __init__(self, side: str, mode: Mode, coordinator: QueueCoordinator, settings: Settings,
                 workers: int, on_stop_run: Callable[[str], None] | None = None):
        self.side = side
        self.mode = mode
        self.coordinator = coordinator
        self.settings = settings
        self.target_workers = workers
        self._on_stop_run = on_stop_run
        self.lock = threading.Lock()
        self._work_ready = threading.Condition(self.lock)  # workers wait here
        self._loop_wake = threading.Condition(self.lock)  # the run loop waits here
        self.buffer: deque[Task] = deque()
        self.delayed: list[tuple[float, int, Task]] = []
        self.in_flight: dict[int, list] = {}  # task key -> [task, lease deadline]
        self._seq = itertools.count()
        self._rng = random.Random()
        self.state = "idle"
        self.round = 0
        self.paused = False
        self._stopping = False  # graceful: no new leases, seal what can be sealed
        self._abandon = False  # forced: leave at once
        self._threads: list[threading.Thread] = []
        self._live_workers = 0
        self.round_expected = 0
        self.round_completed = 0
        # True once a pull got fewer tasks than it asked for: until a retry or a reclaim adds work, only
        # the end of the round is worth waking the run loop for (each wake-up is a futex round trip)
        self._level_drained = False
        # monotonic counters, read without the lock by the observer (ints are atomic to read)
        self.completed_total = 0
        self.failed_total = 0
        self.retried_total = 0
        self.expired_leases = 0
        self.stale_reports = 0
        self.error: BaseException | None = None  # an engine bug that ended the run loop
        self.on_notice: Callable[[str], None] | None = None  # told when it runs with fewer workers than asked
        self._untold: deque[str] = deque()  # notes for on_notice, told outside the lock (_tell)
        self._stop_run_reason: str | None = None  # a stop no thread could be started to request (_tell)

    # lifecycle -------------------------------------------------------------------------------------

    def start(self, workers: int | None = None) -> None:
        """Start the run loop and the workers (only `workers` of them for now: start_workers starts the rest);
        ThreadLimit when not even one worker could start (the loop is then stopping, as on a stop)."""
        self._threads.append(start_thread(
            threading.Thread(target=self._run_guarded, name=f"{self.side}-{self.mode.name}-loop", daemon=True)))
        try:
            with self.lock:
                self._spawn_workers_locked(workers)
        except ThreadLimit:
            self.stop()
            raise
        self._tell()

    def start_workers(self) -> None:
        """The workers start() left for later (queues started together each get one first)."""
        self.set_workers(self.target_workers)

    def _spawn_workers_locked(self, up_to: int | None = None) -> None:
        """Start workers up to target_workers (or up_to). Past the limit on threads the queue goes on with
        the ones it has, and says so; ThreadLimit only when it has none."""
        while self._live_workers < min(self.target_workers, up_to or self.target_workers):
            t = threading.Thread(target=self._worker, name=f"{self.side}-{self.mode.name}-w", daemon=True)
            self._live_workers += 1
            try:
                start_thread(t)
            except ThreadLimit as exc:
                self._live_workers -= 1
                if not self._live_workers:
                    raise
                self.target_workers = self._live_workers
                self._untold.append(f"{exc}; {self.side} {self.mode.name} goes on with {self._live_workers} "
                                    f"worker{'s' if self._live_workers > 1 else ''}")
                return
            self._threads.append(t)

    def _tell(self) -> None:
        """Pass on, outside the queue lock (the listeners take their own), what was noted under it: notes for
        on_notice, and a stop of the run that report() could not start a thread to request."""
        while True:
            try:
                notice = self._untold.popleft()  # atomic: the loop and a resize may tell at once
            except IndexError:
                break
            if self.on_notice is not None:
                self.on_notice(notice)
        if self._stop_run_reason is not None:
            with self.lock:
                reason, self._stop_run_reason = self._stop_run_reason, None
            if reason is not None and self._on_stop_run:
                self._on_stop_run(reason)

    def set_workers(self, n: int) -> None:
        """Live resize: extra workers exit after their current task; missing ones are started."""
        with self.lock:
            self.target_workers = n
            if self.state not in ("completed", "stopped"):
                self._spawn_workers_locked()
            self._work_ready.notify_all()
        self._tell()

    def pause(self) -> None:
        with self.lock:
            self.paused = True
            if self.state in ("running", "waiting"):
                self.state = "paused"

    def resume(self) -> None:
        with self.lock:
            self.paused = False
            if self.state == "paused":
                self.state = "running"
            self._work_ready.notify_all()
            self._loop_wake.notify_all()

    def stop(self, force: bool = False) -> None:
        with self.lock:
            self._stopping = True
            self._abandon = self._abandon or force
            if self.state not in ("completed", "stopped", "idle"):
                self.state = "stopping"
            self._work_ready.notify_all()
            self._loop_wake.notify_all()

    def join(self, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        for t in list(self._threads):
            if self._abandon and not t.name.endswith("-loop"):
                # forced: a worker in a long copy is not waited for (a daemon thread: it ends with the process;
                # its temporary is swept on resume), as `migrate`'s second Ctrl-C does not wait for it either
                continue
            t.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        return not any(t.is_alive() for t in self._threads if t.name.endswith("-loop"))

    @property
    def finished(self) -> bool:
        return self.state in ("completed", "stopped")

    # workers ---------------------------------------------------------------------------------------

    def lease(self, limit: int = 1) -> list[Task]:
        """Block until tasks are ready; up to `limit` of them, each with its own lease. An empty list
        tells the worker to exit."""
        with self.lock:
            while True:
                if self._stopping or self.state in ("completed", "stopped") \
                        or self._live_workers > self.target_workers:
                    self._live_workers -= 1
                    return []
                if self.buffer and not self.paused:
                    buffer, in_flight = self.buffer, self.in_flight
                    deadline = time.monotonic() + self.settings.lease_timeout
                    tasks = [buffer.popleft() for _ in range(min(limit, len(buffer)))]
                    for task in tasks:
                        in_flight[task.key] = [task, deadline]
                    if len(buffer) <= self.settings.low_water and not self._level_drained:
                        self._loop_wake.notify()
                    return tasks
                self._work_ready.wait(0.5)

    def heartbeat(self, task: Task) -> None:
        """A long healthy task (a big copy) extends its lease as bytes move."""
        with self.lock:
            lease = self.in_flight.get(task.key)
            if lease is not None and lease[0] is task:
                lease[1] = time.monotonic() + self.settings.lease_timeout

    def _worker(self) -> None:
        try:
            self._work()
        finally:
            leaving = getattr(self.mode, "worker_leaves", None)
            if leaving is not None:
                leaving()  # its helper process goes back to the pool (a live resize down, the queue's end)

    def _work(self) -> None:
        execute_batch = getattr(self.mode, "execute_batch", None)
        limit = getattr(self.mode, "batch_size", 1) if execute_batch else 1
        while True:
            tasks = self.lease(limit)
            if not tasks:
                return
            try:
                if execute_batch is not None:
                    outcomes = execute_batch(tasks, self.heartbeat)
                else:
                    task = tasks[0]
                    outcomes = [self.mode.execute(task, lambda: self.heartbeat(task))]
            except Exception as exc:  # noqa: BLE001 - a worker must never die silently
                outcomes = [Outcome(ok=False, error=f"internal error: {exc!r}")] * len(tasks)
            for task, outcome in zip(tasks, outcomes):
                self.report(task, outcome)

    def report(self, task: Task, outcome: Outcome) -> None:
        with self.lock:
            lease = self.in_flight.get(task.key)
            if lease is None or lease[0] is not task:
                self.stale_reports += 1  # the lease expired and the task went elsewhere
                return
            del self.in_flight[task.key]
            if outcome.ok:
                self.mode.complete(task, outcome)
                self.completed_total += 1
                self.round_completed += 1
            elif outcome.stop_run:
                self.mode.requeue(task)
                if self._on_stop_run:
                    reason = f"{outcome.error}, at '{display(task.node.path)}'"
                    try:  # a thread of its own: the stop takes this queue's lock, held here
                        start_thread(threading.Thread(target=self._on_stop_run, args=(reason,), daemon=True))
                    except ThreadLimit:  # the run loop requests it instead, at its next turn
                        self._stop_run_reason = reason
                        self._loop_wake.notify()
            elif outcome.transient and task.attempts < self.settings.max_retries:
                self._retry_later(task, outcome.error)
                self._loop_wake.notify()  # the loop's next wake-up may now be sooner
            else:
                task.attempts += 1
                self.mode.fail(task, outcome.error or "failed")
                self.failed_total += 1
                self.completed_total += 1
                self.round_completed += 1
            if (not self.in_flight and not self.buffer) or \
                    (len(self.buffer) <= self.settings.low_water and not self._level_drained):
                self._loop_wake.notify()

    def _retry_later(self, task: Task, error: str | None) -> None:
        """Exponential backoff with full jitter, so a flapping mount is not hammered in lockstep."""
        task.attempts += 1
        task.error = error
        self.retried_total += 1
        s = self.settings
        delay = min(s.backoff_cap, s.backoff_base * (2 ** (task.attempts - 1)))
        heapq.heappush(self.delayed, (time.monotonic() + self._rng.uniform(delay / 2, delay),
                                      next(self._seq), task))

    def _reclaim_locked(self, now: float) -> None:
        for key, (task, deadline) in list(self.in_flight.items()):
            if deadline < now:
                del self.in_flight[key]
                self.expired_leases += 1
                message = f"lease expired after {self.settings.lease_timeout:g}s without progress"
                if task.attempts < self.settings.max_retries:
                    self._retry_later(task, message)
                else:
                    task.attempts += 1
                    self.mode.fail(task, message)
                    self.failed_total += 1
                    self.completed_total += 1
                    self.round_completed += 1
                # the hung worker still holds its thread: start another so capacity stays
                self._live_workers -= 1
                self._spawn_workers_locked()
                self._level_drained = False
        while self.delayed and self.delayed[0][0] <= now:
            self.buffer.append(heapq.heappop(self.delayed)[2])
            self._work_ready.notify()
            self._level_drained = False

    # the run loop ----------------------------------------------------------------------------------

    def _run_guarded(self) -> None:
        try:
            self._run()
        except BaseException as exc:  # noqa: BLE001 - surfaced through snapshot, never a silent hang
            self.error = exc
            with self.lock:
                self.state = "stopped"
                self._work_ready.notify_all()
            if self._on_stop_run:
                self._on_stop_run(str(exc) if isinstance(exc, ThreadLimit) else
                                  f"{self.side} {self.mode.name} failed: {exc!r}")

    def _run(self) -> None:
        r = self.mode.first_round()
        with self.lock:
            self.state = "paused" if self.paused else "running"
        while r is not None:
            with self.lock:
                self.round = r
                if self._stopping:
                    break
            if self.mode.gated:
                self.coordinator.set_round(self.side, r)
                if not self.coordinator.may_start(self.side, r):
                    with self.lock:
                        if self.state == "running":
                            self.state = "waiting"
                    self.coordinator.wait_for_change(0.2)
                    continue
            with self.lock:
                if self.state == "waiting":
                    self.state = "paused" if self.paused else "running"
            if self.mode.gated:
                self.coordinator.record("start", self.side, r)
            size = self.mode.begin_round(r)
            if not size:
                if self.mode.ends_when_empty(r):
                    r = None
                    break
                r = self.mode.next_round(r)
                continue
            with self.lock:
                self.round_expected, self.round_completed = size, 0
            finished_round = self._drive_round(r)
            if self._abandon:
                break
            self.mode.seal(r, final=finished_round)
            if not finished_round:
                break
            if self.mode.gated:  # handed to the sealer: "sealed" is recorded when it is committed
                self.coordinator.record("completed", self.side, r)
            r = self.mode.next_round(r)
        with self.lock:
            stopped = self._stopping and r is not None
            self.state = "stopped" if stopped else "completed"
            self._work_ready.notify_all()
        if self.mode.gated and not stopped:
            self.coordinator.mark_done(self.side)

    def _drive_round(self, r: int) -> bool:
        """Pull and wait until round r is complete (True) or a stop drained it (False)."""
        s = self.settings
        self._level_drained = False
        while True:
            self._tell()  # a worker that replaced a hung one may not have started
            batch = None
            with self.lock:
                now = time.monotonic()
                self._reclaim_locked(now)
                if self._stopping:
                    return self._drain_locked()
                if self.mode.round_done(r):
                    return True
                if not self.paused and len(self.buffer) <= s.low_water:
                    room = max(0, s.buffer_size - len(self.buffer))
                    want = min(s.pull_batch, room)
                    batch = self.mode.take(r, want) if room else None
                    self._level_drained = room > 0 and len(batch or ()) < want
                if not batch:
                    self._loop_wake.wait(self._next_wakeup(now))
                    continue
            tasks = self.mode.prepare(batch)  # may read DuckDB: never under the queue lock
            with self.lock:
                self.buffer.extend(tasks)
                self._work_ready.notify(len(tasks))

    def _next_wakeup(self, now: float) -> float:
        wake = 0.25
        if self.delayed:
            wake = min(wake, max(0.0, self.delayed[0][0] - now))
        if self.in_flight:
            wake = min(wake, max(0.0, min(d for _, d in self.in_flight.values()) - now))
        return wake + 0.001

    def _drain_locked(self) -> bool:
        """Stop leasing, let in-flight tasks finish (up to a lease timeout), return the rest to pending."""
        deadline = time.monotonic() + self.settings.lease_timeout
        while self.in_flight and not self._abandon and time.monotonic() < deadline:
            self._loop_wake.wait(0.1)
        for task in self.buffer:
            self.mode.requeue(task)
        for _, _, task in self.delayed:
            self.mode.requeue(task)
        for task, _ in self.in_flight.values():
            self.mode.requeue(task)
        self.buffer.clear()
        self.delayed.clear()
        self.in_flight.clear()
        return False

    # views -----------------------------------------------------------------------------------------

    def counts(self) -> tuple[int, int, int]:
        with self.lock:
            return len(self.buffer) + len(self.delayed), len(self.in_flight), self._live_workers
