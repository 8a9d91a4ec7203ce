"""Checks on the roots and the run file before anything is written."""

from __future__ import annotations

import array
import errno
import fcntl
import os
import re
import stat

from engine.errors import UserError


def _inside(child: str, parent: str) -> bool:
    return child == parent or child.startswith(parent.rstrip(os.sep) + os.sep)


_MOUNTINFO_ESCAPE = re.compile(rb"\\([0-7]{3})")  # mountinfo writes a space in a path as \040


def _mounts() -> dict[int, tuple[int, str, str, int]] | None:
    """This process's mounts, from /proc/self/mountinfo: id -> (parent id, mount point, the filesystem's
    folder mounted there, device). None where there is no such file."""
    try:
        with open("/proc/self/mountinfo", "rb") as mountinfo:
            lines = mountinfo.read().splitlines()
    except OSError:
        return None
    mounts = {}
    for line in lines:
        fields = line.split()
        major, _, minor = fields[2].partition(b":")
        root, point = (os.fsdecode(_MOUNTINFO_ESCAPE.sub(lambda m: bytes([int(m.group(1), 8)]), f))
                       for f in fields[3:5])
        mounts[int(fields[0])] = (int(fields[1]), point, root, os.makedev(int(major), int(minor)))
    return mounts


def _within_filesystem(path: str, mounts: dict[int, tuple[int, str, str, int]]) -> tuple[int, str] | None:
    """(device, the path from its filesystem's root) of an existing real path. A bind mount shows a folder
    under a second path; seen this way the two are one. None where the mounts do not say (a device they do
    not list, as for btrfs subvolumes)."""
    try:
        device = os.stat(path).st_dev
    except OSError:
        return None
    # The mount seen at path, found as the kernel walks to it: from the root mount down, each step into the
    # first mount met along the path (one stacked on the current mount's own point comes first). Neither the
    # order listed nor the longest point tells: a mount moved above another (mount --move) hides it.
    current = next((i for i, (parent, point, _, _) in mounts.items() if point == "/" and parent not in mounts), None)
    while current is not None:
        below = [i for i, (parent, point, _, _) in mounts.items()
                 if parent == current and i != current and _inside(path, point)]
        if not below:
            break
        current = min(below, key=lambda i: len(mounts[i][1]))
    if current is None:
        return None
    _, point, root, mounted = mounts[current]
    if mounted != device:
        return None
    return device, os.path.normpath(os.path.join(root, os.path.relpath(path, point)))


def _refuse_dangling(path: str, what: str) -> None:
    """A root that is a symlink to nothing (or to a symlink to nothing, or a loop of them): named as such, not
    as 'not a folder'."""
    if not os.path.islink(path):
        return
    try:
        os.stat(path)
    except FileNotFoundError:
        end = os.path.realpath(path)  # as far as the links lead
        raise UserError(f"{what} is a symlink that leads to '{end}', which does not exist; check the link") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UserError(f"{what} is a symlink loop (it leads back to itself); check the link") from None


def check_roots(src: str, dst: str, db_path: str | None, writes: bool = True) -> tuple[str, str]:
    """Absolute, validated roots; UserError naming the problem otherwise. writes: the destination will be
    written (not a dry run), so it, or the folder it is to be made in, must let us."""
    if not src:  # os.path.abspath('') is the current folder: never a root by accident
        raise UserError("the source path is empty; give the folder to migrate")
    if not dst:
        raise UserError("the destination path is empty; give the folder to copy into")
    src_abs, dst_abs = os.path.abspath(src), os.path.abspath(dst)
    if not os.path.lexists(src_abs):
        raise UserError(f"source '{src}' does not exist; check the path")
    _refuse_dangling(src_abs, f"source '{src}'")
    if not os.path.isdir(src_abs):
        raise UserError(f"source '{src}' is not a folder; give the folder to migrate")
    if not os.access(src_abs, os.R_OK | os.X_OK):
        raise UserError(f"source '{src}' is not readable; check its permissions")
    try:
        with os.scandir(src_abs) as it:
            next(it, None)
    except OSError as exc:
        raise UserError(f"source '{src}' cannot be listed ({exc.strerror}); check its permissions") from None
    _refuse_dangling(dst_abs, f"destination '{dst}'")
    if os.path.lexists(dst_abs) and not os.path.isdir(dst_abs):
        raise UserError(f"destination '{dst}' exists and is not a folder; give a folder path")
    if not os.path.exists(dst_abs) and not os.path.isdir(os.path.dirname(dst_abs)):
        raise UserError(f"destination parent '{os.path.dirname(dst_abs)}' does not exist; create it first")
    if writes:  # found now, not after a whole traversal (root passes this and finds out on the first write)
        target = dst_abs if os.path.exists(dst_abs) else os.path.dirname(dst_abs)
        if not os.access(target, os.W_OK | os.X_OK):
            what = f"destination '{dst}'" if target == dst_abs else f"destination parent '{target}'"
            raise UserError(f"{what} is not writable; check its permissions (a dry run, -n, only reads it)")
    src_real, dst_real = os.path.realpath(src_abs), os.path.realpath(dst_abs)
    _refuse_nested(src, dst, src_real, dst_real)
    _refuse_nested_through_mounts(src, dst, src_real, dst_real)
    if db_path is not None:
        db_real = os.path.realpath(os.path.abspath(db_path))
        if _inside(db_real, src_real):
            raise UserError(f"the run file '{db_path}' is inside the source; put it outside the tree being migrated")
        if _inside(db_real, dst_real):  # a source file at its path would be copied over it
            raise UserError(f"the run file '{db_path}' is inside the destination; put it outside both trees")
    return src_abs, dst_abs


def _refuse_nested(src: str, dst: str, src_at: str, dst_at: str, through: str = "") -> None:
    """UserError when the roots, placed at src_at and dst_at (real paths, or paths within one filesystem),
    are one folder or nest."""
    how = f" ({through})" if through else ""
    if src_at == dst_at:
        raise UserError(f"source and destination are the same folder ({through or repr(src_at)})")
    if _inside(dst_at, src_at):
        raise UserError(f"destination '{dst}' is inside the source '{src}'{how}; choose a destination outside it")
    if _inside(src_at, dst_at):
        raise UserError(f"source '{src}' is inside the destination '{dst}'{how}; choose folders that do not nest")


def _refuse_nested_through_mounts(src: str, dst: str, src_real: str, dst_real: str) -> None:
    """_refuse_nested on what the paths are within their filesystem: a destination that is a bind mount of a
    source folder (or the other way round) is the source written into itself."""
    mounts = _mounts()  # read once for both roots (a watch checks them before every batch)
    if mounts is None:
        return
    dst_existing = dst_real if os.path.exists(dst_real) else os.path.dirname(dst_real)
    src_fs, dst_fs = _within_filesystem(src_real, mounts), _within_filesystem(dst_existing, mounts)
    if src_fs is None or dst_fs is None or src_fs[0] != dst_fs[0]:
        return
    src_in, dst_in = src_fs[1], dst_fs[1] if dst_existing == dst_real else \
        os.path.join(dst_fs[1], os.path.basename(dst_real))
    _refuse_nested(src, dst, src_in, dst_in,
                   f"through a mount: '{src_real}' is '{src_in}' of its filesystem, '{dst_real}' is '{dst_in}'")


FS_IOC_GETVERSION = 0x80087601  # _IOR('v', 1, long): the inode's generation (ext4, xfs, btrfs...)


def folder_identity(path: str) -> str | None:
    """What tells the folder a path names now from one made there later, as 'inode' or 'inode:generation':
    ext4 hands a new folder the number of one just removed, never its generation. The device number is left
    out (a remount of NFS or overlayfs changes it); so is the generation where the filesystem keeps none or
    the folder cannot be opened for reading. None: no folder there."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    if not stat.S_ISDIR(st.st_mode):
        return None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return str(st.st_ino)
    try:
        generation = array.array("l", [0])
        fcntl.ioctl(fd, FS_IOC_GETVERSION, generation, True)
        return f"{os.fstat(fd).st_ino}:{generation[0]}"
    except OSError:
        return str(st.st_ino)
    finally:
        os.close(fd)


def same_folder(known: str, now: str | None) -> bool:
    """Does the identity `now` name the folder recorded as `known` (the generation compared where both
    have one)?"""
    if now is None:
        return False
    (known_ino, _, known_gen), (now_ino, _, now_gen) = known.partition(":"), now.partition(":")
    return known_ino == now_ino and (not known_gen or not now_gen or known_gen == now_gen)


def changed_roots(known: dict[str, str], roots: dict[str, str],
                  remedy: str = "`migrate run` compares the trees again (with a new --db if this run is "
                                "unfinished)") -> str | None:
    """The refusal when a root is not the folder the run file describes (known: side -> identity)."""
    for side, path in roots.items():
        if side in known and not same_folder(known[side], folder_identity(path)):
            return (f"the {'source' if side == 'src' else 'destination'} '{path}' is not the folder this run "
                    f"compared (it was replaced or removed since), so what the run file knows of it no longer "
                    f"holds; {remedy}")
    return None


def same_folders(stored: tuple[str, ...], given: tuple[str, ...]) -> bool:
    """Do the paths name the same folders once symlinks are resolved (a run file's roots, given again
    through a symlink, or the other way round)?"""
    return [os.path.realpath(p) for p in stored] == [os.path.realpath(p) for p in given]
