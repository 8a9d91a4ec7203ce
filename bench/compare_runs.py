"""Check that two run files hold the same result: every node row (both sides), the per-depth stats
(without their timestamps) and the dead letters (without theirs). Used to prove a proposal or an
engine change keeps the engine's behaviour:  python bench/compare_runs.py A.duckdb B.duckdb"""

from __future__ import annotations

import os
import sys

# bench/copy.py would shadow the standard library's `copy` (imported by dataclasses): keep this folder
# on the path, but after the standard library.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE] + [_HERE]

import duckdb

QUERIES = {
    "src_nodes": "SELECT * FROM src_nodes",
    "dst_nodes": "SELECT * FROM dst_nodes",
    "src_stats": "SELECT * EXCLUDE (sealed_at) FROM src_stats",
    "dst_stats": "SELECT * EXCLUDE (sealed_at) FROM dst_stats",
    "task_errors": "SELECT * EXCLUDE (ts) FROM task_errors",
}


def rows(path: str, sql: str) -> list[tuple]:
    con = duckdb.connect(path, read_only=True)
    try:
        return sorted(con.execute(sql).fetchall(), key=repr)
    finally:
        con.close()


def main() -> int:
    a, b = sys.argv[1], sys.argv[2]
    same = True
    for name, sql in QUERIES.items():
        ra, rb = rows(a, sql), rows(b, sql)
        if ra != rb:
            same = False
            sa, sb = set(ra), set(rb)
            print(f"{name}: DIFFERENT ({len(ra)} vs {len(rb)} rows; "
                  f"{len(sa - sb)} only in A, {len(sb - sa)} only in B)")
            for r in list(sa - sb)[:3]:
                print("   A:", r)
            for r in list(sb - sa)[:3]:
                print("   B:", r)
        else:
            print(f"{name}: same ({len(ra)} rows)")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
