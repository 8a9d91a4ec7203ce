"""The command line as an rsync or rclone user types it: -n for a dry run, --version."""

from __future__ import annotations

import os
import shlex
import subprocess
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


def test_a_dry_run_ends_with_the_command_that_copies_its_plan(capsys, tmp_path, monkeypatch):
    """The summary and `migrate status` give the --use-plan command, quoted so that pasting it works,
    from any folder: run as printed, it copies the plan."""
    src, dst, db = tmp_path / "my src", tmp_path / "dst", tmp_path / "run 1.duckdb"
    src.mkdir()
    (src / "it's.txt").write_text("a")
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(capsys, "run", "-n", str(src), str(dst), "--db", db.name)
    assert code == 0, err
    printed = [line.split("next", 1)[1].split("   (")[0].strip() for line in out.splitlines()
               if line.startswith("  next ")]
    assert len(printed) == 1
    code, status, _ = run_cli(capsys, "status", "--db", str(db))
    assert code == 0 and f"next     {printed[0]}   (copies this plan as reviewed)" in status

    argv = shlex.split(printed[0])
    assert argv[:2] == ["migrate", "run"] and argv[-1] == "--use-plan"
    monkeypatch.chdir(src)  # pasted elsewhere: the same run file
    code, out, err = run_cli(capsys, *argv[1:])
    assert code == 0 and "copying the dry run's plan as it stands" in err, err
    assert (dst / "it's.txt").read_text() == "a" and "  next " not in out


@pytest.mark.parametrize("name", ["a b", "it's \"q\"", "-dash", "日本語", b"dst\xff bad", "new\nline", "tab\there",
                                  b"\xe9t\xc3\xa9 '\\x", "back\\slash"])
def test_printed_paths_paste_back_as_the_same_bytes(name):
    """What bash makes of a quoted path is the path's bytes, whatever the name (raw bytes, controls)."""
    path = "/tmp/" + (os.fsdecode(name) if isinstance(name, bytes) else name)
    quoted = cli.shell_quote(path)
    assert quoted.isprintable()  # no raw byte or control: a terminal shows it as it is, on one line
    pasted = subprocess.run(["bash", "-c", f"printf %s {quoted}"], capture_output=True, check=True).stdout
    assert pasted == os.fsencode(path)


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
@pytest.mark.parametrize("argv", [["config", "show"], ["--version"]])
def test_standard_output_on_a_full_disk_is_one_line_not_a_traceback(argv):
    import sys
    with open("/dev/full", "w") as full:
        result = subprocess.run([sys.executable, "-c", "from engine.cli import entry; entry()", *argv],
                                stdout=full, stderr=subprocess.PIPE, text=True, timeout=60)
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [
        "migrate: error: cannot write standard output (No space left on device); what it shows is incomplete: "
        "free some space or send it elsewhere"], result.stderr
