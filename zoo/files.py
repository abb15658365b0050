"""Atomic file writes, and user-given relative paths kept inside their folder.

Every file zoo writes that someone else may read (weights in the cache, checkpoints,
activation caches, exports, reports) goes through :func:`atomic_path`: the content is
written to a temporary beside the target, flushed to disk, then renamed into place.

Every relative path zoo reads from a user's file (a labels CSV row) goes through
:func:`path_inside`: it must name something inside its folder once ``..`` and symbolic
links are resolved, so a file cannot pull in data from elsewhere on the machine.

A full disk is a :class:`DiskFullError` saying where and how much was needed
(:func:`disk_full`); :func:`atomic_path` raises it and leaves nothing half-written.
:func:`exclusive_lock` keeps a second process out of a directory in use (a run, an
export) and names the process holding it.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from zoo.errors import InvalidValueError, ZooError


class OutsideFolderError(InvalidValueError):
    """A relative path given in a file resolves outside the folder it must stay in."""


class DiskFullError(ZooError, OSError):
    """A write failed for want of space (or quota) on the device; nothing was left behind."""


class LockedError(ZooError, BlockingIOError):
    """Another process holds the lock of a directory zoo is about to write in."""


@contextmanager
def atomic_path(
    final: str | os.PathLike, mode: int = 0o644, needed: int | None = None
) -> Iterator[Path]:
    """Yields a temporary path beside ``final``; renames it into place only on success.

    On any exception the temporary is removed and ``final`` is left as it was. The
    temporary keeps ``final``'s suffixes (Keras picks a weights format from the suffix).
    The file is fsynced before the rename, so a crash after it leaves the whole file.

    Args:
        final: the path the file will have.
        mode: permission bits of the finished file (``mkstemp`` makes 0600; caches are
            shared like Keras' own).
        needed: the file's expected size in bytes, if known, for the full-disk message.

    Raises:
        DiskFullError: the device ran out of space (or quota); the temporary is gone.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp = tempfile.mkstemp(dir=final.parent, prefix=f".{final.name}.", suffix=".part")
    except OSError as error:
        full = disk_full(error, final, needed)
        if full is None:
            raise
        raise full from error
    os.close(fd)
    tmp_path = Path(tmp + "".join(final.suffixes))
    os.replace(tmp, tmp_path)
    try:
        yield tmp_path
        _fsync(tmp_path)
        os.chmod(tmp_path, mode)
        os.replace(tmp_path, final)
    except OSError as error:
        full = disk_full(error, final, needed)
        if full is None:
            raise
        raise full from error
    finally:
        tmp_path.unlink(missing_ok=True)


def write_bytes_atomic(final: str | os.PathLike, data: bytes) -> Path:
    """Writes ``data`` to ``final`` atomically (see :func:`atomic_path`); returns the path."""
    with atomic_path(final) as tmp:
        tmp.write_bytes(data)
    return Path(final)


def write_text_atomic(final: str | os.PathLike, text: str) -> Path:
    """Writes ``text`` (UTF-8) to ``final`` atomically (see :func:`atomic_path`)."""
    return write_bytes_atomic(final, text.encode("utf-8"))


def _fsync(path: Path) -> None:
    if path.is_dir():
        return
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def path_inside(root: str | os.PathLike, relative: str | os.PathLike) -> Path:
    """``root / relative``, refused if it leaves ``root``; no file is opened.

    ``relative`` must be a relative path that, with ``..`` and symbolic links resolved
    (those inside ``root`` included), names something under ``root``. Only the links on
    the way are read, so a refused path is never opened.

    Args:
        root: the folder the path must stay in.
        relative: the path as the user's file gives it.

    Returns:
        The joined path, unresolved (so identities stay as the user wrote them).

    Raises:
        OutsideFolderError: an absolute path, or one that resolves outside ``root``; the
            message says which and where it leads.
    """
    given = Path(relative)
    if given.is_absolute() or given.drive or given.root:
        raise OutsideFolderError(
            f"{str(relative)!r} is an absolute path; give it relative to {root}"
        )
    joined = Path(root) / given
    target = joined.resolve()
    if not target.is_relative_to(Path(root).resolve()):
        raise OutsideFolderError(f"{str(relative)!r} leads outside {root} (to {target})")
    return joined


def disk_full(
    error: BaseException, where: str | os.PathLike, needed: int | None = None
) -> DiskFullError | None:
    """A :class:`DiskFullError` for ``error`` if it is a full disk (ENOSPC, EDQUOT), else None.

    Args:
        error: the exception a write raised.
        where: the file or directory being written.
        needed: bytes the write needed, if known.

    Returns:
        The error to raise (``raise disk_full(e, path) from e``), saying where, how much was
        needed and how much is free; None for any other error.
    """
    if not isinstance(error, OSError) or error.errno not in (errno.ENOSPC, errno.EDQUOT):
        return None
    where = Path(where)
    free = None
    for folder in (where, *where.parents):
        if folder.exists():
            free = shutil.disk_usage(folder).free
            break
    amounts = [f"about {_size(needed)} needed" if needed else None]
    amounts.append(None if free is None else f"{_size(free)} free")
    said = ", ".join(a for a in amounts if a)
    quota = " (or the quota)" if error.errno == errno.EDQUOT else ""
    return DiskFullError(
        f"No space left on the device{quota} while writing {where}"
        + (f" ({said})" if said else "")
        + ". Free some space or write elsewhere, then run again."
    )


def _size(n: int) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


@contextmanager
def exclusive_lock(path: str | os.PathLike, what: str) -> Iterator[None]:
    """Holds an exclusive ``fcntl.flock`` on the file ``path`` for the block; removes it after.

    The holder's PID is written into the file, so a second process is told who holds it.
    The lock goes with the process: one killed with ``kill -9`` holds nothing, and the next
    takes the lock at once (its stale file is reused). The file is removed while still
    held, and a lock taken on a file that was removed meanwhile is retried on the new one,
    so two processes never both hold it. POSIX only (``fcntl``).

    Args:
        path: the lock file.
        what: what the lock guards, for the message (e.g. "the run directory runs/x").

    Raises:
        LockedError: another process (or another open of the file) holds the lock; the
            message names its PID.
    """
    import fcntl

    path = Path(path)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise LockedError(
                f"{what} is in use by process {holder} (it holds the lock {path}); wait for "
                "it to finish or stop it, then run again."
            ) from None
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # the holder removed it between our open and our lock: again
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        path.unlink(missing_ok=True)
        os.close(fd)
