"""Monotonic counters the modes bump under their queue's lock and the observer reads without one."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class SideCounters:
    files_discovered: int = 0
    folders_discovered: int = 0
    listed: int = 0


@dataclass
class CopyCounters:
    folders_created: int = 0
    files_copied: int = 0
    already_there: int = 0
    skipped: int = 0
    vanished: int = 0
    failed: int = 0
    bytes: int = 0  # advanced chunk by chunk, so bytes/s moves during one large file

    @property
    def items(self) -> int:
        return self.folders_created + self.files_copied + self.already_there + self.skipped + self.vanished + \
            self.failed
