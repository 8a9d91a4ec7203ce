"""Generated trees with the names and states real migrations meet; used by the demo, tests and bench.

`make_source` builds a nested tree; `mirror` builds a destination that partly mirrors it and returns
what every entry must be classified as, so a test can check a run entry by entry."""

from __future__ import annotations

import os
import random
import shutil
from dataclasses import dataclass, field
from pathlib import Path

# Every kind of name Linux allows that breaks naive tools.
TRICKY_NAMES = [
    "plain", "with space", "ünïcødé", "日本語", "quote'single", 'quote"double', "semi;colon",
    "-leading-dash", "tab\there", "new\nline", os.fsdecode(b"bad\xff\xfebytes"), "emoji \U0001f680",
    "$dollar", "star*?", "back\\slash", " leading space", "trailing space ", "#hash", "..dots..",
]
BASE_MTIME_NS = 1_600_000_000 * 10**9


@dataclass
class SourceTree:
    root: Path
    files: list[str] = field(default_factory=list)
    folders: list[str] = field(default_factory=list)
    symlinks: list[str] = field(default_factory=list)


def _name(rng: random.Random, i: int) -> str:
    return f"{rng.choice(TRICKY_NAMES)} {i}"


def _write(path: str, data: bytes, mtime_ns: int) -> None:
    with open(path, "wb") as f:
        f.write(data)
    os.utime(path, ns=(mtime_ns, mtime_ns))


def make_source(root: Path, files: int, seed: int = 0, max_depth: int = 6, fanout: int = 4,
                big_files: int = 0, big_size: int = 4 << 20, empty_folders: int = 10, symlinks: int = 5,
                max_size: int = 2048) -> SourceTree:
    """A tree of about `files` files in nested folders (~4 files a folder), deterministic per seed."""
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    tree = SourceTree(root)
    folders = [""]
    n_folders = max(1, files // 4)
    frontier = [""]
    i = 0
    while len(folders) - 1 < n_folders:
        parent = frontier.pop(0) if frontier else ""
        for _ in range(rng.randint(1, fanout)):
            i += 1
            path = f"{parent}/{_name(rng, i)}" if parent else _name(rng, i)
            if path.count("/") >= max_depth:
                continue
            os.mkdir(os.path.join(root, path))
            folders.append(path)
            frontier.append(path)
    tree.folders = folders[1:]
    payload = rng.randbytes(max(max_size, 1))
    for k in range(files):
        i += 1
        parent = rng.choice(folders)
        path = f"{parent}/{_name(rng, i)}" if parent else _name(rng, i)
        size = 0 if k % 50 == 0 else rng.randint(1, max_size)
        data = payload[:size] if k % 2 else rng.randbytes(size)
        _write(os.path.join(root, path), data, BASE_MTIME_NS + rng.randint(0, 10**6) * 10**9)
        tree.files.append(path)
    for k in range(big_files):
        i += 1
        parent = rng.choice(folders)
        path = f"{parent}/big {i}.bin" if parent else f"big {i}.bin"
        _write(os.path.join(root, path), rng.randbytes(big_size), BASE_MTIME_NS)
        tree.files.append(path)
    for k in range(empty_folders):
        i += 1
        parent = rng.choice(folders)
        path = f"{parent}/empty {i}" if parent else f"empty {i}"
        os.mkdir(os.path.join(root, path))
        tree.folders.append(path)
        if k % 3 == 0:  # nested empty folders
            os.mkdir(os.path.join(root, path, "nested empty"))
            tree.folders.append(f"{path}/nested empty")
    for k in range(symlinks):
        i += 1
        parent = rng.choice(folders)
        path = f"{parent}/link {i}" if parent else f"link {i}"
        os.symlink(rng.choice(tree.files) if k % 2 else "../nowhere (dangling)", os.path.join(root, path))
        tree.symlinks.append(path)
    return tree


@dataclass
class Expected:
    """What the comparison must decide: SRC path -> action, and DST-only paths."""

    src_actions: dict[str, str] = field(default_factory=dict)
    not_on_src: set[str] = field(default_factory=set)
    newer_on_dst: dict[str, bytes] = field(default_factory=dict)  # path -> bytes that must survive


def mirror(tree: SourceTree, dst: Path, seed: int = 1, identical: float = 0.5, changed: float = 0.1,
           newer: float = 0.05, dst_only: int = 50, folder_share: float = 0.95) -> Expected:
    """A destination that partly mirrors the source: identical, changed (older), newer-on-destination,
    missing, and destination-only files."""
    rng = random.Random(seed)
    dst.mkdir(parents=True, exist_ok=True)
    expected = Expected()
    present = {""}
    for folder in tree.folders:  # parents come before children in tree.folders
        parent = folder.rpartition("/")[0]
        if parent in present and rng.random() < folder_share:
            os.mkdir(os.path.join(dst, folder))
            present.add(folder)
            expected.src_actions[folder] = "skip"
        else:
            expected.src_actions[folder] = "copy"
    for path in tree.files:
        expected.src_actions[path] = "copy"
        if path.rpartition("/")[0] not in present:
            continue
        src_path, dst_path = os.path.join(tree.root, path), os.path.join(dst, path)
        roll = rng.random()
        st = os.stat(src_path)
        if roll < identical:
            shutil.copy2(src_path, dst_path)
            expected.src_actions[path] = "skip"
        elif roll < identical + changed:
            _write(dst_path, b"stale " + rng.randbytes(rng.randint(0, 64)), st.st_mtime_ns - 3600 * 10**9)
        elif roll < identical + changed + newer:
            data = b"edited on the destination " + rng.randbytes(8)
            _write(dst_path, data, st.st_mtime_ns + 3600 * 10**9)
            expected.src_actions[path] = "keep_dst_newer"
            expected.newer_on_dst[path] = data
    for path in tree.symlinks:
        expected.src_actions[path] = "copy"
    folders = sorted(present)
    for k in range(dst_only):
        parent = rng.choice(folders)
        path = f"{parent}/only on dst {k}" if parent else f"only on dst {k}"
        _write(os.path.join(dst, path), b"destination only", BASE_MTIME_NS)
        expected.not_on_src.add(path)
    return expected


def make_demo_trees(base_dir: Path, files: int = 3000, seed: int = 7) -> tuple[Path, Path]:
    """A small sample SRC and a partly mirrored DST, for `migrate-tui --demo` and `migrate demo`."""
    src, dst = Path(base_dir) / "demo-src", Path(base_dir) / "demo-dst"
    tree = make_source(src, files, seed=seed, big_files=4, big_size=8 << 20)
    mirror(tree, dst, seed=seed + 1)
    return src, dst
