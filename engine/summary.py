"""The end-of-run summary, counted by DuckDB from the run file."""

from __future__ import annotations

from engine.model import DST, SRC
from engine.snapshot import Summary
from engine.store import Store


def summarize(store: Store, elapsed_s: float, plan: bool = False) -> Summary:
    """The run's tally from its file; plan: a dry run's, which also counts what its copy will refuse."""
    src = store.grouped(SRC, "type = 'folder' AS is_folder, action, copy_status, traversal_status")
    dst = store.grouped(DST, "\"match\", traversal_status")
    files = folders = to_copy = identical = newer = copied = copied_bytes = failed = excluded = vanished = 0
    for is_folder, action, copy_status, traversal, n, size in src:
        if action == "excluded" or traversal == "excluded":
            excluded += n
            continue
        if is_folder:
            folders += n
        else:
            files += n
        if action == "copy":
            to_copy += n
            if copy_status == "successful":
                copied += n
                copied_bytes += 0 if is_folder else size
        elif action == "skip":
            identical += n
        elif action == "keep_dst_newer":
            newer += n
        elif action == "vanished":
            vanished += n
        if traversal == "failed" or copy_status == "failed":
            failed += n
    not_on_src = sum(n for match, _, n, _ in dst if match == "not_on_src")
    dst_failed = sum(n for _, traversal, n, _ in dst if traversal == "failed")
    dst_entries = sum(n for _, _, n, _ in dst)
    # the roots are bookkeeping, not entries of the trees
    blocked, below, _ = store.in_the_way(limit=0) if plan else (0, 0, [])
    return Summary(files, max(0, folders - 1), max(0, dst_entries - 1), to_copy, max(0, identical - 1), newer,
                   not_on_src, copied, copied_bytes, failed + dst_failed, elapsed_s, excluded, vanished,
                   blocked + below)
