"""Acceptance: a dry run then a report classify every entry of a tricky 20k-file tree exactly right."""

from __future__ import annotations

import csv
import io
import os

from support import report, run_cli, shown, tree_state


def test_dry_run_report_classifies_every_entry(capsys, tree_20k_read_only, tmp_path):
    tree, expected, dst = tree_20k_read_only
    db = tmp_path / "run.duckdb"
    before = tree_state(dst)

    code, out, err = run_cli(capsys, "run", str(tree.root), str(dst), "--db", str(db), "--dry-run")
    assert code == 0, err
    assert "dry run complete" in out
    assert tree_state(dst) == before, "a dry run wrote to the destination"

    rows = report(capsys, db)
    src_rows = {r["path"]: r for r in rows if r["side"] == "src"}
    dst_rows = {r["path"]: r for r in rows if r["side"] == "dst"}
    want = {shown(p): action for p, action in expected.src_actions.items()}
    assert len(src_rows) == len(want), "report has a different number of source entries"
    wrong = {p: (src_rows[p]["action"], a) for p, a in want.items() if src_rows[p]["action"] != a}
    assert not wrong, f"{len(wrong)} misclassified, e.g. {list(wrong.items())[:3]}"
    not_on_src = {p for p, r in dst_rows.items() if r["action"] == "not_on_src"}
    assert not_on_src == {shown(p) for p in expected.not_on_src}
    newer = {p for p, r in dst_rows.items() if r["action"] == "keep_dst_newer"}
    assert newer == {shown(p) for p in expected.newer_on_dst}
    assert all(r["traversal_status"] == "successful" for r in rows)
    kinds = {r["type"] for r in src_rows.values()}
    assert kinds == {"file", "folder", "symlink"}


def test_csv_report_round_trips_tricky_names(capsys, tree_20k_read_only, tmp_path):
    tree, expected, dst = tree_20k_read_only
    db = tmp_path / "run.duckdb"
    assert run_cli(capsys, "run", str(tree.root), str(dst), "--db", str(db), "--dry-run")[0] == 0
    code, out, err = run_cli(capsys, "report", "--db", str(db), "--format", "csv")
    assert code == 0, err
    rows = list(csv.DictReader(io.StringIO(out, newline="")))
    paths = {r["path"] for r in rows if r["side"] == "src"}
    assert paths == {shown(p) for p in expected.src_actions}
    assert any("\n" in p for p in paths) and any("\t" in p for p in paths) and any("\\x" in p for p in paths)


def test_report_names_each_file_once_even_a_backslash_beside_a_raw_byte(capsys, tmp_path):
    """'latin\\xe9.txt' (a backslash, then 'xe9') and 'latin' + byte 0xE9 + '.txt' are two files: the report
    writes the byte \\xe9 and the backslash \\\\, so each record maps back to one of them."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "latin\\xe9.txt").write_bytes(b"text")
    with open(os.path.join(os.fsencode(src), b"latin\xe9.txt"), "wb") as f:
        f.write(b"byte")
    db = tmp_path / "r.duckdb"
    assert run_cli(capsys, "run", str(src), str(tmp_path / "dst"), "--db", str(db), "--dry-run")[0] == 0
    paths = sorted(r["path"] for r in report(capsys, db) if r["side"] == "src")
    assert paths == ["latin\\\\xe9.txt", "latin\\xe9.txt"]


def test_dry_run_plans_what_the_copy_does_where_a_newer_destination_entry_has_another_type(capsys, tmp_path):
    """A source file where the destination has a symlink or a folder newer by more than 2 s: the copy keeps
    the destination entry (keep_dst_newer, never overwritten), so the dry run's plan and counts must say
    so too, not 'copy'. A source folder where the destination has a newer file still fails: 'copy'."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    dst.mkdir()
    old = 1_600_000_000 * 10**9
    for name in ("file_vs_link", "file_vs_folder"):
        (src / name).write_bytes(b"data")
        os.utime(src / name, ns=(old, old))
    os.symlink("elsewhere", dst / "file_vs_link")  # made now: newer than the source file by years
    (dst / "file_vs_folder").mkdir()
    (src / "folder_vs_file").mkdir()
    (dst / "folder_vs_file").write_bytes(b"newer file")
    os.utime(src / "folder_vs_file", ns=(old, old))
    db = tmp_path / "run.duckdb"

    code, out, err = run_cli(capsys, "run", str(src), str(dst), "--db", str(db), "--dry-run")
    assert code == 0, err
    planned = {r["path"]: r["action"] for r in report(capsys, db) if r["side"] == "src"}
    assert "kept newer   2 " in out, out
    assert "to copy      1\n" in out, out

    code, out, err = run_cli(capsys, "run", str(src), str(dst), "--db", str(db), "--use-plan")
    assert code == 1, err  # folder_vs_file fails: a file stands where the source has a folder
    done = {r["path"]: r["action"] for r in report(capsys, db) if r["side"] == "src"}
    assert planned == {"file_vs_link": "keep_dst_newer", "file_vs_folder": "keep_dst_newer",
                       "folder_vs_file": "copy"}
    assert done == {"file_vs_link": "keep_dst_newer", "file_vs_folder": "keep_dst_newer",
                    "folder_vs_file": "failed"}
    assert os.readlink(dst / "file_vs_link") == "elsewhere" and (dst / "file_vs_folder").is_dir()
