"""Shared helpers of the benchmarks: generated trees, destination resets, timed runs, result files.

Trees live under $MIGRATE_BENCH_DIR (default /tmp/migrate-bench), outside the repository:

    <base>/<tree>/src         the source tree
    <base>/<tree>/dst.orig    the pristine destination (never written by a benchmark)
    <base>/<tree>/dst         the destination a timed run works on
    <base>/trash/N            destinations moved aside between runs (see reset_dst)
    <base>/db/                run files of `migrate`

Resetting a destination moves it aside and copies the pristine one back (`mv dst trash/N && cp -a
dst.orig dst`), never `rm -rf`: on this ext4 creating files right after deleting many is 3-7x slower,
which would poison the next timing (DESIGN.md). `purge_trash()` deletes the trash when no timing follows.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

BASE = Path(os.environ.get("MIGRATE_BENCH_DIR", "/tmp/migrate-bench"))
RESULTS = REPO / "bench" / "results"
VENV_BIN = Path(os.environ.get("MIGRATE_BENCH_VENV", "/tmp/venv/bin"))
MIGRATE = str(VENV_BIN / "migrate") if (VENV_BIN / "migrate").exists() else shutil.which("migrate") or "migrate"
PYTHON = str(VENV_BIN / "python") if (VENV_BIN / "python").exists() else sys.executable

# name -> make_source / mirror arguments. "mirror": None means an empty destination.
TREES = {
    "20k": dict(files=20_000, seed=0, mirror=dict(seed=1)),
    "100k": dict(files=100_000, seed=0, mirror=dict(seed=1)),
    "500k": dict(files=500_000, seed=0, mirror=dict(seed=1)),  # per-entry cost, with the start amortized
    "big200": dict(files=20, seed=0, big_files=200, big_size=16 << 20, empty_folders=0, symlinks=0, mirror=None),
}
# generated when no tree is named: 500k takes ~55 s and 4.7 GB, only for the runs that name it
DEFAULT_TREES = ("20k", "100k", "big200")


def tree_dir(name: str) -> Path:
    return BASE / name


def ensure_tree(name: str, quiet: bool = False) -> Path:
    """Generate the tree (source and pristine destination) once; later calls reuse it."""
    from engine.treegen import make_source, mirror
    spec = dict(TREES[name])
    mirror_args = spec.pop("mirror")
    d = tree_dir(name)
    done = d / ".complete"
    if done.exists():
        return d
    if d.exists():
        _move_to_trash(d)
    d.mkdir(parents=True)
    t0 = time.perf_counter()
    if not quiet:
        print(f"generating tree {name} in {d} ...", file=sys.stderr, flush=True)
    tree = make_source(d / "src", **spec)
    if mirror_args is None:
        (d / "dst.orig").mkdir()
        expected = None
    else:
        expected = mirror(tree, d / "dst.orig", **mirror_args)
    info = {"name": name, "spec": TREES[name], "src_files": len(tree.files), "src_folders": len(tree.folders),
            "src_symlinks": len(tree.symlinks), "seconds": round(time.perf_counter() - t0, 1)}
    if expected is not None:
        actions = list(expected.src_actions.values())
        info["expected"] = {a: actions.count(a) for a in sorted(set(actions))}
        info["expected"]["not_on_src"] = len(expected.not_on_src)
    info["src_bytes"] = du_bytes(d / "src")
    info["dst_orig_entries"] = count_entries(d / "dst.orig")
    (d / "tree.json").write_text(json.dumps(info, indent=2))
    subprocess.run(["cp", "-a", str(d / "dst.orig"), str(d / "dst")], check=True)
    subprocess.run(["sync"], check=True)
    done.touch()
    if not quiet:
        print(f"  {info}", file=sys.stderr)
    return d


def tree_info(name: str) -> dict:
    return json.loads((tree_dir(name) / "tree.json").read_text())


def count_entries(path: Path) -> int:
    return sum(len(dirs) + len(files) for _, dirs, files in os.walk(path))


def check_pristine(name: str) -> None:
    """dst.orig must still be what treegen made: another session running a real migration into it
    would silently change every later measurement."""
    info = tree_info(name)
    want = info.get("dst_orig_entries")
    if want is None:  # a tree generated before this check existed: record it now
        info["dst_orig_entries"] = count_entries(tree_dir(name) / "dst.orig")
        (tree_dir(name) / "tree.json").write_text(json.dumps(info, indent=2))
        return
    got = count_entries(tree_dir(name) / "dst.orig")
    if got != want:
        raise SystemExit(f"{tree_dir(name) / 'dst.orig'} has {got} entries, not {want}: it was written to; "
                         f"regenerate it (rm -r {tree_dir(name)}; python bench/treegen_cli.py {name})")


def du_bytes(path: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(root, f)).st_size
            except OSError:
                pass
    return total


def _move_to_trash(path: Path) -> None:
    trash = BASE / "trash"
    trash.mkdir(parents=True, exist_ok=True)
    os.rename(path, tempfile.mkdtemp(dir=trash) + "/x")


def reset_dst(name: str) -> Path:
    """mv dst trash/N && cp -a dst.orig dst, then sync, so every timed run starts from the same state."""
    d = tree_dir(name)
    check_pristine(name)
    dst = d / "dst"
    if dst.exists():
        _move_to_trash(dst)
    subprocess.run(["cp", "-a", str(d / "dst.orig"), str(dst)], check=True)
    subprocess.run(["sync"], check=True)
    return dst


def purge_trash() -> None:
    """Delete moved-aside destinations; call only when no timed run follows soon."""
    trash = BASE / "trash"
    if trash.exists():
        shutil.rmtree(trash, ignore_errors=True)
        subprocess.run(["sync"], check=True)


def fresh_db(tag: str) -> str:
    db_dir = BASE / "db"
    db_dir.mkdir(parents=True, exist_ok=True)
    path = db_dir / f"{tag}.duckdb"
    for p in (path, Path(str(path) + ".wal")):
        if p.exists():
            p.unlink()
    return str(path)


def drop_caches() -> bool:
    """Drop the page cache (needs root); False when not permitted."""
    try:
        subprocess.run(["sync"], check=True)
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return True
    except OSError:
        return False


@dataclass
class Run:
    wall: float
    max_rss_kb: int
    returncode: int
    user_s: float = 0.0
    sys_s: float = 0.0
    load: float = 0.0  # 1-minute load average just before the run: other work on the machine
    stderr_tail: str = ""


def timed(cmd: list[str], env: dict | None = None, cwd: str | None = None) -> Run:
    """Run cmd under /usr/bin/time: wall by perf_counter, peak RSS ("Maximum resident set size").

    The tool's stderr goes to a file, not a pipe: `rclone --dry-run` logs a line per file (13 MB on the
    100k tree), and a pipe read by this process put its reading on the same two cores as the tool being
    timed (rclone's 100k dry run: 1.94 s into a pipe, 1.67 s into a file or /dev/null)."""
    load = os.getloadavg()[0]
    # An installed Python program runs from its cached bytecode. Sessions on these machines export
    # PYTHONDONTWRITEBYTECODE=1, which left migrate compiling its own 23 modules from source at every
    # start (~40 ms of a run no user pays): the tools run without it (the warm-up run writes the cache).
    env = {k: v for k, v in (os.environ if env is None else env).items() if k != "PYTHONDONTWRITEBYTECODE"}
    with tempfile.NamedTemporaryFile("r", suffix=".time") as tf, tempfile.TemporaryFile() as err:
        full = ["/usr/bin/time", "-f", "%M %U %S", "-o", tf.name, *cmd] if os.path.exists("/usr/bin/time") else cmd
        t0 = time.perf_counter()
        p = subprocess.run(full, stdout=subprocess.DEVNULL, stderr=err, env=env, cwd=cwd)
        wall = time.perf_counter() - t0
        try:
            rss, user, sys_ = tf.read().strip().splitlines()[-1].split()
            rss, user, sys_ = int(rss), float(user), float(sys_)
        except (ValueError, IndexError):
            rss, user, sys_ = 0, 0.0, 0.0
        err.seek(max(0, err.seek(0, os.SEEK_END) - 400))
        tail = err.read().decode(errors="replace")
    if p.returncode != 0:
        print(f"  ! {cmd[0]} exited {p.returncode}: {tail}", file=sys.stderr)
    return Run(wall, rss, p.returncode, user, sys_, load, tail)


def wait_for_quiet(max_load: float, timeout: float = 600.0) -> float:
    """Wait (up to timeout) until the 1-minute load average is below max_load: other sessions share
    this machine, and their work shows up in every timing. Returns the load when it starts."""
    deadline = time.monotonic() + timeout
    while os.getloadavg()[0] > max_load and time.monotonic() < deadline:
        time.sleep(5)
    return os.getloadavg()[0]


@dataclass
class Series:
    tool: str
    tree: str
    runs: list[Run] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(r.wall for r in self.runs)

    @property
    def peak_rss_mb(self) -> float:
        return max(r.max_rss_kb for r in self.runs) / 1024

    @property
    def cpu_median(self) -> float:
        return statistics.median(r.user_s + r.sys_s for r in self.runs)

    def as_dict(self) -> dict:
        return {"tool": self.tool, "tree": self.tree, "median_s": round(self.median, 4),
                "min_s": round(min(r.wall for r in self.runs), 4),
                "walls": [round(r.wall, 4) for r in self.runs], "peak_rss_mb": round(self.peak_rss_mb, 1),
                "cpu_median_s": round(self.cpu_median, 3),
                "cpu": [[r.user_s, r.sys_s] for r in self.runs], "load": [round(r.load, 2) for r in self.runs],
                "returncodes": [r.returncode for r in self.runs]}


def machine() -> dict:
    return {"host": platform.node(), "cpus": os.cpu_count(), "python": platform.python_version(),
            "kernel": platform.release(),
            "rsync": _first_line(["rsync", "--version"]), "rclone": _first_line(["rclone", "version"])}


def _first_line(cmd: list[str]) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True).stdout.splitlines()[0]
    except (OSError, IndexError):
        return "?"


def save(kind: str, payload: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    payload = {"kind": kind, "time": stamp, "machine": machine(), **payload}
    path = RESULTS / f"{kind}-{stamp}.json"
    path.write_text(json.dumps(payload, indent=2))
    (RESULTS / f"{kind}-latest.json").write_text(json.dumps(payload, indent=2))
    return path


def table(rows: list[list], headers: list[str]) -> str:
    cells = [headers, *[[str(c) for c in r] for r in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
             for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
