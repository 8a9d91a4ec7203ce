"""Run one migration in-process with timing probes on the engine's phases, and print where the wall
time goes: per-round timeline of each queue, time inside DuckDB calls (seal, expected_children,
queue_stats, load_level), adapter listings, worker reports, and the lock waits of the queues.

    python bench/profile_run.py 20k --dry-run
    python bench/profile_run.py 100k --dry-run --cprofile     # plus cProfile of every thread
    python bench/profile_run.py 20k                           # a full copy (destination reset first)
    python bench/profile_run.py 20k --set copy_workers=1 --set dst_workers=2

Probes wrap functions (time.perf_counter around the call), so each costs ~1 us a call; the totals are
summed over threads (two threads inside DuckDB at once count twice).
"""

from __future__ import annotations

import os
import sys

# bench/copy.py would shadow the standard library's `copy` (imported by dataclasses): keep this folder
# on the path, but after the standard library.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE] + [_HERE]

import argparse
import cProfile
import functools
import io
import pstats
import threading
import time
from collections import defaultdict

from common import ensure_tree, fresh_db, reset_dst, save, tree_dir

PROBES: dict[str, list[float]] = defaultdict(lambda: [0, 0.0])
EVENTS: list[tuple[float, str, str]] = []
T0 = time.perf_counter()


def probe(owner, attr: str, label: str | None = None, event: bool = False) -> None:
    fn = getattr(owner, attr)
    label = label or f"{getattr(owner, '__name__', owner)}.{attr}"

    @functools.wraps(fn)
    def wrapper(*a, **k):
        t = time.perf_counter()
        try:
            return fn(*a, **k)
        finally:
            dt = time.perf_counter() - t
            slot = PROBES[label]
            slot[0] += 1
            slot[1] += dt
            if event:
                EVENTS.append((t - T0, threading.current_thread().name, f"{label} {dt * 1000:.1f} ms"))

    setattr(owner, attr, wrapper)


class _ConProbe:
    """Wraps the store's DuckDB connection: time per statement kind (first words of the SQL)."""

    def __init__(self, con):
        self._con = con

    def execute(self, sql, *a, **k):
        t = time.perf_counter()
        try:
            return self._con.execute(sql, *a, **k)
        finally:
            words = sql.split()
            kind = " ".join(words[:3]) if words[0] in ("DELETE", "INSERT", "UPDATE") else " ".join(words[:2])
            slot = PROBES[f"sql: {kind[:40]}"]
            slot[0] += 1
            slot[1] += time.perf_counter() - t

    def __getattr__(self, name):
        return getattr(self._con, name)


def install_sql_probe() -> None:
    from engine import store
    orig_init = store.Store.__init__

    def __init__(self, path, con, *rest, **kw):
        orig_init(self, path, _ConProbe(con), *rest, **kw)

    store.Store.__init__ = __init__


def install() -> None:
    from engine import store, workers, queue
    from engine.adapters import local
    from engine.modes import traversal, copy as copy_mode
    S = store.Store
    for name in ("seal_traversal", "seal_copy", "seal_by_id", "load_level", "summarize", "_classify_dst",
                 "src_folders_not_listed"):
        if hasattr(S, name):
            probe(S, name, f"store.{name}", event=True)
    for name in ("write_queue_stats", "min_depth", "count", "sum_size", "grouped",
                 "created_folders", "run_info", "set_phase", "close", "open", "start_run"):
        if hasattr(S, name):
            probe(S, name, f"store.{name}")
    probe(local.LocalAdapter, "list", "adapter.list")
    probe(workers, "list_folders", "workers.list_folders")
    probe(workers, "copy_entry", "workers.copy_entry")
    probe(workers, "create_folder", "workers.create_folder")
    traversal.list_folders = workers.list_folders
    copy_mode.copy_entry, copy_mode.create_folder = workers.copy_entry, workers.create_folder
    probe(queue.Queue, "report", "queue.report (incl. lock wait)")
    probe(queue.Queue, "lease", "queue.lease (incl. waiting for work)")
    for cls, label in ((traversal.TraversalMode, "traversal"), (copy_mode.CopyMode, "copy")):
        probe(cls, "complete", f"{label}.complete")
        probe(cls, "prepare", f"{label}.prepare")
        probe(cls, "take", f"{label}.take")
        probe(cls, "begin_round", f"{label}.begin_round", event=True)
        probe(cls, "seal", f"{label}.seal", event=True)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("tree")
    p.add_argument("--dry-run", action="store_true")
    p.add_argument("--cprofile", action="store_true", help="cProfile every thread (slows the run ~2x)")
    p.add_argument("--no-probes", action="store_true")
    p.add_argument("--set", action="append", default=[], help="setting=value")
    p.add_argument("--sql", action="store_true", help="time every DuckDB statement by kind")
    p.add_argument("--timeline", action="store_true", help="print every seal / begin_round event")
    p.add_argument("--proposals", default=None, help="apply bench/proposals.py patches (names or 'all')")
    p.add_argument("--switch", type=float, default=None, help="sys.setswitchinterval (s) for the run")
    args = p.parse_args()
    if args.switch is not None:
        import sys
        sys.setswitchinterval(args.switch)
    ensure_tree(args.tree)
    reset_dst(args.tree)  # a dry run too: an earlier copy would have changed what it compares
    if args.proposals:
        import proposals
        proposals.apply(args.proposals)
    if not args.no_probes:
        install()
    if args.sql:
        install_sql_probe()
    from engine.migration import Migration
    from engine.settings import Settings
    overrides = dict(kv.split("=", 1) for kv in args.set)
    settings = Settings(**overrides)
    d = tree_dir(args.tree)
    profiles = []
    if args.cprofile:
        def hook(*_):
            prof = cProfile.Profile()
            profiles.append(prof)
            prof.enable()
        threading.setprofile(hook)  # the first event of each new thread starts its own profiler
    db = fresh_db("profile")
    t_start = time.perf_counter()
    m = Migration.create(db, str(d / "src"), str(d / "dst"), settings, dry_run=args.dry_run)
    t_created = time.perf_counter()
    m.start()
    m.wait()
    t_done = time.perf_counter()
    m.close()
    t_closed = time.perf_counter()
    threading.setprofile(None)
    s = m.summary
    print(f"tree {args.tree} dry_run={args.dry_run} settings={overrides}")
    print(f"create {t_created - t_start:.3f} s, run {t_done - t_created:.3f} s, close {t_closed - t_done:.3f} s, "
          f"total {t_closed - t_start:.3f} s")
    if s:
        print(f"summary: files={s.src_files} folders={s.src_folders} identical={s.identical} to_copy={s.to_copy} "
              f"copied={s.copied} newer={s.dst_newer} not_on_src={s.not_on_src} failed={s.failed}")
    if m.fatal:
        print("FATAL:", m.fatal)
    print(f"\n{'probe':44s} {'calls':>8s} {'total s':>9s} {'per call us':>12s}")
    for label, (n, total) in sorted(PROBES.items(), key=lambda kv: -kv[1][1]):
        print(f"{label:44s} {n:8d} {total:9.3f} {1e6 * total / max(n, 1):12.1f}")
    if args.timeline:
        print("\ntimeline:")
        for t, thread, what in EVENTS:
            print(f"  {t:7.3f}  {thread:22s} {what}")
    if profiles:
        stats = None
        for prof in profiles:
            prof.disable()
            stats = pstats.Stats(prof) if stats is None else stats.add(prof)
        out = io.StringIO()
        stats.stream = out
        stats.sort_stats("tottime").print_stats(35)
        print(out.getvalue())
    save(f"profile-{args.tree}{'-dry' if args.dry_run else ''}", {
        "tree": args.tree, "dry_run": args.dry_run, "settings": overrides,
        "create_s": t_created - t_start, "run_s": t_done - t_created, "close_s": t_closed - t_done,
        "probes": {k: {"calls": n, "total_s": round(t, 4)} for k, (n, t) in PROBES.items()}})


if __name__ == "__main__":
    main()
