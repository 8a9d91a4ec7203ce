"""Full one-way migrations: `migrate run` vs `rsync -a --update` vs `rclone copy --update
--create-empty-src-dirs` (default, and with --transfers 8 --checkers 16), on the 20k small-file tree
(60% already on the destination: the default mirror) and on 200 x 16 MB files (empty destination).

    python bench/copy.py                          # both trees, 3 runs per tool, alternating
    python bench/copy.py --trees 20k --reps 5
    python bench/copy.py --migrate-flag=--copy-workers=1 --label cw1 --tools migrate,rsync
    python bench/copy.py --trees 20k --tools rsync --engine before=/tmp/a --engine after=/tmp/b --reps 7
    python bench/copy.py --trees 20k --tools rsync --copy-phase --engine before=/tmp/a --engine after=/tmp/b

--engine NAME=DIR adds a row `migrate[NAME]` that runs DIR's engine (`python -m engine.cli` in DIR, a folder
holding engine/, e.g. `git archive HEAD engine | tar -x -C DIR`), alternating with the other tools.
--copy-phase times only the copy phase of migrate: a dry run on the pristine destination writes a planned
run file once per engine, and each timed run is `migrate run` on a copy of it (the phase `planned` goes
straight to copying); rsync and rclone still do their whole job.

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
import shutil
import subprocess
import sys
import time

from common import (
    MIGRATE, PYTHON, Series, ensure_tree, fresh_db, purge_trash, reset_dst, save, table, timed, tree_dir,
    wait_for_quiet,
)

TOOLS = ("migrate", "rsync", "rclone", "rclone-t8c16")


PROPOSALS = "all"


ENGINES: dict[str, str] = {}  # --engine NAME=DIR: tool "migrate[NAME]"
PLANNED: dict[tuple[str, str], str] = {}  # (tool, tree) -> planned run file (--copy-phase)


def migrate_base(tool: str) -> tuple[list[str], str | None]:
    """The command that starts this migrate tool, and the folder it must start in."""
    if tool.startswith("migrate[") and tool[8:-1] in ENGINES:
        return [PYTHON, "-m", "engine.cli"], ENGINES[tool[8:-1]]
    if tool == "migrate+proposals":
        return [PYTHON, os.path.join(_HERE, "migrate_patched.py"), "--proposals", PROPOSALS], None
    return [MIGRATE], None


def run_file(tool: str, tree: str, tag: str) -> str:
    """A fresh run file; with --copy-phase a copy of the tool's planned run file (made once, by a dry run
    on the pristine destination, which it leaves as it was)."""
    db = fresh_db(f"{tag}-{tree}")
    planned = PLANNED.get((tool, tree))
    if planned == "":
        planned = PLANNED[(tool, tree)] = fresh_db(f"planned-{tag}-{tree}")
        d = tree_dir(tree)
        base, cwd = migrate_base(tool)
        reset_dst(tree)
        subprocess.run([*base, "run", str(d / "src"), str(d / "dst"), "--db", planned, "--dry-run"],
                       check=True, stdout=subprocess.DEVNULL, cwd=cwd)
    if planned:
        shutil.copyfile(planned, db)
    return db


def commands(tree: str, migrate_flags: list[str], tools: list[str]) -> dict[str, tuple[list[str], str | None]]:
    d = tree_dir(tree)
    src, dst = str(d / "src"), str(d / "dst")
    rclone = ["rclone", "copy", "--update", "--create-empty-src-dirs", src, dst]
    out = {}
    for tool in tools:
        if tool.startswith("migrate"):
            base, cwd = migrate_base(tool)
            tag = "copy" + "".join(c if c.isalnum() else "-" for c in tool[7:])
            out[tool] = ([*base, "run", src, dst, "--db", run_file(tool, tree, tag), *migrate_flags], cwd)
    out.update({
        "rsync": (["rsync", "-a", "--update", f"{src}/", f"{dst}/"], None),
        "rclone": (rclone, None),
        "rclone-t8c16": ([*rclone, "--transfers", "8", "--checkers", "16"], None),
    })
    return out


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


def wait_idle(patterns: list[str], timeout: float = 120.0) -> None:
    """Wait until no other process's command line holds any of the patterns (from /proc): this process
    and its ancestors (which hold the patterns in their own command lines) do not count."""
    mine, pid = set(), os.getpid()
    while pid > 1:
        mine.add(pid)
        try:
            with open(f"/proc/{pid}/stat") as f:
                pid = int(f.read().rpartition(")")[2].split()[1])
        except (OSError, ValueError, IndexError):
            break
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        busy = False
        for pid in filter(str.isdigit, os.listdir("/proc")):
            if int(pid) in mine:
                continue
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if any(p in cmdline for p in patterns):
                busy = True
                break
        if not busy:
            return
        time.sleep(0.5)


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
    p.add_argument("--engine", action="append", default=[], metavar="NAME=DIR",
                   help="also run DIR's engine (python -m engine.cli in DIR): row migrate[NAME] (repeatable)")
    p.add_argument("--copy-phase", action="store_true",
                   help="time only migrate's copy phase, from a planned run file made once per engine")
    p.add_argument("--wait-idle", action="append", default=[], metavar="TEXT",
                   help="before each run, wait (up to 2 min) until no process whose command line holds TEXT "
                        "runs: another session's benchmark on this shared machine (repeatable)")
    args = p.parse_args()
    trees = args.trees.split(",")
    tools = args.tools.split(",")
    global PROPOSALS
    if args.proposals:
        PROPOSALS = args.proposals
        tools.insert(1, "migrate+proposals")
    for spec in args.engine:
        name, _, folder = spec.partition("=")
        ENGINES[name] = os.path.abspath(folder)
        tools.insert(len(ENGINES) - 1, f"migrate[{name}]")
    if args.copy_phase:
        PLANNED.update({(t, tree): "" for t in tools if t.startswith("migrate") for tree in trees})
    results: list[Series] = []
    left: dict[tuple[str, str], list[int]] = {}
    tool_of: dict[int, str] = {}  # id(series) -> tool (a series' label may differ from its tool)
    for tree in trees:
        ensure_tree(tree)
        transfer_size(tree)
        warm_source(tree)
        big = tree.startswith("big")
        series = {t: Series(t + (f"[{args.label}]" if t == "migrate" and args.label else ""), tree) for t in tools}
        for rep in range(args.reps):
            order = tools[rep % len(tools):] + tools[:rep % len(tools)]
            for tool in order:
                cmd, cwd = commands(tree, args.migrate_flag, [tool])[tool]  # may make a planned run file
                reset_dst(tree)
                if args.max_load is not None:
                    wait_for_quiet(args.max_load)
                if args.wait_idle:
                    wait_idle(args.wait_idle)
                run = timed(cmd, cwd=cwd)
                series[tool].runs.append(run)
                n_left = -1 if args.no_check else left_over(tree)
                left.setdefault((tool, tree), []).append(n_left)
                print(f"  {tree} rep {rep} {tool:13s} {run.wall:7.3f} s  {run.max_rss_kb / 1024:6.1f} MB  "
                      f"cpu {run.user_s + run.sys_s:5.2f} s  load {run.load:.2f}  left {n_left}", file=sys.stderr)
                if big:
                    purge_trash()
                    time.sleep(1)
        results.extend(series.values())
        tool_of.update({id(v): k for k, v in series.items()})
    rows = []
    for s in results:
        files, size = transfer_size(s.tree)
        ref = {t.tool: t.median for t in results if t.tree == s.tree}
        rows.append([s.tool, s.tree, f"{s.median:.3f}", f"{min(r.wall for r in s.runs):.3f}",
                     f"{files / s.median:,.0f}", f"{size / s.median / 1e6:,.1f}", f"{s.peak_rss_mb:.0f}",
                     f"{s.cpu_median:.2f}", max(left[(tool_of[id(s)], s.tree)]),
                     f"{s.median / ref['rsync']:.2f}x" if "rsync" in ref else "-",
                     f"{s.median / ref['rclone']:.2f}x" if "rclone" in ref else "-"])
    print(table(rows, ["tool", "tree", "wall med s", "min s", "files/s", "MB/s", "peak RSS MB", "cpu s", "left",
                       "vs rsync", "vs rclone"]))
    transfer = {t: dict(zip(("files", "bytes"), transfer_size(t))) for t in trees}
    path = save("copy" + (f"-{args.label}" if args.label else ""),
                {"reps": args.reps, "migrate_flags": args.migrate_flag, "transfer": transfer,
                 "engines": ENGINES, "copy_phase": args.copy_phase,
                 "series": [s.as_dict() for s in results],
                 "left_over": {f"{k[0]}@{k[1]}": v for k, v in left.items()}})
    print(f"\nresults: {path}")


if __name__ == "__main__":
    main()
