"""Past a limit on processes and threads (ulimit -u, a container's pids limit) CPython refuses new threads.
The engine goes on with the threads it has where it can, else stops resumable with one line; never a
traceback, never a finished copy reported as stopped. Root ignores ulimit -u, so the refusal is made where
CPython makes it: threading._start_new_thread raises RuntimeError("can't start new thread")."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from support import run_cli, threads_refused, tree_state, wait_until

from engine.adapters.local import LocalAdapter
from engine.migration import Migration
from engine.settings import Settings
from engine.threads import THREAD_LIMIT, ThreadLimit
from engine.treegen import make_source


def only_first_worker(name, started):
    """A traversal or copy worker, past the first of its queue."""
    return name.endswith("-w") and name in started


@pytest.fixture
def small_tree(tmp_path):
    return make_source(tmp_path / "src", 400, seed=11).root


def test_workers_that_cannot_start_leave_the_run_to_those_that_did_and_it_says_so(small_tree, tmp_path):
    dst = tmp_path / "dst"
    m = Migration.create(str(tmp_path / "run.duckdb"), str(small_tree), str(dst),
                         Settings(src_workers=4, dst_workers=4, copy_workers=4))
    told = []
    m.on_notice = told.append
    with threads_refused(only_first_worker):
        m.start()
        assert m.wait(120)
    assert m.phase == "done" and m.summary.failed == 0 and m.fatal is None
    m.close()
    assert tree_state(dst) == tree_state(small_tree)
    assert sorted(t for t in told if "goes on with" in t) == [
        f"{THREAD_LIMIT}; {side} {mode} goes on with 1 worker"
        for side, mode in (("dst", "traversal"), ("src", "copy"), ("src", "traversal"))]


class SlowLocal(LocalAdapter):
    """Listings that take a while, so that a live edit lands while the traversal runs."""

    def list(self, path, specials=None):
        time.sleep(0.02)
        return super().list(path, specials)


def test_a_live_raise_of_workers_past_the_limit_is_told_each_time(small_tree, tmp_path):
    m = Migration.create(str(tmp_path / "run.duckdb"), str(small_tree), str(tmp_path / "dst"),
                         Settings(src_workers=2, list_processes=False), dry_run=True,
                         src_adapter=SlowLocal(small_tree), dst_adapter=LocalAdapter(tmp_path / "dst"))
    told = []
    m.on_notice = told.append
    with threads_refused(lambda name, started: name == "src-traversal-w" and started.count(name) >= 2):
        m.start()
        wait_until(lambda: any(q.side == "src" and q.state == "running" for q in m.queues.values()))
        for workers in (4, 5):
            assert m.apply_settings({"src_workers": workers}) == []
        assert m.wait(120)
    m.close()
    assert told == [f"{THREAD_LIMIT}; src traversal goes on with 2 workers"] * 2


def test_a_queue_that_cannot_start_stops_the_run_resumable_and_resume_finishes_it(small_tree, tmp_path, capsys):
    db, dst = tmp_path / "run.duckdb", tmp_path / "dst"
    with threads_refused(lambda name, started: name == "dst-traversal-loop"):
        code, out, err = run_cli(capsys, "run", str(small_tree), str(dst), "--db", str(db))
    assert code == 3 and "Traceback" not in err
    assert err.strip().splitlines()[-1] == (f"migrate: stopped: {THREAD_LIMIT}; the run file stays resumable: fix "
                                            f"that, then migrate resume --db {db}")
    code, out, err = run_cli(capsys, "resume", "--db", str(db))
    assert code == 0, err
    assert tree_state(dst) == tree_state(small_tree)


def test_a_run_whose_own_thread_cannot_start_changes_nothing_and_says_how_to_go_on(small_tree, tmp_path, capsys):
    db, dst = tmp_path / "run.duckdb", tmp_path / "dst"
    m = Migration.create(str(db), str(small_tree), str(dst), Settings())
    with threads_refused(lambda name, started: name == "migration"), pytest.raises(ThreadLimit):
        m.start()
    assert not m.running and m.stopped_resumable and m.snapshot().stop_reason == THREAD_LIMIT
    assert m.snapshot().phase == "interrupted"  # not "new": the console's R takes it up
    m.close()
    assert not dst.exists()
    with threads_refused(lambda name, started: name == "migration"):
        code, out, err = run_cli(capsys, "resume", "--db", str(db))
    assert code == 3 and err.strip() == (f"migrate: stopped: {THREAD_LIMIT}; the run file stays resumable: fix "
                                         f"that, then migrate resume --db {db}")
    code, out, err = run_cli(capsys, "resume", "--db", str(db))
    assert code == 0, err
    assert tree_state(dst) == tree_state(small_tree)


@pytest.mark.parametrize("helper_thread", ["observer", "sealer"])
def test_a_run_without_its_observer_or_sealer_stops_resumable(small_tree, tmp_path, helper_thread):
    m = Migration.create(str(tmp_path / "run.duckdb"), str(small_tree), str(tmp_path / "dst"), Settings())
    with threads_refused(lambda name, started: name == helper_thread):
        m.start()
        assert m.wait(60)
    assert m.fatal == THREAD_LIMIT and m.stopped_resumable and m.interrupted
    m.close()


@pytest.mark.parametrize("optional", ["listing-governor", "copy-process-reaper", "listing-process-reaper"])
def test_threads_the_run_can_do_without_are_done_without(small_tree, tmp_path, optional):
    """No listing governor: the counts stay; no reaper: the helpers are reaped here. A copy that finished
    is reported finished (the copy's helpers were reaped after its last round)."""
    dst = tmp_path / "dst"
    m = Migration.create(str(tmp_path / "run.duckdb"), str(small_tree), str(dst), Settings())
    with threads_refused(lambda name, started: name == optional):
        m.start()
        assert m.wait(120)
    assert m.phase == "done" and m.fatal is None and m.summary.failed == 0
    m.close()
    assert tree_state(dst) == tree_state(small_tree)


def test_a_retry_that_cannot_start_says_so_and_is_still_there_to_retry(small_tree, tmp_path, capsys):
    db, dst = tmp_path / "run.duckdb", tmp_path / "dst"
    code, out, err = run_cli(capsys, "run", str(small_tree), str(dst), "--db", str(db))
    assert code == 0, err
    with threads_refused(lambda name, started: name == "migration"):
        code, out, err = run_cli(capsys, "retry", "--db", str(db))
    assert code == 3 and err.strip() == (f"migrate: stopped: {THREAD_LIMIT}; the run file stays resumable: fix "
                                         f"that, then migrate retry --db {db}")
    code, out, err = run_cli(capsys, "retry", "--db", str(db))
    assert code == 0 and "migration complete" in out, err


def test_a_full_disk_stops_the_run_when_no_thread_can_be_started_to_stop_it(tmp_path):
    """The stop of a run that met a full disk is requested from a thread of its own; past the limit the
    queue's run loop requests it instead: no worker dies, the run stops, resume finishes it."""
    import errno

    from test_faults import files_of, memory_tree

    from engine.adapters.memory import Faults, MemoryAdapter

    src = memory_tree(folders=12)
    dst = MemoryAdapter(Faults(permanent={"d1/d7/f3": OSError(errno.ENOSPC, "No space left on device", "f3")}))
    m = Migration.create(str(tmp_path / "run.duckdb"), "/mem/src", "/mem/dst", Settings(backoff_base=0.01),
                         src_adapter=src, dst_adapter=dst)
    with threads_refused(lambda name, started: "_on_stop_run" in name):
        m.start()
        assert m.wait(60)
    assert m.phase == "copy" and m.summary is None and m.interrupted
    assert m.stopped_resumable and "No space left" in m.fatal
    dst.faults.permanent.clear()
    m.resume_from_db()
    assert m.wait(60)
    assert m.phase == "done" and m.summary.failed == 0 and files_of(dst) == files_of(src)
    m.close()


def test_watch_past_the_thread_limit_is_one_line_and_exit_3(small_tree, tmp_path, capsys):
    with threads_refused(lambda name, started: name.startswith("watch-")):
        code, out, err = run_cli(capsys, "watch", str(small_tree), str(tmp_path / "dst"),
                                 "--db", str(tmp_path / "run.duckdb"))
    assert code == 3 and err.strip().splitlines()[-1] == f"migrate: error: {THREAD_LIMIT}"


def test_pyarrow_starts_no_jemalloc_thread(tmp_path):
    """pyarrow's jemalloc, unused here, would start a background thread, and past the thread limit print a
    line on stderr at every failed try: thousands of lines over a run."""
    code = ("import os, engine.store, pyarrow as pa; pa.jemalloc_memory_pool(); "
            "print([open(f'/proc/self/task/{t}/comm').read().strip() for t in os.listdir('/proc/self/task')])")
    names = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "jemalloc_bg_thd" not in names
