"""Exclude patterns, gitignore-style: applied to relative paths on both sides."""

from __future__ import annotations

import re
from typing import Callable


def _translate(glob: str) -> str:
    out, i = [], 0
    while i < len(glob):
        c = glob[i]
        if glob.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif glob.startswith("/**", i) and i + 3 == len(glob):
            out.append("/.*")
            i += 3
        elif glob.startswith("**", i):
            out.append(".*")
            i += 2
        elif c == "*":
            out.append("[^/]*")
            i += 1
        elif c == "?":
            out.append("[^/]")
            i += 1
        elif c == "[":
            end = glob.find("]", i + 2)
            if end == -1:
                out.append(re.escape(c))
                i += 1
            else:
                body = glob[i + 1:end]
                out.append("[" + ("^" + body[1:] if body.startswith("!") else body) + "]")
                i = end + 1
        elif c == "\\" and i + 1 < len(glob):
            out.append(re.escape(glob[i + 1]))
            i += 2
        else:
            out.append(re.escape(c))
            i += 1
    return "".join(out)


def compile_excludes(patterns: list[str]) -> Callable[[str, bool], bool] | None:
    """A matcher (relative path, is_folder) -> excluded, or None when there is nothing to exclude.

    As in .gitignore: a pattern without '/' matches a name at any depth; one with a leading or inner '/'
    is anchored at the root; a trailing '/' matches folders only; a later '!pattern' re-includes."""
    rules = []
    for raw in patterns:
        pattern = raw.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negate = pattern.startswith("!")
        if negate:
            pattern = pattern[1:]
        folders_only = pattern.endswith("/")
        pattern = pattern.rstrip("/")
        anchored = "/" in pattern
        pattern = pattern.lstrip("/")
        regex = ("^" if anchored else "(?:^|/)") + _translate(pattern) + "$"
        rules.append((re.compile(regex, re.DOTALL), negate, folders_only))
    if not rules:
        return None

    def excluded(path: str, is_folder: bool) -> bool:
        result = False
        for regex, negate, folders_only in rules:
            if folders_only and not is_folder:
                continue
            if regex.search(path):
                result = not negate
        return result

    return excluded
