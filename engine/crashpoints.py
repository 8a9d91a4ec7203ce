"""Named places where a test may SIGKILL the process, to prove a resume from any of them works.

MIGRATE_CRASH_AT="name:N" kills at the Nth time `hit("name")` runs. Unset (always, outside tests), a hit
costs one comparison."""

from __future__ import annotations

import os
import signal
import threading

_SPEC = os.environ.get("MIGRATE_CRASH_AT")
_NAME, _, _AT = (_SPEC or "").partition(":")
_AT_N = int(_AT or 1) if _SPEC else 0
_counts: dict[str, int] = {}
_lock = threading.Lock()


def hit(name: str) -> None:
    if _SPEC is None or name != _NAME:
        return
    with _lock:
        _counts[name] = _counts.get(name, 0) + 1
        if _counts[name] >= _AT_N:
            os.kill(os.getpid(), signal.SIGKILL)
