"""Copying one entry, and the helper processes that copy batches of small files off this process's GIL.

A small file costs ~14 system calls (open, fstat, create the temporary, one copy call, closes, lstat of
the final name, chmod, utime, rename) and each one hands the GIL to another thread and takes it back: in
threads of one process the copy workers and the queue's loop spend their time taking turns. A helper
process per copy worker (the same shape as engine.listing's) runs a whole batch of small copies on the
other core and hands back one result per entry; big files, symlink-free adapters other than the local
disk, verification and bandwidth limits stay in this process, where heartbeats and the limiter live.

A result is a plain tuple that crosses a pipe as it is: (ok, error, transient, stop_run, kind, bytes);
engine.workers turns it into the queue's Outcome. This module imports nothing heavier than the adapters.
"""

from __future__ import annotations

import errno
import os
from typing import Callable

from engine.adapters.base import Entry, describe, is_disk_full, is_transient, not_a_folder_above
from engine.helper_process import Helper, HelperGone, HelperPool, local_adapter, serve_requests
from engine.model import FILE, FOLDER, MTIME_WINDOW_NS, SYMLINK, parent_of

CHUNK = 8 << 20  # per copy step: the unit of heartbeat, pause checks and bandwidth accounting
# Files from this size on have their destination looked at before copying as well as just before the
# rename: for a smaller file, copying it again when it turns out to be there already (a resumed run)
# costs less than the extra path lookup every file would pay.
PRECHECK_MIN = 1 << 20
# Files below this size (as traversal saw them) may be copied by a helper process; bigger ones are copied
# here, with heartbeats. A file that grew past HELPER_LIMIT since traversal is handed back by the helper.
HELPER_MAX = 1 << 20
HELPER_LIMIT = 16 << 20

Result = tuple  # (ok, error, transient, stop_run, kind, bytes)


def done(kind: str, nbytes: int = 0) -> Result:
    return True, None, False, False, kind, nbytes


def refused(error: str) -> Result:
    return False, error, False, False, "", 0


def failure(exc: BaseException, src=None, dst=None) -> Result:
    """A failed copy's result; with the adapters, its reason says which side the system call was refused on
    ('Permission denied (errno 13)' alone could be reading the source or writing the destination)."""
    return False, describe(exc) + _on_side(exc, src, dst), is_transient(exc), is_disk_full(exc), "", 0


def _on_side(exc: BaseException, src, dst) -> str:
    name = getattr(exc, "filename", None)
    if not isinstance(name, str):
        return ""
    for side, adapter in (("destination", dst), ("source", src)):
        root = getattr(adapter, "root", None)
        if root and (name == root or name.startswith(root.rstrip("/") + "/")):
            return f" on the {side}"
    return ""


HANDED_BACK = (False, "too big for the copy process now", True, False, "handback", 0)
# Written to while it was read: the copy may mix old and new bytes, under the mtime it had before (a
# later run would take it for identical). Transient: copied again after a backoff, once it is still.
SOURCE_CHANGED = (False, "the source file changed while it was copied", True, False, "", 0)


def _same_version(before: Entry, size: int, mtime_ns: int) -> bool:
    return before.size == size and before.mtime_ns == mtime_ns


class _NoLimit:
    rate = 0

    @staticmethod
    def consume(n: int) -> None:
        pass


NO_LIMIT = _NoLimit()


def _nothing(*_args) -> None:
    pass


# the system calls of one copy -------------------------------------------------------------------------

_SENDFILE = getattr(os, "sendfile", None)
# copy_file_range fails with EXDEV across filesystems on recent kernels: sendfile then
_ZERO_COPY = tuple(call for call in (getattr(os, "copy_file_range", None), _SENDFILE) if call)
_NO_ZERO_COPY = (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP)


def step_size(limiter) -> int:
    """Bytes per copy step: a quarter second's worth under a limit, so heartbeats and pauses stay timely."""
    rate = limiter.rate
    return CHUNK if rate <= 0 else max(64 << 10, min(CHUNK, rate // 4))


def stream_fds(src_fd: int, dst_fd: int, size: int, heartbeat, limiter, progress) -> int | None:
    """Copy between two file descriptors with the kernel's zero-copy calls; None when the kernel refuses
    them before any byte moved (the caller then copies through a buffer).

    Each step moves up to CHUNK bytes (less under a bandwidth limit). The last step of a file asks for one
    byte more than is left: the short count that comes back, landing exactly on the size the file had, is
    its end, so a small file takes a single call. The limiter is charged the bytes actually moved, after
    the step: a 1 KiB file must not pay for a whole step. The lease is extended after a step only when more
    data may follow (the file is not all copied yet, or the step was full): a small file does not take the
    queue's lock."""
    copied = 0
    for call in _ZERO_COPY:
        try:
            while True:
                step = step_size(limiter)
                left = size - copied
                want = left + 1 if 0 <= left < step else step
                # sendfile(out, in, offset, count); copy_file_range(in, out, count)
                n = call(dst_fd, src_fd, None, want) if call is _SENDFILE else call(src_fd, dst_fd, want)
                if n == 0:
                    return copied
                limiter.consume(n)
                copied += n
                progress(n)
                if n < want and copied == size:
                    return copied
                if copied < size or n == step:
                    heartbeat()
        except OSError as exc:
            if copied or exc.errno not in _NO_ZERO_COPY:
                raise
    return None


def stream_buffered(src_f, dst_f, size: int, heartbeat, limiter, progress) -> int:
    """The portable loop: file objects without file descriptors (the memory adapter), or zero-copy refused."""
    copied = 0
    buf = bytearray(min(CHUNK, max(size, 1 << 16)))
    while True:
        view = memoryview(buf)[:step_size(limiter)]
        n = src_f.readinto(view)
        if not n:
            return copied
        dst_f.write(view[:n])
        limiter.consume(n)
        copied += n
        progress(n)
        heartbeat()


def stream(src_f, dst_f, size: int, heartbeat, limiter, progress) -> int:
    """Copy with the kernel's zero-copy paths when both ends are real files, else a bounded buffer loop."""
    try:
        src_fd, dst_fd = src_f.fileno(), dst_f.fileno()
    except (OSError, AttributeError, ValueError):
        src_fd = dst_fd = None
    if src_fd is not None:
        copied = stream_fds(src_fd, dst_fd, size, heartbeat, limiter, progress)
        if copied is not None:
            return copied
    return stream_buffered(src_f, dst_f, size, heartbeat, limiter, progress)


def file_hash(adapter, path: str) -> bytes:
    import xxhash  # only a verifying run needs it (the helper processes never verify)

    h = xxhash.xxh3_128()
    with adapter.open_read(path) as f:
        buf = bytearray(CHUNK)
        while True:
            n = f.readinto(buf)
            if not n:
                return h.digest()
            h.update(memoryview(buf)[:n])


def in_the_way(there: Entry | None, now: Entry, strict: bool = False) -> Result | None:
    """What the entry at the final name means for a copy of the source entry `now`; None: nothing there,
    or an older or different file the copy replaces. Asked before copying (except for small files) and
    always once more just before the rename. strict (the live mirror, told by an event that the source file
    changed): a same-size destination file older than `now` is an older version even within the 2 s window
    (a file written again within 2 s of its last copy), and is replaced; a newer one is still kept."""
    if there is None:
        return None
    # both exact (stat with exact_mtime): traversal could not order two dates past the same limit of the run
    # file's column, and left it to this comparison
    if there.type == now.type and there.size == now.size and abs(there.mtime_ns - now.mtime_ns) <= MTIME_WINDOW_NS \
            and not (strict and there.mtime_ns < now.mtime_ns):
        # already complete (e.g. copied before a crash); its size: the record holds the size copied
        return done("exists", there.size if there.type == FILE else 0)
    if there.mtime_ns > now.mtime_ns + MTIME_WINDOW_NS:
        return done("skipped")  # newer on the destination: kept, never overwritten
    if there.type == FOLDER:
        return refused("the destination has a folder where the source has a file")
    return None


def _changed(kind: str, now: Entry | None, src=None, path: str = "") -> Result:
    if now is None:  # deleted since it was listed: nothing to copy, nothing to retry (rsync warns, exit 24)
        # unless a folder above it is something else now (a symlink to elsewhere): refused, so that a retry
        # copies it once the folder is back
        blocked = not_a_folder_above(src, path, "source") if src is not None else None
        return refused(blocked) if blocked else done("vanished")
    return refused(f"the source changed from {kind} to {now.type} since traversal")


def make_folder(dst, path: str, mode: int, src=None) -> Result:
    """Create the destination folder of the source folder `path`; given src, only if it is still a folder
    there (one deleted since it was listed, before a plan is copied say, is not made: vanished, as a file)."""
    if src is not None:
        try:
            now = src.stat(path)
        except OSError:  # cannot be looked at: made, and the copies below it say why (CopyMode._check_folders)
            pass
        else:
            if now is None or now.type != FOLDER:
                return _changed(FOLDER, now, src, path)
    try:
        dst.create_folder(path, mode)
        return done("folder")
    except FileExistsError:
        there = dst.stat(path)
        if there is not None and there.type == FOLDER:
            return done("exists")
        return refused(f"the destination has a {there.type if there else 'file'} where the source has a folder")
    except OSError as exc:
        return failure(exc, None, dst)


def copy_entry(src, dst, path: str, kind: str, heartbeat: Callable[[], None], limiter, verify: bool,
               progress: Callable[[int], None], size_limit: int | None = None, strict: bool = False) -> Result:
    """Copy one file or symlink to a temporary name, then rename it over the final name.

    The destination is checked again just before the rename: a file that became newer than the source
    since traversal is kept. The temporary file never survives a failure."""
    if kind != SYMLINK and hasattr(src, "open_file_fd") and hasattr(dst, "create_temp_fd"):
        return _copy_file_fds(src, dst, path, kind, heartbeat, limiter, verify, progress, size_limit, strict)
    now_src = src.stat(path, exact_mtime=True)
    if now_src is None or now_src.type != kind:
        return _changed(kind, now_src, src, path)
    early = in_the_way(dst.stat(path, exact_mtime=True), now_src, strict)
    if early is not None:
        return early
    folder, name = parent_of(path), path.rpartition("/")[2]
    try:
        with _Temporary(dst, strict) as temp:
            if kind == SYMLINK:
                temp.name = dst.create_temp_link(folder, name, src.read_link(path))
                return temp.commit(path, now_src, None, 0)
            temp.name, out = dst.create_temp(folder, name)
            with out, src.open_read(path) as inp:
                copied = stream(inp, out, now_src.size, heartbeat, limiter, progress)
            after = src.stat(path, exact_mtime=True)
            if after is None or not _same_version(now_src, after.size, after.mtime_ns):
                return SOURCE_CHANGED
            if verify and file_hash(src, path) != file_hash(dst, temp.name):
                return refused("verification failed: the copy differs from the source")
            return temp.commit(path, now_src, now_src.mode, copied)
    except OSError as exc:
        return failure(exc, src, dst)


def _copy_file_fds(src, dst, path: str, kind: str, heartbeat: Callable[[], None], limiter, verify: bool,
                   progress: Callable[[int], None], size_limit: int | None, strict: bool = False) -> Result:
    """copy_entry for a regular file between adapters that hand out file descriptors (local disks).

    The source is opened first (never through a symlink) and its size, mtime and mode come from the open
    file; the temporary file is a raw descriptor. A small file costs open, fstat, the folder's open and
    the temporary's, one copy call, two closes, an fstat of the source, then lstat of the final name,
    chmod, utime and rename relative to that folder and its close: 14 system calls (the file object path
    took 15 before the folder was opened; opening it keeps a folder swapped for a symlink out)."""
    try:
        with _Temporary(dst, strict) as temp:
            src_fd, now = src.open_file_fd(path)
            if src_fd is None:
                return _changed(kind, now, src, path)
            try:
                if size_limit is not None and now.size > size_limit:
                    return HANDED_BACK
                if now.size >= PRECHECK_MIN:
                    early = in_the_way(dst.stat(path, exact_mtime=True), now, strict)
                    if early is not None:
                        return early
                temp.name, out_fd = dst.create_temp_fd(parent_of(path), path.rpartition("/")[2])
                try:
                    copied = stream_fds(src_fd, out_fd, now.size, heartbeat, limiter, progress)
                    if copied is None:
                        with open(src_fd, "rb", buffering=0, closefd=False) as inp, \
                                open(out_fd, "wb", buffering=0, closefd=False) as out:
                            copied = stream_buffered(inp, out, now.size, heartbeat, limiter, progress)
                finally:
                    os.close(out_fd)
                after = os.fstat(src_fd)
                if not _same_version(now, after.st_size, after.st_mtime_ns):  # `now` has the exact mtime
                    return SOURCE_CHANGED
            finally:
                os.close(src_fd)
            if verify and file_hash(src, path) != file_hash(dst, temp.name):
                return refused("verification failed: the copy differs from the source")
            return temp.commit(path, now, now.mode, copied)
    except OSError as exc:
        return failure(exc, src, dst)


class _Temporary:
    """The temporary file of one copy: renamed over the final name by commit(), removed on every other
    way out (a failure, a source or destination that changed meanwhile)."""

    def __init__(self, dst, strict: bool = False):
        self.dst = dst
        self.strict = strict  # see in_the_way
        self.name: str | None = None

    def __enter__(self) -> "_Temporary":
        return self

    def __exit__(self, *exc_info) -> bool:
        if self.name is not None:
            try:
                self.dst.remove(self.name)
            except OSError:
                pass
        return False

    def commit(self, path: str, source: Entry, mode: int | None, copied: int) -> Result:
        """Check the destination again (changed on it while we copied?), then rename the temporary over it."""
        late = self.dst.commit_temp(self.name, path, source.mtime_ns, mode,
                                    lambda there: in_the_way(there, source, self.strict))
        if late is not None:
            return late
        self.name = None
        return done("file", copied)


# the helper process -----------------------------------------------------------------------------------

def serve() -> None:
    """The helper's loop: (src root, dst root, [(path, kind, mode)]) in, one result per entry out, until
    EOF. kind is 'folder' (create it with mode), 'file' or 'symlink' (copy it)."""
    parent = os.getppid()

    def answer(request):
        src_root, dst_root, items = request
        src, dst = local_adapter(src_root), local_adapter(dst_root)
        results = []
        for path, kind, mode in items:
            if os.getppid() != parent:
                return None  # the run was killed: copy nothing more for it (a resume may be copying these now)
            try:
                if kind == FOLDER:
                    results.append(make_folder(dst, path, mode, src))
                else:
                    results.append(copy_entry(src, dst, path, kind, _nothing, NO_LIMIT, False, _nothing,
                                              HELPER_LIMIT))
            except Exception as exc:  # noqa: BLE001 - a bug here must fail one entry, not the helper
                results.append(refused(f"internal error in the copy process: {exc!r}"))
        return results

    serve_requests(answer)


# the parent's side ------------------------------------------------------------------------------------

class CopierGone(HelperGone):
    """A copy helper died or could not start (see HelperGone)."""


class Copier(Helper):
    MODULE, WHAT, Gone = "engine.copying", "copy", CopierGone


class CopierPool(HelperPool):
    """A copy helper per copy worker (see HelperPool); start(n) starts them ahead of use, so that their
    start-up overlaps the folder pass instead of delaying the first files."""

    Helper = Copier
    FALLBACK = "copying in this process instead, slower (one core for every copy)"

    def run(self, src_root: str, dst_root: str, items: list[tuple[str, str, int]]) -> list[Result]:
        return self.exchange((src_root, dst_root, items), lambda reply: len(reply) == len(items))
