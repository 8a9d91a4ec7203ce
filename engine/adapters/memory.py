"""In-memory tree for tests: the same protocol as LocalAdapter, with injected latency and faults."""

from __future__ import annotations

import errno
import io
import random
import threading
import time
from dataclasses import dataclass, field

from engine.adapters.base import Entry
from engine.model import FILE, FOLDER, SYMLINK, join, name_of, parent_of, temp_name


@dataclass
class MemEntry:
    type: str
    data: bytes = b""
    mtime_ns: int = 0
    mode: int = 0o644
    target: str = ""


@dataclass
class Faults:
    """What goes wrong, and where. Paths are relative to the adapter root."""

    permanent: dict[str, OSError] = field(default_factory=dict)  # fails every time
    transient_times: dict[str, int] = field(default_factory=dict)  # EIO this many times, then works
    transient_rate: float = 0.0  # any list/read fails with EIO at this probability
    hang_seconds: dict[str, float] = field(default_factory=dict)  # first call on path stalls this long
    latency: float = 0.0  # every list/read sleeps this long (a slow mount)
    stat_errors: dict[str, OSError] = field(default_factory=dict)  # stat fails (lost permission since listed)
    seed: int = 0


class _Reader(io.RawIOBase):
    def __init__(self, data: bytes):
        self._buf = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        return self._buf.readinto(b)


class _Writer(io.RawIOBase):
    def __init__(self, adapter: MemoryAdapter, path: str):
        self._adapter, self._path, self._chunks = adapter, path, []

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:
        self._chunks.append(bytes(b))
        return len(b)

    def close(self) -> None:
        if not self.closed:
            with self._adapter._lock:
                entry = self._adapter.entries.get(self._path)
                if entry is not None:
                    entry.data = b"".join(self._chunks)
                    entry.mtime_ns = time.time_ns()
        super().close()


class MemoryAdapter:
    kind = "memory"

    def __init__(self, faults: Faults | None = None):
        self.entries: dict[str, MemEntry] = {"": MemEntry(FOLDER, mode=0o755)}
        self.faults = faults or Faults()
        self._rng = random.Random(self.faults.seed)
        self._lock = threading.Lock()
        self._hung: set[str] = set()
        self.calls: list[tuple[str, str]] = []  # (operation, path): lets tests prove what was touched

    # building trees in tests
    def add_folder(self, path: str, mtime_ns: int = 1_600_000_000_000_000_000, mode: int = 0o755) -> None:
        parent = parent_of(path)
        if path and parent not in self.entries:
            self.add_folder(parent)
        self.entries[path] = MemEntry(FOLDER, mtime_ns=mtime_ns, mode=mode)

    def add_file(self, path: str, data: bytes = b"", mtime_ns: int = 1_600_000_000_000_000_000,
                 mode: int = 0o644) -> None:
        if parent_of(path) not in self.entries:
            self.add_folder(parent_of(path))
        self.entries[path] = MemEntry(FILE, data=data, mtime_ns=mtime_ns, mode=mode)

    def _inject(self, op: str, path: str) -> None:
        self.calls.append((op, path))
        f = self.faults
        if f.latency:
            time.sleep(f.latency)
        if path in f.hang_seconds and path not in self._hung:
            self._hung.add(path)
            time.sleep(f.hang_seconds[path])
        if path in f.permanent:
            raise f.permanent[path]
        with self._lock:
            left = f.transient_times.get(path, 0)
            if left:
                f.transient_times[path] = left - 1
                raise OSError(errno.EIO, "Input/output error (injected)", path)
            if f.transient_rate and self._rng.random() < f.transient_rate:
                raise OSError(errno.EIO, "Input/output error (injected)", path)

    def _get(self, path: str) -> MemEntry:
        entry = self.entries.get(path)
        if entry is None:
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", path)
        return entry

    def list(self, path: str, specials: list | None = None) -> list[Entry]:  # holds no special files
        self._inject("list", path)
        folder = self._get(path)
        if folder.type != FOLDER:
            raise NotADirectoryError(errno.ENOTDIR, "Not a directory", path)
        with self._lock:
            items = [(p, e) for p, e in self.entries.items() if p and parent_of(p) == path]
        return [Entry(name_of(p), e.type, len(e.target) if e.type == SYMLINK else len(e.data),
                      e.mtime_ns, e.mode) for p, e in items]

    def stat(self, path: str, exact_mtime: bool = False) -> Entry | None:  # exact always
        if path in self.faults.stat_errors:
            raise self.faults.stat_errors[path]
        e = self.entries.get(path)
        if e is None:
            return None
        size = len(e.target) if e.type == SYMLINK else len(e.data)
        return Entry(name_of(path), e.type, size, e.mtime_ns, e.mode)

    def open_read(self, path: str):
        self._inject("read", path)
        return _Reader(self._get(path).data)

    def read_link(self, path: str) -> str:
        return self._get(path).target

    @staticmethod
    def made_mode(mode: int) -> int:
        """The mode create_folder(path, mode) leaves: that one."""
        return mode

    def create_folder(self, path: str, mode: int) -> None:
        self._inject("mkdir", path)
        with self._lock:
            if path in self.entries:
                raise FileExistsError(errno.EEXIST, "File exists", path)
            if parent_of(path) not in self.entries:
                raise FileNotFoundError(errno.ENOENT, "No such file or directory", parent_of(path))
            self.entries[path] = MemEntry(FOLDER, mode=mode)

    def _temp_name(self, folder: str, name: str) -> str:
        return join(folder, temp_name(name, f"{self._rng.getrandbits(32):08x}"))

    def create_temp(self, folder: str, name: str):
        self._inject("write", join(folder, name))
        temp = self._temp_name(folder, name)
        with self._lock:
            if folder not in self.entries:
                raise FileNotFoundError(errno.ENOENT, "No such file or directory", folder)
            self.entries[temp] = MemEntry(FILE, mode=0o600)
        return temp, _Writer(self, temp)

    def create_temp_link(self, folder: str, name: str, target: str) -> str:
        temp = self._temp_name(folder, name)
        with self._lock:
            self.entries[temp] = MemEntry(SYMLINK, target=target)
        return temp

    def commit_temp(self, temp_path: str, final_path: str, mtime_ns: int, mode: int | None,
                    keep=None) -> object:
        with self._lock:
            if keep is not None:
                verdict = keep(self.stat(final_path))
                if verdict is not None:
                    return verdict
            entry = self._get(temp_path)
            existing = self.entries.get(final_path)
            if existing is not None and existing.type == FOLDER:
                raise IsADirectoryError(errno.EISDIR, "Is a directory", final_path)
            entry.mtime_ns = mtime_ns
            if mode is not None:
                entry.mode = mode
            self.entries[final_path] = self.entries.pop(temp_path)
        return None

    def remove(self, path: str) -> None:
        with self._lock:
            self.entries.pop(path, None)

    def set_attributes(self, path: str, mtime_ns: int | None, mode: int | None) -> None:
        entry = self._get(path)
        if entry.type == SYMLINK:
            return
        if mtime_ns is not None:
            entry.mtime_ns = mtime_ns
        if mode is not None:
            entry.mode = mode
