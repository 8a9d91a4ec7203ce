"""What a worker does with one task: list a folder, classify a DST listing, create a folder, copy a file.
Pure functions of (adapters, task): no locks, no DuckDB; the queue records the outcome."""

from __future__ import annotations

import threading
import time
from typing import Callable

from engine import copying
from engine.adapters.base import FSAdapter, describe, is_disk_full, is_transient
from engine.model import (
    ACTION_COPY, CHANGED, DST, DST_NEWER, EXCLUDED, FOLDER, IDENTICAL, MTIME_WINDOW_NS, PENDING, SRC,
    SUCCESSFUL, Node, Task,
)
from engine.listing import ListerGone, ListerPool, split_listing
from engine.queue import Outcome


def failure(exc: BaseException) -> Outcome:
    return Outcome(ok=False, error=describe(exc), transient=is_transient(exc), stop_run=is_disk_full(exc))


class Listing:
    """One folder's children: its subfolders as Nodes (the next round's tasks), everything else as
    columns for the level's FileRows (see engine.cache)."""

    __slots__ = ("folders", "ids", "paths", "kinds", "sizes", "mtimes", "modes", "statuses")

    def __init__(self, folders=(), ids=(), paths=(), kinds=(), sizes=(), mtimes=(), modes=(), statuses=()):
        self.folders, self.ids, self.paths, self.kinds = folders, ids, paths, kinds
        self.sizes, self.mtimes, self.modes, self.statuses = sizes, mtimes, modes, statuses


EMPTY = Listing()


def list_folders(side: str, adapter: FSAdapter, tasks: list[Task], excluded: Callable[[str, bool], bool] | None,
                 listers: ListerPool | None = None) -> list[Outcome]:
    """List folders into the next level: in a helper process when there is one (engine.listing), else here.

    SRC: every folder is listed next round, every entry starts as to-copy. DST: a folder starts pending
    and every entry unclassified; the seal compares the whole level with SRC in one SQL pass (DuckDB does
    per row what would cost microseconds of Python each), and un-pends the folders SRC does not have."""
    if listers is not None and listers.usable:
        try:
            results = listers.list(adapter.root, side, [t.node.path for t in tasks])
        except ListerGone as exc:
            return [failure(exc)] * len(tasks)
    else:
        results = []
        for task in tasks:
            try:
                results.append(split_listing(side, task.node.path, adapter.list(task.node.path)))
            except OSError as exc:
                results.append(exc)
    return [_outcome(side, task, result, excluded) for task, result in zip(tasks, results)]


def _outcome(side: str, task: Task, result, excluded: Callable[[str, bool], bool] | None) -> Outcome:
    if isinstance(result, OSError):
        if isinstance(result, (FileNotFoundError, NotADirectoryError)) and side == DST:
            return Outcome(children=EMPTY)  # nothing there: every expected SRC entry stays to copy (missing)
        if isinstance(result, FileNotFoundError):
            return Outcome(ok=False, error="folder vanished from the source since it was discovered")
        return failure(result)
    (f_paths, f_ids, f_sizes, f_mtimes, f_modes), (paths, ids, kinds, sizes, mtimes, modes) = result
    folder = task.node
    depth, parent_id = folder.depth + 1, folder.id
    copy_status, action = (PENDING, ACTION_COPY) if side == SRC else (None, None)
    if excluded is None:
        folders = [Node(i, parent_id, p, depth, FOLDER, s, m, md, PENDING, copy_status, action)
                   for i, p, s, m, md in zip(f_ids, f_paths, f_sizes, f_mtimes, f_modes)]
        statuses = [SUCCESSFUL] * len(ids)
    else:
        gone = (EXCLUDED, EXCLUDED) if side == SRC else (None, None)
        folders = [Node(i, parent_id, p, depth, FOLDER, s, m, md, EXCLUDED, *gone) if excluded(p, True) else
                   Node(i, parent_id, p, depth, FOLDER, s, m, md, PENDING, copy_status, action)
                   for i, p, s, m, md in zip(f_ids, f_paths, f_sizes, f_mtimes, f_modes)]
        statuses = [EXCLUDED if excluded(p, False) else SUCCESSFUL for p in paths]
    return Outcome(children=Listing(folders, ids, paths, kinds, sizes, mtimes, modes, statuses))


def classify(dst_type: str, dst_size: int, dst_mtime: int, src: Node) -> str:
    """One DST entry against its SRC entry (the live mirror). Store.classify_dst does the same in SQL
    for a traversal's whole level: the two must agree (tests check both paths)."""
    if dst_type != src.type:
        return CHANGED
    if dst_type == FOLDER:
        return IDENTICAL
    if dst_size == src.size and abs(dst_mtime - src.mtime_ns) <= MTIME_WINDOW_NS:
        return IDENTICAL
    if dst_mtime > src.mtime_ns + MTIME_WINDOW_NS:
        return DST_NEWER
    return CHANGED


class BandwidthLimiter:
    """Token bucket shared by every copy worker; the rate may change while a run is live."""

    def __init__(self, bytes_per_s: int):
        self.rate = bytes_per_s
        self.charged = 0  # bytes paced so far: proves the bucket is charged what moved, no more
        self._lock = threading.Lock()
        self._next_free = time.monotonic()

    def consume(self, n: int) -> None:
        rate = self.rate
        if rate <= 0:
            return
        with self._lock:
            self.charged += n
            now = time.monotonic()
            start = max(now, self._next_free)
            self._next_free = start + n / rate
        if start > now:
            time.sleep(start - now)


def outcome(result) -> Outcome:
    """An engine.copying result tuple as the queue's Outcome."""
    ok, error, transient, stop_run, kind, nbytes = result
    return Outcome(ok, error, transient, (), kind, nbytes, stop_run)


def create_folder(dst: FSAdapter, task: Task) -> Outcome:
    node = task.node
    return outcome(copying.make_folder(dst, node.path, node.mode))


def copy_entry(src: FSAdapter, dst: FSAdapter, task: Task, heartbeat: Callable[[], None],
               limiter: BandwidthLimiter, verify: bool, progress: Callable[[int], None]) -> Outcome:
    """Copy one file or symlink to a temporary name, then rename it over the final name (engine.copying).

    The destination is checked again just before the rename: a file that became newer than the source
    since traversal is kept. The temporary file never survives a failure."""
    node = task.node
    return outcome(copying.copy_entry(src, dst, node.path, node.type, heartbeat, limiter, verify, progress))
