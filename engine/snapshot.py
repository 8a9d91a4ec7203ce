"""Immutable views of a running migration: the only thing a console reads."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class LevelView:
    """One BFS level held in a queue's memory cache. in_progress counts tasks pulled into the queue's
    buffer as well as leased ones: from the level's point of view both are taken."""

    depth: int
    nodes: int
    pending: int
    in_progress: int
    successful: int
    failed: int


@dataclass(frozen=True)
class QueueView:
    side: str  # "src" | "dst"
    mode: str  # "traversal" | "retry" | "copy"
    state: str  # "idle" | "running" | "paused" | "waiting" | "stopping" | "stopped" | "completed"
    round: int
    round_expected: int  # tasks of the current round (folders to list, or items to copy)
    round_completed: int
    buffered: int  # tasks waiting in the bounded pending buffer
    in_flight: int  # leased tasks
    workers: int
    completed_total: int
    failed_total: int
    files_discovered: int
    folders_discovered: int
    discovery_rate: float  # entries/s, EMA
    levels: tuple[LevelView, ...]
    wait_reason: str | None = None
    copy_pass: int = 0  # 1 = folders, 2 = files, 0 = not copying


@dataclass(frozen=True)
class GateView:
    max_src_ahead: int
    src_round: int
    dst_round: int
    src_done: bool
    dst_done: bool
    src_may_start: bool
    dst_may_start: bool
    src_reason: str | None  # why SRC waits, in words; None when it may go
    dst_reason: str | None


@dataclass(frozen=True)
class CopyView:
    items_done: int = 0
    bytes_done: int = 0
    items_total: int = 0  # known once traversal has finished
    bytes_total: int = 0
    folders_created: int = 0
    files_copied: int = 0
    skipped: int = 0  # destination newer: kept
    failed: int = 0
    items_per_s: float = 0.0
    bytes_per_s: float = 0.0
    eta_s: float | None = None


@dataclass(frozen=True)
class ErrorView:
    time: float  # unix seconds
    side: str
    phase: str
    path: str  # display form (undecodable bytes escaped)
    message: str
    attempts: int


@dataclass(frozen=True)
class RatePoint:
    time: float
    discovery_rate: float
    items_per_s: float
    bytes_per_s: float


@dataclass(frozen=True)
class Summary:
    src_files: int
    src_folders: int
    dst_entries: int
    to_copy: int
    identical: int
    dst_newer: int
    not_on_src: int
    copied: int
    bytes_copied: int
    failed: int
    elapsed_s: float
    excluded: int = 0  # source entries left out by the exclude patterns (an excluded folder counts once)
    vanished: int = 0  # source entries gone between their listing and their copy
    will_fail: int = 0  # a plan's: entries its copy will refuse (DST has something else in the way, and below)


@dataclass(frozen=True)
class MigrationSnapshot:
    phase: str  # "new" | "traversal" | "copy" | "retry" | "planned" | "done" | "interrupted"
    state: str  # "running" | "paused" | "stopping" | "stopped" | "finished"
    src_root: str
    dst_root: str
    db_path: str
    dry_run: bool
    taken_at: float
    elapsed_s: float
    src: QueueView
    dst: QueueView
    gate: GateView
    copy: CopyView
    errors: tuple[ErrorView, ...]  # newest last, bounded
    failed_count: int
    history: tuple[RatePoint, ...] = field(default_factory=tuple)  # last minutes, for sparklines
    summary: Summary | None = None
    message: str | None = None  # one line for the operator: what just happened
    stop_reason: str | None = None  # why the run stopped on its own (a full disk, no thread left), if it did
    settings: tuple[tuple[str, str], ...] = field(default_factory=tuple)  # live-tunable values
