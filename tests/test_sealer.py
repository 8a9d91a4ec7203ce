"""The sealer commits seals in the order they were handed over, lets readers wait for a side's commits,
holds back a run loop that gets too far ahead, and turns a failed seal into a stopped run, never a hang."""

from __future__ import annotations

import threading
import time

import pytest
from support import run_cli

from engine.migration import Migration
from engine.model import DST, SRC
from engine.sealer import Sealer
from engine.settings import Settings
from engine.store import Store
from engine.treegen import make_source, mirror


def test_commits_in_order_and_readers_wait_for_them():
    committed, release = [], threading.Event()
    sealer = Sealer(on_sealed=lambda side, depth: committed.append((side, depth)), max_pending=8)

    def commit(side, depth, gate=None):
        def run():
            if gate is not None:
                gate.wait(5)
            committed.append(("commit", side, depth))
        return run

    sealer.submit(SRC, 0, commit(SRC, 0, release))
    sealer.submit(SRC, 1, commit(SRC, 1))
    sealer.submit(DST, 0, commit(DST, 0))
    waiter_done = threading.Event()
    threading.Thread(target=lambda: (sealer.wait_sealed(SRC, 1), waiter_done.set()), daemon=True).start()
    assert not waiter_done.wait(0.2)  # SRC's round 0 is still being committed
    release.set()
    assert waiter_done.wait(5)
    sealer.close()
    assert committed == [("commit", SRC, 0), (SRC, 0), ("commit", SRC, 1), (SRC, 1),
                         ("commit", DST, 0), (DST, 0)]


def test_a_run_loop_too_far_ahead_waits_for_the_commits():
    release = threading.Event()
    sealer = Sealer(max_pending=2)
    sealer.submit(SRC, 0, lambda: release.wait(5))
    sealer.submit(SRC, 1, lambda: None)
    third = threading.Event()
    threading.Thread(target=lambda: (sealer.submit(SRC, 2, lambda: None), third.set()), daemon=True).start()
    assert not third.wait(0.2)
    release.set()
    assert third.wait(5)
    sealer.close()


def test_a_failed_seal_reaches_whoever_comes_next():
    sealer = Sealer()

    def broken():
        raise OSError(28, "No space left on device")

    sealer.submit(SRC, 0, broken)
    with pytest.raises(OSError, match="No space left"):
        sealer.wait_sealed(SRC, 0)
    with pytest.raises(OSError):
        sealer.submit(SRC, 1, lambda: None)
    with pytest.raises(OSError):
        sealer.close()


def test_a_run_whose_seal_fails_stops_with_the_reason(tmp_path, monkeypatch):
    tree = make_source(tmp_path / "src", 400, seed=3, max_depth=5, fanout=3)
    mirror(tree, tmp_path / "dst", seed=4)
    m = Migration.create(str(tmp_path / "run.duckdb"), str(tree.root), str(tmp_path / "dst"),
                         Settings(list_processes=False), dry_run=True)
    prepare = m.store.prepare_traversal_seal

    def failing_at_depth_2(side, depth, *args, **kwargs):
        commit = prepare(side, depth, *args, **kwargs)
        if side == SRC and depth == 2:
            def fail():
                raise OSError(5, "Input/output error")
            return fail
        return commit

    monkeypatch.setattr(m.store, "prepare_traversal_seal", failing_at_depth_2)
    started = time.monotonic()
    m.start()
    assert m.wait(60), "the run hung after a failed seal"
    assert time.monotonic() - started < 60
    assert m.fatal is not None and "Input/output error" in m.fatal
    assert m.phase == "traversal"  # not planned: the traversal did not finish
    # what was committed before the failure stays: a resume goes on from SRC's round 2
    assert m.store.count(SRC, "depth <= 2") > 0
    m.close()


def test_a_run_out_of_duckdb_memory_stops_in_one_line_and_resumes_with_more(tmp_path, capsys):
    """DuckDB's error is a paragraph of advice: the operator gets the setting to raise, and a resume takes
    the raised value (it used to be refused as a setting that cannot change mid-run)."""
    tree = make_source(tmp_path / "src", 400, seed=3, max_depth=5, fanout=3)
    db = tmp_path / "run.duckdb"
    m = Migration.create(str(db), str(tree.root), str(tmp_path / "dst"), Settings(list_processes=False),
                         dry_run=True)
    m.store.configure("1MB", 1)  # below what a setting may be (32MB): the seals' statements need more
    m.start()
    assert m.wait(60), "the run hung after a seal ran out of memory"
    assert m.fatal is not None and "\n" not in m.fatal, m.fatal
    assert "ran out of memory" in m.fatal and "raise duckdb_memory_limit" in m.fatal
    m.close()

    code, out, err = run_cli(capsys, "resume", "--db", str(db), "--duckdb-memory-limit", "512MB")
    assert code == 0 and "dry run complete" in out, err
    assert "cannot change" not in err
    store = Store.open(str(db))
    try:
        assert store.run_info().settings["duckdb_memory_limit"] == "512MB"
    finally:
        store.close()
