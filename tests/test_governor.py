"""The listing governor: traversal workers are raised to max_listing_workers once the listing processes
are seen blocked on storage, never on a warm cache's running or idle ones; and a widened traversal
records exactly what a narrow one does."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import pytest

from support import wait_until

from engine import governor
from engine.governor import BLOCKED, IDLE, WORKING, ListingGovernor, listing_wait, process_state
from engine.coordinator import QueueCoordinator
from engine.listing import Lister, ListerPool
from engine.migration import Migration
from engine.queue import Queue
from engine.settings import Settings


def scripted(states: list[str]):
    """A state function that answers from `states` in turn, whatever the pid."""
    answers = iter(states)
    return lambda pid: next(answers)


def feed(gov: ListingGovernor, samples: int) -> list[bool]:
    return [gov.observe() for _ in range(samples)]


# what the kernel says of real processes ---------------------------------------------------------------

def test_process_state_of_real_processes(tmp_path):
    assert process_state(os.getpid()) == "R"  # reading its own stat, it is running
    # a command name with ") D (" in it must not be taken for the state field
    odd = tmp_path / "a) D (b"
    odd.symlink_to("/bin/sleep")
    sleeper = subprocess.Popen([str(odd), "30"])
    try:
        wait_until(lambda: process_state(sleeper.pid) == "S", what="sleep never seen sleeping")
    finally:
        sleeper.kill()
        sleeper.wait()
    assert process_state(sleeper.pid) is None  # reaped: gone


def test_a_listing_process_waiting_for_a_request_is_idle_and_one_stuck_in_a_filesystem_call_blocked(tmp_path):
    assert listing_wait(os.getpid()) == WORKING
    lister = Lister()  # a real listing process, waiting for its first request on its stdin
    try:
        wait_until(lambda: listing_wait(lister.pid) == IDLE,
                   what=f"an idle lister seen {listing_wait(lister.pid)}")
    finally:
        lister.close()
    # asleep in a filesystem call as on a FUSE mount (interruptibly): opening a FIFO nobody writes to
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    stuck = subprocess.Popen([sys.executable, "-c", f"open({str(fifo)!r}, 'rb')"])
    try:
        wait_until(lambda: listing_wait(stuck.pid) == BLOCKED,
                   what=f"the opener seen {listing_wait(stuck.pid)}")
    finally:
        stuck.kill()
        stuck.wait()
    assert listing_wait(stuck.pid) is None


# the decision, sample by sample --------------------------------------------------------------------

def test_running_and_idle_processes_never_widen():
    widened = []
    gov = ListingGovernor(lambda: [1, 2, 3, 4], lambda: widened.append(1), scripted([WORKING, IDLE] * 1000))
    assert not any(feed(gov, 400)) and not widened and not gov.widened


def test_blocked_processes_widen_once():
    widened = []
    # 4 processes, one of them blocked in each sample: 1 in 4 of the working samples
    gov = ListingGovernor(lambda: [1, 2, 3, 4], lambda: widened.append(1),
                          scripted([BLOCKED, WORKING, WORKING, WORKING] * 100))
    decisions = feed(gov, governor.MIN_WORKING // 4 + 1)
    assert decisions[-1] and not any(decisions[:-1]), "widened as soon as the window held enough samples"
    assert widened == [1] and gov.widened


def test_a_few_blocked_samples_among_many_do_not_widen():
    widened = []
    few = ([BLOCKED] + [WORKING] * 19) * 100  # 5% of the working samples: under BLOCKED_SHARE
    gov = ListingGovernor(lambda: [1], lambda: widened.append(1), scripted(few))
    assert not any(feed(gov, 1000)) and not widened


def test_too_few_working_samples_say_nothing():
    widened = []
    # blocked whenever at work, but mostly idle: MIN_WORKING working samples never fit in one window
    sparse = ([BLOCKED] + [IDLE] * (governor.WINDOW // (governor.MIN_WORKING - 1))) * 100
    gov = ListingGovernor(lambda: [1], lambda: widened.append(1), scripted(sparse))
    assert not any(feed(gov, len(sparse))) and not widened


def test_waits_that_left_the_window_no_longer_count():
    widened = []
    # blocked a few times while nothing else went on, then idle for a window, then at work on the CPU: the
    # waits would make 5 in 35 of the working samples if they still counted
    gov = ListingGovernor(lambda: [1], lambda: widened.append(1),
                          scripted([BLOCKED] * 5 + [IDLE] * governor.WINDOW + [WORKING] * 10 * governor.WINDOW))
    assert not any(feed(gov, 5 + governor.WINDOW + 10 * governor.WINDOW)) and not widened


def test_no_processes_no_decision():
    widened = []
    gov = ListingGovernor(lambda: [], lambda: widened.append(1), scripted([]))
    assert not any(feed(gov, 500)) and not widened


# the engine: a real tree, real listing processes, their state as the kernel would say it ----------------

def make_trees(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    for i in range(12):
        for k in range(3):
            folder = src / f"d{i}" / f"s{k}" / "deep"
            folder.mkdir(parents=True)
            for n in range(4):
                (folder.parent / f"f{n}").write_bytes(b"x" * (i + n))
            (folder / "leaf").write_bytes(b"y" * k)
    (dst / "d0" / "s0").mkdir(parents=True)
    (dst / "d0" / "s0" / "f1").write_bytes(b"changed")
    (dst / "only-here").write_bytes(b"z")
    return src, dst


def traversal_workers(m: Migration) -> dict[str, int]:
    return {q.side: q.target_workers for q in m.finished_queues if q.mode.name == "traversal"}


def traverse(tmp_path, name: str, settings: Settings, then=None):
    src, dst = make_trees(tmp_path / name)
    m = Migration.create(str(tmp_path / f"{name}.duckdb"), str(src), str(dst), settings, dry_run=True)
    notices = []
    m.on_notice = notices.append
    m.start()
    assert m.wait(120) and m.summary is not None and m.summary.failed == 0
    if then is not None:
        then(m)
    workers = traversal_workers(m)
    rows = {side: m.store._read(f"SELECT path, type, size, traversal_status, "
                                f"{'copy_status, action' if side == 'src' else 'match, src_id IS NULL'} "
                                f"FROM {side}_nodes ORDER BY path", []) for side in ("src", "dst")}
    m.close()
    return workers, notices, rows


@pytest.fixture
def kernel_says(monkeypatch):
    """Every listing process in the given state, and the governor deciding from the first sample, so the
    decision comes while the first listing process still boots (not racing the traversal's end)."""
    monkeypatch.setattr(governor, "SAMPLE_INTERVAL_S", 0.001)
    monkeypatch.setattr(governor, "MIN_WORKING", 1)

    def say(wait: str):
        monkeypatch.setattr(governor, "listing_wait", lambda pid: wait)
    return say


def test_listings_blocked_on_storage_widen_the_traversal(tmp_path, kernel_says):
    _, _, narrow_rows = traverse(tmp_path, "narrow", Settings(max_listing_workers=2))
    kernel_says(BLOCKED)
    workers, notices, rows = traverse(tmp_path, "wide", Settings(max_listing_workers=5))
    assert workers == {"src": 5, "dst": 5}
    assert notices == ["listings wait on storage: 5 listing workers per side now (max_listing_workers)"]
    assert rows == narrow_rows and len(rows["src"]) == 12 * (1 + 3 * 7) + 1


def test_listings_at_work_on_the_cpu_keep_their_workers(tmp_path, kernel_says):
    kernel_says(WORKING)
    workers, notices, _ = traverse(tmp_path, "warm", Settings(max_listing_workers=5))
    assert workers == {"src": 2, "dst": 2} and notices == []


def test_the_note_says_each_side_when_they_differ(tmp_path, kernel_says):
    kernel_says(BLOCKED)
    workers, notices, _ = traverse(tmp_path, "uneven", Settings(src_workers=5, max_listing_workers=3))
    assert workers == {"src": 5, "dst": 3}
    assert notices == ["listings wait on storage: 5 SRC and 3 DST listing workers now (max_listing_workers)"]


def test_operator_workers_at_or_above_the_ceiling_are_left_alone(tmp_path, kernel_says):
    kernel_says(BLOCKED)
    workers, notices, _ = traverse(tmp_path, "many", Settings(src_workers=3, dst_workers=3, max_listing_workers=3))
    assert workers == {"src": 3, "dst": 3} and notices == []


def test_live_edits_after_widening_keep_it_and_max_listing_workers_moves_it(tmp_path, kernel_says):
    """A live edit of bwlimit (migrate.toml, the console) used to set every queue back to its own worker
    count. Once widened a side lists with the larger of its own count and max_listing_workers, whichever of
    them is edited."""
    seen = {}

    def edit_live(m):
        for change in ({"bwlimit": 1 << 20}, {"src_workers": 3}, {"max_listing_workers": 4}, {"dst_workers": 5}):
            assert m.apply_settings(change) == []
            seen[next(iter(change))] = traversal_workers(m)

    kernel_says(BLOCKED)
    traverse(tmp_path, "live", Settings(max_listing_workers=6), then=edit_live)
    assert seen == {"bwlimit": {"src": 6, "dst": 6}, "src_workers": {"src": 6, "dst": 6},
                    "max_listing_workers": {"src": 4, "dst": 4}, "dst_workers": {"src": 4, "dst": 5}}


def test_max_listing_workers_raised_live_applies_once_listings_were_seen_waiting(tmp_path, kernel_says):
    """At the worker counts the governor still watches: waits seen, a live raise widens at once."""
    seen = {}

    def raise_it(m):
        seen["before"] = traversal_workers(m)
        assert m.apply_settings({"max_listing_workers": 7}) == []
        seen["after"] = traversal_workers(m)

    kernel_says(BLOCKED)
    _, notices, _ = traverse(tmp_path, "raise", Settings(max_listing_workers=2), then=raise_it)
    assert seen == {"before": {"src": 2, "dst": 2}, "after": {"src": 7, "dst": 7}} and notices == []


def test_no_widening_once_the_run_is_stopping(tmp_path, monkeypatch):
    """Stopped (Ctrl-C) while the governor was deciding: no workers started, no note under 'stopping'."""
    monkeypatch.setattr(governor, "SAMPLE_INTERVAL_S", 0.001)
    monkeypatch.setattr(governor, "MIN_WORKING", 1)
    sampling, go = threading.Event(), threading.Event()

    def held_then_blocked(pid):
        sampling.set()
        go.wait(60)
        return BLOCKED

    monkeypatch.setattr(governor, "listing_wait", held_then_blocked)
    src, dst = make_trees(tmp_path)
    m = Migration.create(str(tmp_path / "run.duckdb"), str(src), str(dst), Settings(), dry_run=True)
    notices = []
    m.on_notice = notices.append
    m.start()
    assert sampling.wait(60)
    m.stop()
    go.set()
    assert m.wait(120) and m.summary is None  # stopped, resumable
    assert traversal_workers(m) == {"src": 2, "dst": 2} and notices == [] and "stopping" in m.message
    m.close()


# a worker that leaves hands its helper process on -----------------------------------------------------

def test_a_leaving_worker_hands_its_listing_process_to_the_next(tmp_path):
    """Lowering a count live, then raising it, started a new listing process per new worker while the old
    ones idled until the traversal's end (86 processes after a few edits)."""
    (tmp_path / "f").write_bytes(b"x")
    pool = ListerPool()

    def list_once_and_leave():
        results, _ = pool.list(str(tmp_path), "src", [""])
        assert results[0][5] == 1  # one file listed
        pool.release()

    try:
        for _ in range(3):
            worker = threading.Thread(target=list_once_and_leave)
            worker.start()
            worker.join()
        assert len(pool.pids()) == 1
    finally:
        pool.close()


class HeldMode:
    """The least a queue runs: one round that stays open until `done` is set, then nothing to do."""

    gated = False
    name = "held"

    def __init__(self):
        self.done = threading.Event()
        self.left = []

    def first_round(self):
        return 0

    def begin_round(self, r):
        self.done.wait(60)
        return 0

    def ends_when_empty(self, r):
        return True

    def worker_leaves(self):
        self.left.append(threading.current_thread().name)


def test_every_worker_that_leaves_a_queue_says_so():
    mode = HeldMode()
    q = Queue("src", mode, QueueCoordinator(3), Settings(), workers=4)
    q.start()
    q.set_workers(1)  # three leave now, at their next lease
    wait_until(lambda: len(mode.left) == 3, what=f"workers left: {mode.left}")
    mode.done.set()  # the queue ends: the last one leaves too
    assert q.join(60)
    wait_until(lambda: len(mode.left) == 4, what=f"workers left: {mode.left}")


def test_a_helper_handed_back_after_its_pool_closed_is_not_handed_out_again(tmp_path):
    """A worker can finish after its phase closed the pool (the copy closes it at its last round): the helper
    it hands back was closed with the others and must never serve a later request."""
    (tmp_path / "f").write_bytes(b"x")
    pool = ListerPool()
    listed, closed = threading.Event(), threading.Event()

    def list_then_leave_late():
        pool.list(str(tmp_path), "src", [""])
        listed.set()
        closed.wait(60)
        pool.release()

    worker = threading.Thread(target=list_then_leave_late)
    worker.start()
    assert listed.wait(60)
    pool.close()
    closed.set()
    worker.join()
    results, _ = pool.list(str(tmp_path), "src", [""])  # a fresh helper, not the closed one (ListerGone)
    assert results[0][5] == 1
    pool.close()


def test_listing_processes_started_early_end_with_the_traversal(tmp_path):
    """The CLI starts listing processes before it knows the run; those no worker took must not idle through
    the copy (or a whole copy resumed without a traversal)."""
    from engine import listing
    listing.start_early(6)
    early = [lister.pid for lister in listing._early]
    try:
        traverse(tmp_path, "early", Settings())  # 2 workers per side take 4 of them at most
        assert listing._early == []
        wait_until(lambda: all(process_state(pid) in (None, "Z") for pid in early), what="early listers still alive")
    finally:
        listing.close_early()
