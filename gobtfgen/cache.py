"""The per-kernel cache.

Layout under the cache dir (default `$XDG_CACHE_HOME/gobtfgen`):
  raw/<sha256 of the .btf.tar.xz>.btf     the kernel's raw BTF, so a run whose relocations changed
                                          skips xz (the larger part of a cold run)
  min/<key>.btf | min/<key>.err           a minimized BTF, or the one-line reason it failed
  filehash.json                           (path, size, mtime, inode) -> sha256, so an unchanged
                                          archive is not re-read on every run
Every file is written to a temp name and renamed, so a killed run never leaves a torn entry;
concurrent runs at worst compute the same entry twice.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

DEFAULT_RAW_LIMIT = 4 << 30  # bytes of raw kernel BTF kept; least recently used goes first


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "gobtfgen"


def atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def minimize_key(kernel_sha: str, objects_signature: str, minimizer_identity: str) -> str:
    h = hashlib.sha256(b"gobtfgen-min-1\0")
    for part in (kernel_sha, objects_signature, minimizer_identity):
        h.update(part.encode() + b"\0")
    return h.hexdigest()


@dataclass(frozen=True, kw_only=True)
class CachedResult:
    btf: bytes | None  # the minimized BTF, or None when it failed
    error: str | None


class HashMemo:
    """(path, size, mtime, inode) -> sha256, so an unchanged archive is not re-read each run.
    Kept by the parent process; workers report the hashes they computed."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._entries: dict[str, list[object]] = {}
        self._dirty = False
        try:
            loaded = json.loads(path.read_text())
            if isinstance(loaded, dict):
                self._entries = loaded
        except (OSError, ValueError):
            pass  # a missing or torn memo only costs a re-hash

    @staticmethod
    def stamp(path: Path) -> list[object]:
        st = path.stat()
        return [st.st_size, st.st_mtime_ns, st.st_ino]

    def lookup(self, path: Path) -> str | None:
        memo = self._entries.get(str(path.resolve()))
        try:
            stamp = self.stamp(path)
        except OSError:
            return None
        if memo and len(memo) == 4 and memo[:3] == stamp and isinstance(memo[3], str):
            return memo[3]
        return None

    def record(self, path: Path, stamp: list[object], digest: str) -> None:
        self._entries[str(path.resolve())] = [*stamp, digest]
        self._dirty = True

    def save(self) -> None:
        if self._dirty:
            atomic_write(self.path, json.dumps(self._entries, sort_keys=True).encode())
            self._dirty = False


class Cache:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.raw_dir = root / "raw"
        self.min_dir = root / "min"

    def memo(self) -> HashMemo:
        return HashMemo(self.root / "filehash.json")

    # -- raw kernel BTF ----------------------------------------------------------------------
    def raw_path(self, kernel_sha: str) -> Path:
        return self.raw_dir / f"{kernel_sha}.btf"

    def has_raw(self, kernel_sha: str) -> bool:
        path = self.raw_path(kernel_sha)
        if path.is_file():
            os.utime(path)  # mark as recently used for eviction
            return True
        return False

    def put_raw(self, kernel_sha: str, btf: bytes) -> Path:
        path = self.raw_path(kernel_sha)
        atomic_write(path, btf)
        return path

    def evict_raw(self, limit: int = DEFAULT_RAW_LIMIT) -> int:
        """Delete least recently used raw BTFs beyond limit bytes; return bytes freed."""
        try:
            entries = [(e.stat().st_mtime, e.stat().st_size, e.path)
                       for e in os.scandir(self.raw_dir) if e.name.endswith(".btf")]
        except OSError:
            return 0
        total = sum(size for _, size, _ in entries)
        freed = 0
        for _, size, path in sorted(entries):
            if total - freed <= limit:
                break
            try:
                os.unlink(path)
                freed += size
            except OSError:
                pass
        return freed

    # -- minimized results -------------------------------------------------------------------
    def get_min(self, key: str) -> CachedResult | None:
        base = self.min_dir / key[:2] / key
        try:
            return CachedResult(btf=base.with_suffix(".btf").read_bytes(), error=None)
        except OSError:
            pass
        try:
            return CachedResult(btf=None, error=base.with_suffix(".err").read_text())
        except OSError:
            return None

    def put_min(self, key: str, btf: bytes) -> None:
        atomic_write(self.min_dir / key[:2] / f"{key}.btf", btf)

    def put_min_error(self, key: str, message: str) -> None:
        atomic_write(self.min_dir / key[:2] / f"{key}.err", message.encode())
