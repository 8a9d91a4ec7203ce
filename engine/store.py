"""The DuckDB file of a run: schema, seals, rehydration, inspection and reports. The only SQL here."""

from __future__ import annotations

from array import array
import ctypes
import functools
import itertools
import json
import os
from operator import attrgetter
import re
import sys
import threading
import time
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import duckdb

# pyarrow's own jemalloc (not used: the system pool below) starts a background thread; where no thread can
# start (a limit on processes and threads) it printed a line on stderr each time it tried, thousands a run
os.environ.setdefault("JE_ARROW_MALLOC_CONF", "background_thread:false")
import pyarrow as pa  # noqa: E402

from engine import crashpoints
from engine.errors import UserError
from engine.cache import FileRows, LevelCache
from engine.listing import FILE_KINDS, IDS, KINDS, MODES, MTIMES, PATH_SIZES, ROW_WIDTHS, SIZES, path_bytes
from engine.model import (
    ACTION_COPY, DST, EXCLUDED, FOLDER, MTIME_NS_MAX, MTIME_NS_MIN, MTIME_WINDOW_NS, PENDING, SRC, SUCCESSFUL, Node,
    fs_bytes, fs_str,
)

# Arrow's default allocator (jemalloc/mimalloc) keeps the column buffers of every seal cached; with the
# system allocator and a trim after each seal they go back to the OS (measured: -40 MB peak, 100k run).
pa.set_memory_pool(pa.system_memory_pool())
try:
    _malloc_trim = ctypes.CDLL("libc.so.6").malloc_trim
except (OSError, AttributeError):  # not glibc
    _malloc_trim = None

APP = "migrate-tui"
QUEUE_STATS_FLUSH_S = 2.0
CHECKPOINT_THRESHOLD = "256MB"
# DuckDB's default is 122,880 rows. Smaller, a seal's insert fills row groups, which DuckDB writes straight
# to the file instead of through the WAL and again at the checkpoint: 100k dry run 2.38 -> 2.15 s (close
# 0.21 -> 0.06 s), the file 15 -> 26 MB (2,048: 2.10 s but 40 MB)
ROW_GROUP_SIZE = 4096
RUN_CATALOG = "run_file"  # the run file, attached under this name to an in-memory DuckDB (for ROW_GROUP_SIZE)
SCHEMA_VERSION = 1
DUCKDB_MAGIC = b"DUCK"  # bytes 8..12 of every DuckDB database file

NODE_COLUMNS = {
    SRC: ("id", "parent_id", "path", "parent_path", "depth", "type", "size", "mtime_ns", "mode",
          "traversal_status", "copy_status", "action", "attempts", "error"),
    DST: ("id", "parent_id", "path", "parent_path", "depth", "type", "size", "mtime_ns", "mode",
          "traversal_status", "match", "src_id", "attempts", "error"),
}

_NODE_TABLE = """CREATE TABLE {side}_nodes (
    id BIGINT, parent_id BIGINT, path BLOB, parent_path BLOB, depth INTEGER, type VARCHAR,
    size BIGINT, mtime_ns BIGINT, mode INTEGER, traversal_status VARCHAR, {extra},
    attempts INTEGER, error VARCHAR)"""

SCHEMA = [
    "CREATE TABLE meta (key VARCHAR, value VARCHAR)",
    """CREATE TABLE run (src_root BLOB, dst_root BLOB, settings VARCHAR, phase VARCHAR, dry_run BOOLEAN,
       created_at DOUBLE, updated_at DOUBLE, finished_at DOUBLE, elapsed_s DOUBLE)""",
    _NODE_TABLE.format(side=SRC, extra="copy_status VARCHAR, action VARCHAR"),
    _NODE_TABLE.format(side=DST, extra='"match" VARCHAR, src_id BIGINT'),
    *[f"""CREATE TABLE {side}_stats (depth INTEGER, pending BIGINT, successful BIGINT, failed BIGINT,
          completed BIGINT, copy_pending BIGINT, copy_successful BIGINT, copy_failed BIGINT,
          copy_skipped BIGINT, sealed_at DOUBLE)""" for side in (SRC, DST)],
    "CREATE TABLE queue_stats (queue VARCHAR, ts DOUBLE, metrics VARCHAR)",
    """CREATE TABLE task_errors (side VARCHAR, phase VARCHAR, path BLOB, message VARCHAR,
       attempts INTEGER, ts DOUBLE)""",
]

# Our temporaries a DST listing found (an interrupted copy's), committed with the seal of the round that
# listed them: the copy removes them however the run is taken up, in whichever process (a dry run's plan
# copied, a traversal resumed). A file from before this table is given it with its first such seal.
TEMPORARIES_TABLE = "CREATE TABLE IF NOT EXISTS dst_temporaries (path BLOB)"

STATS_COLUMNS = ("depth", "pending", "successful", "failed", "completed",
                 "copy_pending", "copy_successful", "copy_failed", "copy_skipped")


@dataclass(frozen=True)
class RunInfo:
    src_root: str
    dst_root: str
    settings: dict
    phase: str
    dry_run: bool
    created_at: float
    finished_at: float | None
    elapsed_s: float


@dataclass(frozen=True)
class DeadLetter:
    side: str
    phase: str
    path: str
    message: str
    attempts: int
    time: float


def _fs(path: str | None) -> bytes | None:
    return None if path is None else os.fsencode(path)


def _explain_open_error(path: str, exc: Exception) -> UserError:
    text = str(exc)
    if "lock" in text.lower():
        pid = re.search(r"PID (\d+)", text)
        holder = f" (process {pid.group(1)})" if pid else ""
        return UserError(f"'{path}' is open in another migrate or migrate-tui{holder}; "
                         "wait for it to finish or close it first")
    return UserError(f"'{path}' is not a readable DuckDB database ({text.splitlines()[0]}); "
                     "give a new --db path or restore the file")


def _can_write(path: str) -> bool:
    """The run file and its folder, where DuckDB writes its log beside it (a symlink's target's)."""
    real = os.path.realpath(path)
    return os.access(real, os.W_OK) and os.access(os.path.dirname(real), os.W_OK | os.X_OK)


def not_writable(path: str) -> UserError | None:
    """The refusal of a command that would write an existing run file this user cannot write (None: it may)."""
    if not os.path.exists(path) or _can_write(path):
        return None
    return UserError(f"'{path}' cannot be written here (it, or its folder, where DuckDB writes its log beside "
                     "it, is read-only to this user); run as its owner or copy it somewhere writable")


def out_of_memory(exc: BaseException) -> UserError | None:
    """DuckDB's out-of-memory error (a paragraph of advice) as one line naming the setting to raise."""
    if not isinstance(exc, duckdb.OutOfMemoryException):
        return None
    used = re.search(r"\(([^()]*used)\)", str(exc))
    return UserError("the run file's DuckDB ran out of memory" + (f" ({used.group(1)})" if used else "")
                     + ": raise duckdb_memory_limit (e.g. --duckdb-memory-limit 2GB)")


class Store:
    """One DuckDB file. Every call takes one lock: DuckDB connections are not thread-safe, and the
    writes are few (one transaction per seal, one small insert per observer tick)."""

    def __init__(self, path: str, con: duckdb.DuckDBPyConnection, read_only: bool = False):
        self.path = path
        self._con = con
        self.read_only = read_only  # attached READ_ONLY: whatever its permissions are now, never written
        self._lock = threading.RLock()
        # a connection of its own for the reads a run loop waits on (engine.sealer commits on _con meanwhile:
        # DuckDB lets a reader see the last commit while a writer works, without waiting for it)
        self._reader: duckdb.DuckDBPyConnection | None = None
        self._reader_lock = threading.Lock()
        self.write_log: list[tuple[str, str]] = []  # (kind, thread name): tests prove who wrote when
        self._queue_stats: list[tuple[str, float, str]] = []  # observer rows not written yet
        self._queue_stats_since = 0.0
        # the run's time so far, written with every transaction while set (engine.migration, while it runs)
        self.elapsed_clock: Callable[[], float] | None = None

    # opening ---------------------------------------------------------------------------------------

    @staticmethod
    def check_file(path: str) -> bool:
        """Refuse a file that is not ours before DuckDB opens it read-write (and could touch it). True: a
        DuckDB file without a single table, as a run killed while creating its file leaves it (the schema
        is made in one transaction): there is nothing in it to lose, and it becomes a new run file."""
        try:
            with open(path, "rb") as f:
                head = f.read(12)
        except PermissionError:
            raise UserError(f"cannot read '{path}': permission denied")
        except IsADirectoryError:
            raise UserError(f"'{path}' is a folder; give a file path for --db")
        if len(head) < 12 or head[8:12] != DUCKDB_MAGIC:
            raise UserError(f"'{path}' is not a DuckDB database (corrupt or another kind of file); "
                            "give a new --db path")
        try:
            con = duckdb.connect(path, read_only=True)
        except Exception as exc:  # noqa: BLE001 - duckdb raises several types; all mean "not usable"
            raise _explain_open_error(path, exc) from None
        try:
            tables = {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
            if not tables:
                return True
            if "meta" not in tables:
                raise UserError(f"'{path}' is a DuckDB database of another program, not a migrate-tui run; "
                                "give a new --db path")
            meta = dict(con.execute("SELECT key, value FROM meta").fetchall())
            for table in ("run", "src_nodes", "dst_nodes", "src_stats", "dst_stats", "task_errors"):
                con.execute(f"SELECT count(*) FROM {table}").fetchall()  # reads every block: finds truncation
        except duckdb.Error as exc:
            raise UserError(f"'{path}' is damaged ({str(exc).splitlines()[0]}); give a new --db path "
                            "or restore the file") from None
        finally:
            con.close()
        if meta.get("app") != APP:
            raise UserError(f"'{path}' is a DuckDB database of another program, not a migrate-tui run")
        try:
            version = int(meta.get("schema_version", "0"))
        except (TypeError, ValueError):  # not a schema this version ever wrote: '2.1', 'v3', NULL, ...
            raise UserError(f"'{path}' has schema version {meta['schema_version']!r}, which this migrate-tui "
                            f"(schema {SCHEMA_VERSION}) does not know; open it with the version that wrote it, "
                            "or give a new --db path") from None
        if version > SCHEMA_VERSION:
            raise UserError(f"'{path}' was written by a newer migrate-tui (schema {version}, this one reads "
                            f"{SCHEMA_VERSION}); upgrade migrate-tui")
        return False

    @classmethod
    def open(cls, path: str, memory_limit: str = "1GB", threads: int = 2) -> "Store":
        """Open an existing run file (validated first) or create a new one."""
        path = os.fspath(path)
        if not path or path.startswith(":memory:"):  # DuckDB's names for a database that is never written
            what = "is empty" if not path else f"'{path}' names no file"
            raise UserError(f"the run file path {what}; give --db a file, e.g. --db run.duckdb")
        exists = os.path.exists(path)
        if exists:
            exists = not cls.check_file(path)
            if not exists and not _can_write(path):  # nothing to look at, and it cannot become a run file
                raise UserError(f"'{path}' holds no run yet (a run was killed as it made the file), and it cannot be "
                                "written here (it, or its folder, is read-only to this user)")
        else:
            parent = os.path.dirname(os.path.abspath(path))
            if not os.path.isdir(parent):
                raise UserError(f"cannot create '{path}': folder '{parent}' does not exist")
            if not os.access(parent, os.W_OK | os.X_OK):
                raise UserError(f"cannot create '{path}': folder '{parent}' is not writable; give --db a path "
                                "in a folder you can write")
        try:
            # DuckDB checkpoints when the WAL passes 16 MB, inside whichever commit crosses it: a seal then
            # took 300-750 ms instead of 30 (100k run). Seals are few and large, so let the WAL grow; close()
            # checkpoints, and a crash replays the WAL on the next open.
            con = duckdb.connect(config={"memory_limit": memory_limit, "threads": threads,
                                         "checkpoint_threshold": CHECKPOINT_THRESHOLD})
            quoted = path.replace("'", "''")
            # one this user cannot write is only looked at: read-write, DuckDB would fail to open it, or write
            # a killed run's log (.wal) into it on the way (store.writable refuses whatever would write)
            read_only = exists and not _can_write(path)
            con.execute(f"ATTACH '{quoted}' AS {RUN_CATALOG} "
                        f"({'READ_ONLY' if read_only else f'ROW_GROUP_SIZE {ROW_GROUP_SIZE}'})")
            con.execute(f"USE {RUN_CATALOG}")
        except Exception as exc:  # noqa: BLE001
            raise _explain_open_error(path, exc) from None
        store = cls(path, con, read_only)
        if not exists:
            with store._lock:
                con.execute("BEGIN")
                for statement in SCHEMA:
                    con.execute(statement)
                con.executemany("INSERT INTO meta VALUES (?, ?)",
                                [("app", APP), ("schema_version", str(SCHEMA_VERSION))])
                con.execute("COMMIT")
        return store

    def writable(self) -> bool:
        """May this process write the run file and, beside it, DuckDB's log (.wal)? Looking at a run needs
        neither."""
        return not self.read_only and _can_write(self.path)

    def require_writable(self) -> None:
        """UserError unless writable(): found before a command writes, not as DuckDB's error at its first
        commit."""
        if self.read_only and _can_write(self.path):  # made writable since it was opened, to look at
            raise UserError(f"'{self.path}' was opened read-only, when it could not be written; open it again "
                            "(quit and run the command again) to write it")
        refusal = not_writable(self.path)
        if refusal is not None:
            raise refusal

    def configure(self, memory_limit: str, threads: int) -> None:
        """DuckDB's memory limit and threads, for the statements from now on."""
        with self._lock:
            self._con.execute("SET memory_limit = ?", [memory_limit])
            self._con.execute("SET threads = ?", [threads])

    def _read(self, sql: str, params: Sequence) -> list[tuple]:
        with self._reader_lock:
            if self._reader is None:
                with self._lock:
                    self._reader = self._con.cursor()
                self._reader.execute(f"USE {RUN_CATALOG}")  # a cursor starts in DuckDB's in-memory catalog
            return self._reader.execute(sql, params).fetchall()

    def close(self) -> None:
        with self._reader_lock:
            if self._reader is not None:
                self._reader.close()
                self._reader = None
        with self._lock:
            try:
                self._flush_queue_stats()
                self._con.execute("CHECKPOINT")
            except duckdb.Error:
                pass
            self._con.close()

    def _log(self, kind: str) -> None:
        self.write_log.append((kind, threading.current_thread().name))

    # the run ---------------------------------------------------------------------------------------

    def start_run(self, src_root: str, dst_root: str, settings: dict, dry_run: bool, roots: tuple[Node, Node],
                  root_identities: dict[str, str | None]) -> None:
        """A new run in this file, in ONE transaction: an earlier run's nodes forgotten, the run's row, the two
        roots and their stats, the root folders' identities. Killed part-way, the file holds the earlier run
        or none; a run row without its roots was taken for a finished run with nothing to copy."""

        def body(con):
            con.execute(TEMPORARIES_TABLE)
            for table in ("src_nodes", "dst_nodes", "src_stats", "dst_stats", "task_errors", "queue_stats",
                          "dst_temporaries"):
                con.execute(f"DELETE FROM {table}")
            now = time.time()
            con.execute("DELETE FROM run")
            con.execute("INSERT INTO run VALUES (?, ?, ?, 'traversal', ?, ?, ?, NULL, 0)",
                        [_fs(src_root), _fs(dst_root), json.dumps(settings), dry_run, now, now])
            # plain statements: building Arrow tables (pyarrow's first use) cost ~20 ms more on every start
            for side, root in zip((SRC, DST), roots):
                row = [getattr(root, a) for a in self._NODE_ATTRS[side]]
                row[2] = fs_bytes(row[2])
                row.insert(3, None)  # parent_path: a root has none
                con.execute(f"INSERT INTO {side}_nodes VALUES ({', '.join('?' * len(row))})", row)
                self._refresh_stats(side, [0])
            self._store_root_identities(con, root_identities)

        self._transaction("seal", body, {})

    def run_info(self) -> RunInfo | None:
        with self._lock:
            rows = self._con.execute("SELECT src_root, dst_root, settings, phase, dry_run, created_at, "
                                     "finished_at, elapsed_s FROM run").fetchall()
        if not rows:
            return None
        row = rows[0]
        return RunInfo(os.fsdecode(row[0]), os.fsdecode(row[1]), json.loads(row[2]), row[3], bool(row[4]),
                       row[5], row[6], row[7] or 0.0)

    def set_phase(self, phase: str, elapsed_s: float | None = None, dry_run: bool | None = None) -> None:
        with self._lock:
            self._log("run")
            now = time.time()
            finished = now if phase in ("done", "planned") else None
            self._con.execute("UPDATE run SET phase = ?, updated_at = ?, finished_at = ?, "
                              "elapsed_s = coalesce(?, elapsed_s), dry_run = coalesce(?, dry_run)",
                              [phase, now, finished, elapsed_s, dry_run])

    def set_settings(self, settings: dict) -> None:
        with self._lock:
            self._log("run")
            self._con.execute("UPDATE run SET settings = ?", [json.dumps(settings)])

    def set_root_identities(self, identities: dict[str, str | None]) -> None:
        """The root folders this run compares (and copies into), per side, as engine.validate.folder_identity
        gives them (None: no folder there yet)."""
        with self._lock:
            self._con.execute("BEGIN")
            self._store_root_identities(self._con, identities)
            self._con.execute("COMMIT")

    @staticmethod
    def _store_root_identities(con, identities: dict[str, str | None]) -> None:
        for side, identity in identities.items():
            con.execute("DELETE FROM meta WHERE key = ?", [f"{side}_root_folder"])
            if identity is not None:
                con.execute("INSERT INTO meta VALUES (?, ?)", [f"{side}_root_folder", identity])

    def root_identities(self) -> dict[str, str]:
        rows = self._read("SELECT key, value FROM meta WHERE key IN ('src_root_folder', 'dst_root_folder')", [])
        return {key.partition("_")[0]: value for key, value in rows}

    # nodes -----------------------------------------------------------------------------------------

    # Node attributes in column order (parent_path is derived from path), and their Arrow types.
    _NODE_ATTRS = {
        SRC: ("id", "parent_id", "path", "depth", "type", "size", "mtime_ns", "mode", "status",
              "copy_status", "action", "attempts", "error"),
        DST: ("id", "parent_id", "path", "depth", "type", "size", "mtime_ns", "mode", "status",
              "action", "src_id", "attempts", "error"),
    }
    _NODE_TYPES = {
        SRC: (pa.int64(), pa.int64(), None, pa.int32(), pa.string(), pa.int64(), pa.int64(), pa.int32(),
              pa.string(), pa.string(), pa.string(), pa.int32(), pa.string()),
        DST: (pa.int64(), pa.int64(), None, pa.int32(), pa.string(), pa.int64(), pa.int64(), pa.int32(),
              pa.string(), pa.string(), pa.int64(), pa.int32(), pa.string()),
    }

    SEAL_BATCH = 16_384  # rows converted to Arrow at a time: a big level never exists twice in full

    @classmethod
    def _node_schema(cls, side: str) -> pa.Schema:
        types = [pa.binary() if t is None else t for t in cls._NODE_TYPES[side]]
        types.insert(3, pa.binary())  # parent_path
        return pa.schema(list(zip(NODE_COLUMNS[side], types)))

    @classmethod
    def _file_schema(cls, side: str) -> pa.Schema:
        """The node schema as file_batch encodes it: the per-folder columns dictionaries over the folders
        (int32 indices), kinds and statuses over their few values (uint8): DuckDB reads the plain types."""
        per_folder = {"parent_id", "parent_path", "depth"}
        coded = {"type", "traversal_status", "copy_status", "action"}
        return pa.schema([
            (f.name, pa.dictionary(pa.int32(), f.type) if f.name in per_folder else
             pa.dictionary(pa.uint8(), f.type) if f.name in coded else f.type) for f in cls._node_schema(side)])

    @classmethod
    def _node_batches(cls, side: str, nodes: Sequence[Node]) -> Iterator[pa.RecordBatch]:
        """Nodes as Arrow record batches: a column at a time (attrgetter), the paths encoded once."""
        schema, attrs = cls._node_schema(side), cls._NODE_ATTRS[side]
        for start in range(0, len(nodes), cls.SEAL_BATCH):
            chunk = nodes[start:start + cls.SEAL_BATCH]
            cols = [list(map(attrgetter(a), chunk)) for a in attrs]
            paths = [fs_bytes(p) for p in cols[2]]
            cols[2] = paths
            cols.insert(3, [None if d == 0 else p.rpartition(b"/")[0] for p, d in zip(paths, cols[3])])
            yield pa.RecordBatch.from_arrays([pa.array(c, f.type) for c, f in zip(cols, schema)], schema=schema)

    # Built once: making an Arrow scalar from Python objects goes through a failing `import` of an
    # optional module (~40 us each time).
    _FILE_KINDS = pa.array(FILE_KINDS, pa.string())
    _FILE_STATUSES = {status: pa.array([status, EXCLUDED], pa.string())  # index 1: an excluded row
                      for status in (SUCCESSFUL, PENDING, ACTION_COPY)}
    _ZERO_SCALAR = pa.scalar(0, pa.int32())

    @classmethod
    def file_batch(cls, side: str, pieces: Sequence[list]) -> pa.RecordBatch:
        """File rows (engine.cache.FileRows pieces: [files, excluded_rows, start, stop, parents]) as ONE Arrow
        record batch of the node schema, with no Python object per row: each column is the pieces' buffers
        joined (one copy), the per-folder columns, kinds and statuses dictionary encoded (_file_schema):
        DuckDB decodes them as it inserts. No pyarrow.compute (importing it cost ~26 ms of a run's start);
        no run-end encoded arrays either: DuckDB 1.1-1.3 read them as zeros and 1.4.0 and 1.5.0 abort."""
        n = sum(p[3] - p[2] for p in pieces)

        def joined(index: int) -> bytes:
            width = ROW_WIDTHS[index]
            return b"".join(memoryview(files[index])[start * width:stop * width]
                            for files, _, start, stop, _ in pieces)

        def fixed(index: int, type_: pa.DataType) -> pa.Array:
            return pa.Array.from_buffers(type_, n, [None, pa.py_buffer(joined(index))])

        def coded(codes: bytes, dictionary: pa.Array) -> pa.Array:
            return pa.DictionaryArray.from_buffers(pa.dictionary(pa.uint8(), dictionary.type), n,
                                                   [None, pa.py_buffer(codes)], dictionary)

        parents = [parent for piece in pieces for parent in piece[4]]
        # each row's folder (its index in parents): the per-folder columns are dictionaries over the parents
        folder_of_row = pa.py_buffer(b"".join(k.to_bytes(4, sys.byteorder) * p[3] for k, p in enumerate(parents)))

        def per_folder(values: list, type_: pa.DataType) -> pa.Array:
            return pa.DictionaryArray.from_buffers(pa.dictionary(pa.int32(), type_), n, [None, folder_of_row],
                                                   pa.array(values, type_))

        # ~5 ms for 60,000 rows, in C but for an int object per row
        path_offsets = array("i", itertools.accumulate(memoryview(joined(PATH_SIZES)).cast("i"), initial=0))
        path_blob = b"".join(path_bytes(files, start, stop) for files, _, start, stop, _ in pieces)
        arrays = [
            fixed(IDS, pa.int64()),
            per_folder([p[0] for p in parents], pa.int64()),
            pa.Array.from_buffers(pa.binary(), n, [None, pa.py_buffer(path_offsets), pa.py_buffer(path_blob)]),
            per_folder([fs_bytes(p[1]) for p in parents], pa.binary()),
            per_folder([p[2] for p in parents], pa.int32()),
            coded(joined(KINDS), cls._FILE_KINDS),
            fixed(SIZES, pa.int64()),
            fixed(MTIMES, pa.int64()),
            fixed(MODES, pa.int32()),
        ]
        exclusions = None  # 0 for a row that is kept, 1 for one that is excluded (the index of EXCLUDED)
        if any(p[1] for p in pieces):
            exclusions = b"".join(bytes(stop - start) if rows is None else rows[start:stop]
                                  for _, rows, start, stop, _ in pieces)

        def status(value: str) -> pa.Array:  # `value`, or EXCLUDED where a row is excluded
            return coded(exclusions or bytes(n), cls._FILE_STATUSES[value])

        arrays.append(status(SUCCESSFUL))
        if side == SRC:  # copy_status and action: to copy, unless excluded
            arrays += [status(PENDING), status(ACTION_COPY)]
        else:  # match and src_id: decided by the seal's comparison with SRC
            arrays += [pa.nulls(n, pa.string()), pa.nulls(n, pa.int64())]
        arrays += [pa.repeat(cls._ZERO_SCALAR, n), pa.nulls(n, pa.string())]  # attempts, error
        return pa.RecordBatch.from_arrays(arrays, schema=cls._file_schema(side))

    @classmethod
    def _file_batches(cls, side: str, rows: FileRows) -> Iterator[pa.RecordBatch]:
        """A level's file rows as Arrow, SEAL_BATCH rows at a time or so (a FileRows piece is never split):
        a big level never exists twice in full."""
        group, grouped = [], 0
        for piece in rows.pieces:
            group.append(piece)
            grouped += piece[3] - piece[2]
            if grouped >= cls.SEAL_BATCH:
                yield cls.file_batch(side, group)
                group, grouped = [], 0
        if group:
            yield cls.file_batch(side, group)

    @classmethod
    def _node_table(cls, side: str, nodes: Sequence[Node]) -> pa.Table:
        """For statements that read the nodes more than once."""
        return pa.Table.from_batches(list(cls._node_batches(side, nodes)), schema=cls._node_schema(side))

    @staticmethod
    def _errors_table(side: str, phase: str, letters: Sequence[tuple[str, str, int]]) -> pa.Table:
        now = time.time()
        return pa.table({
            "side": pa.array([side] * len(letters), pa.string()),
            "phase": pa.array([phase] * len(letters), pa.string()),
            "path": pa.array([os.fsencode(p) for p, _, _ in letters], pa.binary()),
            "message": pa.array([m for _, m, _ in letters], pa.string()),
            "attempts": pa.array([a for _, _, a in letters], pa.int32()),
            "ts": pa.array([now] * len(letters), pa.float64()),
        })

    def _refresh_stats(self, side: str, depths: Sequence[int]) -> None:
        """Per-depth stats, counted by DuckDB from the rows just written (inside the caller's transaction)."""
        copy = ("count(*) FILTER (copy_status = 'pending'), count(*) FILTER (copy_status = 'successful'), "
                "count(*) FILTER (copy_status = 'failed'), count(*) FILTER (copy_status = 'skipped')"
                if side == SRC else "0, 0, 0, 0")
        # the depths as literals (integers) rather than `IN (SELECT unnest(?))`, which DuckDB plans as a
        # join: the stats statements of a 100k dry run took 0.10 s of CPU that way, 0.07 s like this
        depths = ", ".join(str(int(d)) for d in depths)
        self._con.execute(f"DELETE FROM {side}_stats WHERE depth IN ({depths})")
        self._con.execute(
            f"INSERT INTO {side}_stats SELECT depth, "
            "count(*) FILTER (traversal_status IN ('pending', 'in_progress')), "
            "count(*) FILTER (traversal_status = 'successful'), count(*) FILTER (traversal_status = 'failed'), "
            f"count(*) FILTER (traversal_status IN ('successful', 'failed')), {copy}, epoch(now()) "
            f"FROM {side}_nodes WHERE depth IN ({depths}) GROUP BY depth")

    def _transaction(self, kind: str, body, tables: dict[str, pa.Table]) -> None:
        """Run body(con) in one transaction, with the Arrow tables visible to SQL under their names."""
        with self._lock:
            self._log(kind)
            con = self._con
            for name, table in tables.items():
                con.register(name, table)
            con.execute("BEGIN")
            try:
                body(con)
                if self.elapsed_clock is not None:  # a killed run keeps the time it ran, to the last seal
                    con.execute("UPDATE run SET elapsed_s = ?, updated_at = ?", [self.elapsed_clock(), time.time()])
                self._flush_queue_stats()
                crashpoints.hit(kind)  # a kill here leaves the transaction uncommitted
                con.execute("COMMIT")
                crashpoints.hit(f"{kind}ed")
            except BaseException:
                con.execute("ROLLBACK")
                raise
            finally:
                for name in tables:
                    con.unregister(name)
                tables.clear()  # the last references to the column buffers: free them now, not at the next seal
                if _malloc_trim is not None:
                    _malloc_trim(0)

    def seal_traversal(self, side: str, depth: int, level: LevelCache, next_level: LevelCache,
                       errors: Sequence[tuple[str, str, int]], phase: str = "traversal") -> None:
        """Seal a round now (see prepare_traversal_seal)."""
        self.prepare_traversal_seal(side, depth, level, next_level, errors, phase)()

    # a traversal seal's new level: its folders (made from Nodes) and its files (from the listings' buffers)
    _NEW_LEVEL = "SELECT * FROM folders_tbl UNION ALL SELECT * FROM files_tbl"

    def prepare_traversal_seal(self, side: str, depth: int, level: LevelCache, next_level: LevelCache,
                               errors: Sequence[tuple[str, str, int]], phase: str = "traversal",
                               temporaries: Sequence[str] = ()) -> Callable[[], None]:
        """The seal of a round as Arrow tables built now, from the levels as they are at this moment (the
        next level's folders change once listed), and the commit of it, to call later on any thread
        (engine.sealer). The commit writes ONE transaction: the final statuses of the level's folders (the
        level itself was written by the previous seal, as its next level, and only folders are ever
        listed), the next level's discovered nodes (so a crash resumes there; DST's compared with SRC on
        the way in), the dead letters, the temporaries of ours DST's listings found, and the stats of the
        depths touched."""
        folders = [n for n in level.nodes_as_listed() if n.type == FOLDER]
        listed = list(next_level.nodes_as_listed())
        tables = {"folders_tbl": pa.Table.from_batches(list(self._node_batches(side, listed)),
                                                       schema=self._node_schema(side)),
                  "files_tbl": pa.Table.from_batches(list(self._file_batches(side, next_level.files)),
                                                     schema=self._file_schema(side)),
                  "level_upd": pa.table({
                      "id": pa.array([n.id for n in folders], pa.int64()),
                      "traversal_status": pa.array([n.status for n in folders], pa.string()),
                      "attempts": pa.array([n.attempts for n in folders], pa.int32()),
                      "error": pa.array([n.error for n in folders], pa.string()),
                      **({"copy_status": pa.array([n.copy_status for n in folders], pa.string()),
                          "action": pa.array([n.action for n in folders], pa.string())} if side == SRC else {})}),
                  "errors_tbl": self._errors_table(side, phase, errors),
                  "temporaries_tbl": self._paths_table(temporaries)}
        has_next = bool(listed) or bool(len(next_level.files))
        has_folders, has_errors = bool(folders), bool(errors)

        def body(con):
            if has_folders:
                decided = ", copy_status = u.copy_status, action = u.action" if side == SRC else ""  # vanished
                con.execute(f"UPDATE {side}_nodes SET traversal_status = u.traversal_status, "
                            f"attempts = u.attempts, error = u.error{decided} FROM level_upd u "
                            f"WHERE {side}_nodes.depth = ? AND {side}_nodes.id = u.id", [depth])
            con.execute(f"DELETE FROM {side}_nodes WHERE depth = ?", [depth + 1])
            if has_next and side == DST:
                self._insert_classified_dst(depth + 1)
            elif has_next:
                con.execute(f"INSERT INTO {side}_nodes {self._NEW_LEVEL}")
            if has_errors:
                con.execute("INSERT INTO task_errors SELECT * FROM errors_tbl")
            self._record_temporaries(con, temporaries)
            self._refresh_stats(side, [d for d in (depth, depth + 1) if d >= 0])

        return functools.partial(self._transaction, "seal", body, tables)

    @staticmethod
    def _paths_table(paths: Sequence[str]) -> pa.Table:
        return pa.table({"path": pa.array([os.fsencode(p) for p in paths], pa.binary())})

    @staticmethod
    def _record_temporaries(con, temporaries: Sequence[str]) -> None:
        if temporaries:
            con.execute(TEMPORARIES_TABLE)
            con.execute("INSERT INTO dst_temporaries SELECT path FROM temporaries_tbl")

    def found_temporaries(self) -> list[str]:
        """The temporaries of ours DST's listings found in this run (see TEMPORARIES_TABLE)."""
        with self._lock:
            if not self._con.execute("SELECT 1 FROM information_schema.tables WHERE table_catalog = ? AND "
                                     "table_name = 'dst_temporaries'", [RUN_CATALOG]).fetchall():
                return []
            return [os.fsdecode(p) for (p,) in
                    self._con.execute("SELECT DISTINCT path FROM dst_temporaries ORDER BY path").fetchall()]

    def forget_temporaries(self) -> None:
        """The copy has removed what it found of them (found_temporaries found some: the table exists)."""
        self._transaction("temporaries", lambda con: con.execute("DELETE FROM dst_temporaries"), {})

    def seal_by_id(self, side: str, depth: int, level: Sequence[Node], next_level: Sequence[Node],
                   errors: Sequence[tuple[str, str, int]], relisted: Sequence[str],
                   temporaries: Sequence[str] = ()) -> None:
        """Seal a retry round: the cache holds only the nodes retried, so rows are replaced by id. A SRC
        folder listed now sends its DST counterpart back to pending, its stale DST children forgotten."""
        tables = {"nodes_tbl": self._node_table(side, [*level, *next_level]),
                  "errors_tbl": self._errors_table(side, "retry", errors),
                  "relisted_tbl": self._paths_table(relisted), "temporaries_tbl": self._paths_table(temporaries)}

        def body(con):
            con.execute(f"DELETE FROM {side}_nodes WHERE id IN (SELECT id FROM nodes_tbl)")
            con.execute(f"INSERT INTO {side}_nodes SELECT * FROM nodes_tbl")
            if errors:
                con.execute("INSERT INTO task_errors SELECT * FROM errors_tbl")
            self._record_temporaries(con, temporaries)
            if side == DST and next_level:
                self._classify_dst(depth + 1)
            if relisted:
                con.execute("DELETE FROM dst_nodes WHERE depth = ? AND parent_path IN (SELECT path FROM relisted_tbl)",
                            [depth + 1])
                con.execute("UPDATE dst_nodes SET traversal_status = 'pending' WHERE depth = ? AND type = 'folder' "
                            "AND path IN (SELECT path FROM relisted_tbl)", [depth])
                self._refresh_stats(DST, [depth, depth + 1])
            self._refresh_stats(side, [depth, depth + 1])

        self._transaction("seal", body, tables)

    # The comparison of a DST entry (t) with the SRC entry at its path (s; NULL when SRC has none), for a
    # whole level at once. It must agree with engine.workers.classify (the live mirror's, one at a time).
    # mtimes meet in HUGEINT: a file dated after 2262 is stored as BIGINT's maximum, and adding the window
    # to it overflowed (the run failed, and every resume with it). Two stored at the same limit cannot be
    # ordered (model.order_unknown): 'copy', and the copy compares the exact dates before writing anything.
    # model.order_unknown of DST entry t and SRC entry s
    _ORDER_UNKNOWN = f"""((greatest(t.mtime_ns, s.mtime_ns) = {MTIME_NS_MAX}
                           AND least(t.mtime_ns, s.mtime_ns) >= {MTIME_NS_MAX - MTIME_WINDOW_NS})
                          OR (least(t.mtime_ns, s.mtime_ns) = {MTIME_NS_MIN}
                              AND greatest(t.mtime_ns, s.mtime_ns) <= {MTIME_NS_MIN + MTIME_WINDOW_NS}))"""
    _DST_MATCH = f"""CASE WHEN s.id IS NULL THEN 'not_on_src'
                 WHEN s.traversal_status = 'excluded' OR s.copy_status = 'excluded' THEN 'excluded'
                 WHEN t.type <> s.type AND s.type = 'folder' THEN 'copy'
                 WHEN t.type = 'folder' AND s.type = 'folder' THEN 'skip'
                 WHEN {_ORDER_UNKNOWN} THEN 'copy'
                 WHEN t.type = s.type AND t.size = s.size
                      AND abs(t.mtime_ns::HUGEINT - s.mtime_ns) <= {MTIME_WINDOW_NS} THEN 'skip'
                 WHEN t.mtime_ns > s.mtime_ns::HUGEINT + {MTIME_WINDOW_NS} THEN 'keep_dst_newer'
                 ELSE 'copy' END"""
    # a DST folder is listed only where SRC has a folder too (TraversalMode decides the same in memory)
    _DST_STATUS = """CASE WHEN s.id IS NULL THEN
                      CASE WHEN t.traversal_status = 'excluded' THEN 'excluded' ELSE 'successful' END
                 WHEN s.traversal_status = 'excluded' OR s.copy_status = 'excluded' THEN 'excluded'
                 WHEN t.type = 'folder' AND s.type = 'folder' THEN 'pending'
                 ELSE 'successful' END"""
    _SRC_AT_SAME_PATH = "LEFT JOIN src_nodes s ON s.depth = $depth AND s.path = t.path"

    def _insert_classified_dst(self, depth: int) -> None:
        """Insert a traversal's new DST level compared already: one pass, no update after."""
        columns = ", ".join(f"t.{c}" for c in NODE_COLUMNS[DST][:9])
        self._con.execute(f"""INSERT INTO dst_nodes SELECT {columns}, {self._DST_STATUS}, {self._DST_MATCH},
                              s.id, t.attempts, t.error FROM ({self._NEW_LEVEL}) t {self._SRC_AT_SAME_PATH}""",
                          {"depth": depth})
        self._decide_src_copies(depth, f"SELECT src_id, \"match\" FROM dst_nodes WHERE depth = {int(depth)}")

    def _classify_dst(self, depth: int) -> None:
        """Compare the DST entries of `depth` not compared yet (a retry round's) with the SRC entries at the
        same paths (committed already: the sealer commits DST's seal after SRC's of the next round)."""
        con = self._con
        con.execute(f"""CREATE OR REPLACE TEMP TABLE classified AS
                        SELECT t.id, s.id AS src_id, {self._DST_MATCH} AS "match", {self._DST_STATUS} AS status
                        FROM dst_nodes t {self._SRC_AT_SAME_PATH}
                        WHERE t.depth = $depth AND t."match" IS NULL""", {"depth": depth})
        con.execute('UPDATE dst_nodes SET "match" = c."match", src_id = c.src_id, traversal_status = c.status '
                    "FROM classified c WHERE dst_nodes.depth = ? AND dst_nodes.id = c.id", [depth])
        self._decide_src_copies(depth, "SELECT src_id, \"match\" FROM classified")
        con.execute("DROP TABLE classified")

    def _decide_src_copies(self, depth: int, compared: str) -> None:
        """SRC entries found identical on DST need no copy; those newer on DST are kept (skipped)."""
        self._con.execute("UPDATE src_nodes SET copy_status = CASE c.\"match\" WHEN 'skip' THEN 'successful' "
                          f"ELSE 'skipped' END, action = c.\"match\" FROM ({compared}) c WHERE src_nodes.depth = ? "
                          "AND src_nodes.id = c.src_id AND c.\"match\" IN ('skip', 'keep_dst_newer')", [depth])
        self._refresh_stats(SRC, [depth])

    def src_folder_statuses(self, depth: int) -> dict[str, str]:
        """The SRC folders of a depth and their traversal statuses: which DST folders there to list."""
        rows = self._read("SELECT path, traversal_status FROM src_nodes WHERE depth = ? AND type = 'folder'", [depth])
        return {fs_str(path): status for path, status in rows}

    def in_the_way(self, limit: int = 5) -> tuple[int, int, list[tuple[str, str, str]]]:
        """Entries to copy that DST has something else in the way of, which the copy will refuse: a file or
        symlink where SRC has a folder, a folder (not newer) where SRC has a file. (how many, how many
        entries to copy below those folders, which fail with them, first few as (path, DST type, SRC type))."""
        where = f"""FROM src_nodes s JOIN dst_nodes t ON t.src_id = s.id
                    WHERE s.copy_status IN ('pending', 'in_progress') AND t.type <> s.type AND (s.type = 'folder'
                    OR (t.type = 'folder' AND t.mtime_ns <= s.mtime_ns::HUGEINT + {MTIME_WINDOW_NS}))"""
        # below a blocked folder, level by level through parent_path (paths are bytes: no prefix test)
        below = f"""WITH RECURSIVE under(path, deeper) AS (
                        SELECT s.path, false {where} AND s.type = 'folder'
                        UNION ALL SELECT c.path, true FROM src_nodes c JOIN under u ON c.parent_path = u.path
                        WHERE c.copy_status IN ('pending', 'in_progress'))
                    SELECT count(*) FILTER (deeper) FROM under"""
        with self._lock:
            count = self._con.execute(f"SELECT count(*) {where}").fetchall()[0][0]
            if not count:
                return 0, 0, []
            under = self._con.execute(below).fetchall()[0][0]
            rows = self._con.execute(f"SELECT s.path, t.type, s.type {where} ORDER BY s.depth, s.path LIMIT ?",
                                     [limit]).fetchall()
        return count, under, [(os.fsdecode(p), dst_type, src_type) for p, dst_type, src_type in rows]

    def failed_src_folders(self) -> dict[str, str]:
        """The SRC folders that could not be made on DST, with their reasons."""
        rows = self._read("SELECT path, error FROM src_nodes WHERE type = 'folder' AND copy_status = 'failed'", [])
        return {fs_str(path): error or "" for path, error in rows}

    def seal_copy(self, depth: int, nodes: Sequence[Node], errors: Sequence[tuple[str, str, int]]) -> None:
        """Seal one copy round: copy statuses (and decisions) of the round's nodes, stats, dead letters."""
        tables = {"upd": pa.table({
            "id": pa.array([n.id for n in nodes], pa.int64()),
            "copy_status": pa.array([n.copy_status for n in nodes], pa.string()),
            "action": pa.array([n.action for n in nodes], pa.string()),
            "size": pa.array([n.size for n in nodes], pa.int64()),
            "attempts": pa.array([n.attempts for n in nodes], pa.int32()),
            "error": pa.array([n.error for n in nodes], pa.string()),
        }), "errors_tbl": self._errors_table(SRC, "copy", errors)}

        def body(con):  # size: a file's as copied (engine.modes.copy), the source may have changed since
            con.execute("UPDATE src_nodes SET copy_status = upd.copy_status, action = upd.action, size = upd.size, "
                        "attempts = upd.attempts, error = upd.error FROM upd "
                        "WHERE src_nodes.id = upd.id AND src_nodes.depth = ?", [depth])
            if errors:
                con.execute("INSERT INTO task_errors SELECT * FROM errors_tbl")
            self._refresh_stats(SRC, [depth])

        self._transaction("seal", body, tables)

    def load_level(self, side: str, depth: int, where: str = "", params: Sequence = ()) -> list[Node]:
        """Rehydrate the nodes of one depth (optionally filtered) into Node objects."""
        cols = NODE_COLUMNS[side]
        select = ", ".join(c for c in cols if c != "parent_path")
        with self._lock:
            rows = self._con.execute(f"SELECT {select} FROM {side}_nodes WHERE depth = ? {where} ORDER BY id",
                                     [depth, *params]).fetchall()
        fsdecode = os.fsdecode
        if side == SRC:
            return [Node(r[0], r[1], fsdecode(r[2]), r[3], r[4], r[5], r[6], r[7], r[8], r[9], r[10],
                         None, r[11], r[12]) for r in rows]
        return [Node(r[0], r[1], fsdecode(r[2]), r[3], r[4], r[5], r[6], r[7], r[8], None, r[9], r[10],
                     r[11], r[12]) for r in rows]

    # inspection ------------------------------------------------------------------------------------

    def min_depth(self, side: str, where: str, params: Sequence = ()) -> int | None:
        with self._lock:
            return self._con.execute(f"SELECT min(depth) FROM {side}_nodes WHERE {where}", list(params)).fetchall()[0][0]

    def max_depth(self, side: str) -> int:
        with self._lock:
            return self._con.execute(f"SELECT coalesce(max(depth), 0) FROM {side}_nodes").fetchall()[0][0]

    def count(self, side: str, where: str = "true", params: Sequence = ()) -> int:
        with self._lock:
            return self._con.execute(f"SELECT count(*) FROM {side}_nodes WHERE {where}", list(params)).fetchall()[0][0]

    def sum_size(self, where: str, params: Sequence = ()) -> int:
        with self._lock:
            return int(self._con.execute(f"SELECT coalesce(sum(size), 0) FROM src_nodes WHERE {where}",
                                         list(params)).fetchall()[0][0])

    def grouped(self, side: str, columns: str) -> list[tuple]:
        """Counts (and SRC bytes) grouped by the given columns: one scan, counted by SQL."""
        with self._lock:
            return self._con.execute(f"SELECT {columns}, count(*), coalesce(sum(size), 0) FROM {side}_nodes "
                                     f"GROUP BY ALL").fetchall()

    def source_paths(self, paths: Sequence[str], files_only: bool = False) -> set[str]:
        """Those of paths that are source entries of the run (files_only: files and symlinks, what a copy
        writes a temporary for)."""
        if not paths:
            return set()
        kind = " AND type <> 'folder'" if files_only else ""
        with self._lock:
            rows = self._con.execute(f"SELECT path FROM src_nodes WHERE path IN (SELECT unnest(?::BLOB[])){kind}",
                                     [[os.fsencode(p) for p in paths]]).fetchall()
        return {os.fsdecode(p) for (p,) in rows}

    def source_paths_in(self, folder: str, files_only: bool = False) -> list[str]:
        """The paths of the source entries directly in `folder` (files_only: as source_paths)."""
        kind = " AND type <> 'folder'" if files_only else ""
        return [os.fsdecode(p) for (p,) in self._read(f"SELECT path FROM src_nodes WHERE parent_path = ?{kind}",
                                                      [os.fsencode(folder)])]

    def pending_copy_folders(self) -> list[str]:
        """DST folders where files are still to be copied: where an interrupted copy left temporaries."""
        with self._lock:
            rows = self._con.execute("SELECT DISTINCT parent_path FROM src_nodes WHERE depth > 0 AND type <> 'folder' "
                                     "AND copy_status IN ('pending', 'in_progress')").fetchall()
        return [os.fsdecode(r[0]) for r in rows]

    # A SRC entry that is on DST (copied or found identical), beside what DST's traversal saw at its path
    # (nothing for a folder the copy made: it was not there).
    _ON_DST = """FROM src_nodes s LEFT JOIN dst_nodes t ON t.src_id = s.id AND t.type = s.type
                 WHERE s.depth > 0 AND s.copy_status = 'successful' AND s.type <> 'symlink'"""
    _OWNER_RWX = 0o700

    def folders_to_open(self) -> list[tuple[str, None, int]]:
        """DST folders, as far as the run knows them, without owner rwx where the copy still has entries to
        write: (path, None, the mode to write into them with). rsync opens them the same way for the copy
        and restores them after; as root the missing bits would not matter."""
        with self._lock:
            rows = self._con.execute(f"""
                SELECT s.path, coalesce(t.mode, s.mode) | {self._OWNER_RWX} {self._ON_DST} AND s.type = 'folder'
                AND coalesce(t.mode, s.mode) & {self._OWNER_RWX} <> {self._OWNER_RWX}
                AND s.path IN (SELECT parent_path FROM src_nodes WHERE copy_status IN ('pending', 'in_progress'))
                ORDER BY s.depth""").fetchall()
        return [(os.fsdecode(p), None, m) for p, m in rows]

    def attributes_to_restore(self, made_with: Callable[[str, int], bool]
                              ) -> list[tuple[str, int | None, int | None]]:
        """What rsync -a would still set once the copy is done, deepest first: (path, mtime_ns or None, mode
        or None). Folders get the source's mtime where DST's differs or the copy wrote into them, and its
        mode where it differs from what DST's traversal saw, or from what the copy made (unless
        made_with(path, mode): folders are made with owner rwx, under the umask), or when it was opened
        (folders_to_open); files found identical get the source's mode where it differs (and those the copy
        compared itself, their dates being past what the run file holds). Symlinks and
        entries kept because they are newer on DST are left as they are, and so are folders the traversal
        could not list: the retry that lists them fills them first (as their owner) and sets them after."""
        with self._lock:
            rows = self._con.execute(f"""
                SELECT path, mtime_ns, mode, made FROM (
                    SELECT s.path, s.depth, t.mode IS NULL AS made,
                        CASE WHEN s.type = 'folder' AND (t.mtime_ns IS DISTINCT FROM s.mtime_ns OR s.path IN (
                                SELECT parent_path FROM src_nodes WHERE action NOT IN ('skip', 'excluded')))
                             THEN s.mtime_ns END AS mtime_ns,
                        CASE WHEN t.mode IS DISTINCT FROM s.mode OR (s.type = 'folder'
                                AND s.mode & {self._OWNER_RWX} <> {self._OWNER_RWX}) THEN s.mode END AS mode
                    {self._ON_DST} AND (s.type = 'folder' OR s.action = 'skip'
                                         OR (s.type = 'file' AND t.size = s.size AND {self._ORDER_UNKNOWN}))
                        AND s.traversal_status <> 'failed')
                WHERE mtime_ns IS NOT NULL OR mode IS NOT NULL ORDER BY depth DESC""").fetchall()
        changes = []
        for path, mtime_ns, mode, made in rows:
            if made and mode is not None and made_with(os.fsdecode(path), mode):
                mode = None  # made with that mode already
            if mtime_ns is not None or mode is not None:
                changes.append((os.fsdecode(path), mtime_ns, mode))
        return changes

    def duplicate_ids(self, side: str) -> int:
        with self._lock:
            return self._con.execute(f"SELECT count(*) - count(DISTINCT id) FROM {side}_nodes").fetchall()[0][0]

    def stats(self, side: str) -> list[tuple]:
        with self._lock:
            return self._con.execute(f"SELECT {', '.join(STATS_COLUMNS)} FROM {side}_stats ORDER BY depth").fetchall()

    def dead_letters(self, limit: int | None = None) -> list[DeadLetter]:
        sql = "SELECT side, phase, path, message, attempts, ts FROM task_errors ORDER BY ts"
        if limit:
            sql = f"SELECT * FROM ({sql} DESC LIMIT {int(limit)}) ORDER BY ts"
        with self._lock:
            rows = self._con.execute(sql).fetchall()
        return [DeadLetter(r[0], r[1], os.fsdecode(r[2]), r[3], r[4], r[5]) for r in rows]

    def dead_letter_count(self) -> int:
        with self._lock:
            return self._con.execute("SELECT count(*) FROM task_errors").fetchall()[0][0]

    # observer --------------------------------------------------------------------------------------

    def write_queue_stats(self, rows: Sequence[tuple[str, float, dict]]) -> None:
        """Rows are kept and written with the next seal's transaction, or on their own once the oldest is
        QUEUE_STATS_FLUSH_S old: a commit of its own per tick cost 20-60 ms under a busy run (the WAL
        flush), most of it with DuckDB's write lock that the next seal then waits for."""
        with self._lock:
            if not self._queue_stats:
                self._queue_stats_since = time.monotonic()
            self._queue_stats.extend((q, ts, json.dumps(m)) for q, ts, m in rows)
            if time.monotonic() - self._queue_stats_since >= QUEUE_STATS_FLUSH_S:
                self._log("queue_stats")
                con = self._con
                con.execute("BEGIN")
                self._flush_queue_stats()
                if self.elapsed_clock is not None:  # a run killed in a long round (big files) keeps its time
                    con.execute("UPDATE run SET elapsed_s = ?, updated_at = ?", [self.elapsed_clock(), time.time()])
                con.execute("COMMIT")

    def _flush_queue_stats(self) -> None:
        """Under the lock, inside or outside a transaction: one statement for every row kept."""
        rows, self._queue_stats = self._queue_stats, []
        if rows:  # one statement, not executemany: it holds the store lock half as long
            self._con.execute("INSERT INTO queue_stats VALUES " + ", ".join(["(?, ?, ?)"] * len(rows)),
                              [v for row in rows for v in row])

    def latest_queue_stats(self) -> dict[str, dict]:
        with self._lock:
            self._flush_queue_stats()
            rows = self._con.execute("SELECT queue, arg_max(metrics, ts) FROM queue_stats GROUP BY queue").fetchall()
        return {q: json.loads(m) for q, m in rows}

    # retry -----------------------------------------------------------------------------------------

    def reset_for_retry(self) -> None:
        """Failed traversals and copies go back to pending, so the retry rounds pick them up; the run's phase
        becomes 'retry' in the same transaction: killed right after, a finished run whose failures were
        forgotten (its dead letters deleted) would say 'done, 0 failed' with those entries never copied."""
        with self._lock:
            self._log("retry")
            con = self._con
            con.execute("BEGIN")
            con.execute("UPDATE run SET phase = 'retry', updated_at = ?, finished_at = NULL", [time.time()])
            for side in (SRC, DST):
                con.execute(f"UPDATE {side}_nodes SET traversal_status = 'pending', attempts = 0, error = NULL "
                            "WHERE traversal_status IN ('failed', 'in_progress')")
            con.execute("UPDATE src_nodes SET copy_status = 'pending', attempts = 0, error = NULL "
                        "WHERE copy_status IN ('failed', 'in_progress')")
            con.execute("DELETE FROM task_errors")
            con.execute("COMMIT")
            crashpoints.hit("retry-reset")  # a kill here: the run file says a retry was interrupted

    # live mirror -----------------------------------------------------------------------------------

    MIRROR_SCHEMA = pa.schema([("ts", pa.float64()), ("batch", pa.int64()), ("event", pa.string()),
                               ("path", pa.binary()), ("type", pa.string()), ("size", pa.int64()),
                               ("mtime_ns", pa.int64()), ("outcome", pa.string()), ("error", pa.string())])

    def ensure_mirror_table(self) -> None:
        with self._lock:
            self._con.execute("CREATE TABLE IF NOT EXISTS mirror_events (ts DOUBLE, batch BIGINT, event VARCHAR, "
                              "path BLOB, type VARCHAR, size BIGINT, mtime_ns BIGINT, outcome VARCHAR, "
                              "error VARCHAR)")
            # where the mirror's batch under way copies (kind: a 'file', a 'folder', a 'tree' with every folder
            # below): where a watch killed mid-copy left its temporaries, for the next one to remove
            # (engine.watch.Mirror.sweep_killed_copies)
            self._con.execute("CREATE TABLE IF NOT EXISTS mirror_writing (path BLOB, kind VARCHAR)")

    def mirror_writing(self) -> list[tuple[str, str]]:
        with self._lock:
            return [(os.fsdecode(p), kind) for p, kind in self._con.execute(
                "SELECT DISTINCT path, kind FROM mirror_writing ORDER BY path").fetchall()]

    def add_mirror_writing(self, places: Sequence[tuple[str, str]]) -> None:
        """Committed before the batch's first copy into these (path, kind)."""
        self._transaction("mirror", lambda con: con.executemany(
            "INSERT INTO mirror_writing VALUES (?, ?)", [(os.fsencode(p), kind) for p, kind in places]), {})

    def clear_mirror_writing(self) -> None:
        self._transaction("mirror", lambda con: con.execute("DELETE FROM mirror_writing"), {})

    def last_mirror_batch(self) -> int:
        with self._lock:
            return self._con.execute("SELECT coalesce(max(batch), 0) FROM mirror_events").fetchall()[0][0]

    def record_mirror_events(self, rows: Sequence[tuple]) -> None:
        """One bulk insert per batch: rows of (ts, batch, event, path bytes, type, size, mtime_ns, outcome,
        error)."""
        if not rows:
            return
        schema = self.MIRROR_SCHEMA
        table = pa.Table.from_arrays([pa.array(col, type=f.type) for col, f in zip(zip(*rows), schema)],
                                     schema=schema)
        self._transaction("mirror", lambda con: con.execute("INSERT INTO mirror_events SELECT * FROM mirror_rows"),
                          {"mirror_rows": table})

    def mirror_outcomes(self) -> dict[str, int]:
        """How many changes the live mirror recorded, per outcome (empty: it never ran on this file)."""
        with self._lock:
            if not self._con.execute("SELECT count(*) FROM information_schema.tables "
                                     "WHERE table_name = 'mirror_events'").fetchall()[0][0]:
                return {}
            rows = self._con.execute("SELECT outcome, count(*) FROM mirror_events GROUP BY outcome "
                                     "ORDER BY count(*) DESC, outcome").fetchall()
        return dict(rows)

    def mirror_events(self) -> list[tuple[int, str, str, str]]:
        """(batch, event, path, outcome) of every change the live mirror handled, in order."""
        with self._lock:
            rows = self._con.execute("SELECT batch, event, path, outcome FROM mirror_events ORDER BY ts").fetchall()
        return [(b, e, os.fsdecode(p), o) for b, e, p, o in rows]

    def unreported_deletions(self, paths: Sequence[str]) -> list[str]:
        """Of these paths, gone from the source, those the run or the mirror last left on DST as copies of it
        (copied, found identical, folder made): their deletion has not been recorded yet."""
        if not paths:
            return []
        blobs = [os.fsencode(p) for p in paths]
        with self._lock:
            rows = self._con.execute(
                "SELECT path FROM ("
                "  SELECT path, outcome FROM ("
                "    SELECT path, outcome, ts FROM mirror_events WHERE path IN (SELECT unnest(?::BLOB[]))"
                "    UNION ALL"
                "    SELECT path, 'copied', -1 FROM src_nodes"
                "    WHERE copy_status = 'successful' AND path IN (SELECT unnest(?::BLOB[]))"
                "  ) QUALIFY row_number() OVER (PARTITION BY path ORDER BY ts DESC) = 1"
                ") WHERE outcome IN ('copied', 'identical', 'folder_created')", [blobs, blobs]).fetchall()
        return sorted(os.fsdecode(p) for (p,) in rows)

    def reported_deletions(self, paths: Sequence[str]) -> set[str]:
        """Of these paths, those whose deletion the mirror recorded last (deleted or kept on DST, or reported
        on SRC): nothing has been on the source under that name since."""
        if not paths:
            return set()
        blobs = [os.fsencode(p) for p in paths]
        with self._lock:
            rows = self._con.execute(
                "SELECT path FROM mirror_events WHERE path IN (SELECT unnest(?::BLOB[])) "
                "QUALIFY row_number() OVER (PARTITION BY path ORDER BY ts DESC) = 1 "
                "AND outcome IN ('deleted_on_src', 'deleted_on_dst', 'kept_on_dst')", [blobs]).fetchall()
        return {os.fsdecode(p) for (p,) in rows}

    def known_source_mtimes(self, paths: Sequence[str]) -> dict[str, int]:
        """The last source version the run or the mirror copied (or found identical), per path."""
        if not paths:
            return {}
        blobs = [os.fsencode(p) for p in paths]
        with self._lock:
            rows = self._con.execute(
                "SELECT path, mtime_ns FROM ("
                "  SELECT path, mtime_ns, ts, 1 AS pri FROM mirror_events"
                "  WHERE outcome IN ('copied', 'identical', 'folder_created') AND path IN (SELECT unnest(?::BLOB[]))"
                "  UNION ALL"
                "  SELECT path, mtime_ns, 0, 0 FROM src_nodes"
                "  WHERE copy_status = 'successful' AND path IN (SELECT unnest(?::BLOB[]))"
                ") QUALIFY row_number() OVER (PARTITION BY path ORDER BY pri DESC, ts DESC) = 1",
                [blobs, blobs]).fetchall()
        return {os.fsdecode(p): m for p, m in rows}

    # reports ---------------------------------------------------------------------------------------

    def report_rows(self, failed_only: bool = False) -> Iterator[tuple]:
        """(side, path, type, size, traversal_status, action, copy_status, error) for every entry."""
        failed = "n.traversal_status = 'failed' OR n.copy_status = 'failed'"
        # A root is no entry of its own, unless it failed: then it is why nothing below it was migrated.
        where_src = f"WHERE (n.depth > 0 OR n.traversal_status = 'failed')" + (f" AND ({failed})" if failed_only else "")
        where_dst = "WHERE (n.depth > 0 OR n.traversal_status = 'failed')" + \
            (" AND n.traversal_status = 'failed'" if failed_only else "")
        # A failed entry's reason is its row's error, or else its last dead letter: a folder that could not
        # be listed is still created on DST, and that copy's seal leaves the row's error empty.
        sql = (f"WITH last_error AS (SELECT side, path, arg_max(message, ts) AS message FROM task_errors "
               f"GROUP BY side, path) "
               f"SELECT 'src', n.path, n.type, n.size, n.traversal_status, n.action, n.copy_status, "
               f"CASE WHEN {failed} THEN coalesce(n.error, e.message) ELSE n.error END, n.depth "
               f"FROM src_nodes n LEFT JOIN last_error e ON e.side = 'src' AND e.path = n.path {where_src} "
               f"UNION ALL "
               f"SELECT 'dst', n.path, n.type, n.size, n.traversal_status, n.\"match\", NULL, "
               f"CASE WHEN n.traversal_status = 'failed' THEN coalesce(n.error, e.message) ELSE n.error END, "
               f"n.depth FROM dst_nodes n LEFT JOIN last_error e ON e.side = 'dst' AND e.path = n.path {where_dst} "
               f"ORDER BY 1 DESC, 9, 2")
        with self._lock:
            cur = self._con.cursor()
        try:
            cur.execute(f"USE {RUN_CATALOG}")  # a cursor starts in DuckDB's in-memory catalog
            cur.execute(sql)
            while True:
                rows = cur.fetchmany(10_000)
                if not rows:
                    break
                for r in rows:
                    yield (r[0], os.fsdecode(r[1]), *r[2:8])
        finally:
            cur.close()
