"""The design's invariants, proved on real runs: gates, two cached levels, no DuckDB on the hot path,
every node stored once."""

from __future__ import annotations

import pytest

from engine.migration import Migration
from engine.model import DST, SRC
from engine.settings import Settings
from engine.treegen import make_source, mirror


def check_gates(events: list[tuple[str, str, int]], max_src_ahead: int) -> int:
    """Replay the ordered start/completed/sealed/done log; return how many round starts were checked.

    Gates: DST starts round r only after SRC completed r and r + 1; SRC starts round r at most
    max_src_ahead rounds ahead of DST. Commits (seals run in the background, engine.sealer): each side's
    in round order, and DST's seal of r (it compares DST's depth r + 1 with SRC's) after SRC's of r + 1."""
    completed = {SRC: set(), DST: set()}
    sealed = {SRC: [], DST: []}
    src_rounds = {r for kind, side, r in events if kind == "completed" and side == SRC}
    done = {SRC: False, DST: False}
    checked = 0
    for kind, side, r in events:
        if kind == "completed":
            completed[side].add(r)
        elif kind == "sealed":
            assert r in completed[side], f"{side} sealed round {r} before completing it"
            assert not sealed[side] or sealed[side][-1] < r, f"{side} seals out of order: {sealed[side]}, {r}"
            if side == DST:
                assert r + 1 in sealed[SRC] or r + 1 not in src_rounds, \
                    f"DST sealed round {r} before SRC's round {r + 1} was committed"
            sealed[side].append(r)
        elif kind == "done":
            done[side] = True
        elif side == DST:
            assert done[SRC] or {r, r + 1} <= completed[SRC], \
                f"DST started round {r} before SRC completed {r} and {r + 1}"
            checked += 1
        else:
            dst_round = len(completed[DST])
            assert done[DST] or r <= dst_round + max_src_ahead, \
                f"SRC started round {r} while DST was at round {dst_round}"
            checked += 1
    assert sealed[SRC] == sorted(completed[SRC]) and sealed[DST] == sorted(completed[DST]), \
        "a completed round was never committed"
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
    assert rounds_sealed == sum(1 for e in m.coordinator.events if e[0] == "completed")
    seals = sum(1 for kind, _ in m.store.write_log if kind == "seal")
    copy_rounds = sum(1 for q in m.finished_queues if q.mode.name == "copy")
    assert seals >= rounds_sealed + copy_rounds

    # every node once, and all of them
    assert m.store.duplicate_ids(SRC) == 0 and m.store.duplicate_ids(DST) == 0
    assert m.store.count(SRC, "depth > 0") == len(tree.files) + len(tree.folders) + len(tree.symlinks)
    m.close()


def test_gate_checker_catches_a_violation():
    def rounds(side, *rs):
        return [e for r in rs for e in (("start", side, r), ("completed", side, r), ("sealed", side, r))]

    valid = rounds(SRC, 0, 1) + [("start", DST, 0), ("completed", DST, 0), ("sealed", DST, 0)]
    assert check_gates(valid, 3) == 3
    with pytest.raises(AssertionError, match="DST started round 0"):
        check_gates(rounds(SRC, 0) + [("start", DST, 0)], 3)
    with pytest.raises(AssertionError, match="SRC started round 2"):
        check_gates(rounds(SRC, 0, 1) + [("start", SRC, 2)], 1)
    with pytest.raises(AssertionError, match="before SRC's round 1 was committed"):
        check_gates(rounds(SRC, 0) + [("start", SRC, 1), ("completed", SRC, 1), ("start", DST, 0),
                                      ("completed", DST, 0), ("sealed", DST, 0), ("sealed", SRC, 1)], 3)
    with pytest.raises(AssertionError, match="never committed"):
        check_gates(rounds(SRC, 0) + [("start", SRC, 1), ("completed", SRC, 1)], 3)
