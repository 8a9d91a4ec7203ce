"""Proposed changes to engine files the benchmark owner does not edit (store.py, queue.py, migration.py),
applied as monkeypatches so that their gain can be measured before anyone changes the engine:

    python bench/profile_run.py 100k --dry-run --proposals all
    python bench/migrate_patched.py --proposals seal_update run SRC DST --db X --dry-run
    python bench/settings_matrix.py 100k --dry-run "" "PROPOSALS=all" "PROPOSALS=seal_update+release_arrow"

Each proposal keeps the engine's behaviour (same rows in the run file, same classification); they are
described, with the measured gains, in bench/README.md. store_table, expected_fast and quiet_notify
were adopted into the engine (f1bbefc). Names still here:

  seal_update      Store.seal_traversal: the level's rows are already in the file (written as the next
                   level by the previous seal, or loaded from it); update only its folders' traversal
                   status/attempts/error instead of deleting and re-inserting the whole level
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

ALL = ("seal_update", "release_arrow", "arrow_system_pool")


OPTIONAL = ("fsync_none", "switch")


def _enc(path: str) -> bytes:
    return path.encode("utf-8", "surrogateescape")


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
