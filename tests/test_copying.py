"""Copying (engine.copying): what one copy decides, batches copied by a helper process exactly as in this
process, a killed helper, big files kept in this process with heartbeats, no helper left behind."""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
import signal
import time

import duckdb
import pytest

from support import helpers_of_this_process, tree_state

from engine import copying
from engine.adapters import beneath
from engine.adapters.local import LocalAdapter
from engine.counters import CopyCounters
from engine.migration import Migration
from engine.model import FILE, FOLDER, MTIME_WINDOW_NS, SYMLINK, TEMP_SUFFIX, Node, Task, temp_name
from engine.modes.copy import CopyMode
from engine.settings import Settings
from engine.treegen import make_source
from engine.workers import BandwidthLimiter

OLD, NEW = 1_600_000_000_000_000_000, 1_700_000_000_000_000_000


def write(path, data: bytes, mtime_ns: int, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    path.chmod(mode)
    os.utime(path, ns=(mtime_ns, mtime_ns))


def no_temporaries(root) -> bool:
    return not [n for _, _, names in os.walk(root) for n in names if n.endswith(TEMP_SUFFIX)]


def copy_one(src_root, dst_root, path: str, kind: str = FILE, size_limit=None):
    return copying.copy_entry(LocalAdapter(src_root), LocalAdapter(dst_root), path, kind, copying._nothing,
                              copying.NO_LIMIT, False, copying._nothing, size_limit)


def test_one_copy_decides_from_the_open_source_and_the_final_name(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    write(src / "new", b"fresh", OLD, 0o640)
    write(src / "empty", b"", OLD)
    write(src / "newer", b"source", OLD)
    write(dst / "newer", b"destination, newer", NEW)
    write(src / "same", b"same", OLD)
    write(dst / "same", b"same", OLD)
    write(src / "older", b"the source wins", NEW)
    write(dst / "older", b"stale", OLD)
    write(src / "blocked", b"x", OLD)
    (dst / "blocked").mkdir()
    os.utime(dst / "blocked", ns=(OLD, OLD))  # not newer than the source file: in the way
    write(src / "big", os.urandom(3 << 20), OLD)
    os.symlink("new", src / "link")

    assert copy_one(src, dst, "new") == copying.done("file", 5)
    st = os.lstat(dst / "new")
    assert (dst / "new").read_bytes() == b"fresh" and st.st_mode & 0o7777 == 0o640 and st.st_mtime_ns == OLD
    assert copy_one(src, dst, "empty") == copying.done("file", 0) and (dst / "empty").read_bytes() == b""
    assert copy_one(src, dst, "newer") == copying.done("skipped")
    assert (dst / "newer").read_bytes() == b"destination, newer", "a newer destination file was overwritten"
    assert copy_one(src, dst, "same") == copying.done("exists", 4)  # the size found there: the record's
    assert copy_one(src, dst, "older") == copying.done("file", 15) and (dst / "older").read_bytes() == b"the source wins"
    assert copy_one(src, dst, "blocked")[:2] == (False, "the destination has a folder where the source has a file")
    assert copy_one(src, dst, "big", size_limit=1 << 20) == copying.HANDED_BACK
    assert not (dst / "big").exists()
    assert copy_one(src, dst, "big") == copying.done("file", 3 << 20)
    assert abs(os.lstat(dst / "big").st_mtime_ns - OLD) <= MTIME_WINDOW_NS
    assert copy_one(src, dst, "link", SYMLINK) == copying.done("file", 0) and os.readlink(dst / "link") == "new"

    # the source changed since traversal
    assert copy_one(src, dst, "gone") == copying.done("vanished")  # nothing to copy: not a failure
    os.symlink("new", src / "now a link")
    assert copy_one(src, dst, "now a link")[:2] == (False, "the source changed from file to symlink since traversal")
    (src / "now a folder").mkdir()
    assert copy_one(src, dst, "now a folder")[:2] == (False, "the source changed from file to folder since traversal")
    assert no_temporaries(dst)


class WrittenDuringTheCopy(LocalAdapter):
    """A source whose file is appended to (as by a program still writing it) while the copy reads it,
    `times` times."""

    def __init__(self, root, times: int):
        super().__init__(root)
        self.times = times

    def _write_more(self, path: str) -> None:
        if self.times:
            self.times -= 1
            with open(self.abs(path), "ab") as f:
                f.write(b" and more")

    def open_file_fd(self, path):
        opened = super().open_file_fd(path)
        self._write_more(path)
        return opened

    def open_read(self, path):
        opened = super().open_read(path)
        self._write_more(path)
        return opened


class WithoutFds:
    """An adapter seen without file descriptors: copy_entry takes its file-object path."""

    def __init__(self, adapter):
        self._adapter = adapter

    def __getattr__(self, name):
        if name == "open_file_fd":
            raise AttributeError(name)
        return getattr(self._adapter, name)


@pytest.mark.parametrize("with_fds", [True, False])
def test_a_source_written_while_it_is_copied_is_not_stamped_as_a_finished_copy(tmp_path, with_fds):
    """Its bytes may mix two versions under the mtime of the first: a later run would call it identical.
    The copy fails transiently (the queue copies it again after a backoff) and leaves nothing behind."""
    src_root, dst_root = tmp_path / "src", tmp_path / "dst"
    write(src_root / "log", b"first", OLD)
    dst_root.mkdir()
    src = WrittenDuringTheCopy(src_root, times=1)
    dst = LocalAdapter(dst_root)

    def copy():
        return copying.copy_entry(src if with_fds else WithoutFds(src), dst, "log", FILE, copying._nothing,
                                  copying.NO_LIMIT, False, copying._nothing)

    assert copy() == copying.SOURCE_CHANGED
    assert os.listdir(dst_root) == [] and copying.SOURCE_CHANGED[2]  # transient: tried again
    assert copy() == copying.done("file", len(b"first and more"))
    assert (dst_root / "log").read_bytes() == b"first and more"
    assert (dst_root / "log").stat().st_mtime_ns == (src_root / "log").stat().st_mtime_ns


def test_a_helper_copies_a_batch_and_a_killed_one_is_replaced(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    write(src / "a" / "one", b"1", OLD)
    write(src / "a" / "two", b"22", OLD, 0o600)
    os.symlink("one", src / "a" / "link")
    dst.mkdir()
    pool = copying.CopierPool()
    pool.start(1)
    try:
        results = pool.run(str(src), str(dst), [("a", FOLDER, 0o750), ("a/one", FILE, 0), ("a/two", FILE, 0),
                                                ("a/link", SYMLINK, 0), ("a/gone", FILE, 0)])
        assert [r[4] for r in results[:4]] == ["folder", "file", "file", "file"]
        assert results[4] == copying.done("vanished")
        assert (dst / "a").stat().st_mode & 0o777 == 0o750
        assert tree_state(dst) == {k: v for k, v in tree_state(src).items() if k != "a/gone"}

        [helper] = helpers_of_this_process("engine.copying")
        os.kill(helper, signal.SIGKILL)
        with pytest.raises(copying.CopierGone) as gone:
            pool.run(str(src), str(dst), [("a/one", FILE, 0)])
        assert gone.value.errno == 11  # EAGAIN: the queue retries it with backoff
        assert pool.run(str(src), str(dst), [("a/one", FILE, 0)]) == \
            [copying.done("exists", (src / "a" / "one").stat().st_size)]
        assert len(helpers_of_this_process("engine.copying")) == 1
    finally:
        pool.close()
    assert not helpers_of_this_process("engine.copying")


def test_a_batch_copies_big_files_here_with_heartbeats_for_every_waiting_task(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    for i in range(3):
        write(src / f"small {i}", b"s" * (i + 1), OLD)
    write(src / "big", os.urandom(copying.HELPER_MAX + 1), OLD)
    dst.mkdir()
    settings = Settings(lease_timeout=0.001)  # every task copied here first extends the waiting leases
    mode = CopyMode(None, LocalAdapter(src), LocalAdapter(dst), settings, CopyCounters(), BandwidthLimiter(0),
                    lambda *a: None, copying.CopierPool())
    nodes = [Node(i, 0, p, 1, FILE, os.lstat(src / p).st_size, OLD, 0o644)
             for i, p in enumerate(["small 0", "big", "small 1", "small 2"])]
    tasks = [Task("copy", n, 2) for n in nodes]
    beats = []
    try:
        outcomes = mode.execute_batch(tasks, beats.append)
    finally:
        mode.copiers.close()
    assert [o.kind for o in outcomes] == ["file"] * 4 and all(o.ok for o in outcomes)
    assert outcomes[1].bytes == copying.HELPER_MAX + 1
    assert beats == [tasks[1]], "the big file copied here did not extend its lease first"
    assert mode.counters.bytes == copying.HELPER_MAX + 1 + 1 + 2 + 3
    assert tree_state(dst) == tree_state(src)


def test_a_dead_helper_leaves_no_temporary_of_its_batch(tmp_path):
    dst = tmp_path / "dst"
    write(dst / "f" / ".name.with.dots.0badc0de.migrate-tmp", b"partial", OLD)
    write(dst / "f" / ".other.0badc0de.migrate-tmp", b"not ours", OLD)
    write(dst / "f" / "name.with.dots", b"kept", OLD)
    mode = CopyMode(None, LocalAdapter(tmp_path), LocalAdapter(dst), Settings(), CopyCounters(),
                    BandwidthLimiter(0), lambda *a: None)
    mode._remove_temporaries(["f/name.with.dots"])
    assert sorted(os.listdir(dst / "f")) == [".other.0badc0de.migrate-tmp", "name.with.dots"]


def test_a_dead_helper_leaves_no_temporary_of_a_name_too_long_for_it(tmp_path):
    """A name over 233 bytes is cut in its temporary's name: the temporary is still known as its."""
    dst, long_name = tmp_path / "dst", "L" * 250
    write(dst / "f" / temp_name(long_name, "0badc0de"), b"partial", OLD)
    mode = CopyMode(None, LocalAdapter(tmp_path), LocalAdapter(dst), Settings(), CopyCounters(),
                    BandwidthLimiter(0), lambda *a: None)
    mode._remove_temporaries([f"f/{long_name}"])
    assert os.listdir(dst / "f") == []


def copy_rows(db) -> set:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return set(con.execute("SELECT path, copy_status, action FROM src_nodes").fetchall())
    finally:
        con.close()


def test_a_run_with_copy_processes_writes_what_a_run_in_process_writes(tree_20k, tmp_path, monkeypatch):
    tree, _, dst = tree_20k
    reference = tmp_path / "reference"
    shutil.copytree(dst, reference, symlinks=True)

    m = Migration.create(str(tmp_path / "inproc.duckdb"), str(tree.root), str(reference),
                         Settings(copy_processes=False))
    m.start()
    assert m.wait(300) and m.phase == "done" and m.summary.failed == 0

    helpers_seen = set()
    original = copying.CopierPool.run

    def run(self, *args):
        helpers_seen.update(helpers_of_this_process("engine.copying"))
        return original(self, *args)

    monkeypatch.setattr(copying.CopierPool, "run", run)
    h = Migration.create(str(tmp_path / "helpers.duckdb"), str(tree.root), str(dst), Settings(copy_processes=True))
    h.start()
    assert h.wait(300) and h.phase == "done" and h.summary.failed == 0
    assert helpers_seen, "no copy process was used"
    deadline = time.monotonic() + 10
    while helpers_of_this_process("engine.copying") and time.monotonic() < deadline:
        time.sleep(0.05)  # they are reaped in the background once their pipes are closed
    assert not helpers_of_this_process("engine.copying"), "a copy process outlived its copy phase"

    assert h.summary.copied == m.summary.copied and h.copy_counters.bytes == m.copy_counters.bytes
    m.close()
    h.close()
    assert copy_rows(tmp_path / "helpers.duckdb") == copy_rows(tmp_path / "inproc.duckdb")
    assert tree_state(dst) == tree_state(reference)
    assert no_temporaries(dst)


def test_a_refused_system_call_names_the_side_it_was_refused_on(tmp_path):
    """'Permission denied (errno 13)' alone could be reading the source or writing the destination."""
    src, dst = LocalAdapter(str(tmp_path / "data")), LocalAdapter(str(tmp_path / "data-copy"))
    for root, side in ((dst.root, "destination"), (src.root, "source")):
        with pytest.raises(OSError) as raised:
            os.open(os.path.join(root, "no folder", "f"), os.O_WRONLY | os.O_CREAT)
        assert copying.failure(raised.value, src, dst)[1] == f"No such file or directory (errno 2) on the {side}"
    assert copying.failure(OSError(5, "Input/output error"), src, dst)[1] == "Input/output error (errno 5)"


# A folder replaced by a symlink between its check and its use (a concurrent process, or someone racing the
# copy on purpose): nothing is written or read through it. Both ways of refusing symlinks are proven: the
# openat2 call, and the walk a folder at a time used where the kernel lacks it.

@pytest.fixture(params=["openat2", "walk"])
def resolution(request, monkeypatch):
    if request.param == "walk":
        monkeypatch.setattr(beneath, "_syscall", None)
    elif beneath._syscall is None:
        pytest.skip("this kernel has no openat2")
    return request.param


class SwappedForASymlink(LocalAdapter):
    """The destination as a racing process leaves it: just before the copy writes its temporary, the folder
    `folder` is moved aside and a symlink to `outside` takes its place."""

    def __init__(self, root, folder: str, outside):
        super().__init__(root)
        self.folder, self.outside = folder, outside

    def _swap(self) -> None:
        real = os.path.join(self.root, self.folder)
        if not os.path.islink(real):
            os.rename(real, real + ".moved")
            os.symlink(self.outside, real)

    def create_temp_fd(self, folder, name):
        self._swap()
        return super().create_temp_fd(folder, name)

    def create_temp(self, folder, name):
        self._swap()
        return super().create_temp(folder, name)


@pytest.mark.parametrize("with_fds", [True, False])
def test_a_destination_folder_swapped_for_a_symlink_during_the_copy_is_not_written_through(tmp_path, resolution,
                                                                                             with_fds):
    src, dst, outside = tmp_path / "src", tmp_path / "dst", tmp_path / "outside"
    write(src / "a" / "f", b"data", OLD)
    (dst / "a").mkdir(parents=True)
    outside.mkdir()
    source = LocalAdapter(src)
    ok, error, transient = copying.copy_entry(source if with_fds else WithoutFds(source),
                                              SwappedForASymlink(dst, "a", outside), "a/f", FILE, copying._nothing,
                                              copying.NO_LIMIT, False, copying._nothing)[:3]
    assert not ok and not transient
    assert error == f"{beneath.SYMLINK_IN_PATH} (errno {errno.ELOOP}) on the destination"
    assert os.listdir(outside) == [] and os.listdir(dst / "a.moved") == []


class SwappedBeforeTheRename(SwappedForASymlink):
    """The same race a moment later: the temporary is written, the folder goes before the rename."""

    def create_temp_fd(self, folder, name):
        return LocalAdapter.create_temp_fd(self, folder, name)

    def create_temp(self, folder, name):
        return LocalAdapter.create_temp(self, folder, name)

    def commit_temp(self, *args, **kwargs):
        self._swap()
        return super().commit_temp(*args, **kwargs)


@pytest.mark.parametrize("with_fds", [True, False])
def test_a_folder_swapped_before_the_rename_gets_the_copy_in_the_folder_itself(tmp_path, resolution, with_fds):
    """The temporary's folder is kept open from its making to its rename: the copy lands in that folder
    wherever it was moved, never where the symlink points, and no temporary is left anywhere."""
    src, dst, outside = tmp_path / "src", tmp_path / "dst", tmp_path / "outside"
    write(src / "a" / "f", b"data", OLD)
    (dst / "a").mkdir(parents=True)
    outside.mkdir()
    source = LocalAdapter(src)
    assert copying.copy_entry(source if with_fds else WithoutFds(source), SwappedBeforeTheRename(dst, "a", outside),
                              "a/f", FILE, copying._nothing, copying.NO_LIMIT, False,
                              copying._nothing) == copying.done("file", 4)
    assert os.listdir(outside) == [] and os.listdir(dst / "a.moved") == ["f"]
    assert (dst / "a.moved" / "f").read_bytes() == b"data" and no_temporaries(tmp_path)


def test_a_source_folder_swapped_for_a_symlink_is_not_read_through(tmp_path, resolution):
    src, dst, outside = tmp_path / "src", tmp_path / "dst", tmp_path / "outside"
    write(outside / "secret", b"not the source's", OLD)
    src.mkdir()
    os.symlink(outside, src / "a")  # a folder when its parent was listed
    (dst / "a").mkdir(parents=True)
    ok, error = copy_one(src, dst, "a/secret")[:2]
    assert not ok and error == f"{beneath.SYMLINK_IN_PATH} (errno {errno.ELOOP}) on the source"
    assert os.listdir(dst / "a") == []
    os.symlink("secret", outside / "link")
    assert copy_one(src, dst, "a/link", SYMLINK)[:2] == (False, "'a' on the source is a symlink now, not a folder")
    os.unlink(src / "a")
    assert copy_one(src, dst, "a/secret") == copy_one(src, dst, "a/link", SYMLINK) == copying.done("vanished")
    os.symlink(outside, src / "a")
    with pytest.raises(OSError) as listing:
        LocalAdapter(src).list("a")
    assert listing.value.errno == errno.ELOOP and listing.value.filename == str(src / "a")


def test_no_folder_is_made_and_no_attribute_set_through_a_symlink(tmp_path, resolution):
    dst, outside = tmp_path / "dst", tmp_path / "outside"
    (outside / "sub").mkdir(parents=True)
    os.chmod(outside / "sub", 0o755)
    os.utime(outside / "sub", ns=(OLD, OLD))
    dst.mkdir()
    os.symlink(outside, dst / "a")
    adapter = LocalAdapter(dst)
    assert copying.make_folder(adapter, "a/new", 0o755)[:2] == (
        False, f"{beneath.SYMLINK_IN_PATH} (errno {errno.ELOOP}) on the destination")
    with pytest.raises(OSError):
        adapter.set_attributes("a/sub", NEW, 0o700)
    with pytest.raises(OSError):
        adapter.create_temp_fd("a", "f")
    with pytest.raises(OSError):
        adapter.remove("a/sub")
    assert sorted(os.listdir(outside)) == ["sub"]
    st = os.stat(outside / "sub")
    assert (st.st_mode & 0o7777, st.st_mtime_ns) == (0o755, OLD)
    assert adapter.stat("a") == ("a", SYMLINK, len(str(outside)), adapter.stat("a").mtime_ns, 0o777)
    assert adapter.stat("a/sub") is None  # not an entry of the tree: the tree never goes through a symlink


def test_a_kernel_or_filter_that_refuses_openat2_gets_the_walk(tmp_path, monkeypatch):
    """A seccomp filter may answer EPERM (older ones) or ENOSYS for openat2 itself: the walk takes over, and
    still refuses symlinks. An EPERM of the filesystem for one path is that path's error, not a reason to
    stop using openat2."""
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "f").write_bytes(b"x")
    os.symlink(tmp_path / "a", tmp_path / "link")
    root = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    refuses = {"all": True}

    def filtered(number, folder_fd, path, how, size):
        if refuses["all"] or path == b"a/f":
            ctypes.set_errno(errno.EPERM)
            return -1
        return real(number, folder_fd, path, how, size)

    real = beneath._syscall
    if real is None:
        pytest.skip("this kernel has no openat2")
    try:
        refuses["all"] = False
        monkeypatch.setattr(beneath, "_syscall", filtered)
        with pytest.raises(PermissionError):
            beneath.open_beneath(root, "a/f", os.O_RDONLY)
        assert beneath._syscall is filtered
        refuses["all"] = True
        os.close(beneath.open_beneath(root, "a/f", os.O_RDONLY))
        assert beneath._syscall is None
        with pytest.raises(OSError) as through:
            beneath.open_beneath(root, "link/f", os.O_RDONLY)
        assert through.value.errno == errno.ELOOP
    finally:
        os.close(root)


def test_copy_processes_that_cannot_start_leave_the_copy_to_this_process_which_says_so(tmp_path, monkeypatch):
    src = make_source(tmp_path / "src", 300, seed=5).root
    monkeypatch.setattr("sys.executable", str(tmp_path / "no-such-python"))
    m = Migration.create(str(tmp_path / "run.duckdb"), str(src), str(tmp_path / "dst"),
                         Settings(copy_processes=True, list_processes=True, backoff_base=0.01))
    told = []
    m.on_notice = told.append
    m.start()
    assert m.wait(120) and m.phase == "done" and m.summary.failed == 0
    m.close()
    assert tree_state(tmp_path / "dst") == tree_state(src)
    assert no_temporaries(tmp_path / "dst")
    assert [t for t in told if "copy" in t] == [
        "cannot start a copy process: No such file or directory; copying in this process instead, slower "
        "(one core for every copy)"]
