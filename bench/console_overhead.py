"""How much the console slows the engine, and how fast a key takes effect while it runs at full speed.

The same migration (the 100k tree by default) runs alternately headless (`migrate run`) and in the console
(`migrate-tui --db ... SRC DST`, in a real terminal under tmux, 160x50). The console run is timed from launch
until its title line says the run finished; once per console run `p` is pressed during traversal and the
time until the screen says "paused" is measured, then `r` until "running" again (the engine is paused for
about the `p` latency: that much of the console's time is not overhead).

Three ratios, of the medians of the alternating rounds and the median of each round's own pair: wall time
(process start to the end of the run: the console's includes importing Textual and drawing the first screen),
the engine's elapsed time as the run file records it (start to finish of the migration: how much the console
slows the engine), and CPU time of the process. On a shared 2-core machine all three move by +-30% with other
work; the steadiest figure is the CPU time of the console's main thread (Textual's event loop, read from
/proc): until the run shows on screen (imports, first screens), then while the engine runs (drawing).

    python bench/console_overhead.py [--tree 100k] [--rounds 3] [--engine DIR] [--max-load 1.0]

--engine DIR runs both on another checkout's engine/ (PYTHONPATH=DIR, e.g. `git archive HEAD engine | tar -x -C
DIR`) with this checkout's tui/ (a symlink DIR/tui is made): the console measured against a fixed engine while
the working tree's engine is being edited.
"""

from __future__ import annotations

import sys

sys.path.append(sys.path.pop(0))  # bench/ after the standard library: bench/copy.py must not shadow `copy`

import argparse  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
import os  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

from common import (MIGRATE, PYTHON, REPO, VENV_BIN, ensure_tree, fresh_db, purge_trash, reset_dst, save, table,
                    timed, wait_for_quiet)

TUI = str(VENV_BIN / "migrate-tui") if (VENV_BIN / "migrate-tui").exists() else shutil.which("migrate-tui")
SESSION = "console-bench"


def screen() -> str:
    return subprocess.run(["tmux", "capture-pane", "-p", "-t", SESSION], capture_output=True, text=True).stdout


def title() -> str:
    lines = screen().splitlines()
    return lines[0] if lines else ""


def wait_for(predicate, timeout: float, poll: float = 0.02) -> float:
    start = time.perf_counter()
    while not predicate():
        if time.perf_counter() - start > timeout:
            raise TimeoutError
        time.sleep(poll)
    return time.perf_counter() - start


def cpu_pair(main_cpu: tuple[float, float] | None) -> str:
    return "?" if main_cpu is None else f"{main_cpu[0]:.2f}s + {main_cpu[1]:.2f}s"


def ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.0f} ms"


def engine_elapsed(db: str, engine: str | None) -> float | None:
    """The run's elapsed time as the engine recorded it in the run file."""
    code = "import sys; from engine.migration import Migration; m = Migration.open(sys.argv[1]); " \
           "print(m.elapsed()); m.close()"
    env = {**os.environ, "PYTHONPATH": engine} if engine else None
    p = subprocess.run([PYTHON, "-c", code, db], capture_output=True, text=True, env=env, cwd=engine or str(REPO))
    try:
        return float(p.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        print(f"  ! elapsed of {db}: {p.stderr[-300:]}", file=sys.stderr)
        return None


def main_thread_cpu(db: str) -> float | None:
    """CPU seconds (user + sys) the console's main thread (Textual's event loop: all its drawing) has used so
    far: read from /proc, the console process found by its command line."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read().split(b"\0")
            if b"python" not in cmdline[0] or db.encode() not in cmdline:  # not /usr/bin/time, not the shell
                continue
            with open(f"/proc/{pid}/task/{pid}/stat") as f:
                fields = f.read().rpartition(")")[2].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime
        except OSError:
            continue
    return None


def console_run(src: str, dst: str, db: str, engine: str | None = None):
    """(wall, cpu, (main thread cpu until the run shows, after), pause latency, resume latency) of one
    console run."""
    subprocess.run(["tmux", "kill-session", "-t", SESSION], capture_output=True)
    env = f"env PYTHONPATH={engine} " if engine else ""
    times = tempfile.NamedTemporaryFile("r", suffix=".time")
    t0 = time.perf_counter()
    subprocess.run(["tmux", "new-session", "-d", "-s", SESSION, "-x", "160", "-y", "50",
                    f"/usr/bin/time -f '%U %S' -o {times.name} {env}{TUI} --db {db} {src} {dst}; sleep 600"],
                   check=True)
    pause_latency = resume_latency = None
    try:
        wait_for(lambda: "traversal · running" in title(), 60, poll=0.05)
        startup_cpu = main_thread_cpu(db)  # imports, the first screens
        time.sleep(0.5)
        if "traversal" in title():
            subprocess.run(["tmux", "send-keys", "-t", SESSION, "p"])
            pause_latency = wait_for(lambda: "paused" in title(), 10)
            subprocess.run(["tmux", "send-keys", "-t", SESSION, "r"])
            resume_latency = wait_for(lambda: "running" in title(), 10)
        wait_for(lambda: "finished" in title(), 1800, poll=0.1)
        wall = time.perf_counter() - t0
        main_cpu = main_thread_cpu(db)
        if main_cpu is not None and startup_cpu is not None:
            main_cpu = (startup_cpu, main_cpu - startup_cpu)
        subprocess.run(["tmux", "send-keys", "-t", SESSION, "q"])
        wait_for(lambda: os.path.getsize(times.name) > 0, 60, poll=0.1)  # the console has exited
    finally:
        time.sleep(0.5)
        subprocess.run(["tmux", "kill-session", "-t", SESSION], capture_output=True)
    with times:
        try:
            user, sys_ = map(float, times.read().split()[-2:])
            cpu = user + sys_
        except ValueError:
            cpu = None
    return wall, cpu, main_cpu, pause_latency, resume_latency


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", default="100k")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--engine", metavar="DIR", help="a folder holding engine/ to run instead of this checkout's")
    parser.add_argument("--max-load", type=float, default=None,
                        help="before each run, wait (up to 10 min) until the 1-minute load average is below this")
    parser.add_argument("--keep-trash", action="store_true",
                        help="leave the destinations moved aside (two a round, ~0.5 GB each for 100k) in the trash")
    args = parser.parse_args()
    env = None
    if args.engine:
        args.engine = str(Path(args.engine).resolve())
        link = Path(args.engine) / "tui"
        if not link.exists():
            link.symlink_to(Path(__file__).resolve().parent.parent / "tui")
        env = {**os.environ, "PYTHONPATH": args.engine}
    if not shutil.which("tmux") or not TUI:
        print("needs tmux and migrate-tui", file=sys.stderr)
        return 2
    d = ensure_tree(args.tree)
    runs = {"headless": [], "console": []}  # (wall, engine elapsed, cpu) per run
    pauses, resumes, main_cpus = [], [], []

    def quiet() -> float:
        return wait_for_quiet(args.max_load) if args.max_load else os.getloadavg()[0]

    for i in range(args.rounds):
        dst = reset_dst(args.tree)
        load_h = quiet()
        db = fresh_db("headless")
        run = timed([MIGRATE, "run", str(d / "src"), str(dst), "--db", db], env=env)
        runs["headless"].append((run.wall, engine_elapsed(db, args.engine), run.user_s + run.sys_s))
        dst = reset_dst(args.tree)
        load_c = quiet()
        db = fresh_db("console")
        wall, cpu, main_cpu, pause, resume = console_run(str(d / "src"), str(dst), db, args.engine)
        runs["console"].append((wall, engine_elapsed(db, args.engine), cpu))
        main_cpus.append(main_cpu)
        if pause is not None:
            pauses.append(pause)
            resumes.append(resume)
        h, c = runs["headless"][-1], runs["console"][-1]
        print(f"round {i + 1}: headless {h[0]:.2f}s (engine {h[1]:.2f}s, cpu {h[2]:.2f}s, load {load_h:.1f}), "
              f"console {c[0]:.2f}s (engine {c[1]:.2f}s, cpu {c[2]:.2f}s, main thread {cpu_pair(main_cpu)}, "
              f"load {load_c:.1f}), "
              f"p {ms(pause)}, r {ms(resume)}", flush=True)

    def median(kind: str, k: int) -> float:
        return statistics.median(r[k] for r in runs[kind] if r[k] is not None)

    rows = []
    for kind, how in (("headless", "migrate run"), ("console", "migrate-tui")):
        rows.append([how] + [f"{median(kind, k):.2f}" for k in range(3)]
                    + [f"{median(kind, k) / median('headless', k):.3f}" for k in range(3)])
    print(table(rows, ["how", "wall s", "engine s", "cpu s", "wall ratio", "engine ratio", "cpu ratio"]))
    paired = [[c[k] / h[k] for h, c in zip(runs["headless"], runs["console"]) if h[k] and c[k]] for k in range(3)]
    print("ratios of each round's pair (console / the headless run just before), median: "
          + ", ".join(f"{name} {statistics.median(r):.3f}" for name, r in zip(("wall", "engine", "cpu"), paired) if r))
    known = [m for m in main_cpus if m is not None]
    if known:
        print(f"console main thread CPU: until the run shows (imports, first screens) median "
              f"{statistics.median(m[0] for m in known):.2f} s, then (drawing while the engine runs) median "
              f"{statistics.median(m[1] for m in known):.2f} s")
    if pauses:
        print(f"key p -> screen shows paused: median {statistics.median(pauses) * 1000:.0f} ms, "
              f"max {max(pauses) * 1000:.0f} ms; r -> running: median {statistics.median(resumes) * 1000:.0f} ms, "
              f"max {max(resumes) * 1000:.0f} ms")
    save("console-overhead", {"tree": args.tree, "engine": args.engine,
                              "headless": [dict(zip(("wall_s", "engine_s", "cpu_s"), r)) for r in runs["headless"]],
                              "console": [dict(zip(("wall_s", "engine_s", "cpu_s"), r)) for r in runs["console"]],
                              "console_main_thread_cpu_s": main_cpus, "pause_latency_s": pauses, "resume_latency_s": resumes,
                              "wall_ratio": median("console", 0) / median("headless", 0),
                              "engine_ratio": median("console", 1) / median("headless", 1)})
    if not args.keep_trash:
        purge_trash()
    return 0


if __name__ == "__main__":
    sys.exit(main())
