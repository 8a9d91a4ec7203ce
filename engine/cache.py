"""LevelCache / NodeCache: the BFS levels a queue holds in memory between seals."""

from __future__ import annotations

from collections import defaultdict
from typing import Iterable

from engine.listing import FILE_KINDS, IDS, KINDS, MODES, MTIMES, SIZES, file_paths
from engine.model import EXCLUDED, IN_PROGRESS, PENDING, SUCCESSFUL, Node


class FileRows:
    """The files (and symlinks) a traversal discovered for one level, as the listings' raw columns.

    Only folders are ever traversal tasks, so files need no Node of their own until somebody asks for
    one, nor any Python object per row: the seal makes Arrow of many listings' buffers at once
    (engine.store.Store.file_batch). Buffers are shared by the folders listed together, and only the rows
    of the folders whose completion counted are kept (a stale report's are not): a piece is a row range
    of one batch's buffers, grown while that batch's folders complete one after another."""

    __slots__ = ("pieces", "_last_piece", "rows", "counts")

    def __init__(self):
        # [files, excluded_rows, start, stop, parents]: parents are (id, path, depth, rows) of the folders
        # whose rows these are, in order (see engine.workers.Listing)
        self.pieces: list[list] = []
        self._last_piece: dict[int, list] = {}  # id(files) -> its latest piece (pieces keep `files` alive)
        self.rows = 0
        self.counts: dict[str, int] = defaultdict(int)

    def __len__(self) -> int:
        return self.rows

    def add(self, listing) -> None:
        """Keep a listing's file rows (engine.workers.Listing)."""
        files, start, n, folder = listing.files, listing.start, listing.count, listing.parent
        parent = (folder.id, folder.path, folder.depth + 1, n)
        piece = self._last_piece.get(id(files))
        if piece is not None and piece[3] == start:
            piece[3] += n
            piece[4].append(parent)
        else:
            piece = self._last_piece[id(files)] = [files, listing.excluded_rows, start, start + n, [parent]]
            self.pieces.append(piece)
        self.rows += n
        self.counts[SUCCESSFUL] += n - listing.excluded
        if listing.excluded:
            self.counts[EXCLUDED] += listing.excluded

    def columns(self) -> "FileColumns":
        """Every row as Python columns (for lookups: rare)."""
        columns = FileColumns()
        for files, excluded_rows, start, stop, parents in self.pieces:
            for name, (index, code) in FileColumns.FROM_BUFFERS.items():
                getattr(columns, name).extend(memoryview(files[index]).cast(code)[start:stop])
            columns.paths += file_paths(files, start, stop)
            for parent_id, _, _, n in parents:
                columns.parent_ids += [parent_id] * n
            columns.statuses += [EXCLUDED if excluded_rows and excluded_rows[i] else SUCCESSFUL
                                 for i in range(start, stop)]
        columns.kinds = [FILE_KINDS[k] for k in columns.kinds]
        return columns


class FileColumns:
    """File rows as Python lists, one per column: what a Node of a file row is made from."""

    # the columns read straight from the buffers: (FileBuffers index, array type code)
    FROM_BUFFERS = {"ids": (IDS, "q"), "kinds": (KINDS, "B"), "sizes": (SIZES, "q"), "mtimes": (MTIMES, "q"),
                    "modes": (MODES, "i")}
    __slots__ = ("ids", "parent_ids", "paths", "kinds", "sizes", "mtimes", "modes", "statuses")

    def __init__(self):
        for name in self.__slots__:
            setattr(self, name, [])


class LevelCache:
    """One BFS level, indexed so that every lookup costs O(result), never O(level).

    Files a traversal discovered live in `files` (raw columns) until a lookup by id, path, parent or copy
    status, or `nodes()`, needs them as Nodes: then they are turned into Nodes once and indexed like
    the rest.

    by_id and the traversal-status index are kept on every put; the path, parent-path and copy-status
    indexes are built on first use and kept from then on, so a level nobody looks up that way (a
    traversal never reads copy statuses from its cache) costs no time or memory for them."""

    __slots__ = ("depth", "by_id", "_by_path", "_by_parent", "by_status", "_by_copy", "files", "_file_node")

    def __init__(self, depth: int, file_node=None):
        self.depth = depth
        self.files = FileRows()
        # (FileColumns, index, depth) -> Node: how this level's side makes a Node of a file row when one is needed
        self._file_node = file_node
        self.by_id: dict[int, Node] = {}
        self._by_path: dict[str, Node] | None = None
        self._by_parent: dict[str, list[Node]] | None = None
        # status -> {id: node}; dicts keep insertion order, so pulls are first-discovered-first
        self.by_status: dict[str, dict[int, Node]] = defaultdict(dict)
        self._by_copy: dict[str, dict[int, Node]] | None = None

    def __len__(self) -> int:
        return len(self.by_id) + len(self.files)

    def add_files(self, listing) -> None:
        self.files.add(listing)
        if self._by_path is not None or self._by_parent is not None or self._by_copy is not None:
            self._materialize()  # somebody looks files up here: keep the indexes whole

    def _materialize(self) -> None:
        """Turn the file rows into Nodes, indexed like every other node (once; lookups by id/path need it)."""
        if not len(self.files):
            return
        if self._file_node is None:
            raise AssertionError("this level was given file rows without a way to make Nodes of them")
        rows, self.files = self.files.columns(), FileRows()
        for i in range(len(rows.ids)):
            self.put(self._file_node(rows, i, self.depth))

    @property
    def by_path(self) -> dict[str, Node]:
        self._materialize()
        if self._by_path is None:
            self._by_path = {n.path: n for n in self.by_id.values()}
        return self._by_path

    @property
    def by_parent(self) -> dict[str, list[Node]]:
        self._materialize()
        if self._by_parent is None:
            index = self._by_parent = defaultdict(list)
            for n in self.by_id.values():
                if n.depth:
                    index[n.path.rpartition("/")[0]].append(n)
        return self._by_parent

    @property
    def by_copy(self) -> dict[str, dict[int, Node]]:
        """copy status -> {id: node}, in put order like by_status."""
        self._materialize()
        if self._by_copy is None:
            index = self._by_copy = defaultdict(dict)
            for key, n in self.by_id.items():
                if n.copy_status is not None:
                    index[n.copy_status][key] = n
        return self._by_copy

    def put(self, node: Node) -> bool:
        """Add a node; False (and nothing changed) when its id is already here: keys are unique."""
        by_id, key = self.by_id, node.id
        if key in by_id:
            return False
        by_id[key] = node
        if self._by_path is not None:
            self._by_path[node.path] = node
        if self._by_parent is not None and node.depth:
            self._by_parent[node.path.rpartition("/")[0]].append(node)
        self.by_status[node.status][key] = node
        if self._by_copy is not None and node.copy_status is not None:
            self._by_copy[node.copy_status][key] = node
        return True

    def put_all(self, nodes: Iterable[Node]) -> int:
        return sum(map(self.put, nodes))

    def get(self, node_id: int) -> Node | None:
        node = self.by_id.get(node_id)
        if node is None and len(self.files):
            self._materialize()
            node = self.by_id.get(node_id)
        return node

    def get_by_path(self, path: str) -> Node | None:
        return self.by_path.get(path)

    def children_of(self, parent_path: str) -> list[Node]:
        return self.by_parent.get(parent_path, [])

    def set_status(self, node: Node, status: str) -> None:
        if node.status != status:
            del self.by_status[node.status][node.id]
            node.status = status
            self.by_status[status][node.id] = node

    def set_copy_status(self, node: Node, status: str) -> None:
        if node.copy_status != status:
            if node.copy_status is not None:
                del self.by_copy[node.copy_status][node.id]
            node.copy_status = status
            self.by_copy[status][node.id] = node

    def take_pending(self, limit: int, types: frozenset[str] | None = None) -> list[Node]:
        """Up to `limit` nodes whose traversal is pending, marked in_progress so no pull sees them twice."""
        return self._take(self.by_status, self.set_status, limit, types)

    def take_pending_copy(self, limit: int, types: frozenset[str] | None = None) -> list[Node]:
        return self._take(self.by_copy, self.set_copy_status, limit, types)

    @staticmethod
    def _take(index, set_status, limit, types) -> list[Node]:
        pending = index.get(PENDING)
        if not pending:
            return []
        taken = []
        for node in pending.values():
            if types is None or node.type in types:
                taken.append(node)
                if len(taken) == limit:
                    break
        for node in taken:
            set_status(node, IN_PROGRESS)
        return taken

    def count(self, status: str) -> int:
        return len(self.by_status.get(status, ())) + self.files.counts.get(status, 0)

    def count_copy(self, status: str) -> int:
        return len(self.by_copy.get(status, ()))

    def status_counts(self) -> dict[str, int]:
        counts = {s: len(ids) for s, ids in self.by_status.items() if ids}
        for s, n in self.files.counts.items():
            if n:
                counts[s] = counts.get(s, 0) + n
        return counts

    def copy_counts(self) -> dict[str, int]:
        return {s: len(ids) for s, ids in self.by_copy.items() if ids}

    def nodes(self) -> Iterable[Node]:
        """Every node of the level, file rows turned into Nodes first."""
        self._materialize()
        return self.by_id.values()

    def nodes_as_listed(self) -> Iterable[Node]:
        """The nodes that are Nodes already (folders, and what was loaded or put): file rows stay rows."""
        return self.by_id.values()


class NodeCache:
    """The levels one queue holds: the current round and the next one, never more."""

    MAX_LEVELS = 2

    def __init__(self, file_node=None):
        self.levels: dict[int, LevelCache] = {}
        self.peak_levels = 0  # tests read this to prove the memory invariant held
        self._file_node = file_node

    def level(self, depth: int) -> LevelCache | None:
        return self.levels.get(depth)

    def ensure(self, depth: int) -> LevelCache:
        level = self.levels.get(depth)
        if level is None:
            level = self.levels[depth] = LevelCache(depth, self._file_node)
            self.peak_levels = max(self.peak_levels, len(self.levels))
            if len(self.levels) > self.MAX_LEVELS:
                raise AssertionError(f"level cache holds {sorted(self.levels)}: more than two levels")
        return level

    def drop(self, depth: int) -> None:
        self.levels.pop(depth, None)

    def clear(self) -> None:
        self.levels.clear()

    def depths(self) -> list[int]:
        return sorted(self.levels)

    def total_nodes(self) -> int:
        return sum(len(level) for level in self.levels.values())
