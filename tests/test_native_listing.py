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
