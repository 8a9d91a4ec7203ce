"""Filesystem adapters: the only code that touches a tree."""

from engine.adapters.base import Entry, FSAdapter, is_transient
from engine.adapters.local import LocalAdapter
from engine.adapters.memory import MemoryAdapter

__all__ = ["Entry", "FSAdapter", "LocalAdapter", "MemoryAdapter", "is_transient"]
