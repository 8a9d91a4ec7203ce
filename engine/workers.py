"""What a worker does with one task: list a folder, classify a DST listing, create a folder, copy a file.
Pure functions of (adapters, task): no locks, no DuckDB; the queue records the outcome."""

from __future__ import annotations

import errno
import os
import threading
import time
from typing import Callable

import xxhash

from engine.adapters.base import Entry, FSAdapter, describe, is_disk_full, is_transient
from engine.model import (
    ACTION_COPY, CHANGED, DST, DST_NEWER, EXCLUDED, FOLDER, IDENTICAL, MTIME_WINDOW_NS, PENDING, SRC,
    SUCCESSFUL, SYMLINK, Node, Task, parent_of,
)
from engine.listing import ListerGone, ListerPool, split_listing
from engine.queue import Outcome

CHUNK = 8 << 20  # per copy step: the unit of heartbeat, pause checks and bandwidth accounting


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


_SENDFILE = getattr(os, "sendfile", None)
# copy_file_range fails with EXDEV across filesystems on recent kernels: sendfile then
_ZERO_COPY = tuple(call for call in (getattr(os, "copy_file_range", None), _SENDFILE) if call)
_NO_ZERO_COPY = (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP)
# Files from this size on have their destination looked at before copying as well as just before the
# rename: for a smaller file, copying it again when it turns out to be there already (a resumed run)
# costs less than the extra path lookup every file would pay.
PRECHECK_MIN = 1 << 20


def _step(limiter: BandwidthLimiter) -> int:
    """Bytes per copy step: a quarter second's worth under a limit, so heartbeats and pauses stay timely."""
    rate = limiter.rate
    return CHUNK if rate <= 0 else max(64 << 10, min(CHUNK, rate // 4))


def _stream_fds(src_fd: int, dst_fd: int, size: int, heartbeat, limiter: BandwidthLimiter, progress) -> int | None:
    """Copy between two file descriptors with the kernel's zero-copy calls; None when the kernel refuses
    them before any byte moved (the caller then copies through a buffer).

    Each step moves up to CHUNK bytes (less under a bandwidth limit). The last step of a file asks for one
    byte more than is left: the short count that comes back, landing exactly on the size the file had, is
    its end, so a small file takes a single call. The limiter is charged the bytes actually moved, after
    the step: a 1 KiB file must not pay for a whole step. The lease is extended after a step only when more
    data may follow (the file is not all copied yet, or the step was full): a small file does not take the
    queue's lock."""
    copied = 0
    for call in _ZERO_COPY:
        try:
            while True:
                step = _step(limiter)
                left = size - copied
                want = left + 1 if 0 <= left < step else step
                # sendfile(out, in, offset, count); copy_file_range(in, out, count)
                n = call(dst_fd, src_fd, None, want) if call is _SENDFILE else call(src_fd, dst_fd, want)
                if n == 0:
                    return copied
                limiter.consume(n)
                copied += n
                progress(n)
                if n < want and copied == size:
                    return copied
                if copied < size or n == step:
                    heartbeat()
        except OSError as exc:
            if copied or exc.errno not in _NO_ZERO_COPY:
                raise
    return None


def _stream_buffered(src_f, dst_f, size: int, heartbeat, limiter: BandwidthLimiter, progress) -> int:
    """The portable loop: file objects without file descriptors (the memory adapter), or zero-copy refused."""
    copied = 0
    buf = bytearray(min(CHUNK, max(size, 1 << 16)))
    while True:
        view = memoryview(buf)[:_step(limiter)]
        n = src_f.readinto(view)
        if not n:
            return copied
        dst_f.write(view[:n])
        limiter.consume(n)
        copied += n
        progress(n)
        heartbeat()


def _stream(src_f, dst_f, size: int, heartbeat, limiter: BandwidthLimiter, progress) -> int:
    """Copy with the kernel's zero-copy paths when both ends are real files, else a bounded buffer loop."""
    try:
        src_fd, dst_fd = src_f.fileno(), dst_f.fileno()
    except (OSError, AttributeError, ValueError):
        src_fd = dst_fd = None
    if src_fd is not None:
        copied = _stream_fds(src_fd, dst_fd, size, heartbeat, limiter, progress)
        if copied is not None:
            return copied
    return _stream_buffered(src_f, dst_f, size, heartbeat, limiter, progress)


def _hash(adapter: FSAdapter, path: str) -> bytes:
    h = xxhash.xxh3_128()
    with adapter.open_read(path) as f:
        buf = bytearray(CHUNK)
        while True:
            n = f.readinto(buf)
            if not n:
                return h.digest()
            h.update(memoryview(buf)[:n])


def create_folder(dst: FSAdapter, task: Task) -> Outcome:
    node = task.node
    try:
        dst.create_folder(node.path, node.mode)
        return Outcome(kind="folder")
    except FileExistsError:
        there = dst.stat(node.path)
        if there is not None and there.type == FOLDER:
            return Outcome(kind="exists")
        return Outcome(ok=False, error="the destination has a file where the source has a folder")
    except OSError as exc:
        return failure(exc)


def _in_the_way(there: Entry | None, now: Entry) -> Outcome | None:
    """What the entry at the final name means for a copy of the source entry `now`; None: nothing there,
    or an older or different file the copy replaces. Asked before copying (except for small files) and
    always once more just before the rename."""
    if there is None:
        return None
    if there.type == now.type and there.size == now.size and abs(there.mtime_ns - now.mtime_ns) <= MTIME_WINDOW_NS:
        return Outcome(kind="exists")  # already complete (e.g. copied before a crash)
    if there.mtime_ns > now.mtime_ns + MTIME_WINDOW_NS:
        return Outcome(kind="skipped")  # newer on the destination: kept, never overwritten
    if there.type == FOLDER:
        return Outcome(ok=False, error="the destination has a folder where the source has a file")
    return None


def _changed(node: Node, now: Entry | None) -> Outcome:
    if now is None:
        return Outcome(ok=False, error="the source file vanished since traversal")
    return Outcome(ok=False, error=f"the source changed from {node.type} to {now.type} since traversal")


def copy_entry(src: FSAdapter, dst: FSAdapter, task: Task, heartbeat: Callable[[], None],
               limiter: BandwidthLimiter, verify: bool, progress: Callable[[int], None]) -> Outcome:
    """Copy one file or symlink to a temporary name, then rename it over the final name.

    The destination is checked again just before the rename: a file that became newer than the source
    since traversal is kept. The temporary file never survives a failure."""
    node = task.node
    if node.type != SYMLINK and hasattr(src, "open_file_fd") and hasattr(dst, "create_temp_fd"):
        return _copy_file_fds(src, dst, node, heartbeat, limiter, verify, progress)
    now_src = src.stat(node.path)
    if now_src is None or now_src.type != node.type:
        return _changed(node, now_src)
    early = _in_the_way(dst.stat(node.path), now_src)
    if early is not None:
        return early
    folder, name = parent_of(node.path), node.name
    temp = None
    try:
        if node.type == SYMLINK:
            temp = dst.create_temp_link(folder, name, src.read_link(node.path))
            mode = None
        else:
            temp, out = dst.create_temp(folder, name)
            with out, src.open_read(node.path) as inp:
                copied = _stream(inp, out, now_src.size, heartbeat, limiter, progress)
            if verify and _hash(src, node.path) != _hash(dst, temp):
                return Outcome(ok=False, error="verification failed: the copy differs from the source")
            mode = now_src.mode
        late = _in_the_way(dst.stat(node.path), now_src)  # changed on the destination while we copied?
        if late is not None:
            return late
        dst.commit_temp(temp, node.path, now_src.mtime_ns, mode)
        temp = None
        return Outcome(kind="file", bytes=0 if node.type == SYMLINK else copied)
    except OSError as exc:
        return failure(exc)
    finally:
        if temp is not None:
            try:
                dst.remove(temp)
            except OSError:
                pass


def _copy_file_fds(src: FSAdapter, dst: FSAdapter, node: Node, heartbeat: Callable[[], None],
                   limiter: BandwidthLimiter, verify: bool, progress: Callable[[int], None]) -> Outcome:
    """copy_entry for a regular file between adapters that hand out file descriptors (local disks).

    The source is opened first (never through a symlink) and its size, mtime and mode come from the open
    file; the temporary file is a raw descriptor. A small file costs open, fstat, open, one copy call,
    two closes, then lstat of the final name, chmod, utime and rename: 10 system calls, where the file
    object path took 15 (each one also hands the GIL to another thread and takes it back)."""
    temp = None
    try:
        src_fd, now = src.open_file_fd(node.path)
        if src_fd is None:
            return _changed(node, now)
        try:
            if now.size >= PRECHECK_MIN:
                early = _in_the_way(dst.stat(node.path), now)
                if early is not None:
                    return early
            temp, out_fd = dst.create_temp_fd(parent_of(node.path), node.name)
            try:
                copied = _stream_fds(src_fd, out_fd, now.size, heartbeat, limiter, progress)
                if copied is None:
                    with open(src_fd, "rb", buffering=0, closefd=False) as inp, \
                            open(out_fd, "wb", buffering=0, closefd=False) as out:
                        copied = _stream_buffered(inp, out, now.size, heartbeat, limiter, progress)
            finally:
                os.close(out_fd)
        finally:
            os.close(src_fd)
        if verify and _hash(src, node.path) != _hash(dst, temp):
            return Outcome(ok=False, error="verification failed: the copy differs from the source")
        late = _in_the_way(dst.stat(node.path), now)  # changed on the destination while we copied?
        if late is not None:
            return late
        dst.commit_temp(temp, node.path, now.mtime_ns, now.mode)
        temp = None
        return Outcome(kind="file", bytes=copied)
    except OSError as exc:
        return failure(exc)
    finally:
        if temp is not None:
            try:
                dst.remove(temp)
            except OSError:
                pass
