"""Unit tests of the pieces with rules of their own: level cache, coordinator, excludes, sizes."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from engine.cache import LevelCache, NodeCache
from engine.coordinator import QueueCoordinator
from engine.excludes import compile_excludes
from engine.adapters.base import Entry
from engine.model import EXCLUDED, FILE, FOLDER, IN_PROGRESS, PENDING, SUCCESSFUL, SYMLINK, Node, Task, node_id
from engine.modes.traversal import TraversalMode
from engine.settings import parse_size
from engine.store import Store
from engine.workers import list_folders


def node(path: str, type_=FOLDER, status=PENDING) -> Node:
    depth = path.count("/") + 1
    return Node(node_id("src", path), 0, path, depth, type_, 0, 0, 0o755, status, PENDING, "copy")


def test_level_cache_pulls_each_pending_node_once():
    level = LevelCache(2)
    nodes = [node(f"a/f{i}") for i in range(10)] + [node("a/file", FILE, SUCCESSFUL)]
    assert level.put_all(nodes) == 11
    assert not level.put(node("a/f3")), "the same id twice"
    first, second = level.take_pending(4), level.take_pending(100)
    assert len(first) == 4 and len(second) == 6
    assert not {n.id for n in first} & {n.id for n in second}
    assert level.take_pending(5) == [] and level.count(IN_PROGRESS) == 10
    assert [n.path for n in level.children_of("a")] == [n.path for n in nodes]
    assert level.get_by_path("a/file").type == FILE
    level.set_status(first[0], SUCCESSFUL)
    assert level.status_counts() == {IN_PROGRESS: 9, SUCCESSFUL: 2}


def test_take_pending_copy_filters_by_type():
    level = LevelCache(1)
    level.put_all([node("x"), node("y", FILE)])
    assert [n.path for n in level.take_pending_copy(10, frozenset({FILE}))] == ["y"]
    assert level.count_copy(PENDING) == 1


def listed(side: str, folders: dict[str, list[Entry]], excluded=None):
    """list_folders over in-memory listings: (tasks, outcomes)."""
    adapter = SimpleNamespace(root="", list=lambda path, specials=None: folders[path])
    tasks = [Task(f"list-{side}", node(path), 1) for path in folders]
    return tasks, list_folders(side, adapter, tasks, excluded)


def test_file_rows_keep_the_rows_of_completed_folders_and_are_found_by_id_path_and_parent():
    names = ["plain.txt", "spa ce;'q\"", "\udcffraw-byte", "-leading"] * 50
    folders = {f"a/d{k}": [Entry(f"{i}{n}", SYMLINK if i % 3 == 0 else FILE, i, 7, 0o644)
                           for i, n in enumerate(names)] for k in range(3)}
    folders["a/d1"].append(Entry("sub", FOLDER, 0, 0, 0o755))
    tasks, outcomes = listed("src", folders)
    assert all(o.children.files is outcomes[0].children.files for o in outcomes), "one set of buffers a batch"
    traversal = TraversalMode("src", None, None, None, None, None)
    level = traversal.cache.ensure(3)
    for task, outcome in zip(tasks, outcomes):
        if task.node.path != "a/d1":  # as if a/d1's report were stale: its rows must not be kept
            level.add_files(outcome.children)
    assert len(level) == 400 and level.status_counts() == {SUCCESSFUL: 400}
    batches = list(Store._file_batches("src", level.files))
    assert len(batches) == 1 and batches[0].schema == Store._file_schema("src")
    assert {p.split(b"/")[1] for p in batches[0].column("path").to_pylist()} == {b"d0", b"d2"}
    raw = level.get(node_id("src", "a/d2/2\udcffraw-byte"))  # read back from Arrow, its undecodable byte intact
    assert (raw.path, raw.parent_id, raw.depth, raw.size, raw.type, raw.copy_status) == \
           ("a/d2/2\udcffraw-byte", tasks[2].node.id, 3, 2, FILE, PENDING)
    assert level.get_by_path("a/d0/3-leading").type == SYMLINK
    assert len(level.children_of("a/d2")) == 200 and level.children_of("a/d1") == []


def test_excluded_file_rows_are_marked_per_path():
    folders = {"a/x": [Entry("keep.c", FILE, 1, 0, 0o644), Entry("drop.tmp", FILE, 1, 0, 0o644)],
               "a/y": [Entry("drop.tmp", SYMLINK, 1, 0, 0o777)]}
    tasks, outcomes = listed("src", folders, compile_excludes(["*.tmp"]))
    assert [(o.children.count, o.children.excluded) for o in outcomes] == [(2, 1), (1, 1)]
    level = LevelCache(2)
    for outcome in outcomes:
        level.add_files(outcome.children)
    assert level.status_counts() == {SUCCESSFUL: 1, EXCLUDED: 2}
    (batch,) = Store._file_batches("src", level.files)
    rows = batch.select(["path", "traversal_status", "copy_status", "action"]).to_pylist()
    assert [tuple(r.values()) for r in rows] == [(b"a/x/keep.c", SUCCESSFUL, PENDING, "copy"),
                                                 (b"a/x/drop.tmp", EXCLUDED, EXCLUDED, EXCLUDED),
                                                 (b"a/y/drop.tmp", EXCLUDED, EXCLUDED, EXCLUDED)]


def test_node_cache_refuses_a_third_level():
    cache = NodeCache()
    cache.ensure(0)
    cache.ensure(1)
    with pytest.raises(AssertionError):
        cache.ensure(2)
    cache.drop(0)
    cache.ensure(2)
    assert cache.depths() == [1, 2] and cache.peak_levels == 3


def test_coordinator_gates_and_reasons():
    c = QueueCoordinator(max_src_ahead=2)
    assert not c.may_start("dst", 0)
    assert c.reason("dst") == "DST round 0 waits for SRC to finish round 1"
    c.set_round("src", 2)
    assert c.may_start("dst", 0) and not c.may_start("dst", 1)
    assert c.may_start("src", 2) and not c.may_start("src", 3)
    c.set_round("src", 3)
    assert "waits for DST to reach round 1" in c.reason("src")
    c.mark_done("src")
    assert c.may_start("dst", 40)
    assert [d.allowed for d in c.decisions] == [False, True, False, True, False, True]


def test_node_ids_are_deterministic_and_side_specific():
    assert node_id("src", "a/b") == node_id("src", "a/b")
    assert node_id("src", "a/b") != node_id("dst", "a/b")
    assert 0 <= node_id("src", "x\udcff") < 2**63


@pytest.mark.parametrize("pattern,path,is_folder,excluded", [
    ("*.tmp", "a/b/c.tmp", False, True),
    ("*.tmp", "a/b/c.tmpx", False, False),
    ("/build", "build", True, True),
    ("/build", "src/build", True, False),
    ("cache/", "x/cache", True, True),
    ("cache/", "x/cache", False, False),
    ("docs/**/*.pdf", "docs/a/b/c.pdf", False, True),
    ("docs/**/*.pdf", "other/docs/c.pdf", False, False),
])
def test_excludes_follow_gitignore(pattern, path, is_folder, excluded):
    assert compile_excludes([pattern])(path, is_folder) is excluded


def test_negated_exclude_reincludes():
    match = compile_excludes(["*.log", "!keep.log"])
    assert match("a.log", False) and not match("keep.log", False)
    assert compile_excludes([]) is None


def test_sizes():
    assert parse_size("50M") == 50 << 20 and parse_size("10MB") == 10_000_000 and parse_size(0) == 0
    with pytest.raises(ValueError):
        parse_size("fast")


def test_settings_line_shows_bandwidth_in_the_unit_that_reads_best():
    from engine.config import readable
    assert [readable("bwlimit", v) for v in (0, 300 << 10, 6 << 20, 1_000_000, 3 << 30)] == \
        ["unlimited", "300 KiB/s", "6 MiB/s", "976.6 KiB/s", "3 GiB/s"]


def test_rates_restart_at_zero_when_a_new_phase_counts_from_zero():
    """Discovery summed over the queues drops to 0 when traversal gives way to the copy: a new rate, not
    a negative one that creeps back (it drew a rising ramp in the console's sparkline)."""
    from engine.observer import Ema
    ema = Ema()
    for second, count in enumerate((0, 1000, 2000, 3000)):
        ema.update(count, float(second))
    assert ema.value > 0
    assert ema.update(0, 4.0) == 0.0
    assert ema.update(0, 5.0) == 0.0 and ema.update(50, 6.0) > 0


def test_the_live_mirror_and_the_seals_compare_an_entry_alike():
    """workers.classify (one entry, the live mirror) and Store._DST_MATCH (a level, in DuckDB) must agree,
    at the limits of the mtime column too: two dates stored at the same limit cannot be ordered, so both
    leave it to the copy, which compares the exact dates."""
    import duckdb
    from engine.model import MTIME_NS_MAX, MTIME_NS_MIN, MTIME_WINDOW_NS
    from engine.workers import classify
    w, now = MTIME_WINDOW_NS, 1_700_000_000 * 10**9
    cases = [  # (dst type, dst size, dst mtime, src type, src size, src mtime)
        (FILE, 1, now, FILE, 1, now + w), (FILE, 1, now + w + 1, FILE, 1, now), (FILE, 2, now, FILE, 1, now),
        (FILE, 1, now, FILE, 1, now + w + 1), (FOLDER, 0, now, FOLDER, 0, MTIME_NS_MAX),
        (SYMLINK, 1, now, FILE, 1, now),
        (FILE, 1, MTIME_NS_MAX, FILE, 1, MTIME_NS_MAX), (FILE, 2, MTIME_NS_MAX, FILE, 1, MTIME_NS_MAX),
        (FILE, 1, MTIME_NS_MIN, FILE, 1, MTIME_NS_MIN), (FILE, 1, MTIME_NS_MAX, FILE, 2, now),
        (FILE, 1, now, FILE, 1, MTIME_NS_MAX), (FILE, 1, MTIME_NS_MIN, FILE, 2, now),
        (FILE, 1, MTIME_NS_MAX, FILE, 1, MTIME_NS_MIN),
        (FILE, 1, MTIME_NS_MAX - w // 2, FILE, 1, MTIME_NS_MAX), (FILE, 1, MTIME_NS_MIN, FILE, 1, MTIME_NS_MIN + w),
        (FILE, 1, MTIME_NS_MAX - w - 1, FILE, 1, MTIME_NS_MAX),
        # another type on DST, newer by more than the window: kept, as the copy keeps it; a SRC folder
        # still goes to the copy (which refuses what stands in its way)
        (SYMLINK, 1, now + w + 1, FILE, 1, now), (FOLDER, 0, now + w + 1, FILE, 1, now),
        (FILE, 1, now + w + 1, FOLDER, 0, now), (FOLDER, 0, now, FILE, 1, now + w + 1),
    ]
    con = duckdb.connect()
    con.execute("CREATE TABLE t (i INTEGER, type VARCHAR, size BIGINT, mtime_ns BIGINT)")
    con.execute("CREATE TABLE s (i INTEGER, id BIGINT, type VARCHAR, size BIGINT, mtime_ns BIGINT, "
                "traversal_status VARCHAR, copy_status VARCHAR)")
    for i, (dt, ds, dm, st, ss, sm) in enumerate(cases):
        con.execute("INSERT INTO t VALUES (?, ?, ?, ?)", [i, dt, ds, dm])
        con.execute("INSERT INTO s VALUES (?, 1, ?, ?, ?, 'successful', 'pending')", [i, st, ss, sm])
    by_sql = dict(con.execute(f"SELECT t.i, {Store._DST_MATCH} FROM t JOIN s USING (i) ORDER BY t.i").fetchall())
    word = {"changed": "copy", "identical": "skip", "dst_newer": "keep_dst_newer"}
    for i, (dt, ds, dm, st, ss, sm) in enumerate(cases):
        src = Node(1, None, "x", 1, st, ss, sm, 0o644)
        assert word[classify(dt, ds, dm, src)] == by_sql[i], cases[i]
    assert [by_sql[i] for i in (6, 7, 8, 13, 14)] == ["copy"] * 5  # at a limit, or near it: the copy decides
    assert [by_sql[i] for i in (16, 17, 18, 19)] == ["keep_dst_newer", "keep_dst_newer", "copy", "copy"]
