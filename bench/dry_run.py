"""Compare-only runs: `migrate run --dry-run` vs `rsync -a --update --dry-run` vs
`rclone copy --update --dry-run --create-empty-src-dirs`, on the 20k and 100k trees.

    python bench/dry_run.py                         # 20k and 100k, warm cache, 5 runs each, alternating
    python bench/dry_run.py --trees 100k --reps 7 --cold
    python bench/dry_run.py --trees 500k --reps 5 --tools migrate,rsync,rclone   # generates 500k first (~55 s)
    python bench/dry_run.py --migrate-flag=--src-workers=2 --label w2   # extra flags for migrate
    python bench/dry_run.py --trees 20k --fuse --tools migrate,migrate-narrow,rclone --reps 3

--fuse reads both trees through read-only FUSE mounts (`rclone mount`, attributes never cached: every
lstat is a round trip to a user-space daemon, as on sshfs or a cloud mount; needs fusermount3). The row
migrate-narrow is migrate with max_listing_workers=2: its listing governor never widens (engine/governor.py).

The destination is never written (all three are dry runs), so no reset is needed between runs.
Wall = perf_counter around the process; peak RSS and CPU from /usr/bin/time. Tools run in a rotated
order each repetition; the median is reported. Entries/s counts SRC entries (files, folders, links).
"""

from __future__ import annotations

import os
import sys

# bench/copy.py would shadow the standard library's `copy` (imported by dataclasses): keep this folder
# on the path, but after the standard library.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE] + [_HERE]

import argparse
import contextlib
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from common import (
    MIGRATE, PYTHON, Series, drop_caches, ensure_tree, fresh_db, reset_dst, save, table, timed, tree_dir, tree_info,
    wait_for_quiet,
)


PROPOSALS = "all"


def commands(tree: str, migrate_flags: list[str], roots: tuple[str, str] | None = None) -> dict[str, list[str]]:
    d = tree_dir(tree)
    src, dst = roots or (str(d / "src"), str(d / "dst"))
    return {
        "migrate": [MIGRATE, "run", src, dst, "--db", fresh_db(f"dry-{tree}"), "--dry-run", *migrate_flags],
        "migrate-narrow": [MIGRATE, "run", src, dst, "--db", fresh_db(f"dryn-{tree}"), "--dry-run",
                           "--max-listing-workers", "2", *migrate_flags],
        "migrate+proposals": [PYTHON, os.path.join(_HERE, "migrate_patched.py"), "--proposals", PROPOSALS, "run", src,
                              dst, "--db", fresh_db(f"dryp-{tree}"), "--dry-run", *migrate_flags],
        "rsync": ["rsync", "-a", "--update", "--dry-run", f"{src}/", f"{dst}/"],
        "rclone": ["rclone", "copy", "--update", "--dry-run", "--create-empty-src-dirs", src, dst],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trees", default="20k,100k")
    p.add_argument("--tools", default="migrate,rsync,rclone")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--cold", action="store_true", help="also runs with the page cache dropped before each")
    p.add_argument("--migrate-flag", action="append", default=[], help="extra flag for migrate (repeatable)")
    p.add_argument("--proposals", default=None, metavar="NAMES",
                   help="also run migrate with bench/proposals.py applied (names, or 'all'): row migrate+proposals")
    p.add_argument("--label", default="", help="suffix of the migrate row and the result file")
    p.add_argument("--max-load", type=float, default=None, help="wait until the load average is below this")
    p.add_argument("--fuse", action="store_true", help="read the trees through read-only FUSE mounts (rclone mount)")
    args = p.parse_args()
    trees = args.trees.split(",")
    tools = args.tools.split(",")
    global PROPOSALS
    if args.proposals:
        PROPOSALS = args.proposals
        tools.insert(1, "migrate+proposals")
    caches = ["warm"]
    cold_ok = None
    if args.cold:
        cold_ok = drop_caches()
        if cold_ok:
            caches.append("cold")
        else:
            print("cannot drop the page cache here (needs root): cold runs skipped", file=sys.stderr)
    results: list[Series] = []
    for tree in trees:
        ensure_tree(tree)
        reset_dst(tree)  # an earlier copy benchmark would have changed what the dry runs compare
        with fuse_mounts(tree) if args.fuse else contextlib.nullcontext() as roots:
            results.extend(_series(tree, caches, tools, roots, args))
    _report(results, args, cold_ok)


@contextlib.contextmanager
def fuse_mounts(tree: str):
    """The tree's src and dst mounted read-only through rclone's FUSE daemon, attributes never cached."""
    d = tree_dir(tree)
    top = Path(tempfile.mkdtemp(prefix=f"fuse-{tree}-"))
    mounted = []
    try:
        for side in ("src", "dst"):
            point = top / side
            point.mkdir()
            subprocess.run(["rclone", "mount", str(d / side), str(point), "--read-only", "--daemon",
                            "--attr-timeout", "0s", "--dir-cache-time", "0s"], check=True,
                           stderr=subprocess.DEVNULL)
            mounted.append(point)
        yield str(top / "src"), str(top / "dst")
    finally:
        for point in mounted:
            subprocess.run(["fusermount3", "-u", str(point)], check=False)
        shutil.rmtree(top, ignore_errors=True)


def _series(tree: str, caches: list[str], tools: list[str], roots, args) -> list[Series]:
    results = []
    for cache in caches:
        where = f"{tree}/{cache}" + ("/fuse" if roots else "")
        series = {t: Series(t + (f"[{args.label}]" if t == "migrate" and args.label else ""), where)
                  for t in tools}
        for rep in range(args.reps + 1):  # rep 0 warms the cache and the binaries, not counted
            order = tools[rep % len(tools):] + tools[:rep % len(tools)]
            for tool in order:
                if args.max_load is not None:
                    wait_for_quiet(args.max_load)
                if cache == "cold":
                    drop_caches()
                run = timed(commands(tree, args.migrate_flag, roots)[tool])
                if rep:
                    series[tool].runs.append(run)
                print(f"  {tree} {cache} rep {rep} {tool:8s} {run.wall:7.3f} s  {run.max_rss_kb / 1024:6.1f} MB"
                      f"  cpu {run.user_s + run.sys_s:5.2f} s  load {run.load:.2f}", file=sys.stderr)
        results.extend(series.values())
    return results


def _report(results: list[Series], args, cold_ok) -> None:
    rows = []
    for s in results:
        tree = s.tree.split("/")[0]
        info = tree_info(tree)
        entries = info["src_files"] + info["src_folders"] + info["src_symlinks"]
        ref = {t.tool: t.median for t in results if t.tree == s.tree}
        rows.append([s.tool, s.tree, f"{s.median:.3f}", f"{min(r.wall for r in s.runs):.3f}",
                     f"{entries / s.median:,.0f}", f"{s.peak_rss_mb:.0f}", f"{s.cpu_median:.2f}",
                     f"{s.median / ref['rsync']:.2f}x" if "rsync" in ref else "-",
                     f"{s.median / ref['rclone']:.2f}x" if "rclone" in ref else "-"])
    print(table(rows, ["tool", "tree/cache", "wall med s", "min s", "entries/s", "peak RSS MB", "cpu s",
                       "vs rsync", "vs rclone"]))
    path = save("dry_run" + (f"-{args.label}" if args.label else ""),
                {"reps": args.reps, "cold_cache_permitted": cold_ok, "migrate_flags": args.migrate_flag,
                 "series": [s.as_dict() for s in results]})
    print(f"\nresults: {path}")


if __name__ == "__main__":
    main()
