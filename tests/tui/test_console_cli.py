"""migrate-tui's command line: bad input is one line on stderr and exit code 2."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from tui import cli
from tui.app import main

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        ([], "--db FILE is required"),
        (["--db"], "expected one argument"),
        (["--db", "run.duckdb", "only-src"], "give both SRC and DST, or neither (got 1 path)"),
        (["--db", "run.duckdb", "a", "b", "c"], "got 3 paths"),
        (["--db", "nope.duckdb"], "nope.duckdb: no such run file"),
        (["--db", "nope.duckdb", "--dry-run"], "--dry-run applies to a new run"),
        (["--demo", "--db", "x.duckdb"], "--demo makes its own trees"),
        (["--frobnicate"], "unrecognized arguments: --frobnicate"),
    ],
)
def test_bad_arguments_are_one_line_and_exit_2(argv, says, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("migrate-tui: error: ")
    assert says in err


def test_engine_user_errors_become_one_line_exit_2(capsys, tmp_path):
    db = tmp_path / "run.duckdb"
    assert main(["--db", str(db), str(tmp_path / "missing"), str(tmp_path / "dst")]) == 2
    assert capsys.readouterr().err == f"migrate-tui: error: source '{tmp_path / 'missing'}' does not exist; " \
                                      "check the path\n"
    assert not db.exists()

    db.write_bytes(b"not duckdb")
    assert main(["--db", str(db)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"migrate-tui: error: '{db}' is not a DuckDB database") and err.count("\n") == 1


def test_new_run_starts_and_existing_file_opens(tmp_path):
    from engine.migration import Migration

    src, db = tmp_path / "src", tmp_path / "run.duckdb"
    src.mkdir()
    launched = cli.launch(cli.parse_args(["--db", str(db), str(src), str(tmp_path / "dst"), "--dry-run"]))
    assert isinstance(launched.controller, Migration) and launched.start_run is True
    assert launched.controller.dry_run and launched.controller.phase == "traversal"
    launched.controller.close()

    launched = cli.launch(cli.parse_args(["--db", str(db)]))
    assert isinstance(launched.controller, Migration) and launched.start_run is False
    launched.controller.close()


def test_an_opened_run_takes_the_settings_file_and_variables_as_migrate_resume_does(tmp_path, monkeypatch):
    """What R (resume) and t (retry) run with: the run's stored settings, except what migrate.toml beside
    the file or a MIGRATE_* variable sets now; a bad value is one line and exit 2, before any screen."""
    from engine.migration import Migration
    from engine.settings import Settings

    src, db = tmp_path / "src", tmp_path / "run.duckdb"
    src.mkdir()
    Migration.create(str(db), str(src), str(tmp_path / "dst"), Settings(bwlimit="5M")).close()
    (tmp_path / "migrate.toml").write_text('bwlimit = "2M"\n')
    monkeypatch.setenv("MIGRATE_COPY_WORKERS", "3")
    monkeypatch.setenv("MIGRATE_BWLIMT", "1M")
    launched = cli.launch(cli.parse_args(["--db", str(db)]))
    try:
        settings = launched.controller.settings
        assert (settings.bwlimit, settings.copy_workers) == (2 << 20, 3)
        assert launched.controller.message == "MIGRATE_BWLIMT is not a setting (did you mean MIGRATE_BWLIMIT?); ignored"
    finally:
        launched.controller.close()

    monkeypatch.setenv("MIGRATE_COPY_WORKERS", "many")
    with pytest.raises(cli.CliError, match="invalid setting 'copy_workers' from MIGRATE_COPY_WORKERS"):
        cli.launch(cli.parse_args(["--db", str(db)]))


def test_a_finished_run_opens_whatever_exclude_the_settings_file_beside_it_gives(tmp_path):
    """Looking at a finished run is not continuing it: an exclude from migrate.toml is noted, not refused."""
    from engine.migration import Migration
    from engine.settings import Settings

    src, db = tmp_path / "src", tmp_path / "run.duckdb"
    src.mkdir()
    first = Migration.create(str(db), str(src), str(tmp_path / "dst"), Settings())
    first.start()
    assert first.wait(30) and first.phase == "done"
    first.close()
    (tmp_path / "migrate.toml").write_text('exclude = ["*.bak"]\n')
    launched = cli.launch(cli.parse_args(["--db", str(db)]))
    try:
        assert launched.controller.settings.exclude == []
        assert launched.controller.message == (f'exclude ["*.bak"] from {tmp_path / "migrate.toml"} is not this '
                                               'finished run\'s ([]); a new run would use it')
    finally:
        launched.controller.close()


def test_unexpected_engine_failure_is_still_one_line(capsys, tmp_path, monkeypatch):
    from engine.migration import Migration

    def explode(cls, path, settings=None):
        raise KeyError("phase")

    monkeypatch.setattr(Migration, "open", classmethod(explode))
    monkeypatch.delenv("MIGRATE_TUI_DEBUG", raising=False)
    db = tmp_path / "run.duckdb"
    db.write_bytes(b"")
    assert main(["--db", str(db)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("migrate-tui: error: could not open the run: KeyError")


def test_no_traceback_from_the_real_entry_point(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    result = subprocess.run(
        [sys.executable, "-c", "import sys, tui.app; sys.exit(tui.app.main())", "--db",
         str(tmp_path / "missing.duckdb")],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("migrate-tui: error: ")
    assert "Traceback" not in result.stderr and result.stderr.count("\n") == 1


def test_help_exits_0_and_names_the_program(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    assert "migrate-tui" in capsys.readouterr().out


def test_a_run_the_console_drove_and_left_unfinished_is_named_for_the_exit_code():
    """migrate-tui exits 130 with a resume hint when the run it started or resumed did not finish."""

    from tui.samples import FakeController
    assert cli.unfinished_run(SimpleNamespace(drove_run=True), FakeController("copy")) is not None
    assert cli.unfinished_run(SimpleNamespace(drove_run=True), FakeController("finished")) is None
    assert cli.unfinished_run(SimpleNamespace(drove_run=False), FakeController("interrupted")) is None


def test_a_console_whose_resume_was_refused_ends_with_the_reason_and_exit_2():
    refused = SimpleNamespace(refused="the destination '/d' is not the folder this run compared", return_code=0)
    assert cli.ending(refused, "run.duckdb") == (
        "migrate-tui: error: the destination '/d' is not the folder this run compared", 2)
    stopped = SimpleNamespace(refused=None, return_code=0)
    assert cli.ending(stopped, "run.duckdb")[1] == 130 and "resume with" in cli.ending(stopped, "run.duckdb")[0]
    assert cli.ending(stopped, None) == (None, 0)


def test_a_console_whose_run_stopped_on_its_own_ends_with_the_reason_and_exit_3():
    stopped = SimpleNamespace(refused=None, return_code=0)
    assert cli.ending(stopped, "run.duckdb", "No space left on device (errno 28), at 'a/b'") == (
        "migrate-tui: stopped: No space left on device (errno 28), at 'a/b'; fix that, then resume with: "
        "migrate-tui --db run.duckdb (R), or migrate resume --db run.duckdb", 3)


def test_version_names_the_installed_package_and_exits_0(capsys):
    from importlib.metadata import version
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out == f"migrate-tui {version('migrate-tui')}\n"


def test_n_is_dry_run(tmp_path):
    args = cli.build_parser().parse_args(["--db", str(tmp_path / "r.duckdb"), "-n", "a", "b"])
    assert args.dry_run is True and args.paths == ["a", "b"]
