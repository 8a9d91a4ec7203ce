"""QueueCoordinator: the gates between SRC and DST rounds, with every decision recorded."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class GateDecision:
    time: float
    side: str
    round: int
    allowed: bool
    src_round: int
    dst_round: int
    src_done: bool
    max_src_ahead: int


class QueueCoordinator:
    """DST may start round N only when SRC has completed N and N+1 (SRC round >= N+2) or SRC is done.
    SRC may start round R only when R <= DST round + max_src_ahead, or DST is done.

    A side's round is the round it works on or waits to start: it advances when a round is complete (its
    seal handed to the sealer, which commits seals in that order).
    """

    def __init__(self, max_src_ahead: int = 3, record_limit: int = 100_000):
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self.max_src_ahead = max_src_ahead
        self.rounds = {"src": 0, "dst": 0}
        self.done = {"src": False, "dst": False}
        self.decisions: list[GateDecision] = []
        self._record_limit = record_limit
        # ordered ("start" | "completed" | "sealed" | "done", side, round): lets a test prove the gates
        # (and the order of the seals' commits) from evidence that does not depend on the gate code itself
        self.events: list[tuple[str, str, int]] = []

    def _src_may_start(self, r: int) -> bool:
        return self.done["dst"] or r <= self.rounds["dst"] + self.max_src_ahead

    def _dst_may_start(self, n: int) -> bool:
        return self.done["src"] or self.rounds["src"] >= n + 2

    def may_start(self, side: str, round_: int) -> bool:
        """Ask the gate; the answer (and the state it was based on) is recorded."""
        with self._lock:
            allowed = self._src_may_start(round_) if side == "src" else self._dst_may_start(round_)
            if len(self.decisions) < self._record_limit:
                self.decisions.append(GateDecision(time.time(), side, round_, allowed, self.rounds["src"],
                                                   self.rounds["dst"], self.done["src"], self.max_src_ahead))
            return allowed

    def wait_for_change(self, timeout: float) -> None:
        with self._lock:
            self._changed.wait(timeout)

    def set_round(self, side: str, round_: int) -> None:
        with self._lock:
            self.rounds[side] = round_
            self._changed.notify_all()

    def record(self, kind: str, side: str, round_: int) -> None:
        with self._lock:
            if len(self.events) < self._record_limit:
                self.events.append((kind, side, round_))

    def mark_done(self, side: str) -> None:
        with self._lock:
            self.done[side] = True
            self.events.append(("done", side, self.rounds[side]))
            self._changed.notify_all()

    def set_max_src_ahead(self, n: int) -> None:
        with self._lock:
            self.max_src_ahead = n
            self._changed.notify_all()

    def reason(self, side: str) -> str | None:
        """Why a side cannot start its current round, in words; None when it may."""
        with self._lock:
            r = self.rounds[side]
            if self.done[side]:
                return None
            if side == "dst" and not self._dst_may_start(r):
                return f"DST round {r} waits for SRC to finish round {r + 1}"
            if side == "src" and not self._src_may_start(r):
                return (f"SRC round {r} waits for DST to reach round {r - self.max_src_ahead} "
                        f"(max {self.max_src_ahead} rounds ahead)")
            return None

    def state(self) -> tuple[int, int, bool, bool, int]:
        with self._lock:
            return self.rounds["src"], self.rounds["dst"], self.done["src"], self.done["dst"], self.max_src_ahead
