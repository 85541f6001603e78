"""Atomic file writes with os alone: every cache entry (gobtfgen.cache.atomic_write calls this)
and `gobtfgen minimize`'s fast path.

os alone, not tempfile, which costs a one-kernel command 2-5 ms to import (random, shutil,
hashlib), and whose mkstemp names its file only after creating it. A temp name in the target's
directory, renamed over it, the mode a plain open() gives (0666 less the umask), nothing left
behind when the write fails or is interrupted.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (mypy reads this name)
if TYPE_CHECKING:
    from os import PathLike


def write_atomic(path: str | PathLike[str], data: bytes) -> None:
    path = os.fspath(path)
    parent = os.path.dirname(path) or "."
    tmp = os.path.join(parent, f".{os.path.basename(path)}.{os.getpid()}."
                               f"{os.urandom(4).hex()}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
    # The open is inside the try: a Ctrl-C (or SIGTERM, see cli.main) during the open syscall
    # is raised as it returns, before its result is stored, and the name alone must suffice
    # to remove the file (it is unique, so removing it when it was never created is safe).
    try:
        try:
            fd = os.open(tmp, flags, 0o666)
        except FileNotFoundError:
            os.makedirs(parent, exist_ok=True)
            fd = os.open(tmp, flags, 0o666)
        with open(fd, "wb", buffering=0) as f:
            view = memoryview(data)
            while view:
                view = view[f.write(view) or 0:]
        os.replace(tmp, path)
    except BaseException:
        try:  # noqa: SIM105 (contextlib costs the fast path 1-2 ms to import)
            os.unlink(tmp)
        except OSError:
            pass
        raise
