"""kill -9 a real `migrate run` at chosen moments, resume from its file, and compare the destination
with an uninterrupted run's. The resumed run must not list sealed rounds again."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest

from support import run_cli, tree_state

from engine.migration import Migration
from engine.model import TEMP_SUFFIX
from engine.modes.traversal import TraversalMode
from engine.treegen import make_source, mirror


@pytest.fixture(scope="module")
def scenario(tmp_path_factory):
    base = tmp_path_factory.mktemp("crash")
    tree = make_source(base / "src", 2500, seed=21, max_depth=7, fanout=3)
    mirror(tree, base / "dst.orig", seed=22)
    reference = base / "reference"
    shutil.copytree(base / "dst.orig", reference, symlinks=True)
    m = Migration.create(str(base / "reference.duckdb"), str(tree.root), str(reference))
    m.start()
    assert m.wait(120) and m.phase == "done"
    m.close()
    return tree, base, tree_state(reference)


def migrate_killed_at(crash_at: str, src, dst, db, extra=()) -> subprocess.CompletedProcess:
    env = {**os.environ, "MIGRATE_CRASH_AT": crash_at}
    return subprocess.run([sys.executable, "-m", "engine.cli", "run", str(src), str(dst), "--db", str(db), *extra],
                          env=env, capture_output=True, text=True, timeout=120)


def resume_recording_listings(db, monkeypatch) -> tuple[Migration, list[tuple[str, str]]]:
    """Resume the run in db, recording (side, folder) of every folder the traversal lists, in this process
    or in a listing helper (TraversalMode.execute_batch sees both)."""
    listed = []
    original = TraversalMode.execute_batch

    def recording_execute_batch(self, tasks, heartbeat=None):
        listed.extend((self.side, t.node.path) for t in tasks)
        return original(self, tasks, heartbeat)

    monkeypatch.setattr(TraversalMode, "execute_batch", recording_execute_batch)
    m = Migration.open(str(db))
    assert m.interrupted
    m.resume_from_db()
    assert m.wait(120)
    return m, listed


def depth_of(path: str) -> int:
    return 0 if path == "" else path.count("/") + 1


@pytest.mark.parametrize("crash_at", ["src-listed:40", "dst-listed:30", "seal:6", "sealed:9", "copied:700"])
def test_kill_and_resume_gives_the_uninterrupted_destination(scenario, tmp_path, monkeypatch, crash_at):
    tree, base, reference = scenario
    dst, db = tmp_path / "dst", tmp_path / "run.duckdb"
    shutil.copytree(base / "dst.orig", dst, symlinks=True)

    result = migrate_killed_at(crash_at, tree.root, dst, db)
    assert result.returncode == -signal.SIGKILL, result.stderr

    probe = Migration.open(str(db))
    sealed_below = {side: probe.store.min_depth(side, "traversal_status = 'pending'") for side in ("src", "dst")}
    phase_at_crash = probe.phase
    assert probe.elapsed() > 0, "the killed run's time was lost"  # written with every seal
    probe.close()

    m, listed = resume_recording_listings(db, monkeypatch)
    assert m.fatal is None and m.phase == "done", m.message
    m.close()
    if phase_at_crash in ("traversal", "retry"):
        assert listed, "the resumed traversal listed nothing: the recording missed it"
        for side, path in listed:
            if sealed_below[side] is not None:
                assert depth_of(path) >= sealed_below[side], f"{side} re-listed a sealed round: {path!r}"
    else:  # interrupted in the copy phase: traversal is sealed, so no folder is listed again
        assert not listed

    final = tree_state(dst)
    assert final == reference
    assert not [p for p in final if p.endswith(TEMP_SUFFIX)]


def test_a_dry_run_does_not_continue_a_run_killed_while_copying(scenario, tmp_path, capsys, monkeypatch):
    tree, base, reference = scenario
    dst, db = tmp_path / "dst", tmp_path / "run.duckdb"
    shutil.copytree(base / "dst.orig", dst, symlinks=True)
    assert migrate_killed_at("copied:300", tree.root, dst, db).returncode == -signal.SIGKILL
    at_kill = tree_state(dst)

    code, out, err = run_cli(capsys, "run", str(tree.root), str(dst), "--db", str(db), "--dry-run")
    assert code == 2 and "began copying" in err and f"migrate resume --db {db}" in err, (code, err)
    assert len(err.strip().splitlines()) == 1
    assert tree_state(dst) == at_kill  # the dry run wrote nothing (it used to copy the rest)

    m, _ = resume_recording_listings(db, monkeypatch)  # still the real run it was
    assert m.phase == "done" and not m.dry_run
    m.close()
    assert tree_state(dst) == reference


def test_run_continues_a_killed_run_with_its_stored_settings_but_those_given_now(scenario, tmp_path, capsys):
    tree, base, reference = scenario
    dst, db = tmp_path / "dst", tmp_path / "run.duckdb"
    shutil.copytree(base / "dst.orig", dst, symlinks=True)
    killed = migrate_killed_at("src-listed:40", tree.root, dst, db, ["--max-retries", "7", "--bwlimit", "300M"])
    assert killed.returncode == -signal.SIGKILL
    code, shown, _ = run_cli(capsys, "config", "show", "--db", str(db))
    assert code == 0 and "max_retries" in shown

    # as `migrate config show --db` says: the run's own values, but what is set now (a flag here)
    code, _, err = run_cli(capsys, "run", str(tree.root), str(dst), "--db", str(db), "--bwlimit", "200M")
    assert code == 0, err
    m = Migration.open(str(db))
    stored = m.store.run_info().settings
    m.close()
    assert stored["max_retries"] == 7 and stored["bwlimit"] == 200 << 20  # not the defaults 3 and 0
    assert tree_state(dst) == reference


def test_a_setting_given_now_that_does_not_go_with_the_stored_ones_is_named_where_given(scenario, tmp_path,
                                                                                        capsys):
    tree, base, _ = scenario
    dst, db = tmp_path / "dst", tmp_path / "run.duckdb"
    shutil.copytree(base / "dst.orig", dst, symlinks=True)
    killed = migrate_killed_at("src-listed:40", tree.root, dst, db, ["--buffer-size", "1000", "--low-water", "500"])
    assert killed.returncode == -signal.SIGKILL
    at_kill = tree_state(dst)

    code, _, err = run_cli(capsys, "run", str(tree.root), str(dst), "--db", str(db), "--low-water", "2000")
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "'low_water' from --low-water" in err and "buffer_size (1000)" in err, err  # 1000: the run's
    assert "are invalid" not in err, err  # the stored settings are fine; it was blamed on them
    assert tree_state(dst) == at_kill

    # a buffer given now goes with the run's own low_water (500), not with the default one (1024)
    code, out, err = run_cli(capsys, "config", "show", "--db", str(db), "--buffer-size", "800")
    assert code == 0, err
    assert re.search(r"^buffer_size +800 +--buffer-size$", out, re.M) and re.search(r"^low_water +500 +run file", out, re.M), out


def test_a_run_killed_as_it_starts_is_not_taken_for_a_finished_one(scenario, tmp_path, capsys):
    tree, base, reference = scenario
    dst, db = tmp_path / "dst", tmp_path / "run.duckdb"
    shutil.copytree(base / "dst.orig", dst, symlinks=True)
    assert migrate_killed_at("seal:1", tree.root, dst, db).returncode == -signal.SIGKILL  # the run's first commit

    code, out, err = run_cli(capsys, "resume", "--db", str(db))
    assert code == 2 and "holds no run yet" in err, (code, out, err)  # not "up to date", exit 0, nothing copied
    assert run_cli(capsys, "run", str(tree.root), str(dst), "--db", str(db))[0] == 0
    assert tree_state(dst) == reference

    # killed as it starts over a finished run: the finished run is what the file still holds
    assert migrate_killed_at("seal:1", tree.root, dst, db).returncode == -signal.SIGKILL
    code, out, err = run_cli(capsys, "status", "--db", str(db))
    assert code == 0 and "phase    done" in out and "interrupted" not in out, out


def test_kill_mid_file_leaves_no_temporary_after_resume(tmp_path, monkeypatch):
    src, dst, db = tmp_path / "src", tmp_path / "dst", tmp_path / "run.duckdb"
    src.mkdir()
    blobs = {f"big {i}.bin": os.urandom(20 << 20) for i in range(3)}
    for name, data in blobs.items():
        (src / name).write_bytes(data)
    result = migrate_killed_at("copy-chunk:2", src, dst, db)
    assert result.returncode == -signal.SIGKILL
    assert any(n.endswith(TEMP_SUFFIX) for n in os.listdir(dst)), "the kill did not happen mid-file"
    assert not any((dst / n).exists() and (dst / n).read_bytes() != d for n, d in blobs.items()), \
        "a partial file is visible under its final name"

    m, _ = resume_recording_listings(db, monkeypatch)
    assert m.phase == "done"
    m.close()
    assert sorted(os.listdir(dst)) == sorted(blobs)
    for name, data in blobs.items():
        assert (dst / name).read_bytes() == data


@pytest.mark.parametrize("taken_up, made_newer_by_hand", [
    ("retry", False), ("a plan copied", False), ("a new run killed in its traversal, resumed", False),
    # nothing is left to copy where the temporaries are: only the listing that saw them can name them
    ("a plan copied", True), ("a new run killed in its traversal, resumed", True)])
def test_a_killed_copy_leaves_no_temporary_however_it_is_taken_up(tmp_path, capsys, taken_up, made_newer_by_hand):
    src, dst = tmp_path / "src", tmp_path / "dst"
    # a folder per round down to depth 5: DST lists depth 4 in round 4, which waits for SRC's round-4 seal,
    # committed after DST's round-0 seal (SRC may run 3 rounds ahead): the root's listing is sealed by then
    (src / "a" / "b" / "c" / "d" / "e").mkdir(parents=True)
    (src / "a" / "b" / "c" / "d" / "e" / "f").write_text("f")
    blobs = {f"big {i}.bin": os.urandom(20 << 20) for i in range(2)}
    for name, data in blobs.items():
        (src / name).write_bytes(data)
    assert migrate_killed_at("copy-chunk:2", src, dst, tmp_path / "first.duckdb").returncode == -signal.SIGKILL
    assert any(n.endswith(TEMP_SUFFIX) for n in os.listdir(dst)), "the kill did not happen mid-file"
    if made_newer_by_hand:  # the operator puts the files there himself, newer than the source's
        for name, data in blobs.items():
            (dst / name).write_bytes(data)
            os.utime(dst / name, (time.time() + 3600, time.time() + 3600))

    if taken_up == "retry":  # the killed run's own file, taken up by retry instead of resume
        code, out, err = run_cli(capsys, "retry", "--db", str(tmp_path / "first.duckdb"))
    elif taken_up == "a plan copied":  # a new file: a dry run lists the temporary, another process copies
        db = str(tmp_path / "plan.duckdb")
        assert run_cli(capsys, "run", str(src), str(dst), "--db", db, "--dry-run")[0] == 0
        code, out, err = run_cli(capsys, "run", str(src), str(dst), "--db", db, "--use-plan")
    else:  # a new file: its traversal lists the temporary (DST's root, sealed), and is killed after that
        db = tmp_path / "second.duckdb"
        assert migrate_killed_at("dst-listed:5", src, dst, db).returncode == -signal.SIGKILL
        code, out, err = run_cli(capsys, "resume", "--db", str(db))
    assert code == 0, (out, err)
    assert sorted(os.listdir(dst)) == sorted([*blobs, "a"])  # no temporary left
    for name, data in blobs.items():
        assert (dst / name).read_bytes() == data


def test_sigterm_drains_and_the_run_resumes(tmp_path, capsys):
    src, dst, db = tmp_path / "src", tmp_path / "dst", tmp_path / "run.duckdb"
    src.mkdir()
    for i in range(16):
        (src / f"f{i}").write_bytes(os.urandom(256 << 10))
    proc = subprocess.Popen([sys.executable, "-m", "engine.cli", "run", str(src), str(dst), "--db", str(db),
                             "--bwlimit", "1M"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while not (dst.exists() and any(n.startswith("f") for n in os.listdir(dst))):
        assert time.monotonic() < deadline and proc.poll() is None, "copy never started"
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "resume" in err and "Traceback" not in err
    assert not [n for n in os.listdir(dst) if n.endswith(TEMP_SUFFIX)]

    code, out, err = run_cli(capsys, "status", "--db", str(db))
    assert code == 0 and "interrupted during copy" in out
    code, out, err = run_cli(capsys, "resume", "--db", str(db))
    assert code == 0, err
    assert sorted(os.listdir(dst)) == sorted(os.listdir(src))
    for name in os.listdir(src):
        assert (dst / name).read_bytes() == (src / name).read_bytes()


def test_a_run_killed_in_a_long_round_keeps_the_time_it_ran(tmp_path):
    """A copy of a few big files under a bandwidth limit seals nothing for seconds: the time it ran goes
    to the run file with the queue statistics (every ~2 s), so status and the resumed total keep it."""
    src = tmp_path / "src"
    src.mkdir()
    for i in range(3):
        (src / f"big{i}").write_bytes(b"\0" * (2 << 20))
    env = {**os.environ, "MIGRATE_BWLIMIT": "1M"}
    proc = subprocess.Popen([sys.executable, "-m", "engine.cli", "run", str(src), str(tmp_path / "dst"), "--db",
                             str(tmp_path / "run.duckdb")], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        time.sleep(3.5)
    finally:
        proc.kill()
        proc.wait()
    probe = Migration.open(str(tmp_path / "run.duckdb"))
    try:
        assert probe.phase == "copy" and probe.interrupted
        assert probe.elapsed() >= 1.5, probe.elapsed()
    finally:
        probe.close()


def test_ctrl_c_twice_stops_at_once_and_says_how_to_resume(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "big").write_bytes(b"\0" * (8 << 20))  # 8 s at the limit: the first Ctrl-C would wait for it
    db = tmp_path / "run.duckdb"
    proc = subprocess.Popen([sys.executable, "-m", "engine.cli", "run", str(src), str(tmp_path / "dst"), "--db",
                             str(db)], env={**os.environ, "MIGRATE_BWLIMIT": "1M"}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    time.sleep(1.5)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Ctrl-C again stops at once" in err and "stopping now" in err
    assert err.rstrip().endswith(f"migrate: stopped; resume with: migrate resume --db {db}"), err
    probe = Migration.open(str(db))
    try:
        assert probe.interrupted
    finally:
        probe.close()


def test_a_file_changed_since_the_plan_and_copied_before_a_kill_has_its_copied_size_after_the_resume(tmp_path,
                                                                                                      capsys):
    """The record holds the size copied, not the one listed: also for a file the killed process copied (the
    resume finds it complete on the destination), as the summary's bytes copied sum those records."""
    src, dst, db = tmp_path / "src", tmp_path / "dst", tmp_path / "run.duckdb"
    src.mkdir()
    (src / "small").write_bytes(b"small\n")
    (src / "big").write_bytes(b"big\n")
    code, _, err = run_cli(capsys, "run", str(src), str(dst), "--db", str(db), "-n")
    assert code == 0, err
    (src / "small").write_bytes(os.urandom(1000))  # copied by a helper process
    (src / "big").write_bytes(os.urandom(3 << 20))  # copied in this process
    killed = migrate_killed_at("copied:1", src, dst, db, ["--use-plan", "--copy-workers", "1"])
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    code, out, err = run_cli(capsys, "resume", "--db", str(db))
    assert code == 0, err
    assert (dst / "small").stat().st_size == 1000 and (dst / "big").stat().st_size == 3 << 20
    code, out, err = run_cli(capsys, "report", "--db", str(db), "--format", "csv")
    assert code == 0, err
    sizes = {line.split(",")[1]: int(line.split(",")[3]) for line in out.splitlines()[1:] if line.startswith("src,")}
    assert sizes == {"small": 1000, "big": 3 << 20}, out


def test_a_retry_killed_right_after_its_reset_is_an_interrupted_retry_not_a_finished_run(tmp_path, capsys):
    """The retry's reset (failures back to pending, dead letters deleted) and its phase are one commit: a kill
    between them left a file saying 'done, 0 failed' with the failed entries never copied, and resume
    said there was nothing to resume."""
    src, dst, db = tmp_path / "src", tmp_path / "dst", tmp_path / "run.duckdb"
    (src / "blocked" / "deeper").mkdir(parents=True)
    for name in ("a", "b", "deeper/c"):
        (src / "blocked" / name).write_text(name)
    (src / "top").write_text("top")
    dst.mkdir()
    (dst / "blocked").write_text("a file where the source has a folder")
    code, out, err = run_cli(capsys, "run", str(src), str(dst), "--db", str(db))
    assert code == 1, (code, out, err)  # 'blocked' and what is under it failed
    os.remove(dst / "blocked")  # the cause fixed

    env = {**os.environ, "MIGRATE_CRASH_AT": "retry-reset:1"}
    killed = subprocess.run([sys.executable, "-m", "engine.cli", "retry", "--db", str(db)], env=env,
                            capture_output=True, text=True, timeout=120)
    assert killed.returncode == -signal.SIGKILL, killed.stderr

    code, out, err = run_cli(capsys, "status", "--db", str(db))
    assert code == 0 and "interrupted" in out and "phase    done" not in out, out
    code, out, err = run_cli(capsys, "resume", "--db", str(db))
    assert code == 0 and "nothing to resume" not in out + err, (out, err)
    assert (dst / "blocked" / "deeper" / "c").read_text() == "deeper/c"
    assert tree_state(dst) == tree_state(src)
