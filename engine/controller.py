"""What a console may ask of a migration: commands in, immutable snapshots out."""

from __future__ import annotations

from typing import Protocol

from engine.snapshot import MigrationSnapshot


class Controller(Protocol):
    def start(self) -> None:
        """Begin (or continue) the run in the engine's own threads; returns at once."""

    def pause(self) -> None:
        """Stop leasing new tasks; in-flight tasks finish."""

    def resume(self) -> None:
        """Lease again after a pause."""

    def retry(self) -> None:
        """Switch to retry mode: re-run failed and pending tasks across all depths, then copy."""

    def resume_from_db(self) -> None:
        """Rehydrate an interrupted run from its DuckDB file and continue it."""

    def copy_plan(self) -> None:
        """Copy a finished dry run's plan as it stands (migrate run --use-plan)."""

    def stop(self, force: bool = False) -> None:
        """Graceful: finish in-flight tasks, seal, close. force: stop at once, file stays resumable."""

    def snapshot(self) -> MigrationSnapshot:
        """A consistent, immutable picture of the run; cheap enough to call several times a second."""

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the engine's threads have ended; True when they have."""

    def close(self) -> None:
        """Release the run file once the engine has stopped; call it before the process exits."""
