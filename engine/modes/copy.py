"""Copy rounds: pass 1 creates pending folders depth by depth from the top, pass 2 copies pending
files and symlinks depth by depth. Each round's level is loaded from DuckDB and sealed back into it."""

from __future__ import annotations

from typing import Callable

from engine import crashpoints
from engine.adapters.base import FSAdapter
from engine.cache import NodeCache
from engine.counters import CopyCounters
from engine.model import (
    ACTION_KEEP_DST_NEWER, FAILED, IN_PROGRESS, PENDING, SKIPPED, SRC, SUCCESSFUL, Task,
)
from engine.queue import Outcome
from engine.settings import Settings
from engine.store import Store
from engine.workers import BandwidthLimiter, copy_entry, create_folder

PASS_TYPES = {1: "type = 'folder'", 2: "type <> 'folder'"}
PASS_STRIDE = 1 << 20  # round number = pass * stride + depth: one int the queue can carry


class CopyMode:
    name = "copy"
    gated = False

    def __init__(self, store: Store, src: FSAdapter, dst: FSAdapter, settings: Settings, counters: CopyCounters,
                 limiter: BandwidthLimiter, on_error: Callable[[str, str, str, str, int], None]):
        self.store = store
        self.src, self.dst = src, dst
        self.settings = settings
        self.counters = counters
        self.limiter = limiter
        self.on_error = on_error
        self.cache = NodeCache()
        self.dead_letters: list[tuple[str, str, int]] = []

    def _next_depth(self, copy_pass: int, after: int) -> int | None:
        return self.store.min_depth(SRC, f"depth > ? AND copy_status IN ('pending', 'in_progress') "
                                         f"AND {PASS_TYPES[copy_pass]}", [after])

    def first_round(self) -> int | None:
        return self.next_round(PASS_STRIDE)  # as if pass 1's depth 0 (the root) had just been done

    def next_round(self, r: int) -> int | None:
        copy_pass, depth = divmod(r, PASS_STRIDE)
        following = self._next_depth(copy_pass, depth)
        if following is not None:
            return copy_pass * PASS_STRIDE + following
        if copy_pass == 1:
            following = self._next_depth(2, 0)
            if following is not None:
                return 2 * PASS_STRIDE + following
        return None

    @staticmethod
    def view_round(r: int) -> tuple[int, int]:
        """(depth, pass) of a round number."""
        copy_pass, depth = divmod(r, PASS_STRIDE)
        return depth, copy_pass

    def begin_round(self, r: int) -> int:
        copy_pass, depth = divmod(r, PASS_STRIDE)
        nodes = self.store.load_level(SRC, depth, f"AND copy_status IN ('pending', 'in_progress') "
                                                  f"AND {PASS_TYPES[copy_pass]}")
        self.cache.clear()
        level = self.cache.ensure(r)
        for node in nodes:
            node.copy_status = PENDING
        level.put_all(nodes)
        return len(nodes)

    def ends_when_empty(self, r: int) -> bool:
        return False

    def take(self, r: int, limit: int) -> list[Task]:
        kind = "mkdir" if r // PASS_STRIDE == 1 else "copy"
        return [Task(kind, node, r) for node in self.cache.level(r).take_pending_copy(limit)]

    def prepare(self, tasks: list[Task]) -> list[Task]:
        return tasks

    def _progress(self, n: int) -> None:
        self.counters.bytes += n  # one writer per chunk; a lost increment under a race only blurs a rate
        crashpoints.hit("copy-chunk")  # mid-file: the temporary exists, the rename has not happened

    def execute(self, task: Task, heartbeat) -> Outcome:
        if task.kind == "mkdir":
            return create_folder(self.dst, task)
        return copy_entry(self.src, self.dst, task, heartbeat, self.limiter, self.settings.verify, self._progress)

    def complete(self, task: Task, outcome: Outcome) -> None:
        node, level, c = task.node, self.cache.level(task.round), self.counters
        node.attempts, node.error = task.attempts, None
        if outcome.kind == "skipped":
            level.set_copy_status(node, SKIPPED)
            node.action = ACTION_KEEP_DST_NEWER
            c.skipped += 1
            return
        level.set_copy_status(node, SUCCESSFUL)
        crashpoints.hit("copied")
        if outcome.kind == "folder":
            c.folders_created += 1
        elif outcome.kind == "file":
            c.files_copied += 1
        else:
            c.already_there += 1

    def fail(self, task: Task, message: str) -> None:
        node = task.node
        self.cache.level(task.round).set_copy_status(node, FAILED)
        node.attempts, node.error = task.attempts, message
        self.counters.failed += 1
        self.dead_letters.append((node.path, message, task.attempts))
        self.on_error(SRC, "copy", node.path, message, task.attempts)

    def requeue(self, task: Task) -> None:
        self.cache.level(task.round).set_copy_status(task.node, PENDING)

    def round_done(self, r: int) -> bool:
        level = self.cache.level(r)
        return level.count_copy(PENDING) == 0 and level.count_copy(IN_PROGRESS) == 0

    def seal(self, r: int, final: bool) -> None:
        level = self.cache.level(r)
        for node in level.by_copy.get(IN_PROGRESS, {}).copy().values():
            level.set_copy_status(node, PENDING)
        self.store.seal_copy(r % PASS_STRIDE, list(level.nodes()), self.dead_letters)
        self.dead_letters = []
        if final:
            self.cache.drop(r)
