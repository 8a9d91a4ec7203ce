"""What a run file says of a run that this process has not driven (yet): where each side's traversal
stopped or ended, the entries found, and the failures recorded. Built as the snapshot's own views, so a
console shows a finished or interrupted run file with the panels it shows a live run with."""

from __future__ import annotations

from engine.model import ACTION_COPY, DST, EXCLUDED, FAILED, IN_PROGRESS, PENDING, SKIPPED, SRC, SUCCESSFUL, display
from engine.snapshot import CopyView, ErrorView, GateView, QueueView
from engine.store import Store

LISTED = (SUCCESSFUL, FAILED)
TO_LIST = (PENDING, IN_PROGRESS)  # in_progress: leased when the run stopped; a resume lists it again


def recorded_errors(store: Store, limit: int) -> list[ErrorView]:
    """The run file's latest dead letters (task_errors), oldest first, as the console lists failures."""
    return [ErrorView(d.time, d.side, d.phase, display(d.path), d.message, d.attempts)
            for d in store.dead_letters(limit)]


def side_view(store: Store, side: str, phase: str) -> QueueView:
    """One side's traversal as the file holds it. Round N lists the folders of depth N: an unfinished
    side is at the shallowest depth with folders still to list (where a resume starts); a finished one
    ended with the deepest depth that had folders. Entries found are counted as the summary counts them
    (SRC without excluded entries, DST all), the roots left out."""
    files = folders = 0
    rounds: dict[int, list[int]] = {}  # depth -> [folders to list, listed, failed, still to list]
    columns = "depth, type = 'folder' AS is_folder, traversal_status"
    for depth, is_folder, status, n, _size in store.grouped(side, columns):
        if depth > 0 and not (side == SRC and status == EXCLUDED):
            if is_folder:
                folders += n
            else:
                files += n
        if not is_folder or status not in LISTED + TO_LIST:
            continue
        tally = rounds.setdefault(depth, [0, 0, 0, 0])
        tally[0] += n
        tally[1] += n if status in LISTED else 0
        tally[2] += n if status == FAILED else 0
        tally[3] += n if status in TO_LIST else 0
    unlisted = sorted(d for d, tally in rounds.items() if tally[3])
    # A traversal that handed over to the copy (or finished) is done, even where DST folders stayed
    # pending behind a failed SRC twin: those wait for retry mode, not for this traversal.
    done = phase not in ("traversal", "retry") or not unlisted
    round_ = (max(rounds, default=0)) if done else unlisted[0]
    expected, listed, _, _ = rounds.get(round_, (0, 0, 0, 0))
    return QueueView(
        side=side, mode="retry" if phase == "retry" else "traversal", state="completed" if done else "stopped",
        round=round_, round_expected=expected, round_completed=listed, buffered=0, in_flight=0, workers=0,
        completed_total=sum(t[1] for t in rounds.values()), failed_total=sum(t[2] for t in rounds.values()),
        files_discovered=files, folders_discovered=folders, discovery_rate=0.0, levels=())


def interrupted_reason(queue: QueueView, phase: str) -> str | None:
    if queue.state == "completed":
        return None
    sealed = "no round sealed yet" if queue.round == 0 else \
        "round 0 sealed" if queue.round == 1 else f"rounds 0-{queue.round - 1} sealed"
    return f"{phase} interrupted: {sealed}"


def traversal_views(store: Store, phase: str, max_src_ahead: int) -> tuple[QueueView, QueueView, GateView]:
    """Both sides and the gate between them, from the file. No gate rule applies to a run that does
    not run: a side is either done or says where the run was interrupted."""
    src, dst = side_view(store, SRC, phase), side_view(store, DST, phase)
    src_done, dst_done = src.state == "completed", dst.state == "completed"
    gate = GateView(max_src_ahead, src.round, dst.round, src_done, dst_done, src_done, dst_done,
                    interrupted_reason(src, phase), interrupted_reason(dst, phase))
    return src, dst, gate


def copy_view(store: Store, phase: str) -> CopyView:
    """The copy as the file holds it, once traversal has decided what to copy: the entries to copy, those
    copied (bytes of files), kept because the destination became newer, and failed."""
    if phase not in ("copy", "planned", "done"):
        return CopyView()
    total = total_bytes = folders = files = copied_bytes = skipped = failed = 0
    for is_folder, action, status, n, size in store.grouped(SRC, "type = 'folder' AS is_folder, action, copy_status"):
        if action != ACTION_COPY:
            continue
        nbytes = 0 if is_folder else size
        total, total_bytes = total + n, total_bytes + nbytes
        if status == SUCCESSFUL:
            folders, files = (folders + n, files) if is_folder else (folders, files + n)
            copied_bytes += nbytes
        elif status == SKIPPED:
            skipped += n
        elif status == FAILED:
            failed += n
    return CopyView(items_done=folders + files + skipped + failed, bytes_done=copied_bytes, items_total=total,
                    bytes_total=total_bytes, folders_created=folders, files_copied=files, skipped=skipped,
                    failed=failed)
