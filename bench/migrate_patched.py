"""`migrate` with some of bench/proposals.py applied: python bench/migrate_patched.py --proposals NAMES ARGS...
(NAMES: comma-separated, or "all"; MIGRATE_BENCH_PROPOSALS is read when --proposals is not given)."""

from __future__ import annotations

import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE] + [_HERE, os.path.dirname(_HERE)]


def main() -> int:
    argv = sys.argv[1:]
    names = os.environ.get("MIGRATE_BENCH_PROPOSALS", "")
    if argv[:1] == ["--proposals"]:
        names, argv = argv[1], argv[2:]
    import proposals
    proposals.apply(names)
    from engine.cli import main as cli_main
    return cli_main(argv)


if __name__ == "__main__":
    sys.exit(main())
