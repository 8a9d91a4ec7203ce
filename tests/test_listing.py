"""Listing processes: the same run as listing in-process, survival of a killed helper, none left behind."""

from __future__ import annotations

import os
import signal
import threading
import time

import duckdb

from support import helpers_of_this_process

from engine.adapters.local import LocalAdapter
from engine import cli, listing
from engine.cache import LevelCache
from engine.listing import ListerPool
from engine.migration import Migration
from engine.model import DST, FOLDER, TEMP_SUFFIX, Node, Task, node_id
from engine.settings import Settings
from engine.store import Store
from engine.workers import list_folders

NODE_ROWS = {
    "src": "SELECT id, parent_id, path, parent_path, depth, type, size, mtime_ns, mode, traversal_status, "
           "copy_status, action FROM src_nodes",
    "dst": 'SELECT id, parent_id, path, parent_path, depth, type, size, mtime_ns, mode, traversal_status, "match", '
           "src_id FROM dst_nodes",
}


def node_rows(db) -> dict[str, set]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return {side: set(con.execute(sql).fetchall()) for side, sql in NODE_ROWS.items()}
    finally:
        con.close()


def dry_run(db, src, dst, **settings) -> Migration:
    m = Migration.create(str(db), str(src), str(dst), Settings(**settings), dry_run=True)
    m.start()
    assert m.wait(300)
    return m


def test_a_listing_process_makes_the_same_rows_and_errors_as_listing_here(tmp_path):
    root = tmp_path / "tree"
    for folder in ("a", "b"):
        (root / folder / "sub").mkdir(parents=True)
        (root / folder / "plain.txt").write_bytes(b"x" * 5)
        (root / folder / f".partial.0123abcd{TEMP_SUFFIX}").write_bytes(b"")  # ours: not a destination entry
        os.symlink("nowhere", root / folder / "link")
    (root / "b" / f".draft{TEMP_SUFFIX}").write_bytes(b"usr")  # the user's own, though named alike
    with open(os.path.join(os.fsencode(root / "b"), b"raw\xff\xfe name"), "wb") as f:
        f.write(b"yy")
    adapter = LocalAdapter(str(root))
    tasks = [Task("list-dst", Node(node_id(DST, p), 0, p, 1, FOLDER, 0, 0, 0o755), 1) for p in ("a", "gone", "b")]
    listers = ListerPool()
    try:
        helper = list_folders(DST, adapter, tasks, None, listers)
    finally:
        listers.close()
    here = list_folders(DST, adapter, tasks, None)
    for outcome in (helper, here):
        assert [o.ok for o in outcome] == [True, True, True] and outcome[1].children.count == 0  # gone: empty
    assert [sorted(n.path for n in o.children.folders) for o in helper] == [["a/sub"], [], ["b/sub"]]
    assert [(o.children.start, o.children.count) for o in helper] == [(0, 2), (0, 0), (2, 4)]
    assert helper[0].children.files == here[0].children.files
    level = LevelCache(2)
    for outcome in here:
        if outcome.children.count:
            level.add_files(outcome.children)
    (batch,) = Store._file_batches(DST, level.files)
    rows = sorted(batch.select(["path", "parent_path", "depth", "type", "size"]).to_pylist(), key=lambda r: r["path"])
    assert [tuple(r.values()) for r in rows] == [
        (b"a/link", b"a", 2, "symlink", 7), (b"a/plain.txt", b"a", 2, "file", 5),
        (b"b/.draft.migrate-tmp", b"b", 2, "file", 3),
        (b"b/link", b"b", 2, "symlink", 7), (b"b/plain.txt", b"b", 2, "file", 5),
        (b"b/raw\xff\xfe name", b"b", 2, "file", 2)]


def test_listing_processes_write_exactly_what_listing_in_process_writes(tree_20k_read_only, tmp_path):
    tree, _, dst = tree_20k_read_only
    with_helpers = dry_run(tmp_path / "helpers.duckdb", tree.root, dst, list_processes=True)
    assert with_helpers.summary.failed == 0
    with_helpers.close()
    in_process = dry_run(tmp_path / "inproc.duckdb", tree.root, dst, list_processes=False)
    in_process.close()
    helpers, inproc = node_rows(tmp_path / "helpers.duckdb"), node_rows(tmp_path / "inproc.duckdb")
    assert len(helpers["src"]) > 20_000 and len(helpers["dst"]) > 1_000
    assert helpers == inproc


def test_a_killed_listing_process_is_replaced_and_the_run_stays_exact(tree_20k_read_only, tmp_path):
    tree, _, dst = tree_20k_read_only
    reference = dry_run(tmp_path / "reference.duckdb", tree.root, dst, list_processes=False)
    reference.close()

    m = Migration.create(str(tmp_path / "run.duckdb"), str(tree.root), str(dst),
                         Settings(list_processes=True, backoff_base=0.01), dry_run=True)
    killed = []

    def kill_helpers_once_they_work():
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not killed:
            if m.snapshot().src.completed_total > 50:
                for pid in helpers_of_this_process("engine.listing"):
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
            time.sleep(0.001)

    killer = threading.Thread(target=kill_helpers_once_they_work)
    m.start()
    killer.start()
    assert m.wait(300)
    killer.join()
    assert killed, "the run ended before a listing process could be killed"
    assert m.summary.failed == 0 and not m.store.dead_letters()
    assert m.finished_queues[0].retried_total + m.finished_queues[1].retried_total >= 1
    m.close()
    assert node_rows(tmp_path / "run.duckdb") == node_rows(tmp_path / "reference.duckdb")


def test_no_listing_process_outlives_its_traversal(tree_20k_read_only, tmp_path):
    tree, _, dst = tree_20k_read_only
    m = dry_run(tmp_path / "run.duckdb", tree.root, dst, list_processes=True)
    m.close()
    assert helpers_of_this_process("engine.listing") == set()


def test_a_listing_process_that_cannot_start_falls_back_to_listing_here_and_says_so(tree_20k_read_only, tmp_path,
                                                                                      monkeypatch):
    tree, _, dst = tree_20k_read_only
    monkeypatch.setattr("sys.executable", str(tmp_path / "no-such-python"))
    m = Migration.create(str(tmp_path / "run.duckdb"), str(tree.root), str(dst),
                         Settings(list_processes=True, backoff_base=0.01), dry_run=True)
    told = []
    m.on_notice = told.append
    m.start()
    assert m.wait(300)
    assert m.summary.failed == 0 and m.summary.src_files > 20_000
    # once for both sides' pools, with the reason and what happens instead
    assert told == ["cannot start a listing process: No such file or directory; listing in this process "
                    "instead, slower (one core for every listing)"]
    m.close()


def test_migrate_run_starts_its_listing_helpers_early_and_leaves_none(tree_20k_read_only, tmp_path, capsys):
    """`migrate run` starts a helper per default worker before it imports the rest; the traversal takes
    them, and the ones the settings leave unused are closed when the command ends."""
    tree, _, dst = tree_20k_read_only
    taken = []
    original = listing._take_early

    def take_early():
        lister = original()
        taken.append(lister)
        return lister

    listing._take_early = take_early
    try:
        code = cli.main(["run", str(tree.root), str(dst), "--db", str(tmp_path / "run.duckdb"), "--dry-run",
                         "--src-workers", "1", "--dst-workers", "1"])
    finally:
        listing._take_early = original
    assert code == 0, capsys.readouterr().err
    assert len([t for t in taken if t is not None]) == 2, "each side's one worker took a helper started early"
    assert listing._early == [] and helpers_of_this_process("engine.listing") == set()
