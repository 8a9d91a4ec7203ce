"""Local filesystem adapter: os.scandir listings, lstat only, atomic temp-then-rename writes."""

from __future__ import annotations

import os
import secrets
import stat as stat_mod
from typing import BinaryIO

from engine.adapters.base import Entry
from engine.model import FILE, FOLDER, SYMLINK, TEMP_SUFFIX


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

    def abs(self, path: str) -> str:
        return os.path.join(self.root, path) if path else self.root

    def list(self, path: str) -> list[Entry]:
        entries = []
        append = entries.append
        with os.scandir(self.abs(path)) as it:
            for e in it:
                try:
                    st = e.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue  # vanished between readdir and lstat
                kind = _entry_type(st.st_mode)
                if kind is not None:
                    append(Entry(e.name, kind, st.st_size, st.st_mtime_ns, st.st_mode & 0o7777))
        return entries

    def stat(self, path: str) -> Entry | None:
        try:
            st = os.lstat(self.abs(path))
        except FileNotFoundError:
            return None
        except NotADirectoryError:
            return None
        kind = _entry_type(st.st_mode)
        if kind is None:
            return None
        return Entry(os.path.basename(path), kind, st.st_size, st.st_mtime_ns, st.st_mode & 0o7777)

    def open_read(self, path: str) -> BinaryIO:
        return open(self.abs(path), "rb", buffering=0)

    def read_link(self, path: str) -> str:
        return os.readlink(self.abs(path))

    def create_folder(self, path: str, mode: int) -> None:
        os.mkdir(self.abs(path), mode | 0o700)  # owner must be able to fill it

    def _temp_path(self, folder: str, name: str) -> str:
        # Random part per attempt: a reclaimed (hung) attempt can never write into a newer one's file.
        return os.path.join(folder, f".{name}.{secrets.token_hex(4)}{TEMP_SUFFIX}") if folder \
            else f".{name}.{secrets.token_hex(4)}{TEMP_SUFFIX}"

    def create_temp(self, folder: str, name: str) -> tuple[str, BinaryIO]:
        temp = self._temp_path(folder, name)
        fd = os.open(self.abs(temp), os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        return temp, open(fd, "wb", buffering=0)

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

    def set_folder_mtime(self, path: str, mtime_ns: int) -> None:
        os.utime(self.abs(path), ns=(mtime_ns, mtime_ns))
