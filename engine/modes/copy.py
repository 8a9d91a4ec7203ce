"""Copy rounds: pass 1 creates pending folders depth by depth from the top, pass 2 copies pending
files and symlinks depth by depth. Each round's level is loaded from DuckDB and sealed back into it.

Between two local disks a worker leases a batch of tasks at once and a helper process of its own
(engine.copying) creates those folders and copies those small files; big files, and everything under a
bandwidth limit or with verification, are copied in this process, with heartbeats."""

from __future__ import annotations

import time
from operator import attrgetter
from typing import Callable

from engine import copying, crashpoints
from engine.adapters.base import FSAdapter, describe
from engine.adapters.local import LocalAdapter
from engine.cache import NodeCache
from engine.counters import CopyCounters
from engine.model import (
    ACTION_KEEP_DST_NEWER, ACTION_VANISHED, FAILED, FILE, FOLDER, IN_PROGRESS, PENDING, SKIPPED, SRC, SUCCESSFUL,
    Task, folders_above, is_temp_name, name_in_temp, not_a_folder_now, parent_of, temp_target, unambiguous,
)
from engine.queue import Outcome
from engine.settings import Settings
from engine.store import Store
from engine.workers import BandwidthLimiter, copy_entry, create_folder, outcome as as_outcome

PASS_TYPES = {1: "type = 'folder'", 2: "type <> 'folder'"}
PASS_STRIDE = 1 << 20  # round number = pass * stride + depth: one int the queue can carry
_path_of = attrgetter("path")
# Tasks a worker leases at once when a helper process copies them: one round trip for up to this many
# small files (a round trip per file costs more than copying the file in this process).
BATCH = 32


def _no_heartbeat() -> None:
    pass


def _beat_all(heartbeat: Callable[[Task], None], waiting: list[Task]) -> Callable[[], None]:
    """A heartbeat for a task copied here out of a batch: extends its lease and those of the batch's tasks
    still waiting behind it (all were leased together)."""
    def beat() -> None:
        for task in waiting:
            heartbeat(task)
    return beat


class CopyMode:
    name = "copy"
    gated = False

    def __init__(self, store: Store, src: FSAdapter, dst: FSAdapter, settings: Settings, counters: CopyCounters,
                 limiter: BandwidthLimiter, on_error: Callable[[str, str, str, str, int], None],
                 copiers: copying.CopierPool | None = None, on_notice: Callable[[str], None] | None = None):
        self.store = store
        self.src, self.dst = src, dst
        self.settings = settings
        self.counters = counters
        self.limiter = limiter
        self.on_error = on_error
        self.cache = NodeCache()
        self.dead_letters: list[tuple[str, str, int]] = []
        self._depths: dict[int, set[int]] = {1: set(), 2: set()}  # pass -> depths with work (first_round)
        # Folders that nothing may be written through, for the whole phase: path -> why (made on DST they were
        # not; or one side has a symlink or file there now), and those checked to be folders on both sides.
        self._blocking: dict[str, str] = {}
        self._real_folders: set[str] = set()
        self.made_folders: set[str] = set()  # made by this phase, with their mode of the run file
        # Helper processes (engine.copying) when both sides are local disks and the queue extends the leases
        # of a leased batch (a batch's big files are copied here and need heartbeats for every task waiting).
        # `copiers` given: the caller owns the pool (and closes it); else this mode starts and closes its own.
        self.copiers, self._own_copiers = copiers, False
        if copiers is None and settings.copy_processes \
                and isinstance(src, LocalAdapter) and isinstance(dst, LocalAdapter):
            self.copiers, self._own_copiers = copying.CopierPool(on_notice), True
        if self.copiers is not None:
            self.execute_batch = self._execute_batch  # the queue looks for it when its workers start

    @property
    def batch_size(self) -> int:
        """Tasks a worker leases at once (with execute_batch): one under a bandwidth limit or with
        verification, where everything is copied here at the limit's pace, so that a stop waits for one
        file, not for a batch (the queue reads this when a worker starts)."""
        return 1 if self.limiter.rate > 0 or self.settings.verify else BATCH

    def _next_depth(self, copy_pass: int, after: int) -> int | None:
        return min((d for d in self._depths[copy_pass] if d > after), default=None)

    def first_round(self) -> int | None:
        # The depths each pass has work at, counted once: a copy round never adds work to another depth, and
        # a round that ends has done all of its own (a stop ends the queue after its seal).
        self._depths = {1: set(), 2: set()}
        for depth, is_folder, status, _count, _size in self.store.grouped(SRC, "depth, type = 'folder', copy_status"):
            if status in (PENDING, IN_PROGRESS):
                self._depths[1 if is_folder else 2].add(depth)
        for path, error in self.store.failed_src_folders().items():  # by an earlier phase; fail() adds this one's
            self._not_made(path, error)
        first = self.next_round(PASS_STRIDE)  # as if pass 1's depth 0 (the root) had just been done
        if first is not None and self._own_copiers:
            self.copiers.start(self.settings.copy_workers)  # their start-up overlaps the first round
        return first

    def next_round(self, r: int) -> int | None:
        copy_pass, depth = divmod(r, PASS_STRIDE)
        following = self._next_depth(copy_pass, depth)
        if following is not None:
            return copy_pass * PASS_STRIDE + following
        if copy_pass == 1:
            following = self._next_depth(2, 0)
            if following is not None:
                return 2 * PASS_STRIDE + following
        self.close_copiers()  # the last round is sealed: no worker copies any more
        return None

    def worker_leaves(self) -> None:
        """A worker thread ends: its copy process serves the next worker started instead."""
        if self.copiers is not None:
            self.copiers.release()

    def close_copiers(self) -> None:
        """Its copy processes end (they finish the batch in hand): at the last round, at a stop's seal, and
        after a forced stop, which seals nothing."""
        if self._own_copiers:
            self.copiers.close(wait=False)  # they exit on their own once their pipes close

    @staticmethod
    def view_round(r: int) -> tuple[int, int]:
        """(depth, pass) of a round number."""
        copy_pass, depth = divmod(r, PASS_STRIDE)
        return depth, copy_pass

    def begin_round(self, r: int) -> int:
        copy_pass, depth = divmod(r, PASS_STRIDE)
        nodes = self.store.load_level(SRC, depth, f"AND copy_status IN ('pending', 'in_progress') "
                                                  f"AND {PASS_TYPES[copy_pass]}")
        # In path order: a folder's entries are copied one after the other, and the seal's UPDATE meets the
        # rows in nearly the order they are stored (in the id order they are loaded in, DuckDB takes 102 ms
        # instead of 5 ms to update 6,600 rows of a persisted table)
        nodes.sort(key=_path_of)
        for folder in {parent_of(node.path) for node in nodes}:
            self._check_folders(folder)
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

    def _check_folders(self, folder: str) -> None:
        """Is `folder`, and every folder above it, still a folder on both sides? One that became a symlink (a
        DST folder moved to another disk and linked back, say, before a resume) would take the copy outside
        the destination, or read from outside the source (O_NOFOLLOW guards the last name only)."""
        if not folder:
            return
        for above in (*folders_above(folder), folder):
            if above in self._blocking:
                return
            if above in self._real_folders:
                continue
            found = {}
            for side, adapter in (("destination", self.dst), ("source", self.src)):
                try:
                    found[side] = adapter.stat(above)
                except OSError as exc:  # unreadable since it was listed (its mode changed, a mount went away)
                    self._blocking[above] = f"'{unambiguous(above)}' on the {side} cannot be looked at " \
                                            f"({describe(exc)})"
                    return
            there, here = found["destination"], found["source"]
            if here is None:  # deleted on the source since it was listed: what is below vanished with it (each
                return        # copy finds its entry gone), whatever DST has there: nothing is written there
            for side, entry in found.items():
                if entry is not None and entry.type != FOLDER:
                    self._blocking[above] = not_a_folder_now(above, side, entry.type)
                    return
            if there is None and here is not None:  # gone from DST since it was made or found (space freed by
                try:                                # hand after a full disk, say): made again, as rsync would
                    self.dst.create_folder(above, here.mode)
                    self.made_folders.add(above)
                except OSError:
                    pass  # the copies below say why
            self._real_folders.add(above)

    def blocks(self, path: str) -> bool:
        """Is path, or a folder above it, one nothing may go through (found so far)?"""
        return path in self._blocking or self._blocked(path) is not None

    def _blocked(self, path: str) -> Outcome | None:
        """A failure for an entry under a folder in _blocking: whatever stands there in the folder's place (a
        file, a symlink to elsewhere) is never written into, through or read from. None: not blocked."""
        if not self._blocking:
            return None
        for above in folders_above(path):  # from the top: the first folder that blocks is the cause
            reason = self._blocking.get(above)
            if reason is not None:
                return as_outcome(copying.refused(f"not copied: {reason}"))
        return None

    def execute(self, task: Task, heartbeat) -> Outcome:
        blocked = self._blocked(task.node.path)
        if blocked is not None:
            return blocked
        if task.kind == "mkdir":
            return create_folder(self.dst, task, self.src)
        return copy_entry(self.src, self.dst, task, heartbeat, self.limiter, self.settings.verify, self._progress)

    def _execute_batch(self, tasks: list[Task], heartbeat: Callable[[Task], None] | None = None) -> list[Outcome]:
        """The tasks one worker leased together, each with its own lease and outcome: the helper process
        creates the folders and copies the small files in one round trip (unless a bandwidth limit or
        verification is on), this process copies the rest one by one, extending the leases of every task
        of the batch still waiting as it goes. Files the helper copied count their bytes, but do not hit
        the mid-file crash point (they were renamed in the helper already)."""
        last = time.monotonic()  # about when the batch was leased: the leases run from then
        outcomes: list[Outcome | None] = [self._blocked(t.node.path) for t in tasks]
        copiers = self.copiers
        if copiers.usable and self.limiter.rate <= 0 and not self.settings.verify:
            picked = [i for i, t in enumerate(tasks)
                      if outcomes[i] is None and (t.kind == "mkdir" or t.node.size < copying.HELPER_MAX)]
            if picked:
                items = [(t.node.path, t.node.type, t.node.mode) for t in map(tasks.__getitem__, picked)]
                try:
                    results = copiers.run(self.src.root, self.dst.root, items)
                except copying.CopierGone as exc:  # transient: retried with backoff through a new helper
                    results = [copying.failure(exc)] * len(picked)
                    self._remove_temporaries([path for path, kind, _mode in items if kind != FOLDER])
                counters = self.counters
                for i, result in zip(picked, results):
                    if result[4] != "handback":  # a file that grew past the helper's limit is copied below
                        if result[4] == "file":  # the bytes moved ("exists" tells the size found there)
                            counters.bytes += result[5]
                        outcomes[i] = as_outcome(result)
        rest = [i for i, o in enumerate(outcomes) if o is None]
        every = min(1.0, self.settings.lease_timeout / 4)
        for k, i in enumerate(rest):
            beat = _no_heartbeat if heartbeat is None else _beat_all(heartbeat, [tasks[j] for j in rest[k:]])
            if heartbeat is not None and time.monotonic() - last > every:
                beat()  # the leases have been running since the batch was leased
                last = time.monotonic()
            outcomes[i] = self.execute(tasks[i], beat)
        return outcomes

    def _remove_temporaries(self, paths: list[str]) -> None:
        """A helper that died mid-file left its temporary behind: remove those of the batch's files (a
        temporary is named .NAME.RANDOM + TEMP_SUFFIX beside NAME)."""
        by_folder: dict[str, set[str]] = {}
        for path in paths:
            folder, _, name = path.rpartition("/")
            by_folder.setdefault(folder, set()).add(name_in_temp(name))
        for folder, names in by_folder.items():
            try:
                entries = self.dst.list(folder)
            except OSError:
                continue
            for entry in entries:
                if entry.type != FOLDER and is_temp_name(entry.name) \
                        and temp_target(entry.name) in names:
                    try:
                        self.dst.remove(f"{folder}/{entry.name}" if folder else entry.name)
                    except OSError:
                        pass

    def complete(self, task: Task, outcome: Outcome) -> None:
        node, level, c = task.node, self.cache.level(task.round), self.counters
        node.attempts, node.error = task.attempts, None
        if outcome.kind == "skipped":
            level.set_copy_status(node, SKIPPED)
            node.action = ACTION_KEEP_DST_NEWER
            c.skipped += 1
            return
        if outcome.kind == "vanished":
            level.set_copy_status(node, SKIPPED)
            node.action, node.error = ACTION_VANISHED, "the source entry vanished after it was listed"
            c.vanished += 1
            return
        level.set_copy_status(node, SUCCESSFUL)
        crashpoints.hit("copied")
        if outcome.kind == "folder":
            c.folders_created += 1
            self.made_folders.add(node.path)
        elif outcome.kind == "file":
            c.files_copied += 1
            if node.type == FILE:  # the bytes copied: the source may have changed since it was listed
                node.size = outcome.bytes
        else:
            c.already_there += 1
            if outcome.kind == "exists" and node.type == FILE:  # copied before a crash, say: as it is there,
                node.size = outcome.bytes                        # the source's size now, maybe not the listed one

    def _not_made(self, path: str, reason: str) -> None:
        self._blocking[path] = f"its folder '{unambiguous(path)}' could not be made on the destination ({reason})"

    def fail(self, task: Task, message: str) -> None:
        node = task.node
        if node.type == FOLDER:
            self._not_made(node.path, message)
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
        else:
            self.close_copiers()  # a stop: this queue ends after this seal
