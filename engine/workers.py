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
    Node, Task, order_unknown,
)
from engine.listing import IDS, ListerGone, ListerPool, file_paths, list_batch
from engine.queue import Outcome


def failure(exc: BaseException) -> Outcome:
    return Outcome(ok=False, error=describe(exc), transient=is_transient(exc), stop_run=is_disk_full(exc))


class Listing:
    """One folder's children: its subfolders as Nodes (the next round's tasks), everything else as rows
    start..start+count of `files`, the raw columns (engine.listing.FileBuffers) shared by the folders listed
    with it: engine.cache.FileRows keeps the rows of the folders whose completion counts."""

    __slots__ = ("folders", "parent", "files", "excluded_rows", "start", "count", "excluded", "specials")

    def __init__(self, folders=(), parent=None, files=None, excluded_rows=None, start=0, count=0, excluded=0,
                 specials=()):
        self.folders, self.parent, self.files = folders, parent, files
        self.excluded_rows = excluded_rows  # None, or a byte per row of `files`: 1 where excluded
        self.start, self.count, self.excluded = start, count, excluded
        self.specials = specials  # ((path, what), ...): FIFOs, sockets, devices found there, not migrated


EMPTY = Listing()


def list_folders(side: str, adapter: FSAdapter, tasks: list[Task], excluded: Callable[[str, bool], bool] | None,
                 listers: ListerPool | None = None) -> list[Outcome]:
    """List folders into the next level: in a helper process when there is one (engine.listing), else here.

    SRC: every folder is listed next round, every entry starts as to-copy. DST: a folder starts pending
    and every entry unclassified; the seal compares the whole level with SRC in one SQL pass (DuckDB does
    per row what would cost microseconds of Python each), and un-pends the folders SRC does not have."""
    paths = [t.node.path for t in tasks]
    if listers is not None and listers.usable:
        try:
            results, files = listers.list(adapter.root, side, paths)
        except ListerGone as exc:
            return [failure(exc)] * len(tasks)
    else:
        results, files = list_batch(side, adapter.list, paths)
    n_files = len(files[IDS]) // 8
    excluded_rows = None
    if excluded is not None and n_files:  # a Python call per row, only when excludes are configured
        excluded_rows = bytes(excluded(p, False) for p in file_paths(files, 0, n_files))
    outcomes, start = [], 0
    for task, result in zip(tasks, results):
        outcomes.append(_outcome(side, task, result, excluded, files, excluded_rows, start))
        if not isinstance(result, OSError):
            start += result[5]
    return outcomes


def _outcome(side: str, task: Task, result, excluded: Callable[[str, bool], bool] | None,
             files, excluded_rows: bytes | None, start: int) -> Outcome:
    if isinstance(result, OSError):
        if isinstance(result, (FileNotFoundError, NotADirectoryError)) and side == DST:
            return Outcome(children=EMPTY)  # nothing there: every expected SRC entry stays to copy (missing)
        if isinstance(result, FileNotFoundError):  # deleted since its parent's listing: nothing to migrate
            return Outcome(children=EMPTY, kind="vanished")
        return failure(result)
    f_paths, f_ids, f_sizes, f_mtimes, f_modes, count = result[:6]
    specials = result[6] if len(result) > 6 else ()
    if specials and excluded is not None:
        specials = tuple(s for s in specials if not excluded(s[0], False))
    folder = task.node
    depth, parent_id = folder.depth + 1, folder.id
    copy_status, action = (PENDING, ACTION_COPY) if side == SRC else (None, None)
    if excluded is None:
        folders = [Node(i, parent_id, p, depth, FOLDER, s, m, md, PENDING, copy_status, action)
                   for i, p, s, m, md in zip(f_ids, f_paths, f_sizes, f_mtimes, f_modes)]
        n_excluded = 0
    else:
        gone = (EXCLUDED, EXCLUDED) if side == SRC else (None, None)
        folders = [Node(i, parent_id, p, depth, FOLDER, s, m, md, EXCLUDED, *gone) if excluded(p, True) else
                   Node(i, parent_id, p, depth, FOLDER, s, m, md, PENDING, copy_status, action)
                   for i, p, s, m, md in zip(f_ids, f_paths, f_sizes, f_mtimes, f_modes)]
        n_excluded = excluded_rows[start:start + count].count(1) if count else 0
    if not count:
        return Outcome(children=Listing(folders, specials=specials))
    return Outcome(children=Listing(folders, folder, files, excluded_rows, start, count, n_excluded, specials))


def classify(dst_type: str, dst_size: int, dst_mtime: int, src: Node) -> str:
    """One DST entry against its SRC entry (the live mirror). Store.classify_dst does the same in SQL
    for a traversal's whole level: the two must agree (tests check both paths)."""
    if dst_type != src.type and src.type == FOLDER:
        return CHANGED  # the copy makes the folder, or refuses what stands in its way
    if dst_type == FOLDER and src.type == FOLDER:
        return IDENTICAL
    if order_unknown(dst_mtime, src.mtime_ns):
        return CHANGED  # to copy: the copy compares the exact dates before writing anything
    # another type on DST newer than the source is kept, as the copy keeps it (engine.copying.in_the_way)
    if dst_type == src.type and dst_size == src.size and abs(dst_mtime - src.mtime_ns) <= MTIME_WINDOW_NS:
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


def create_folder(dst: FSAdapter, task: Task, src: FSAdapter | None = None) -> Outcome:
    node = task.node
    return outcome(copying.make_folder(dst, node.path, node.mode, src))


def copy_entry(src: FSAdapter, dst: FSAdapter, task: Task, heartbeat: Callable[[], None],
               limiter: BandwidthLimiter, verify: bool, progress: Callable[[int], None],
               strict: bool = False) -> Outcome:
    """Copy one file or symlink to a temporary name, then rename it over the final name (engine.copying).

    The destination is checked again just before the rename: a file that became newer than the source
    since traversal is kept. The temporary file never survives a failure."""
    node = task.node
    return outcome(copying.copy_entry(src, dst, node.path, node.type, heartbeat, limiter, verify, progress,
                                      strict=strict))
