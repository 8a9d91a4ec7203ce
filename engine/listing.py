"""Folder listings as columns, and the helper processes that make them off this process's GIL.

A traversal's time goes into readdir + lstat and the per-entry Python around them. In one process,
two sides listing in threads take turns on the GIL; a helper process per traversal worker lists on the
other core and hands back whole columns (marshal over a pipe: no per-entry work on this side but a
Node per subfolder). The helpers are plain children on pipes: they exit when the pipe closes, so a
killed run leaves none behind, and they import nothing heavier than the local adapter.
"""

from __future__ import annotations

import errno
import signal
import subprocess
import sys
import threading

from engine.helper_process import read_message, start as start_helper, write_message
from engine.model import DST, FOLDER, TEMP_SUFFIX, node_id

# (paths, ids, sizes, mtimes, modes) of the subfolders; (paths, ids, kinds, sizes, mtimes, modes) of the rest
Columns = tuple[tuple[list, ...], tuple[list, ...]]

def split_listing(side: str, base: str, entries) -> Columns:
    """One folder's entries as columns, subfolders apart (they become tasks); DST temporaries of ours
    (left by an interrupted copy) are not destination entries and are left out."""
    prefix = f"{base}/" if base else ""
    f_paths, f_ids, f_sizes, f_mtimes, f_modes = [], [], [], [], []
    paths, ids, kinds, sizes, mtimes, modes = [], [], [], [], [], []
    skip_temps = side == DST
    for name, kind, size, mtime_ns, mode in entries:
        if skip_temps and name[:1] == "." and name.endswith(TEMP_SUFFIX):
            continue
        path = prefix + name
        if kind == FOLDER:
            f_paths.append(path)
            f_ids.append(node_id(side, path))
            f_sizes.append(size)
            f_mtimes.append(mtime_ns)
            f_modes.append(mode)
        else:
            paths.append(path)
            ids.append(node_id(side, path))
            kinds.append(kind)
            sizes.append(size)
            mtimes.append(mtime_ns)
            modes.append(mode)
    return (f_paths, f_ids, f_sizes, f_mtimes, f_modes), (paths, ids, kinds, sizes, mtimes, modes)


# the helper process ----------------------------------------------------------------------------------

def serve() -> None:
    """The helper's loop: (root, side, [folder paths]) in, one result per folder out, until EOF.
    A result is (columns) or (errno, strerror): the parent turns the latter back into an OSError."""
    from engine.adapters.local import LocalAdapter

    # Ctrl-C reaches the whole process group: the parent drains and seals, so its helper must finish the
    # batch in hand rather than die under it; a parent that is gone closes the pipe, and that ends us.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    inp, out = sys.stdin.buffer, sys.stdout.buffer
    adapters: dict[str, LocalAdapter] = {}
    while True:
        request = read_message(inp)
        if request is None:
            return
        root, side, folders = request
        adapter = adapters.get(root) or adapters.setdefault(root, LocalAdapter(root))
        results = []
        for path in folders:
            try:
                results.append(split_listing(side, path, adapter.list(path)))
            except OSError as exc:
                results.append((exc.errno or 0, exc.strerror or str(exc)))
            except Exception as exc:  # noqa: BLE001 - a bug here must fail one folder, not the helper
                results.append((0, f"internal error in the listing process: {exc!r}"))
        write_message(out, results)


# the parent's side -----------------------------------------------------------------------------------

class ListerGone(OSError):
    """The helper died or could not start: the folders of its batch are worth another attempt (EAGAIN
    makes the queue retry them with backoff, through a new helper)."""

    def __init__(self, message: str):
        super().__init__(errno.EAGAIN, message)


class Lister:
    """One helper process, used by one worker thread at a time."""

    def __init__(self):
        try:
            self._proc = start_helper("engine.listing")
        except OSError as exc:
            raise ListerGone(f"cannot start a listing process: {exc.strerror}") from None

    def list(self, root: str, side: str, folders: list[str]) -> list[Columns | OSError]:
        try:
            write_message(self._proc.stdin, (root, side, folders))
            results = read_message(self._proc.stdout)
        except (OSError, ValueError):
            results = None
        if results is None or len(results) != len(folders):
            self.close()
            raise ListerGone("the listing process ended unexpectedly")
        return [OSError(r[0], r[1]) if len(r) == 2 and isinstance(r[0], int) else r for r in results]

    def close(self) -> None:
        proc = self._proc
        for stream in (proc.stdin, proc.stdout):
            try:
                stream.close()
            except OSError:
                pass
        try:
            proc.wait(2)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class ListerPool:
    """A helper per calling thread (each traversal worker has its own), started on first use."""

    def __init__(self):
        self._local = threading.local()
        self._all: list[Lister] = []
        self._lock = threading.Lock()
        self.usable = True  # False once a helper could not even start: list in this process from then on

    def list(self, root: str, side: str, folders: list[str]) -> list[Columns | OSError]:
        lister = getattr(self._local, "lister", None)
        if lister is None:
            try:
                lister = self._local.lister = Lister()
            except ListerGone:
                self.usable = False
                raise
            with self._lock:
                self._all.append(lister)
        try:
            return lister.list(root, side, folders)
        except ListerGone:
            self._local.lister = None
            raise

    def close(self) -> None:
        with self._lock:
            listers, self._all = self._all, []
        for lister in listers:
            lister.close()
