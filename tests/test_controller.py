"""The controller a console drives: pause really pauses, resume resumes, the observer publishes
queue_stats, and snapshots are immutable values."""

from __future__ import annotations

import dataclasses
import os
import threading
import time

import pytest

from support import CannotListLocked, helpers_of_this_process, wait_until

from engine.adapters.local import LocalAdapter
from engine.adapters.memory import Faults, MemoryAdapter
from engine.errors import UserError
from engine.migration import Migration
from engine.settings import Settings


def slow_tree(folders=40, files=5, latency=0.01) -> MemoryAdapter:
    src = MemoryAdapter(Faults(latency=latency))
    for i in range(folders):
        src.add_folder(f"d{i}")
        for k in range(files):
            src.add_file(f"d{i}/f{k}", b"x" * (k + 1))
    return src


def test_pause_stops_progress_and_resume_continues(tmp_path):
    src = slow_tree()
    m = Migration.create(str(tmp_path / "run.duckdb"), "/s", "/d", Settings(observer_interval=0.05),
                         src_adapter=src, dst_adapter=MemoryAdapter())
    m.start()
    wait_until(lambda: m.snapshot().src.completed_total >= 3)
    m.pause()
    assert m.snapshot().state == "paused"
    wait_until(lambda: m.snapshot().src.in_flight == 0)
    frozen = m.snapshot()
    time.sleep(0.4)
    later = m.snapshot()
    assert later.src.completed_total == frozen.src.completed_total, "work went on while paused"
    assert later.src.state == "paused" and later.copy.eta_s is None  # nothing moves: no time left to tell
    m.resume()
    assert m.snapshot().state == "running"
    assert m.wait(60)
    assert m.phase == "done" and m.summary.copied == 40 + 40 * 5
    done = m.snapshot().copy  # a finished run moves nothing: no rate left over from its last seconds
    assert (done.items_per_s, done.bytes_per_s, done.eta_s) == (0.0, 0.0, None)
    m.close()


def test_a_copy_paused_shows_no_rate_once_its_tasks_in_hand_are_done(tmp_path):
    """Not a rate decaying for seconds after everything stopped moving."""
    m = Migration.create(str(tmp_path / "run.duckdb"), "/s", "/d", Settings(observer_interval=0.05),
                         src_adapter=slow_tree(folders=60, latency=0.005), dst_adapter=MemoryAdapter())
    m.start()
    wait_until(lambda: m.phase == "copy" and m.snapshot().copy.items_per_s > 0)
    m.pause()
    wait_until(lambda: m.snapshot().src.in_flight == 0)
    paused = m.snapshot().copy
    assert (paused.items_per_s, paused.bytes_per_s, paused.eta_s) == (0.0, 0.0, None)
    m.resume()
    assert m.wait(60) and m.phase == "done"
    m.close()


def test_observer_writes_queue_stats_rows(tmp_path):
    m = Migration.create(str(tmp_path / "run.duckdb"), "/s", "/d", Settings(observer_interval=0.05),
                         src_adapter=slow_tree(latency=0.005), dst_adapter=MemoryAdapter())
    m.start()
    assert m.wait(60)
    latest = m.store.latest_queue_stats()
    assert {"src", "dst", "copy"} <= set(latest)
    for key in ("round", "pending", "in_progress", "completed", "failed", "files_discovered_total",
                "folders_discovered_total", "discovery_rate_items_per_sec"):
        assert key in latest["src"], key
    assert latest["src"]["files_discovered_total"] == 200 and latest["src"]["folders_discovered_total"] == 40
    assert latest["copy"]["files"] == 200 and latest["copy"]["folders"] == 40
    assert m.observer.ticks >= 3
    m.close()


def test_snapshot_is_immutable_and_reports_the_gate(tmp_path):
    m = Migration.create(str(tmp_path / "run.duckdb"), "/s", "/d", Settings(max_src_ahead=2),
                         src_adapter=slow_tree(folders=3, files=1), dst_adapter=MemoryAdapter())
    snap = m.snapshot()
    assert snap.phase == "new" and snap.gate.max_src_ahead == 2
    with pytest.raises(dataclasses.FrozenInstanceError):
        snap.phase = "done"  # type: ignore[misc]
    m.start()
    assert m.wait(30)
    done = m.snapshot()
    assert done.phase == "done" and done.state == "finished" and done.summary is not None
    assert done.gate.src_done and done.gate.dst_done
    m.close()


def test_stop_is_graceful_and_the_file_resumes(tmp_path):
    src = slow_tree(folders=60, latency=0.02)
    dst = MemoryAdapter()
    db = str(tmp_path / "run.duckdb")
    m = Migration.create(db, "/s", "/d", Settings(), src_adapter=src, dst_adapter=dst)
    m.start()
    wait_until(lambda: m.snapshot().src.completed_total >= 5)
    m.stop()
    assert m.wait(30)
    assert m.interrupted and m.snapshot().phase == "interrupted"
    m.resume_from_db()
    assert m.wait(60) and m.phase == "done"
    assert {p for p, e in dst.entries.items() if e.type == "file"} == \
        {p for p, e in src.entries.items() if e.type == "file"}
    m.close()


def test_a_finished_run_says_one_elapsed_time_everywhere(tmp_path):
    m = Migration.create(str(tmp_path / "run.duckdb"), "/s", "/d", Settings(), src_adapter=slow_tree(folders=10),
                         dst_adapter=MemoryAdapter())
    m.start()
    assert m.wait(60) and m.phase == "done"
    time.sleep(0.05)  # a clock still running would show it
    stored = m.store.run_info().elapsed_s
    assert m.summary.elapsed_s == stored == m.snapshot().elapsed_s == m.elapsed()  # title, Summary, status
    m.close()


def test_a_forced_stop_does_not_wait_for_a_copy_in_flight(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    data = os.urandom(16 << 20)
    (src / "big.bin").write_bytes(data)
    db = str(tmp_path / "run.duckdb")
    m = Migration.create(db, str(src), str(dst), Settings(bwlimit="256K"))  # ~64 s for the file
    m.start()
    wait_until(lambda: any(n.endswith(".migrate-tmp") for n in os.listdir(dst)) if dst.exists() else False,
               timeout=30)
    m.stop(force=True)
    assert m.wait(20), "the forced stop waited for the copy in flight"  # which needs a minute more
    assert m.interrupted
    # its copy processes end with it (they used to outlive a forced stop, which seals nothing)
    wait_until(lambda: not helpers_of_this_process("engine.copying"), timeout=30)
    m.limiter.rate = 0  # the copy left behind (a daemon thread) ends now, not in a minute, within this test
    wait_until(lambda: not [t for t in threading.enumerate() if t.name.endswith("-copy-w")], timeout=30)
    m.close()

    m = Migration.open(db)
    m.apply_settings({"bwlimit": 0})
    m.resume_from_db()
    assert m.wait(60) and m.phase == "done", m.message
    m.close()
    assert os.listdir(dst) == ["big.bin"] and (dst / "big.bin").read_bytes() == data  # its temporary swept


def test_a_retry_shows_what_it_finds_on_top_of_what_the_run_found(tmp_path):
    """A retry lists only what failed: the SRC column's 'found' must not fall to what the retry alone
    found (the console, opening a finished run file and pressing t, showed 'found 0 files')."""
    root, db = tmp_path / "src", str(tmp_path / "run.duckdb")
    for folder in ("d0", "d1", "d2", "locked"):
        (root / folder).mkdir(parents=True)
        (root / folder / "f").write_bytes(b"x")
    first = Migration.create(db, str(root), str(tmp_path / "dst"), Settings(list_processes=False),
                             src_adapter=CannotListLocked(root))
    first.start()
    assert first.wait(60) and first.summary.failed == 1
    first.close()

    m = Migration.open(db)  # as migrate-tui --db opens it: this process has counted nothing
    before = m.snapshot().src
    assert (before.files_discovered, before.folders_discovered) == (3, 4)
    seen, listed = [], m.src.list

    def list_and_look(path, *args, **kwargs):
        if path == "locked":
            seen.append(m.snapshot().src)  # mid-retry, from the worker listing it
        return listed(path, *args, **kwargs)

    m.src.list = list_and_look
    m.apply_settings({"list_processes": False})
    m.retry()
    assert m.wait(60) and m.summary.failed == 0
    assert seen and seen[0].mode == "retry" and (seen[0].files_discovered, seen[0].folders_discovered) == (3, 4)
    after = m.snapshot().src
    assert (after.files_discovered, after.folders_discovered) == (4, 4)
    m.close()


def test_a_destination_replaced_before_a_retry_is_refused_with_its_reason(tmp_path):
    """The console's t (a retry in the same process): what the run file knows of the destination (copied,
    identical) holds for the folder it copied into only; a folder put in its place since is refused, and
    nothing is written to either."""
    src, dst, db = tmp_path / "src", tmp_path / "dst", str(tmp_path / "run.duckdb")
    (src / "locked").mkdir(parents=True)
    (src / "locked" / "f").write_bytes(b"x")
    (src / "g").write_bytes(b"y")
    m = Migration.create(db, str(src), str(dst), Settings(list_processes=False, copy_processes=False),
                         src_adapter=CannotListLocked(src))
    m.start()
    assert m.wait(60) and m.summary.failed == 1 and (dst / "g").exists()
    (dst / "locked").rmdir()
    dst.rename(tmp_path / "old dst")
    dst.mkdir()
    m.src.list = LocalAdapter(src).list  # the folder can be listed now
    with pytest.raises(UserError, match="is not the folder this run compared"):
        m.retry()
    assert not m.running and os.listdir(dst) == [] and sorted(os.listdir(tmp_path / "old dst")) == ["g"]
    m.close()


class ReplacesTheDestination(LocalAdapter):
    """A source whose listing of 'a' coincides with the destination being moved away and made anew (the
    operator, during a pause of a long traversal, say)."""

    def __init__(self, root, dst):
        super().__init__(root)
        self.dst, self.done = dst, False

    def list(self, path, *args, **kwargs):
        if path == "a" and not self.done:
            self.done = True
            self.dst.rename(self.dst.parent / "old dst")
            self.dst.mkdir()
        return super().list(path, *args, **kwargs)


def test_a_destination_replaced_during_the_traversal_stops_the_run_before_its_copy(tmp_path):
    """The comparison found the destination's files identical; the folder now there is empty: the copy
    would report success and copy nothing. It stops, resumable once the right folder is back."""
    src, dst, db = tmp_path / "src", tmp_path / "dst", str(tmp_path / "run.duckdb")
    for root in (src, dst):
        (root / "a").mkdir(parents=True)
        (root / "a" / "f").write_bytes(b"x")
        os.utime(root / "a" / "f", ns=(1_600_000_000_000_000_000,) * 2)
    m = Migration.create(db, str(src), str(dst), Settings(list_processes=False, copy_processes=False),
                         src_adapter=ReplacesTheDestination(src, dst))
    m.start()
    assert m.wait(60) and m.fatal is not None and "is not the folder this run compared" in m.fatal
    assert os.listdir(dst) == [] and m.phase != "done"
    m.close()
