"""The demo: a generated sample tree and a partly mirrored destination, migrated in a temporary folder."""

from __future__ import annotations

from pathlib import Path

from engine.adapters.local import LocalAdapter
from engine.adapters.paced import PacedAdapter
from engine.migration import Migration
from engine.settings import Settings
from engine.treegen import make_demo_trees

# Paced so a newcomer can watch every panel move: a local disk would finish in about a second.
WATCHABLE_LIST_DELAY = 0.012
WATCHABLE_BWLIMIT = "6M"


def create_demo(base: Path, files: int = 3000, watchable: bool = False) -> Migration:
    src, dst = make_demo_trees(base, files=files)
    settings = Settings(src_workers=2, dst_workers=2, bwlimit=WATCHABLE_BWLIMIT) if watchable else Settings()
    src_adapter, dst_adapter = LocalAdapter(src), LocalAdapter(dst)
    if watchable:
        src_adapter = PacedAdapter(src_adapter, WATCHABLE_LIST_DELAY)
        dst_adapter = PacedAdapter(dst_adapter, WATCHABLE_LIST_DELAY)
    migration = Migration.create(str(base / "demo.duckdb"), str(src), str(dst), settings,
                                 src_adapter=src_adapter, dst_adapter=dst_adapter)
    if watchable:
        migration.message = (f"demo: listings paced to {WATCHABLE_LIST_DELAY * 1000:.0f} ms like a network mount, "
                             f"copies limited to {WATCHABLE_BWLIMIT}/s: slow enough to watch every panel move")
    return migration
