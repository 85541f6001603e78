"""sha256() as hashlib.sha256, for the modules `gobtfgen minimize` replays a result with.

Importing hashlib loads OpenSSL, 1.5-3 ms of a repeated one-kernel command's budget (bpftool's
whole process takes 15-30 ms); CPython's own SHA-256, which hashlib falls back to, gives the
same digests and hashes the kilobytes of an object or a kept result as fast. Megabytes (a
kernel file) go to hashlib (gobtfgen.minimize.replay.file_sha256).
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (mypy reads this name)
if TYPE_CHECKING:
    from collections.abc import Callable
    from hashlib import _Hash

_SHA256: Callable[..., _Hash] | None = None


def sha256(data: bytes = b"") -> _Hash:
    global _SHA256
    if _SHA256 is None:
        import sys

        # CPython's module: _sha2 from 3.12 on, _sha256 before (a failed import searches
        # every sys.path entry); hashlib where neither is built.
        name = "_sha2" if sys.version_info >= (3, 12) else "_sha256"
        try:
            impl = __import__(name).sha256
        except (ImportError, AttributeError):
            from hashlib import sha256 as impl
        _SHA256 = impl
    return _SHA256(data)
