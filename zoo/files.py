"""Atomic file writes, and user-given relative paths kept inside their folder.

Every file zoo writes that someone else may read (weights in the cache, checkpoints,
activation caches, exports, reports) goes through :func:`atomic_path`: the content is
written to a temporary beside the target, flushed to disk, then renamed into place.

Every relative path zoo reads from a user's file (a labels CSV row) goes through
:func:`path_inside`: it must name something inside its folder once ``..`` and symbolic
links are resolved, so a file cannot pull in data from elsewhere on the machine.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from zoo.errors import InvalidValueError


class OutsideFolderError(InvalidValueError):
    """A relative path given in a file resolves outside the folder it must stay in."""


@contextmanager
def atomic_path(final: str | os.PathLike, mode: int = 0o644) -> Iterator[Path]:
    """Yields a temporary path beside ``final``; renames it into place only on success.

    On any exception the temporary is removed and ``final`` is left as it was. The
    temporary keeps ``final``'s suffixes (Keras picks a weights format from the suffix).
    The file is fsynced before the rename, so a crash after it leaves the whole file.

    Args:
        final: the path the file will have.
        mode: permission bits of the finished file (``mkstemp`` makes 0600; caches are
            shared like Keras' own).
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=final.parent, prefix=f".{final.name}.", suffix=".part")
    os.close(fd)
    tmp_path = Path(tmp + "".join(final.suffixes))
    os.replace(tmp, tmp_path)
    try:
        yield tmp_path
        _fsync(tmp_path)
        os.chmod(tmp_path, mode)
        os.replace(tmp_path, final)
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
