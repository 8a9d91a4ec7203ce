"""Live mirror (`migrate watch`): the real command in a subprocess on real trees, and the mirror in-process."""

from __future__ import annotations

import io
from contextlib import contextmanager
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import duckdb
import pytest

from engine import cli
from engine import watch as watch_mod
from engine.migration import Migration
from engine.model import TEMP_SUFFIX
from engine.settings import Settings
from engine.store import Store
from collections import Counter

from engine.watch import LiveMirror, Mirror


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def tree_state(root: Path) -> dict[str, tuple]:
    """Every entry below root: type, and bytes or link target and mtime."""
    state = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            full = os.path.join(dirpath, name)
            st = os.lstat(full)
            if os.path.islink(full):
                state[os.path.relpath(full, root)] = ("symlink", os.readlink(full), st.st_mtime_ns)
            elif os.path.isdir(full):
                state[os.path.relpath(full, root)] = ("folder",)
            else:
                with open(full, "rb") as f:
                    state[os.path.relpath(full, root)] = ("file", f.read(), st.st_mtime_ns)
    return state

REPO = Path(__file__).resolve().parent.parent
OLD_NS = 1_600_000_000 * 10**9


def wait_for(predicate, timeout: float = 20.0, interval: float = 0.01) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


def plain_tree(root: Path, folders: int = 20, files: int = 10) -> Path:
    """A small tree of ordinary names (see test_non_utf8_names for the other kind), old mtimes."""
    for d in range(folders):
        folder = root / f"dir {d:02d}" / "inner"
        folder.mkdir(parents=True)
        for f in range(files):
            p = folder / f"file {f}.txt"
            p.write_bytes(f"{d}/{f}\n".encode() * (f + 1))
            os.utime(p, ns=(OLD_NS, OLD_NS))
    return root


def same_file(a: Path, b: Path) -> bool:
    try:
        sa, sb = os.lstat(a), os.lstat(b)
        return sa.st_mtime_ns == sb.st_mtime_ns and sa.st_size == sb.st_size and a.read_bytes() == b.read_bytes()
    except OSError:
        return False


def state_now(root: Path) -> dict | None:
    """tree_state, or None while the mirror is still writing there (a temporary file came and went)."""
    try:
        return tree_state(root)
    except FileNotFoundError:
        return None


@contextmanager
def mirror_on(src: Path, dst: Path, db: Path, **options):
    """A Mirror of src to dst recording in the run file db (its store closed after)."""
    store = Store.open(str(db))
    try:
        store.ensure_mirror_table()
        yield Mirror(str(src), str(dst), Settings(), store, **options)
    finally:
        store.close()


def temp_files(root: Path) -> list[str]:
    return [n for _, _, names in os.walk(root) for n in names if n.endswith(".migrate-tmp")]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Proc:
    """`migrate watch` as a subprocess, its output collected line by line."""

    def __init__(self, *argv: str):
        env = {k: v for k, v in os.environ.items() if not k.startswith("MIGRATE_")}
        self.p = subprocess.Popen([sys.executable, "-m", "engine.cli", *argv], cwd=REPO, env=env, text=True,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, errors="replace")
        self.out: list[str] = []
        self.err: list[str] = []
        for stream, sink in ((self.p.stdout, self.out), (self.p.stderr, self.err)):
            threading.Thread(target=lambda s=stream, k=sink: [k.append(line.rstrip("\n")) for line in s],
                             daemon=True).start()

    def said(self, text: str) -> bool:
        return any(text in line for line in self.out)

    def stop(self) -> int:
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGINT)
            try:
                self.p.wait(30)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        return self.p.returncode


# the real command ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def watching(tmp_path_factory):
    base = tmp_path_factory.mktemp("watch")
    src, dst, db = plain_tree(base / "src"), base / "dst", base / "run.duckdb"
    # a dry run leaves the run unfinished ("planned"): watch must finish it before mirroring
    assert cli.main(["run", "--dry-run", str(src), str(dst), "--db", str(db), "--observer-interval", "0.05"]) == 0
    assert not dst.exists() or not any(dst.iterdir())
    proc = Proc("watch", str(src), str(dst), "--db", str(db))
    try:
        assert wait_for(lambda: proc.said("watching ") or proc.p.poll() is not None, 60), (proc.out, proc.err)
        assert proc.p.poll() is None, (proc.out, proc.err)
        yield proc, src, dst, db
    finally:
        proc.stop()


def test_watch_finishes_the_unfinished_run_first(watching):
    proc, src, dst, db = watching
    assert any("finishing the migration" in line for line in proc.err), proc.err
    assert tree_state(dst) == tree_state(src)


def timed(check, timeout: float = 20.0) -> float:
    t0 = time.monotonic()
    assert wait_for(check, timeout)
    return time.monotonic() - t0


LATENCIES: dict[str, float] = {}


def test_created_appended_and_renamed_files_arrive(watching):
    proc, src, dst, _ = watching
    new = src / "dir 00" / "brand new.txt"
    new.write_bytes(b"fresh\n")
    LATENCIES["create"] = timed(lambda: same_file(new, dst / "dir 00" / "brand new.txt"))

    grown = src / "dir 01" / "inner" / "file 3.txt"
    with open(grown, "ab") as f:
        f.write(b"appended line\n")
    LATENCIES["append"] = timed(lambda: same_file(grown, dst / "dir 01" / "inner" / "file 3.txt"))

    old = src / "dir 02" / "inner" / "file 4.txt"
    renamed = src / "dir 02" / "inner" / "renamed 4.txt"
    os.rename(old, renamed)
    LATENCIES["rename file"] = timed(lambda: same_file(renamed, dst / "dir 02" / "inner" / "renamed 4.txt"))
    # the old name is reported as deleted on the source, and kept on the destination
    assert wait_for(lambda: proc.said("deleted on the source, kept on the destination (dir 02/inner/file 4.txt")), \
        proc.out
    assert (dst / "dir 02" / "inner" / "file 4.txt").exists()

    os.rename(src / "dir 03", src / "dir 03 moved")
    LATENCIES["rename folder"] = timed(lambda: (dst / "dir 03 moved").is_dir() and
                                       state_now(dst / "dir 03 moved") == tree_state(src / "dir 03 moved"))
    # folders keep the source's mtime, as after a run (set once the batch's files are in: not at once)
    assert wait_for(lambda: os.stat(dst / "dir 03 moved" / "inner").st_mtime_ns
                    == os.stat(src / "dir 03 moved" / "inner").st_mtime_ns), \
        (os.stat(dst / "dir 03 moved" / "inner").st_mtime_ns, os.stat(src / "dir 03 moved" / "inner").st_mtime_ns)
    print(f"\nwatch latency (s): {json.dumps({k: round(v, 3) for k, v in LATENCIES.items()})}")
    assert not temp_files(dst)


def test_a_newer_destination_file_is_never_overwritten(watching):
    proc, src, dst, _ = watching
    there = dst / "dir 04" / "inner" / "file 1.txt"
    there.write_bytes(b"edited on the destination\n")
    future = time.time_ns() + 3600 * 10**9
    os.utime(there, ns=(future, future))
    with open(src / "dir 04" / "inner" / "file 1.txt", "ab") as f:
        f.write(b"source change\n")
    assert wait_for(lambda: proc.said("kept (destination newer)")), proc.out
    assert there.read_bytes() == b"edited on the destination\n"


def test_ten_thousand_files_at_once_all_arrive_in_batches(watching):
    proc, src, dst, _ = watching
    lines_before = len(proc.out)
    t0 = time.monotonic()
    made = []
    for d in range(40):  # 8,000 files in 40 new folders
        folder = src / "storm" / f"s{d:02d}"
        folder.mkdir(parents=True)
        for f in range(200):
            (folder / f"n{f}").write_bytes(b"%d" % f)
            made.append(f"storm/s{d:02d}/n{f}")
    for f in range(2000):  # and 2,000 in a folder that exists on both sides
        (src / "dir 05" / f"flat {f}").write_bytes(b"%d" % f)
        made.append(f"dir 05/flat {f}")
    created = time.monotonic() - t0
    assert len(made) == 10_000

    def all_there():
        return all((dst / p).exists() for p in made[-1::-997]) and \
            sum(len(n) for _, _, n in os.walk(dst / "storm")) == 8000 and \
            sum(1 for n in os.listdir(dst / "dir 05") if n.startswith("flat ")) == 2000
    assert wait_for(all_there, 120, 0.1), proc.out[-5:]
    done = time.monotonic() - t0
    for p in made:
        assert (dst / p).read_bytes() == (src / p).read_bytes(), p
        assert os.lstat(dst / p).st_mtime_ns == os.lstat(src / p).st_mtime_ns, p
    batches = [line for line in proc.out[lines_before:] if " copied " in line]
    print(f"\n10,000 files: created in {created:.2f} s, all on the destination {done:.2f} s after the first, "
          f"in {len(batches)} batches")
    assert len(batches) < 100  # batched, not handled file by file
    assert not temp_files(dst)


def test_near_idle_when_nothing_changes(watching):
    proc, _, _, _ = watching
    time.sleep(1.5)  # let the last batch settle
    before, t0 = cpu_seconds(proc.p.pid), time.monotonic()
    time.sleep(3)
    used, wall = cpu_seconds(proc.p.pid) - before, time.monotonic() - t0
    print(f"\nidle CPU: {used:.3f} s over {wall:.1f} s ({100 * used / wall:.2f}%)")
    assert used / wall < 0.05


def test_stop_ends_cleanly_and_the_events_are_in_the_run_file(watching):
    proc, src, dst, db = watching
    assert proc.stop() == 0, proc.err
    assert proc.said("stopped watching after"), proc.out
    store = Store.open(str(db))
    try:
        rows = Counter(outcome for _, _, _, outcome in store.mirror_events())
    finally:
        store.close()
    assert rows.get("copied", 0) >= 10_004, rows
    assert rows.get("deleted_on_src", 0) >= 2 and rows.get("kept_dst_newer", 0) >= 1, rows
    assert not temp_files(dst)
    out = subprocess.run([sys.executable, "-m", "engine.cli", "status", "--db", str(db)], capture_output=True,
                         text=True, check=True).stdout  # the run's counts, and what the mirror did since
    watch_line = next(line for line in out.splitlines() if line.startswith("watch "))
    assert f"{sum(rows.values()):,} events recorded by migrate watch since the run" in watch_line
    assert f"{rows['copied']:,} copied" in watch_line and f"{rows['deleted_on_src']:,} deleted on src" in watch_line


# in-process ----------------------------------------------------------------------------------------

def migrated(tmp_path: Path, settings: Settings | None = None) -> tuple[Path, Path, Path]:
    src, dst, db = plain_tree(tmp_path / "src", folders=3, files=4), tmp_path / "dst", tmp_path / "run.duckdb"
    run_to_its_end(src, dst, db, settings)
    return src, dst, db


def run_to_its_end(src: Path, dst: Path, db: Path, settings: Settings | None = None) -> None:
    m = Migration.create(str(db), str(src), str(dst), settings)
    m.start()
    assert m.wait(60) and m.phase == "done"
    m.close()


@contextmanager
def tree_for_nobody(prefix: str):
    """A folder under /tmp (nobody cannot reach pytest's, under /root) for a mirror run as nobody: root reads
    and writes every folder whatever its mode, so what a mode refuses shows only to another user. Every
    folder below is opened again and removed after."""
    import tempfile
    base = Path(tempfile.mkdtemp(dir="/tmp", prefix=prefix))
    try:
        os.chmod(base, 0o755)
        yield base
    finally:
        for dirpath, dirnames, _ in os.walk(base):
            for name in dirnames:
                os.chmod(os.path.join(dirpath, name), 0o755)
        shutil.rmtree(base)


def as_nobody(base: Path, script: str, *args) -> subprocess.CompletedProcess:
    """python -c script args, as nobody when this is root (the tree below base given to nobody first)."""
    command = [sys.executable, "-c", script, *map(str, args)]
    if os.geteuid() == 0:
        for dirpath, dirnames, filenames in os.walk(base):
            for name in [dirpath] + [os.path.join(dirpath, n) for n in dirnames + filenames]:
                os.lchown(name, 65534, 65534)
        command = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *command]
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=60)


class InThread:
    def __init__(self, live: LiveMirror):
        self.live = live
        live.listen()
        self.result: list = []
        self.thread = threading.Thread(target=lambda: self.result.append(live.serve()), daemon=True)
        self.thread.start()
        assert live.ready.wait(30)

    def stop(self) -> int:
        self.live.stop()
        self.thread.join(30)
        self.live.close()
        assert not self.thread.is_alive()
        return self.result[0]


def outcomes(db: Path) -> dict[tuple[str, str], int]:
    store = Store.open(str(db))
    try:
        rows = store.mirror_events()
    finally:
        store.close()
    return {(o, p): 1 for _, _, p, o in rows}


def test_propagate_deletes_removes_only_unchanged_copies(tmp_path):
    src, dst, db = migrated(tmp_path)
    settings = Settings()
    edited = dst / "dir 01" / "inner" / "file 1.txt"
    extra = dst / "dir 02" / "inner" / "only on dst.txt"
    extra.write_bytes(b"mine")
    said = io.StringIO()
    runner = InThread(LiveMirror(str(src), str(dst), str(db), settings, propagate_deletes=True, out=said))
    try:
        os.unlink(src / "dir 00" / "inner" / "file 0.txt")  # a copy: goes
        edited.write_bytes(b"edited on dst")
        future = time.time_ns() + 3600 * 10**9
        os.utime(edited, ns=(future, future))
        os.unlink(src / "dir 01" / "inner" / "file 1.txt")  # edited on dst since: stays
        for p in sorted((src / "dir 02").rglob("*"), reverse=True):  # a folder with a dst-only file
            p.unlink() if p.is_file() else p.rmdir()
        (src / "dir 02").rmdir()
        assert wait_for(lambda: not (dst / "dir 00" / "inner" / "file 0.txt").exists())
        assert wait_for(lambda: not (dst / "dir 02" / "inner" / "file 0.txt").exists())
        # kept: the edited file, the dst-only file, and the two folders that still hold it
        assert wait_for(lambda: runner.live.mirror.totals["kept_on_dst"] >= 4)
    finally:
        assert runner.stop() == 0
    assert edited.read_bytes() == b"edited on dst"
    assert extra.read_bytes() == b"mine"  # never touched: not on the source
    assert sorted(os.listdir(dst / "dir 02" / "inner")) == ["only on dst.txt"]
    got = outcomes(db)
    assert ("deleted_on_dst", "dir 00/inner/file 0.txt") in got
    assert ("kept_on_dst", "dir 02/inner/only on dst.txt") in got
    assert ("kept_on_dst", "dir 01/inner/file 1.txt") in got
    assert ("kept_on_dst", "dir 02") in got  # still holds the kept file
    last = said.getvalue().strip().splitlines()[-1]
    deleted = sum(1 for outcome, _ in got if outcome == "deleted_on_dst")
    assert last.startswith("stopped watching") and f" {deleted:,} deleted on the destination" in last, last


def test_propagate_deletes_keeps_a_newer_destination_file_when_both_are_dated_past_2262(tmp_path):
    """The run file holds both dates as of 2262: they compared equal, and the newer destination file went."""
    src, dst, db = tmp_path / "src", tmp_path / "dst", tmp_path / "r.duckdb"
    src.mkdir()
    (src / "f").write_text("v1")
    y2300, y2400 = 10_445_212_800 * 10**9, 13_569_465_600 * 10**9
    try:
        os.utime(src / "f", ns=(y2300, y2300))
    except OSError:
        pytest.skip("this filesystem cannot store such a date")
    assert cli.main(["run", str(src), str(dst), "--db", str(db)]) == 0
    os.utime(dst / "f", ns=(y2400, y2400))  # changed on the destination since it was copied
    runner = InThread(LiveMirror(str(src), str(dst), str(db), Settings(), propagate_deletes=True, out=io.StringIO()))
    try:
        (src / "f").unlink()
        assert wait_for(lambda: runner.live.mirror.totals["kept_on_dst"] >= 1)
    finally:
        assert runner.stop() == 0
    assert (dst / "f").read_text() == "v1" and ("kept_on_dst", "f") in outcomes(db)


def test_deletions_never_reach_through_a_destination_symlink(tmp_path):
    """A DST folder moved to another disk and replaced by a symlink to it: deleting on the source must not
    delete there (the path on DST now reaches outside the destination)."""
    src, dst, db = migrated(tmp_path)
    elsewhere = tmp_path / "other disk"
    shutil.move(dst / "dir 00", elsewhere)
    os.symlink(elsewhere, dst / "dir 00")
    before = tree_state(elsewhere)
    runner = InThread(LiveMirror(str(src), str(dst), str(db), Settings(), propagate_deletes=True, out=io.StringIO()))
    try:
        os.unlink(src / "dir 00" / "inner" / "file 0.txt")
        shutil.rmtree(src / "dir 00" / "inner")
        os.unlink(src / "dir 01" / "inner" / "file 0.txt")  # a real copy: goes, as before
        assert wait_for(lambda: not (dst / "dir 01" / "inner" / "file 0.txt").exists())
        assert wait_for(lambda: runner.live.mirror.totals["kept_on_dst"] >= 1)
    finally:
        assert runner.stop() == 0
    assert tree_state(elsewhere) == before
    got = outcomes(db)
    assert ("kept_on_dst", "dir 00/inner") in got and ("deleted_on_dst", "dir 01/inner/file 0.txt") in got
    with duckdb.connect(str(db), read_only=True) as con:
        reasons = {r[0] for r in con.execute("SELECT error FROM mirror_events WHERE outcome = 'kept_on_dst' "
                                             "AND path = ?", [b"dir 00/inner"]).fetchall()}
    assert reasons == {"'dir 00' on the destination is a symlink now, not a folder"}
    assert not [path for outcome, path in got if outcome == "deleted_on_dst" and path.startswith("dir 00")]


def test_a_deletion_under_a_destination_folder_removed_by_hand_records_nothing(tmp_path):
    src, dst, db = migrated(tmp_path)
    shutil.rmtree(dst / "dir 01")
    runner = InThread(LiveMirror(str(src), str(dst), str(db), Settings(), propagate_deletes=True, out=io.StringIO()))
    try:
        os.unlink(src / "dir 01" / "inner" / "file 0.txt")
        (src / "dir 00" / "later.txt").write_bytes(b"after the deletion")
        assert wait_for(lambda: (dst / "dir 00" / "later.txt").exists())
    finally:
        assert runner.stop() == 0
    assert not [path for outcome, path in outcomes(db) if path.startswith("dir 01")]


def test_a_destination_swapped_for_a_symlink_into_the_source_stops_the_watch(tmp_path):
    """The watch would copy the source into itself, its own copies feeding it new events, until the names
    grew too long (thousands of nested folders in the source): the pair is checked again, the watch stops."""
    src, dst, db = migrated(tmp_path)
    proc = Proc("watch", str(src), str(dst), "--db", str(db))
    try:
        assert wait_for(lambda: proc.said("watching ") or proc.p.poll() is not None, 60), (proc.out, proc.err)
        before = tree_state(src)
        dst.rename(tmp_path / "old dst")
        os.symlink(src / "dir 00", dst)
        (src / "dir 01" / "new.txt").write_bytes(b"new")
        assert wait_for(lambda: proc.p.poll() is not None, 30)
    finally:
        code = proc.stop()
    assert code == 2 and any("inside the source" in line and "stopped watching" in line for line in proc.err), \
        proc.err
    assert set(tree_state(src)) == set(before) | {"dir 01/new.txt"}  # nothing copied into the source


def test_a_destination_removed_and_made_again_while_watching_stops_the_watch(tmp_path):
    """What the run file holds of the destination (copied, identical) is true of the folder it copied into:
    a folder made anew at that path (ext4 may even give it the old inode number) would get the new changes
    only, and the watch would say all is well. It stops instead, naming the reason; so does a new watch."""
    src, dst, db = migrated(tmp_path)
    proc = Proc("watch", str(src), str(dst), "--db", str(db))
    try:
        assert wait_for(lambda: proc.said("watching ") or proc.p.poll() is not None, 60), (proc.out, proc.err)
        (src / "first.txt").write_bytes(b"1")
        assert wait_for(lambda: (dst / "first.txt").exists())
        shutil.move(dst, tmp_path / "old dst")
        dst.mkdir()
        (src / "second.txt").write_bytes(b"2")
        assert wait_for(lambda: proc.p.poll() is not None, 30)
    finally:
        code = proc.stop()
    assert code == 2 and any("is not the folder this run compared" in line
                             and "stopped watching" in line for line in proc.err), proc.err
    assert os.listdir(dst) == [] and not (tmp_path / "old dst" / "second.txt").exists()
    again = Proc("watch", str(src), str(dst), "--db", str(db))
    try:
        assert wait_for(lambda: again.p.poll() is not None, 60)
    finally:
        assert again.stop() == 2 and os.listdir(dst) == []
    assert any("`migrate watch --rescan` compares the trees again first; not watching" in line
               for line in again.err), again.err


def test_excluded_entries_are_recorded_not_copied(tmp_path):
    settings = Settings(exclude=["*.tmp", "cache/"])
    src, dst, db = migrated(tmp_path, settings)
    runner = InThread(LiveMirror(str(src), str(dst), str(db), settings, out=open(os.devnull, "w")))
    try:
        (src / "x.tmp").write_bytes(b"skip")
        (src / "cache").mkdir()
        (src / "cache" / "y.txt").write_bytes(b"skip")
        (src / "ok.txt").write_bytes(b"take")
        assert wait_for(lambda: (dst / "ok.txt").exists())
        time.sleep(0.3)  # the same batch, or the next one, would have copied the others
    finally:
        runner.stop()
    assert not (dst / "x.tmp").exists() and not (dst / "cache").exists()
    got = outcomes(db)
    assert ("excluded", "x.tmp") in got and ("excluded", "cache") in got and ("copied", "ok.txt") in got


def test_propagated_deletions_never_touch_what_the_watch_excludes(tmp_path):
    """A watch given an exclude (here another than the run's, as `migrate watch --exclude` allows for a
    finished run) never deletes an excluded destination entry, as it never copies one: a deleted excluded
    file, and the excluded files in a deleted folder, stay on the destination."""
    src, dst, db = migrated(tmp_path)  # every file copied by the run
    shutil.rmtree(src / "dir 00")
    os.unlink(src / "dir 01" / "inner" / "file 0.txt")
    (src / "dir 02" / "inner" / "file 1.txt").unlink()
    changes = {(3, str(src / "dir 00")), (3, str(src / "dir 01" / "inner" / "file 0.txt")),
               (3, str(src / "dir 02" / "inner" / "file 1.txt"))}
    store = Store.open(str(db))
    try:
        store.ensure_mirror_table()
        mirror = Mirror(str(src), str(dst), Settings(exclude=["file 0.txt", "dir 02/"]), store,
                        propagate_deletes=True)
        mirror.apply(changes)
    finally:
        store.close()
    assert (dst / "dir 00" / "inner" / "file 0.txt").exists()  # excluded, in a deleted folder
    assert not (dst / "dir 00" / "inner" / "file 1.txt").exists()  # a copy, not excluded: deleted
    assert (dst / "dir 01" / "inner" / "file 0.txt").exists()
    assert (dst / "dir 02" / "inner" / "file 1.txt").exists()  # in an excluded folder


def test_non_utf8_names_still_arrive(tmp_path, monkeypatch):
    """watchfiles fails on any event for a path that is not valid UTF-8, even on its own start: such folders
    are kept out of the listeners and swept; the mirror's own reads never make a listener fail again."""
    monkeypatch.setattr(watch_mod, "UNWATCHABLE_SWEEP_S", 1.0)
    src, dst, db = migrated(tmp_path)
    bad = os.fsdecode(b"bad \xff\xfe name")
    (src / bad).mkdir()
    (src / bad / "in it.txt").write_bytes(b"one")
    (src / "dir 00" / bad).write_bytes(b"a file with such a name")
    live = LiveMirror(str(src), str(dst), str(db), Settings(), out=open(os.devnull, "w"))
    runner = InThread(live)
    try:
        (src / "plain 1.txt").write_bytes(b"x")
        assert wait_for(lambda: same_file(src / bad / "in it.txt", dst / bad / "in it.txt"), 30)
        assert wait_for(lambda: same_file(src / "dir 00" / bad, dst / "dir 00" / bad), 30)
        assert wait_for(lambda: same_file(src / "plain 1.txt", dst / "plain 1.txt"), 30)
        assert live.mirror.unwatchable == {bad}
        time.sleep(0.5)
        failures, sweeps = live.failures, live.rescans
        (src / "plain 2.txt").write_bytes(b"y")  # an ordinary change: an ordinary, fast event
        latency = timed(lambda: same_file(src / "plain 2.txt", dst / "plain 2.txt"), 30)
        (src / bad / "second.txt").write_bytes(b"two")  # inside such a folder: no event; the sweep finds it
        inside = timed(lambda: same_file(src / bad / "second.txt", dst / bad / "second.txt"), 30)
        time.sleep(0.3)
        assert live.failures == failures, live.last_failure  # sweeps read the folder before listening anew
        assert live.rescans > sweeps
    finally:
        runner.stop()
    print(f"\nnon-UTF-8 tree: ordinary change {latency:.3f} s, inside such a folder {inside:.3f} s "
          f"(sweep every 1 s here); {live.failures} listener failures at the start")


def test_the_failing_path_is_read_back_from_watchfiles_message(tmp_path):
    from watchfiles._rust_notify import RustNotify
    name = os.fsdecode(b'odd \xff "quote" back\\slash tab\there \xc3\xa9')
    notify = RustNotify([str(tmp_path)], False, False, 300, True, True)
    try:
        (tmp_path / name).write_bytes(b"x")
        with pytest.raises(RuntimeError) as caught:
            notify.watch(200, 20, 2000, None)
    finally:
        notify.close()
    assert watch_mod.path_from_error(str(caught.value)) == str(tmp_path / name)


def test_a_new_folder_is_walked_whole_in_one_batch(tmp_path):
    src, dst, db = plain_tree(tmp_path / "src", 1, 1), tmp_path / "dst", tmp_path / "run.duckdb"
    dst.mkdir()
    for i in range(50):  # created before anyone watched: no event of their own
        p = src / "new" / f"d{i % 5}" / f"f{i}"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x" * i)
    with mirror_on(src, dst, db) as mirror:
        result = mirror.apply({(1, str(src / "new")), (1, str(src / "new" / "d1" / "f1"))})
        assert result.counts["copied"] == 50 and result.counts["folder_created"] == 6
        assert tree_state(dst / "new") == tree_state(src / "new")
        for sub in ("new", "new/d3"):
            assert os.stat(dst / sub).st_mtime_ns == os.stat(src / sub).st_mtime_ns
        again = mirror.apply({(2, str(src / "new" / "d1" / "f1"))})
        assert again.counts["identical"] == 1 and again.counts["copied"] == 0
        batches = sorted(Counter(batch for batch, _, _, _ in mirror.store.mirror_events()).items())
    assert batches == [(1, 56), (2, 1)]


def test_watch_refuses_a_run_file_of_another_pair(tmp_path, capsys):
    src, dst, db = migrated(tmp_path)
    other = tmp_path / "other"
    other.mkdir()
    code, out, err = run_cli(capsys, "watch", str(other), str(dst), "--db", str(db))
    assert code == 2 and out == ""
    assert err.splitlines() == [f"migrate: error: '{db}' holds the run {src} -> {dst}, not this pair; "
                                "give a new --db path for a different pair"]


def test_rescan_catches_changes_made_while_nothing_watched(tmp_path):
    src, dst, db = migrated(tmp_path)
    changed = src / "dir 01" / "inner" / "file 2.txt"
    changed.write_bytes(b"changed while nobody watched\n")
    leftover = dst / "dir 01" / "inner" / f".file 3.txt.0123abcd{TEMP_SUFFIX}"  # a watch killed mid-file left it
    leftover.write_bytes(b"half")
    proc = Proc("watch", str(src), str(dst), "--db", str(db), "--rescan")
    try:
        assert wait_for(lambda: proc.said("watching ") or proc.p.poll() is not None, 60), (proc.out, proc.err)
        assert same_file(changed, dst / "dir 01" / "inner" / "file 2.txt")
        assert any("comparing the trees again" in line for line in proc.err), proc.err
        assert not leftover.exists()
    finally:
        assert proc.stop() == 0


def test_comparisons_say_kept_newer_files_once_without_recording_them(tmp_path):
    """A folder watchfiles cannot watch is compared every 5 s: a row per kept-newer file at each sweep
    would grow the run file for ever (and made status count the same files over and over), and saying it
    at each sweep printed the same line for ever."""
    src, dst, db = migrated(tmp_path)
    newer = dst / "dir 01" / "inner" / "file 1.txt"
    newer.write_bytes(b"edited on dst")
    future = time.time_ns() + 3600 * 10**9
    os.utime(newer, ns=(future, future))
    with mirror_on(src, dst, db) as mirror:
        first, second = mirror.scan(""), mirror.scan("")
        assert first.counts["kept_dst_newer"] == 1 and second.counts["kept_dst_newer"] == 0
        assert [o for _, _, _, o in mirror.store.mirror_events() if o == "kept_dst_newer"] == []
    assert newer.read_bytes() == b"edited on dst"


def test_a_comparison_reports_deletions_it_finds_once(tmp_path):
    """A burst holding a name watchfiles cannot report is handled by comparing the folders: a deletion in
    that burst must still be reported (once, not again at the next comparison), and a file that was only
    ever on the destination is not a deletion."""
    src, dst, db = migrated(tmp_path)
    os.unlink(src / "dir 00" / "inner" / "file 0.txt")
    (dst / "dir 00" / "inner" / "only on dst.txt").write_bytes(b"mine")
    with mirror_on(src, dst, db) as mirror:
        first, second = mirror.scan(""), mirror.scan("")
        deletions = [p for _, _, p, o in mirror.store.mirror_events() if o == "deleted_on_src"]
    assert first.counts["deleted_on_src"] == 1 and second.counts["deleted_on_src"] == 0
    assert deletions == ["dir 00/inner/file 0.txt"]
    assert (dst / "dir 00" / "inner" / "file 0.txt").exists()  # reported, not propagated


def test_sweeps_of_an_unwatchable_folder_say_only_what_changed(tmp_path, monkeypatch):
    """A folder whose name is not valid UTF-8 is compared every few seconds (the root, which holds it, too):
    a file kept because the destination is newer, or a failure, found again unchanged at each sweep was
    printed (and the failure recorded) again at each sweep, for ever. Said once; said again when the
    source changes."""
    monkeypatch.setattr(watch_mod, "UNWATCHABLE_SWEEP_S", 0.2)
    src, dst, db = migrated(tmp_path)
    bad = os.fsdecode(b"bad\xfffold")
    future = time.time_ns() + 3600 * 10**9
    (src / bad / "folder here").mkdir(parents=True)
    (dst / bad).mkdir()
    (dst / bad / "folder here").write_bytes(b"a file where the source has a folder")  # fails, never replaced
    for kept in (src / bad / "kept.txt", src / "top kept.txt"):  # in the swept folder, and in the root
        kept.write_bytes(b"source")
        there = dst / kept.relative_to(src)
        there.write_bytes(b"edited on the destination")
        os.utime(there, ns=(future, future))
    said = io.StringIO()
    live = LiveMirror(str(src), str(dst), str(db), Settings(), out=said)
    runner = InThread(live)

    def lines() -> list[str]:
        return said.getvalue().splitlines()

    def after_sweeps(n: int) -> None:  # sweeps n more times, the one under way finished first
        target = live.rescans + n + 1
        assert wait_for(lambda: live.rescans >= target, 30), lines()

    try:
        assert wait_for(lambda: live.mirror.totals["kept_dst_newer"] >= 2 and live.mirror.totals["failed"] >= 1,
                        30), lines()
        after_sweeps(1)
        quiet, totals = lines(), Counter(live.mirror.totals)
        after_sweeps(3)
        assert lines() == quiet  # nothing changed: nothing said
        assert live.mirror.totals == totals
        assert totals["kept_dst_newer"] == 2 and totals["failed"] == 1, quiet  # each said once
        assert sum("failed (first: bad\\xfffold/folder here: the destination has a file where" in line
                   for line in quiet) == 1, quiet

        (src / bad / "kept.txt").write_bytes(b"source, changed again")  # still older than the destination's
        (src / bad / "new.txt").write_bytes(b"new")
        assert wait_for(lambda: same_file(src / bad / "new.txt", dst / bad / "new.txt"), 30), lines()
        assert wait_for(lambda: live.mirror.totals["kept_dst_newer"] == 3, 30), lines()
        after_sweeps(3)
        assert live.mirror.totals["kept_dst_newer"] == 3 and live.mirror.totals["failed"] == 1, lines()
        news = lines()[len(quiet):]
        assert any("1 copied" in line for line in news) and any("1 kept (destination newer)" in line
                                                                 for line in news), news
    finally:
        assert runner.stop() == 0
    assert (dst / bad / "kept.txt").read_bytes() == b"edited on the destination"
    assert (dst / "top kept.txt").read_bytes() == b"edited on the destination"
    assert (dst / bad / "folder here").read_bytes() == b"a file where the source has a folder"
    store = Store.open(str(db))
    try:
        failed = [p for _, _, p, o in store.mirror_events() if o == "failed"]
    finally:
        store.close()
    assert failed == [f"{bad}/folder here"]  # recorded once, not at every sweep


@pytest.mark.parametrize("propagate", [False, True], ids=["reported", "propagated"])
def test_a_deleted_folder_beside_an_unwatchable_one_is_counted_once(tmp_path, propagate):
    """With a folder watchfiles cannot watch, the folder holding it is watched without recursion and each other
    subfolder by a listener of its own: both report that subfolder's deletion, in batches of their own, and it
    was said, counted (status too) and recorded twice: 4 deletions for 3 entries. With --propagate-deletes a
    deleted folder also took its subtree again, entries whose own events had said them: 9 kept for 3."""
    src, dst, db = migrated(tmp_path)
    bad = os.fsdecode(b"b\xff")
    (src / bad).mkdir()
    said = io.StringIO()
    live = LiveMirror(str(src), str(dst), str(db), Settings(), propagate_deletes=propagate, out=said)
    runner = InThread(live)
    outcome = "kept_on_dst" if propagate else "deleted_on_src"
    try:
        assert wait_for(lambda: live.mirror.unwatchable == {bad} and "" in live._shallow, 30), said.getvalue()
        (src / "nd" / "deep").mkdir(parents=True)
        (src / "nd" / "deep" / "f").write_bytes(b"x")
        assert wait_for(lambda: same_file(src / "nd" / "deep" / "f", dst / "nd" / "deep" / "f"), 30)
        assert wait_for(lambda: "nd" in live._covered, 30)  # its own listener, beside the root's shallow one
        edited = dst / "nd" / "deep" / "f"
        if propagate:  # edited on the destination since: kept, and so are the folders holding it
            edited.write_bytes(b"edited on dst")
            future = time.time_ns() + 3600 * 10**9
            os.utime(edited, ns=(future, future))
        shutil.rmtree(src / "nd")
        assert wait_for(lambda: live.mirror.totals[outcome] >= 3, 30), said.getvalue()
        time.sleep(1.5)  # longer than a burst is grouped: the other listener's batch is in too
    finally:
        assert runner.stop() == 0
    assert live.mirror.totals[outcome] == 3, said.getvalue()
    last = said.getvalue().strip().splitlines()[-1]
    expected = "0 deleted on the destination, 3 not deleted" if propagate else "3 deletions reported"
    assert expected in last, last
    store = Store.open(str(db))
    try:
        rows = sorted(p for _, _, p, o in store.mirror_events() if o in ("deleted_on_src", "kept_on_dst"))
        counted = store.mirror_outcomes()
    finally:
        store.close()
    assert rows == ["nd", "nd/deep", "nd/deep/f"]
    assert counted.get(outcome) == 3 and "deleted_on_dst" not in counted, counted
    assert sorted(os.listdir(dst / "nd" / "deep")) == ["f"]
    if propagate:
        assert edited.read_bytes() == b"edited on dst"


@pytest.mark.parametrize("run_was", ["unfinished", "done"])
def test_the_mirror_goes_on_with_the_runs_own_settings(tmp_path, run_was):
    """A run made with --exclude '*.log': the watch that finishes it, or follows it, mirrors with that exclude
    too (what `migrate config show --db` says), not with the defaults."""
    src, dst, db = tmp_path / "src", tmp_path / "dst", tmp_path / "run.duckdb"
    (src / "sub").mkdir(parents=True)
    (src / "sub" / "a.txt").write_text("a")
    argv = [sys.executable, "-m", "engine.cli", "run", str(src), str(dst), "--db", str(db), "--exclude", "*.log"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MIGRATE_")}
    if run_was == "unfinished":
        env["MIGRATE_CRASH_AT"] = "sealed:2"
    done = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == (-signal.SIGKILL if run_was == "unfinished" else 0), done.stderr

    proc = Proc("watch", str(src), str(dst), "--db", str(db))
    try:
        assert wait_for(lambda: proc.said("watching ") or proc.p.poll() is not None, 60), (proc.out, proc.err)
        (src / "sub" / "new.log").write_text("excluded")
        assert wait_for(lambda: proc.said("1 excluded"), 20), (proc.out, proc.err)  # it said "1 copied" before
        assert not (dst / "sub" / "new.log").exists()
    finally:
        assert proc.stop() == 0


def test_propagate_deletes_makes_way_for_a_file_made_a_folder_and_a_folder_made_a_file(tmp_path):
    """Removed and made again as the other kind within one batch: the destination's copy of what was deleted
    goes (a newer destination file still stays), and the new entry takes its place, as in two batches."""
    src, dst, db = migrated(tmp_path)
    d0, d1, d2 = "dir 00/inner", "dir 01", "dir 02/inner/file 2.txt"
    shutil.rmtree(src / d0)  # a folder of copies, now a file
    (src / d0).write_bytes(b"a file now")
    os.unlink(src / "dir 01" / "inner" / "file 0.txt")
    shutil.rmtree(src / d1)  # a folder holding a file edited on the destination, now a file
    (src / d1).write_bytes(b"a file too")
    edited = dst / "dir 01" / "inner" / "file 1.txt"
    future = time.time_ns() + 3600 * 10**9
    os.utime(edited, ns=(future, future))
    os.unlink(src / d2)  # a file, now a folder
    (src / d2).mkdir()
    (src / d2 / "in").write_bytes(b"inside")
    (dst / "mine").write_bytes(b"only on the destination")  # the source makes a folder of that name: fails
    (src / "mine").mkdir()
    changes = {(1, str(src / "mine")), (3, str(src / d0)), (1, str(src / d0)), (3, str(src / d0 / "file 0.txt")),
               (3, str(src / d1)), (1, str(src / d1)), (3, str(src / "dir 01" / "inner" / "file 0.txt")),
               (3, str(src / d2)), (1, str(src / d2)), (1, str(src / d2 / "in"))}
    with mirror_on(src, dst, db, propagate_deletes=True) as mirror:
        result = mirror.apply(changes)
    assert (dst / d0).read_bytes() == b"a file now"
    assert (dst / d2 / "in").read_bytes() == b"inside"
    assert edited.stat().st_mtime_ns == future  # newer on the destination: kept, so is its folder
    assert (dst / d1).is_dir() and not (dst / "dir 01" / "inner" / "file 0.txt").exists()
    assert (dst / "mine").read_bytes() == b"only on the destination"
    assert result.counts["failed"] == 2 and sorted(p for p, _ in result.errors) == [d1, "mine"], result.line()
    assert ("kept_on_dst", "mine") not in outcomes(db)  # never on the source: not a deletion
    assert temp_files(dst) == []


def test_a_second_signal_stops_a_long_copy_at_once_and_leaves_no_temporary(tmp_path):
    """The first Ctrl+C lets the batch under way finish; the second gives up the copy in flight (a big file
    under a bandwidth limit took its whole time, however many signals came) and removes its temporary."""
    src, dst, db = migrated(tmp_path)
    proc = Proc("watch", str(src), str(dst), "--db", str(db), "--bwlimit", "1M")
    try:
        assert wait_for(lambda: proc.said("watching"), 60)
        part = src / "big.part"
        part.write_bytes(os.urandom(16 << 20))  # 16 s at 1 MiB/s
        part.rename(src / "big.bin")
        assert wait_for(lambda: temp_files(dst), 20)  # the copy is under way
        proc.p.send_signal(signal.SIGINT)
        time.sleep(0.5)
        assert proc.p.poll() is None  # finishing the batch under way
        proc.p.send_signal(signal.SIGINT)
        code = proc.p.wait(5)
    finally:
        if proc.p.poll() is None:
            proc.p.kill()
            proc.p.wait()
    assert code == 0
    assert temp_files(dst) == [] and not (dst / "big.bin").exists()
    assert wait_for(lambda: any("stopped at once: 1 changes not brought over" in line for line in proc.out), 5), \
        proc.out


@pytest.mark.parametrize("where", ["a folder the run made", "a new folder", "a source file removed meanwhile"])
def test_a_watch_killed_mid_copy_leaves_no_temporary_once_restarted(tmp_path, where):
    """kill -9 while a big file is copied: the next watch removes the temporary before it listens (the run file
    names the folders the killed batch was copying into)."""
    src, dst, db = migrated(tmp_path)
    folder = src / "made later" / "deep" if where == "a new folder" else src / "dir 01"
    proc = Proc("watch", str(src), str(dst), "--db", str(db), "--bwlimit", "1M")
    try:
        assert wait_for(lambda: proc.said("watching"), 60)
        part = tmp_path / "big.part"
        part.write_bytes(os.urandom(16 << 20))  # 16 s at 1 MiB/s
        folder.mkdir(parents=True, exist_ok=True)
        part.rename(folder / "big.bin")
        assert wait_for(lambda: temp_files(dst), 20)  # the copy is under way
    finally:
        proc.p.kill()
        proc.p.wait()
    assert temp_files(dst), "the kill came after the copy"
    if where == "a source file removed meanwhile":  # the temporary is known by the file its batch was copying
        (folder / "big.bin").unlink()

    again = Proc("watch", str(src), str(dst), "--db", str(db))
    try:
        assert wait_for(lambda: again.said("watching") or again.p.poll() is not None, 60), (again.out, again.err)
        assert temp_files(dst) == [], "the killed copy's temporary is still there"
        if where != "a source file removed meanwhile":
            (folder / "big.bin").touch()  # an event: copied now, whole
            assert wait_for(lambda: same_file(folder / "big.bin", dst / folder.relative_to(src) / "big.bin"), 30)
    finally:
        assert again.stop() == 0
    assert temp_files(dst) == []


def test_a_file_written_again_within_2_s_of_its_copy_arrives(tmp_path):
    """Preallocated then filled (truncate -s, then dd conv=notrunc), or any same-size rewrite: the second
    version's mtime is within 2 s of the copy's. The event says it changed: it was 'already identical' and
    the destination kept the first version for good. A destination file newer than the source is still kept."""
    src, dst, db = migrated(tmp_path)
    changed, edited = "dir 00/inner/file 0.txt", "dir 01/inner/file 0.txt"
    with mirror_on(src, dst, db) as mirror:
        for rel in (changed, edited):
            (src / rel).write_bytes(b"\0" * 8)  # preallocated
        first = mirror.apply({(1, str(src / changed)), (1, str(src / edited))})
        assert first.counts["copied"] == 2
        t = os.stat(src / changed).st_mtime_ns
        (src / changed).write_bytes(b"filled!\n")  # same size, within 2 s
        os.utime(src / changed, ns=(t + 10**9, t + 10**9))
        (src / edited).write_bytes(b"src edit")
        os.utime(src / edited, ns=(t + 10**9, t + 10**9))
        (dst / edited).write_bytes(b"dst edit")  # newer on the destination, within 2 s: kept
        os.utime(dst / edited, ns=(t + 15 * 10**8, t + 15 * 10**8))
        again = mirror.apply({(2, str(src / changed)), (2, str(src / edited))})
    assert (dst / changed).read_bytes() == b"filled!\n", again.line()
    assert os.stat(dst / changed).st_mtime_ns == t + 10**9
    assert (dst / edited).read_bytes() == b"dst edit"
    assert again.counts["copied"] == 1 and again.counts["identical"] == 1
    assert temp_files(dst) == []


def test_a_folder_keeps_the_source_mtime_after_an_entry_of_it_is_deleted_or_moved_away(tmp_path):
    """rsync -a (without --delete) gives a folder the source's mtime; a deletion in it, reported and not
    propagated, left the destination folder with the time it had before."""
    src, dst, db = migrated(tmp_path)
    with mirror_on(src, dst, db) as mirror:
        os.unlink(src / "dir 00" / "inner" / "file 0.txt")
        os.rename(src / "dir 01" / "inner" / "file 0.txt", src / "dir 01" / "moved.txt")
        result = mirror.apply({(3, str(src / "dir 00" / "inner" / "file 0.txt")),
                               (3, str(src / "dir 01" / "inner" / "file 0.txt")), (1, str(src / "dir 01" / "moved.txt"))})
    assert result.counts["deleted_on_src"] == 2 and result.counts["copied"] == 1
    for folder in ("dir 00/inner", "dir 01/inner", "dir 01"):
        assert os.stat(dst / folder).st_mtime_ns == os.stat(src / folder).st_mtime_ns, folder


def test_a_chmod_on_the_source_reaches_the_identical_destination_file(tmp_path):
    """chmod 600 on the source (nothing else changed) was 'already identical' and the copy stayed 644: as a
    run leaves them, identical files end with the source's mode, in an event and in a comparison alike."""
    src, dst, db = migrated(tmp_path)
    by_event, by_scan = "dir 00/inner/file 0.txt", "dir 01/inner/file 0.txt"
    with mirror_on(src, dst, db) as mirror:
        for rel in (by_event, by_scan):
            os.chmod(src / rel, 0o600)
            assert os.stat(dst / rel).st_mode & 0o777 != 0o600
        result = mirror.apply({(2, str(src / by_event))})
        mirror.scan("dir 01")
    assert result.counts["identical"] == 1 and result.counts["copied"] == 0
    for rel in (by_event, by_scan):
        assert os.stat(dst / rel).st_mode & 0o777 == 0o600, rel


def test_a_name_with_a_newline_does_not_break_a_batchs_line(tmp_path):
    src, dst, db = migrated(tmp_path)
    (src / "new\nline").write_bytes(b"x")
    with mirror_on(src, dst, db) as mirror:
        assert mirror.apply({(1, str(src / "new\nline"))}).counts["copied"] == 1
        os.unlink(src / "new\nline")
        line = mirror.apply({(3, str(src / "new\nline"))}).line()
    assert "\n" not in line and "(new\\x0aline)" in line, line


def test_folders_end_with_the_source_mode(tmp_path):
    """A folder the mirror made had its mode less the umask (775 became 755), and a chmod of a source folder
    never reached the destination; a run gives folders the source's mode (rsync -a too). One without owner
    write still takes new files, and ends with its mode."""
    src, dst, db = migrated(tmp_path)
    old = os.umask(0o022)
    try:
        (src / "shared").mkdir()
        os.chmod(src / "shared", 0o775)
        (src / "shared" / "f").write_bytes(b"f")
        os.chmod(src / "dir 00", 0o700)
        (src / "dir 01" / "inner" / "new").write_bytes(b"n")
        os.chmod(src / "dir 01" / "inner", 0o555)
        with mirror_on(src, dst, db) as mirror:
            mirror.apply({(1, str(src / "shared")), (2, str(src / "dir 00")),
                          (1, str(src / "dir 01" / "inner" / "new"))})
    finally:
        os.umask(old)
        os.chmod(src / "dir 01" / "inner", 0o755)
    assert (dst / "shared" / "f").read_bytes() == b"f" and (dst / "dir 01" / "inner" / "new").read_bytes() == b"n"
    got = {p: os.stat(dst / p).st_mode & 0o7777 for p in ("shared", "dir 00", "dir 01/inner")}
    os.chmod(dst / "dir 01" / "inner", 0o755)
    assert got == {"shared": 0o775, "dir 00": 0o700, "dir 01/inner": 0o555}


def a_new_folder_of_subfolders(tmp_path: Path, count: int) -> tuple[Path, Path, Path]:
    """A source with a folder 'new' of `count` subfolders holding a file each, made before anyone watched."""
    src, dst, db = plain_tree(tmp_path / "src", 1, 1), tmp_path / "dst", tmp_path / "run.duckdb"
    dst.mkdir()
    for i in range(count):
        p = src / "new" / f"d{i}" / "f"
        p.parent.mkdir(parents=True)
        p.write_bytes(b"x" * i)
    return src, dst, db


def test_the_first_signal_lets_a_new_folder_be_walked_whole(tmp_path):
    """The first Ctrl+C/SIGTERM lets the batch under way finish: a new folder being walked when it comes is
    brought over whole (it stopped the walk at the next subfolder, leaving the rest missing without a word,
    and a watch started again without --rescan never brought it)."""
    src, dst, db = a_new_folder_of_subfolders(tmp_path, 10)
    stop = threading.Event()
    with mirror_on(src, dst, db, stop=stop) as mirror:
        real_copy = mirror._copy

        def copy_then_signal(*args, **kwargs):
            real_copy(*args, **kwargs)
            stop.set()  # the first signal, while the batch walks the new folder
        mirror._copy = copy_then_signal
        result = mirror.apply({(1, str(src / "new"))})
    assert result.counts["copied"] == 10 and result.counts["abandoned"] == 0, result.line()
    assert tree_state(dst / "new") == tree_state(src / "new")
    assert temp_files(dst) == []


def test_a_second_signal_counts_only_what_was_not_brought_over(tmp_path):
    """Stopped at once during a new folder's walk: the files named by events inside that folder are not
    counted as left undone when the walk brought them over (all of them were, copied or not)."""
    src, dst, db = a_new_folder_of_subfolders(tmp_path, 4)
    with mirror_on(src, dst, db) as mirror:
        real_copy = mirror._copy

        def copy_then_abort(*args, **kwargs):
            real_copy(*args, **kwargs)
            mirror.stop.set()
            mirror.abort.set()  # a second signal, once the walk copied its first file
        mirror._copy = copy_then_abort
        events = {(1, str(src / "new"))} | {(1, str(src / "new" / f"d{i}" / "f")) for i in range(4)}
        result = mirror.apply(events)
    copied = sum(1 for _, _, names in os.walk(dst / "new") for _ in names)
    assert copied == result.counts["copied"] >= 1
    assert result.counts["abandoned"] <= 4 - copied, result.line()
    assert temp_files(dst) == []


def test_without_propagate_deletes_a_deletion_under_a_destination_symlink_is_reported_not_said_kept(tmp_path):
    """Without --propagate-deletes a deletion is reported ('deleted on the source, kept on the destination',
    counted in 'deletions reported'), also under a destination folder replaced by a symlink: it was said
    'not deleted (destination changed or not a copy)', which is neither, and the end's count said 0."""
    src, dst, db = migrated(tmp_path)
    elsewhere = tmp_path / "other disk"
    shutil.move(dst / "dir 00", elsewhere)
    os.symlink(elsewhere, dst / "dir 00")
    before = tree_state(elsewhere)
    os.unlink(src / "dir 00" / "inner" / "file 0.txt")
    with mirror_on(src, dst, db) as mirror:
        result = mirror.apply({(3, str(src / "dir 00" / "inner" / "file 0.txt"))})
    assert result.counts["deleted_on_src"] == 1 and result.counts["kept_on_dst"] == 0, result.line()
    assert "not deleted" not in result.line()
    assert ("deleted_on_src", "dir 00/inner/file 0.txt") in outcomes(db)
    assert tree_state(elsewhere) == before


MIRROR_AS_NOBODY = """
import json, sys
from engine.settings import Settings
from engine.store import Store
from engine.watch import Mirror
src, dst, db, gone = sys.argv[1:5]
store = Store.open(db)
try:
    store.ensure_mirror_table()
    result = Mirror(src, dst, Settings(), store, propagate_deletes=True).apply({(3, gone)})
finally:
    store.close()
print(json.dumps(dict(result.counts)))
"""


@pytest.mark.skipif(os.geteuid() == 0 and shutil.which("setpriv") is None, reason="needs setpriv as root")
def test_propagate_deletes_opens_a_folder_without_owner_write_and_closes_it_again(tmp_path):
    """A copy in a destination folder given a source mode without owner write (0555) is deleted with
    --propagate-deletes, as it is copied into: the folder is opened for the batch and given its mode again. It
    was kept, said 'not deleted (destination changed or not a copy)', and never deleted later."""
    with tree_for_nobody("watch-ro-") as base:
        src, dst, db = base / "src", base / "dst", base / "run.duckdb"
        (src / "ro").mkdir(parents=True)
        (src / "ro" / "a").write_bytes(b"a")
        (src / "ro" / "b").write_bytes(b"b")
        os.chmod(src / "ro", 0o555)
        run_to_its_end(src, dst, db)
        assert os.stat(dst / "ro").st_mode & 0o777 == 0o555
        os.chmod(src / "ro", 0o755)
        os.unlink(src / "ro" / "a")
        os.chmod(src / "ro", 0o555)
        out = as_nobody(base, MIRROR_AS_NOBODY, src, dst, db, src / "ro" / "a")
        assert out.returncode == 0, out.stderr
        counts = json.loads(out.stdout.strip().splitlines()[-1])
        assert counts.get("deleted_on_dst") == 1 and not counts.get("kept_on_dst"), counts
        assert not (dst / "ro" / "a").exists() and (dst / "ro" / "b").exists()
        assert os.stat(dst / "ro").st_mode & 0o777 == 0o555


def test_a_watch_started_again_gives_the_folders_a_killed_batch_wrote_in_their_mode_and_mtime(tmp_path):
    """A batch killed mid-copy in a folder of mode 0555 (opened for the copy) left it 0755, with the mtime of
    its temporary: the next watch removes the temporary and gives the folder the source's mode and mtime, as
    the batch's end would have."""
    src, dst, db = tmp_path / "src", tmp_path / "dst", tmp_path / "run.duckdb"
    (src / "ro").mkdir(parents=True)
    (src / "ro" / "big").write_bytes(b"x" * 1000)
    os.utime(src / "ro", ns=(OLD_NS, OLD_NS))
    os.chmod(src / "ro", 0o555)
    run_to_its_end(src, dst, db)
    # what the killed batch left: the folder opened, a temporary in it
    os.chmod(dst / "ro", 0o755)
    (dst / "ro" / ".big.0123abcd.migrate-tmp").write_bytes(b"x" * 10)
    store = Store.open(str(db))
    try:
        store.ensure_mirror_table()
        store.add_mirror_writing([("ro", "folder")])
        removed = Mirror(str(src), str(dst), Settings(), store).sweep_killed_copies()
    finally:
        store.close()
    assert removed == 1 and temp_files(dst) == []
    st = os.stat(dst / "ro")
    assert st.st_mode & 0o777 == 0o555 and st.st_mtime_ns == OLD_NS


APPLY_AS_NOBODY = """
import json, sys
from engine.settings import Settings
from engine.store import Store
from engine.watch import Mirror
src, dst, db, *changed = sys.argv[1:]
store = Store.open(db)
try:
    store.ensure_mirror_table()
    mirror = Mirror(src, dst, Settings(), store, propagate_deletes=True)
    result = mirror.apply({(2, path[2:]) if path.startswith("M:") else (1, path) for path in changed})
finally:
    store.close()
print(json.dumps({"counts": dict(result.counts), "line": result.line()}))
"""


@pytest.mark.skipif(os.geteuid() == 0 and shutil.which("setpriv") is None, reason="needs setpriv as root")
def test_a_change_in_a_source_folder_made_unreadable_fails_without_a_traceback(tmp_path):
    """A file created in a folder that is then made unreadable (chmod 000) before the batch: the batch says it
    failed and goes on; the watch died with a PermissionError traceback (and nothing is taken for deleted)."""
    with tree_for_nobody("watch-000-") as base:
        src, dst, db = base / "src", base / "dst", base / "run.duckdb"
        src.mkdir()
        (src / "a").write_bytes(b"a")
        run_to_its_end(src, dst, db)
        (src / "q").mkdir()
        (src / "q" / "one").write_bytes(b"1")
        (src / "b").write_bytes(b"b")
        os.chmod(src / "q", 0)
        out = as_nobody(base, APPLY_AS_NOBODY, src, dst, db, src / "q", src / "q" / "one", src / "b")
        assert out.returncode == 0 and "Traceback" not in out.stderr, out.stderr
        got = json.loads(out.stdout.strip().splitlines()[-1])
        assert got["counts"].get("failed", 0) >= 1 and got["counts"].get("copied") == 1, got
        assert "q/one: cannot read the source: Permission denied" in got["line"] or \
            "q: cannot list the source folder" in got["line"], got
        assert (dst / "b").read_bytes() == b"b"


@pytest.mark.skipif(os.geteuid() == 0 and shutil.which("setpriv") is None, reason="needs setpriv as root")
@pytest.mark.parametrize("propagate", [False, True])
def test_a_destination_folder_that_cannot_be_searched_fails_without_a_traceback(tmp_path, propagate):
    """A destination folder the watch cannot search (mode 000): a change below it, and a deletion, fail with
    their reason and the batch goes on; the watch died with a PermissionError traceback."""
    with tree_for_nobody("watch-dst000-") as base:
        src, dst, db = base / "src", base / "dst", base / "run.duckdb"
        (src / "p" / "q").mkdir(parents=True)
        (src / "p" / "q" / "a").write_bytes(b"a")
        run_to_its_end(src, dst, db)
        (src / "p" / "q" / "b").write_bytes(b"b")
        (src / "p" / "q" / "a").unlink()
        (src / "p" / "q" / "n").mkdir()  # its folder's listing changed: an event on p/q itself
        (src / "y").write_bytes(b"y")
        os.chmod(dst / "p", 0)
        script = APPLY_AS_NOBODY if propagate else APPLY_AS_NOBODY.replace(", propagate_deletes=True", "")
        out = as_nobody(base, script, src, dst, db, src / "p" / "q" / "b", src / "p" / "q" / "a", src / "y",
                        f"M:{src / 'p' / 'q'}")
        assert out.returncode == 0 and "Traceback" not in out.stderr, out.stderr
        got = json.loads(out.stdout.strip().splitlines()[-1])
        assert got["counts"].get("failed", 0) >= 1 and got["counts"].get("copied") == 1, got
        assert "cannot read the destination: Permission denied" in got["line"], got
        assert (dst / "y").read_bytes() == b"y"


SCAN_AS_NOBODY = """
import json, sys
from engine.settings import Settings
from engine.store import Store
from engine.watch import Mirror
src, dst, db, folder = sys.argv[1:]
store = Store.open(db)
try:
    store.ensure_mirror_table()
    mirror = Mirror(src, dst, Settings(), store)
    first, again = mirror.scan(folder, unwatchable=True), mirror.scan(folder, unwatchable=True)
finally:
    store.close()
print(json.dumps({"first": dict(first.counts), "line": first.line(), "again": dict(again.counts)}))
"""


@pytest.mark.skipif(os.geteuid() == 0 and shutil.which("setpriv") is None, reason="needs setpriv as root")
def test_comparing_a_folder_under_one_made_unreadable_fails_once_without_a_traceback(tmp_path):
    """The timed comparison of a folder watchfiles cannot watch, once a folder above it is made unreadable:
    a failure said once; the watch died with a PermissionError traceback."""
    with tree_for_nobody("watch-scan000-") as base:
        src, dst, db = base / "src", base / "dst", base / "run.duckdb"
        (src / "A" / "u").mkdir(parents=True)
        (src / "A" / "u" / "x").write_bytes(b"x")
        run_to_its_end(src, dst, db)
        os.chmod(src / "A", 0)
        out = as_nobody(base, SCAN_AS_NOBODY, src, dst, db, "A/u")
        assert out.returncode == 0 and "Traceback" not in out.stderr, out.stderr
        got = json.loads(out.stdout.strip().splitlines()[-1])
        assert got["first"].get("failed") == 1 and "cannot read the source" in got["line"], got
        assert not got["again"].get("failed"), got  # found again unchanged: said once
