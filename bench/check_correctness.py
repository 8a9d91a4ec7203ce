"""The fast correctness check after an engine change: a fresh tricky tree (engine.treegen), a dry run
whose every SRC action and every DST-only entry must match treegen's Expected, then a real run after
which the destination must equal the source except what must be kept (newer on DST, DST-only), and
a second dry run that finds nothing left to copy.

    python bench/check_correctness.py                      # 5,000 files (+ 3 big ones), the engine as is
    python bench/check_correctness.py --files 20000 --proposals all   # with bench/proposals.py applied
"""

from __future__ import annotations

import os
import sys

# bench/copy.py would shadow the standard library's `copy` (imported by dataclasses): keep this folder
# on the path, but after the standard library.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE] + [_HERE]

import argparse  # noqa: E402
import hashlib  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import common  # noqa: E402,F401  (puts the repository on sys.path)


def tree_state(root: Path) -> dict[str, tuple]:
    """path -> (kind, size, mtime_ns, mode, content hash | link target), lstat only."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, root)
            st = os.lstat(full)
            if os.path.islink(full):
                out[rel] = ("link", os.readlink(full))
            elif os.path.isdir(full):
                out[rel] = ("dir", st.st_mode & 0o7777)
            else:
                with open(full, "rb") as f:
                    digest = hashlib.blake2b(f.read(), digest_size=16).hexdigest()
                out[rel] = ("file", st.st_size, st.st_mtime_ns, st.st_mode & 0o7777, digest)
    return out


def actions(db: str) -> tuple[dict[str, str], set[str], dict[str, int]]:
    import duckdb
    con = duckdb.connect(db, read_only=True)
    try:
        rows = con.execute("SELECT path, action FROM src_nodes WHERE depth > 0").fetchall()
        src = {os.fsdecode(p): a for p, a in rows}
        not_on_src = {os.fsdecode(p) for (p,) in con.execute(
            "SELECT path FROM dst_nodes WHERE \"match\" = 'not_on_src'").fetchall()}
        copy = dict(con.execute("SELECT coalesce(copy_status, 'none'), count(*) FROM src_nodes WHERE depth > 0 "
                                "GROUP BY ALL").fetchall())
    finally:
        con.close()
    return src, not_on_src, copy


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--files", type=int, default=5000)
    p.add_argument("--seed", type=int, default=11)
    p.add_argument("--proposals", default=None)
    args = p.parse_args()
    if args.proposals:
        import proposals
        proposals.apply(args.proposals)
    from engine.cli import main as cli_main
    from engine.treegen import make_source, mirror

    # under the bench trash: deleted by `treegen_cli.py --purge-trash`, never right before a timing
    (common.BASE / "trash").mkdir(parents=True, exist_ok=True)
    base = Path(tempfile.mkdtemp(prefix="migrate-check-", dir=common.BASE / "trash"))
    tree = make_source(base / "src", args.files, seed=args.seed, big_files=3, big_size=9 << 20)
    expected = mirror(tree, base / "dst", seed=args.seed + 1)
    dst_before = tree_state(base / "dst")
    problems: list[str] = []

    db = str(base / "dry.duckdb")
    t0 = time.perf_counter()
    rc = cli_main(["run", str(base / "src"), str(base / "dst"), "--db", db, "--dry-run"])
    print(f"dry run: exit {rc}, {time.perf_counter() - t0:.2f} s", file=sys.stderr)
    if rc != 0:
        problems.append(f"dry run exited {rc}")
    if tree_state(base / "dst") != dst_before:
        problems.append("the dry run wrote to the destination")
    got, not_on_src, _ = actions(db)
    wrong = {k: (got.get(k), v) for k, v in expected.src_actions.items() if got.get(k) != v}
    extra = set(got) - set(expected.src_actions)
    if wrong:
        problems.append(f"{len(wrong)} SRC entries misclassified, e.g. {list(wrong.items())[:3]}")
    if extra:
        problems.append(f"{len(extra)} unexpected SRC entries, e.g. {list(extra)[:3]}")
    if not_on_src != expected.not_on_src:
        problems.append(f"not_on_src differs: {len(not_on_src ^ expected.not_on_src)} entries")

    db = str(base / "run.duckdb")
    t0 = time.perf_counter()
    rc = cli_main(["run", str(base / "src"), str(base / "dst"), "--db", db])
    print(f"real run: exit {rc}, {time.perf_counter() - t0:.2f} s", file=sys.stderr)
    if rc != 0:
        problems.append(f"real run exited {rc}")
    src_state, dst_state = tree_state(base / "src"), tree_state(base / "dst")
    for path, state in src_state.items():
        if path in expected.newer_on_dst:
            continue
        if dst_state.get(path) != state:
            problems.append(f"after the copy {path!r} differs: {dst_state.get(path)} != {state}")
            break
    for path, data in expected.newer_on_dst.items():
        with open(base / "dst" / path, "rb") as f:
            if f.read() != data:
                problems.append(f"a newer destination file was overwritten: {path!r}")
                break
    for path in expected.not_on_src:
        if dst_state.get(path) != dst_before.get(path):
            problems.append(f"a destination-only file was touched: {path!r}")
            break
    leftovers = [p for p in dst_state if os.path.basename(p).endswith(".migrate-tmp")]
    if leftovers:
        problems.append(f"{len(leftovers)} temporary files left, e.g. {leftovers[:2]}")

    db = str(base / "again.duckdb")
    rc = cli_main(["run", str(base / "src"), str(base / "dst"), "--db", db, "--dry-run"])
    got, _, _ = actions(db)
    left = {k: v for k, v in got.items() if v == "copy"}
    if left:
        problems.append(f"after the copy a dry run still wants to copy {len(left)} entries, e.g. {list(left)[:3]}")

    for line in problems:
        print("PROBLEM:", line)
    print(f"{'OK' if not problems else 'FAILED'}: {len(expected.src_actions)} SRC entries, "
          f"{len(expected.not_on_src)} DST-only, {len(expected.newer_on_dst)} newer on DST (tree in {base})")
    return 0 if not problems else 1


if __name__ == "__main__":
    sys.exit(main())
