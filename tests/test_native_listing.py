"""engine._native_listing (the listing helpers' loop in C) answers exactly as engine.listing.list_batch does
in Python: the same rows, ids, special files, temporaries and failures, batch for batch."""

from __future__ import annotations

import os
import subprocess

import pytest

from engine import listing
from engine.adapters import beneath
from engine.adapters.local import LocalAdapter
from engine.helper_process import helper_argv
from engine.listing import list_batch, list_natively
from engine.model import DST, SRC, TEMP_SUFFIX, node_id

pytestmark = pytest.mark.skipif(listing._native_listing is None,
                                reason="engine._native_listing was not built (no C compiler at install)")


def in_python(adapter: LocalAdapter, side: str, folders: list[str]):
    """list_batch's answer as a listing helper sends it (failures as (errno, strerror))."""
    results, files = list_batch(side, adapter.list, folders)
    return [(r.errno or 0, r.strerror or str(r)) if isinstance(r, OSError) else r for r in results], files


def natively(adapter: LocalAdapter, side: str, folders: list[str]):
    return list_natively(adapter, adapter.root_fd(), side, folders)


def fs_path(root, *parts: bytes) -> bytes:
    return os.path.join(os.fsencode(root), *parts)


@pytest.fixture
def awkward_tree(tmp_path):
    """Folders of every kind of entry a listing meets, and the ways a folder fails to be listed."""
    root = tmp_path / "tree"
    (root / "a" / "deeper" / "deepest").mkdir(parents=True)
    (root / "b").mkdir()
    for name in ("plain.txt", "with space", "tab\there", "-leading dash", "quote'\"", "semi;colon", "ünïcödé",
                 "x" * 255):
        (root / "a" / name).write_bytes(name.encode()[:7])
    os.mkdir(fs_path(root, b"a", b"raw\xff\xfe folder"))
    with open(fs_path(root, b"a", b"raw\xff\xfe folder", b"\xc3\x28 file"), "wb") as f:
        f.write(b"bad utf-8")
    os.symlink("deeper", root / "a" / "link to a folder")  # listed as a symlink, never descended
    os.symlink("nowhere", root / "a" / "dangling")
    os.mkfifo(root / "a" / "pipe")
    (root / "a" / f".partial.0123abcd{TEMP_SUFFIX}").write_bytes(b"ours")  # a temporary of an interrupted copy
    (root / "a" / f".draft{TEMP_SUFFIX}").write_bytes(b"the user's")  # named alike, not ours
    (root / "a" / "deeper" / "old").write_bytes(b"1900")
    os.utime(root / "a" / "deeper" / "old", ns=(0, -2_208_988_800 * 10**9))
    (root / "a" / "deeper" / "now").write_bytes(b"")
    (root / "b" / "only").write_bytes(b"b")
    (root / "a file").write_bytes(b"not a folder")
    os.symlink("a", root / "folder replaced by a symlink")
    # many files in one folder: the batch's buffers grow past their first allocation
    (root / "wide").mkdir()
    for i in range(3000):
        (root / "wide" / f"file {i:05d} {'n' * (i % 120)}").write_bytes(b"")
    return root


FOLDERS = ["", "a", "missing", "a/deeper", "a file", "folder replaced by a symlink", "a/raw\udcff\udcfe folder",
           "a/deeper/deepest", "b", "wide", "a/link to a folder"]


@pytest.mark.parametrize("side", [SRC, DST])
def test_the_native_listing_answers_as_list_batch(awkward_tree, side):
    adapter = LocalAdapter(str(awkward_tree))
    native = natively(adapter, side, FOLDERS)
    assert native == in_python(adapter, side, FOLDERS)
    results, files = native
    failed = {folder: result for folder, result in zip(FOLDERS, results) if len(result) == 2}
    assert set(failed) == {"missing", "a file", "folder replaced by a symlink", "a/link to a folder"}
    assert failed["folder replaced by a symlink"] == (40, beneath.SYMLINK_IN_PATH)  # ELOOP, named as ours
    a = results[1]
    assert sorted(a[0]) == ["a/deeper", "a/raw\udcff\udcfe folder"] and a[1] == [node_id(side, p) for p in a[0]]
    named = dict(a[6])
    assert named["a/pipe"] == "a FIFO"
    assert (f"a/.partial.0123abcd{TEMP_SUFFIX}" in named) == (side == DST)
    assert len(files[listing.PATH_SIZES]) // 4 == sum(r[5] for r in results if len(r) > 2) > 3000


def test_each_folder_of_a_batch_answers_as_when_listed_alone(awkward_tree):
    adapter = LocalAdapter(str(awkward_tree))
    together = natively(adapter, DST, FOLDERS)
    alone = [natively(adapter, DST, [folder]) for folder in FOLDERS]
    assert [results[0] for results, _ in alone] == together[0]
    assert b"".join(files[listing.PATHS] for _, files in alone) == together[1][listing.PATHS]
    assert b"".join(files[listing.IDS] for _, files in alone) == together[1][listing.IDS]


def test_where_openat2_is_refused_the_native_listing_walks_as_the_adapter_does(awkward_tree, monkeypatch):
    adapter = LocalAdapter(str(awkward_tree))
    expected = in_python(adapter, SRC, FOLDERS)
    monkeypatch.setattr(beneath, "_syscall", None)
    assert natively(adapter, SRC, FOLDERS) == expected


def test_a_helper_whose_native_listing_raises_answers_folder_by_folder_in_python(awkward_tree, monkeypatch):
    expected = in_python(LocalAdapter(str(awkward_tree)), DST, FOLDERS)

    def out_of_memory(*args, **kwargs):
        raise MemoryError
    monkeypatch.setattr(listing._native_listing, "list_batch", out_of_memory)
    assert listing.answer((str(awkward_tree), DST, FOLDERS)) == expected


@pytest.mark.parametrize("size", [0, 1, 127, 128, 129, 255, 256, 257, 1000])
def test_ids_made_in_c_are_node_ids(size):
    encoded = (b"x\xff/\xc3\xbc" * size)[:size]  # `size` bytes: BLAKE2b's block is 128
    path = encoded.decode("utf-8", "surrogateescape")
    for side in (SRC, DST):
        assert listing._native_listing.id_of(side.encode(), encoded) == node_id(side, path)


def test_a_listing_helper_finds_the_native_listing():
    shown = subprocess.run(helper_argv("from engine import listing; print(listing._native_listing is not None)"),
                           capture_output=True, text=True, check=True)
    assert shown.stdout.strip() == "True"


# A FUSE filesystem in a few lines of the raw /dev/fuse protocol: its root holds a file named by more than
# NAME_MAX bytes, which FUSE allows (up to 1024) and readdir passes on as they are; with "broken", also a
# name that readdir lists but whose lstat fails (EIO), after the others: a folder that fails mid-listing.
_FUSE_SERVER = r'''
import ctypes, errno, os, struct, sys

mountpoint, length, broken = sys.argv[1], int(sys.argv[2]), sys.argv[3:] == ["broken"]
NAMES = {b"L" * length: 2, b"short": 3, **({b"broken": 4} if broken else {})}
dev = os.open("/dev/fuse", os.O_RDWR)
options = f"fd={dev},rootmode=40000,user_id=0,group_id=0".encode()
if ctypes.CDLL(None, use_errno=True).mount(b"longnames", mountpoint.encode(), b"fuse", 0, options) != 0:
    sys.exit(f"mount: {os.strerror(ctypes.get_errno())}")


def attr(node):
    mode = 0o40755 if node == 1 else 0o100644
    return struct.pack("<QQQQQQIIIIIIIIII", node, 0, 0, 0, 0, 0, 0, 0, 0, mode, 1, 0, 0, 0, 4096, 0)


def reply(unique, error=0, data=b""):
    os.write(dev, struct.pack("<IiQ", 16 + len(data), -error, unique) + data)


while True:
    try:
        request = os.read(dev, 1 << 20)
    except OSError as exc:
        if exc.errno in (errno.EINTR, errno.ENOENT):
            continue
        break  # ENODEV: unmounted
    _, opcode, unique, node = struct.unpack_from("<IIQQ", request)
    body = request[40:]
    if opcode == 26:  # INIT
        reply(unique, 0, struct.pack("<IIIIHHIIHHII", 7, 31, 0, 0, 16, 12, 4096, 1, 0, 0, 0, 0) + bytes(24))
    elif opcode == 1:  # LOOKUP
        child = NAMES.get(body.split(b"\0", 1)[0]) if node == 1 else None
        if child == 4:
            reply(unique, errno.EIO)
        elif child is None:
            reply(unique, errno.ENOENT)
        else:
            reply(unique, 0, struct.pack("<QQQQII", child, 0, 1, 1, 0, 0) + attr(child))
    elif opcode == 3:  # GETATTR
        reply(unique, 0, struct.pack("<QII", 1, 0, 0) + attr(node))
    elif opcode == 27:  # OPENDIR
        reply(unique, 0, bytes(16))
    elif opcode == 28:  # READDIR
        out = b""
        if struct.unpack_from("<QQ", body)[1] == 0:
            for i, (name, child) in enumerate(NAMES.items()):
                entry = struct.pack("<QQII", child, i + 1, len(name), 8) + name
                out += entry + bytes(-len(entry) % 8)
        reply(unique, 0, out)
    elif opcode in (2, 42):  # FORGET, BATCH_FORGET: no reply
        pass
    elif opcode in (18, 25, 29, 38):  # RELEASE, FLUSH, RELEASEDIR, DESTROY
        reply(unique)
        if opcode == 38:
            break
    else:
        reply(unique, errno.ENOSYS)
'''

_COMPARE = r'''
import errno, os, sys
from engine.adapters.local import LocalAdapter
from engine.listing import list_batch, list_natively
adapter = LocalAdapter(sys.argv[1])
results, files = list_batch("src", adapter.list, [""])
results = [(r.errno, r.strerror) if isinstance(r, OSError) else r for r in results]
assert list_natively(adapter, adapter.root_fd(), "src", [""]) == (results, files)
if sys.argv[2] == "broken":  # the folder failed, and nothing of what was listed before the failure stays
    assert results == [(errno.EIO, os.strerror(errno.EIO))] and not any(files), (results, files)
else:
    assert max(memoryview(files[5]).cast("i")) == int(sys.argv[2])
print("same")
'''


def listed_on_fuse(tmp_path, length: int, *server_args: str) -> subprocess.CompletedProcess:
    """_COMPARE run over _FUSE_SERVER's filesystem, in a child under PYTHONMALLOC=debug (an overrun may
    kill it, or corrupt its heap where debug malloc finds it)."""
    import sys
    import time

    mountpoint = tmp_path / "mnt"
    mountpoint.mkdir()
    server = subprocess.Popen([sys.executable, "-c", _FUSE_SERVER, str(mountpoint), str(length), *server_args],
                              stderr=subprocess.PIPE)
    try:
        for _ in range(200):
            if os.path.ismount(mountpoint) or server.poll() is not None:
                break
            time.sleep(0.02)
        if not os.path.ismount(mountpoint):
            pytest.skip(f"no FUSE mount here: {server.communicate()[1].decode()[-200:]}")
        return subprocess.run([sys.executable, "-X", "dev", "-c", _COMPARE, str(mountpoint),
                               "broken" if server_args else str(length)],
                              capture_output=True, text=True, timeout=60, env={**os.environ, "PYTHONMALLOC": "debug"})
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], check=False)
        server.kill()
        server.wait()
        server.stderr.close()


needs_fuse = pytest.mark.skipif(not os.path.exists("/dev/fuse") or os.geteuid() != 0, reason="needs /dev/fuse and root")


@needs_fuse
@pytest.mark.parametrize("length", [800, 1024])
def test_a_name_longer_than_name_max_is_listed_as_in_python(tmp_path, length):
    """readdir may answer names past NAME_MAX (FUSE: 1024 bytes): the path buffer grows to them, never
    overrun (which crashed the helper, or corrupted its heap)."""
    listed = listed_on_fuse(tmp_path, length)
    assert (listed.returncode, listed.stdout.strip()) == (0, "same"), listed.stderr[-2000:]


@needs_fuse
def test_a_folder_that_fails_mid_listing_leaves_nothing_of_it_in_the_batch(tmp_path):
    listed = listed_on_fuse(tmp_path, 20, "broken")
    assert (listed.returncode, listed.stdout.strip()) == (0, "same"), listed.stderr[-2000:]
