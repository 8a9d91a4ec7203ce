"""Opening a path beneath a folder without following a symlink anywhere on the way.

A path checked once can change before it is used: a folder on the destination replaced by a symlink while
the copy runs would have the copy's files written wherever the symlink points, and a source folder
replaced by one would have the copy read from outside the source. Every open of the local adapter goes
through open_beneath instead, relative to its root's descriptor: Linux's openat2 with RESOLVE_NO_SYMLINKS
refuses any symlink on the path in the same single system call an open costs (one measured: 4.2 against
3.4 us, the difference being the ctypes call). Where openat2 is missing (Linux before 5.6, other
systems, a seccomp filter that refuses it), the path is walked one folder at a time with O_NOFOLLOW.
"""

from __future__ import annotations

import ctypes
import errno
import os
import stat
import sys

from engine.model import fs_bytes

# a descriptor of a folder, good only as the folder of *at() calls (no read permission needed)
FOLDER_FLAGS = getattr(os, "O_PATH", os.O_RDONLY) | os.O_DIRECTORY | os.O_CLOEXEC
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
SYMLINK_IN_PATH = "a symlink stands in its path (symlinks are not followed)"

_SYS_OPENAT2 = 437  # the same number on every Linux architecture (the generic syscall table, 5.6+)
_RESOLVE_NO_SYMLINKS, _RESOLVE_BENEATH = 0x04, 0x08


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


def _load_openat2():
    if not sys.platform.startswith("linux"):
        return None
    try:
        call = ctypes.CDLL(None, use_errno=True).syscall
    except (OSError, AttributeError):
        return None
    call.restype = ctypes.c_long
    call.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_char_p, ctypes.c_void_p, ctypes.c_size_t]
    return call


_syscall = _load_openat2()
_HOW_SIZE = ctypes.sizeof(_OpenHow)
_hows: dict[tuple[int, int], tuple[_OpenHow, int]] = {}  # (flags, mode) -> the struct and its address: made once


def _how(flags: int, mode: int) -> int:
    made = _hows.get((flags, mode))
    if made is None:
        how = _OpenHow(flags, mode, _RESOLVE_NO_SYMLINKS | _RESOLVE_BENEATH)
        made = _hows.setdefault((flags, mode), (how, ctypes.addressof(how)))
    return made[1]


def openat2_usable() -> bool:
    """False once openat2 is known to be refused here (open_beneath walks instead)."""
    return _syscall is not None


def _symlink_in_path(path: str) -> OSError:
    return OSError(errno.ELOOP, SYMLINK_IN_PATH, path)


def open_beneath(folder_fd: int, path: str, flags: int, mode: int = 0) -> int:
    """os.open of `path` ('/'-separated, relative) inside the folder open as folder_fd, refusing every
    symlink on the path, the last component included (OSError ELOOP): a new descriptor."""
    global _syscall
    if _syscall is not None:
        code = _openat2(folder_fd, path, flags, mode)
        if code >= 0:
            return code
        code = -code
        if not _refused_itself(folder_fd, code):
            raise _symlink_in_path(path) if code == errno.ELOOP else OSError(code, os.strerror(code), path)
        _syscall = None  # this kernel, or a seccomp filter (older ones answer EPERM), refuses openat2: walk
    return _walk(folder_fd, path, flags, mode)


def _refused_itself(folder_fd: int, code: int) -> bool:
    """Was the error openat2 refused (not the path)? EPERM may be a filesystem's own answer: asked again
    with the folder itself."""
    if code not in (errno.ENOSYS, errno.EPERM):
        return False
    probe = _openat2(folder_fd, ".", FOLDER_FLAGS, 0)
    if probe >= 0:
        os.close(probe)
        return False
    return -probe in (errno.ENOSYS, errno.EPERM)


def _openat2(folder_fd: int, path: str, flags: int, mode: int) -> int:
    """A new descriptor, or -errno; retried on EINTR as os.open would (PEP 475)."""
    encoded, how = fs_bytes(path), _how(flags, mode)
    while True:
        fd = _syscall(_SYS_OPENAT2, folder_fd, encoded, how, _HOW_SIZE)
        if fd >= 0:
            return fd
        code = ctypes.get_errno()
        if code != errno.EINTR:
            return -code


def _walk(folder_fd: int, path: str, flags: int, mode: int) -> int:
    *folders, last = path.split("/")
    fd = folder_fd
    try:
        for name in folders:
            try:
                below = os.open(name, FOLDER_FLAGS | _NOFOLLOW, dir_fd=fd)
            except NotADirectoryError:  # O_PATH | O_NOFOLLOW | O_DIRECTORY on a symlink: ENOTDIR
                if stat.S_ISLNK(os.lstat(name, dir_fd=fd).st_mode):
                    raise _symlink_in_path(path) from None
                raise
            if fd != folder_fd:
                os.close(fd)
            fd = below
        try:
            return os.open(last, flags | _NOFOLLOW, mode, dir_fd=fd)
        except OSError as exc:
            if exc.errno == errno.ELOOP or (exc.errno == errno.ENOTDIR and flags & os.O_DIRECTORY
                                            and stat.S_ISLNK(os.lstat(last, dir_fd=fd).st_mode)):
                raise _symlink_in_path(path) from None
            raise
    finally:
        if fd != folder_fd:
            os.close(fd)
