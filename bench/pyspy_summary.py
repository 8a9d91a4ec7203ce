"""Summarise a `py-spy record --threads [--idle] --format raw` file: samples per thread, and the
functions with the most inclusive / self samples (per thread name, or all threads).

    py-spy record --threads --idle -r 250 --format raw -o prof.txt -- migrate run SRC DST --db X --dry-run
    python bench/pyspy_summary.py prof.txt [--thread dst-traversal-w] [--top 25]
"""

from __future__ import annotations

import os
import sys

# bench/copy.py would shadow the standard library's `copy` (imported by dataclasses): keep this folder
# on the path, but after the standard library.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE] + [_HERE]

import argparse
import re
from collections import Counter

FRAME = re.compile(r"^(.*) \((.*?):(\d+)\)$")


def parse(path: str):
    for line in open(path, encoding="utf-8", errors="replace"):
        line = line.rstrip("\n")
        if not line:
            continue
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        thread = frames[0]
        m = re.match(r"thread \(\d+\)(?:: (.*))?", thread)
        name = (m.group(1) or "main") if m else thread
        yield name, frames[1:], int(count)


def func(frame: str, lines: bool) -> str:
    m = FRAME.match(frame)
    if not m:
        return frame
    return f"{m.group(1)} ({m.group(2)}:{m.group(3)})" if lines else f"{m.group(1)} ({m.group(2)})"


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("file")
    p.add_argument("--thread", default=None, help="substring of a thread name")
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--lines", action="store_true", help="self time per line, not per function")
    args = p.parse_args()
    per_thread = Counter()
    inclusive, self_ = Counter(), Counter()
    total = 0
    for name, frames, n in parse(args.file):
        per_thread[name] += n
        if args.thread and args.thread not in name:
            continue
        total += n
        seen = set()
        for f in frames:
            key = func(f, False)
            if key not in seen:
                inclusive[key] += n
                seen.add(key)
        if frames:
            self_[func(frames[-1], args.lines)] += n
    print("samples per thread:")
    for name, n in per_thread.most_common():
        print(f"  {n:7d}  {name}")
    print(f"\nselected samples: {total}")
    print("\ntop inclusive:")
    for k, n in inclusive.most_common(args.top):
        print(f"  {n:7d} {100 * n / max(total, 1):5.1f}%  {k}")
    print("\ntop self:")
    for k, n in self_.most_common(args.top):
        print(f"  {n:7d} {100 * n / max(total, 1):5.1f}%  {k}")


if __name__ == "__main__":
    main()
