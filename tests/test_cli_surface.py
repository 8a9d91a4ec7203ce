"""The command line as an rsync or rclone user types it: -n for a dry run, --version."""

from __future__ import annotations

from importlib.metadata import version

import pytest

from engine import cli
from support import report, run_cli


def test_n_is_a_dry_run_that_writes_nothing_to_the_destination(capsys, tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    (src / "sub").mkdir(parents=True)
    (src / "sub" / "a.txt").write_text("a")
    db = tmp_path / "run.duckdb"
    code, _, err = run_cli(capsys, "run", "-n", str(src), str(dst), "--db", str(db))
    assert code == 0, err
    assert not dst.exists()
    assert {(r["path"], r["action"]) for r in report(capsys, db) if r["side"] == "src"} == {
        ("sub", "copy"), ("sub/a.txt", "copy")}


def test_version_names_the_installed_package_and_exits_0(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--version"])
    assert exit_.value.code == 0
    captured = capsys.readouterr()
    assert captured.out == f"migrate (migrate-tui) {version('migrate-tui')}\n"
    assert captured.err == ""


def test_n_with_use_plan_is_refused_before_anything_is_written(capsys, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    db = tmp_path / "run.duckdb"
    code, out, err = run_cli(capsys, "run", "-n", "--use-plan", str(src), str(tmp_path / "dst"), "--db", str(db))
    assert code == 2 and out == ""
    assert err == "migrate: error: --use-plan copies a dry run's plan and --dry-run copies nothing: give one of them\n"
    assert not db.exists() and not (tmp_path / "dst").exists()
