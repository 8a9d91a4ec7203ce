"""Sealer: one thread that commits the traversal's seals, in the order the run loops hand them over.

A seal's DuckDB work (insert the next level, update the listed folders, compare DST with SRC, count the
stats, commit) releases the GIL; done by the run loop itself, it held its side still, and DST's gate
waited on SRC's seals. A run loop now builds the seal's tables (the level's state at that moment) and
goes on with its next round; this thread commits them. (On 2 cores already busy listing this bought
little, 2.04 -> 2.01 s on 100k: the commits need the same cores. It matters where listing waits on
storage instead.)

Order is what keeps the file consistent: seals of one side commit in round order, and a DST seal (it
compares DST's depth N+1 with SRC's rows there) commits after SRC's seal of round N+1, because the gate
lets DST start round N only once SRC has completed N+1, so that seal was handed over first. A reader
that needs a side's rows committed up to a depth waits with `wait_sealed`. The hand-over blocks while
`max_pending` seals wait: a slow disk slows the traversal instead of filling memory.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Callable

from engine.threads import start_thread


class Sealer:
    def __init__(self, on_sealed: Callable[[str, int], None] | None = None, max_pending: int = 2):
        self._on_sealed = on_sealed
        self._max_pending = max_pending
        self._jobs: deque[tuple[str, int, Callable[[], None]]] = deque()  # the first one may be committing
        self._changed = threading.Condition()
        self._closed = False
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._commit_in_order, name="sealer", daemon=True)
        start_thread(self._thread)

    def submit(self, side: str, depth: int, commit: Callable[[], None]) -> None:
        """Hand over the seal of `side`'s round `depth`; raises the error of an earlier seal that failed."""
        with self._changed:
            while len(self._jobs) >= self._max_pending and self.error is None:
                self._changed.wait()
            self._raise_error()
            self._jobs.append((side, depth, commit))
            self._changed.notify_all()

    def wait_sealed(self, side: str, depth: int) -> None:
        """Block until every seal handed over for `side` up to round `depth` is committed."""
        with self._changed:
            while self.error is None and any(s == side and d <= depth for s, d, _ in self._jobs):
                self._changed.wait()
            self._raise_error()

    def close(self) -> None:
        """Commit what was handed over, stop the thread; raises the error of a seal that failed."""
        with self._changed:
            self._closed = True
            self._changed.notify_all()
        self._thread.join()
        with self._changed:
            self._raise_error()

    def _raise_error(self) -> None:
        if self.error is not None:
            raise self.error  # as the seal raised it: a UserError (disk full) stays one line for the operator

    def _commit_in_order(self) -> None:
        while True:
            with self._changed:
                while not self._jobs and not self._closed:
                    self._changed.wait()
                if not self._jobs:
                    return
                side, depth, commit = self._jobs[0]
            try:
                commit()
            except BaseException as exc:  # noqa: BLE001 - handed to the run loops and the driver
                with self._changed:
                    self.error = exc
                    self._jobs.clear()
                    self._changed.notify_all()
                return
            if self._on_sealed is not None:
                self._on_sealed(side, depth)
            with self._changed:
                self._jobs.popleft()
                self._changed.notify_all()
