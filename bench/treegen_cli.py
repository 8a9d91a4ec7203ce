"""Generate the benchmark trees once (and manage their destinations).

    python bench/treegen_cli.py                 # the usual trees: 20k, 100k, big200
    python bench/treegen_cli.py 20k 500k        # some of them (500k only when named: ~55 s, 4.7 GB)
    python bench/treegen_cli.py --reset 20k     # mv dst aside, cp -a dst.orig dst
    python bench/treegen_cli.py --purge-trash   # delete moved-aside destinations (not before a timing)
    python bench/treegen_cli.py --list
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

from common import BASE, DEFAULT_TREES, TREES, ensure_tree, purge_trash, reset_dst, tree_dir


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("trees", nargs="*", choices=[*TREES, []], default=None)
    p.add_argument("--reset", action="store_true", help="reset the destination of the given trees")
    p.add_argument("--purge-trash", action="store_true")
    p.add_argument("--list", action="store_true")
    args = p.parse_args()
    names = args.trees or list(DEFAULT_TREES)
    if args.purge_trash:
        purge_trash()
        return
    if args.list:
        for name in TREES:
            info = tree_dir(name) / "tree.json"
            print(name, json.loads(info.read_text()) if info.exists() else "(not generated)")
        return
    for name in names:
        ensure_tree(name)
        if args.reset:
            reset_dst(name)
    print(f"trees under {BASE}")


if __name__ == "__main__":
    main()
