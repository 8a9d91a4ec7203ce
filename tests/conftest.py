"""Shared fixtures: generated trees on real disk, and helpers that run the real CLI."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from engine import cli
from engine.model import display
from engine.treegen import make_source, mirror


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def report(capsys, db: Path, *extra: str) -> list[dict]:
    code, out, err = run_cli(capsys, "report", "--db", str(db), "--format", "jsonl", *extra)
    assert code == 0, err
    return [json.loads(line) for line in out.splitlines()]


def tree_state(root: Path) -> dict[str, tuple]:
    """Every entry below root with what identifies its content: type, bytes or link target, mtime."""
    state = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, root)
            st = os.lstat(full)
            if os.path.islink(full):
                state[rel] = ("symlink", os.readlink(full), st.st_mtime_ns)
            elif os.path.isdir(full):
                state[rel] = ("folder",)
            else:
                with open(full, "rb") as f:
                    state[rel] = ("file", f.read(), st.st_mtime_ns)
    return state


@pytest.fixture(scope="session")
def pristine_20k(tmp_path_factory):
    """20,000 files with tricky names, empty folders, symlinks, and a partly mirrored destination."""
    base = tmp_path_factory.mktemp("tree20k")
    tree = make_source(base / "src", 20_000, seed=3, big_files=2, big_size=3 << 20)
    expected = mirror(tree, base / "dst.orig", seed=4)
    return tree, expected, base


@pytest.fixture
def tree_20k_read_only(pristine_20k):
    """The shared 20k trees as they are, for dry runs (which a test proves write nothing)."""
    tree, expected, base = pristine_20k
    return tree, expected, base / "dst.orig"


@pytest.fixture
def tree_20k(pristine_20k, tmp_path):
    """A fresh copy of the 20k destination for a test that writes to it; the source is shared, read-only."""
    tree, expected, base = pristine_20k
    dst = tmp_path / "dst"
    shutil.copytree(base / "dst.orig", dst, symlinks=True)
    return tree, expected, dst


def shown(path: str) -> str:
    return display(path)
