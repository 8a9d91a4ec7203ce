"""Local filesystem adapter: listings by readdir + lstat relative to the folder, lstat only (never
follows a symlink), atomic temp-then-rename writes. Every path is opened beneath the root's descriptor with
no symlink followed on the way (engine.adapters.beneath): a folder replaced by a symlink after it was
checked is refused, never written or read through."""

from __future__ import annotations

import errno
import os
import random
import secrets
import stat as stat_mod
import threading
from typing import BinaryIO

from engine.adapters.base import Entry
from engine.adapters.beneath import FOLDER_FLAGS, open_beneath
from engine.model import FILE, FOLDER, MTIME_NS_MAX, MTIME_NS_MIN, SYMLINK, temp_name


_random_bits = random.Random(secrets.token_bytes(16)).getrandbits  # C, atomic under the GIL
_KIND = {stat_mod.S_IFDIR: FOLDER, stat_mod.S_IFREG: FILE, stat_mod.S_IFLNK: SYMLINK}
# what the rest are, in a notice (not migrated: as rclone; rsync -a would make them again)
SPECIAL_KINDS = {stat_mod.S_IFIFO: "a FIFO", stat_mod.S_IFSOCK: "a socket", stat_mod.S_IFCHR: "a character device",
                 stat_mod.S_IFBLK: "a block device"}
OTHER_SPECIAL_KIND = "a special file"
_DIR_FLAGS = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0)
# a source file: never through a symlink (ELOOP), never blocking on a fifo that replaced it
_READ_FLAGS = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
_TEMP_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)


# A file dated after 2262 (ext4 goes to 2446) is listed as of 2262 (MTIME_NS_MAX), rather than failing its whole
# folder's listing; the copy compares and sets the exact dates (stat and open_file_fd with exact_mtime).


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


def _entry(name: str, st: os.stat_result, exact_mtime: bool = False) -> Entry | None:
    """An lstat result as an entry; None for what is not one (a FIFO, a socket, a device). exact_mtime:
    the mtime as it is, past 2262 too (for a copy to set it), not as the run file can hold it."""
    mode = st.st_mode
    kind = _KIND.get(mode & 0o170000)
    if kind is None:
        return None
    mtime = st.st_mtime_ns if exact_mtime else mtime_ns(st)
    return tuple.__new__(Entry, (name, kind, st.st_size, mtime, mode & 0o7777))


class LocalAdapter:
    kind = "local"

    def __init__(self, root: str | os.PathLike):
        self.root = os.fspath(root)
        self._prefix = self.root if not self.root or self.root.endswith("/") else self.root + "/"
        self._root_fd: int | None = None
        self._root_lock = threading.Lock()
        # each temporary's folder, as opened when it was made: committed or removed there, wherever that
        # folder is by then, and with one lookup of the folder per copy instead of one per system call
        self._temp_folders: dict[str, int] = {}

    def __del__(self):
        fd = getattr(self, "_root_fd", None)
        if fd is not None:
            try:
                os.close(fd)
            except (OSError, TypeError):  # TypeError: os torn down at interpreter exit
                pass

    def root_fd(self) -> int:
        """The root's descriptor (engine.listing's native loop opens folders beneath it)."""
        return self._root()

    def _root(self) -> int:
        """The root's descriptor, opened on first use (a destination may only exist once the copy made it)
        and kept: the root is the operator's path, followed if it is a symlink; nothing below it is."""
        fd = self._root_fd
        if fd is None:
            with self._root_lock:
                if self._root_fd is None:
                    self._root_fd = os.open(self.root, FOLDER_FLAGS)
                fd = self._root_fd
        return fd

    def recheck_root(self) -> bool:
        """Take the root path afresh when it names another folder than the kept descriptor does (a
        destination removed and made again under a long-lived process); True when it did. Only while no call
        is under way. The caller validates the pair again: the path may lead somewhere else now."""
        kept = self._root_fd
        if kept is None:
            return False
        try:
            now, then = os.stat(self.root), os.fstat(kept)
            if (now.st_dev, now.st_ino) == (then.st_dev, then.st_ino):
                return False
        except OSError:
            pass
        self._root_fd = None
        os.close(kept)
        return True

    def _open(self, path: str, flags: int, mode: int = 0) -> int:
        try:
            if not path:
                return os.open(".", flags, mode, dir_fd=self._root())
            return open_beneath(self._root(), path, flags, mode)
        except OSError as exc:
            raise self._named(exc, path)

    def _named(self, exc: OSError, path: str) -> OSError:
        """exc naming the whole path: the failures of a copy say which side refused from it."""
        exc.filename = self.abs(path)
        return exc

    def _folder_of(self, path: str) -> tuple[int, str]:
        """A descriptor of the folder holding path (the caller closes it), and path's name in it."""
        folder, _, name = path.rpartition("/")
        return self._open(folder, FOLDER_FLAGS), name

    def _in_folder(self, path: str, call, *args, **kwargs):
        """call(name, *args, dir_fd=<path's folder>, **kwargs): one system call on path, relative to its
        folder opened beneath the root."""
        folder, name = self._folder_of(path)
        try:
            return call(name, *args, dir_fd=folder, **kwargs)
        except OSError as exc:
            raise self._named(exc, path)
        finally:
            os.close(folder)

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
        fd = self.open_folder(path)
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
                    specials.append((name, SPECIAL_KINDS.get(mode & 0o170000, OTHER_SPECIAL_KIND)))
        finally:
            os.close(fd)
        return entries

    def open_folder(self, path: str) -> int:
        """A descriptor to read the folder's entries from (the caller closes it)."""
        return self._open(path, _DIR_FLAGS)

    def stat(self, path: str, exact_mtime: bool = False) -> Entry | None:
        try:
            # the root is the operator's path: followed when it is a symlink, as every open below it does
            st = self._in_folder(path, os.lstat) if path else os.stat(self.root)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            if exc.errno == errno.ELOOP:  # a symlink above it: no entry of the tree is there
                return None
            raise
        return _entry(path.rpartition("/")[2], st, exact_mtime)

    def open_read(self, path: str) -> BinaryIO:
        return open(self._open(path, _READ_FLAGS), "rb", buffering=0)

    def read_link(self, path: str) -> str:
        return self._in_folder(path, os.readlink)

    def create_folder(self, path: str, mode: int) -> None:
        self._in_folder(path, os.mkdir, mode | 0o700)  # owner must be able to fill it

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
            fd = self._open(path, _READ_FLAGS)
        except (FileNotFoundError, NotADirectoryError):
            return None, None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                entry = self.stat(path)
                if entry is None:
                    raise  # a symlink took the place of a folder above it: said, rather than "vanished"
                return None, entry  # a symlink took its own place
            raise
        try:
            st = os.fstat(fd)
        except BaseException:
            os.close(fd)
            raise
        entry = _entry(path.rpartition("/")[2], st, exact_mtime=True)
        if entry is None or entry.type != FILE:
            os.close(fd)
            return None, entry
        return fd, entry

    def create_temp_fd(self, folder: str, name: str) -> tuple[str, int]:
        """create_temp without the file object: (its path, a raw fd open for writing)."""
        temp = self._temp_path(folder, name)
        return temp, self._make_temp(temp, lambda name, dir_fd: os.open(name, _TEMP_FLAGS, 0o600, dir_fd=dir_fd))

    def create_temp_link(self, folder: str, name: str, target: str) -> str:
        temp = self._temp_path(folder, name)
        self._make_temp(temp, lambda name, dir_fd: os.symlink(target, name, dir_fd=dir_fd))
        return temp

    def _make_temp(self, temp: str, make):
        """make(name, dir_fd) in the temporary's folder, which is kept open for commit_temp or remove."""
        folder, name = self._folder_of(temp)
        try:
            made = make(name, folder)
        except OSError as exc:
            os.close(folder)
            raise self._named(exc, temp)
        self._temp_folders[temp] = folder
        return made

    def commit_temp(self, temp_path: str, final_path: str, mtime_ns: int, mode: int | None,
                    keep=None) -> object:
        final = final_path.rpartition("/")[2]

        def commit(temp: str, dir_fd: int) -> object:  # the temporary is always beside its final name
            if keep is not None:  # asked in the same folder the rename happens in: one lookup of it for both
                try:
                    there = _entry(final, os.lstat(final, dir_fd=dir_fd), exact_mtime=True)
                except FileNotFoundError:
                    there = None
                verdict = keep(there)
                if verdict is not None:
                    return verdict
            if mode is not None:
                os.chmod(temp, mode, dir_fd=dir_fd)
            os.utime(temp, ns=(mtime_ns, mtime_ns), dir_fd=dir_fd, follow_symlinks=False)
            os.rename(temp, final, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
            return None

        folder = self._temp_folders.get(temp_path)
        if folder is None:  # not made by this adapter
            return self._in_folder(temp_path, commit)
        try:
            verdict = commit(temp_path.rpartition("/")[2], folder)
        except OSError as exc:
            raise self._named(exc, temp_path)  # the folder stays open: the temporary is removed from it
        if verdict is None:
            del self._temp_folders[temp_path]
            os.close(folder)
        return verdict

    def remove(self, path: str) -> None:
        folder = self._temp_folders.pop(path, None)
        try:
            if folder is None:
                self._in_folder(path, os.unlink)
            else:
                try:
                    os.unlink(path.rpartition("/")[2], dir_fd=folder)
                except OSError as exc:
                    raise self._named(exc, path)
                finally:
                    os.close(folder)
        except FileNotFoundError:
            pass

    def remove_folder(self, path: str) -> None:
        """rmdir: an empty folder only (the live mirror's propagated deletions)."""
        self._in_folder(path, os.rmdir)

    def set_attributes(self, path: str, mtime_ns: int | None, mode: int | None) -> None:
        def set_them(name: str, dir_fd: int | None) -> None:
            if mtime_ns is not None:
                os.utime(name, ns=(mtime_ns, mtime_ns), dir_fd=dir_fd, follow_symlinks=False)
            if mode is not None:
                try:
                    os.chmod(name, mode, dir_fd=dir_fd, follow_symlinks=False)
                except (NotImplementedError, ValueError):  # Linux refuses it for a symlink only: one took the
                    pass  # entry's place (with dir_fd, Python says so with ValueError)

        if path:
            self._in_folder(path, set_them)
        else:  # the root: the folder the operator's path leads to (as rsync gives its mode to dst/ itself)
            if mtime_ns is not None:
                os.utime(self.root, ns=(mtime_ns, mtime_ns))
            if mode is not None:
                os.chmod(self.root, mode)
