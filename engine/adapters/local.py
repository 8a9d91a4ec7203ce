"""Local filesystem adapter: listings by readdir + lstat relative to the folder, lstat only (never
follows a symlink), atomic temp-then-rename writes."""

from __future__ import annotations

import errno
import os
import random
import secrets
import stat as stat_mod
from typing import BinaryIO

from engine.adapters.base import Entry
from engine.model import FILE, FOLDER, SYMLINK, temp_name


_random_bits = random.Random(secrets.token_bytes(16)).getrandbits  # C, atomic under the GIL
_KIND = {stat_mod.S_IFDIR: FOLDER, stat_mod.S_IFREG: FILE, stat_mod.S_IFLNK: SYMLINK}
# what the rest are, in a notice (not migrated: as rclone; rsync -a would make them again)
SPECIAL_KINDS = {stat_mod.S_IFIFO: "a FIFO", stat_mod.S_IFSOCK: "a socket", stat_mod.S_IFCHR: "a character device",
                 stat_mod.S_IFBLK: "a block device"}
_DIR_FLAGS = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0)
# a source file: never through a symlink (ELOOP), never blocking on a fifo that replaced it
_READ_FLAGS = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
_TEMP_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)


# mtimes in ns as a 64-bit column holds them (1677-2262): a file dated after 2262 (ext4 goes to 2446) is taken
# as of 2262 on both sides, rather than failing its whole folder's listing
MTIME_NS_MAX, MTIME_NS_MIN = (1 << 63) - 1, -(1 << 63)


def mtime_ns(st: os.stat_result) -> int:
    m = st.st_mtime_ns
    return m if MTIME_NS_MIN <= m <= MTIME_NS_MAX else max(MTIME_NS_MIN, min(m, MTIME_NS_MAX))


def _umask() -> int:
    """This process's umask, read without setting it (os.umask can only set it, for every thread at once)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return 0o022


def _entry_type(st_mode: int) -> str | None:
    if stat_mod.S_ISDIR(st_mode):
        return FOLDER
    if stat_mod.S_ISREG(st_mode):
        return FILE
    if stat_mod.S_ISLNK(st_mode):
        return SYMLINK
    return None  # sockets, fifos, devices: not migrated


class LocalAdapter:
    kind = "local"

    def __init__(self, root: str | os.PathLike):
        self.root = os.fspath(root)
        self._prefix = self.root if not self.root or self.root.endswith("/") else self.root + "/"

    def abs(self, path: str) -> str:
        # os.path.join(root, path) for the relative, '/'-separated paths of the protocol, without its cost
        return self._prefix + path if path else self.root

    def list(self, path: str, specials: list | None = None) -> list[Entry]:
        # Hot path (one call per folder): the folder is opened once and every entry is lstat'ed relative
        # to it (fstatat), so the kernel does not walk the whole path again for each entry.
        entries = []
        append = entries.append
        kind_of = _KIND.get
        new = tuple.__new__
        lstat = os.lstat
        fd = os.open(self.abs(path), _DIR_FLAGS)
        try:
            for name in os.listdir(fd):
                try:
                    st = lstat(name, dir_fd=fd)
                except FileNotFoundError:
                    continue  # vanished between readdir and lstat
                mode = st.st_mode
                kind = kind_of(mode & 0o170000)
                if kind is not None:
                    mtime = st.st_mtime_ns
                    if not MTIME_NS_MIN <= mtime <= MTIME_NS_MAX:
                        mtime = mtime_ns(st)
                    append(new(Entry, (name, kind, st.st_size, mtime, mode & 0o7777)))
                elif specials is not None:
                    specials.append((name, SPECIAL_KINDS.get(mode & 0o170000, "a special file")))
        finally:
            os.close(fd)
        return entries

    def stat(self, path: str) -> Entry | None:
        try:
            st = os.lstat(self.abs(path))
        except FileNotFoundError:
            return None
        except NotADirectoryError:
            return None
        mode = st.st_mode
        kind = _KIND.get(mode & 0o170000)
        if kind is None:
            return None
        return tuple.__new__(Entry, (path.rpartition("/")[2], kind, st.st_size, mtime_ns(st), mode & 0o7777))

    def open_read(self, path: str) -> BinaryIO:
        return open(self.abs(path), "rb", buffering=0)

    def read_link(self, path: str) -> str:
        return os.readlink(self.abs(path))

    def create_folder(self, path: str, mode: int) -> None:
        os.mkdir(self.abs(path), mode | 0o700)  # owner must be able to fill it

    @staticmethod
    def made_mode(mode: int) -> int:
        """The mode create_folder(path, mode) leaves: owner rwx added, the umask taken away."""
        return (mode | 0o700) & ~_umask()

    def _temp_path(self, folder: str, name: str) -> str:
        # Random part per attempt: a reclaimed (hung) attempt can never write into a newer one's file.
        # 32 random bits as 8 hex digits, from a generator seeded once from the OS: no syscall per file.
        # O_EXCL on the open still refuses the (unlikely) name that exists already.
        temp = temp_name(name, f"{_random_bits(32):08x}")
        return f"{folder}/{temp}" if folder else temp

    def create_temp(self, folder: str, name: str) -> tuple[str, BinaryIO]:
        temp, fd = self.create_temp_fd(folder, name)
        return temp, open(fd, "wb", buffering=0)

    # File-descriptor primitives of the copy fast path (engine.copying uses them when both adapters
    # have them): a small file costs open + fstat + open + one copy call + two closes, no file objects.

    def open_file_fd(self, path: str) -> tuple[int | None, Entry | None]:
        """Open a regular file for reading and fstat the open file: (fd, its entry), the caller closes fd.
        (None, what is there now) when it is no longer a regular file; (None, None) when it is gone."""
        try:
            fd = os.open(self.abs(path), _READ_FLAGS)
        except (FileNotFoundError, NotADirectoryError):
            return None, None
        except OSError as exc:
            if exc.errno == errno.ELOOP:  # O_NOFOLLOW: a symlink took its place
                return None, self.stat(path)
            raise
        try:
            st = os.fstat(fd)
        except BaseException:
            os.close(fd)
            raise
        mode = st.st_mode
        kind = _KIND.get(mode & 0o170000)
        entry = None if kind is None else \
            tuple.__new__(Entry, (path.rpartition("/")[2], kind, st.st_size, mtime_ns(st), mode & 0o7777))
        if kind != FILE:
            os.close(fd)
            return None, entry
        return fd, entry

    def create_temp_fd(self, folder: str, name: str) -> tuple[str, int]:
        """create_temp without the file object: (its path, a raw fd open for writing)."""
        temp = self._temp_path(folder, name)
        return temp, os.open(self.abs(temp), _TEMP_FLAGS, 0o600)

    def create_temp_link(self, folder: str, name: str, target: str) -> str:
        temp = self._temp_path(folder, name)
        os.symlink(target, self.abs(temp))
        return temp

    def commit_temp(self, temp_path: str, final_path: str, mtime_ns: int, mode: int | None) -> None:
        temp_abs = self.abs(temp_path)
        if mode is not None:
            os.chmod(temp_abs, mode)
        os.utime(temp_abs, ns=(mtime_ns, mtime_ns), follow_symlinks=False)
        os.rename(temp_abs, self.abs(final_path))

    def remove(self, path: str) -> None:
        try:
            os.unlink(self.abs(path))
        except FileNotFoundError:
            pass

    def set_attributes(self, path: str, mtime_ns: int | None, mode: int | None) -> None:
        target = self.abs(path)
        if mtime_ns is not None:
            os.utime(target, ns=(mtime_ns, mtime_ns), follow_symlinks=False)
        if mode is not None:
            try:
                os.chmod(target, mode, follow_symlinks=False)
            except NotImplementedError:  # Linux refuses it for a symlink only: one took the entry's place
                pass
