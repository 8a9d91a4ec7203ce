"""How much the console slows the engine, and how fast a key takes effect while it runs at full speed.

The same migration (the 100k tree by default) runs alternately headless (`migrate run`) and in the console
(`migrate-tui --db ... SRC DST`, in a real terminal under tmux, 160x50). The console run is timed from launch
until its title line says the run finished; once per console run `p` is pressed during traversal and the
time until the screen says "paused" is measured, then `r` until "running" again.

    python bench/console_overhead.py [--tree 100k] [--rounds 3]
"""

from __future__ import annotations

import sys

sys.path.append(sys.path.pop(0))  # bench/ after the standard library: bench/copy.py must not shadow `copy`

import argparse  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402

from common import MIGRATE, VENV_BIN, ensure_tree, fresh_db, reset_dst, save, table, timed

TUI = str(VENV_BIN / "migrate-tui") if (VENV_BIN / "migrate-tui").exists() else shutil.which("migrate-tui")
SESSION = "console-bench"


def screen() -> str:
    return subprocess.run(["tmux", "capture-pane", "-p", "-t", SESSION], capture_output=True, text=True).stdout


def title() -> str:
    return screen().splitlines()[0] if screen() else ""


def wait_for(predicate, timeout: float, poll: float = 0.02) -> float:
    start = time.perf_counter()
    while not predicate():
        if time.perf_counter() - start > timeout:
            raise TimeoutError
        time.sleep(poll)
    return time.perf_counter() - start


def console_run(src: str, dst: str, db: str) -> tuple[float, float | None, float | None]:
    subprocess.run(["tmux", "kill-session", "-t", SESSION], capture_output=True)
    t0 = time.perf_counter()
    subprocess.run(["tmux", "new-session", "-d", "-s", SESSION, "-x", "160", "-y", "50",
                    f"{TUI} --db {db} {src} {dst}; sleep 600"], check=True)
    pause_latency = resume_latency = None
    try:
        wait_for(lambda: "traversal · running" in title(), 60, poll=0.05)
        time.sleep(0.5)
        if "traversal" in title():
            subprocess.run(["tmux", "send-keys", "-t", SESSION, "p"])
            pause_latency = wait_for(lambda: "paused" in title(), 10)
            subprocess.run(["tmux", "send-keys", "-t", SESSION, "r"])
            resume_latency = wait_for(lambda: "running" in title(), 10)
        wait_for(lambda: "finished" in title(), 1800, poll=0.1)
        wall = time.perf_counter() - t0
        subprocess.run(["tmux", "send-keys", "-t", SESSION, "q"])
    finally:
        time.sleep(0.5)
        subprocess.run(["tmux", "kill-session", "-t", SESSION], capture_output=True)
    return wall, pause_latency, resume_latency


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", default="100k")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if not shutil.which("tmux") or not TUI:
        print("needs tmux and migrate-tui", file=sys.stderr)
        return 2
    d = ensure_tree(args.tree)
    headless, console, pauses, resumes = [], [], [], []
    for i in range(args.rounds):
        dst = reset_dst(args.tree)
        run = timed([MIGRATE, "run", str(d / "src"), str(dst), "--db", fresh_db("headless")])
        headless.append(run.wall)
        dst = reset_dst(args.tree)
        wall, pause, resume = console_run(str(d / "src"), str(dst), fresh_db("console"))
        console.append(wall)
        if pause is not None:
            pauses.append(pause)
            resumes.append(resume)
        print(f"round {i + 1}: headless {run.wall:.2f}s, console {wall:.2f}s, p {pause}, r {resume}", flush=True)
    h, c = statistics.median(headless), statistics.median(console)
    rows = [["migrate run", f"{h:.2f}", "1.00"], ["migrate-tui", f"{c:.2f}", f"{c / h:.3f}"]]
    print(table(rows, ["how", "wall s (median)", "ratio"]))
    if pauses:
        print(f"key p -> screen shows paused: median {statistics.median(pauses) * 1000:.0f} ms, "
              f"max {max(pauses) * 1000:.0f} ms; r -> running: median {statistics.median(resumes) * 1000:.0f} ms")
    save("console-overhead", {"tree": args.tree, "headless_s": headless, "console_s": console,
                              "pause_latency_s": pauses, "resume_latency_s": resumes, "ratio": c / h})
    return 0


if __name__ == "__main__":
    sys.exit(main())
