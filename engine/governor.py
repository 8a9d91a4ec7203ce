"""More listing workers once the listings wait on storage.

Two traversal workers per side, each with its listing process, keep both cores of a 2-core machine busy
when the tree's metadata is in the page cache; more only add processes that compete for those cores
(100k dry run, warm: 8 per side 2.34 s against 1.93 s). When listings wait on the device instead (a cold
cache, a slow disk, a network or FUSE mount), more listings in flight keep it busy (cold: 8 per side
4.4 s against 5.4 s; rclone lists 8 folders at once by default). Which case a run is in shows in what
its listing processes do: one asleep in the kernel in a filesystem call waits on storage (state D on a
disk or an NFS server, in /proc/PID/stat; asleep in the call /proc/PID/syscall names on a FUSE daemon); on
a warm cache none is ever found so. The governor samples them every 20 ms; once the last second's samples
find them blocked often enough, it widens the traversal, once, and ends: from then on each side lists with
the larger of its own count and `max_listing_workers` (engine.migration). The waits get rarer once the
device is kept busy, which is no reason to stop keeping it busy.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Callable, Iterable

from engine.threads import start_thread

SAMPLE_INTERVAL_S = 0.02
WINDOW = 50  # samples: the last second
MIN_WORKING = 30  # samples of a process at work (working or blocked) in the window: fewer say nothing
# of those, the share blocked that widens: a cold cache shows 0.15-0.3 of them at 2 workers per side, a
# warm one none
BLOCKED_SHARE = 0.1


def process_state(pid: int) -> str | None:
    """The state letter of a process (R running, S sleeping, D blocked in the kernel...), None when there
    is no /proc to say (not Linux) or the process is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            data = stat.read()
    except OSError:
        return None
    end = data.rfind(b")")  # the command name before it is in parentheses and may hold anything
    return chr(data[end + 2]) if 0 <= end < len(data) - 2 else None


WORKING, BLOCKED, IDLE = "working", "blocked", "idle"
# A listing process asleep on one of these descriptors waits on its parent: a request (stdin) or room for its
# reply (stdout). Every filesystem call it makes is on a folder's descriptor or a path, never on these.
_PIPES = (0, 1)


def listing_wait(pid: int) -> str | None:
    """What a listing process is doing: WORKING (running, in user space or in a system call), BLOCKED
    (asleep in the kernel in a filesystem call: state D on a disk or an NFS server; state S on a FUSE
    daemon, whose waits are interruptible), IDLE (waiting on its parent), None when unknown."""
    state = process_state(pid)
    if state in ("R", "D"):
        return WORKING if state == "R" else BLOCKED
    if state != "S":
        return None
    try:
        with open(f"/proc/{pid}/syscall", "rb") as call:  # "NR ARG1 ...": the call it sleeps in
            fields = call.read().split()
        return IDLE if int(fields[1], 16) in _PIPES else BLOCKED
    except (OSError, ValueError, IndexError):  # not permitted, not asleep in a call any more, gone
        return IDLE


class ListingGovernor:
    """Samples what the processes `pids()` names are doing (listing_wait), on a thread of its own, and calls
    `widen()` once, when over the last WINDOW samples at least BLOCKED_SHARE of the samples that found one at
    work (working or blocked) found it blocked; then it ends. A process waiting on its parent says nothing."""

    def __init__(self, pids: Callable[[], Iterable[int]], widen: Callable[[], None],
                 wait: Callable[[int], str | None] | None = None):
        self._pids = pids
        self._widen = widen
        self._wait = wait if wait is not None else listing_wait  # looked up now: tests set it
        self._window: deque[tuple[int, int]] = deque()  # (working, blocked) per sample
        self._working = self._blocked = 0
        self.widened = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="listing-governor", daemon=True)

    def start(self) -> None:
        start_thread(self._thread)

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _loop(self) -> None:
        while not self._stop.wait(SAMPLE_INTERVAL_S) and not self.observe():
            pass

    def observe(self) -> bool:
        """Take one sample of every process and decide; True once it has widened."""
        working = blocked = 0
        for pid in self._pids():
            wait = self._wait(pid)
            if wait in (WORKING, BLOCKED):
                working += 1
                blocked += wait == BLOCKED
        self._window.append((working, blocked))
        self._working += working
        self._blocked += blocked
        if len(self._window) > WINDOW:
            old_working, old_blocked = self._window.popleft()
            self._working -= old_working
            self._blocked -= old_blocked
        if self._working < MIN_WORKING or self._blocked < BLOCKED_SHARE * self._working:
            return False
        self.widened = True
        self._widen()
        return True
