"""The plumbing shared by the helper processes (engine.listing, engine.copying): start one on pipes,
and length-prefixed marshal messages over them. A helper exits when its pipe closes."""

from __future__ import annotations

import errno
import functools
import marshal
import os
import signal
import struct
import subprocess
import sys
import threading
from typing import Callable

from engine.threads import ThreadLimit, start_thread

_HEADER = struct.Struct("<Q")


def start(module: str) -> subprocess.Popen:
    """`module`.serve() in a new interpreter that imports this checkout's engine; OSError if it cannot."""
    return subprocess.Popen(helper_argv(f"from {module} import serve; serve()"), stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)


def helper_argv(code: str) -> list[str]:
    """The command line that runs `code` as a helper does. A helper imports only the standard library and
    the engine: without site (-S) it boots in ~25 ms, not ~40 (the site-packages scan and the
    editable-install finder)."""
    engine_parent = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return [sys.executable, "-I", "-S", "-c", f"import sys; sys.path.insert(0, {engine_parent!r}); {code}"]


def serve_requests(answer: Callable[[object], object | None]) -> None:
    """A helper's loop: every request from the parent answered with answer(request), until the parent
    closes the pipe (or answer returns None: stop now).

    Ctrl-C reaches the whole process group: the parent drains and seals, so its helper must finish the
    batch in hand rather than die under it; a parent that is gone closes the pipe, and that ends us."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    inp, out = sys.stdin.buffer, sys.stdout.buffer
    while True:
        request = read_message(inp)
        if request is None:
            return
        reply = answer(request)
        if reply is None:
            return
        write_message(out, reply)


@functools.lru_cache(maxsize=None)
def local_adapter(root: str):
    """A helper's adapter for a root, made once."""
    from engine.adapters.local import LocalAdapter
    return LocalAdapter(root)


def read_message(stream) -> object | None:
    """One message, or None at the end of the stream (or a cut one)."""
    head = stream.read(_HEADER.size)
    if len(head) < _HEADER.size:
        return None
    (size,) = _HEADER.unpack(head)
    body = stream.read(size)
    if len(body) < size:
        return None
    return marshal.loads(body)


def write_message(stream, message) -> None:
    body = marshal.dumps(message)
    stream.write(_HEADER.pack(len(body)) + body)
    stream.flush()


# the parent's side -----------------------------------------------------------------------------------

class HelperGone(OSError):
    """The helper died or could not start: the items of its batch are worth another attempt (EAGAIN
    makes the queue retry them with backoff, through a new helper)."""

    def __init__(self, message: str):
        super().__init__(errno.EAGAIN, message)


class Helper:
    """One helper process running `MODULE`.serve(), used by one worker thread at a time."""

    MODULE = ""
    WHAT = ""  # "listing", "copy": for messages
    Gone = HelperGone

    def __init__(self):
        try:
            self._proc = start(self.MODULE)
        except OSError as exc:
            raise self.Gone(f"cannot start a {self.WHAT} process: {exc.strerror}") from None

    @property
    def pid(self) -> int:
        return self._proc.pid

    def exchange(self, request, complete: Callable[[object], bool]):
        """Send a request, return its reply; Gone when the helper is not there (or the reply is cut short:
        complete(reply) is False)."""
        try:
            write_message(self._proc.stdin, request)
            reply = read_message(self._proc.stdout)
        except (OSError, ValueError):
            reply = None
        if reply is None or not complete(reply):
            self.close()
            raise self.Gone(f"the {self.WHAT} process ended unexpectedly")
        return reply

    def close(self, wait: bool = True) -> None:
        """Close its pipes: the helper finishes the batch in hand (if any) and exits. wait=False reaps it
        from a background thread instead of waiting here for the interpreter to shut down."""
        proc = self._proc
        for pipe in (proc.stdin, proc.stdout):
            try:
                pipe.close()
            except OSError:
                pass
        if not wait:
            try:
                start_thread(threading.Thread(target=self._reap, name=f"{self.WHAT}-process-reaper", daemon=True))
                return
            except ThreadLimit:
                pass  # reaped here then: it exits as its pipes close
        self._reap()

    def _reap(self) -> None:
        proc = self._proc
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()  # hung on a dead mount: what it left is swept when the run resumes
            proc.wait()


class HelperPool:
    """A helper per calling thread (each worker has its own), taken from those started ahead (`spare`)
    or started on first use. `usable` turns False once one could not even start: the work is then done
    in this process, and on_unusable(why) is told so, once."""

    Helper = Helper
    FALLBACK = "working in this process instead"  # what happens then, for the operator

    def __init__(self, on_unusable: Callable[[str], None] | None = None):
        self._local = threading.local()
        self._spare: list[Helper] = []
        self._all: list[Helper] = []
        self._lock = threading.Lock()
        self._closed = False
        self.usable = True
        self._on_unusable = on_unusable

    def _cannot_start(self, exc: HelperGone) -> None:
        with self._lock:
            told, self.usable = not self.usable, False
        if not told and self._on_unusable is not None:
            self._on_unusable(f"{exc.strerror}; {self.FALLBACK}")

    def start(self, n: int) -> None:
        """Start n helpers ahead of use, so that their start-up overlaps other work."""
        started = []
        try:
            for _ in range(n):
                started.append(self.Helper())
        except HelperGone as exc:
            self._cannot_start(exc)
        self._add_spare(started)

    def _add_spare(self, helpers: list[Helper]) -> None:
        with self._lock:
            self._spare.extend(helpers)
            self._all.extend(helpers)

    def _take_spare(self) -> Helper | None:
        with self._lock:
            return self._spare.pop() if self._spare else None

    def exchange(self, request, complete: Callable[[object], bool]):
        """This thread's helper's reply to `request` (see Helper.exchange)."""
        helper = getattr(self._local, "helper", None)
        if helper is None:
            helper = self._take_spare()
            if helper is None:
                try:
                    helper = self.Helper()
                except HelperGone as exc:
                    self._cannot_start(exc)
                    raise
                with self._lock:
                    self._all.append(helper)
            self._local.helper = helper
        try:
            return helper.exchange(request, complete)
        except HelperGone:
            self._local.helper = None
            raise

    def release(self) -> None:
        """This thread's helper back to the spares, for the next worker started to take: its worker leaves
        (fewer workers now), and would otherwise leave a helper idle until the pool closes."""
        helper = getattr(self._local, "helper", None)
        if helper is None:
            return
        self._local.helper = None
        with self._lock:
            if not self._closed:  # closed while this worker finished: its helper was closed with the others
                self._spare.append(helper)

    def pids(self) -> list[int]:
        """The process ids of the helpers started so far (engine.governor watches their state)."""
        with self._lock:
            return [helper.pid for helper in self._all]

    def close(self, wait: bool = True) -> None:
        with self._lock:
            self._closed = True
            helpers, self._all, self._spare = self._all, [], []
        for helper in helpers:
            helper.close(wait)
