"""Helpers shared by the engine tests (a module of its own: two conftest.py files would shadow each other)."""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from pathlib import Path

from engine import cli
from engine.adapters.local import LocalAdapter
from engine.model import unambiguous


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def report(capsys, db: Path, *extra: str) -> list[dict]:
    code, out, err = run_cli(capsys, "report", "--db", str(db), "--format", "jsonl", *extra)
    assert code == 0, err
    return [json.loads(line) for line in out.splitlines()]


def wait_until(predicate, timeout: float = 20.0, what: str = "condition not reached") -> None:
    """Poll until predicate() holds; fail with `what` after `timeout` seconds (a bound, not a timing)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.01)


def tree_state(root: Path) -> dict[str, tuple]:
    """Every entry below root with what identifies its content: type, bytes or link target, mtime."""
    state = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, root)
            st = os.lstat(full)
            if os.path.islink(full):
                state[rel] = ("symlink", os.readlink(full), st.st_mtime_ns)
            elif os.path.isdir(full):
                state[rel] = ("folder",)
            else:
                with open(full, "rb") as f:
                    state[rel] = ("file", f.read(), st.st_mtime_ns)
    return state


def shown(path: str) -> str:
    """A path as the report writes it."""
    return unambiguous(path)


def helpers_of_this_process(module: str) -> set[int]:
    """The pids of our children that run `module`'s helper (engine.listing, engine.copying), from /proc."""
    found = set()
    for task in os.listdir(f"/proc/{os.getpid()}/task"):
        try:
            with open(f"/proc/{os.getpid()}/task/{task}/children") as f:
                children = f.read().split()
        except OSError:
            continue
        for pid in children:
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    if module.encode() in f.read():
                        found.add(int(pid))
            except OSError:
                pass
    return found


class CannotListLocked(LocalAdapter):
    """A source whose folder 'locked' cannot be listed (as for an operator without the permission)."""

    def list(self, path, *args, **kwargs):
        if path == "locked":
            raise PermissionError(13, "Permission denied", self.abs(path))
        return super().list(path, *args, **kwargs)


@contextlib.contextmanager
def threads_refused(refuse):
    """Every Python thread whose name refuse(name, started_so_far) says True for fails to start, as the
    system refuses it past the limit."""
    original = threading._start_new_thread
    started = []

    def start_new_thread(function, args, *rest):
        thread = getattr(function, "__self__", None)
        name = thread.name if isinstance(thread, threading.Thread) else ""
        if refuse(name, started):
            raise RuntimeError("can't start new thread")
        started.append(name)
        return original(function, args, *rest)

    threading._start_new_thread = start_new_thread
    try:
        yield started
    finally:
        threading._start_new_thread = original
