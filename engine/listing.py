"""Folder listings as columns, and the helper processes that make them off this process's GIL.

A traversal's time goes into readdir + lstat and the per-entry Python around them. In one process,
two sides listing in threads take turns on the GIL; a helper process per traversal worker lists on the
other core and hands back whole columns (marshal over a pipe; the files of a batch of folders as raw
buffers that this side keeps as they are until a seal makes Arrow of them: no Python object per file
here, a Node per subfolder). The helpers are plain children on pipes: they exit when the pipe closes,
so a killed run leaves none behind, and they import nothing heavier than the local adapter. Their loop is
engine/_native_listing.c where that was built at install (the same answer for ~40% of the CPU), list_batch
otherwise.
"""

from __future__ import annotations

import threading
from array import array

from engine.adapters import beneath
from engine.adapters.local import OTHER_SPECIAL_KIND, SPECIAL_KINDS
from engine.helper_process import Helper, HelperGone, HelperPool, local_adapter, serve_requests
from engine.model import DST, FILE, FOLDER, OUR_TEMPORARY, SYMLINK, TEMP_SUFFIX, fs_bytes, fs_str, is_temp_name, node_id

try:
    from engine import _native_listing
except ImportError:  # not built (no C compiler where it was installed): list_batch gives the same answer
    _native_listing = None

# A file row's kind travels as its index in FILE_KINDS (one byte).
FILE_KINDS = (FILE, SYMLINK)
_KIND_CODE = {kind: code for code, kind in enumerate(FILE_KINDS)}

# Per folder: (paths, ids, sizes, mtimes, modes) of its subfolders, then how many file rows it has in the
# batch's FileBuffers, then, only when there are any, its special files as ((path, what), ...); or the
# OSError that kept it from being listed.
FolderResult = tuple  # (list, list, list, list, list, int) or (list, list, list, list, list, int, tuple)
# The files of a whole batch of folders, folder after folder, as raw native-endian buffers (marshal sends
# bytes as one copy): ids, sizes, mtimes (int64), modes (int32), kinds (uint8, FILE_KINDS index),
# path_sizes (int32: bytes of each path), paths (fs-encoded, concatenated). The main process keeps them as
# they are and engine.store.Store.file_batch makes Arrow of many at once: no Python object per row.
FileBuffers = tuple[bytes, bytes, bytes, bytes, bytes, bytes, bytes]
IDS, SIZES, MTIMES, MODES, KINDS, PATH_SIZES, PATHS = range(7)
# bytes per row of each buffer but PATHS
ROW_WIDTHS = (8, 8, 8, 4, 1, 4)


def file_paths(files: FileBuffers, start: int, stop: int) -> list[str]:
    """The paths of rows start..stop (a Python object per row: for excludes and lookups only)."""
    sizes, blob = memoryview(files[PATH_SIZES]).cast("i"), files[PATHS]
    offset = sum(sizes[:start])
    paths = []
    for size in sizes[start:stop]:
        paths.append(fs_str(blob[offset:offset + size]))
        offset += size
    return paths


def path_bytes(files: FileBuffers, start: int, stop: int) -> memoryview:
    """The part of the PATHS blob that holds rows start..stop."""
    if start == 0 and stop * 4 == len(files[PATH_SIZES]):
        return memoryview(files[PATHS])
    sizes = memoryview(files[PATH_SIZES]).cast("i")
    first = sum(sizes[:start])
    return memoryview(files[PATHS])[first:first + sum(sizes[start:stop])]


def list_batch(side: str, list_folder, folders: list[str]) -> tuple[list[FolderResult | OSError], FileBuffers]:
    """List folders (list_folder(path) -> entries) into subfolder columns per folder and one FileBuffers
    for all their files. DST temporaries of ours (left by an interrupted copy) are not destination entries:
    they are named with the special files (as OUR_TEMPORARY), for the copy to remove."""
    ids, sizes, mtimes, modes = array("q"), array("q"), array("q"), array("i")
    kinds, paths, path_sizes = bytearray(), bytearray(), array("i")
    kind_code = _KIND_CODE.__getitem__
    skip_temps = side == DST
    results: list[FolderResult | OSError] = []
    for base in folders:
        specials = []
        try:
            entries = list_folder(base, specials)
        except OSError as exc:
            results.append(exc)
            continue
        prefix = f"{base}/" if base else ""
        f_paths, f_ids, f_sizes, f_mtimes, f_modes = [], [], [], [], []
        files_before = len(ids)
        for name, kind, size, mtime_ns, mode in entries:
            if skip_temps and name[:1] == "." and name.endswith(TEMP_SUFFIX) and is_temp_name(name):
                specials.append((name, OUR_TEMPORARY))
                continue
            path = prefix + name
            if kind == FOLDER:
                f_paths.append(path)
                f_ids.append(node_id(side, path))
                f_sizes.append(size)
                f_mtimes.append(mtime_ns)
                f_modes.append(mode)
            else:
                ids.append(node_id(side, path))
                kinds.append(kind_code(kind))
                sizes.append(size)
                mtimes.append(mtime_ns)
                modes.append(mode)
                encoded = fs_bytes(path)
                paths += encoded
                path_sizes.append(len(encoded))
        result = (f_paths, f_ids, f_sizes, f_mtimes, f_modes, len(ids) - files_before)
        results.append(result + (tuple((prefix + name, what) for name, what in specials),) if specials else result)
    files = (ids.tobytes(), sizes.tobytes(), mtimes.tobytes(), modes.tobytes(), bytes(kinds),
             path_sizes.tobytes(), bytes(paths))
    return results, files


# the helper process ----------------------------------------------------------------------------------

def serve() -> None:
    """The helper's loop: (root, side, [folder paths]) in, list_batch's (results, files) out, until EOF."""
    serve_requests(answer)


def answer(request) -> tuple[list, FileBuffers]:
    """One request's answer. A folder that failed travels as (errno, strerror): the parent turns it back into
    an OSError."""
    root, side, folders = request
    adapter = local_adapter(root)
    if _native_listing is not None:
        try:
            return list_natively(adapter, adapter.root_fd(), side, folders)
        except Exception:  # noqa: BLE001 - the root cannot be opened, MemoryError, a bug: list_batch below
            pass  # answers folder by folder, each failure with its own error

    def list_folder(path: str, specials: list):
        try:
            return adapter.list(path, specials)
        except OSError:
            raise
        except Exception as exc:  # noqa: BLE001 - a bug here must fail one folder, not the helper
            raise OSError(0, f"internal error in the listing process: {exc!r}") from None

    results, files = list_batch(side, list_folder, folders)
    return [(r.errno or 0, r.strerror or str(r)) if isinstance(r, OSError) else r for r in results], files


def list_natively(adapter, root_fd: int, side: str, folders: list[str]) -> tuple[list, FileBuffers]:
    """serve()'s answer from engine._native_listing (C: ~2.4x less CPU than list_batch over a local
    adapter): the same results and buffers, failures as (errno, strerror)."""
    def open_folder(path: str):
        """Where openat2 is refused: the adapter's own open, which walks the path instead."""
        try:
            return adapter.open_folder(path)
        except OSError as exc:
            return exc.errno or 0, exc.strerror or str(exc)

    return _native_listing.list_batch(root_fd, folders, side.encode(), side == DST, is_temp_name,
                                      OUR_TEMPORARY, SPECIAL_KINDS, OTHER_SPECIAL_KIND,
                                      beneath.openat2_usable(), open_folder, beneath.SYMLINK_IN_PATH)


# the parent's side -----------------------------------------------------------------------------------

class ListerGone(HelperGone):
    """A listing helper died or could not start (see HelperGone)."""


class Lister(Helper):
    MODULE, WHAT, Gone = "engine.listing", "listing", ListerGone


DEFAULT_TRAVERSAL_WORKERS = 2  # per side (engine.settings' default; here so the CLI needs no pydantic for it)

# Helpers started ahead of need (start_early): a helper takes ~25 ms to boot (interpreter and imports),
# which an early, tiny round would otherwise wait for, once per worker of each side.
_early: list[Lister] = []
_early_lock = threading.Lock()


def start_early(count: int) -> None:
    """Start `count` helpers now, for the first ListerPools to take (while this process goes on importing
    and opening the run file on the other core). Unused ones end with close_early, or with this process."""
    started = []
    for _ in range(count):
        try:
            started.append(Lister())
        except ListerGone:
            break  # the pool will find out for itself and list in this process
    with _early_lock:
        _early.extend(started)


def close_early() -> None:
    with _early_lock:
        unused = _early[:]
        del _early[:]
    for lister in unused:
        lister.close()


def _take_early() -> Lister | None:
    with _early_lock:
        return _early.pop() if _early else None


class ListerPool(HelperPool):
    """A listing helper per traversal worker (see HelperPool), the first ones taken from those started
    early."""

    Helper = Lister
    FALLBACK = "listing in this process instead, slower (one core for every listing)"

    def _take_spare(self) -> Lister | None:
        """One a leaving worker handed back, else one started early, else none."""
        spare = super()._take_spare()
        if spare is not None:
            return spare
        early = _take_early()
        if early is not None:
            with self._lock:
                self._all.append(early)
        return early

    def list(self, root: str, side: str, folders: list[str]) -> tuple[list[FolderResult | OSError], FileBuffers]:
        """list_batch's answer for these folders, from this thread's helper."""
        results, files = self.exchange((root, side, folders), lambda reply: len(reply[0]) == len(folders))
        return [OSError(*r) if len(r) == 2 else r for r in results], files
