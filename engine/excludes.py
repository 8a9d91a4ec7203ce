"""Exclude patterns, gitignore-style: applied to relative paths on both sides."""

from __future__ import annotations

import re
from typing import Callable


# POSIX classes inside [...], as git's wildmatch knows them (ASCII, as its ctype tests)
_POSIX_CLASSES = {
    "alnum": "a-zA-Z0-9", "alpha": "a-zA-Z", "blank": " \\t", "cntrl": "\\x00-\\x1f\\x7f", "digit": "0-9",
    "graph": "!-~", "lower": "a-z", "print": " -~", "punct": "!-/:-@\\[-`{-~", "space": " \\t\\n\\r\\f\\v",
    "upper": "A-Z", "xdigit": "0-9A-Fa-f",
}


def _class_char(c: str) -> str:
    return "\\" + c if c in "\\]^-[" else c


def _bracket(glob: str, i: int) -> tuple[str, int] | None:
    """The [...] starting at glob[i] as a regex and the index after it (None: not closed), as git's
    wildmatch reads it: '!' or '^' first negates, a ']' first is literal, a backslash escapes the next
    character, 'a-z' is a range, '[:alpha:]' a POSIX class; a class never matches '/'."""
    j, n = i + 1, len(glob)
    negated = j < n and glob[j] in "!^"
    if negated:
        j += 1
    items, first = [], True
    while True:
        if j >= n:
            return None
        c = glob[j]
        if c == "]" and not first:
            break
        first = False
        if c == "\\":
            j += 1
            if j >= n:
                return None
            c = glob[j]
        elif c == "[" and glob.startswith(":", j + 1):
            end = glob.find(":]", j + 2)
            if end != -1:
                name = glob[j + 2:end]
                if name not in _POSIX_CLASSES:
                    raise re.error(f"unknown character class [:{name}:]")
                items.append(_POSIX_CLASSES[name])
                j = end + 2
                continue
        if glob.startswith("-", j + 1) and j + 2 < n and glob[j + 2] != "]":  # a range c-hi
            hi, j = glob[j + 2], j + 3
            if hi == "\\":
                if j >= n:
                    return None
                hi, j = glob[j], j + 1
            items.append(_class_char(c) + "-" + _class_char(hi))
            continue
        items.append(_class_char(c))
        j += 1
    body = "".join(items)
    return ("[^/" + body + "]" if negated else "(?!/)[" + body + "]"), j + 1


def _translate(glob: str) -> str:
    out, i = [], 0
    while i < len(glob):
        c = glob[i]
        # '**' is special only as a whole component ('**/x', 'a/**/b', 'a/**', '**'); elsewhere ('foo**bar',
        # 'a/**b') it is a plain '*', as in git
        whole = i == 0 or glob[i - 1] == "/"
        if whole and glob.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif glob.startswith("/**", i) and i + 3 == len(glob):
            out.append("/.*")
            i += 3
        elif glob == "**":
            out.append(".*")
            i += 2
        elif c == "*":
            while i < len(glob) and glob[i] == "*":
                i += 1
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
            i += 1
        elif c == "[":
            found = _bracket(glob, i)
            if found is None:  # no closing ']': a literal '['
                out.append(re.escape(c))
                i += 1
            else:
                out.append(found[0])
                i = found[1]
        elif c == "\\" and i + 1 < len(glob):
            out.append(re.escape(glob[i + 1]))
            i += 2
        else:
            out.append(re.escape(c))
            i += 1
    return "".join(out)


def _trim_trailing_spaces(pattern: str) -> str:
    """As git reads a .gitignore line: trailing spaces go unless escaped ('name\\ '); leading ones stay."""
    last_space, i = None, 0
    while i < len(pattern):
        c = pattern[i]
        if c == " ":
            if last_space is None:
                last_space = i
        else:
            if c == "\\":
                i += 1
                if i == len(pattern):
                    return pattern
            last_space = None
        i += 1
    return pattern if last_space is None else pattern[:last_space]


def compile_excludes(patterns: list[str]) -> Callable[[str, bool], bool] | None:
    """A matcher (relative path, is_folder) -> excluded, or None when there is nothing to exclude.

    As in .gitignore: a pattern without '/' matches a name at any depth; one with a leading or inner '/'
    is anchored at the root; a trailing '/' matches folders only; a later '!pattern' re-includes."""
    rules = []
    for raw in patterns:
        pattern = _trim_trailing_spaces(raw)
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
