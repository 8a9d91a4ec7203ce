"""Nodes, tasks and statuses: plain data shared by every part of the engine."""

from __future__ import annotations

import hashlib
import os
import sys
from typing import Iterator

SRC = "src"
DST = "dst"

FOLDER = "folder"
FILE = "file"
SYMLINK = "symlink"

# Traversal status of a node (both sides).
PENDING = "pending"
IN_PROGRESS = "in_progress"
SUCCESSFUL = "successful"
FAILED = "failed"
EXCLUDED = "excluded"

# Copy status of a SRC node: pending (must copy), successful (copied or already identical),
# skipped (destination newer: kept), failed.
SKIPPED = "skipped"

# What the comparison decided for a SRC entry (and the matching DST entry).
ACTION_COPY = "copy"
ACTION_SKIP = "skip"
ACTION_KEEP_DST_NEWER = "keep_dst_newer"
ACTION_NOT_ON_SRC = "not_on_src"
ACTION_VANISHED = "vanished"  # gone from the source between its listing and its copy: nothing to copy

# DST classification of a listed entry.
IDENTICAL = "identical"
MISSING = "missing"
CHANGED = "changed"
DST_NEWER = "dst_newer"
NOT_ON_SRC = "not_on_src"

MTIME_WINDOW_NS = 2_000_000_000  # FAT and SMB keep 2 s mtimes; closer than this counts as equal
# mtimes in ns as a 64-bit column holds them (1677-2262): one outside is stored as the nearer limit, so it
# cannot be compared with another at that limit, or within MTIME_WINDOW_NS of it
MTIME_NS_MAX, MTIME_NS_MIN = (1 << 63) - 1, -(1 << 63)


def order_unknown(stored_a: int, stored_b: int) -> bool:
    """Two stored mtimes that cannot be compared (which is newer, or whether they are within the window)."""
    high, low = max(stored_a, stored_b), min(stored_a, stored_b)
    return (high == MTIME_NS_MAX and low >= MTIME_NS_MAX - MTIME_WINDOW_NS) or \
        (low == MTIME_NS_MIN and high <= MTIME_NS_MIN + MTIME_WINDOW_NS)

TEMP_SUFFIX = ".migrate-tmp"

# os.fsencode(path) is path.encode("utf-8", "surrogateescape") on a UTF-8 system, minus a Python-level call
FS_UTF8 = os.name == "posix" and sys.getfilesystemencoding() == "utf-8" \
    and sys.getfilesystemencodeerrors() == "surrogateescape"


# One keyed-by-side blake2b state per side, copied per id: cheaper than building the hash object each time.
_ID_HASH = {side: hashlib.blake2b(digest_size=8, person=side.encode()) for side in ("src", "dst")}
_from_bytes = int.from_bytes


def node_id(side: str, path: str) -> int:
    """Deterministic 63-bit id from side and relative path, so a resume finds the same node."""
    base = _ID_HASH.get(side)
    if base is None:
        base = _ID_HASH[side] = hashlib.blake2b(digest_size=8, person=side.encode())
    h = base.copy()
    h.update(path.encode("utf-8", "surrogateescape") if FS_UTF8 else os.fsencode(path))
    return _from_bytes(h.digest(), "big") >> 1


def fs_bytes(path: str) -> bytes:
    """A path as the bytes the filesystem knows it by (os.fsencode, without its cost on UTF-8 systems)."""
    return path.encode("utf-8", "surrogateescape") if FS_UTF8 else os.fsencode(path)


def fs_str(path: bytes) -> str:
    """The inverse of fs_bytes (os.fsdecode, without its cost on UTF-8 systems)."""
    return path.decode("utf-8", "surrogateescape") if FS_UTF8 else os.fsdecode(path)


def join(parent: str, name: str) -> str:
    return f"{parent}/{name}" if parent else name


def parent_of(path: str) -> str:
    return path.rpartition("/")[0]


def name_of(path: str) -> str:
    return path.rpartition("/")[2]


def folders_above(path: str) -> Iterator[str]:
    """The folders a relative path goes through, from the top: 'a', 'a/b' for 'a/b/c' (none for 'a')."""
    end = path.find("/")
    while end != -1:
        yield path[:end]
        end = path.find("/", end + 1)


def display(path: str) -> str:
    """A path an operator can read: undecodable bytes shown as \\xNN escapes."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def not_a_folder_now(path: str, side: str, kind: str) -> str:
    """Why nothing goes through `path` on `side` ('source', 'destination'): a {kind} stands there now."""
    return f"'{unambiguous(path)}' on the {side} is a {kind} now, not a folder"


def unambiguous(path: str) -> str:
    """display(), with a backslash of the name written \\\\: then a name holding the text \\xe9 and one
    holding the byte 0xE9 read differently (the report names each file once)."""
    return os.fsencode(path).replace(b"\\", b"\\\\").decode("utf-8", "backslashreplace")


NAME_MAX = 255  # bytes in one name (Linux filesystems)


TEMP_RANDOM_HEX = 8  # hex digits of randomness in a temporary's name
_TEMP_ROOM = NAME_MAX - TEMP_RANDOM_HEX - len(TEMP_SUFFIX) - 2  # bytes of NAME a temporary's name has room for


def temp_name(name: str, random_hex: str) -> str:
    """What a copy writes before its rename: '.NAME.<random>.migrate-tmp', NAME cut at its end so that the
    whole stays within NAME_MAX bytes (a 255-byte name must still be copyable)."""
    return f".{name_in_temp(name)}.{random_hex}{TEMP_SUFFIX}"


def name_in_temp(name: str) -> str:
    """NAME as a temporary of it names it: cut to the room left (what temp_target gives back)."""
    encoded = fs_bytes(name)
    return fs_str(encoded[:_TEMP_ROOM]) if len(encoded) > _TEMP_ROOM else name


def temp_name_was_cut(name: str) -> bool:
    """A temporary's name that may stand for a longer NAME than temp_target gives back."""
    return len(fs_bytes(name)) == NAME_MAX


# What a DST listing calls a temporary file of ours (engine.listing reports them with the special files):
# one an interrupted copy left behind, removed when the copy phase starts.
OUR_TEMPORARY = "a temporary file of an interrupted copy"
_HEX = frozenset("0123456789abcdef")


def temp_target(name: str) -> str:
    """The NAME a temporary of ours (is_temp_name) was written for (cut at its end for very long names)."""
    return name[1:-len(TEMP_SUFFIX)].rpartition(".")[0]


def is_temp_name(name: str) -> bool:
    """Exactly what temp_name makes (.NAME.<8 hex digits>.migrate-tmp): a user's own '.draft.migrate-tmp'
    is a destination file like any other, never hidden from the comparison nor swept away."""
    if not (name[:1] == "." and name.endswith(TEMP_SUFFIX)):
        return False
    head, dot, random_hex = name[1:-len(TEMP_SUFFIX)].rpartition(".")
    return bool(head) and len(random_hex) == TEMP_RANDOM_HEX and _HEX.issuperset(random_hex)


class Node:
    """One entry of one side. Mutated only under its queue's lock."""

    __slots__ = (
        "id", "parent_id", "path", "depth", "type", "size", "mtime_ns", "mode",
        "status", "copy_status", "action", "src_id", "attempts", "error",
    )

    def __init__(self, id, parent_id, path, depth, type, size, mtime_ns, mode,
                 status=PENDING, copy_status=None, action=None, src_id=None, attempts=0, error=None):
        self.id = id
        self.parent_id = parent_id
        self.path = path
        self.depth = depth
        self.type = type
        self.size = size
        self.mtime_ns = mtime_ns
        self.mode = mode
        self.status = status
        self.copy_status = copy_status
        self.action = action
        self.src_id = src_id
        self.attempts = attempts
        self.error = error

    @property
    def parent_path(self) -> str | None:
        return None if self.depth == 0 else parent_of(self.path)

    @property
    def name(self) -> str:
        return name_of(self.path)

    def __repr__(self) -> str:
        return f"Node({self.type} {self.path!r} d={self.depth} {self.status}/{self.copy_status})"


class Task:
    """A leased unit of work: list one folder, create one folder, or copy one file."""

    __slots__ = ("kind", "node", "round", "attempts", "not_before", "error", "transient", "key")

    def __init__(self, kind: str, node: Node, round: int):
        self.kind = kind
        self.node = node
        self.key = node.id  # the queue's unique key (a node's id never changes); read on every lease/report
        self.round = round
        self.attempts = 0
        self.not_before = 0.0
        self.error = None
        self.transient = False

