"""Files root writes and trusts: created atomically and durably, never through a planted link.

``xswarm install``, ``upgrade``, ``rollback`` and ``backup`` run as root on paths the service
account may once have owned. Every file root creates goes through :func:`write_file`: a fresh
temporary name opened with ``O_CREAT|O_EXCL|O_NOFOLLOW`` (a link or file planted there makes
the open fail instead of redirecting it), owner and mode set with ``fchown``/``fchmod`` on the
open descriptor (never by path afterwards), the data and then the directory ``fsync``'d, so
that a crash leaves the old file or the new one and never a torn or empty one. Before root
reads or runs something, :func:`check_trusted` refuses a path that anyone but root could have
changed.
"""

from __future__ import annotations

import errno
import os
import secrets
import stat
from pathlib import Path

from xswarm.errors import XswarmError

Owner = tuple[int, int]


class UntrustedPathError(XswarmError):
    """A path root relies on could have been changed by someone other than root."""


def fsync_dir(path: Path) -> None:
    """Make a rename, link or unlink inside ``path`` survive a crash."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_file(
    path: Path,
    data: str | bytes,
    mode: int,
    owner: Owner | None = None,
    *,
    replace: bool = True,
) -> None:
    """Put ``data`` at ``path`` with this mode (and owner), atomically and durably.

    ``replace=False`` creates the file only if nothing, not even a dangling symlink, is at
    ``path`` (``FileExistsError`` otherwise); ``replace=True`` swaps it in with one rename(2),
    which replaces a symlink itself and never writes through it.
    """
    blob = data.encode() if isinstance(data, str) else data
    staging = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(staging, flags, 0o600)
    try:
        if owner is not None:
            os.fchown(fd, *owner)
        os.fchmod(fd, mode)
        view = memoryview(blob)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        staging.unlink(missing_ok=True)
        raise
    os.close(fd)
    try:
        if replace:
            os.replace(staging, path)
        else:
            os.link(staging, path, follow_symlinks=False)
    finally:
        staging.unlink(missing_ok=True)
    fsync_dir(path.parent)


def replace_symlink(link: Path, target: str) -> None:
    """Point ``link`` at ``target`` with one rename(2), durably (the ``current`` flip)."""
    staging = link.with_name(f".{link.name}.{secrets.token_hex(6)}.tmp")
    os.symlink(target, staging)
    try:
        os.replace(staging, link)
    finally:
        if os.path.lexists(staging):
            os.unlink(staging)
    fsync_dir(link.parent)


def secure_dir(path: Path, mode: int, owner: Owner | None) -> list[str]:
    """Create ``path`` or bring an existing one to this owner and mode; what changed.

    A symlink where the directory should be is refused: root would create or chown files
    wherever it points.
    """
    done = []
    try:
        os.mkdir(path, mode)
        done.append(f"created {path}")
    except FileExistsError:
        pass
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise UntrustedPathError(
                f"{path} is not a directory (a symlink or a file is there); remove it and "
                "run `sudo xswarm install` again"
            ) from None
        raise
    try:
        st = os.fstat(fd)
        if owner is not None and (st.st_uid, st.st_gid) != owner:
            os.fchown(fd, *owner)
            done.append(f"chown {owner[0]}:{owner[1]} {path}")
        if stat.S_IMODE(st.st_mode) != mode:
            os.fchmod(fd, mode)
            done.append(f"chmod {mode:04o} {path}")
    finally:
        os.close(fd)
    return done


def secure_file(path: Path, mode: int, owner: Owner | None) -> list[str]:
    """Bring an existing regular file to this owner and mode, through its own descriptor."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UntrustedPathError(
                f"{path} is a symbolic link; root will not follow it: replace it with the "
                "file itself"
            ) from None
        raise
    done = []
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UntrustedPathError(f"{path} is not a regular file; replace it with one")
        if owner is not None and (st.st_uid, st.st_gid) != owner:
            os.fchown(fd, *owner)
            done.append(f"chown {owner[0]}:{owner[1]} {path}")
        if stat.S_IMODE(st.st_mode) != mode:
            os.fchmod(fd, mode)
            done.append(f"chmod {mode:04o} {path}")
    finally:
        os.close(fd)
    return done


def read_trusted(path: Path) -> bytes:
    """Read a file root relies on, refusing a symlink in its last component."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UntrustedPathError(
                f"{path} is a symbolic link; root will not follow it"
            ) from None
        raise
    with os.fdopen(fd, "rb") as fh:
        return fh.read()


def untrusted_reason(st: os.stat_result, trusted_uids: frozenset[int]) -> str | None:
    """Why a file with this status could have been changed by someone root does not trust."""
    if st.st_uid not in trusted_uids:
        return f"owned by uid {st.st_uid}"
    if stat.S_IMODE(st.st_mode) & 0o022 and not (
        stat.S_ISDIR(st.st_mode) and st.st_mode & stat.S_ISVTX
    ):
        return f"writable by group or others (mode {stat.S_IMODE(st.st_mode):04o})"
    return None


def check_trusted(path: Path, stop: Path = Path("/")) -> None:
    """Refuse ``path`` unless it and every directory from ``stop`` down to it are root's.

    Symlinks on the way are followed only if root owns them (as ``current`` is); anything
    owned by another user, or writable by group or others, means someone else could have
    swapped what root is about to read, copy or run.
    """
    trusted = frozenset({0, os.geteuid()})
    absolute = Path(os.path.abspath(path))
    parts = [absolute, *absolute.parents]
    top = Path(os.path.abspath(stop))
    for candidate in reversed(parts):
        if candidate != top and top not in candidate.parents:
            continue
        try:
            st = os.lstat(candidate)
        except FileNotFoundError:
            return
        reason = untrusted_reason(st, trusted)
        if stat.S_ISLNK(st.st_mode):
            reason = f"owned by uid {st.st_uid}" if st.st_uid not in trusted else None
            if reason is None:
                check_trusted(candidate.resolve(), stop)
        if reason:
            raise UntrustedPathError(
                f"{candidate} is {reason}; root will not use {path} through it. "
                f"Fix: sudo chown root:root {candidate} && sudo chmod go-w {candidate}, "
                "or run `sudo xswarm install`, which sets the ownership it expects"
            )
