"""Run files opened with ``migrate-tui --db FILE``: the console shows what the file records.

Real runs of the real engine on real trees make the files: a finished run whose copies of three
files fail (the destination has folders where the source has those files), a run interrupted during
its copy after those failures were sealed, and a run interrupted during its traversal. Each is opened
the way ``migrate-tui --db FILE`` opens it (``Migration.open``), in the real app driven by Pilot."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import duckdb
import pytest
from console_testing import open_in_console, static_text, wait_until
from support import run_cli

from engine.adapters.local import LocalAdapter
from engine.migration import Migration
from engine.settings import Settings
from engine.treegen import make_source
from tui import format as fmt
from tui.app import PLAN_HINT, RESUME_HINT

SIZE = (130, 44)
REASON = "the destination has a folder where the source has a file"
FAST = dict(observer_interval=0.05, backoff_base=0.005, backoff_cap=0.02)


def depth(rel: str) -> int:
    return rel.count(os.sep) + 1


def tree_counts(root: Path) -> tuple[int, int, int]:
    """(files, folders, depth of the deepest folder) below root, counted by walking it."""
    files = folders = deepest = 0
    for dirpath, dirnames, filenames in os.walk(root):
        files += len(filenames)
        folders += len(dirnames)
        for name in dirnames:
            deepest = max(deepest, depth(os.path.relpath(os.path.join(dirpath, name), root)))
    return files, folders, deepest


@pytest.fixture
def trees(tmp_path):
    """A source of 300 files, and a destination with folders in the way of its 3 shallowest files:
    those three copies fail, the rest succeed."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    make_source(src, 300, seed=5, max_depth=4, symlinks=0)
    files = sorted((os.path.relpath(os.path.join(d, f), src) for d, _, fs in os.walk(src) for f in fs),
                   key=lambda rel: (depth(rel), rel))
    blocked = files[:3]
    for rel in blocked:
        (dst / rel).mkdir(parents=True)
    for dirpath, _, _ in os.walk(dst, topdown=False):  # older than the source: not "newer on DST"
        os.utime(dirpath, (1_000_000_000, 1_000_000_000))
    return src, dst, tmp_path / "run.duckdb", blocked


class StopAt(LocalAdapter):
    """A real folder that stops its migration once, gracefully, when it is first asked to list a folder
    (or, as the destination, to write a file) ``depth`` levels down: an operator pressing q there."""

    def __init__(self, root, depth: int):
        super().__init__(root)
        self.stop_depth = depth
        self.migration: Migration | None = None
        self._stopped = threading.Event()

    def _maybe_stop(self, path: str) -> None:
        if path and path.count("/") + 1 >= self.stop_depth and not self._stopped.is_set():
            self._stopped.set()
            self.migration.stop()

    def list(self, path, *args, **kwargs):
        self._maybe_stop(path)
        return super().list(path, *args, **kwargs)

    def create_temp_fd(self, folder, name):
        self._maybe_stop(f"{folder}/{name}" if folder else name)
        return super().create_temp_fd(folder, name)


def run_to_the_end(migration: Migration) -> None:
    migration.start()
    assert migration.wait(90), "the run hung"
    migration.close()


def errors_title(app) -> str:
    return app.screen_stack[0].query_one("#errors").border_title


def assert_failures_listed(app, blocked: list[str]) -> None:
    assert errors_title(app) == "Errors · 3 failed"
    listed = static_text(app, "#errors-text", width=300)
    for rel in blocked:
        assert fmt.display_path(rel) in listed
    assert listed.count(REASON) == 3


def test_a_finished_run_file_lists_its_failures_and_where_each_side_ended(trees):
    src, dst, db, blocked = trees
    dst_files, dst_folders, dst_deepest = tree_counts(dst)  # what DST's traversal will find
    src_files, src_folders, src_deepest = tree_counts(src)
    run_to_the_end(Migration.create(str(db), str(src), str(dst), Settings(**FAST)))

    async def scenario(app, pilot, migration):
        assert migration.snapshot().phase == "done" and not migration.running
        assert "done · finished · 3 failed ·" in static_text(app, "#title")  # not as if all went well
        summary = static_text(app, "#summary-text")
        assert " failed " in summary and summary.split(" failed ")[1].split()[0] == "3"
        assert_failures_listed(app, blocked)  # before any key: not only after t

        assert static_text(app, "#src-round").strip() == f"SRC round {src_deepest} · completed"
        assert static_text(app, "#dst-round").strip() == f"DST round {dst_deepest} · completed"
        assert static_text(app, "#src-found").strip() == f"{src_files} files · {src_folders} folders"
        assert static_text(app, "#dst-found").strip() == f"{dst_files} files · {dst_folders} folders"
        src_count = static_text(app, "#src-progress .round-count").strip()
        listed, expected = src_count.split("/")
        assert listed == expected != "0"  # the last round listed all its folders
        gate = static_text(app, "#gate-text")
        assert f"SRC round {src_deepest}  ✓ traversal done" in gate
        assert f"DST round {dst_deepest}  ✓ traversal done" in gate
        assert "waits" not in gate and "✗" not in gate

        # Retry mode takes the file up again: the three fail again and are listed (and counted) once.
        await pilot.press("t")
        await wait_until(pilot, lambda: migration.finished_queues and migration.wait(0), timeout=60)
        app.refresh_view(force=True)
        await pilot.pause(0.1)
        assert migration.summary is not None and migration.summary.failed == 3
        assert_failures_listed(app, blocked)

    open_in_console(db, scenario, SIZE)


def test_a_retry_into_a_destination_replaced_since_is_refused_with_its_reason(trees):
    """t on a run file whose destination was moved away and made anew: what the file holds of the old one
    does not hold for the new one. Refused, said, nothing written; the console says why when it ends."""
    src, dst, db, _ = trees
    run_to_the_end(Migration.create(str(db), str(src), str(dst), Settings(**FAST)))
    dst.rename(dst.parent / "old dst")
    dst.mkdir()

    async def scenario(app, pilot, migration):
        await pilot.press("t")
        await wait_until(pilot, lambda: app.refused is not None, timeout=30)
        assert "is not the folder this run compared" in app.refused
        assert not migration.running and os.listdir(dst) == []
        assert "retry refused" in static_text(app, "#status")

    open_in_console(db, scenario, SIZE)


def test_the_summary_counts_the_entries_the_exclude_patterns_left_out(tmp_path):
    src, dst, db = tmp_path / "src", tmp_path / "dst", tmp_path / "run.duckdb"
    make_source(src, 60, seed=9, max_depth=3, symlinks=0)
    folders = sorted({os.path.dirname(os.path.join(d, f)) for d, _, fs in os.walk(src) for f in fs})
    for i, folder in enumerate(folders):  # one scratch file per folder, left out by the pattern
        Path(folder, f"scratch {i}.tmp").write_bytes(b"x")
    run_to_the_end(Migration.create(str(db), str(src), str(dst), Settings(**FAST, exclude=["*.tmp"])))
    assert not any(name.endswith(".tmp") for _, _, names in os.walk(dst) for name in names)

    async def scenario(app, pilot, migration):
        summary = static_text(app, "#summary-text")
        assert summary.split(" excluded ")[1].split()[0] == f"{len(folders):,}"

    open_in_console(db, scenario, SIZE)


def test_a_run_file_interrupted_during_its_copy_lists_the_failures_sealed_before(trees):
    src, dst, db, blocked = trees
    dst_adapter = StopAt(dst, depth=3)  # the blocked files are shallower: their failures are sealed
    first = Migration.create(str(db), str(src), str(dst), Settings(**FAST, copy_processes=False),
                             dst_adapter=dst_adapter)
    dst_adapter.migration = first
    run_to_the_end(first)
    assert first.phase == "copy" and first.summary is None
    with duckdb.connect(str(db), read_only=True) as con:  # the copy so far, asked of DuckDB directly
        done, to_copy = con.execute("SELECT count(*) FILTER (copy_status IN ('successful', 'failed')), count(*) "
                                    "FROM src_nodes WHERE action = 'copy'").fetchone()
    assert 0 < done < to_copy

    async def scenario(app, pilot, migration):
        assert migration.snapshot().phase == "interrupted"
        assert static_text(app, "#status").strip() == RESUME_HINT
        assert_failures_listed(app, blocked)
        assert f"{done:,} / {to_copy:,} items" in static_text(app, "#rates")  # not 0: what the file copied
        for side in ("src", "dst"):  # the traversal was over: no round 0, no idle queue
            assert static_text(app, f"#{side}-round").strip().endswith("· completed")
        gate = static_text(app, "#gate-text")
        assert gate.count("✓ traversal done") == 2 and "waits" not in gate

        await pilot.press("R")  # the resumed copy keeps the failures the file recorded
        await wait_until(pilot, lambda: migration.snapshot().phase == "done", timeout=60)
        app.refresh_view(force=True)
        await pilot.pause(0.1)
        assert migration.summary.failed == 3
        assert_failures_listed(app, blocked)
        # and counts on from what the file had copied, beside a traversal the file says is over
        assert f"{to_copy:,} / {to_copy:,} items" in static_text(app, "#rates")
        assert static_text(app, "#dst-round").strip().endswith("· completed")
        assert "waits" not in static_text(app, "#gate-text")

    open_in_console(db, scenario, SIZE)


def interrupt_during_traversal(src, dst, db) -> None:
    """A run in db stopped while SRC lists its third level (as a kill would leave it, but sealed)."""
    src_adapter = StopAt(src, depth=3)
    first = Migration.create(str(db), str(src), str(dst), Settings(**FAST, list_processes=False),
                             src_adapter=src_adapter)
    src_adapter.migration = first
    run_to_the_end(first)
    assert first.phase == "traversal"


def test_a_run_file_interrupted_during_its_traversal_shows_where_each_side_stopped(trees):
    src, dst, db, _ = trees
    interrupt_during_traversal(src, dst, db)

    # What the file holds, asked of DuckDB directly: per side, the shallowest depth with folders
    # still to list, how many folders that depth has and has listed, and the entries found.
    expected = {}
    with duckdb.connect(str(db), read_only=True) as con:
        for side in ("src", "dst"):
            stop = con.execute(f"SELECT min(depth) FROM {side}_nodes WHERE type = 'folder' "
                               "AND traversal_status IN ('pending', 'in_progress')").fetchone()[0]
            if stop is None:
                expected[side] = None
                continue
            folders, listed = con.execute(
                f"SELECT count(*), count(*) FILTER (traversal_status IN ('successful', 'failed')) "
                f"FROM {side}_nodes WHERE type = 'folder' AND depth = ?", [stop]).fetchone()
            files, all_folders = con.execute(
                f"SELECT count(*) FILTER (type <> 'folder'), count(*) FILTER (type = 'folder') "
                f"FROM {side}_nodes WHERE depth > 0").fetchone()
            expected[side] = stop, folders, listed, files, all_folders
    assert expected["src"] is not None and expected["src"][0] >= 2, "SRC stopped before its third level"

    async def scenario(app, pilot, migration):
        assert migration.snapshot().phase == "interrupted"
        assert static_text(app, "#status").strip() == RESUME_HINT
        assert errors_title(app) == "Errors · 0 failed"
        gate = static_text(app, "#gate-text")
        assert "waits for" not in gate
        for side, name in (("src", "SRC"), ("dst", "DST")):
            if expected[side] is None:
                assert static_text(app, f"#{side}-round").strip().endswith("· completed")
                continue
            stop, folders, listed, files, all_folders = expected[side]
            assert static_text(app, f"#{side}-round").strip() == f"{name} round {stop} · stopped"
            assert static_text(app, f"#{side}-progress .round-count").strip() == f"{listed}/{folders}"
            assert static_text(app, f"#{side}-found").strip() == f"{files} files · {all_folders} folders"
            sealed = {0: "no round sealed yet", 1: "round 0 sealed"}.get(stop, f"rounds 0-{stop - 1} sealed")
            assert f"{name} round {stop}  ✗ traversal interrupted: {sealed}" in gate

    open_in_console(db, scenario, SIZE)


def test_a_refused_resume_says_why_instead_of_offering_r_again(trees):
    """R on an interrupted run whose destination was replaced since: refused, and the status line says so
    (it went on saying 'press R to resume')."""
    src, dst, db, _ = trees
    interrupt_during_traversal(src, dst, db)
    dst.rename(dst.parent / "old dst")
    dst.mkdir()

    async def scenario(app, pilot, migration):
        assert static_text(app, "#status").strip() == RESUME_HINT
        await pilot.press("R")
        await wait_until(pilot, lambda: app.refused is not None, timeout=30)
        app.refresh_view(force=True)
        status = static_text(app, "#status")
        assert "refused" in status and "is not the folder this run compared" in status
        assert "press R" not in status and os.listdir(dst) == []

    open_in_console(db, scenario, SIZE)


def test_a_dry_runs_plan_is_copied_with_c(tmp_path):
    """A finished dry run opened in the console says how to go on; c copies its plan, and c on a run that
    is no dry run's plan is refused with a warning, starting nothing."""
    src, dst, db = tmp_path / "src", tmp_path / "dst", tmp_path / "run.duckdb"
    make_source(src, 80, seed=3, max_depth=3, symlinks=0)
    run_to_the_end(Migration.create(str(db), str(src), str(dst), Settings(**FAST), dry_run=True))
    assert not dst.exists()

    async def scenario(app, pilot, migration):
        assert static_text(app, "#status").strip() == PLAN_HINT
        app.action_copy_plan()  # c twice before any snapshot shows the copy: one copy, no refusal
        app.action_copy_plan()
        await wait_until(pilot, lambda: migration.phase == "done" and migration.wait(0), timeout=60)
        assert app.drove_run and migration.summary.failed == 0 and app.refused is None
        assert not [n.message for n in app._notifications if "failed" in str(n.message)]
        app.refresh_view(force=True)
        await pilot.press("c")
        await pilot.pause(0.2)
        assert not migration.running and migration.phase == "done"
        assert any("this run's phase is 'done'" in str(n.message) for n in app._notifications)

    open_in_console(db, scenario, SIZE)
    assert tree_counts(dst) == tree_counts(src)


def test_a_dry_runs_plan_says_what_its_copy_will_refuse(trees):
    """The destination has folders where the source has 3 files: the plan says how many will fail, as
    `migrate run -n` does, before c copies it."""
    src, dst, db, blocked = trees
    run_to_the_end(Migration.create(str(db), str(src), str(dst), Settings(**FAST), dry_run=True))

    async def scenario(app, pilot, migration):
        assert migration.summary.will_fail == len(blocked)
        summary = static_text(app, "#summary-text")
        assert "will fail" in summary and summary.split("will fail")[1].split()[0] == str(len(blocked))

    open_in_console(db, scenario, SIZE)


def test_a_dry_run_started_in_the_console_ends_offering_c(tmp_path):
    from console_testing import start_in_console
    src, dst, db = tmp_path / "src", tmp_path / "dst", tmp_path / "run.duckdb"
    make_source(src, 40, seed=4, max_depth=2, symlinks=0)
    migration = Migration.create(str(db), str(src), str(dst), Settings(**FAST), dry_run=True)

    async def scenario(app, pilot):
        await wait_until(pilot, lambda: migration.phase == "planned" and migration.wait(0), timeout=60)
        app.refresh_view(force=True)
        await pilot.pause(0.1)
        assert static_text(app, "#status").strip().endswith(PLAN_HINT)
        await pilot.press("q")
        await wait_until(pilot, lambda: app.return_code == 0, timeout=30)

    try:
        start_in_console(migration, scenario, SIZE)
    finally:
        migration.close()
    assert not dst.exists()


def test_a_run_the_console_started_that_ends_with_failed_entries_exits_1(tmp_path, monkeypatch, capsys):
    """As `migrate run` on the same trees: a source folder where the destination has a file fails, with
    all below it; the console's run finishes with those failures, and quitting it then exits 1."""
    from console_testing import run_console
    src, dst, db = tmp_path / "src", tmp_path / "dst", tmp_path / "r.duckdb"
    for folder in ("bad", "good"):
        (src / folder).mkdir(parents=True)
        for i in range(3):
            (src / folder / f"file {i}").write_text(f"{folder} {i}")
    dst.mkdir()
    (dst / "bad").write_text("a file where the source has a folder")

    async def scenario(app, pilot):
        run = app.controller
        await wait_until(pilot, lambda: run.phase == "done" and run.wait(0), timeout=60)  # its threads ended
        app.refresh_view(force=True)
        assert "done · finished · 4 failed" in static_text(app, "#title")
        await pilot.press("q")

    assert run_console(["--db", str(db), str(src), str(dst)], scenario, monkeypatch, SIZE) == 1
    assert capsys.readouterr().err == \
        f"migrate-tui: 4 entries failed; list them with: migrate report --db {db} --failed\n"
    assert sorted(os.listdir(dst / "good")) == ["file 0", "file 1", "file 2"]  # the rest was copied


def test_a_refused_copy_of_a_plan_ends_the_console_as_migrate_run_use_plan_ends(tmp_path, monkeypatch, capsys):
    """c on a dry run whose destination was moved away and copied back since (another folder now) is
    refused with its reason; quitting then says that reason and exits 2, as a refused R does, and as
    `migrate run --use-plan` ends on the same file."""
    import shutil

    from console_testing import run_console
    from support import run_cli
    src, dst, db = tmp_path / "src", tmp_path / "dst", tmp_path / "run.duckdb"
    make_source(src, 40, seed=6, max_depth=2, symlinks=0)
    (dst / "kept").mkdir(parents=True)
    run_to_the_end(Migration.create(str(db), str(src), str(dst), Settings(**FAST), dry_run=True))
    dst.rename(tmp_path / "dst.old")
    shutil.copytree(tmp_path / "dst.old", dst, symlinks=True)  # cp -a

    async def scenario(app, pilot):
        await pilot.press("c")
        await wait_until(pilot, lambda: app.refused is not None, timeout=30)
        assert not app.controller.running and os.listdir(dst) == ["kept"]  # nothing copied
        await pilot.press("q")

    assert run_console(["--db", str(db)], scenario, monkeypatch, SIZE) == 2
    err = capsys.readouterr().err
    assert err.startswith("migrate-tui: error: ") and err.count("\n") == 1
    reason = err.removeprefix("migrate-tui: error: ")

    code, _, use_plan_err = run_cli(capsys, "run", str(src), str(dst), "--db", str(db), "--use-plan")
    assert (code, use_plan_err) == (2, f"migrate: error: {reason}")


def test_a_retry_in_the_console_that_leaves_failures_exits_1(tmp_path, monkeypatch, capsys):
    """t on a finished run only looked at: the retry is a run the console drove, and its failures are the
    exit code's, as `migrate retry`'s (it exited 0)."""
    from console_testing import run_console
    src, dst, db = tmp_path / "src", tmp_path / "dst", tmp_path / "r.duckdb"
    (src / "bad").mkdir(parents=True)
    (src / "bad" / "file").write_text("x")
    dst.mkdir()
    (dst / "bad").write_text("a file where the source has a folder")
    code, _, err = run_cli(capsys, "run", str(src), str(dst), "--db", str(db))
    assert code == 1, err

    async def scenario(app, pilot):
        run = app.controller
        looked_at = run.snapshot().summary  # the first run's; the retry ends with a summary of its own
        await pilot.press("t")
        await wait_until(pilot, lambda: run.wait(0) and run.snapshot().summary not in (None, looked_at),
                         timeout=60)
        assert run.phase == "done" and run.snapshot().summary.failed == 2  # the folder and its file, again
        await pilot.press("q")

    assert run_console(["--db", str(db)], scenario, monkeypatch, SIZE) == 1
    assert "entries failed; list them with: migrate report" in capsys.readouterr().err
