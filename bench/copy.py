"""Full one-way migrations: `migrate run` vs `rsync -a --update` vs `rclone copy --update
--create-empty-src-dirs` (default, and with --transfers 8 --checkers 16), on the 20k small-file tree
(60% already on the destination: the default mirror) and on 200 x 16 MB files (empty destination).

    python bench/copy.py                          # both trees, 3 runs per tool, alternating
    python bench/copy.py --trees 20k --reps 5
    python bench/copy.py --migrate-flag=--copy-workers=1 --label cw1 --tools migrate,rsync

Before every timed run the destination is reset by moving it aside and copying the pristine one back
(mv dst trash/N && cp -a dst.orig dst), then `sync`, so no run pays for the previous one's dirty pages.
For big200 the moved-aside copies (3.2 GB each) are deleted after each run (a few big files, not the
many-small-files deletion that slows later creates on this ext4). After each run, `rsync --dry-run
--itemize-changes` counts what is still different (should be 0 for every tool): `left` in the table.
"""

from __future__ import annotations

import os
import sys

# bench/copy.py would shadow the standard library's `copy` (imported by dataclasses): keep this folder
# on the path, but after the standard library.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE] + [_HERE]

import argparse
import json
import re
import subprocess
import sys
import time

from common import (
    MIGRATE, PYTHON, Series, ensure_tree, fresh_db, purge_trash, reset_dst, save, table, timed, tree_dir,
    wait_for_quiet,
)

TOOLS = ("migrate", "rsync", "rclone", "rclone-t8c16")


PROPOSALS = "all"


def commands(tree: str, migrate_flags: list[str]) -> dict[str, list[str]]:
    d = tree_dir(tree)
    src, dst = str(d / "src"), str(d / "dst")
    rclone = ["rclone", "copy", "--update", "--create-empty-src-dirs", src, dst]
    return {
        "migrate": [MIGRATE, "run", src, dst, "--db", fresh_db(f"copy-{tree}"), *migrate_flags],
        "migrate+proposals": [PYTHON, os.path.join(_HERE, "migrate_patched.py"), "--proposals", PROPOSALS, "run", src,
                              dst, "--db", fresh_db(f"copyp-{tree}"), *migrate_flags],
        "rsync": ["rsync", "-a", "--update", f"{src}/", f"{dst}/"],
        "rclone": rclone,
        "rclone-t8c16": [*rclone, "--transfers", "8", "--checkers", "16"],
    }


def transfer_size(tree: str) -> tuple[int, int]:
    """(regular files, bytes) a one-way `--update` migration has to copy, as rsync counts them."""
    d = tree_dir(tree)
    cache = d / "transfer.json"
    if cache.exists():
        data = json.loads(cache.read_text())
        return data["files"], data["bytes"]
    reset_dst(tree)
    out = subprocess.run(["rsync", "-a", "--update", "--dry-run", "--stats", f"{d}/src/", f"{d}/dst/"],
                         capture_output=True, text=True).stdout
    files = int(re.search(r"Number of regular files transferred: ([\d,]+)", out).group(1).replace(",", ""))
    size = int(re.search(r"Total transferred file size: ([\d,]+)", out).group(1).replace(",", ""))
    cache.write_text(json.dumps({"files": files, "bytes": size}))
    return files, size


def warm_source(tree: str) -> None:
    """Read the whole source once, so that every tool finds it in the page cache (an earlier cold-cache
    benchmark or a purge may have evicted it; the first timed run would pay for the disk reads)."""
    src = tree_dir(tree) / "src"
    subprocess.run(f"find '{src}' -type f -exec cat {{}} + > /dev/null", shell=True, check=False)


def left_over(tree: str) -> int:
    """Entries rsync would still change after a run (newer-on-destination files are kept by --update)."""
    d = tree_dir(tree)
    out = subprocess.run(["rsync", "-a", "--update", "--dry-run", "--itemize-changes", f"{d}/src/", f"{d}/dst/"],
                         capture_output=True, text=True).stdout
    return sum(1 for line in out.splitlines() if line and not line.startswith(".d..t"))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trees", default="20k,big200")
    p.add_argument("--tools", default=",".join(TOOLS))
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--migrate-flag", action="append", default=[], help="extra flag for migrate (repeatable)")
    p.add_argument("--proposals", default=None, metavar="NAMES",
                   help="also run migrate with bench/proposals.py applied (names, or 'all'): row migrate+proposals")
    p.add_argument("--label", default="")
    p.add_argument("--max-load", type=float, default=None, help="wait until the load average is below this")
    p.add_argument("--no-check", action="store_true", help="skip the rsync left-over check after each run")
    args = p.parse_args()
    trees = args.trees.split(",")
    tools = args.tools.split(",")
    global PROPOSALS
    if args.proposals:
        PROPOSALS = args.proposals
        tools.insert(1, "migrate+proposals")
    results: list[Series] = []
    left: dict[tuple[str, str], list[int]] = {}
    for tree in trees:
        ensure_tree(tree)
        transfer_size(tree)
        warm_source(tree)
        big = tree.startswith("big")
        series = {t: Series(t + (f"[{args.label}]" if t == "migrate" and args.label else ""), tree) for t in tools}
        for rep in range(args.reps):
            order = tools[rep % len(tools):] + tools[:rep % len(tools)]
            for tool in order:
                reset_dst(tree)
                if args.max_load is not None:
                    wait_for_quiet(args.max_load)
                run = timed(commands(tree, args.migrate_flag)[tool])
                series[tool].runs.append(run)
                n_left = -1 if args.no_check else left_over(tree)
                left.setdefault((tool, tree), []).append(n_left)
                print(f"  {tree} rep {rep} {tool:13s} {run.wall:7.3f} s  {run.max_rss_kb / 1024:6.1f} MB  "
                      f"cpu {run.user_s + run.sys_s:5.2f} s  load {run.load:.2f}  left {n_left}", file=sys.stderr)
                if big:
                    purge_trash()
                    time.sleep(1)
        results.extend(series.values())
    rows = []
    for s in results:
        files, size = transfer_size(s.tree)
        ref = {t.tool: t.median for t in results if t.tree == s.tree}
        rows.append([s.tool, s.tree, f"{s.median:.3f}", f"{min(r.wall for r in s.runs):.3f}",
                     f"{files / s.median:,.0f}", f"{size / s.median / 1e6:,.1f}", f"{s.peak_rss_mb:.0f}",
                     f"{s.cpu_median:.2f}", max(left[(s.tool.split('[')[0], s.tree)]),
                     f"{s.median / ref['rsync']:.2f}x" if "rsync" in ref else "-",
                     f"{s.median / ref['rclone']:.2f}x" if "rclone" in ref else "-"])
    print(table(rows, ["tool", "tree", "wall med s", "min s", "files/s", "MB/s", "peak RSS MB", "cpu s", "left",
                       "vs rsync", "vs rclone"]))
    transfer = {t: dict(zip(("files", "bytes"), transfer_size(t))) for t in trees}
    path = save("copy" + (f"-{args.label}" if args.label else ""),
                {"reps": args.reps, "migrate_flags": args.migrate_flag, "transfer": transfer,
                 "series": [s.as_dict() for s in results],
                 "left_over": {f"{k[0]}@{k[1]}": v for k, v in left.items()}})
    print(f"\nresults: {path}")


if __name__ == "__main__":
    main()
