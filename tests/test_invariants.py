"""The design's invariants, proved on real runs: gates, two cached levels, no DuckDB on the hot path,
every node stored once."""

from __future__ import annotations

import pytest

from engine.migration import Migration
from engine.model import DST, SRC
from engine.settings import Settings
from engine.treegen import make_source, mirror


def check_gates(events: list[tuple[str, str, int]], max_src_ahead: int) -> int:
    """Replay the ordered start/sealed/done log; return how many round starts were checked."""
    sealed = {SRC: set(), DST: set()}
    done = {SRC: False, DST: False}
    checked = 0
    for kind, side, r in events:
        if kind == "sealed":
            sealed[side].add(r)
        elif kind == "done":
            done[side] = True
        elif side == DST:
            assert done[SRC] or {r, r + 1} <= sealed[SRC], f"DST started round {r} before SRC sealed {r} and {r + 1}"
            checked += 1
        else:
            dst_round = len(sealed[DST])
            assert done[DST] or r <= dst_round + max_src_ahead, \
                f"SRC started round {r} while DST was at round {dst_round}"
            checked += 1
    return checked


@pytest.mark.parametrize("max_src_ahead", [1, 3])
def test_invariants_hold_on_a_deep_tree(tmp_path, max_src_ahead):
    tree = make_source(tmp_path / "src", 3000, seed=11, max_depth=9, fanout=2)
    mirror(tree, tmp_path / "dst", seed=12)
    settings = Settings(max_src_ahead=max_src_ahead, pull_batch=16, buffer_size=32, low_water=8,
                        src_workers=2, dst_workers=2)
    m = Migration.create(str(tmp_path / "run.duckdb"), str(tree.root), str(tmp_path / "dst"), settings)
    m.start()
    assert m.wait(120)
    assert m.fatal is None and m.phase == "done"

    traversal = [q for q in m.finished_queues if q.mode.name == "traversal"]
    assert {q.side for q in traversal} == {SRC, DST}
    assert check_gates(m.coordinator.events, max_src_ahead) >= 2 * 8
    assert max(q.mode.cache.peak_levels for q in m.finished_queues) <= 2

    # the hot path (workers) never wrote to DuckDB; seals came from run loops only
    writers = {(kind, thread) for kind, thread in m.store.write_log}
    assert not [w for w in writers if w[1].endswith("-w")], writers
    assert {kind for kind, _ in writers} <= {"run", "seal", "queue_stats"}
    rounds_sealed = sum(1 for e in m.coordinator.events if e[0] == "sealed")
    seals = sum(1 for kind, _ in m.store.write_log if kind == "seal")
    copy_rounds = sum(1 for q in m.finished_queues if q.mode.name == "copy")
    assert seals >= rounds_sealed + copy_rounds

    # every node once, and all of them
    assert m.store.duplicate_ids(SRC) == 0 and m.store.duplicate_ids(DST) == 0
    assert m.store.count(SRC, "depth > 0") == len(tree.files) + len(tree.folders) + len(tree.symlinks)
    m.close()


def test_gate_checker_catches_a_violation():
    with pytest.raises(AssertionError):
        check_gates([("start", SRC, 0), ("sealed", SRC, 0), ("start", DST, 0)], 3)
    with pytest.raises(AssertionError):
        check_gates([("start", SRC, 0), ("sealed", SRC, 0), ("start", SRC, 1), ("sealed", SRC, 1),
                     ("start", SRC, 2)], 1)
