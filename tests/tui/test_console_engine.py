"""The console driving the real engine on a real tree: keys reach engine.migration.Migration."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest
from console_testing import open_in_console, start_in_console, static_text, wait_until
from support import threads_refused

from engine.adapters.local import LocalAdapter
from engine.migration import Migration
from engine.settings import Settings
from engine.threads import THREAD_LIMIT
from engine.treegen import make_source
from tui.app import RESUME_HINT, MigrationConsole

SIZE = (120, 36)


class SlowLocal(LocalAdapter):
    """A real folder that lists slowly, like a busy NAS: leaves time to press keys mid-run."""

    def list(self, path, specials=None):
        time.sleep(0.02)
        return super().list(path, specials)


def files_below(root: Path) -> dict[str, bytes]:
    out = {}
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            full = Path(dirpath, name)
            if not full.is_symlink():
                out[str(full.relative_to(root))] = full.read_bytes()
    return out


@pytest.fixture
def trees(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    make_source(src, 300, seed=5, max_depth=4, symlinks=0)
    dst.mkdir()
    return src, dst, tmp_path / "run.duckdb"


def new_migration(src: Path, dst: Path, db: Path) -> Migration:
    return Migration.create(
        str(db), str(src), str(dst), Settings(observer_interval=0.05),
        src_adapter=SlowLocal(src), dst_adapter=LocalAdapter(dst),
    )


def test_pause_resume_and_finish_a_real_run(trees):
    src, dst, db = trees
    migration = new_migration(src, dst, db)

    async def scenario(app, pilot):
        await pilot.press("p")
        await wait_until(pilot, lambda: migration.snapshot().state == "paused")
        await wait_until(pilot, lambda: migration.snapshot().src.in_flight == 0)
        await pilot.pause(0.2)  # let the last in-flight results be counted
        frozen = migration.snapshot().src.completed_total
        await pilot.pause(0.4)
        assert migration.snapshot().src.completed_total == frozen, "work went on while paused"
        assert "paused" in static_text(app, "#title")

        await pilot.press("r")
        await wait_until(pilot, lambda: migration.snapshot().state != "paused")
        await wait_until(pilot, lambda: migration.snapshot().phase == "done", timeout=90)
        await wait_until(pilot, lambda: "done" in static_text(app, "#title"))
        assert "SRC files" in static_text(app, "#summary-text")

        await pilot.press("q")
        await wait_until(pilot, lambda: app.return_code == 0, timeout=20)

    try:
        assert start_in_console(migration, scenario, SIZE).engine_stopped
    finally:
        migration.close()
    copied = files_below(dst)
    assert copied == files_below(src) and len(copied) >= 250


def test_an_interrupted_run_file_shows_the_hint_and_R_resumes_it(trees):
    src, dst, db = trees
    first = new_migration(src, dst, db)
    first.start()
    deadline = time.monotonic() + 20
    while first.snapshot().src.completed_total < 3:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    first.stop(force=True)
    assert first.wait(20)
    first.close()

    async def scenario(app, pilot, migration):
        assert static_text(app, "#status").strip() == RESUME_HINT
        assert migration.snapshot().phase == "interrupted"  # opening started nothing
        await pilot.press("R")
        await wait_until(pilot, lambda: migration.snapshot().phase == "done", timeout=90)

    open_in_console(db, scenario, SIZE)
    assert files_below(dst) == files_below(src)


def test_a_run_stopped_by_the_thread_limit_says_why_and_R_resumes_it_once_it_is_lifted(trees):
    src, dst, db = trees
    migration = new_migration(src, dst, db)
    refusing = {"dst-traversal-loop"}

    async def scenario():
        app = MigrationConsole(migration, start_run=True)
        async with app.run_test(size=SIZE) as pilot:
            await wait_until(pilot, lambda: migration.snapshot().phase == "interrupted", timeout=30)
            # the run's own "stopped: ..." message may show first, until the console's next poll sees the phase
            expected = f"stopped, press R to resume once fixed: {THREAD_LIMIT}"
            await wait_until(pilot, lambda: static_text(app, "#status", width=400).strip() == expected)
            refusing.clear()
            await pilot.press("R")
            await wait_until(pilot, lambda: migration.snapshot().phase == "done", timeout=90)
            await pilot.press("q")
            await wait_until(pilot, lambda: app.return_code == 0, timeout=20)

    try:
        with threads_refused(lambda name, started: name in refusing):
            asyncio.run(scenario())
    finally:
        migration.close()
    assert files_below(dst) == files_below(src)


def test_a_forced_stop_with_no_thread_left_for_it_stops_the_run_there_and_then(trees):
    src, dst, db = trees
    migration = new_migration(src, dst, db)

    async def scenario(app, pilot):
        await pilot.press("q")
        await pilot.press("q")
        await wait_until(pilot, lambda: app.return_code is not None, timeout=20)

    try:
        with threads_refused(lambda name, started: name == "migrate-tui force stop"):
            app = start_in_console(migration, scenario, SIZE)
        assert app.force_stop_thread is None and app.engine_stopped and not app.thread_limited
        assert not migration.running
    finally:
        migration.close()


def test_a_console_that_cannot_start_its_own_threads_ends_with_one_line_and_exit_3(trees, capsys):
    from tui import cli

    src, dst, db = trees
    with threads_refused(lambda name, started: name == "textual-input"):
        code = cli.run(["--db", str(db), str(src), str(dst)])
    err = capsys.readouterr().err
    assert code == 3 and err.strip() == f"migrate-tui: error: {THREAD_LIMIT}" and "Traceback" not in err


def test_a_finished_run_file_opens_without_starting(trees):
    src, dst, db = trees
    first = new_migration(src, dst, db)
    first.start()
    assert first.wait(90)
    first.close()

    async def scenario(app, pilot, migration):
        assert not migration.running
        assert migration.snapshot().phase == "done"
        assert "done" in static_text(app, "#title")
        assert "SRC files" in static_text(app, "#summary-text")

    open_in_console(db, scenario, SIZE)


def test_demo_builds_sample_trees_and_a_new_run_in_one_folder(tmp_path, monkeypatch):
    from tui import cli

    monkeypatch.setattr(cli.tempfile, "mkdtemp", lambda prefix="": str(tmp_path / "demo"))
    (tmp_path / "demo").mkdir()
    launched = cli.launch(cli.parse_args(["--demo"]))
    try:
        snapshot = launched.controller.snapshot()
        assert launched.start_run is True
        assert snapshot.phase == "new"
        assert Path(snapshot.src_root).parent == Path(snapshot.db_path).parent == tmp_path / "demo"
        assert any(Path(snapshot.src_root).iterdir())
        assert str(tmp_path / "demo") in launched.farewell
    finally:
        launched.controller.close()


async def retry_after_failures(pilot, app, migration, failed: int, fix) -> None:
    """The run ends with `failed` failures; fix() removes their cause, t retries, and the retry ends with none."""
    await wait_until(pilot, lambda: migration.wait(0) and app.snapshot.phase == "done", timeout=30)
    assert migration.snapshot().summary.failed == failed
    fix()
    await pilot.press("t")
    await wait_until(pilot, lambda: migration.wait(0) and app.snapshot.summary is not None
                     and app.snapshot.summary.failed == 0, timeout=30)


def run_to_a_mirror(scenario, migration: Migration, src: Path, dst: Path) -> None:
    """Run the console scenario, close the run file, and find DST a copy of SRC."""
    try:
        asyncio.run(scenario)
    finally:
        migration.close()
    assert files_below(dst) == files_below(src)


def test_t_after_a_run_with_failures_counts_the_retry_copy_alone(tmp_path):
    """A run started in the console ends with failures; once their cause is moved away, t copies what failed.
    The Throughput panel counts that copy against its own total, as it counted the first against its own:
    not every copy this console has seen against the retry's total ("done 67 / 23 items · 23 failed")."""
    src, dst, db = tmp_path / "src", tmp_path / "dst", tmp_path / "run.duckdb"
    for folder in ("a", "b"):
        (src / folder).mkdir(parents=True)
        for i in range(5):
            (src / folder / f"f{i}").write_text("x" * 100)
    dst.mkdir()
    (dst / "b").write_text("a file where the source has a folder")  # b and its 5 files fail
    migration = Migration.create(str(db), str(src), str(dst), Settings(observer_interval=0.05))

    async def main():
        app = MigrationConsole(migration, start_run=True)
        async with app.run_test(size=SIZE) as pilot:
            await retry_after_failures(pilot, app, migration, 6, (dst / "b").unlink)
            await pilot.pause(0.2)
            copy = migration.snapshot().copy
            assert (copy.items_done, copy.items_total, copy.failed) == (6, 6, 0)
            assert (copy.bytes_done, copy.bytes_total) == (500, 500)
            rates = static_text(app, "#rates")
            assert "6 / 6 items" in rates and "failed" not in rates
            await pilot.press("q")

    run_to_a_mirror(main(), migration, src, dst)


class Refusing(LocalAdapter):
    """A real folder one of whose subfolders cannot be listed until ``allow`` is set (a mode of 000)."""

    def __init__(self, root, refused: str):
        super().__init__(root)
        self.refused, self.allow = refused, False

    def list(self, path, specials=None):
        if path == self.refused and not self.allow:
            raise PermissionError(13, "Permission denied", path)
        return super().list(path, specials)


def test_t_after_a_listing_failure_shows_what_the_retry_found(tmp_path):
    """A folder that could not be listed, listed by the retry (t) once it can be: the Rounds and gate panels
    say what the whole run found and how deep it went, as the summary does, not what the file held before
    the retry ("20 files · 2 folders" beside a summary of 41 files and 3 folders)."""
    src, dst, db = tmp_path / "src", tmp_path / "dst", tmp_path / "run.duckdb"
    for folder in ("a", "b", "b/sub"):
        (src / folder).mkdir(parents=True)
        for i in range(5):
            (src / folder / f"f{i}").write_text("x" * 100)
    adapter = Refusing(src, "b")
    migration = Migration.create(str(db), str(src), str(dst), Settings(observer_interval=0.05, list_processes=False),
                                 src_adapter=adapter, dst_adapter=LocalAdapter(dst))

    async def main():
        app = MigrationConsole(migration, start_run=True)
        async with app.run_test(size=SIZE) as pilot:
            def allow():
                assert "5 files · 2 folders" in static_text(app, "#src-found")
                adapter.allow = True
            await retry_after_failures(pilot, app, migration, 1, allow)
            await pilot.pause(1.2)  # the panels' next redraw
            snapshot = migration.snapshot()
            assert (snapshot.summary.src_files, snapshot.summary.src_folders) == (15, 3)
            assert (snapshot.src.files_discovered, snapshot.src.folders_discovered) == (15, 3)
            assert "15 files · 3 folders" in static_text(app, "#src-found")
            assert snapshot.gate.src_round == 2 and "SRC round 2" in static_text(app, "#gate-text")
            await pilot.press("q")

    run_to_a_mirror(main(), migration, src, dst)
