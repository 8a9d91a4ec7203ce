"""migrate-tui's command line: bad input is one line on stderr and exit code 2."""

from __future__ import annotations

import os
import subprocess
import sys
import types
from pathlib import Path

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


class UserError(Exception):
    pass


class FakeMigration:
    calls: list = []

    @classmethod
    def create(cls, db_path, src, dst, settings=None, dry_run=False):
        cls.calls.append(("create", db_path, src, dst, dry_run))
        if not Path(src).is_dir():
            raise UserError(f"SRC {src} is not a folder")
        return "created"

    @classmethod
    def open(cls, db_path):
        cls.calls.append(("open", db_path))
        raise UserError(f"{db_path} is not a migrate-tui run file")


@pytest.fixture
def fake_engine(monkeypatch):
    """Stands in for engine.migration / engine.errors, which the lead writes."""
    errors = types.ModuleType("engine.errors")
    errors.UserError = UserError
    migration = types.ModuleType("engine.migration")
    migration.Migration = FakeMigration
    FakeMigration.calls = []
    monkeypatch.setitem(sys.modules, "engine.errors", errors)
    monkeypatch.setitem(sys.modules, "engine.migration", migration)
    return FakeMigration


def test_engine_user_errors_become_one_line_exit_2(fake_engine, capsys, tmp_path):
    db = tmp_path / "run.duckdb"
    assert main(["--db", str(db), str(tmp_path / "missing"), str(tmp_path)]) == 2
    assert capsys.readouterr().err == f"migrate-tui: error: SRC {tmp_path / 'missing'} is not a folder\n"

    db.write_bytes(b"not duckdb")
    assert main(["--db", str(db)]) == 2
    assert capsys.readouterr().err == f"migrate-tui: error: {db} is not a migrate-tui run file\n"


def test_new_run_starts_and_existing_file_opens(fake_engine, tmp_path, monkeypatch):
    db = tmp_path / "run.duckdb"
    launched = cli.launch(cli.parse_args(["--db", str(db), str(tmp_path), str(tmp_path), "--dry-run"]))
    assert launched.controller == "created" and launched.start_run is True
    assert fake_engine.calls == [("create", str(db), str(tmp_path), str(tmp_path), True)]

    monkeypatch.setattr(FakeMigration, "open", classmethod(lambda cls, path: ("opened", path)))
    db.write_bytes(b"")
    launched = cli.launch(cli.parse_args(["--db", str(db)]))
    assert launched.controller == ("opened", str(db)) and launched.start_run is False


def test_unexpected_engine_failure_is_still_one_line(fake_engine, capsys, tmp_path, monkeypatch):
    def explode(cls, path):
        raise KeyError("phase")

    monkeypatch.setattr(FakeMigration, "open", classmethod(explode))
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
    from types import SimpleNamespace

    from tui.samples import FakeController
    assert cli.unfinished_run(SimpleNamespace(drove_run=True), FakeController("copy")) is not None
    assert cli.unfinished_run(SimpleNamespace(drove_run=True), FakeController("finished")) is None
    assert cli.unfinished_run(SimpleNamespace(drove_run=False), FakeController("interrupted")) is None
