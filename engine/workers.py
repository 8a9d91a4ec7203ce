"""What a worker does with one task: list a folder, classify a DST listing, create a folder, copy a file.
Pure functions of (adapters, task): no locks, no DuckDB; the queue records the outcome."""

from __future__ import annotations

import errno
import os
import threading
import time
from typing import Callable

import xxhash

from engine.adapters.base import FSAdapter, describe, is_disk_full, is_transient
from engine.model import (
    ACTION_COPY, CHANGED, DST, DST_NEWER, EXCLUDED, FOLDER, IDENTICAL, MTIME_WINDOW_NS, PENDING, SRC,
    SUCCESSFUL, SYMLINK, Node, Task, TEMP_SUFFIX, node_id, parent_of,
)
from engine.queue import Outcome

CHUNK = 8 << 20  # per copy step: the unit of heartbeat, pause checks and bandwidth accounting


def failure(exc: BaseException) -> Outcome:
    return Outcome(ok=False, error=describe(exc), transient=is_transient(exc), stop_run=is_disk_full(exc))


def list_folder(side: str, adapter: FSAdapter, task: Task,
                excluded: Callable[[str, bool], bool] | None) -> Outcome:
    """List one folder into the nodes of the next level.

    SRC: every folder is listed next round, every entry starts as to-copy. DST: a folder starts pending
    and every entry unclassified; the seal compares the whole level with SRC in one SQL pass (DuckDB does
    per row what would cost microseconds of Python each), and un-pends the folders SRC does not have."""
    folder = task.node
    try:
        entries = adapter.list(folder.path)
    except (FileNotFoundError, NotADirectoryError) as exc:
        if side == DST:
            return Outcome(children=[])  # nothing there: every expected SRC entry stays to copy (missing)
        if isinstance(exc, FileNotFoundError):
            return Outcome(ok=False, error="folder vanished from the source since it was discovered")
        return failure(exc)
    except OSError as exc:
        return failure(exc)
    # Hot path: one Node per entry, with the per-entry work kept to a join, an id hash and the Node itself.
    depth, parent_id, base = folder.depth + 1, folder.id, folder.path
    prefix = f"{base}/" if base else ""
    new_node, nid = Node, node_id
    copy_status, action = (PENDING, ACTION_COPY) if side == SRC else (None, None)
    children = []
    append = children.append
    for name, kind, size, mtime_ns, mode in entries:
        if side == DST and name[:1] == "." and name.endswith(TEMP_SUFFIX):
            continue  # a temporary file of ours from an interrupted copy, not a destination entry
        path = prefix + name
        if excluded is not None and excluded(path, kind == FOLDER):
            append(new_node(nid(side, path), parent_id, path, depth, kind, size, mtime_ns, mode,
                            EXCLUDED, EXCLUDED if side == SRC else None, EXCLUDED if side == SRC else None))
            continue
        append(new_node(nid(side, path), parent_id, path, depth, kind, size, mtime_ns, mode,
                        PENDING if kind == FOLDER else SUCCESSFUL, copy_status, action))
    return Outcome(children=children)


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


def _step(limiter: BandwidthLimiter) -> int:
    """Bytes per copy step: a quarter second's worth under a limit, so heartbeats and pauses stay timely."""
    rate = limiter.rate
    return CHUNK if rate <= 0 else max(64 << 10, min(CHUNK, rate // 4))


def _stream(src_f, dst_f, size: int, heartbeat, limiter: BandwidthLimiter, progress) -> int:
    """Copy with the kernel's zero-copy paths when both ends are real files, else a bounded buffer loop.

    Each step moves up to CHUNK bytes (less under a bandwidth limit), so a file under CHUNK takes one call
    plus the one that sees the end. The limiter is charged the bytes actually moved, after the step: a
    1 KiB file must not pay for a whole step. The lease is extended after a step only when more data may
    follow (the file is not all copied yet, or the step was full): a small file does not take the lock."""
    copied = 0
    try:
        src_fd, dst_fd = src_f.fileno(), dst_f.fileno()
    except (OSError, AttributeError, ValueError):
        src_fd = dst_fd = None
    if src_fd is not None:
        for call in _ZERO_COPY:
            try:
                while True:
                    step = _step(limiter)
                    # sendfile(out, in, offset, count); copy_file_range(in, out, count)
                    n = call(dst_fd, src_fd, None, step) if call is _SENDFILE else call(src_fd, dst_fd, step)
                    if n == 0:
                        return copied
                    limiter.consume(n)
                    copied += n
                    progress(n)
                    if copied < size or n == step:
                        heartbeat()
            except OSError as exc:
                if copied or exc.errno not in _NO_ZERO_COPY:
                    raise
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


def copy_entry(src: FSAdapter, dst: FSAdapter, task: Task, heartbeat: Callable[[], None],
               limiter: BandwidthLimiter, verify: bool, progress: Callable[[int], None]) -> Outcome:
    """Copy one file or symlink to a temporary name, then rename it over the final name.

    The destination is checked again just before the rename: a file that became newer than the source
    since traversal is kept. The temporary file never survives a failure."""
    node = task.node
    now_src = src.stat(node.path)
    if now_src is None:
        return Outcome(ok=False, error="the source file vanished since traversal")
    if now_src.type != node.type:
        return Outcome(ok=False, error=f"the source changed from {node.type} to {now_src.type} since traversal")
    there = dst.stat(node.path)
    if there is not None:
        if there.type == node.type and there.size == now_src.size \
                and abs(there.mtime_ns - now_src.mtime_ns) <= MTIME_WINDOW_NS:
            return Outcome(kind="exists")  # already complete (e.g. copied before a crash)
        if there.mtime_ns > now_src.mtime_ns + MTIME_WINDOW_NS:
            return Outcome(kind="skipped")
        if there.type == FOLDER:
            return Outcome(ok=False, error="the destination has a folder where the source has a file")
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
        latest = dst.stat(node.path)
        if latest is not None and latest.mtime_ns > now_src.mtime_ns + MTIME_WINDOW_NS:
            return Outcome(kind="skipped")  # changed on the destination while we copied: keep it
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


