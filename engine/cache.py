"""LevelCache / NodeCache: the BFS levels a queue holds in memory between seals."""

from __future__ import annotations

from collections import defaultdict
from typing import Iterable

from engine.model import IN_PROGRESS, PENDING, Node


class LevelCache:
    """One BFS level, indexed so that every lookup costs O(result), never O(level).

    by_id and the traversal-status index are kept on every put; the path, parent-path and copy-status
    indexes are built on first use and kept from then on, so a level nobody looks up that way (a
    traversal never reads copy statuses from its cache) costs no time or memory for them."""

    __slots__ = ("depth", "by_id", "_by_path", "_by_parent", "by_status", "_by_copy")

    def __init__(self, depth: int):
        self.depth = depth
        self.by_id: dict[int, Node] = {}
        self._by_path: dict[str, Node] | None = None
        self._by_parent: dict[str, list[Node]] | None = None
        # status -> {id: node}; dicts keep insertion order, so pulls are first-discovered-first
        self.by_status: dict[str, dict[int, Node]] = defaultdict(dict)
        self._by_copy: dict[str, dict[int, Node]] | None = None

    def __len__(self) -> int:
        return len(self.by_id)

    @property
    def by_path(self) -> dict[str, Node]:
        if self._by_path is None:
            self._by_path = {n.path: n for n in self.by_id.values()}
        return self._by_path

    @property
    def by_parent(self) -> dict[str, list[Node]]:
        if self._by_parent is None:
            index = self._by_parent = defaultdict(list)
            for n in self.by_id.values():
                if n.depth:
                    index[n.path.rpartition("/")[0]].append(n)
        return self._by_parent

    @property
    def by_copy(self) -> dict[str, dict[int, Node]]:
        """copy status -> {id: node}, in put order like by_status."""
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
        return self.by_id.get(node_id)

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
        return len(self.by_status.get(status, ()))

    def count_copy(self, status: str) -> int:
        return len(self.by_copy.get(status, ()))

    def status_counts(self) -> dict[str, int]:
        return {s: len(ids) for s, ids in self.by_status.items() if ids}

    def copy_counts(self) -> dict[str, int]:
        return {s: len(ids) for s, ids in self.by_copy.items() if ids}

    def nodes(self) -> Iterable[Node]:
        return self.by_id.values()


class NodeCache:
    """The levels one queue holds: the current round and the next one, never more."""

    MAX_LEVELS = 2

    def __init__(self):
        self.levels: dict[int, LevelCache] = {}
        self.peak_levels = 0  # tests read this to prove the memory invariant held

    def level(self, depth: int) -> LevelCache | None:
        return self.levels.get(depth)

    def ensure(self, depth: int) -> LevelCache:
        level = self.levels.get(depth)
        if level is None:
            level = self.levels[depth] = LevelCache(depth)
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
