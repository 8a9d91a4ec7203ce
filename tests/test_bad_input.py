"""Bad input: one clear line, a non-zero exit, and nothing written."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import duckdb
import pytest

from support import run_cli

from engine.errors import UserError

from engine.validate import folder_identity, same_folder


@pytest.fixture
def trees(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    (src / "sub").mkdir(parents=True)
    (src / "sub" / "file").write_text("x")
    dst.mkdir()
    return src, dst


def assert_refused(capsys, argv, must_mention: str):
    code, out, err = run_cli(capsys, *argv)
    assert code == 2, (code, out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("migrate: error: "), err
    assert must_mention in lines[0], lines[0]
    assert "Traceback" not in err + out
    return lines[0]


def test_missing_source(capsys, trees, tmp_path):
    src, dst = trees
    db = tmp_path / "run.duckdb"
    assert_refused(capsys, ["run", str(tmp_path / "nope"), str(dst), "--db", str(db)], "does not exist")
    assert not db.exists()


@pytest.mark.parametrize("side", ["source", "destination"])
@pytest.mark.parametrize("links", ["one", "a chain", "a loop"])
def test_a_root_that_is_a_symlink_to_nothing_is_named_so(capsys, trees, tmp_path, side, links):
    src, dst = trees
    link = tmp_path / "link"
    if links == "one":
        link.symlink_to(tmp_path / "gone")
    elif links == "a chain":  # link -> middle (which exists, as a link) -> gone
        (tmp_path / "middle").symlink_to(tmp_path / "gone")
        link.symlink_to(tmp_path / "middle")
    else:
        link.symlink_to(link)
    argv = [str(link), str(dst)] if side == "source" else [str(src), str(link)]
    line = assert_refused(capsys, ["run", *argv, "--db", str(tmp_path / "run.duckdb")], f"{side} '{link}' is a symlink")
    if links == "a loop":
        assert "symlink loop" in line
    else:
        assert f"leads to '{tmp_path / 'gone'}', which does not exist" in line
    assert not (tmp_path / "run.duckdb").exists() and not (tmp_path / "gone").exists()


def test_a_run_file_inside_the_destination_is_refused(capsys, trees, tmp_path):
    src, dst = trees
    (src / "run.duckdb").write_text("a source file at the run file's path would be copied over it")
    assert_refused(capsys, ["run", str(src), str(dst), "--db", str(dst / "run.duckdb")], "inside the destination")
    assert not (dst / "run.duckdb").exists() and os.listdir(dst) == []


def test_source_is_a_file(capsys, trees, tmp_path):
    _, dst = trees
    db = tmp_path / "run.duckdb"
    assert_refused(capsys, ["run", str(trees[0] / "sub" / "file"), str(dst), "--db", str(db)], "not a folder")
    assert not db.exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every folder whatever its mode")
def test_unreadable_source(capsys, trees, tmp_path):
    src, dst = trees
    src.chmod(0)
    try:
        assert_refused(capsys, ["run", str(src), str(dst), "--db", str(tmp_path / "r.duckdb")], "not readable")
    finally:
        src.chmod(0o755)


def unlock(path) -> None:
    if os.geteuid() != 0:
        path.chmod(0o755)
    else:
        subprocess.run(["chattr", "-i", str(path)], check=True)


def test_a_mount_moved_above_another_is_the_one_seen(capsys, tmp_path):
    """mount --move puts a mount above one made after it: /proc/self/mountinfo lists the hidden one later and
    deeper, so neither the order listed nor the longest point tells which is seen. The nesting check answered
    backwards (the source copied into itself, sibling roots refused); it now walks the mounts by parent."""
    def mount(*argv):
        if subprocess.run(["mount", *argv], capture_output=True).returncode != 0:
            pytest.skip("mounts need root")

    top = tmp_path / "top"
    top.mkdir()
    mount("-t", "tmpfs", "-o", "size=4m", "tmpfs", str(top))  # private: a mount below it may be moved
    try:
        mount("--make-private", str(top))
        tree, stage, seen = top / "tree", top / "stage", top / "m"
        for folder in (tree / "s" / "x", tree / "s" / "y", stage, seen / "x"):
            folder.mkdir(parents=True)
        (tree / "s" / "x" / "f").write_text("hi")
        mount("--bind", str(tree / "s"), str(stage))
        mount("--bind", str(tree / "s"), str(seen / "x"))  # made second, hidden by the move below
        mount("--move", str(stage), str(seen))  # m is tree/s now, so m/x is tree/s/x
        assert os.listdir(seen / "x") == ["f"]
        line = assert_refused(capsys, ["run", str(tree / "s" / "x"), str(seen / "x" / "z"), "--db",
                                       str(tmp_path / "a.duckdb"), "-n"], "inside the source")
        assert "through a mount" in line
        code, _, err = run_cli(capsys, "run", str(seen / "x"), str(tree / "s" / "y"), "--db",
                               str(tmp_path / "b.duckdb"), "-n")
        assert code == 0, err  # siblings, whatever path names them
        assert os.listdir(tree / "s" / "x") == ["f"]
    finally:
        subprocess.run(["umount", "--recursive", "--lazy", str(top)], capture_output=True)


@pytest.fixture
def lock():
    """lock(path): it cannot be written, nor anything made or renamed in it: read-only for a user; immutable
    for root, which ignores modes. Unlocked after the test."""
    locked = []

    def lock_path(path):
        if os.geteuid() != 0:
            path.chmod(0o555)
        elif subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode != 0:
            pytest.skip("chattr +i is not available here")
        locked.append(path)
        return path

    yield lock_path
    for path in locked:
        unlock(path)


@pytest.fixture
def unwritable(tmp_path, lock):
    """A folder nothing can be made in."""
    (tmp_path / "locked").mkdir()
    return lock(tmp_path / "locked")


def test_a_destination_that_cannot_be_written_is_refused_before_the_traversal(capsys, trees, unwritable, tmp_path):
    """It used to fail after the whole traversal, as 'internal error: PermissionError', leaving a run file."""
    src, _ = trees
    db = tmp_path / "r.duckdb"
    for dst in (unwritable / "dst", unwritable):  # to be made in it, or it
        assert_refused(capsys, ["run", str(src), str(dst), "--db", str(db)], "is not writable")
        assert not db.exists() and not os.listdir(unwritable)
    code, out, err = run_cli(capsys, "run", str(src), str(unwritable / "dst"), "--db", str(db), "-n")
    assert code == 0, err  # a dry run only reads the destination


@pytest.mark.parametrize("locked", ["its folder", "the file", "the folder a symlink given leads to"])
def test_a_run_file_that_cannot_be_written_is_refused_by_what_writes_it_and_read_by_the_rest(capsys, trees,
                                                                                           tmp_path, lock, locked):
    """DuckDB writes its log beside the file: a --use-plan, a retry, a new run, a copy of the plan or a watch
    of a run file that cannot be written failed with a DuckDB traceback at their first commit, and one this
    user could not write could not even be read ('not a readable DuckDB database')."""
    from engine.migration import Migration
    src, dst = trees
    db = tmp_path / "runs" / "r.duckdb"
    db.parent.mkdir()
    code, _, err = run_cli(capsys, "run", str(src), str(dst), "--db", str(db), "-n")
    assert code == 0, err
    given = db
    if locked == "the folder a symlink given leads to":
        (tmp_path / "links").mkdir()
        given = tmp_path / "links" / "r.duckdb"
        given.symlink_to(db)
    lock(db if locked == "the file" else db.parent)
    before = db.read_bytes()
    for argv in (["run", str(src), str(dst), "--db", str(given), "--use-plan"],
                 ["run", str(src), str(dst), "--db", str(given)], ["retry", "--db", str(given), "--src-workers", "3"]):
        assert_refused(capsys, argv, "cannot be written here")
    assert_refused(capsys, ["watch", str(src), str(dst), "--db", str(given)], "cannot be written here")
    planned = Migration.open(str(given))
    try:
        with pytest.raises(UserError, match="cannot be written here"):
            planned.copy_plan()  # the console's c
    finally:
        planned.close()
    code, out, err = run_cli(capsys, "status", "--db", str(given))
    assert code == 0 and "planned" in out, err
    code, out, err = run_cli(capsys, "resume", "--db", str(given), "--src-workers", "3")  # a setting: not stored
    assert code == 0 and "nothing to resume" in out, err
    assert db.read_bytes() == before and sorted(os.listdir(db.parent)) == ["r.duckdb"] and not os.listdir(dst)


def test_a_run_file_opened_to_look_at_is_not_run_once_it_can_be_written(capsys, trees, tmp_path, lock):
    """Opened read-only (the console looking at it), it stays so: R once the lock is gone ran the whole copy on
    a connection that could record nothing, then failed."""
    from engine.migration import Migration
    src, dst = trees
    db = tmp_path / "r.duckdb"
    code, _, err = run_cli(capsys, "run", str(src), str(dst), "--db", str(db), "-n")
    assert code == 0, err
    looked_at = Migration.open(str(lock(db)))
    try:
        unlock(db)
        with pytest.raises(UserError, match="was opened read-only"):
            looked_at.copy_plan()
    finally:
        looked_at.close()
    assert not os.listdir(dst)


def test_an_empty_run_file_that_cannot_be_written_is_named_so(capsys, trees, tmp_path, lock):
    """A run killed as it made its file leaves it without a table: it becomes a new run file when it can be
    written; locked, it was called 'not a readable DuckDB database ... restore the file'."""
    src, dst = trees
    db = tmp_path / "r.duckdb"
    duckdb.connect(str(db)).close()
    lock(db)
    for argv in (["status", "--db", str(db)], ["run", str(src), str(dst), "--db", str(db)]):
        assert_refused(capsys, argv, "holds no run yet")


def test_a_run_file_in_a_folder_that_cannot_be_written_is_named_so(capsys, trees, unwritable):
    """It was called 'not a readable DuckDB database ... restore the file', of a file that did not exist."""
    src, dst = trees
    line = assert_refused(capsys, ["run", str(src), str(dst), "--db", str(unwritable / "r.duckdb")], "is not writable")
    assert "cannot create" in line and not os.listdir(unwritable) and not os.listdir(dst)


@pytest.fixture
def bind_mounts(tmp_path):
    """bind(folder) shows folder at a second path, as `mount --bind` does (root only); unmounted after."""
    made = []

    def bind(folder, point=None):
        point = point or tmp_path / f"mount{len(made)}"
        point.mkdir(exist_ok=True)
        if subprocess.run(["mount", "--bind", str(folder), str(point)], capture_output=True).returncode != 0:
            pytest.skip("bind mounts need root")
        made.append(point)
        return point

    yield bind
    for point in reversed(made):  # lazily: a listing process that is still leaving may hold a folder open
        subprocess.run(["umount", "--lazy", str(point)], check=True)


def stacked(bind_mounts, tmp_path, src):
    """A point where an empty folder is mounted, then the source's parent over it: the one seen there is
    the last (the first one's path is as long, and /proc/self/mountinfo lists it first)."""
    (tmp_path / "empty").mkdir()
    point = bind_mounts(tmp_path / "empty", tmp_path / "stack")
    return bind_mounts(src.parent, point)


def hidden_below(bind_mounts, tmp_path, src):
    """(source, destination): an empty folder mounted at point/sub, then src mounted at point over it; the
    source given is point/sub (the source's sub now, not the empty folder hidden below), the destination
    is a folder in src/sub. The longest mount point above point/sub is the hidden one."""
    (tmp_path / "empty").mkdir()
    (tmp_path / "point" / "sub").mkdir(parents=True)
    bind_mounts(tmp_path / "empty", tmp_path / "point" / "sub")
    point = bind_mounts(src, tmp_path / "point")
    return point / "sub", src / "sub" / "new"


@pytest.mark.parametrize("case,says", [("dst_is_src_sub", "inside the source"),
                                       ("dst_below_src_sub", "inside the source"),
                                       ("dst_is_src", "same folder"), ("src_is_dst_sub", "inside the destination"),
                                       ("dst_below_the_top_of_stacked_mounts", "inside the source"),
                                       ("src_under_a_mount_of_its_parent", "inside the source")])
def test_roots_nested_through_a_bind_mount_are_refused(capsys, trees, tmp_path, bind_mounts, case, says):
    """The paths do not nest, the folders do: the run would write the source into itself (it did)."""
    src, _ = trees
    db = tmp_path / "r.duckdb"
    argv = {"dst_is_src_sub": lambda: (src, bind_mounts(src / "sub")),
            "dst_below_src_sub": lambda: (src, bind_mounts(src / "sub") / "new"),
            "dst_is_src": lambda: (src, bind_mounts(src)),
            "src_is_dst_sub": lambda: (bind_mounts(src / "sub"), src),
            "dst_below_the_top_of_stacked_mounts":
                lambda: (src, stacked(bind_mounts, tmp_path, src) / src.name / "new"),
            "src_under_a_mount_of_its_parent": lambda: hidden_below(bind_mounts, tmp_path, src)}[case]()
    before = sorted(p for p in src.rglob("*"))
    line = assert_refused(capsys, ["run", *map(str, argv), "--db", str(db)], says)
    assert "through a mount" in line
    assert not db.exists() and sorted(p for p in src.rglob("*")) == before


@pytest.mark.parametrize("case", ["dst_inside_src", "src_inside_dst", "same"])
def test_nested_or_equal_roots(capsys, trees, tmp_path, case):
    src, dst = trees
    db = tmp_path / "run.duckdb"
    pair = {"dst_inside_src": (src, src / "sub" / "copy"), "src_inside_dst": (src / "sub", src),
            "same": (src, src / "sub" / "..")}[case]
    word = {"dst_inside_src": "inside the source", "src_inside_dst": "inside the destination",
            "same": "same folder"}[case]
    assert_refused(capsys, ["run", str(pair[0]), str(pair[1]), "--db", str(db)], word)
    assert not db.exists() and not (src / "sub" / "copy").exists()


@pytest.mark.parametrize("command", ["retry", "resume"])
def test_a_destination_replaced_by_a_symlink_into_the_source_is_refused_when_taken_up_again(capsys, tmp_path,
                                                                                            command):
    """A retry (or a resume) checks the pair as it is now: a destination made a symlink into the source since
    would have the run copy the source into itself."""
    src, dst, db = tmp_path / "src", tmp_path / "dst", tmp_path / "run.duckdb"
    for folder in ("a", "b"):
        (src / folder).mkdir(parents=True)
        (src / folder / "f").write_text(folder)
    dst.mkdir()
    (dst / "b").write_text("in the way")  # a file where the source has a folder: failures to retry
    code, _, _ = run_cli(capsys, "run", str(src), str(dst), "--db", str(db))
    assert code == 1
    if command == "resume":
        with duckdb.connect(str(db)) as con:
            con.execute("UPDATE run SET phase = 'copy'")  # as a run killed in its copy leaves it
    dst.rename(tmp_path / "old dst")
    os.symlink(src / "a", dst)
    before = sorted(p for p, _, _ in os.walk(src))
    assert_refused(capsys, [command, "--db", str(db)], "inside the source")
    assert sorted(p for p, _, _ in os.walk(src)) == before and os.listdir(src / "a") == ["f"]


@pytest.mark.parametrize("command", ["retry", "resume"])
@pytest.mark.parametrize("how", ["moved away", "removed and made again", "source replaced"])
def test_a_root_replaced_since_the_run_is_not_taken_for_the_one_it_compared(capsys, tmp_path, command, how):
    """Sealed as copied means copied into that folder: a destination replaced since (moved away and made
    anew, or removed and made again: ext4 then hands the new folder the same inode number) would be left
    incomplete by a retry or a resume that reported success; a source replaced, its new files unseen."""
    src, dst, db = tmp_path / "src", tmp_path / "dst", tmp_path / "run.duckdb"
    for folder in ("a", "b"):
        (src / folder).mkdir(parents=True)
        (src / folder / "f").write_text(folder)
    dst.mkdir()
    (dst / "b").write_text("in the way")
    code, out, _ = run_cli(capsys, "run", str(src), str(dst), "--db", str(db))
    assert code == 1 and out.splitlines()[0] == "migration finished, 2 entries failed: retry copies them once " \
                                                 "their cause is fixed"  # not "migration complete"
    if command == "resume":
        with duckdb.connect(str(db)) as con:
            con.execute("UPDATE run SET phase = 'copy'")  # as a run killed in its copy leaves it
    root = src if how == "source replaced" else dst
    if how == "removed and made again":
        shutil.rmtree(root)
    else:
        root.rename(tmp_path / "old")
    root.mkdir()
    side = "source" if root == src else "destination"
    assert_refused(capsys, [command, "--db", str(db)], f"the {side} '{root}' is not the folder this run compared")
    if command == "resume":  # `migrate run` on the unfinished run continues it: refused alike, with no note first
        assert_refused(capsys, ["run", str(src), str(dst), "--db", str(db)], "is not the folder this run compared")
    assert sorted(os.listdir(dst if root == dst else tmp_path / "old")) == ([] if root == dst else ["a", "b"])
    if root == dst:
        assert run_cli(capsys, "run", str(src), str(dst), "--db", str(tmp_path / "new.duckdb"))[0] == 0
        assert sorted(os.listdir(dst)) == ["a", "b"] and (dst / "a" / "f").read_text() == "a"


def test_a_root_is_known_again_by_inode_and_generation_whatever_else_changed(tmp_path):
    """A remount gives the device another number; a folder its owner cannot read shows no generation: the
    same folder still. A new folder at the path is not, even with the old one's inode number."""
    folder = tmp_path / "dst"
    folder.mkdir()
    known = folder_identity(str(folder))
    ino = str(folder.stat().st_ino)
    assert known.split(":")[0] == ino and same_folder(known, folder_identity(str(folder)))
    assert same_folder(known, ino) and same_folder(ino, known)  # no generation on one side: the inode decides
    assert not same_folder(known, None) and not same_folder(known, str(int(ino) + 1))
    if ":" in known:  # the filesystem keeps generations (ext4, xfs, btrfs)
        assert not same_folder(known, f"{ino}:{int(known.split(':')[1]) + 1}")
    assert folder_identity(str(tmp_path / "nothing")) is None


def test_corrupt_db_is_refused_and_left_alone(capsys, trees, tmp_path):
    src, dst = trees
    db = tmp_path / "run.duckdb"
    junk = os.urandom(8192)
    db.write_bytes(junk)
    assert_refused(capsys, ["run", str(src), str(dst), "--db", str(db)], "not a DuckDB database")
    assert db.read_bytes() == junk
    assert sorted(os.listdir(tmp_path)) == ["dst", "run.duckdb", "src"]


def test_truncated_duckdb_is_refused(capsys, trees, tmp_path):
    src, dst = trees
    db = tmp_path / "run.duckdb"
    assert run_cli(capsys, "run", str(src), str(dst), "--db", str(db), "--dry-run")[0] == 0
    data = db.read_bytes()
    db.write_bytes(data[: len(data) // 3])
    assert_refused(capsys, ["run", str(src), str(dst), "--db", str(db)], str(db))


def test_foreign_duckdb_is_refused(capsys, trees, tmp_path):
    src, dst = trees
    db = tmp_path / "other.duckdb"
    con = duckdb.connect(str(db))
    con.execute("CREATE TABLE invoices (id INTEGER)")
    con.close()
    before = db.read_bytes()
    assert_refused(capsys, ["run", str(src), str(dst), "--db", str(db)], "another program")
    assert db.read_bytes() == before


def test_a_run_file_killed_as_it_was_created_is_started_again(capsys, trees, tmp_path):
    """Killed between DuckDB making the file and the schema's commit, a run leaves a DuckDB file without a
    table: nothing in it to lose. It is not 'another program's': status says it holds no run yet, and a
    run started with it uses it."""
    src, dst = trees
    db = tmp_path / "run.duckdb"
    duckdb.connect(str(db)).close()
    assert_refused(capsys, ["status", "--db", str(db)], "holds no run yet; start one with SRC and DST")
    code, out, err = run_cli(capsys, "run", str(src), str(dst), "--db", str(db))
    assert code == 0, err
    assert (dst / "sub" / "file").read_text() == "x"


def test_db_of_another_pair_names_its_roots_as_an_operator_reads_them(capsys, tmp_path):
    """A root whose name is not UTF-8 is named with \\xNN, as everywhere else, not Python's \\udcNN."""
    src = os.path.join(os.fsencode(tmp_path), b"s\xffrc")
    os.mkdir(src)
    db = tmp_path / "run.duckdb"
    assert run_cli(capsys, "run", os.fsdecode(src), str(tmp_path / "dst"), "--db", str(db), "-n")[0] == 0
    (tmp_path / "other").mkdir()
    line = assert_refused(capsys, ["run", str(tmp_path / "other"), str(tmp_path / "dst"), "--db", str(db)],
                          "not this pair")
    assert f"holds the run {tmp_path}/s\\xffrc -> " in line and "\\udc" not in line


def test_db_of_another_pair_is_refused(capsys, trees, tmp_path):
    src, dst = trees
    db = tmp_path / "run.duckdb"
    assert run_cli(capsys, "run", str(src), str(dst), "--db", str(db), "--dry-run")[0] == 0
    other = tmp_path / "other"
    other.mkdir()
    line = assert_refused(capsys, ["run", str(src), str(other), "--db", str(db)], "not this pair")
    assert str(dst) in line
    assert os.listdir(other) == []
    # the same pair reached through a symlink is the same run (and the file keeps the paths it has)
    (tmp_path / "link").symlink_to(src)
    code, out, err = run_cli(capsys, "run", str(tmp_path / "link"), str(dst), "--db", str(db))
    assert code == 0, err
    assert (dst / "sub" / "file").read_text() == "x"
    assert f"run      {src} -> {dst}" in run_cli(capsys, "status", "--db", str(db))[1]


def test_db_of_a_newer_schema_is_refused(capsys, trees, tmp_path):
    src, dst = trees
    db = tmp_path / "run.duckdb"
    assert run_cli(capsys, "run", str(src), str(dst), "--db", str(db), "--dry-run")[0] == 0
    con = duckdb.connect(str(db))
    con.execute("UPDATE meta SET value = '999' WHERE key = 'schema_version'")
    con.close()
    assert_refused(capsys, ["run", str(src), str(dst), "--db", str(db)], "newer migrate-tui")


@pytest.mark.parametrize("value,shown", [("'1.1'", "'1.1'"), ("NULL", "None")])
@pytest.mark.parametrize("command", [["run", "SRC", "DST"], ["status"], ["report"], ["resume"], ["config", "show"]])
def test_db_of_a_schema_version_that_is_no_number_is_refused(capsys, trees, tmp_path, command, value, shown):
    """A schema version such as '1.1' was int()'s ValueError, NULL its TypeError: a traceback, for every command."""
    src, dst = trees
    db = tmp_path / "run.duckdb"
    assert run_cli(capsys, "run", str(src), str(dst), "--db", str(db), "--dry-run")[0] == 0
    con = duckdb.connect(str(db))
    con.execute(f"UPDATE meta SET value = {value} WHERE key = 'schema_version'")
    con.close()
    before = db.read_bytes()
    argv = [str(src) if a == "SRC" else str(dst) if a == "DST" else a for a in command]
    assert_refused(capsys, [*argv, "--db", str(db)], f"schema version {shown}")
    assert db.read_bytes() == before


def tamper_stored_settings(db, drop: tuple = (), **changes):
    con = duckdb.connect(str(db))
    stored = {**json.loads(con.execute("SELECT settings FROM run").fetchone()[0]), **changes}
    con.execute("UPDATE run SET settings = ?", [json.dumps({k: v for k, v in stored.items() if k not in drop})])
    con.close()


@pytest.mark.parametrize("command", [["status"], ["resume"], ["retry"], ["config", "show"]])
def test_stored_settings_this_version_cannot_take_are_one_line(capsys, trees, tmp_path, command):
    """A run file written by another version (a setting unknown here) or holding a value out of range: one
    line naming the setting, from the run file, and the file as it was."""
    src, dst = trees
    db = tmp_path / "run.duckdb"
    assert run_cli(capsys, "run", str(src), str(dst), "--db", str(db), "--dry-run")[0] == 0
    for drop, changes, says in (((), {"future_knob": 1}, "(its setting 'future_knob' is unknown here)"),
                                (("future_knob",), {"max_listing_workers": 0},
                                 f"invalid setting 'max_listing_workers' from run file {db}")):
        tamper_stored_settings(db, drop, **changes)
        before = db.read_bytes()
        assert_refused(capsys, [*command, "--db", str(db)], says)
        assert db.read_bytes() == before


@pytest.mark.parametrize("command", ["run", "watch"])
def test_an_unfinished_run_of_another_version_is_not_taken_up(capsys, trees, tmp_path, command):
    """Not continued by run, not finished nor written to by watch."""
    src, dst = trees
    db = tmp_path / "run.duckdb"
    assert run_cli(capsys, "run", str(src), str(dst), "--db", str(db), "--dry-run")[0] == 0
    tamper_stored_settings(db, future_knob=1)
    con = duckdb.connect(str(db))
    con.execute("UPDATE run SET phase = 'traversal'")  # as if interrupted during it
    con.close()
    before = db.read_bytes()
    assert_refused(capsys, [command, str(src), str(dst), "--db", str(db)],
                   "was written by another version of migrate (its setting 'future_knob' is unknown here)")
    assert db.read_bytes() == before


def test_db_locked_by_another_process_is_refused(capsys, trees, tmp_path):
    src, dst = trees
    db = tmp_path / "run.duckdb"
    assert run_cli(capsys, "run", str(src), str(dst), "--db", str(db), "--dry-run")[0] == 0
    holder = subprocess.Popen([sys.executable, "-c", f"import duckdb,time; c=duckdb.connect({str(db)!r}); "
                               "print('ready', flush=True); time.sleep(60)"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "ready"
        assert_refused(capsys, ["run", str(src), str(dst), "--db", str(db)],
                       "is open in another migrate or migrate-tui")
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.parametrize("flag,value,key", [("--max-src-ahead", "0", "max_src_ahead"),
                                            ("--bwlimit", "fast", "bwlimit"),
                                            ("--src-workers", "many", "src_workers"),
                                            ("--lease-timeout", "inf", "lease_timeout"),
                                            ("--backoff-base", "nan", "backoff_base"),
                                            ("--buffer-size", "99999999999999999999", "buffer_size")])
def test_bad_setting_names_the_key(capsys, trees, tmp_path, flag, value, key):
    src, dst = trees
    db = tmp_path / "run.duckdb"
    assert_refused(capsys, ["run", str(src), str(dst), "--db", str(db), flag, value], key)
    assert not db.exists()


@pytest.mark.parametrize("case", ["empty_src", "empty_dst", "empty_db", "memory_db"])
def test_empty_paths_are_refused(capsys, trees, tmp_path, monkeypatch, case):
    """'' is the current folder to os.path and an unsaved database to DuckDB: neither is what was meant."""
    src, dst = trees
    monkeypatch.chdir(tmp_path)
    argv = {"empty_src": ["", str(dst), "--db", "run.duckdb"], "empty_dst": [str(src), "", "--db", "run.duckdb"],
            "empty_db": [str(src), str(dst), "--db", ""], "memory_db": [str(src), str(dst), "--db", ":memory:"]}[case]
    before = sorted(p.name for p in tmp_path.iterdir())
    assert_refused(capsys, ["run", *argv], "empty" if case != "memory_db" else "names no file")
    assert sorted(p.name for p in tmp_path.iterdir()) == before and not any(dst.iterdir())


def test_bad_memory_limit_is_named_not_blamed_on_the_run_file(capsys, trees, tmp_path):
    src, dst = trees
    db = tmp_path / "run.duckdb"
    line = assert_refused(capsys, ["run", str(src), str(dst), "--db", str(db), "--duckdb-memory-limit", "lots"],
                          "duckdb_memory_limit")
    assert "run file" not in line and "--duckdb-memory-limit" in line
    assert not db.exists()


def test_report_to_an_unwritable_place(capsys, trees, tmp_path):
    src, dst = trees
    db = tmp_path / "run.duckdb"
    assert run_cli(capsys, "run", str(src), str(dst), "--db", str(db), "--dry-run")[0] == 0
    assert_refused(capsys, ["report", "--db", str(db), "-o", str(tmp_path / "no" / "r.csv")], "cannot write")
    assert_refused(capsys, ["report", "--db", str(db), "-o", str(tmp_path)], "cannot write")
    assert not (tmp_path / "no").exists()


@pytest.mark.parametrize("name", ["run.duckdb", "link.duckdb", "run.duckdb.wal"])
def test_a_report_is_not_written_over_its_run_file(capsys, trees, tmp_path, name):
    src, dst = trees
    db = tmp_path / "run.duckdb"
    assert run_cli(capsys, "run", str(src), str(dst), "--db", str(db), "--dry-run")[0] == 0
    (tmp_path / "link.duckdb").symlink_to(db)
    before = db.read_bytes()
    for fmt in ("csv", "jsonl"):
        assert_refused(capsys, ["report", "--db", str(db), "--format", fmt, "-o", str(tmp_path / name)],
                       "the run file itself")
    assert db.read_bytes() == before and not (tmp_path / "run.duckdb.wal").exists()
    assert run_cli(capsys, "status", "--db", str(db))[0] == 0


def test_demo_refuses_bad_places_and_counts(capsys, tmp_path):
    (tmp_path / "afile").write_text("x")
    assert_refused(capsys, ["demo", "--dir", str(tmp_path / "afile"), "--files", "10"], "not a folder")
    assert_refused(capsys, ["demo", "--dir", str(tmp_path / "no" / "demo"), "--files", "10"], "does not exist")
    assert_refused(capsys, ["demo", "--dir", str(tmp_path / "demo"), "--files", "0"], "at least 1")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


def test_demo_refuses_a_folder_that_holds_something(capsys, tmp_path):
    demo = tmp_path / "demo"
    assert run_cli(capsys, "demo", "--dir", str(demo), "--files", "10")[0] == 0
    kept = {p: p.lstat().st_mtime_ns for p in demo.rglob("*")}
    assert_refused(capsys, ["demo", "--dir", str(demo), "--files", "10"], "not empty")  # its own trees
    assert {p: p.lstat().st_mtime_ns for p in demo.rglob("*")} == kept


def test_missing_db_for_status(capsys, tmp_path):
    assert_refused(capsys, ["status", "--db", str(tmp_path / "none.duckdb")], "does not exist")
    assert not (tmp_path / "none.duckdb").exists()


def test_usage_error_is_one_line(capsys):
    assert_refused(capsys, ["run"], "required")


def test_console_script_shows_no_traceback(tmp_path):
    """The installed entry point, as a user runs it."""
    result = subprocess.run([sys.executable, "-m", "engine.cli", "run", str(tmp_path / "missing"),
                             str(tmp_path / "d"), "--db", str(tmp_path / "r.duckdb")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr



def test_a_demo_in_a_relative_folder_can_be_taken_up_from_another_folder(capsys, tmp_path, monkeypatch):
    """`migrate demo --dir d` stored its roots as 'd/demo-src' and 'd/demo-dst': from any other folder the run
    file named other folders, and `migrate watch` with the demo's own absolute paths was refused as 'not this
    pair'."""
    monkeypatch.chdir(tmp_path)
    assert run_cli(capsys, "demo", "--dir", "d", "--files", "10")[0] == 0
    from engine.store import Store
    store = Store.open(str(tmp_path / "d" / "demo.duckdb"))
    try:
        info = store.run_info()
    finally:
        store.close()
    assert (info.src_root, info.dst_root) == (str(tmp_path / "d" / "demo-src"), str(tmp_path / "d" / "demo-dst"))


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_report_to_a_full_disk_is_one_line_not_a_traceback(capsys, trees, tmp_path, fmt):
    """-o on a full filesystem (here /dev/full): the write's OSError was a traceback, exit 1."""
    src, dst = trees
    db = tmp_path / "run.duckdb"
    assert run_cli(capsys, "run", str(src), str(dst), "--db", str(db), "--dry-run")[0] == 0
    assert_refused(capsys, ["report", "--db", str(db), "--format", fmt, "-o", "/dev/full"],
                   "cannot write the report to '/dev/full' (No space left on device)")
    assert run_cli(capsys, "status", "--db", str(db))[0] == 0  # the run file closed and intact
