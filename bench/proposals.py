"""Proposed changes to engine files the benchmark owner does not edit (store.py, queue.py, migration.py),
applied as monkeypatches so that their gain can be measured before anyone changes the engine:

    python bench/profile_run.py 100k --dry-run --proposals all
    python bench/migrate_patched.py --proposals fsync_none run SRC DST --db X --dry-run
    python bench/settings_matrix.py 100k --dry-run "" "PROPOSALS=fsync_none"

Each proposal keeps the engine's behaviour (same rows in the run file, same classification); they are
described, with the measured gains, in bench/README.md. store_table, expected_fast and quiet_notify
were adopted into the engine (f1bbefc), seal_update, release_arrow and arrow_system_pool later in their
own form (store.py: seals update the level's folders by id; the system allocator and a malloc_trim after
each seal). "all" is therefore empty now; the optional ones stay measurable:

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

ALL: tuple[str, ...] = ()  # every proposal measured so far was adopted


OPTIONAL = ("fsync_none", "switch")


# fsync_none (not in "all": it trades power-loss durability of the run file for speed) -----------------

def fsync_none() -> None:
    from engine import store as store_mod

    orig = store_mod.Store.__init__

    def __init__(self, path, con):
        orig(self, path, con)
        con.execute("SET fsync_mode = 'NONE'")

    store_mod.Store.__init__ = __init__


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
            raise SystemExit(f"unknown proposal {name!r}; known: {', '.join(ALL + OPTIONAL)}")
        globals()[name]()
    return chosen


if __name__ == "__main__":
    print(__doc__)
    _ = os
