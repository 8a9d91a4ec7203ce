"""Fixed, realistic snapshots for every screen, and a fake controller serving them.

Used by the snapshot tests, the behaviour tests and ``python -m tui.screenshots``:
everything here is deterministic (no clock, no randomness).
"""

from __future__ import annotations

import math
import threading
from dataclasses import replace
from typing import Callable

from engine.snapshot import (
    CopyView,
    ErrorView,
    GateView,
    LevelView,
    MigrationSnapshot,
    QueueView,
    RatePoint,
    Summary,
)

# 2026-01-01 00:00:00 UTC; every sample is "taken" relative to it.
EPOCH = 1_767_225_600.0
GIB = 1024**3

SRC_ROOT = "/mnt/nas01/projects"
DST_ROOT = "/mnt/archive/projects"
DB_PATH = "/var/lib/migrate/projects.duckdb"

# The two trees once listed, and the plan, in figures that add up as a real run's do (engine.summary): every
# SRC entry is to copy, identical or newer on DST; every DST entry is identical, newer, not on SRC, or one of
# the 2,420 changed ones to copy over.
SRC_FILES, SRC_FOLDERS = 436_118, 24_960
DST_FILES, DST_FOLDERS = 320_894, 19_122
TO_COPY, IDENTICAL, DST_NEWER, NOT_ON_SRC = 124_574, 335_300, 1_204, 1_092
FOLDERS_TO_MAKE = 5_858  # SRC folders DST lacks (20 of DST's folders are on DST only)
BYTES_TO_COPY = int(391.5 * GIB)

SETTINGS = (
    ("src_workers", "16"),
    ("dst_workers", "12"),
    ("max_src_ahead", "2"),
    ("buffer_size", "2000"),
)


def _history(points: int, *, discovery: float, items: float, bytes_: float, end: float):
    """A smooth, slightly wavy rate history ending at ``end``, one point per 2 s."""
    out = []
    for i in range(points):
        wave = 1 + 0.25 * math.sin(i / 4) + 0.1 * math.cos(i / 1.7)
        ramp = min(1.0, (i + 1) / 12)
        out.append(
            RatePoint(
                time=end - 2 * (points - 1 - i),
                discovery_rate=round(discovery * wave * ramp, 1),
                items_per_s=round(items * wave * ramp, 1),
                bytes_per_s=round(bytes_ * wave * ramp, 1),
            )
        )
    return tuple(out)


def _level(depth: int, pending=0, in_progress=0, successful=0, failed=0) -> LevelView:
    # in_progress, as the engine counts it: taken from the level, into the queue's buffer or in flight
    return LevelView(
        depth=depth,
        nodes=pending + in_progress + successful + failed,
        pending=pending,
        in_progress=in_progress,
        successful=successful,
        failed=failed,
    )


def _gate(src_round: int, dst_round: int, **overrides) -> GateView:
    values = dict(
        max_src_ahead=2,
        src_round=src_round,
        dst_round=dst_round,
        src_done=False,
        dst_done=False,
        src_may_start=True,
        dst_may_start=True,
        src_reason=None,
        dst_reason=None,
    )
    values.update(overrides)
    return GateView(**values)


def running() -> MigrationSnapshot:
    """Traversal of both trees, SRC one round ahead of DST."""
    elapsed = 754.0
    src = QueueView(
        side="src",
        mode="traversal",
        state="running",
        round=5,
        round_expected=1840,
        round_completed=1215,
        buffered=600,
        in_flight=16,
        workers=16,
        completed_total=9876,
        failed_total=3,
        files_discovered=412_530,
        folders_discovered=23_418,
        discovery_rate=5412.7,
        levels=(
            _level(5, pending=9, in_progress=616, successful=1212, failed=3),
            _level(6, pending=2977),
        ),
    )
    dst = QueueView(
        side="dst",
        mode="traversal",
        state="running",
        round=4,
        round_expected=1310,
        round_completed=1022,
        buffered=276,
        in_flight=12,
        workers=12,
        completed_total=7604,
        failed_total=2,
        files_discovered=301_112,
        folders_discovered=17_204,
        discovery_rate=3980.4,
        levels=(
            _level(4, pending=0, in_progress=288, successful=1020, failed=2),
            _level(5, pending=1544),
        ),
    )
    return MigrationSnapshot(
        phase="traversal",
        state="running",
        src_root=SRC_ROOT,
        dst_root=DST_ROOT,
        db_path=DB_PATH,
        dry_run=False,
        taken_at=EPOCH + elapsed,
        elapsed_s=elapsed,
        src=src,
        dst=dst,
        gate=_gate(5, 4),
        copy=CopyView(),
        errors=_errors(EPOCH + elapsed)[:2],
        failed_count=5,
        history=_history(60, discovery=9400, items=0, bytes_=0, end=EPOCH + elapsed),
        message="traversal: SRC round 5, DST round 4",
        settings=SETTINGS,
    )


def paused() -> MigrationSnapshot:
    base = running()
    return replace(
        base,
        state="paused",
        src=replace(base.src, state="paused", in_flight=0, discovery_rate=0.0),
        dst=replace(base.dst, state="paused", in_flight=0, discovery_rate=0.0),
        message="paused: no new tasks are leased; press r to resume",
    )


def waiting_on_gate() -> MigrationSnapshot:
    """DST finished its round and may not start the next one before SRC."""
    base = running()
    reason = "DST round 4 waits for SRC to finish round 5"
    dst = replace(
        base.dst,
        state="waiting",
        round_completed=base.dst.round_expected,
        buffered=0,
        in_flight=0,
        discovery_rate=0.0,
        levels=(_level(4, successful=1308, failed=2), _level(5, pending=1544)),
        wait_reason=reason,
    )
    return replace(
        base,
        dst=dst,
        gate=_gate(5, 4, dst_may_start=False, dst_reason=reason),
        message="DST is waiting on the coordinator gate",
    )


def copy_phase() -> MigrationSnapshot:
    """Both trees listed; SRC queue copies files (pass 2) towards DST."""
    elapsed = 7391.0
    base = running()
    src = replace(
        base.src,
        mode="copy",
        state="running",
        round=7,
        round_expected=5200,
        round_completed=3100,
        buffered=1800,
        in_flight=16,
        completed_total=60_212,
        failed_total=5,
        files_discovered=SRC_FILES,
        folders_discovered=SRC_FOLDERS,
        discovery_rate=0.0,
        copy_pass=2,
        levels=(_level(7, pending=284, in_progress=1816, successful=3095, failed=5),),
    )
    dst = replace(
        base.dst,
        mode="traversal",
        state="completed",
        round=11,
        round_expected=0,
        round_completed=0,
        buffered=0,
        in_flight=0,
        completed_total=19_380,
        files_discovered=DST_FILES,
        folders_discovered=DST_FOLDERS,
        discovery_rate=0.0,
        levels=(),
    )
    # items_done counts folders made, files copied, files kept (became newer) and failures, as
    # engine.fileview does: 5,858 + 54,346 + 3 + 5
    copy = CopyView(
        items_done=60_212,
        bytes_done=int(182.4 * GIB),
        items_total=TO_COPY,
        bytes_total=BYTES_TO_COPY,
        folders_created=FOLDERS_TO_MAKE,
        files_copied=54_346,
        skipped=3,
        failed=5,
        items_per_s=212.4,
        bytes_per_s=486.2 * 1024**2,
        eta_s=440.0,  # the bytes left at that rate
    )
    return replace(
        base,
        phase="copy",
        taken_at=EPOCH + elapsed,
        elapsed_s=elapsed,
        src=src,
        dst=dst,
        gate=_gate(11, 11, src_done=True, dst_done=True),
        copy=copy,
        failed_count=9,
        history=_history(
            60, discovery=0, items=212.4, bytes_=486.2 * 1024**2, end=EPOCH + elapsed
        ),
        message="copy pass 2: files (folders created in pass 1)",
    )


def retry_mode() -> MigrationSnapshot:
    """Operator pressed t: failed and pending tasks of every depth run again."""
    base = running()
    src = replace(
        base.src,
        mode="retry",
        round=3,
        round_expected=41,
        round_completed=12,
        buffered=13,
        in_flight=16,
        discovery_rate=18.5,
        levels=(
            _level(3, successful=2),
            _level(5, in_progress=17, successful=7, failed=1),
            _level(6, in_progress=12, successful=2),
        ),
    )
    dst = replace(
        base.dst,
        mode="retry",
        state="waiting",
        round=2,
        round_expected=5,
        round_completed=5,
        buffered=0,
        in_flight=0,
        discovery_rate=0.0,
        levels=(_level(4, successful=4, failed=1),),
        wait_reason="DST retry round 3 waits for SRC retry round 3",
    )
    return replace(
        base,
        phase="retry",
        src=src,
        dst=dst,
        gate=_gate(
            3,
            2,
            dst_may_start=False,
            dst_reason="DST retry round 3 waits for SRC retry round 3",
        ),
        message="retry mode: re-running 46 failed and pending tasks, then copy",
    )


def finished() -> MigrationSnapshot:
    base = copy_phase()
    elapsed = 18_734.0
    src = replace(
        base.src,
        state="completed",
        failed_total=7,
        round_completed=base.src.round_expected,
        buffered=0,
        in_flight=0,
        copy_pass=0,
        levels=(),
    )
    copy = replace(
        base.copy,
        items_done=TO_COPY,  # 5,858 folders + 118,706 files copied, 3 kept, 7 failed
        bytes_done=int(391.2 * GIB),
        files_copied=118_706,
        failed=7,
        items_per_s=0.0,
        bytes_per_s=0.0,
        eta_s=0.0,
    )
    summary = Summary(
        src_files=SRC_FILES,
        src_folders=SRC_FOLDERS,
        dst_entries=DST_FILES + DST_FOLDERS,
        to_copy=TO_COPY,
        identical=IDENTICAL,
        dst_newer=DST_NEWER,
        not_on_src=NOT_ON_SRC,
        copied=FOLDERS_TO_MAKE + 118_706,
        bytes_copied=int(391.2 * GIB),
        failed=11,  # 7 copies, and the traversal's 2 on each side
        elapsed_s=elapsed,
    )
    return replace(
        base,
        phase="done",
        state="finished",
        taken_at=EPOCH + elapsed,
        elapsed_s=elapsed,
        src=src,
        copy=copy,
        failed_count=11,
        summary=summary,
        message="done: 124,564 items copied, 11 failed (see errors)",
    )


def planned() -> MigrationSnapshot:
    """A finished dry run: both traversals done and the plan counted, nothing copied; the console's status
    line offers c (copy the plan)."""
    base = finished()
    done = dict(mode="traversal", state="completed", workers=0, failed_total=0, discovery_rate=0.0, levels=(),
                copy_pass=0)
    src = replace(base.src, **done)
    dst = replace(base.dst, round=base.src.round, round_expected=9, round_completed=9, **done)
    elapsed = 3_842.0  # listing and comparing only
    summary = replace(base.summary, copied=0, bytes_copied=0, failed=0, elapsed_s=elapsed)
    copy = replace(base.copy, items_done=0, bytes_done=0, folders_created=0, files_copied=0, skipped=0, failed=0,
                   eta_s=None)
    return replace(base, phase="planned", dry_run=True, src=src, dst=dst, copy=copy, summary=summary,
                   gate=_gate(base.src.round, base.src.round, src_done=True, dst_done=True), failed_count=0,
                   errors=(), message="", taken_at=EPOCH + elapsed, elapsed_s=elapsed,
                   history=_history(60, discovery=9400, items=0, bytes_=0, end=EPOCH + elapsed))


def interrupted() -> MigrationSnapshot:
    """A run read back from its DuckDB file after the process was killed, as the engine shows one
    (engine.fileview): each side at the round a resume starts at, whose listings were not sealed,
    nothing in memory or in flight, and the gate saying where the run was interrupted."""
    base = running()
    stopped = dict(state="stopped", round_completed=0, buffered=0, in_flight=0, workers=0,
                   discovery_rate=0.0, levels=())
    src = replace(base.src, **stopped)
    dst = replace(base.dst, **stopped)
    gate = _gate(5, 4, src_may_start=False, dst_may_start=False,
                 src_reason="traversal interrupted: rounds 0-4 sealed",
                 dst_reason="traversal interrupted: rounds 0-3 sealed")
    return replace(
        base,
        phase="interrupted",
        state="stopped",
        src=src,
        dst=dst,
        gate=gate,
        history=(),
        message="interrupted during traversal at SRC round 5, DST round 4",
    )


def _errors(end: float) -> tuple[ErrorView, ...]:
    rows = [
        (312, "src", "traversal", "/mnt/nas01/projects/hr/2019/salaries", "Permission denied", 3),
        (
            207,
            "src",
            "traversal",
            "/mnt/nas01/projects/Ünïcødé/рабочие/日本語ファイル.txt",
            "Stale file handle",
            2,
        ),
        # Raw undecodable byte (surrogateescape): the console must show bad\xff.
        (95, "src", "traversal", "/mnt/nas01/projects/legacy/bad\udcff.dat", "Input/output error", 3),
        (64, "dst", "traversal", "/mnt/archive/projects/[draft] notes.md", "Operation timed out", 1),
        (21, "dst", "copy", "/mnt/archive/projects/render/final_v7.mov", "No space left on device", 2),
        (4, "src", "traversal", "/mnt/nas01/projects/tmp/.~lock.budget.xlsx#",
         "No such file or directory", 1),
    ]
    return tuple(
        ErrorView(time=end - ago, side=side, phase=phase, path=path, message=msg, attempts=n)
        for ago, side, phase, path, msg, n in rows
    )


def error_state() -> MigrationSnapshot:
    base = running()
    src = replace(base.src, failed_total=17)
    dst = replace(base.dst, failed_total=6)
    return replace(
        base,
        src=src,
        dst=dst,
        errors=_errors(base.taken_at),
        failed_count=23,
        message="23 failures so far; press t to retry them",
    )


SAMPLES: dict[str, Callable[[], MigrationSnapshot]] = {
    "running": running,
    "paused": paused,
    "gate": waiting_on_gate,
    "copy": copy_phase,
    "retry": retry_mode,
    "finished": finished,
    "planned": planned,
    "interrupted": interrupted,
    "errors": error_state,
}


class FakeController:
    """Stands in for ``engine.migration.Migration``: records commands, serves samples.

    ``hold_stop=True`` keeps a graceful stop "finishing in-flight tasks" until
    ``finish_stopping()`` is called, so tests can see the stopping state.
    """

    def __init__(self, sample: str = "running", *, hold_stop: bool = False) -> None:
        self.calls: list[str] = []
        self._lock = threading.Lock()
        self._snapshot = SAMPLES[sample]()
        self._stop_requested = threading.Event()
        self._stopped = threading.Event()
        self._hold_stop = hold_stop

    def set_snapshot(self, snapshot: MigrationSnapshot) -> None:
        """Serve this snapshot from now on (tests use it for states between samples)."""
        with self._lock:
            self._snapshot = snapshot

    def _record(self, call: str, sample: str | None = None) -> None:
        with self._lock:
            self.calls.append(call)
            if sample is not None:
                self._snapshot = SAMPLES[sample]()

    def start(self) -> None:
        self._record("start", "running")

    def pause(self) -> None:
        self._record("pause", "paused")

    def resume(self) -> None:
        self._record("resume", "running")

    def retry(self) -> None:
        self._record("retry", "retry")

    def resume_from_db(self) -> None:
        self._record("resume_from_db", "running")

    def copy_plan(self) -> None:
        self._record("copy_plan", "copy")

    def stop(self, force: bool = False) -> None:
        self._record("stop(force=True)" if force else "stop")
        with self._lock:
            self._snapshot = replace(self._snapshot, state="stopping")
        self._stop_requested.set()
        if force or not self._hold_stop:
            self._finish()

    def finish_stopping(self) -> None:
        """Let a held graceful stop complete."""
        self._finish()

    def _finish(self) -> None:
        with self._lock:
            self._snapshot = replace(self._snapshot, state="stopped")
        self._stopped.set()

    def snapshot(self) -> MigrationSnapshot:
        with self._lock:
            return self._snapshot

    def wait(self, timeout: float | None = None) -> bool:
        return self._stopped.wait(timeout)


def sample_app(sample: str = "running", **kwargs):
    """A console on a FakeController, its clock frozen at the sample's own time."""
    from tui.app import MigrationConsole

    controller = kwargs.pop("controller", None) or FakeController(sample)
    taken_at = controller.snapshot().taken_at
    kwargs.setdefault("now", lambda: taken_at)
    kwargs.setdefault("start_run", False)
    return MigrationConsole(controller, **kwargs)
