"""A/B of migrate settings on one tree: each configuration runs once per repetition, in a rotated
order, so slow phases of a shared machine hit every configuration alike. Used to choose the worker
and buffer defaults.

    python bench/settings_matrix.py 100k --dry-run --reps 5 \\
        "src_workers=1,dst_workers=1" "src_workers=2,dst_workers=2" "src_workers=1,dst_workers=2"
    python bench/settings_matrix.py 20k --reps 5 "copy_workers=1" "copy_workers=2" "copy_workers=4"

A configuration is comma-separated setting=value pairs (empty string: the defaults; separate with ';'
when a value holds commas); a pair may also set an environment variable of the migrate process,
ENV:NAME=value, or apply proposals from bench/proposals.py: PROPOSALS=all or PROPOSALS=a+b, or run
another checkout's engine: ENGINE=/dir/holding/engine (e.g. `git archive HEAD engine | tar -x -C /dir`).
A run that fails (non-zero exit) is reported and makes the script exit 1.
"""

from __future__ import annotations

import os
import sys

# bench/copy.py would shadow the standard library's `copy` (imported by dataclasses): keep this folder
# on the path, but after the standard library.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE] + [_HERE]

import argparse  # noqa: E402

from common import (  # noqa: E402
    MIGRATE, PYTHON, Series, drop_caches, ensure_tree, fresh_db, reset_dst, save, table, timed, tree_dir, tree_info,
    wait_for_quiet,
)


def parse(config: str) -> tuple[list[str], dict]:
    flags, env = [], {}
    for pair in filter(None, (p.strip() for p in config.split(";" if ";" in config else ","))):
        key, _, value = pair.partition("=")
        if key == "PROPOSALS":
            env["MIGRATE_BENCH_PROPOSALS"] = value
        elif key == "ENGINE":
            env["MIGRATE_BENCH_ENGINE"] = value
        elif key.startswith("ENV:"):
            env[key[4:]] = value
        else:
            flags.append(f"--{key.replace('_', '-')}={value}")
    return flags, env


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("tree")
    p.add_argument("configs", nargs="+")
    p.add_argument("--dry-run", action="store_true")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--cold", action="store_true", help="drop the page cache before each run (needs root)")
    p.add_argument("--max-load", type=float, default=None)
    args = p.parse_args()
    ensure_tree(args.tree)
    d = tree_dir(args.tree)
    reset_dst(args.tree)
    failed: list[tuple[str, int, str]] = []
    series = {c: Series(f"migrate {c or '(defaults)'}", args.tree) for c in args.configs}
    for rep in range(args.reps + (1 if args.dry_run else 0)):
        k = rep % len(args.configs)
        for config in args.configs[k:] + args.configs[:k]:
            flags, env = parse(config)
            if not args.dry_run:
                reset_dst(args.tree)
            if args.max_load is not None:
                wait_for_quiet(args.max_load)
            if args.cold and not drop_caches():
                raise SystemExit("cannot drop the page cache here (needs root)")
            base = [PYTHON, os.path.join(_HERE, "migrate_patched.py")] if "MIGRATE_BENCH_PROPOSALS" in env \
                else [MIGRATE]
            if "MIGRATE_BENCH_ENGINE" in env:  # another checkout's engine/: python -m engine.cli run there
                base = [PYTHON, "-m", "engine.cli"]
            cmd = [*base, "run", str(d / "src"), str(d / "dst"), "--db", fresh_db("matrix"), *flags]
            if args.dry_run:
                cmd.append("--dry-run")
            run = timed(cmd, env={**os.environ, **env} if env else None, cwd=env.get("MIGRATE_BENCH_ENGINE"))
            if run.returncode != 0:
                failed.append((config, run.returncode, run.stderr_tail))
            if rep or not args.dry_run:
                series[config].runs.append(run)
            print(f"  rep {rep} {config or '(defaults)':40s} {run.wall:7.3f} s  cpu {run.user_s + run.sys_s:5.2f} s"
                  f"  {run.max_rss_kb / 1024:6.1f} MB  load {run.load:.2f}", file=sys.stderr)
    info = tree_info(args.tree)
    entries = info["src_files"] + info["src_folders"] + info["src_symlinks"]
    best = min(s.median for s in series.values())
    rows = [[s.tool, f"{s.median:.3f}", f"{min(r.wall for r in s.runs):.3f}", f"{entries / s.median:,.0f}",
             f"{s.cpu_median:.2f}", f"{s.peak_rss_mb:.0f}", f"{s.median / best:.2f}x"] for s in series.values()]
    print(table(rows, ["config", "wall med s", "min s", "entries/s", "cpu s", "peak RSS MB", "vs best"]))
    path = save(f"matrix-{args.tree}{'-dry' if args.dry_run else ''}{'-cold' if args.cold else ''}",
                {"tree": args.tree, "dry_run": args.dry_run, "series": [s.as_dict() for s in series.values()]})
    print(f"\nresults: {path}")
    for config, rc, tail in failed:
        print(f"FAILED ({rc}): {config}: {tail.strip().splitlines()[-1] if tail.strip() else ''}")
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
