"""Live mirror: after a migration, follow the source tree and bring new and changed entries to the destination.

`migrate watch SRC DST --db run.duckdb` starts listening to SRC (watchfiles: inotify on Linux) before
anything else, finishes the run in the file if it is not done (so nothing changed meanwhile is missed), then
applies each burst of changes as one batch:

- changes are debounced: a burst is grouped until it has been quiet for STEP_MS, at most DEBOUNCE_MS; a
  storm of 10,000 files arrives as a few batches, each handled with one pass over its paths, one folder
  creation per folder, one folder-time fix per folder and one DuckDB insert;
- a new folder is walked whole (files created in it before its watch was set up send no event);
- files and symlinks go through the engine's own copy (engine.workers.copy_entry): a temporary name in the
  destination folder, then rename, mtime and mode set; an identical destination file is left alone and a
  destination file newer than its source is never overwritten; exclude patterns apply as in a run;
- deletions on the source are reported and recorded once each, and propagated only with --propagate-deletes,
  and even then only for destination entries that are copies of what the source had (same or older mtime than
  the last source version the run or the mirror saw): a destination file edited since is kept.

Every outcome is recorded in the run file's `mirror_events` table (created here), one bulk insert per batch.

Known limit of watchfiles (1.3): an event on a path that is not valid UTF-8 - any event, even a program
opening such a file or listing such a folder, even watchfiles' own walk when it starts - makes its listener
fail for good, and the changes it was grouping are lost. So folders with such names (U) are kept out of the
listeners: the folders holding them are watched without recursion, their other subfolders recursively, and
the U folders are compared with the destination every UNWATCHABLE_SWEEP_S (5 s). When a listener fails
anyway (a file with such a name changed or was opened), the mirror walks U, starts new listeners before
dropping the failed one, and compares what the failed one covered, without opening any such name itself.
Nothing is lost: changes in ordinary folders arrive as events; changes inside U folders within ~5 s. These
comparisons are spaced by 10x their own duration, so they cost at most ~10% of a core. What a comparison finds
again as it was last said (kept because the destination is newer, failed: the same source entry, the same
reason) is not said or recorded again."""

from __future__ import annotations

import os
import queue
import re
import signal
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import humanize
from watchfiles._rust_notify import RustNotify

from engine.adapters.base import not_a_folder_above
from engine.adapters.local import LocalAdapter
from engine.config import another_version
from engine.errors import UserError
from engine.validate import changed_roots, check_roots
from engine.excludes import compile_excludes
from engine.model import (
    ACTION_COPY, DST, FILE, FOLDER, IDENTICAL, DST_NEWER, MTIME_WINDOW_NS, PENDING, SRC, SUCCESSFUL, Node, Task, display,
    is_temp_name, join, name_in_temp, node_id, order_unknown, parent_of, temp_target,
)
from engine.settings import Settings
from engine.store import RunInfo, Store
from engine.threads import ThreadLimit, start_thread
from engine.workers import BandwidthLimiter, classify, copy_entry, create_folder

DEBOUNCE_MS = 1000  # longest a burst is grouped before it is handled
STEP_MS = 50  # a burst ends after this long without a new change (the latency of a single change)
TIMEOUT_MS = 5000  # the listener returns this often when idle (only to notice a vanished source)
RECOVERY_SPACING = 10  # after a comparison of the tree taking t seconds, the next waits >= 10 t
UNWATCHABLE_SWEEP_S = 5.0  # how often folders with names watchfiles cannot report are walked
ADDED, MODIFIED, DELETED = 1, 2, 3
LISTED = 5  # paths named in a batch's line, per kind

# mirror_events.outcome
COPIED, IDENTICAL_OUT, KEPT_NEWER, FAILED, EXCLUDED = "copied", "identical", "kept_dst_newer", "failed", "excluded"
FOLDER_CREATED, DELETED_ON_SRC, DELETED_ON_DST, KEPT_ON_DST = \
    "folder_created", "deleted_on_src", "deleted_on_dst", "kept_on_dst"
# outcomes a comparison finds again, unchanged, at every sweep until something changes: said once
SAID_ONCE = (KEPT_NEWER, FAILED)
# outcomes of a deletion: a path is deleted once until the source has it again, however many ways it reaches
# the mirror (see Mirror._deletions_said): said once
DELETIONS = (DELETED_ON_SRC, DELETED_ON_DST, KEPT_ON_DST)
ABANDONED = "abandoned"  # not an outcome recorded: a change left undone because the watch was stopped at once


def run_in_file(db_path: str, src_root: str, dst_root: str) -> RunInfo | None:
    """The run in the file (None: no file or no run yet); UserError if it is another pair."""
    if not os.path.exists(db_path):
        return None
    store = Store.open(db_path)
    try:
        info = store.run_info()
    finally:
        store.close()
    if info is None:
        return None
    if (info.src_root, info.dst_root) != (src_root, dst_root):
        raise UserError(f"'{db_path}' holds the run {info.src_root} -> {info.dst_root}, not this pair; "
                        "give a new --db path for a different pair")
    refusal = another_version(info.settings, db_path)
    if refusal is not None:  # it would write its events into a file of another version
        raise UserError(refusal)
    return info


# one batch -----------------------------------------------------------------------------------------

@dataclass
class BatchResult:
    events: int = 0
    counts: Counter = field(default_factory=Counter)
    bytes: int = 0
    named: dict[str, list[str]] = field(default_factory=dict)  # outcome -> first paths
    errors: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    new_folders: list[str] = field(default_factory=list)  # source folders walked because they are new

    def note(self, outcome: str, path: str) -> None:
        self.counts[outcome] += 1
        names = self.named.setdefault(outcome, [])
        if len(names) < LISTED:
            names.append(shown(path))

    def line(self) -> str:
        c = self.counts
        parts = []
        if c[COPIED]:
            parts.append(f"{c[COPIED]:,} copied ({humanize.naturalsize(self.bytes, binary=True)})")
        for outcome, text in ((FOLDER_CREATED, "folders created"), (KEPT_NEWER, "kept (destination newer)"),
                              (EXCLUDED, "excluded"), (DELETED_ON_DST, "deleted on the destination"),
                              (KEPT_ON_DST, "not deleted (destination changed or not a copy)")):
            if c[outcome]:
                parts.append(f"{c[outcome]:,} {text}")
        if c[DELETED_ON_SRC]:
            names = ", ".join(self.named[DELETED_ON_SRC]) + (", ..." if c[DELETED_ON_SRC] > LISTED else "")
            parts.append(f"{c[DELETED_ON_SRC]:,} deleted on the source, kept on the destination ({names})")
        if c[ABANDONED]:
            parts.append(f"{c[ABANDONED]:,} not brought over (stopped at once)")
        if c[FAILED]:
            path, error = self.errors[0]
            parts.append(f"{c[FAILED]:,} failed (first: {path}: {error})")
        if not parts:
            parts.append("nothing to do" if not c[IDENTICAL_OUT] else f"{c[IDENTICAL_OUT]:,} already identical")
        return f"{time.strftime('%H:%M:%S')} " + ", ".join(parts) + f" · {self.seconds * 1000:.0f} ms"


def shown(path: str) -> str:
    """A path in a batch's line: display(), and what a terminal would not show as it is (a newline, a tab) as
    \\xNN, so that a name cannot break the line in two."""
    text = display(path)
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else "".join(f"\\x{b:02x}" for b in c.encode()) for c in text)


def _noop(*_args) -> None:
    pass


class _Abandoned(Exception):
    """Raised from a copy's heartbeat once the watch is told to stop at once: the copy in flight is given up
    (its temporary removed on the way out)."""


def _event_name(kinds) -> str:
    """The event a batch's row names for a path's set of changes."""
    return "added" if ADDED in kinds else ("deleted" if DELETED in kinds else "modified")


def _decodable(name: str) -> bool:
    """watchfiles can report this name (it is valid UTF-8, not bytes smuggled in as surrogates)."""
    try:
        name.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def path_from_error(message: str) -> str | None:
    """The path in watchfiles' 'Unable to decode path "..." to string', undoing Rust's Debug escapes."""
    m = re.search(r'path "((?:[^"\\]|\\.)*)"', message)
    if not m:
        return None
    text, out, i = m.group(1), bytearray(), 0
    try:
        while i < len(text):
            c = text[i]
            if c != "\\":
                out += c.encode("utf-8", "surrogateescape")
                i += 1
            elif text[i + 1] == "x":
                out.append(int(text[i + 2:i + 4], 16))
                i += 4
            elif text[i + 1] == "u":
                end = text.index("}", i)
                out += chr(int(text[i + 3:end], 16)).encode("utf-8")
                i = end + 1
            else:
                out += {"n": b"\n", "t": b"\t", "r": b"\r", "0": b"\0"}.get(text[i + 1], text[i + 1].encode())
                i += 2
    except (IndexError, ValueError):
        return None
    return os.fsdecode(bytes(out))


def _under(rel: str, folders: set[str]) -> bool:
    """rel is one of folders or inside one of them."""
    if not folders:
        return False
    if "" in folders or rel in folders:
        return True
    i = rel.find("/")
    while i != -1:
        if rel[:i] in folders:
            return True
        i = rel.find("/", i + 1)
    return False


class Mirror:
    """Applies batches of source changes to the destination with the engine's rules. No threads."""

    def __init__(self, src_root: str, dst_root: str, settings: Settings, store: Store | None = None,
                 propagate_deletes: bool = False, stop: threading.Event | None = None):
        self.src_root, self.dst_root = src_root, dst_root
        self.src, self.dst = LocalAdapter(src_root), LocalAdapter(dst_root)
        self.settings = settings
        self.store = store
        self._known_roots: dict[str, str] | None = None  # read from the store once
        self.propagate_deletes = propagate_deletes
        self.stop = stop or threading.Event()
        self.abort = threading.Event()  # stop at once: give up the copy in flight and the rest of the batch
        self.busy = False  # a batch is under way
        self.limiter = BandwidthLimiter(settings.bwlimit)
        self._excluded = compile_excludes(settings.exclude)
        self.batches = 0  # batches of any kind: the batch number of mirror_events rows
        self.change_batches = 0  # batches of reported changes
        self.totals: Counter = Counter()
        self.unwatchable: set[str] = set()  # source folders whose names are not valid UTF-8
        # path -> the SAID_ONCE outcome last said of it, with the source entry and error it was said for
        self._said: dict[str, tuple] = {}
        self._comparing = False  # the batch under way compares folders (set by _begin)

    # helpers ---------------------------------------------------------------------------------------

    def _rel(self, path: str) -> str | None:
        rel = os.path.relpath(path, self.src_root)
        if rel == ".":
            return ""
        if rel == ".." or rel.startswith("../"):
            return None
        return rel

    def excluded(self, rel: str, is_folder: bool) -> bool:
        """As in a run: an entry inside an excluded folder is excluded too."""
        if self._excluded is None or not rel:
            return False
        parts = rel.split("/")
        for i in range(1, len(parts)):
            if self._excluded("/".join(parts[:i]), True):
                return True
        return self._excluded(rel, is_folder)

    def note_path(self, rel: str) -> None:
        """Note the topmost folder on rel's way whose name watchfiles cannot report, if it is one."""
        parts = rel.split("/")
        for i in range(1, len(parts) + 1):
            if not _decodable(parts[i - 1]):
                folder = "/".join(parts[:i])
                try:
                    entry = self.src.stat(folder)
                except OSError:
                    return  # cannot be read: nothing to watch there
                if entry is not None and entry.type == FOLDER:
                    self._note_unwatchable(folder)
                return

    @staticmethod
    def _node(rel: str, entry) -> Node:
        return Node(node_id(SRC, rel), None, rel, rel.count("/") + 1, entry.type, entry.size, entry.mtime_ns,
                    entry.mode, SUCCESSFUL, PENDING, ACTION_COPY)

    # the batch -------------------------------------------------------------------------------------

    def check_roots(self, watching: bool = True) -> None:
        """The pair as it is now (a destination replaced by a symlink into the source would have the watch
        copy the source into itself, its copies feeding it events), and the roots the run file describes (one
        replaced since makes its rows lie): before each batch, a few system calls. The adapters keep their
        roots open: one replaced since, and still valid, is taken afresh."""
        try:
            check_roots(self.src.root, self.dst.root, None)
            if self.store is not None:
                if self._known_roots is None:
                    self._known_roots = self.store.root_identities()
                refusal = changed_roots(self._known_roots, {SRC: self.src.root, DST: self.dst.root},
                                        "`migrate watch --rescan` compares the trees again first")
                if refusal is not None:
                    raise UserError(refusal)
        except UserError as exc:
            raise UserError(f"{exc}; {'stopped watching' if watching else 'not watching'}") from None
        for adapter in (self.src, self.dst):
            adapter.recheck_root()

    def _begin(self, comparing: bool = False) -> BatchResult:
        self._t0 = time.perf_counter()
        self.check_roots()
        self.busy = True
        self.batches += 1
        self._result = BatchResult()
        self._comparing = comparing  # a comparison, not events: what it finds again unchanged is not news
        self._rows: list[tuple] = []
        self._folders_ok: set[str] = set()  # destination folders known to exist in this batch
        self._touched: set[str] = set()  # destination folders whose mtime must follow the source's
        self._opened: dict[str, int] = {}  # destination folders given owner rwx for this batch: their mode
        self._deleted: set[str] = set()  # paths whose deletion this batch recorded (not in the store yet)
        # where this batch copies, named in the run file before its first copy (see _before_copying):
        # what is given as its scope, then any other file; (path, kind 'file', 'folder' or 'tree')
        self._scope: list[tuple[str, str]] = []
        self._writing: dict[str, set[str]] = {"file": set(), "folder": set(), "tree": set()}
        return self._result

    def _finish(self) -> BatchResult:
        self.busy = False
        self._fix_folder_times()
        if self.store is not None:
            self.store.record_mirror_events(self._rows)
            if any(self._writing.values()):  # every copy of the batch is over: none left a temporary
                self.store.clear_mirror_writing()
        result = self._result
        result.seconds = time.perf_counter() - self._t0
        self.totals.update(result.counts)
        return result

    def apply(self, changes) -> BatchResult:
        """changes: iterable of (change, absolute path) as watchfiles reports them."""
        result = self._begin()
        self.change_batches += 1
        kinds: dict[str, set[int]] = {}
        for change, path in changes:
            result.events += 1
            rel = self._rel(path)
            if rel is not None:
                kinds.setdefault(rel, set()).add(int(change))

        trees, files, gone = [], [], []
        for rel in sorted(kinds, key=lambda p: (p.count("/"), p)):
            try:
                entry = self.src.stat(rel)
            except OSError as exc:  # a folder above it made unreadable (chmod 000): neither there nor gone
                self._fail(rel, None, _event_name(kinds[rel]), f"cannot read the source: {exc.strerror or exc}")
                continue
            if entry is None:
                gone.append(rel)
            elif entry.type == FOLDER:
                if self.excluded(rel, True):
                    self._record(rel, kinds[rel], entry, EXCLUDED)
                    continue
                self._replaced(rel, entry)
                try:
                    new = ADDED in kinds[rel] or self.dst.stat(rel) is None
                except OSError:
                    new = True  # the walk says why it cannot be brought over
                if new:
                    trees.append(rel)
                else:
                    self._touched.add(rel)  # its listing changed: its mtime did too
            elif self.excluded(rel, False):
                self._record(rel, kinds[rel], entry, EXCLUDED)
            else:
                self._replaced(rel, entry)
                files.append((rel, entry))

        self._scope = [(rel, "tree") for rel in trees] + [(rel, "file") for rel, _ in files]
        walked: set[str] = set()
        for rel in trees:  # shallowest first: a folder inside one already walked is skipped
            if not _under(rel, walked):
                self.sync_tree([rel], event="added", descend=lambda child, name: _decodable(name))
                walked.add(rel)
                result.new_folders.append(rel)
        for rel, entry in files:
            if _under(rel, walked):
                continue  # brought over (or said not to be) by its new folder's walk
            if self.abort.is_set():
                result.counts[ABANDONED] += 1
                continue
            self._copy(rel, entry, "added" if ADDED in kinds[rel] else "modified", strict=True)
        said = self._deletions_said(gone)
        for rel in sorted(gone, key=lambda p: -p.count("/")):  # children before their folder
            if rel not in said:
                self._gone(rel)
            if parent_of(rel):  # its listing changed on the source, so did its mtime (kept or not on DST)
                self._touched.add(parent_of(rel))
        return self._finish()

    def scan(self, rel: str = "", unwatchable: bool = False) -> BatchResult:
        """Compare a source folder's whole subtree with the destination (after events were lost).
        unwatchable=False skips the folders whose names are not valid UTF-8 (see the module's docstring):
        opening them would make a listener fail again."""
        self._begin(comparing=True)
        try:
            here = self.src.stat(rel)
        except OSError as exc:  # a folder above it made unreadable: said once, as any failure a comparison finds
            self._fail(rel, FOLDER, "scan", f"cannot read the source: {exc.strerror or exc}")
            here = None
        if here is not None:
            self._note_unwatchable(rel)
            self._scope = [(rel, "tree")]
            self.sync_tree([rel], event="scan",
                           descend=None if unwatchable else (lambda child, name: _decodable(name)))
        return self._finish()

    def scan_shallow(self, folders: list[str], covered: set[str]) -> BatchResult:
        """Compare the entries directly in folders; walk whole any folder found there that is not in
        covered (watched by a listener of its own), not one of folders, and can be reported."""
        self._begin(comparing=True)
        skip = set(folders) | covered
        self._scope = [(f, "folder") for f in folders]
        self.sync_tree(sorted(folders), event="scan",
                       descend=lambda child, name: child not in skip and _decodable(name))
        return self._finish()

    def _note_unwatchable(self, rel: str) -> None:
        """Remember the topmost source folders whose names watchfiles cannot report."""
        if rel and not _decodable(rel.rpartition("/")[2]) and not _under(parent_of(rel), self.unwatchable):
            self.unwatchable.add(rel)

    def sync_tree(self, roots: list[str], event: str = "added", descend=None) -> None:
        """Bring source folders and what is below them to the destination (one listing per folder).
        descend(child, name) -> bool chooses the subfolders walked (default: all)."""
        stack = list(roots)
        while stack:
            if self.abort.is_set():  # stopped at once (a first signal lets the batch under way finish)
                self._result.counts[ABANDONED] += len(stack)  # folders not walked: said, for --rescan
                break
            folder = stack.pop()
            if folder and not self._ensure_folder(folder):
                continue
            try:
                src_entries = self.src.list(folder)
            except FileNotFoundError:
                self.unwatchable.discard(folder)
                continue  # vanished meanwhile: its deletion event follows
            except OSError as exc:
                self._fail(folder, FOLDER, event, f"cannot list the source folder: {exc.strerror or exc}")
                continue
            try:
                there = {e.name: e for e in self.dst.list(folder)}
            except OSError:
                there = {}
            for e in src_entries:
                child = join(folder, e.name)
                if self.excluded(child, e.type == FOLDER):
                    self._record(child, event, e, EXCLUDED)
                    continue
                if e.type == FOLDER:
                    self._note_unwatchable(child)
                    if descend is None or descend(child, e.name):
                        stack.append(child)
                    else:
                        self._ensure_folder(child)
                    continue
                d = there.get(e.name)
                if d is not None:
                    match = classify(d.type, d.size, d.mtime_ns, self._node(child, e))
                    if match == IDENTICAL:
                        if self._same_mode(child, e, d, event):
                            self._record(child, event, e, IDENTICAL_OUT)
                        continue
                    if match == DST_NEWER:
                        self._record(child, event, e, KEPT_NEWER)
                        continue
                self._copy(child, e, event, parent_ok=True)
            if event == "scan" and self.store is not None:  # a comparison also sees what left the source
                self._gone_since(folder, src_entries, there)
            if folder:
                self._touched.add(folder)

    def _gone_since(self, folder: str, src_entries, there: dict) -> None:
        """Entries of a compared folder that the run or the mirror copied and that are no longer on the
        source: deletions whose events were lost (a burst with a name watchfiles cannot report goes through
        a comparison), reported once."""
        on_src = {e.name for e in src_entries}
        gone = [join(folder, name) for name in there if name not in on_src]
        for rel in self.store.unreported_deletions([p for p in gone if not self.excluded(p, False)]):
            self._gone(rel)

    # one entry -------------------------------------------------------------------------------------

    def _ensure_folder(self, rel: str) -> bool:
        """The destination folder exists (created with its missing parents, as on the source)."""
        if not rel or rel in self._folders_ok:
            return True
        try:
            there = self.dst.stat(rel)
        except OSError as exc:  # a folder above it that cannot be searched
            self._fail(rel, FOLDER, "added", f"cannot read the destination: {exc.strerror or exc}")
            return False
        if there is not None and there.type == FOLDER:
            self._open(rel, there)
            self._folders_ok.add(rel)
            return True
        if not self._ensure_folder(parent_of(rel)):
            return False
        try:
            entry = self.src.stat(rel)
        except OSError as exc:
            self._fail(rel, FOLDER, "added", f"cannot read the source: {exc.strerror or exc}")
            return False
        if entry is None or entry.type != FOLDER:
            return False  # gone from the source meanwhile
        out = create_folder(self.dst, Task("folder", self._node(rel, entry), 0))
        if not out.ok:
            self._fail(rel, FOLDER, "added", out.error, entry)
            return False
        if out.kind == "folder":
            self._record(rel, "added", entry, FOLDER_CREATED)
            self._touched.add(rel)
            if parent_of(rel):
                self._touched.add(parent_of(rel))
        self._folders_ok.add(rel)
        return True

    def _open(self, rel: str, there) -> None:
        """A destination folder given a source mode without owner rwx: opened to be written in (a copy, a
        deletion), and given its mode again at the batch's end (_fix_folder_times), as a run does."""
        if not rel or rel in self._opened or there is None or there.type != FOLDER or there.mode & 0o700 == 0o700:
            return
        try:
            self.dst.set_attributes(rel, None, there.mode | 0o700)
        except OSError:
            return  # what is written there says why it cannot be
        self._opened[rel] = there.mode
        self._touched.add(rel)

    def _copy(self, rel: str, entry, event, parent_ok: bool = False, strict: bool = False) -> None:
        """strict: an event says the source file changed: a same-size destination file older than it is
        replaced even within the 2 s window (engine.copying.in_the_way)."""
        if not parent_ok and not self._ensure_folder(parent_of(rel)):
            return
        self._before_copying(rel)
        task = Task("copy", self._node(rel, entry), 0)
        s = self.settings
        while True:
            try:
                out = copy_entry(self.src, self.dst, task, self._heartbeat, self.limiter, s.verify, _noop, strict)
            except _Abandoned:
                self._result.counts[ABANDONED] += 1
                return
            if out.ok or not out.transient or task.attempts >= s.max_retries or self.stop.is_set():
                break
            task.attempts += 1
            self.stop.wait(min(s.backoff_cap, s.backoff_base * 2 ** (task.attempts - 1)))
        if not out.ok:
            self._fail(rel, entry.type, event, out.error, entry)
            return
        if out.kind == "vanished":
            return  # deleted again before it could be copied: its deletion is an event of its own
        try:
            latest = self.src.stat(rel) or entry  # what was copied: copy_entry re-reads the source
        except OSError:
            latest = entry
        if out.kind == "file":
            self._result.bytes += out.bytes
            self._record(rel, event, latest, COPIED)
            if parent_of(rel):
                self._touched.add(parent_of(rel))
        elif out.kind == "skipped":
            self._record(rel, event, latest, KEPT_NEWER)
        else:
            try:
                there = self.dst.stat(rel)
            except OSError as exc:
                self._fail(rel, entry.type, event, f"cannot read the destination: {exc.strerror or exc}", entry)
                return
            if self._same_mode(rel, latest, there, event):
                self._record(rel, event, latest, IDENTICAL_OUT)

    def _same_mode(self, rel: str, entry, there, event) -> bool:
        """An identical destination file ends with the source file's mode, as a run leaves it (a chmod on the
        source is an event of its own, with nothing else changed). False if it could not be given it."""
        if entry.type != FILE or there is None or there.type != FILE or there.mode == entry.mode:
            return True
        try:
            self.dst.set_attributes(rel, None, entry.mode)
        except OSError as exc:
            self._fail(rel, FILE, event, f"cannot set its mode: {exc.strerror or exc} on the destination", entry)
            return False
        return True

    def _before_copying(self, rel: str) -> None:
        """A watch killed mid-copy leaves a temporary: the run file names where (the batch's scope at its first
        copy, in one transaction; a file outside it when it is copied) before one can be made."""
        for f, kind in self._scope:
            self._writing[kind].add(f)
        named, self._scope = self._scope, []
        w, folder = self._writing, parent_of(rel)
        if not (rel in w["file"] or folder in w["folder"] or _under(folder, w["tree"])):
            w["file"].add(rel)
            named.append((rel, "file"))
        if named and self.store is not None:
            self.store.add_mirror_writing(named)

    def sweep_killed_copies(self) -> int:
        """Remove the temporaries a watch killed mid-copy left where its batch was copying (the run file names
        the files and folders): those of a file it was copying, or of a source file or symlink's NAME beside
        them (by the run's listing or the source's now), and not source entries themselves (as a run sweeps).
        Returns how many were removed."""
        removed = 0
        copying: dict[str, set[str]] = {}  # folder -> the NAMEs (as a temporary names them) of files copied there
        stack: list[tuple[str, bool]] = []
        for path, kind in self.store.mirror_writing():
            if kind == "file":
                copying.setdefault(parent_of(path), set()).add(name_in_temp(path.rpartition("/")[2]))
            else:
                stack.append((path, kind == "tree"))
        stack += [(folder, False) for folder in copying]
        swept: list[str] = []
        while stack:
            folder, tree = stack.pop()
            try:
                there = self.dst.list(folder)
            except OSError:
                continue  # gone, or cannot be read: nothing of ours to remove there
            swept.append(folder)
            if tree:
                stack.extend((join(folder, e.name), True) for e in there if e.type == FOLDER)
            temporaries = [e.name for e in there if e.type != FOLDER and is_temp_name(e.name)]
            if not temporaries:
                continue
            try:
                source = self.src.list(folder)
            except OSError:
                source = []
            names = {e.name for e in source}
            files = {e.name for e in source if e.type != FOLDER}
            files |= {p.rpartition("/")[2] for p in self.store.source_paths_in(folder, files_only=True)}
            targets = {name_in_temp(name) for name in files} | copying.get(folder, set())
            for name in temporaries:
                if name not in names and temp_target(name) in targets:
                    try:
                        self.dst.remove(join(folder, name))
                        removed += 1
                    except OSError:
                        pass  # it stays, as it would have: not the watch's to stop for
        # the killed batch left these folders as it wrote in them (opened without owner write, a temporary's
        # mtime): they end with the source folder's mode and mtime, as its end would have left them
        self._touched = set(swept)
        self._opened = {}
        self._fix_folder_times()
        self._touched = set()
        self.store.clear_mirror_writing()
        return removed

    def _heartbeat(self) -> None:
        """Between the steps of a copy (a quarter second's worth under a bandwidth limit)."""
        if self.abort.is_set():
            raise _Abandoned

    def _deletions_said(self, paths: list[str]) -> set[str]:
        """Of these paths, those whose deletion is already said. One deletion reaches the mirror in several
        ways: the root of a deep listener is also an entry of the shallow listener's folder, so both report
        its deletion, in batches of their own; a comparison finds a deletion an event reports too; and a
        folder deleted with --propagate-deletes takes its whole destination subtree, entries an event of
        their own named already."""
        said = {p for p in paths if p in self._deleted}
        if self.store is not None:
            said |= self.store.reported_deletions([p for p in paths if p not in said])
        return said

    def _replaced(self, rel: str, entry) -> None:
        """With --propagate-deletes: the source entry at rel is now a folder where the destination has a file
        (or a symlink), or the reverse: what the source had under that name was deleted, and its copy goes as
        any deletion does (only a copy of what the source had, never anything newer), so that the new entry
        can take its place. Removed and made again within one batch, the deletion has no event of its own."""
        if not self.propagate_deletes:
            return
        try:
            there = self.dst.stat(rel)
        except OSError:
            return  # cannot be read: what a copy there says why
        if there is None or (there.type == FOLDER) == (entry.type == FOLDER):
            return
        if self.store is None or rel not in self.store.known_source_mtimes([rel]):
            return  # not a copy of anything the source had (on the destination only): no deletion to speak of
        if rel not in self._deletions_said([rel]):
            self._gone(rel)

    def _gone(self, rel: str) -> None:
        """A path reported but no longer on the source: deleted (or renamed away). Its deletion is not said
        yet (the callers ask _deletions_said)."""
        if not rel or rel in self._deleted:
            return
        self._said.pop(rel, None)  # a file made again under this name is news
        try:
            self._gone_here(rel)
        except OSError as exc:  # the destination cannot be read there: nothing deleted, and said why
            self._fail(rel, None, "deleted", f"cannot read the destination: {exc.strerror or exc}")

    def _gone_here(self, rel: str) -> None:
        blocked = not_a_folder_above(self.dst, rel, "destination")
        if blocked:
            # a symlink now (a folder moved to another disk, say): what the path reaches is not the copy this
            # run made, and a deletion would reach through to elsewhere. What is there is not looked at either
            # (the adapter never goes through a symlink): said only for what this run copied.
            if self.store is not None and rel in self.store.known_source_mtimes([rel]):
                # without --propagate-deletes nothing would be deleted anyway: a deletion reported, as any
                outcome = KEPT_ON_DST if self.propagate_deletes else DELETED_ON_SRC
                self._rows.append((time.time(), self.batches, "deleted", os.fsencode(rel), None, None, None,
                                   outcome, blocked))
                self._result.note(outcome, rel)
                self._deleted.add(rel)
            return
        there = self.dst.stat(rel)  # None too when a folder above it is gone: nothing to say then
        if there is None:
            return  # a short-lived file, or already gone: nothing to say
        if self.excluded(rel, there.type == FOLDER):  # never touched, as a comparison leaves it (_gone_since)
            self._record(rel, "deleted", there, EXCLUDED)
            return
        if not self.propagate_deletes:
            self._record(rel, "deleted", there, DELETED_ON_SRC)
            return
        # deepest first; a folder goes only when emptied of copies of the source
        doomed = [(rel, there)]
        if there.type == FOLDER:
            doomed = []
            for dirpath, dirnames, filenames in os.walk(self.dst.abs(rel), topdown=False):
                base = os.path.relpath(dirpath, self.dst_root)
                for name in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
                    child = join(base, name)
                    entry = self.dst.stat(child)
                    if entry is not None:
                        doomed.append((child, entry))
                for name in dirnames:
                    if not os.path.islink(os.path.join(dirpath, name)):
                        entry = self.dst.stat(join(base, name))
                        if entry is not None:
                            doomed.append((join(base, name), entry))
            doomed.append((rel, there))
            said = self._deletions_said([p for p, _ in doomed])
            doomed = [(p, entry) for p, entry in doomed if p not in said]
            # what is excluded in it is never touched (its folder is kept: not emptied)
            doomed = [(p, entry) for p, entry in doomed if not self.excluded(p, entry.type == FOLDER)]
        known = self.store.known_source_mtimes([p for p, _ in doomed]) if self.store is not None else {}
        for path, entry in doomed:
            if path not in known or (entry.type != FOLDER and (entry.mtime_ns > known[path] + MTIME_WINDOW_NS
                                                                or order_unknown(entry.mtime_ns, known[path]))):
                self._record(path, "deleted", entry, KEPT_ON_DST)
                continue
            parent = parent_of(path)
            try:
                if parent:
                    self._open(parent, self.dst.stat(parent))
                if entry.type == FOLDER:
                    self.dst.remove_folder(path)
                else:
                    self.dst.remove(path)
            except OSError as exc:  # a folder still holding kept entries, or one that cannot be written
                self._record(path, "deleted", entry, KEPT_ON_DST,
                             None if entry.type == FOLDER else (exc.strerror or str(exc)))
                continue
            self._record(path, "deleted", entry, DELETED_ON_DST)
            if parent_of(path):
                self._touched.add(parent_of(path))

    def _fix_folder_times(self) -> None:
        """Writing into a destination folder changed its mtime; give it the source folder's, and its mode (made
        with owner rwx and less the umask, or changed on the source since), as a run does."""
        for rel in sorted(self._touched, key=lambda p: -p.count("/")):
            if not rel:
                continue  # the root's time is not carried over by a run either
            try:
                entry = self.src.stat(rel)
            except OSError:  # cannot be read now: its mode and mtime cannot be known
                entry = None
            if entry is None or entry.type != FOLDER:
                if rel in self._opened:  # opened for a deletion, gone from the source, kept: closed again
                    try:
                        there = self.dst.stat(rel)
                        if there is not None and there.type == FOLDER:
                            self.dst.set_attributes(rel, None, self._opened[rel])
                    except OSError:
                        pass
                continue
            try:
                there = self.dst.stat(rel)
                if there is not None and there.type == FOLDER:  # never what stands in a folder's place
                    self.dst.set_attributes(rel, entry.mtime_ns, entry.mode)
            except OSError:
                pass

    def _said_already(self, rel: str, outcome: str, entry, error: str | None) -> bool:
        """A comparison finds what was last said of rel, with the source unchanged since: nothing new to say.
        Folders watchfiles cannot watch are compared every few seconds; without this, a file kept because
        the destination is newer, or a failure, was printed (and a failure recorded) again at every sweep.
        Events are always said: they are changes."""
        if outcome not in SAID_ONCE:
            self._said.pop(rel, None)  # resolved: the next time it happens is news again
            return False
        state = (outcome, error) + ((entry.type, entry.size, entry.mtime_ns) if entry is not None else ())
        if self._comparing and self._said.get(rel) == state:
            return True
        self._said[rel] = state
        return False

    def _record(self, rel: str, event, entry, outcome: str, error: str | None = None) -> None:
        if self._said_already(rel, outcome, entry, error):
            return
        self._result.note(outcome, rel)
        if outcome in DELETIONS:
            self._deleted.add(rel)
        if event == "scan" and outcome in (IDENTICAL_OUT, EXCLUDED, KEPT_NEWER):
            # a comparison of the tree would write a row per entry, and the same kept-newer files again at
            # every sweep of a folder watchfiles cannot watch (every 5 s): count them only
            return
        if not isinstance(event, str):
            event = _event_name(event)
        self._rows.append((time.time(), self.batches, event, os.fsencode(rel), entry.type, entry.size,
                           entry.mtime_ns, outcome, error))

    def _fail(self, rel: str, type_: str, event: str, error: str | None, entry=None) -> None:
        if self._said_already(rel, FAILED, entry, error):
            return
        self._rows.append((time.time(), self.batches, event, os.fsencode(rel), type_, None, None, FAILED, error))
        self._result.note(FAILED, rel)
        self._result.errors.append((shown(rel), error or "failed"))


# the listeners -------------------------------------------------------------------------------------

class _Listener:
    """One watchfiles listener (RustNotify) in a daemon thread, reporting to a queue:
    (generation, "changes", set) or (generation, "failed", message); a failed listener is done."""

    def __init__(self, roots: set[str], paths: list[str], recursive: bool, queue_: queue.Queue, generation: int,
                 role: str, debounce_ms: int, step_ms: int):
        self.notify = RustNotify(paths, False, False, 300, recursive, True)
        self.roots = set(roots)
        self.queue, self.generation, self.role = queue_, generation, role
        self.debounce_ms, self.step_ms = debounce_ms, step_ms
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"watch-{role}", daemon=True)
        try:
            start_thread(self.thread)
        except ThreadLimit:
            self.notify.close()
            raise

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                raw = self.notify.watch(self.debounce_ms, self.step_ms, TIMEOUT_MS, self._stop)
            except RuntimeError as exc:
                self.queue.put((self.generation, self.role, "failed", str(exc)))
                return
            if raw == "stop":
                return
            if isinstance(raw, set):
                self.queue.put((self.generation, self.role, "changes", raw))

    def close(self) -> None:
        self._stop.set()
        if self.thread is not threading.current_thread():
            self.thread.join(5)
        self.notify.close()


class LiveMirror:
    """listen() (start collecting source changes) -> serve() (apply them until stopped) -> close().

    Normally one recursive listener covers the source. Folders whose names are not valid UTF-8 (U) cannot
    be watched at all, so then the folders holding them (A: every ancestor of a U folder) are watched
    without recursion ("shallow") and each of their other subfolders recursively ("deep"); U folders are
    compared on a timer (every UNWATCHABLE_SWEEP_S) and after a listener fails."""

    def __init__(self, src_root: str, dst_root: str, db_path: str, settings: Settings,
                 propagate_deletes: bool = False, out=None, debounce_ms: int = DEBOUNCE_MS, step_ms: int = STEP_MS):
        self.src_root, self.dst_root, self.db_path = src_root, dst_root, db_path
        self.settings = settings
        self.out = out
        self.debounce_ms, self.step_ms = debounce_ms, step_ms
        self.stop_event = threading.Event()
        self.ready = threading.Event()  # set once serve() applies changes
        self.mirror = Mirror(src_root, dst_root, settings, None, propagate_deletes, self.stop_event)
        self.rescans = 0  # comparisons made because events may have been lost (failures, sweeps)
        self.failures = 0  # times a listener failed (watchfiles could not report a path)
        self.last_failure: str | None = None
        self._queue: queue.Queue = queue.Queue()
        self._listeners: list[_Listener] = []
        self._generation = 0
        self._shallow: set[str] = set()  # A of the current shallow listener
        self._covered: set[str] = set()  # the roots of the current deep listeners
        self._active: set[int] = set()  # generations of the current listeners
        self._planned_u: frozenset[str] = frozenset()
        self._next_recovery = 0.0
        self._last_recovery = 0.0

    def _print(self, text: str) -> None:
        print(text, file=self.out or sys.stdout, flush=True)

    # listeners -------------------------------------------------------------------------------------

    def _plan(self) -> tuple[set[str], set[str]]:
        """(shallow, deep): relative folders to watch without and with recursion."""
        u = self.mirror.unwatchable
        if not u:
            return set(), {""}
        shallow: set[str] = set()
        for folder in u:
            p = parent_of(folder)
            while p not in shallow:
                shallow.add(p)
                if not p:
                    break
                p = parent_of(p)
        deep = set()
        for a in shallow:
            try:
                entries = self.mirror.src.list(a)
            except OSError:
                continue
            for e in entries:
                child = join(a, e.name)
                if e.type != FOLDER or child in shallow or child in u:
                    continue
                if _decodable(e.name):
                    deep.add(child)
                else:
                    u.add(child)  # found now: never given to a listener
        return shallow, deep

    def _listener(self, roots: set[str], recursive: bool, role: str) -> _Listener:
        self._generation += 1
        try:
            return _Listener(roots, [self.mirror.src.abs(f) for f in sorted(roots)], recursive, self._queue,
                             self._generation, role, self.debounce_ms, self.step_ms)
        except (FileNotFoundError, ThreadLimit):
            raise
        except Exception as exc:  # noqa: BLE001 - e.g. inotify watch limit reached
            raise UserError(f"cannot watch '{self.src_root}': {exc} (on Linux, a tree with more folders "
                            "than fs.inotify.max_user_watches cannot be watched)") from None

    def _update_listeners(self, replace_shallow: bool = False, replace_all: bool = False):
        """Bring the listeners to the plan. New listeners start before old ones are closed, but a closed
        listener drops the changes it was grouping: returns what must be compared again, "all" or
        (shallow folders, new deep roots)."""
        for _attempt in range(3):
            shallow, deep = self._plan()
            if not replace_all and any(_under(a, self._covered) for a in shallow if a):
                replace_all = True  # a deep listener covers a folder that now holds an unwatchable one
            old = self._listeners
            made: list[_Listener] = []
            try:
                if replace_all:
                    for roots, recursive, role in ((shallow, False, "shallow"), (deep, True, "deep")):
                        if roots:
                            made.append(self._listener(roots, recursive, role))
                    closing, added = old, set(deep)
                else:
                    closing = []
                    if replace_shallow or shallow != self._shallow:
                        if shallow:
                            made.append(self._listener(shallow, False, "shallow"))
                        closing = [x for x in old if x.role == "shallow"]
                    added = deep - self._covered
                    if added:
                        made.append(self._listener(added, True, "deep"))
            except FileNotFoundError:
                for listener in made:
                    listener.close()
                continue  # a folder went away while planning: plan again
            except BaseException:
                for listener in made:
                    listener.close()
                raise
            for listener in closing:
                listener.close()
            self._listeners = [x for x in old if x not in closing] + made
            old_shallow = self._shallow
            self._shallow, self._planned_u = shallow, frozenset(self.mirror.unwatchable)
            self._covered = set(deep) if replace_all else self._covered | added
            self._active = {x.generation for x in self._listeners}
            if replace_all:
                return "all"
            return (sorted(old_shallow | shallow) if closing else []), sorted(added)
        if not os.path.isdir(self.src_root):
            raise UserError(f"the source '{self.src_root}' is gone")
        raise UserError(f"cannot watch '{self.src_root}': its folders keep changing while watching starts")

    def _compare(self, lost) -> None:
        """Compare again what a replaced listener may have dropped."""
        if lost == "all":
            self._report(self.mirror.scan("", unwatchable=False))
            return
        shallow, deep = lost
        if shallow:
            self._report(self.mirror.scan_shallow(shallow, self._covered))
        for root in deep:
            self._report(self.mirror.scan(root))

    def listen(self) -> None:
        if not self._listeners:
            self._update_listeners(replace_all=True)

    def stop(self) -> None:
        self.stop_event.set()

    def close(self) -> None:
        for listener in self._listeners:
            listener.close()
        self._listeners = []

    # recovery --------------------------------------------------------------------------------------

    def _recover(self, full: bool, hint: str | None = None) -> bool:
        """Events may have been lost: walk the unwatchable folders (and the place a failure named), then
        listen anew, then compare what the lost events could have covered - the whole tree after a deep
        listener failed, only the shallow folders otherwise. Our reads of names no listener can report all
        happen before the new listeners start, so these do not fail on them. Spaced by RECOVERY_SPACING
        times their duration unless they learned of new unwatchable folders. False if stopped meanwhile."""
        wait = self._next_recovery - time.monotonic()
        if wait > 0 and self.stop_event.wait(wait):
            return False
        t0 = time.monotonic()
        mirror = self.mirror
        known_u = frozenset(mirror.unwatchable)
        if hint:
            mirror.note_path(hint)  # a new unwatchable folder, named by the failure
        for folder in sorted(mirror.unwatchable):
            self._report(mirror.scan(folder, unwatchable=True))
        self.rescans += 1
        self._compare(self._update_listeners(replace_shallow=not full, replace_all=full))
        learned = frozenset(mirror.unwatchable) != known_u
        while frozenset(mirror.unwatchable) != self._planned_u and not self.stop_event.is_set():
            # the comparison found more such folders: keep them out of the listeners
            self._compare(self._update_listeners())
        duration = time.monotonic() - t0
        self._next_recovery = 0.0 if learned else time.monotonic() + RECOVERY_SPACING * duration
        self._last_recovery = duration
        return True

    def _report(self, result: BatchResult) -> None:
        if any(k not in (IDENTICAL_OUT, EXCLUDED) for k, v in result.counts.items() if v):
            self._print(result.line())

    # the loop --------------------------------------------------------------------------------------

    def serve(self) -> int:
        self.listen()
        store = Store.open(self.db_path, self.settings.duckdb_memory_limit, self.settings.duckdb_threads)
        restore = self._install_signals()
        mirror = self.mirror
        mirror.store = store
        self._last_recovery = 0.0
        try:
            store.require_writable()  # the mirror records what it does in the run file
            store.ensure_mirror_table()
            mirror.check_roots(watching=False)  # a destination replaced since the run: refused before anything
            mirror.sweep_killed_copies()  # a watch killed mid-copy: its temporaries go before anything else
            mirror.batches = store.last_mirror_batch()  # batch numbers go on from an earlier session's
            deletes = "propagated (copies only)" if mirror.propagate_deletes else "reported, not propagated"
            self._print(f"watching {self.src_root} -> {self.dst_root}; deletions {deletes}; Ctrl+C stops")
            self.ready.set()
            told = False
            next_sweep = time.monotonic() + UNWATCHABLE_SWEEP_S
            next_check = time.monotonic() + TIMEOUT_MS / 1000
            while not self.stop_event.is_set():
                try:
                    generation, role, kind, payload = self._queue.get(timeout=0.5)
                except queue.Empty:
                    now = time.monotonic()
                    if now >= next_check:
                        next_check = now + TIMEOUT_MS / 1000
                        if not os.path.isdir(self.src_root):
                            raise UserError(f"the source '{self.src_root}' is gone; stopped watching")
                    if mirror.unwatchable and now >= next_sweep:
                        # nothing reports changes inside those folders: look at them now and then
                        if not self._recover(full=False):
                            break
                        next_sweep = time.monotonic() + max(UNWATCHABLE_SWEEP_S,
                                                            RECOVERY_SPACING * self._last_recovery)
                    continue
                if kind == "changes":  # also from listeners just replaced: those changes happened
                    result = mirror.apply(payload)
                    self._print(result.line())
                    unwatched = {f for f in result.new_folders if parent_of(f) in self._shallow}
                    if unwatched or frozenset(mirror.unwatchable) != self._planned_u:
                        # a new folder where only the shallow listener looks, or a new unwatchable folder
                        self._covered -= unwatched  # (re)created: needs a listener of its own
                        self._compare(self._update_listeners())
                    continue
                if generation not in self._active:
                    continue  # a replaced listener: its successor took over before it went
                self.failures += 1
                self.last_failure = payload
                if not os.path.isdir(self.src_root):
                    raise UserError(f"the source '{self.src_root}' is gone; stopped watching")
                if not told:
                    told = True
                    self._print(f"{time.strftime('%H:%M:%S')} watchfiles cannot report names that are not valid "
                                f"UTF-8 ({payload}); such folders are compared every {UNWATCHABLE_SWEEP_S:g} s "
                                "and after each such event")
                path = path_from_error(payload)
                if not self._recover(full=role == "deep", hint=mirror._rel(path) if path else None):
                    break
            if mirror.totals[ABANDONED]:
                self._print(f"{time.strftime('%H:%M:%S')} stopped at once: {mirror.totals[ABANDONED]:,} changes "
                            "not brought over (no temporary left); `migrate watch --rescan` brings them")
            t = mirror.totals
            deletions = (f"{t[DELETED_ON_DST]:,} deleted on the destination, {t[KEPT_ON_DST]:,} not deleted"
                         if mirror.propagate_deletes else f"{t[DELETED_ON_SRC]:,} deletions reported")
            self._print(f"stopped watching after {mirror.change_batches:,} batches of changes and "
                        f"{self.rescans:,} comparisons: {t[COPIED]:,} copied, "
                        f"{t[FOLDER_CREATED]:,} folders created, {deletions}, {t[FAILED]:,} failed")
            return 0
        finally:
            restore()
            mirror.store = None
            store.close()

    def _install_signals(self):
        if threading.current_thread() is not threading.main_thread():
            return _noop

        def on_signal(signum, frame):
            if self.stop_event.is_set():  # the second one: at once
                self.mirror.abort.set()
                return
            self.stop_event.set()
            if self.mirror.busy:
                print(f"{time.strftime('%H:%M:%S')} stopping: finishing the batch under way "
                      "(Ctrl+C again stops at once)", file=sys.stderr, flush=True)

        old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}

        def restore():
            for s, handler in old.items():
                signal.signal(s, handler)
        return restore
