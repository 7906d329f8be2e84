"""Writing files so that nothing is ever half-written: atomic replacement, signals held meanwhile (.interrupts)."""

import contextlib
import os
import secrets
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Iterator

from .interrupts import signals_deferred


def atomic_write(path: Path, write: Callable) -> None:
    """Write ``path`` so that a crash at any moment leaves the old file or the new one.

    ``write(f)`` fills a temporary file created exclusively in the same folder
    (a name nobody can have planted a link at), which is flushed, fsynced and
    renamed over ``path`` (``os.replace`` is atomic on POSIX). Ctrl-C and
    SIGTERM wait until the write is complete.
    """
    with signals_deferred():
        _write_and_rename(Path(path), write)


def _write_and_rename(path: Path, write: Callable) -> None:
    descriptor, tmp = _exclusive_temporary(path)
    try:
        with os.fdopen(descriptor, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)  # make the rename itself durable
    finally:
        os.close(directory)


def _exclusive_temporary(path: Path) -> tuple:
    """A new file beside ``path`` that nobody else can have created or linked, opened for writing.

    Created with mode 0666 so that the kernel applies the process's umask, as for any file the
    user creates (mkstemp's 0600 would hide the result from the group, and reading the umask
    means setting it, which races with other threads)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    for _ in range(100):
        tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
        try:
            return os.open(tmp, flags, 0o666), str(tmp)
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name beside {path}")


@contextlib.contextmanager
def staged(path: Path) -> Iterator[Path]:
    """A path to write ``path``'s new contents at (for writers that take a file name), moved over
    ``path`` in one rename when the block succeeds and deleted when it fails.

    It lies in a private folder created next to ``path`` (same file system, nobody else's
    links), under ``path``'s own name, so writers that look at the name see the real one.
    """
    path = Path(path)
    folder = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}."))
    try:
        yield folder / path.name
        with signals_deferred():  # the writer created the file: the umask already applied to it
            os.replace(folder / path.name, path)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
