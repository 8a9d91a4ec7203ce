"""Acceptance for the copy phase on a tricky 20k-file tree: bytes, mtimes, newer and destination-only
files untouched, no temporary files, and a second run that copies nothing."""

from __future__ import annotations

import os
import shutil
import socket
import time
from pathlib import Path

import pytest
from support import CannotListLocked, report, run_cli, tree_state

from engine.adapters.local import LocalAdapter
from engine.errors import UserError
from engine.migration import Migration
from engine.model import MTIME_WINDOW_NS, TEMP_SUFFIX, temp_name
from engine.settings import Settings


def test_run_copies_everything_and_touches_nothing_it_must_not(capsys, tree_20k, tmp_path):
    tree, expected, dst = tree_20k
    db = tmp_path / "run.duckdb"
    before = tree_state(dst)
    src_state = tree_state(tree.root)

    code, out, err = run_cli(capsys, "run", str(tree.root), str(dst), "--db", str(db))
    assert code == 0, err
    after = tree_state(dst)

    for path in tree.files:
        kind, data, mtime = after[path]
        if path in expected.newer_on_dst:
            assert data == expected.newer_on_dst[path], f"newer destination file overwritten: {path!r}"
            assert after[path] == before[path]
            continue
        assert kind == "file" and data == src_state[path][1], f"bytes differ: {path!r}"
        assert abs(mtime - src_state[path][2]) <= MTIME_WINDOW_NS, f"mtime not kept: {path!r}"
    for path in tree.folders:
        assert after[path] == ("folder",), f"folder missing: {path!r}"
    for path in tree.symlinks:
        assert after[path][:2] == src_state[path][:2], f"symlink not recreated as a symlink: {path!r}"
    for path in expected.not_on_src:
        assert after[path] == before[path], f"destination-only file touched: {path!r}"
    leftovers = [p for p in after if os.path.basename(p).endswith(TEMP_SUFFIX)]
    assert not leftovers, leftovers
    assert set(after) == set(src_state) | set(before)
    # zero-byte and multi-megabyte files were among them
    sizes = {len(src_state[p][1]) for p in tree.files}
    assert 0 in sizes and max(sizes) >= 3 << 20

    code, out, err = run_cli(capsys, "run", str(tree.root), str(dst), "--db", str(db))
    assert code == 0, err
    assert "nothing to copy" in out and "copied 0 (0 Bytes)" in out
    assert tree_state(dst) == after


def test_copy_then_status_and_report_show_copied(capsys, tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    (src / "a").mkdir(parents=True)
    (src / "a" / "one").write_bytes(b"1")
    db = tmp_path / "run.duckdb"
    assert run_cli(capsys, "run", str(src), str(dst), "--db", str(db))[0] == 0
    code, out, _ = run_cli(capsys, "status", "--db", str(db))
    assert code == 0 and "phase    done" in out and "1 files" in out
    assert (dst / "a" / "one").read_bytes() == b"1"


def test_verify_setting_copies_and_checks(capsys, tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    (src / "data.bin").write_bytes(os.urandom(1 << 20))
    db = tmp_path / "run.duckdb"
    code, _, err = run_cli(capsys, "run", str(src), str(dst), "--db", str(db), "--verify")
    assert code == 0, err
    assert (dst / "data.bin").read_bytes() == (src / "data.bin").read_bytes()


def test_excluded_entries_are_recorded_and_never_copied(capsys, tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    (src / "keep").mkdir(parents=True)
    (src / "node_modules" / "pkg").mkdir(parents=True)
    (src / "keep" / "a.txt").write_text("a")
    (src / "keep" / "b.tmp").write_text("b")
    (src / "node_modules" / "pkg" / "index.js").write_text("js")
    db = tmp_path / "run.duckdb"
    code, out, err = run_cli(capsys, "run", str(src), str(dst), "--db", str(db),
                             "--exclude", "*.tmp", "--exclude", "node_modules/")
    assert code == 0, err
    assert sorted(p for p in tree_state(dst)) == ["keep", "keep/a.txt"]
    assert "excluded     2 source entries" in out  # keep/b.tmp and node_modules (not listed, so once)
    assert "; excluded 2" in run_cli(capsys, "status", "--db", str(db))[1]
    from support import report
    rows = {r["path"]: r for r in report(capsys, db) if r["side"] == "src"}
    assert rows["keep/b.tmp"]["traversal_status"] == "excluded"
    assert rows["node_modules"]["traversal_status"] == "excluded"
    assert "node_modules/pkg" not in rows, "an excluded folder was listed"


def test_exclude_character_classes_follow_git(capsys, tmp_path):
    """[...] as in git: a class never matches '/' (so 'a[!x]c' keeps the file c in folder a), and POSIX
    classes ('[[:digit:]]') work, with no Python warning on stderr."""
    src, dst, db = tmp_path / "src", tmp_path / "dst", tmp_path / "run.duckdb"
    (src / "a").mkdir(parents=True)
    for name in ("a/c", "abc", "axc", "1file", "xfile"):
        (src / name).write_text(name)
    code, out, err = run_cli(capsys, "run", str(src), str(dst), "--db", str(db),
                             "--exclude", "a[!x]c", "--exclude", "[[:digit:]]file")
    assert code == 0 and "Warning" not in err, err
    assert sorted(tree_state(dst)) == ["a", "a/c", "axc", "xfile"]
    assert "excluded     2 source entries" in out


def test_a_double_star_inside_a_name_does_not_cross_folders(capsys, tmp_path):
    """As in git, '**' is special only as a whole path component: in 'foo**bar' it is a plain '*', so the
    file bar in folder foo is copied."""
    src, dst, db = tmp_path / "src", tmp_path / "dst", tmp_path / "run.duckdb"
    (src / "foo").mkdir(parents=True)
    for name in ("foo/bar", "foobar", "foo-and-bar"):
        (src / name).write_text(name)
    code, _, err = run_cli(capsys, "run", str(src), str(dst), "--db", str(db), "--exclude", "foo**bar")
    assert code == 0, err
    assert sorted(tree_state(dst)) == ["foo", "foo/bar"]


def test_exclude_spaces_are_read_as_git_reads_them(capsys, tmp_path):
    """A trailing space escaped with a backslash is part of the name ('trail\\ ' excludes 'trail '), and
    leading spaces are part of it too (' lead' excludes ' lead', not 'lead'), as in a .gitignore."""
    src, dst, db = tmp_path / "src", tmp_path / "dst", tmp_path / "run.duckdb"
    src.mkdir()
    for name in ("trail ", "trail\\", " lead", "lead"):
        (src / name).write_text(name)
    code, _, err = run_cli(capsys, "run", str(src), str(dst), "--db", str(db),
                           "--exclude", "trail\\ ", "--exclude", " lead")
    assert code == 0, err
    assert sorted(tree_state(dst)) == ["lead", "trail\\"]


def test_permission_bits_follow_the_source(capsys, tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    (src / "script.sh").write_text("#!/bin/sh\n")
    (src / "script.sh").chmod(0o750)
    (src / "secret").write_text("s")
    (src / "secret").chmod(0o600)
    assert run_cli(capsys, "run", str(src), str(dst), "--db", str(tmp_path / "r.duckdb"))[0] == 0
    assert (dst / "script.sh").stat().st_mode & 0o7777 == 0o750
    assert (dst / "secret").stat().st_mode & 0o7777 == 0o600


def _mode_and_time(path: Path) -> tuple[int, int]:
    st = path.lstat()
    return st.st_mode & 0o7777, st.st_mtime_ns


@pytest.mark.parametrize("copy_processes", [True, False])
def test_folders_and_identical_files_end_with_the_source_modes_and_times(capsys, tmp_path, copy_processes):
    """As rsync -a SRC/ DST/ leaves them: made folders (and the root) get the source's mode (even without
    owner write: filled first) and mtime (which writing into them changed); folders and identical files
    already there get the source's mode where it differs; a file kept because it is newer on DST keeps its
    own."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    (src / "ro" / "deep").mkdir(parents=True)
    (src / "ro" / "a").write_text("a")
    (src / "ro" / "deep" / "z").write_text("z")
    (src / "there").mkdir()
    (src / "there" / "new").write_text("new")
    for rel in ("same", "newer"):
        (src / rel).write_text(rel)
        os.utime(src / rel, (1_000_000_000, 1_000_000_000))
    (dst / "there").mkdir(parents=True)
    (dst / "there").chmod(0o700)
    (dst / "same").write_text("same")
    os.utime(dst / "same", (1_000_000_000, 1_000_000_000))
    (dst / "newer").write_text("newer on DST")
    (dst / "newer").chmod(0o604)
    (src / "same").chmod(0o640)
    (src / "newer").chmod(0o640)
    (src / "there").chmod(0o750)
    for folder in ("ro/deep", "ro"):
        (src / folder).chmod(0o555)
    src.chmod(0o750)
    for folder in ("ro/deep", "ro", "there", ""):
        os.utime(src / folder, (1_100_000_000, 1_100_000_000))
    newer_before = _mode_and_time(dst / "newer")

    code, _, err = run_cli(capsys, "run", str(src), str(dst), "--db", str(tmp_path / "r.duckdb"),
                           f"--{'' if copy_processes else 'no-'}copy-processes")
    assert code == 0, err
    for rel in ("", "ro", "ro/deep", "there", "same", "ro/a", "ro/deep/z", "there/new"):
        assert _mode_and_time(dst / rel) == _mode_and_time(src / rel), rel  # "": the roots too, as rsync -a
    assert _mode_and_time(dst / "newer") == newer_before
    assert (dst / "ro" / "deep" / "z").read_text() == "z"


@pytest.mark.parametrize("copy_processes", [True, False])
def test_made_folders_end_with_the_source_setgid_and_setuid_bits(capsys, tmp_path, copy_processes):
    """mkdir never takes setuid or setgid from its mode, and a new folder inherits setgid from the folder
    it is made in: as rsync -a leaves them, made folders still end with exactly the source's mode (a
    source folder with g+s keeps it; one without it does not take it from a shared g+s destination)."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    for rel in ("g/inner", "u", "plain/deep"):
        (src / rel).mkdir(parents=True)
    (src / "g" / "inner" / "f").write_text("f")
    (src / "plain" / "deep" / "f").write_text("f")
    (src / "g").chmod(0o2755)
    (src / "u").chmod(0o4755)
    src.chmod(0o2755)
    dst.mkdir()
    dst.chmod(0o2755)  # a shared group folder: what is made in it inherits setgid

    code, _, err = run_cli(capsys, "run", str(src), str(dst), "--db", str(tmp_path / "r.duckdb"),
                           f"--{'' if copy_processes else 'no-'}copy-processes")
    assert code == 0, err
    for rel in ("g", "g/inner", "u", "plain", "plain/deep"):
        assert (dst / rel).stat().st_mode & 0o7777 == (src / rel).stat().st_mode & 0o7777, rel


def test_roots_given_through_symlinks_get_the_source_root_mode_and_time(capsys, tmp_path):
    """rsync -a src/ link/ gives the source root's mode and mtime to the folder link leads to: the roots are
    the operator's paths, followed (nothing below them is)."""
    real_src, real_dst = tmp_path / "real src", tmp_path / "real dst"
    (real_src / "sub").mkdir(parents=True)
    (real_src / "sub" / "f").write_text("f")
    real_dst.mkdir()
    real_src.chmod(0o750)
    os.utime(real_src, (1_100_000_000, 1_100_000_000))
    os.symlink(real_src, tmp_path / "src")
    os.symlink(real_dst, tmp_path / "dst")
    code, _, err = run_cli(capsys, "run", str(tmp_path / "src"), str(tmp_path / "dst"), "--db",
                           str(tmp_path / "r.duckdb"))
    assert code == 0, err
    assert _mode_and_time(real_dst) == _mode_and_time(real_src)
    assert (real_dst / "sub" / "f").read_text() == "f" and os.path.islink(tmp_path / "dst")


@pytest.mark.parametrize("list_processes", [True, False])
def test_special_files_are_named_and_left_out(capsys, tmp_path, list_processes):
    """FIFOs and sockets are not migrated (as rclone): each is named in a note, counted in the summary,
    never opened (a FIFO would block a reader); an excluded one is not even named."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    (src / "sub").mkdir(parents=True)
    (src / "sub" / "a.txt").write_text("a")
    os.mkfifo(src / "sub" / "pipe")
    os.mkfifo(src / "skip.fifo")
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(src / "listener"))
        code, out, err = run_cli(capsys, "run", str(src), str(dst), "--db", str(tmp_path / "r.duckdb"),
                                 "--exclude", "*.fifo", f"--{'' if list_processes else 'no-'}list-processes")
    assert code == 0, err
    notes = sorted(line for line in err.splitlines() if line.startswith("migrate: note: "))
    assert notes == ["migrate: note: 'listener' is a socket: not migrated (only folders, files and symlinks are)",
                     "migrate: note: 'sub/pipe' is a FIFO: not migrated (only folders, files and symlinks are)"]
    assert "not migrated 2 special files on the source" in out
    assert sorted(tree_state(dst)) == ["sub", "sub/a.txt"]


def test_names_of_255_bytes_are_copied(capsys, tmp_path):
    """The longest names Linux allows: the temporary name beside them must stay within 255 bytes too."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    (src / "n").mkdir(parents=True)
    names = ["L" * 255, "é" * 127 + "x", "\udcff" * 255]  # ASCII, two-byte UTF-8, bytes that are not UTF-8
    assert [len(os.fsencode(n)) for n in names] == [255, 255, 255]
    for i, name in enumerate(names):
        (src / "n" / name).write_bytes(b"x" * (i + 1))
    code, _, err = run_cli(capsys, "run", str(src), str(dst), "--db", str(tmp_path / "r.duckdb"))
    assert code == 0, err
    assert sorted(os.listdir(dst / "n")) == sorted(names)
    assert all((dst / "n" / name).read_bytes() == b"x" * (i + 1) for i, name in enumerate(names))


@pytest.mark.parametrize("copy_processes", [True, False])
@pytest.mark.parametrize("in_the_way", ["symlink", "file"])
def test_nothing_is_written_into_or_through_what_stands_where_a_source_folder_goes(capsys, tmp_path, in_the_way,
                                                                                   copy_processes):
    """A destination symlink (to a folder elsewhere) or file where the source has a folder is kept, and the
    folder's whole subtree fails naming it: a write through the symlink would land outside the destination.
    Once the operator moves it away, a retry copies the subtree."""
    src, dst, elsewhere = tmp_path / "src", tmp_path / "dst", tmp_path / "elsewhere"
    (src / "keep" / "a" / "b").mkdir(parents=True)
    for rel in ("keep/ok.txt", "keep/a/f1", "keep/a/b/f2"):
        (src / rel).write_text(rel)
    (dst / "keep").mkdir(parents=True)
    elsewhere.mkdir()
    obstacle = dst / "keep" / "a"
    if in_the_way == "symlink":
        obstacle.symlink_to(elsewhere)
    else:
        obstacle.write_text("in the way")
        os.utime(obstacle, (1_000_000_000, 1_000_000_000))  # older than the source folder
    before = tree_state(dst)
    db, flag = str(tmp_path / "r.duckdb"), f"--{'' if copy_processes else 'no-'}copy-processes"

    code, out, err = run_cli(capsys, "run", str(src), str(dst), "--db", db, flag)
    assert code == 1 and "failed       4" in out, err
    assert os.listdir(elsewhere) == []
    after = tree_state(dst)
    assert after["keep/a"] == before["keep/a"]
    assert sorted(after) == ["keep", "keep/a", "keep/ok.txt"]
    failed = {row["path"]: row["error"] for row in report(capsys, Path(db), "--failed")}
    cause = f"the destination has a {in_the_way} where the source has a folder"
    assert failed == {"keep/a": cause, **{rel: f"not copied: its folder 'keep/a' could not be made on the "
                                               f"destination ({cause})" for rel in ("keep/a/b", "keep/a/f1",
                                                                                   "keep/a/b/f2")}}

    obstacle.unlink()
    code, out, err = run_cli(capsys, "retry", "--db", db, flag)
    assert code == 0, err
    assert (dst / "keep" / "a" / "b" / "f2").read_text() == "keep/a/b/f2"
    assert (dst / "keep" / "a" / "f1").read_text() == "keep/a/f1"


class StopAtTheFirstFile(LocalAdapter):
    """A destination that stops its migration, gracefully, as the first file is written."""

    migration: Migration

    def create_temp_fd(self, folder, name):
        self.migration.stop()
        return super().create_temp_fd(folder, name)


def stopped_in_its_copy(src: Path, dst: Path, db: Path) -> None:
    """A run of top.txt, b/f and b/c/g stopped as its first file is written: b and b/c made on DST, the
    file in hand (top.txt) done, the rest left for a resume."""
    (src / "b" / "c").mkdir(parents=True)
    for rel in ("top.txt", "b/f", "b/c/g"):
        (src / rel).write_text(rel)
    dst_adapter = StopAtTheFirstFile(dst)
    first = Migration.create(str(db), str(src), str(dst), Settings(copy_processes=False), dst_adapter=dst_adapter)
    dst_adapter.migration = first
    first.start()
    assert first.wait(60) and first.phase == "copy"
    first.close()


@pytest.mark.parametrize("side", ["destination", "source"])
def test_a_resume_goes_through_no_folder_that_became_a_symlink(capsys, tmp_path, side):
    """A run stopped in its copy; meanwhile its folder 'b' is moved to another disk and linked back, on
    DST or on SRC. The resume must neither write b's files there nor copy what is there (O_NOFOLLOW
    guards the last name of a path only)."""
    src, dst, elsewhere, db = tmp_path / "src", tmp_path / "dst", tmp_path / "other disk", tmp_path / "r.duckdb"
    stopped_in_its_copy(src, dst, db)
    assert sorted(tree_state(dst)) == ["b", "b/c", "top.txt"]  # the file in hand when it stopped is done
    os.utime(src / "b" / "c", (1_000_000_000, 1_000_000_000))  # what a restore of b/c's mtime would set
    moved = (dst if side == "destination" else src) / "b"
    os.rename(moved, elsewhere)
    os.symlink(elsewhere, moved)
    elsewhere_before = tree_state(elsewhere), (elsewhere / "c").stat().st_mtime_ns

    code, out, err = run_cli(capsys, "resume", "--db", str(db))
    assert code == 1, err
    assert (dst / "top.txt").read_text() == "top.txt"
    assert (tree_state(elsewhere), (elsewhere / "c").stat().st_mtime_ns) == elsewhere_before
    if side == "source":
        assert sorted(tree_state(dst / "b")) == ["c"]
    failed = {row["path"]: row["error"] for row in report(capsys, db, "--failed")}
    reason = f"not copied: 'b' on the {side} is a symlink now, not a folder"
    assert failed == {"b/f": reason, "b/c/g": reason}


def test_a_run_after_a_dry_run_compares_again_unless_told_to_copy_its_plan(capsys, tmp_path):
    """What changed after the dry run (a DST file deleted, a SRC file edited, a new one) is copied: the plan
    alone would call the destination up to date. --use-plan copies the plan as the operator reviewed it."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    for name in ("a", "b"):
        (src / name).write_text(name)
        os.utime(src / name, (1_000_000_000, 1_000_000_000))
    assert run_cli(capsys, "run", str(src), str(dst), "--db", str(tmp_path / "first.duckdb"))[0] == 0

    # --use-plan asks for a plan: where there is none (no file, a finished copy) nothing is compared or written
    for db in (tmp_path / "none.duckdb", tmp_path / "first.duckdb"):
        before = tree_state(dst)
        code, out, err = run_cli(capsys, "run", str(src), str(dst), "--db", str(db), "--use-plan")
        assert code == 2 and err.count("\n") == 1 and f"--use-plan: '{db}' holds no dry run's plan to copy" in err
        assert tree_state(dst) == before
    assert not (tmp_path / "none.duckdb").exists()

    for use_plan in (False, True):
        db = str(tmp_path / f"plan-{use_plan}.duckdb")
        assert run_cli(capsys, "run", str(src), str(dst), "--db", db, "--dry-run")[0] == 0
        (dst / "a").unlink()
        (src / "b").write_text(f"b, edited {use_plan}")
        (src / f"new {use_plan}").write_text("new")
        code, out, err = run_cli(capsys, "run", str(src), str(dst), "--db", db, *(["--use-plan"] if use_plan else []))
        assert code == 0, err
        if use_plan:
            assert "copying the dry run's plan as it stands" in err and "nothing to copy" in out
            assert not (dst / "a").exists() and not (dst / f"new {use_plan}").exists()
        else:
            assert "comparing the trees again" in err
            assert sorted(os.listdir(dst)) == ["a", "b", "new False"]
            assert (dst / "b").read_text() == "b, edited False"


@pytest.mark.parametrize("list_processes", [True, False])
def test_a_temporary_left_by_a_killed_run_goes_when_a_new_run_copies(capsys, tmp_path, list_processes):
    """A run killed mid-file leaves its temporary; an operator who starts over with a new --db (not a
    resume, which sweeps its own) must not keep it forever. A dry run writes nothing: it stays until then.
    A user's file that only looks alike stays always."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    (src / "sub").mkdir(parents=True)
    (src / "sub" / "f").write_text("f")
    (dst / "sub").mkdir(parents=True)
    leftover = dst / "sub" / f".f.0123abcd{TEMP_SUFFIX}"
    leftover.write_text("half of f")
    users = dst / "sub" / f".draft{TEMP_SUFFIX}"
    users.write_text("mine")
    alike = dst / "sub" / f".notes.abcdef12{TEMP_SUFFIX}"  # our form exactly, but for no source file 'notes'
    alike.write_text("mine too")
    flag = f"--{'' if list_processes else 'no-'}list-processes"

    code, _, err = run_cli(capsys, "run", str(src), str(dst), "--db", str(tmp_path / "dry.duckdb"), "--dry-run", flag)
    assert code == 0 and leftover.exists(), err
    code, out, err = run_cli(capsys, "run", str(src), str(dst), "--db", str(tmp_path / "new.duckdb"), flag)
    assert code == 0, err
    assert sorted(os.listdir(dst / "sub")) == [f".draft{TEMP_SUFFIX}", f".notes.abcdef12{TEMP_SUFFIX}", "f"]
    assert users.read_text() == "mine" and alike.read_text() == "mine too" and "dst only     1 " in out


@pytest.mark.parametrize("resumed", [False, True])
def test_a_file_in_the_temporaries_form_beside_a_source_folder_is_never_swept(capsys, tmp_path, resumed):
    """Temporaries are written for files and symlinks only: '.docs.<8 hex>.migrate-tmp' beside a source
    folder 'docs' is a destination-only file like any other, kept by a new run and by a resumed copy."""
    src, dst, db = tmp_path / "src", tmp_path / "dst", str(tmp_path / "r.duckdb")
    (src / "docs" / "sub").mkdir(parents=True)
    (src / "docs" / "sub" / "a").write_text("a")
    (src / "docs" / "b").write_text("b")  # files to copy beside both: their folders are swept
    (src / "top").write_text("top")
    (dst / "docs").mkdir(parents=True)
    alike = [dst / f".docs.abcdef12{TEMP_SUFFIX}", dst / "docs" / f".sub.0123abcd{TEMP_SUFFIX}"]
    for path in alike:
        path.write_text("mine")
    if resumed:  # a plan copied later: the copy sweeps the folders it has files to copy in
        assert run_cli(capsys, "run", str(src), str(dst), "--db", db, "--dry-run")[0] == 0
    code, out, err = run_cli(capsys, "run", str(src), str(dst), "--db", db, *(["--use-plan"] if resumed else []))
    assert code == 0, err
    assert (dst / "docs" / "sub" / "a").read_text() == "a"
    assert all(path.read_text() == "mine" for path in alike)


@pytest.mark.parametrize("long_name", ["L" * 250, "\u00e9" * 120], ids=["ascii", "cut-inside-a-character"])
def test_a_temporary_of_a_name_too_long_for_it_goes_too(capsys, tmp_path, long_name):
    """A NAME over 233 bytes is cut in its temporary's name (.NAME.<hex>.migrate-tmp fits 255 bytes): such a
    temporary, left by a killed run, stayed for good. One of that form for no source file stays."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    (src / long_name).write_text("f")
    dst.mkdir()
    leftover = dst / temp_name(long_name, "0123abcd")
    leftover.write_text("half of f")
    alike = dst / temp_name("M" * 250, "abcdef12")  # our form, cut, but for no source file
    alike.write_text("mine")
    assert len(os.fsencode(leftover.name)) == 255

    code, out, err = run_cli(capsys, "run", str(src), str(dst), "--db", str(tmp_path / "new.duckdb"))
    assert code == 0, err
    assert sorted(os.listdir(dst)) == sorted([alike.name, long_name])
    assert (dst / long_name).read_text() == "f" and alike.read_text() == "mine"


def test_a_retried_folder_ends_with_the_mode_it_has_when_it_is_listed(capsys, tmp_path):
    """A folder that could not be listed is made on DST open to its owner and left so (a retry must fill
    it); once the operator fixes it and retries, it is listed, filled, and given its mode of now, not the
    one its parent's listing saw before the fix."""
    src, dst, db = tmp_path / "src", tmp_path / "dst", tmp_path / "r.duckdb"
    (src / "locked").mkdir(parents=True)
    (src / "locked" / "inside").write_text("inside")
    (src / "locked").chmod(0o500)
    first = Migration.create(str(db), str(src), str(dst), Settings(list_processes=False),
                             src_adapter=CannotListLocked(src))
    first.start()
    assert first.wait(60) and first.summary.failed == 1
    first.close()
    assert (dst / "locked").stat().st_mode & 0o700 == 0o700 and not (dst / "locked" / "inside").exists()

    (src / "locked").chmod(0o750)
    code, out, err = run_cli(capsys, "retry", "--db", str(db))
    assert code == 0, err
    assert (dst / "locked" / "inside").read_text() == "inside"
    assert (dst / "locked").stat().st_mode & 0o7777 == 0o750


def run_losing_one_entry(db, src, dst, settings: Settings, source: LocalAdapter) -> None:
    """A run to its end on a source that loses one entry on the way: counted as vanished, nothing failed."""
    m = Migration.create(str(db), str(src), str(dst), settings, src_adapter=source)
    m.start()
    assert m.wait(60) and m.phase == "done"
    assert (m.summary.failed, m.summary.vanished) == (0, 1)
    m.close()


class DeletesAfterListing(LocalAdapter):
    """A source on which 'tmp/scratch' is deleted after its listing, before its copy (as a build's
    temporary file is), the first time a copy opens it."""

    def open_file_fd(self, path):
        if path == "tmp/scratch" and os.path.exists(self.abs(path)):
            os.unlink(self.abs(path))
        return super().open_file_fd(path)


def test_a_source_file_deleted_after_its_listing_is_counted_not_failed(capsys, tmp_path):
    """rsync warns about a vanished file; a retry could never copy it: not a failure (exit 0), a count in
    the summary, 'vanished' in the report, and nothing on DST."""
    src, dst, db = tmp_path / "src", tmp_path / "dst", tmp_path / "r.duckdb"
    (src / "tmp").mkdir(parents=True)
    (src / "tmp" / "scratch").write_text("soon gone")
    (src / "tmp" / "kept").write_text("kept")
    run_losing_one_entry(db, src, dst, Settings(copy_processes=False), DeletesAfterListing(src))
    assert sorted(tree_state(dst)) == ["tmp", "tmp/kept"]
    rows = {row["path"]: row for row in report(capsys, db)}
    assert rows["tmp/scratch"]["action"] == "vanished" and rows["tmp/kept"]["action"] == "copy"
    code, out, _ = run_cli(capsys, "status", "--db", str(db))
    assert "failed   0; vanished 1" in out
    code, out, err = run_cli(capsys, "retry", "--db", str(db))
    assert code == 0 and "vanished     1 source entries deleted after they were listed" in out, err


def test_a_dry_run_names_what_the_destination_has_in_the_way(capsys, tmp_path):
    """The plan says copy (the source differs), but the copy will refuse to replace a symlink by a folder or
    an older folder by a file: the dry run says so before anything is tried."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    (src / "blk" / "sub").mkdir(parents=True)
    (src / "blk" / "inner").write_text("1")
    (src / "blk" / "sub" / "deep").write_text("1")
    (src / "plain").write_text("2")
    (src / "fine").write_text("3")
    (dst / "plain").mkdir(parents=True)
    os.utime(dst / "plain", (1_000_000_000, 1_000_000_000))
    (dst / "blk").symlink_to(tmp_path)
    code, out, err = run_cli(capsys, "run", str(src), str(dst), "--db", str(tmp_path / "r.duckdb"), "--dry-run")
    assert code == 0, err
    line = next(line for line in out.splitlines() if "will fail" in line)
    assert line.strip().startswith("will fail    5 entries: 2 blocked by what the destination has there, and the "
                                   "3 below them")
    assert "'blk': a symlink where the source has a folder; 'plain': a folder where the source has a file" in line
    code, out, err = run_cli(capsys, "run", str(src), str(dst), "--db", str(tmp_path / "r.duckdb"))
    assert code == 1 and "will fail" not in out  # the real run fails them, with their reasons
    assert "  failed       5\n" in out  # as many as the dry run said
    assert (dst / "fine").read_text() == "3"


@pytest.mark.parametrize("list_processes", [True, False])
def test_a_source_file_named_like_a_temporary_is_kept_newer_not_swept(capsys, tmp_path, list_processes):
    """'.notes.20240101.migrate-tmp' has the form of our temporaries (8 hex digits), but the source has it:
    it is copied like any file, and once newer on the destination it is kept, never swept away."""
    src, dst, db = tmp_path / "src", tmp_path / "dst", str(tmp_path / "r.duckdb")
    name = f".notes.20240101{TEMP_SUFFIX}"
    src.mkdir()
    (src / name).write_text("precious")
    flag = f"--{'' if list_processes else 'no-'}list-processes"
    assert run_cli(capsys, "run", str(src), str(dst), "--db", db, flag)[0] == 0
    assert (dst / name).read_text() == "precious"
    (dst / name).write_text("edited on the destination")
    later = time.time_ns() + 3600 * 10**9
    os.utime(dst / name, ns=(later, later))
    code, out, err = run_cli(capsys, "run", str(src), str(dst), "--db", db, flag)
    assert code == 0, err
    assert (dst / name).read_text() == "edited on the destination"


class DeletesBeforeListing(LocalAdapter):
    """A source whose folder 'gone' is deleted after its parent's listing, just before its own."""

    def list(self, path, *args, **kwargs):
        if path == "gone":
            shutil.rmtree(self.abs(path))
        return super().list(path, *args, **kwargs)


def test_a_source_folder_deleted_after_its_parents_listing_is_vanished_not_failed(capsys, tmp_path):
    """Not a failure that every retry repeats, and not an empty folder made on DST for it."""
    src, dst, db = tmp_path / "src", tmp_path / "dst", tmp_path / "r.duckdb"
    (src / "gone" / "sub").mkdir(parents=True)
    (src / "gone" / "sub" / "f").write_text("f")
    (src / "kept").write_text("kept")
    run_losing_one_entry(db, src, dst, Settings(list_processes=False), DeletesBeforeListing(src))
    assert sorted(tree_state(dst)) == ["kept"]
    assert {row["path"]: row["action"] for row in report(capsys, db)}["gone"] == "vanished"
    code, out, err = run_cli(capsys, "retry", "--db", str(db))
    assert code == 0 and "failed       0" in out, err


@pytest.mark.parametrize("copy_processes", [True, False])
def test_a_source_folder_deleted_after_the_dry_run_is_not_made_by_its_plan(capsys, tmp_path, copy_processes):
    """Listed by the dry run, deleted before --use-plan copies its plan: vanished, as its files are, and
    no folder made on DST for a source that no longer has it (neither rsync nor rclone would make one)."""
    src, dst, db = tmp_path / "src", tmp_path / "dst", str(tmp_path / "r.duckdb")
    (src / "gone" / "sub").mkdir(parents=True)
    (src / "gone" / "sub" / "f").write_text("f")
    (src / "kept").write_text("kept")
    flag = f"--{'' if copy_processes else 'no-'}copy-processes"
    assert run_cli(capsys, "run", str(src), str(dst), "--db", db, "--dry-run", flag)[0] == 0
    shutil.rmtree(src / "gone")
    code, out, err = run_cli(capsys, "run", str(src), str(dst), "--db", db, "--use-plan", flag)
    assert code == 0 and "failed       0" in out, err
    assert sorted(tree_state(dst)) == ["kept"]
    actions = {row["path"]: row["action"] for row in report(capsys, tmp_path / "r.duckdb")}
    assert actions["gone"] == actions["gone/sub"] == "vanished"


def test_a_destination_folder_removed_before_a_resume_is_made_again(capsys, tmp_path):
    """An operator frees space after a full destination by removing a folder the run had made: the resume
    makes it again for the files still to copy into it, instead of failing them for ever."""
    src, dst, db = tmp_path / "src", tmp_path / "dst", tmp_path / "r.duckdb"
    stopped_in_its_copy(src, dst, db)
    shutil.rmtree(dst / "b")
    code, out, err = run_cli(capsys, "resume", "--db", str(db))
    assert code == 0, err
    assert (dst / "b" / "f").read_text() == "b/f" and (dst / "b" / "c" / "g").read_text() == "b/c/g"


@pytest.mark.parametrize("list_processes", [True, False])
def test_a_file_dated_after_2262_is_migrated_with_its_folder(capsys, tmp_path, list_processes):
    """Its mtime in ns does not fit 64 bits: it failed its whole folder's listing (and killed the listing
    process). It is listed as of 2262 on both sides: copied once, then left as it is (the copy compares the
    exact dates, which the run file cannot order: no second write)."""
    src, dst, db = tmp_path / "src", tmp_path / "dst", str(tmp_path / "r.duckdb")
    (src / "sub").mkdir(parents=True)
    (src / "sub" / "x").write_text("x")
    (src / "future").write_text("f")
    try:
        os.utime(src / "future", (16_725_225_600, 16_725_225_600))  # 2500-01-01
    except OSError:
        pytest.skip("this filesystem cannot store such a date")
    if (src / "future").stat().st_mtime_ns < 1 << 63:
        pytest.skip("this filesystem stores an earlier date")
    flag = f"--{'' if list_processes else 'no-'}list-processes"
    code, out, err = run_cli(capsys, "run", str(src), str(dst), "--db", db, flag)
    assert code == 0 and "failed       0" in out, err
    assert sorted(tree_state(dst)) == ["future", "sub", "sub/x"]
    copied = (dst / "future").stat()
    code, out, err = run_cli(capsys, "run", str(src), str(dst), "--db", db, flag)
    assert code == 0 and "failed       0" in out, err
    again = (dst / "future").stat()
    assert (again.st_ino, again.st_mtime_ns) == (copied.st_ino, copied.st_mtime_ns)  # a copy renames a new file


def test_a_file_dated_after_2262_replaces_an_older_copy_and_keeps_its_date(capsys, tmp_path):
    """Compared with a destination file, its mtime (stored as 64 bits' maximum) overflowed DuckDB's
    addition of the 2 s window: the dry run, the run and every resume failed. The copy sets the date as
    it is, not as the run file holds it."""
    src, dst, db = tmp_path / "src", tmp_path / "dst", str(tmp_path / "r.duckdb")
    src.mkdir()
    dst.mkdir()
    (src / "future").write_text("new content")
    (dst / "future").write_text("old")
    future_s = 13_569_465_600  # 2400-01-01
    try:
        os.utime(src / "future", (future_s, future_s))
    except OSError:
        pytest.skip("this filesystem cannot store such a date")
    if (src / "future").stat().st_mtime_ns != future_s * 10**9:
        pytest.skip("this filesystem stores another date")
    code, out, err = run_cli(capsys, "run", str(src), str(dst), "--db", db, "-n")
    assert code == 0, err
    assert {r["path"]: r["action"] for r in report(capsys, Path(db)) if r["side"] == "src"}["future"] == "copy"
    code, out, err = run_cli(capsys, "run", str(src), str(dst), "--db", db)
    assert code == 0 and "failed       0" in out, err
    assert (dst / "future").read_text() == "new content"
    assert (dst / "future").stat().st_mtime_ns == future_s * 10**9


def test_files_dated_past_2262_on_both_sides_are_compared_by_their_exact_dates(capsys, tmp_path):
    """The run file holds both as of 2262, so which is newer is unknown there: a newer destination file was
    overwritten, and an older one of the same size taken as identical. The copy now decides on the exact
    dates: the newer destination kept, the older one replaced, the identical one left as it is."""
    src, dst, db = tmp_path / "src", tmp_path / "dst", str(tmp_path / "r.duckdb")
    src.mkdir()
    dst.mkdir()
    y2270, y2300, y2310 = 9_498_441_600, 10_445_212_800, 10_760_832_000  # 2270-01-01, 2300-01-01, 2310-01-01
    below_the_limit = ((1 << 63) - 1_350_000_000) / 10**9  # 1.35 s before what the run file can hold
    cases = {"dst newer": ("source", y2300, "precious destination", y2310),
             "dst older": ("NEW", y2300, "OLD", y2270),
             "dst older, by the limit": ("NEW", y2300, "OLD", below_the_limit),
             "identical": ("same", y2300, "same", y2300)}
    for name, (src_text, src_s, dst_text, dst_s) in cases.items():
        for root, text, seconds in ((src, src_text, src_s), (dst, dst_text, dst_s)):
            (root / name).write_text(text)
            ns = int(seconds * 10**9) if isinstance(seconds, float) else seconds * 10**9
            try:
                os.utime(root / name, ns=(ns, ns))
            except OSError:
                pytest.skip("this filesystem cannot store such a date")
            if abs((root / name).stat().st_mtime_ns - ns) > 10**6:
                pytest.skip("this filesystem stores another date")
    (src / "identical").chmod(0o600)  # identical files end with the source's mode, as rsync -a leaves them
    (src / "folder").mkdir()
    (src / "folder" / "in it").write_text("x")
    os.utime(src / "folder", ns=(y2310 * 10**9, y2310 * 10**9))  # a folder's date is set last, from the source
    before = {name: (dst / name).stat().st_ino for name in cases}
    code, out, err = run_cli(capsys, "run", str(src), str(dst), "--db", db)
    assert code == 0 and "failed       0" in out, err
    assert {name: (dst / name).stat().st_ino == before[name] for name in cases} == \
        {"dst newer": True, "dst older": False, "dst older, by the limit": False, "identical": True}  # a copy
    # renames a new file over the old one
    assert (dst / "dst older, by the limit").read_text() == "NEW"
    assert (dst / "folder").stat().st_mtime_ns == y2310 * 10**9  # not the run file's 2262-04-11
    assert (dst / "dst newer").read_text() == "precious destination"
    assert (dst / "dst newer").stat().st_mtime_ns == y2310 * 10**9
    assert (dst / "dst older").read_text() == "NEW" and (dst / "dst older").stat().st_mtime_ns == y2300 * 10**9
    assert (dst / "identical").read_text() == "same" and (dst / "identical").stat().st_mode & 0o777 == 0o600
    actions = {r["path"]: r["action"] for r in report(capsys, Path(db)) if r["side"] == "src"}
    assert actions["dst newer"] == "keep_dst_newer"


def test_a_dry_runs_plan_is_copied_on_request_as_it_stands(capsys, tmp_path):
    """Migration.copy_plan (the console's c) copies what the dry run planned, like --use-plan: a source
    file added since is not seen; a run that is no finished dry run is refused, its file left as it was."""
    src, dst, db = tmp_path / "src", tmp_path / "dst", tmp_path / "run.duckdb"
    (src / "sub").mkdir(parents=True)
    (src / "sub" / "planned.txt").write_text("planned")
    assert run_cli(capsys, "run", str(src), str(dst), "--db", str(db), "-n")[0] == 0
    (src / "added since").write_text("added")

    migration = Migration.open(str(db))
    try:
        migration.copy_plan()
        assert migration.wait(60), "the copy hung"
        assert migration.phase == "done" and migration.summary.copied == 2 and migration.summary.failed == 0
        with pytest.raises(UserError, match="only a finished dry run's plan can be copied; this run's phase is 'done'"):
            migration.copy_plan()
    finally:
        migration.close()
    assert sorted(os.listdir(dst)) == ["sub"] and os.listdir(dst / "sub") == ["planned.txt"]
    assert (dst / "sub" / "planned.txt").read_text() == "planned"


def test_a_plan_whose_destination_was_replaced_is_not_copied_and_stays_a_plan(capsys, tmp_path):
    src, dst, db = tmp_path / "src", tmp_path / "dst", tmp_path / "run.duckdb"
    src.mkdir()
    dst.mkdir()
    (src / "a").write_text("a")
    assert run_cli(capsys, "run", str(src), str(dst), "--db", str(db), "--dry-run")[0] == 0
    dst.rename(tmp_path / "old dst")
    dst.mkdir()

    migration = Migration.open(str(db))
    try:
        planned = migration.summary
        with pytest.raises(UserError, match="is not the folder this run compared"):
            migration.copy_plan()
        assert migration.phase == "planned" and migration.dry_run and not migration.running
        assert migration.summary is planned and planned is not None and planned.to_copy == 1
    finally:
        migration.close()
    assert os.listdir(dst) == []
    code, out, _ = run_cli(capsys, "status", "--db", str(db))
    assert code == 0 and "phase    planned (dry run)" in out, out


def test_a_plan_opened_with_another_exclude_is_not_copied(capsys, tmp_path, monkeypatch):
    """A finished dry run opened while MIGRATE_EXCLUDE (or migrate.toml) names another exclude keeps its
    own, so its plan would copy what is excluded now: refused, as --use-plan would compare again."""
    from engine.config import apply_to_resumed_run, load
    src, dst, db = tmp_path / "src", tmp_path / "dst", tmp_path / "run.duckdb"
    (src / "cache").mkdir(parents=True)
    (src / "cache" / "big").write_text("big")
    assert run_cli(capsys, "run", str(src), str(dst), "--db", str(db), "-n")[0] == 0
    monkeypatch.setenv("MIGRATE_EXCLUDE", "cache")

    migration = Migration.open(str(db))
    try:
        notes = []
        apply_to_resumed_run(migration, load(db_path=str(db)), notes.append)
        assert len(notes) == 1 and "a new run would use it" in notes[0]
        with pytest.raises(UserError, match=r"made with exclude \[\], but MIGRATE_EXCLUDE gives \['cache'\]: it would"):
            migration.copy_plan()
        assert migration.phase == "planned" and migration.dry_run and not migration.running
    finally:
        migration.close()
    assert not dst.exists()


def test_use_plan_with_another_exclude_than_the_plans_is_refused(capsys, tmp_path):
    src, dst, db = tmp_path / "src", tmp_path / "dst", tmp_path / "run.duckdb"
    (src / "cache").mkdir(parents=True)
    (src / "cache" / "big").write_text("big")
    assert run_cli(capsys, "run", str(src), str(dst), "--db", str(db), "-n")[0] == 0
    code, _, err = run_cli(capsys, "run", str(src), str(dst), "--db", str(db), "--use-plan", "--exclude", "cache")
    assert code == 2 and "was made with exclude [], but --exclude, migrate.toml or MIGRATE_EXCLUDE gives ['cache']: " \
        "it would copy what that excludes" in err, err
    assert not dst.exists()
    code, out, _ = run_cli(capsys, "status", "--db", str(db))
    assert "phase    planned (dry run)" in out


def test_use_plan_keeps_the_plans_exclude_when_none_is_given(capsys, tmp_path):
    """The dry run's own 'next' command (--use-plan, no --exclude) copies its plan with the plan's excludes,
    as a resume keeps a run's settings: it is not refused, and what the plan excluded is not copied."""
    src, dst, db = tmp_path / "src", tmp_path / "dst", tmp_path / "run.duckdb"
    (src / "cache").mkdir(parents=True)
    (src / "cache" / "big").write_text("big")
    (src / "a.txt").write_text("a")
    code, out, _ = run_cli(capsys, "run", str(src), str(dst), "--db", str(db), "-n", "--exclude", "cache")
    assert code == 0 and "--exclude" not in out.split("next", 1)[1].splitlines()[0]
    code, _, err = run_cli(capsys, "run", str(src), str(dst), "--db", str(db), "--use-plan")
    assert code == 0, err
    assert sorted(tree_state(dst)) == ["a.txt"]


@pytest.mark.parametrize("size", [1000, 3_000_000])  # a helper process's batch, and a copy in this process
def test_bytes_copied_are_the_bytes_that_moved_when_the_source_grew_after_the_plan(capsys, tmp_path, size):
    """A file that changed after the dry run is copied as it is now: the summary's bytes and its record's
    size are what was copied, not what the plan listed."""
    src, dst, db = tmp_path / "src", tmp_path / "dst", tmp_path / "run.duckdb"
    src.mkdir()
    (src / "grows.bin").write_bytes(b"small")
    (src / "same.txt").write_bytes(b"abc")
    assert run_cli(capsys, "run", str(src), str(dst), "--db", str(db), "--dry-run")[0] == 0
    (src / "grows.bin").write_bytes(os.urandom(size))
    code, out, err = run_cli(capsys, "run", str(src), str(dst), "--db", str(db), "--use-plan")
    assert code == 0, err
    assert (dst / "grows.bin").read_bytes() == (src / "grows.bin").read_bytes()
    sizes = {r["path"]: r["size"] for r in report(capsys, db) if r["side"] == "src"}
    assert sizes == {"grows.bin": size, "same.txt": 3}
    from engine.store import Store
    from engine.summary import summarize
    store = Store.open(str(db))
    try:
        assert summarize(store, 0.0).bytes_copied == size + 3
    finally:
        store.close()


@pytest.mark.parametrize("copy_processes", [True, False])
def test_a_blocked_source_folder_deleted_before_the_retry_leaves_no_failure_behind(capsys, tmp_path, copy_processes):
    """'blk' failed (DST has a file there), then the operator deletes it on SRC and retries: the folder and
    everything below it vanished, nothing is a failure the retry repeats for ever, and DST's file is untouched
    (the entries below were failed with "'blk' on the destination is a file now", exit 1 at every retry)."""
    src, dst, db = tmp_path / "src", tmp_path / "dst", str(tmp_path / "r.duckdb")
    (src / "blk" / "x").mkdir(parents=True)
    (src / "blk" / "f").write_text("f")
    (src / "blk" / "x" / "g").write_text("g")
    (src / "kept").write_text("kept")
    dst.mkdir()
    (dst / "blk").write_text("in the way")
    flag = f"--{'' if copy_processes else 'no-'}copy-processes"
    assert run_cli(capsys, "run", str(src), str(dst), "--db", db, flag)[0] == 1
    shutil.rmtree(src / "blk")
    code, out, err = run_cli(capsys, "retry", "--db", db, flag)
    assert code == 0 and "failed       0" in out, (out, err)
    assert report(capsys, tmp_path / "r.duckdb", "--failed") == []
    actions = {row["path"]: row["action"] for row in report(capsys, tmp_path / "r.duckdb") if row["side"] == "src"}
    assert actions["blk"] == actions["blk/f"] == actions["blk/x"] == actions["blk/x/g"] == "vanished"
    assert (dst / "blk").read_text() == "in the way" and (dst / "kept").read_text() == "kept"
