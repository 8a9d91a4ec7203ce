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
    ACTION_COPY, ACTION_KEEP_DST_NEWER, ACTION_NOT_ON_SRC, ACTION_SKIP, CHANGED, DST, DST_NEWER, EXCLUDED,
    FAILED, FOLDER, IDENTICAL, MTIME_WINDOW_NS, PENDING, SKIPPED, SRC, SUCCESSFUL, SYMLINK, Node, Task,
    is_temp_name, join, node_id, parent_of,
)
from engine.queue import Outcome

CHUNK = 8 << 20  # per copy step: the unit of heartbeat, pause checks and bandwidth accounting


def failure(exc: BaseException) -> Outcome:
    return Outcome(ok=False, error=describe(exc), transient=is_transient(exc), stop_run=is_disk_full(exc))


def list_src(adapter: FSAdapter, task: Task, excluded: Callable[[str, bool], bool] | None) -> Outcome:
    folder = task.node
    try:
        entries = adapter.list(folder.path)
    except FileNotFoundError:
        return Outcome(ok=False, error="folder vanished from the source since it was discovered")
    except OSError as exc:
        return failure(exc)
    depth, parent_id, base = folder.depth + 1, folder.id, folder.path
    children = []
    append = children.append
    for e in entries:
        path = f"{base}/{e.name}" if base else e.name
        if excluded is not None and excluded(path, e.type == FOLDER):
            append(Node(node_id(SRC, path), parent_id, path, depth, e.type, e.size, e.mtime_ns, e.mode,
                        EXCLUDED, EXCLUDED, EXCLUDED))
            continue
        append(Node(node_id(SRC, path), parent_id, path, depth, e.type, e.size, e.mtime_ns, e.mode,
                    PENDING if e.type == FOLDER else SUCCESSFUL, PENDING, ACTION_COPY))
    return Outcome(children=children)


def classify(dst_type: str, dst_size: int, dst_mtime: int, src: Node) -> str:
    if dst_type != src.type:
        return CHANGED
    if dst_type == FOLDER:
        return IDENTICAL
    if dst_size == src.size and abs(dst_mtime - src.mtime_ns) <= MTIME_WINDOW_NS:
        return IDENTICAL
    if dst_mtime > src.mtime_ns + MTIME_WINDOW_NS:
        return DST_NEWER
    return CHANGED


# SRC copy decision that follows each DST classification: (copy_status, action); None leaves it pending
SRC_DECISION = {IDENTICAL: (SUCCESSFUL, ACTION_SKIP), DST_NEWER: (SKIPPED, ACTION_KEEP_DST_NEWER)}
DST_ACTION = {IDENTICAL: ACTION_SKIP, DST_NEWER: ACTION_KEEP_DST_NEWER, CHANGED: ACTION_COPY,
              ACTION_NOT_ON_SRC: ACTION_NOT_ON_SRC}


def list_dst(adapter: FSAdapter, task: Task, excluded: Callable[[str, bool], bool] | None) -> Outcome:
    """List a DST folder and compare it with the SRC children expected there."""
    folder = task.node
    parent_status, expected_nodes = task.expected
    if parent_status is not None and parent_status != SUCCESSFUL:
        return Outcome(ok=False, error="the matching source folder could not be listed; retry mode lists both")
    try:
        entries = adapter.list(folder.path)
    except (FileNotFoundError, NotADirectoryError):
        return Outcome(children=[])  # nothing there: every expected SRC entry stays pending (missing)
    except OSError as exc:
        return failure(exc)
    expected = {n.name: n for n in expected_nodes}
    depth, parent_id, base = folder.depth + 1, folder.id, folder.path
    children, updates = [], []
    for e in entries:
        if is_temp_name(e.name):
            continue  # a temporary file of ours from an interrupted copy, not a destination entry
        path = f"{base}/{e.name}" if base else e.name
        src = expected.pop(e.name, None)
        if src is None:
            status = EXCLUDED if excluded is not None and excluded(path, e.type == FOLDER) else SUCCESSFUL
            children.append(Node(node_id(DST, path), parent_id, path, depth, e.type, e.size, e.mtime_ns,
                                 e.mode, status, None, ACTION_NOT_ON_SRC))
            continue
        if src.copy_status == EXCLUDED or src.status == EXCLUDED:
            children.append(Node(node_id(DST, path), parent_id, path, depth, e.type, e.size, e.mtime_ns,
                                 e.mode, EXCLUDED, None, EXCLUDED, src.id))
            continue
        match = classify(e.type, e.size, e.mtime_ns, src)
        decision = SRC_DECISION.get(match)
        if decision is not None:
            updates.append((src.id, *decision))
        # a DST folder is listed next round only when SRC has a folder there too
        status = PENDING if e.type == FOLDER and src.type == FOLDER else SUCCESSFUL
        children.append(Node(node_id(DST, path), parent_id, path, depth, e.type, e.size, e.mtime_ns, e.mode,
                             status, None, DST_ACTION[match], src.id))
    return Outcome(children=children, updates=updates)


class BandwidthLimiter:
    """Token bucket shared by every copy worker; the rate may change while a run is live."""

    def __init__(self, bytes_per_s: int):
        self.rate = bytes_per_s
        self._lock = threading.Lock()
        self._next_free = time.monotonic()

    def consume(self, n: int) -> None:
        rate = self.rate
        if rate <= 0:
            return
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next_free)
            self._next_free = start + n / rate
        if start > now:
            time.sleep(start - now)


def _stream(src_f, dst_f, size: int, heartbeat, limiter: BandwidthLimiter, progress) -> int:
    """Copy with the kernel's zero-copy paths when both ends are real files, else a bounded buffer loop."""
    copied = 0
    try:
        src_fd, dst_fd = src_f.fileno(), dst_f.fileno()
    except (OSError, AttributeError, ValueError):
        src_fd = dst_fd = None
    if src_fd is not None:
        for call in (getattr(os, "copy_file_range", None), os.sendfile):
            if call is None:
                continue
            try:
                while True:
                    step = CHUNK if limiter.rate <= 0 else max(64 << 10, min(CHUNK, limiter.rate // 4))
                    limiter.consume(step)
                    n = call(src_fd, dst_fd, step) if call is os.sendfile else call(src_fd, dst_fd, step)
                    if n == 0:
                        return copied
                    copied += n
                    progress(n)
                    heartbeat()
            except OSError as exc:
                if copied or exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
                    raise
    buf = bytearray(min(CHUNK, max(size, 1 << 16)))
    view = memoryview(buf)
    while True:
        n = src_f.readinto(buf)
        if not n:
            return copied
        limiter.consume(n)
        dst_f.write(view[:n])
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


