"""Proposed changes to engine files the benchmark owner does not edit (store.py, queue.py, migration.py),
applied as monkeypatches so that their gain can be measured before anyone changes the engine:

    python bench/profile_run.py 100k --dry-run --proposals all
    python bench/migrate_patched.py --proposals store_table,seal_update run SRC DST --db X --dry-run
    python bench/settings_matrix.py 100k --dry-run "" "PROPOSALS=all" "PROPOSALS=store_table+seal_update"

Each proposal keeps the engine's behaviour (same rows in the run file, same classification); they are
described, with the measured gains, in bench/README.md. Names:

  store_table      Store._node_table: one attrgetter pass per column, str.encode("utf-8",
                   "surrogateescape") for os.fsencode, the parent path cut from the encoded bytes
  seal_update      Store.seal_traversal: the level's rows are already in the file (written as the next
                   level by the previous seal, or loaded from it); update only its folders' traversal
                   status/attempts/error instead of deleting and re-inserting the whole level
  expected_fast    Store.expected_children: decode each folder path once (not once per child row) and
                   the child paths with bytes.decode instead of os.fsdecode
  quiet_notify     Queue.report/lease: wake the run loop only when it has something to do (the buffer is
                   at the low-water mark AND the level still has tasks to pull, or nothing is left in
                   flight), not after every task in the last low_water tasks of every round
  release_arrow    Store._transaction: after each seal, hand the Arrow memory pool's cached free pages
                   back to the OS (pa.default_memory_pool().release_unused(), and glibc's malloc_trim(0)
                   when the pool is the system allocator); otherwise the peak of every seal's column
                   buffers stays resident
  arrow_system_pool  store.py at import: pa.set_memory_pool(pa.system_memory_pool()): the column buffers
                   of a seal come from malloc and go back to it, instead of a mimalloc pool that keeps
                   its peak (same speed, ~20 MB less peak RSS on 100k)
  fsync_none       (optional, not in "all") SET fsync_mode = 'NONE' on the run file: a kill -9 still
                   loses nothing (the page cache survives the process), a power cut may
  switch           (optional: no gain measured once quiet_notify is in) sys.setswitchinterval(0.0005)
                   while a migration runs: a worker that releases the GIL
                   for every readdir/lstat waits up to the interval (5 ms by default) to get it back
                   from a busy thread (a seal, a DuckDB fetch)
"""

from __future__ import annotations

import os
import sys
import threading
import time
from operator import attrgetter

ALL = ("store_table", "seal_update", "expected_fast", "quiet_notify", "release_arrow", "arrow_system_pool")


OPTIONAL = ("fsync_none", "switch")


def _enc(path: str) -> bytes:
    return path.encode("utf-8", "surrogateescape")


# store_table -----------------------------------------------------------------------------------------

def store_table() -> None:
    import pyarrow as pa
    from engine import store as store_mod
    from engine.model import SRC

    attrs = {
        "src": ("id", "parent_id", "path", "depth", "type", "size", "mtime_ns", "mode", "status",
                "copy_status", "action", "attempts", "error"),
        "dst": ("id", "parent_id", "path", "depth", "type", "size", "mtime_ns", "mode", "status",
                "action", "src_id", "attempts", "error"),
    }
    types = {
        "src": (pa.int64(), pa.int64(), None, pa.int32(), pa.string(), pa.int64(), pa.int64(), pa.int32(),
                pa.string(), pa.string(), pa.string(), pa.int32(), pa.string()),
        "dst": (pa.int64(), pa.int64(), None, pa.int32(), pa.string(), pa.int64(), pa.int64(), pa.int32(),
                pa.string(), pa.string(), pa.int64(), pa.int32(), pa.string()),
    }

    def _node_table(side, nodes):
        cols = [list(map(attrgetter(a), nodes)) for a in attrs[side]]
        paths = [p.encode("utf-8", "surrogateescape") for p in cols[2]]
        parents = [None if d == 0 else p.rpartition(b"/")[0] for p, d in zip(paths, cols[3])]
        arrays = [pa.array(paths, pa.binary()) if i == 2 else pa.array(c, t)
                  for i, (c, t) in enumerate(zip(cols, types[side]))]
        arrays.insert(3, pa.array(parents, pa.binary()))
        return pa.Table.from_arrays(arrays, names=list(store_mod.NODE_COLUMNS[side]))

    store_mod.Store._node_table = staticmethod(_node_table)
    _ = SRC


# seal_update -----------------------------------------------------------------------------------------

def seal_update() -> None:
    import pyarrow as pa
    from engine import store as store_mod
    from engine.model import DST, FOLDER, SRC

    Store = store_mod.Store

    def seed_roots(self, src_root, dst_root):
        # the roots are not in the file yet: written as "the next level" of a depth -1 seal
        self.seal_traversal(SRC, -1, [], [src_root], [])
        self.seal_traversal(DST, -1, [], [dst_root], [])

    def seal_traversal(self, side, depth, level, next_level, errors, src_updates=(), phase="traversal"):
        # Only folders are ever listed, so only their traversal status, attempts and error change
        # between the seal that wrote them (as the next level) and this one.
        folders = [n for n in level if n.type == FOLDER]
        upd = pa.table({
            "id": pa.array([n.id for n in folders], pa.int64()),
            "traversal_status": pa.array([n.status for n in folders], pa.string()),
            "attempts": pa.array([n.attempts for n in folders], pa.int32()),
            "error": pa.array([n.error for n in folders], pa.string()),
        })
        tables = {"nodes_tbl": self._node_table(side, list(next_level)), "level_upd": upd,
                  "errors_tbl": self._errors_table(side, phase, errors)}

        def body(con):
            if folders:
                con.execute(f"UPDATE {side}_nodes SET traversal_status = u.traversal_status, "
                            f"attempts = u.attempts, error = u.error FROM level_upd u "
                            f"WHERE {side}_nodes.depth = ? AND {side}_nodes.id = u.id", [depth])
            con.execute(f"DELETE FROM {side}_nodes WHERE depth = ?", [depth + 1])
            if next_level:
                con.execute(f"INSERT INTO {side}_nodes SELECT * FROM nodes_tbl")
            if errors:
                con.execute("INSERT INTO task_errors SELECT * FROM errors_tbl")
            if src_updates:
                self._update_src(src_updates, depth + 1)
            self._refresh_stats(side, [d for d in (depth, depth + 1) if d >= 0])

        self._transaction("seal", body, tables)

    Store.seed_roots = seed_roots
    Store.seal_traversal = seal_traversal


# expected_fast ---------------------------------------------------------------------------------------

def expected_fast() -> None:
    import pyarrow as pa
    from engine import store as store_mod
    from engine.model import Node

    def expected_children(self, depth, folders):
        batch = pa.table({"path": pa.array([_enc(p) for p in folders], pa.binary())})
        rows = self._with_tables(
            {"batch": batch},
            "SELECT b.path, p.traversal_status, s.id, s.path, s.type, s.size, s.mtime_ns, s.mode, "
            "s.traversal_status FROM batch b "
            "LEFT JOIN src_nodes p ON p.depth = ? AND p.path = b.path "
            "LEFT JOIN src_nodes s ON s.depth = ? AND s.parent_path = b.path",
            [depth, depth + 1])
        by_key: dict[bytes, tuple] = {}
        child_depth = depth + 1
        for folder, parent_status, sid, spath, stype, size, mtime, mode, status in rows:
            entry = by_key.get(folder)
            if entry is None:
                entry = by_key[folder] = (parent_status, [])
            if sid is not None:
                entry[1].append(Node(sid, None, spath.decode("utf-8", "surrogateescape"), child_depth, stype,
                                     size, mtime, mode, status))
        return {k.decode("utf-8", "surrogateescape"): v for k, v in by_key.items()}

    store_mod.Store.expected_children = expected_children


# quiet_notify ----------------------------------------------------------------------------------------

def quiet_notify() -> None:
    from engine import queue as queue_mod
    from engine.queue import Outcome

    Queue = queue_mod.Queue

    def _loop_has_work_locked(self) -> bool:
        if not self.in_flight and not self.buffer:
            return True  # the round may be complete
        return len(self.buffer) <= self.settings.low_water and not getattr(self, "_level_drained", False)

    def lease(self):
        with self.lock:
            while True:
                if self._stopping or self.state in ("completed", "stopped") \
                        or self._live_workers > self.target_workers:
                    self._live_workers -= 1
                    return None
                if self.buffer and not self.paused:
                    task = self.buffer.popleft()
                    self.in_flight[task.key] = [task, time.monotonic() + self.settings.lease_timeout]
                    if len(self.buffer) <= self.settings.low_water and not getattr(self, "_level_drained", False):
                        self._loop_wake.notify()
                    return task
                self._work_ready.wait(0.5)

    def report(self, task, outcome):
        with self.lock:
            lease_ = self.in_flight.get(task.key)
            if lease_ is None or lease_[0] is not task:
                self.stale_reports += 1
                return
            del self.in_flight[task.key]
            if outcome.ok:
                self.mode.complete(task, outcome)
                self.completed_total += 1
                self.round_completed += 1
            elif outcome.stop_run:
                self.mode.requeue(task)
                if self._on_stop_run:
                    threading.Thread(target=self._on_stop_run, args=(outcome.error,), daemon=True).start()
            elif outcome.transient and task.attempts < self.settings.max_retries:
                self._retry_later(task, outcome.error)
                self._loop_wake.notify()  # a new delayed task: the loop's next wake-up may be sooner
            else:
                task.attempts += 1
                self.mode.fail(task, outcome.error or "failed")
                self.failed_total += 1
                self.completed_total += 1
                self.round_completed += 1
            if _loop_has_work_locked(self):
                self._loop_wake.notify()

    def _drive_round(self, r):
        s = self.settings
        self._level_drained = False
        while True:
            batch = None
            with self.lock:
                now = time.monotonic()
                self._reclaim_locked(now)
                if self._stopping:
                    return self._drain_locked()
                if self.mode.round_done(r):
                    return True
                if not self.paused and len(self.buffer) <= s.low_water:
                    room = max(0, s.buffer_size - len(self.buffer))
                    want = min(s.pull_batch, room)
                    batch = self.mode.take(r, want) if room else None
                    # fewer than asked: nothing more to pull in this level until a retry or requeue
                    self._level_drained = room > 0 and len(batch or ()) < want
                if not batch:
                    self._loop_wake.wait(self._next_wakeup(now))
                    continue
            tasks = self.mode.prepare(batch)
            with self.lock:
                self.buffer.extend(tasks)
                self._work_ready.notify(len(tasks))

    orig_reclaim = Queue._reclaim_locked

    def _reclaim_locked(self, now):
        before = len(self.buffer) + len(self.delayed)
        orig_reclaim(self, now)
        if len(self.buffer) + len(self.delayed) != before:
            self._level_drained = False

    Queue.lease = lease
    Queue.report = report
    Queue._drive_round = _drive_round
    Queue._reclaim_locked = _reclaim_locked
    _ = Outcome


# release_arrow ---------------------------------------------------------------------------------------

def release_arrow() -> None:
    import pyarrow as pa
    from engine import store as store_mod

    orig = store_mod.Store._transaction
    try:
        import ctypes
        trim = ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        trim = None

    def _transaction(self, kind, body, tables):
        try:
            return orig(self, kind, body, tables)
        finally:
            tables.clear()  # drop the caller's references to the column buffers before releasing them
            pool = pa.default_memory_pool()
            pool.release_unused()
            if trim is not None and pool.backend_name == "system":
                trim(0)  # glibc keeps freed arena memory otherwise

    store_mod.Store._transaction = _transaction


# fsync_none (not in "all": it trades power-loss durability of the run file for speed) -----------------

def fsync_none() -> None:
    from engine import store as store_mod

    orig = store_mod.Store.__init__

    def __init__(self, path, con):
        orig(self, path, con)
        con.execute("SET fsync_mode = 'NONE'")

    store_mod.Store.__init__ = __init__


# arrow_system_pool -----------------------------------------------------------------------------------

def arrow_system_pool() -> None:
    import pyarrow as pa
    pa.set_memory_pool(pa.system_memory_pool())


# switch ----------------------------------------------------------------------------------------------

def switch() -> None:
    from engine import migration as migration_mod

    orig = migration_mod.Migration._drive_guarded

    def _drive_guarded(self):
        previous = sys.getswitchinterval()
        sys.setswitchinterval(float(os.environ.get("MIGRATE_BENCH_SWITCH", "0.0005")))
        try:
            orig(self)
        finally:
            sys.setswitchinterval(previous)

    migration_mod.Migration._drive_guarded = _drive_guarded


def apply(names: str | None) -> list[str]:
    if not names:
        return []
    chosen = list(ALL) if names == "all" else [n.strip() for n in names.replace("+", ",").split(",") if n.strip()]
    for name in chosen:
        if name not in ALL and name not in OPTIONAL:
            raise SystemExit(f"unknown proposal {name!r}; known: {', '.join(ALL)}")
        globals()[name]()
    return chosen


if __name__ == "__main__":
    print(__doc__)
    _ = os
