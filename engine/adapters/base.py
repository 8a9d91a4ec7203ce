"""The FSAdapter protocol and the error taxonomy every adapter shares."""

from __future__ import annotations

import errno
from typing import BinaryIO, Callable, NamedTuple, Protocol

from engine.model import FOLDER, folders_above, not_a_folder_now


class Entry(NamedTuple):
    name: str
    type: str  # model.FOLDER | FILE | SYMLINK
    size: int
    mtime_ns: int
    mode: int  # permission bits


# Errors worth another attempt: the medium hiccuped, the same call may work later.
TRANSIENT_ERRNOS = frozenset({
    errno.EIO, errno.EAGAIN, errno.ETIMEDOUT, errno.ESTALE, errno.EBUSY, errno.EINTR,
    errno.ENOTCONN, errno.ECONNRESET, errno.ECONNABORTED, errno.EHOSTDOWN, errno.EHOSTUNREACH,
    errno.ENETDOWN, errno.ENETUNREACH, errno.ENOLCK,
})


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, TimeoutError):
        return True
    return isinstance(exc, OSError) and exc.errno in TRANSIENT_ERRNOS


def is_disk_full(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


def describe(exc: BaseException) -> str:
    """One line for the dead-letter table: the reason, not the traceback."""
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.strerror} (errno {exc.errno})"
    return str(exc) or type(exc).__name__


class FSAdapter(Protocol):
    """Paths are relative to the adapter's root, '/'-separated, '' for the root itself."""

    def list(self, path: str, specials: list | None = None) -> list[Entry]:
        """The folder's folders, files and symlinks. Anything else there (a FIFO, a socket, a device) is
        not an entry; given a list, the adapter names each such thing in it: (name, what it is)."""

    def stat(self, path: str, exact_mtime: bool = False) -> Entry | None:
        """lstat: never follows a symlink; None when nothing is there, or a symlink stands where a folder
        above it was (the tree never goes through one). The mtime as the run file holds it (model's
        MTIME_NS_MAX/MIN at the most), or with exact_mtime as it is (for a copy to compare and set)."""

    def open_read(self, path: str) -> BinaryIO: ...

    def read_link(self, path: str) -> str: ...

    def create_folder(self, path: str, mode: int) -> None:
        """Create one folder; FileExistsError when something is there already."""

    def create_temp(self, folder: str, name: str) -> tuple[str, BinaryIO]:
        """A new, exclusive temporary file beside `name` in `folder`: (its path, open for writing)."""

    def create_temp_link(self, folder: str, name: str, target: str) -> str: ...

    def commit_temp(self, temp_path: str, final_path: str, mtime_ns: int, mode: int | None,
                    keep: Callable[[Entry | None], object] | None = None) -> object:
        """Set mtime and mode on the temporary entry, then rename it over the final name and return None.
        Given keep, it is first asked about what is at the final name now (as stat sees it): an answer
        other than None leaves that entry alone (nothing renamed) and is returned."""

    def remove(self, path: str) -> None:
        """Remove a temporary file; no error when it is gone already."""

    def made_mode(self, mode: int) -> int:
        """The mode create_folder(path, mode) leaves on the folder."""

    def set_attributes(self, path: str, mtime_ns: int | None, mode: int | None) -> None:
        """Set the mtime and/or the permission bits of a folder or file (None: leave it). Never through a
        symlink: one that took the entry's place since is left as it is."""


def not_a_folder_above(adapter: FSAdapter, path: str, side: str) -> str | None:
    """Why path is out of the tree's reach on `side` now: the first folder above it, from the top, that is
    something else (a symlink to elsewhere, a file), as not_a_folder_now says it. None when each is a
    folder, or one is gone (then path is gone too)."""
    for above in folders_above(path):
        entry = adapter.stat(above)
        if entry is None:
            return None
        if entry.type != FOLDER:
            return not_a_folder_now(above, side, entry.type)
    return None
