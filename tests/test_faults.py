"""Faults injected through the memory adapter: transient errors retried with backoff, permanent ones
dead-lettered with their reason, hung tasks reclaimed by lease expiry, retry mode, a full disk."""

from __future__ import annotations

import errno

from engine import cli
from engine.adapters.memory import Faults, MemoryAdapter
from engine.migration import Migration
from engine.settings import Settings

FAST = dict(backoff_base=0.005, backoff_cap=0.02, observer_interval=0.05)


def memory_tree(folders: int = 60, files_per_folder: int = 8) -> MemoryAdapter:
    src = MemoryAdapter()
    for i in range(folders):
        parent = f"d{i % 6}" if i >= 6 else ""
        folder = f"{parent}/d{i}" if parent else f"d{i}"
        src.add_folder(folder)
        for k in range(files_per_folder):
            src.add_file(f"{folder}/f{k}", f"{folder}/{k}".encode() * (k + 1))
    return src


def files_of(adapter: MemoryAdapter) -> dict[str, bytes]:
    return {p: e.data for p, e in adapter.entries.items() if e.type == "file"}


def run(tmp_path, src, dst, **settings) -> Migration:
    m = Migration.create(str(tmp_path / "run.duckdb"), "/mem/src", "/mem/dst", Settings(**{**FAST, **settings}),
                         src_adapter=src, dst_adapter=dst)
    m.start()
    assert m.wait(60), "the run hung"
    return m


def test_transient_permanent_and_hung_faults(tmp_path):
    src = memory_tree()
    src.faults = Faults(transient_rate=0.05, seed=5,
                        permanent={"d3": PermissionError(errno.EACCES, "Permission denied", "d3"),
                                   "d4/d16/f2": OSError(errno.ENAMETOOLONG, "File name too long", "f2")},
                        hang_seconds={"d5": 1.5})
    dst = MemoryAdapter(Faults(transient_rate=0.05, seed=6))
    # a lease shorter than d5's hang (it is reclaimed), long enough that a slow machine expires no other one:
    # an expired lease is an attempt, and the permanent errors below must show exactly one
    m = run(tmp_path, src, dst, max_retries=6, lease_timeout=1.0, src_workers=2, dst_workers=2, copy_workers=2)
    assert m.fatal is None and m.phase == "done"

    letters = {(d.path, d.message.split(" (")[0]) for d in m.store.dead_letters()}
    assert letters == {("d3", "Permission denied"), ("d4/d16/f2", "File name too long")}
    assert all(d.attempts == 1 for d in m.store.dead_letters()), "a permanent error was retried"
    rows = {(r[0], r[1]): r for r in m.store.report_rows(failed_only=True)}
    assert set(rows) == {("src", "d3"), ("src", "d4/d16/f2")}
    # each with its reason, the folder's too (created on DST after all: its copy must not erase why it failed)
    assert rows[("src", "d3")][7].startswith("Permission denied") and rows[("src", "d3")][6] == "successful"
    assert rows[("src", "d4/d16/f2")][7].startswith("File name too long")

    copied = files_of(dst)
    for path, data in files_of(src).items():
        if path.startswith("d3/") or path == "d4/d16/f2":
            assert path not in copied
        else:
            assert copied.get(path) == data, f"missing or wrong after transient faults: {path}"
    queues = {q.side + q.mode.name: q for q in m.finished_queues}
    assert sum(q.retried_total for q in queues.values()) > 0, "no transient fault was retried"
    assert queues["srctraversal"].expired_leases >= 1, "the hung listing's lease never expired"
    m.close()


def test_retry_mode_finishes_what_failed(tmp_path):
    src = memory_tree()
    src.faults = Faults(permanent={"d2": PermissionError(errno.EACCES, "Permission denied", "d2")})
    dst = MemoryAdapter()
    m = run(tmp_path, src, dst)
    assert m.summary.failed == 1
    assert not any(p.startswith("d2/") for p in files_of(dst))

    src.faults.permanent.clear()  # the operator fixed the permission
    m.retry()
    assert m.wait(60)
    assert m.fatal is None and m.phase == "done"
    assert files_of(dst) == files_of(src)
    assert m.store.dead_letters() == []
    assert m.summary.failed == 0
    m.close()


def test_full_destination_stops_the_run_and_resume_finishes(tmp_path):
    src = memory_tree(folders=12)
    dst = MemoryAdapter(Faults(permanent={"d1/d7/f3": OSError(errno.ENOSPC, "No space left on device", "f3")}))
    m = run(tmp_path, src, dst)
    assert m.phase == "copy" and m.summary is None, "a full disk must stop the run, not finish it"
    assert "No space left" in (m.fatal or m.message or "")
    assert m.interrupted

    dst.faults.permanent.clear()  # space was freed
    m.resume_from_db()
    assert m.wait(60)
    assert m.phase == "done" and m.summary.failed == 0
    assert files_of(dst) == files_of(src)
    m.close()


def test_source_changing_between_traversal_and_copy(tmp_path):
    src = memory_tree(folders=6, files_per_folder=3)
    dst = MemoryAdapter()
    m = run(tmp_path, src, dst)
    m.close()
    db = tmp_path / "run.duckdb"
    db.unlink()
    m = Migration.create(str(db), "/mem/src", "/mem/dst", Settings(**FAST), dry_run=True,
                         src_adapter=src, dst_adapter=MemoryAdapter())
    m.start()
    assert m.wait(30) and m.phase == "planned"
    dst2 = m.dst
    del src.entries["d1/f0"]  # vanished
    src.entries["d1/f1"].data += b" and it grew"  # grew
    del src.entries["d1/f2"]
    src.add_folder("d1/f2")  # replaced by a folder
    m.dry_run = False
    m.start()
    assert m.wait(30)
    assert m.phase == "done" and m.fatal is None
    reasons = {d.path: d.message for d in m.store.dead_letters()}
    assert "d1/f0" not in reasons and m.summary.vanished == 1  # gone: nothing to copy, not a failure
    assert "changed from file to folder" in reasons["d1/f2"]
    assert dst2.entries["d1/f1"].data == src.entries["d1/f1"].data
    m.close()


def test_a_long_copy_under_a_bandwidth_limit_keeps_its_lease(tmp_path):
    """Heartbeats as bytes move: a copy longer than the lease timeout is never reclaimed."""
    src = MemoryAdapter()
    src.add_file("big.bin", bytes(range(256)) * 4096)  # 1 MiB
    for k in range(20):
        src.add_file(f"small{k}", b"x")
    dst = MemoryAdapter()
    m = run(tmp_path, src, dst, bwlimit="1M", lease_timeout=0.6, copy_workers=2)
    assert m.phase == "done" and m.summary.failed == 0
    copy = next(q for q in m.finished_queues if q.mode.name == "copy")
    assert copy.expired_leases == 0 and copy.stale_reports == 0
    assert files_of(dst) == files_of(src)
    assert m.limiter.charged == sum(len(d) for d in files_of(src).values()), "charged more than moved"
    assert m.elapsed() >= 0.8, "the limit was not applied (1 MiB at 1 MiB/s)"
    m.close()


def test_a_full_destination_is_named_with_the_command_that_resumes(tmp_path, capsys):
    """As `migrate run` drives it: exit 3 (stopped, resumable; not 2, bad input), the entry it met and how
    to go on, on one line."""
    src = memory_tree(folders=12)
    dst = MemoryAdapter(Faults(permanent={"d1/d7/f3": OSError(errno.ENOSPC, "No space left on device", "f3")}))
    db = tmp_path / "run.duckdb"
    m = Migration.create(str(db), "/mem/src", "/mem/dst", Settings(**FAST), src_adapter=src, dst_adapter=dst)
    assert cli._drive(m, quiet=True) == 3
    assert capsys.readouterr().err.strip() == (
        f"migrate: stopped: No space left on device (errno 28), at 'd1/d7/f3'; the run file stays resumable: "
        f"fix that, then migrate resume --db {db}")


def test_a_source_folder_that_cannot_be_looked_at_when_copied_fails_its_entries_not_the_run(tmp_path):
    src = memory_tree()
    dst = MemoryAdapter()
    # listed fine; by the copy its permissions changed (a chmod 0 between a dry run and --use-plan, say)
    src.faults = Faults(stat_errors={"d4": PermissionError(errno.EACCES, "Permission denied", "d4")})
    m = run(tmp_path, src, dst)
    assert m.fatal is None and m.phase == "done", m.fatal  # it used to stop: internal error, every resume too

    failed = {r[1]: r[7] for r in m.store.report_rows(failed_only=True)}
    below = {p for p in files_of(src) if p.startswith("d4/")}
    assert below and set(failed) >= below
    assert all("'d4' on the source cannot be looked at (Permission denied" in failed[p] for p in below)
    assert m.summary.failed == len(failed)
    copied = files_of(dst)
    assert {p: d for p, d in files_of(src).items() if not p.startswith("d4/")} == copied  # the rest copied
    m.close()


def test_a_root_that_cannot_be_listed_is_in_the_failed_report(tmp_path):
    """status counts a failed root among the failures and the CLI sends the operator to report --failed:
    that report must name it, with its reason (it gave nothing: roots were left out of every report)."""
    src = memory_tree(folders=6, files_per_folder=2)
    src.faults = Faults(permanent={"": PermissionError(errno.EACCES, "Permission denied", "")})
    m = run(tmp_path, src, MemoryAdapter())
    assert m.fatal is None
    failed = {(r[0], r[1]): r[7] for r in m.store.report_rows(failed_only=True)}
    assert set(failed) == {("src", ""), ("dst", "")}, failed  # DST's root waits for its SRC counterpart
    assert failed[("src", "")].startswith("Permission denied")
    assert all(r[1] for r in m.store.report_rows()  # the full report lists entries, never a root that was listed
               if r[4] != "failed")
    m.close()
