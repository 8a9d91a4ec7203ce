"""Starting a thread where the number of processes and threads is limited (ulimit -u, a container's pids
limit): past the limit CPython raises RuntimeError("can't start new thread"); the operator gets one line
that names the limit and what to do instead, and the run stops resumable, as on a full disk."""

from __future__ import annotations

import threading

from engine.errors import UserError

THREAD_LIMIT = ("cannot start another thread: the limit on processes and threads is reached (ulimit -u, or the "
                "container's pids limit); raise it, or lower the worker counts")


class ThreadLimit(UserError):
    """No thread could be started; the run file stays resumable (exit 3, as a run stopped by a full disk)."""

    exit_code = 3

    def __init__(self, message: str = THREAD_LIMIT):
        super().__init__(message)


def is_thread_limit(exc: BaseException) -> bool:
    """Is this CPython's error for a thread the system would not create?"""
    return isinstance(exc, RuntimeError) and "new thread" in str(exc)  # "can't start new thread"


def start_thread(thread: threading.Thread) -> threading.Thread:
    """thread, started; ThreadLimit when the system would not create it."""
    try:
        thread.start()
    except RuntimeError as exc:
        if not is_thread_limit(exc):
            raise
        raise ThreadLimit() from None
    return thread
