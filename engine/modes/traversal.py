"""Traversal and retry rounds: list every pending folder of depth N, put the children in level N+1."""

from __future__ import annotations

import functools
from typing import Callable

from engine import crashpoints
from engine.adapters.base import FSAdapter
from engine.cache import FileColumns, NodeCache
from engine.counters import SideCounters
from engine.model import (
    ACTION_COPY, ACTION_VANISHED, DST, EXCLUDED, FAILED, FOLDER, IN_PROGRESS, OUR_TEMPORARY, PENDING, SKIPPED, SRC,
    SUCCESSFUL, Node, Task,
)
from engine.queue import Outcome
from engine.sealer import Sealer
from engine.store import Store
from engine.listing import ListerPool
from engine.workers import list_folders


class TraversalMode:
    """retry=False: the BFS of a new run; a round with nothing to list ends it.
    retry=True: re-lists the pending and failed folders of every known depth, then goes on deeper
    while new folders turn up; the rounds are sealed by node id instead of by whole level."""

    gated = True

    def __init__(self, side: str, store: Store, adapter: FSAdapter, counters: SideCounters,
                 on_error: Callable[[str, str, str, int], None], sealer: Sealer, retry: bool = False,
                 excluded: Callable[[str, bool], bool] | None = None, listers: ListerPool | None = None,
                 on_special: Callable[[str, tuple], None] | None = None):
        self.side = side
        self.sealer = sealer  # commits this mode's seals in the background, in order (engine.sealer)
        self.listers = listers  # listing processes (engine.listing); None: list in this process
        # folders a worker leases and lists at once: with a listing process a round trip costs more than a
        # local listing; without one, one at a time, so a pause or a stop waits for one slow folder at most
        self.batch_size = 32 if listers is not None else 1
        self.name = "retry" if retry else "traversal"
        self.retry = retry
        self.store = store
        self.adapter = adapter
        self.cache = NodeCache(self._file_node)
        self.counters = counters
        self.on_error = on_error
        self.on_special = on_special  # (side, ((path, what), ...)): special files found, not migrated
        self.excluded = excluded
        self.dead_letters: list[tuple[str, str, int]] = []
        self.relisted: list[str] = []  # retry, SRC only: folders listed now that failed before
        self.temporaries: list[str] = []  # DST only: an interrupted copy's, found this round (sealed with it)
        self.max_known_depth = 0
        # DST only: paths of the SRC folders of this round that could not be listed (their DST twins wait)
        self._src_not_listed: set[str] = set()

    def first_round(self) -> int | None:
        self.max_known_depth = self.store.max_depth(self.side)
        return self.store.min_depth(self.side, "traversal_status IN ('pending', 'in_progress')")

    def begin_round(self, r: int) -> int:
        level = self.cache.level(r)
        if level is None:
            if self.retry:
                self.cache.clear()
                nodes = self.store.load_level(self.side, r, "AND traversal_status IN ('pending', 'in_progress')")
            else:  # a resume: the whole level, and what a graceful stop sealed of the next one
                nodes = self.store.load_level(self.side, r)
                self.cache.ensure(r + 1).put_all(self.store.load_level(self.side, r + 1))
            level = self.cache.ensure(r)
            for node in nodes:
                if node.status == IN_PROGRESS:
                    node.status = PENDING
            level.put_all(nodes)
        pending = level.count(PENDING)
        if self.side == DST and pending:
            self.sealer.wait_sealed(SRC, r)  # SRC's folders of depth r are final once that seal is committed
            pending = self._follow_src_folders(level, self.store.src_folder_statuses(r))
        if not pending and self.ends_when_empty(r):
            self.cache.clear()  # sealed already as the previous round's next level: free it now
        return pending

    def _follow_src_folders(self, level, src_statuses: dict[str, str]) -> int:
        """DST lists a folder only where SRC has a folder it listed: a DST-only folder is never touched
        (successful, unlisted), an excluded one stays out, and one whose SRC twin could not be listed waits
        for retry mode. DST's seal compares the same rows in SQL and records the same decisions."""
        self._src_not_listed = set()
        for node in list(level.by_status.get(PENDING, {}).values()):
            if node.type != FOLDER:
                continue
            src_status = src_statuses.get(node.path)
            if src_status == SUCCESSFUL:
                continue
            if src_status is None:
                level.set_status(node, SUCCESSFUL)
            elif src_status == EXCLUDED:
                level.set_status(node, EXCLUDED)
            else:
                self._src_not_listed.add(node.path)
        return level.count(PENDING)

    def worker_leaves(self) -> None:
        """A worker thread ends: its listing process serves the next worker started instead."""
        if self.listers is not None:
            self.listers.release()

    def ends_when_empty(self, r: int) -> bool:
        return not self.retry or r >= self.max_known_depth

    def take(self, r: int, limit: int) -> list[Task]:
        kind = f"list-{self.side}"
        return [Task(kind, node, r) for node in self.cache.level(r).take_pending(limit)]

    def prepare(self, tasks: list[Task]) -> list[Task]:
        return tasks

    def execute(self, task: Task, heartbeat) -> Outcome:
        return self.execute_batch([task])[0]

    def execute_batch(self, tasks: list[Task], heartbeat=None) -> list[Outcome]:
        """List a batch of folders (one round trip to the listing process, when there is one; a listing is
        short, so no heartbeat)."""
        blocked = self._src_not_listed
        if blocked and any(t.node.path in blocked for t in tasks):
            waiting = Outcome(ok=False, error="the matching source folder could not be listed; "
                                              "retry mode lists both")
            todo = [t for t in tasks if t.node.path not in blocked]
            listed = iter(list_folders(self.side, self.adapter, todo, self.excluded, self.listers) if todo else ())
            return [waiting if t.node.path in blocked else next(listed) for t in tasks]
        return list_folders(self.side, self.adapter, tasks, self.excluded, self.listers)

    def complete(self, task: Task, outcome: Outcome) -> None:
        node = task.node
        self.cache.level(task.round).set_status(node, SUCCESSFUL)
        node.attempts, node.error = task.attempts, None
        nxt = self.cache.ensure(task.round + 1)
        counters = self.counters
        counters.listed += 1
        crashpoints.hit(f"{self.side}-listed")
        if outcome.kind == "vanished":  # on SRC: not a failure, nothing to make on DST (see CopyMode.complete)
            node.copy_status, node.action = SKIPPED, ACTION_VANISHED
            node.error = "the source folder vanished after it was listed"
        listing = outcome.children
        for child in listing.folders:
            if nxt.put(child) and child.status != EXCLUDED:
                counters.folders_discovered += 1
        if listing.count:
            nxt.add_files(listing)
            counters.files_discovered += listing.count - listing.excluded
        if listing.specials:
            if self.side == DST:  # destination entries, never touched: but for our own temporaries
                self.temporaries += [path for path, what in listing.specials if what == OUR_TEMPORARY]
            elif self.on_special is not None:
                self.on_special(self.side, listing.specials)
        if self.retry and self.side == SRC:
            self.relisted.append(node.path)
            # A folder that failed before may have failed for its mode: the row holds what its parent's
            # listing saw then, and the copy gives DST folders the row's mode. Take the folder's as it is now.
            now = self.adapter.stat(node.path) if node.path else None
            if now is not None and now.type == FOLDER:
                node.size, node.mtime_ns, node.mode = now.size, now.mtime_ns, now.mode

    def fail(self, task: Task, message: str) -> None:
        node = task.node
        self.cache.level(task.round).set_status(node, FAILED)
        node.attempts, node.error = task.attempts, message
        self.dead_letters.append((node.path, message, task.attempts))
        self.on_error(self.side, self.name, node.path, message, task.attempts)

    def requeue(self, task: Task) -> None:
        self.cache.level(task.round).set_status(task.node, PENDING)

    def round_done(self, r: int) -> bool:
        level = self.cache.level(r)
        return level.count(PENDING) == 0 and level.count(IN_PROGRESS) == 0

    def seal(self, r: int, final: bool) -> None:
        level = self.cache.level(r)
        nxt = self.cache.ensure(r + 1)
        for node in level.by_status.get(IN_PROGRESS, {}).copy().values():
            level.set_status(node, PENDING)  # never seal a half-done task: it is redone on resume
        if self.retry:  # small rounds, sealed by id; the next round reads them back, so wait for the commit
            self.sealer.submit(self.side, r, functools.partial(
                self.store.seal_by_id, self.side, r, list(level.nodes()), list(nxt.nodes()), self.dead_letters,
                self.relisted, self.temporaries))
            self.sealer.wait_sealed(self.side, r)
        else:  # the tables are built now; the run loop goes on with the next round while they are committed
            self.sealer.submit(self.side, r, self.store.prepare_traversal_seal(
                self.side, r, level, nxt, self.dead_letters, temporaries=self.temporaries))
        self.dead_letters, self.relisted, self.temporaries = [], [], []
        if final:
            self.cache.drop(r)
            if self.retry:
                self.cache.drop(r + 1)  # reloaded with the other pending nodes of that depth

    def _file_node(self, rows: FileColumns, i: int, depth: int) -> Node:
        """A file row of a level as a Node (for lookups and retry seals; traversal itself never needs one)."""
        status = rows.statuses[i]
        copy_status = action = None
        if self.side == SRC:
            copy_status, action = (EXCLUDED, EXCLUDED) if status == EXCLUDED else (PENDING, ACTION_COPY)
        return Node(rows.ids[i], rows.parent_ids[i], rows.paths[i], depth, rows.kinds[i], rows.sizes[i],
                    rows.mtimes[i], rows.modes[i], status, copy_status, action)

    def next_round(self, r: int) -> int | None:
        return r + 1

    def view_round(self, r: int) -> tuple[int, int]:
        return r, 0
