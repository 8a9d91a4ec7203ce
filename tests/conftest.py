"""Shared fixtures: generated trees on real disk."""

from __future__ import annotations

import shutil

import pytest

from engine.treegen import make_source, mirror


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
