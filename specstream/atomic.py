"""Write a file whole or not at all: a temporary file in the same directory, renamed over the target.

A reader never finds a half-written file, even after a crash or an interruption: the target has either its
previous content or the new one. The rename is atomic because both names are in one directory (one file system).
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path
from typing import IO, Iterator


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb", *, fsync: bool = False, encoding: str | None = None,
                 newline: str | None = None) -> Iterator[IO]:
    """Open a temporary file beside `path` for writing; rename it over `path` when the block ends.

    If the block raises, the temporary file is deleted and `path` is left as it was. With `fsync`, the data
    and then the directory entry are synced to disk, so the new content also survives a power cut.
    The parent directory is created when missing.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_write mode must be 'w' or 'wb', got {mode!r}")
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path} is a folder; give a file name")
    make_folder(path.parent)
    # Unlike tempfile.mkstemp (mode 0600), mode 0666 under the umask gives the file the permissions of
    # any other file the user writes, which matters for results shared with a group.
    temporary = path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(descriptor, mode, encoding=encoding, newline=newline) as stream:
            yield stream
            stream.flush()
            if fsync:
                os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    if fsync:
        fsync_directory(path.parent)


def make_folder(path: str | os.PathLike) -> Path:
    """Create folder `path` and its parents if missing, and return it as a Path.

    Raises ValueError naming the file found where a folder is needed.
    """
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as error:
        blocking_file = next((p for p in (path, *path.parents) if p.exists() and not p.is_dir()), path)
        raise ValueError(f"failed to create folder {path}: {blocking_file} is a file; choose another path") from error
    return path


def fsync_directory(directory: str | os.PathLike) -> None:
    """Sync a directory's entries (a rename in it) to disk; do nothing where directories cannot be synced."""
    try:
        descriptor = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def write_text_atomically(path: str | os.PathLike, text: str, *, fsync: bool = False) -> Path:
    """Write `text` (UTF-8) to `path` through atomic_write and return the path."""
    with atomic_write(path, "w", fsync=fsync, encoding="utf-8", newline="") as stream:
        stream.write(text)
    return Path(path)
