"""The per-kernel cache.

Layout under the cache dir (default `$XDG_CACHE_HOME/gobtfgen`):
  raw/<sha256 of the .btf.tar.xz>.btf     the kernel's raw BTF, so a run whose relocations changed
                                          skips xz (the larger part of a cold run)
  raw/<sha256 of the .btf.tar.xz>.idx     where each of its type records starts (written by the
                                          built-in minimizer, gobtfgen.btf.index), so it is
                                          framed once, not once per run
  min/<key>.btf | min/<key>.err           a minimized BTF, or the one-line reason it failed
  filememo.json                           (path, size, mtime, inode) -> sha256 or CO-RE
                                          signature, so unchanged inputs are not re-read
  runs/<output dir hash>.json             the inputs and outputs of the last run into a
                                          directory: an unchanged re-run stops right there
Every file is written to a temp name and renamed, so a killed run never leaves a torn entry;
concurrent runs at worst compute the same entry twice.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_RAW_LIMIT = 4 << 30  # bytes of raw kernel BTF kept; least recently used goes first


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "gobtfgen"


def _file_mode() -> int:
    # mkstemp creates 0600 files; a written file gets the mode a plain open() would give it.
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


FILE_MODE = _file_mode()


def minimize_key(kernel_sha: str, objects_signature: str, minimizer_identity: str) -> str:
    h = hashlib.sha256(b"gobtfgen-min-1\0")
    for part in (kernel_sha, objects_signature, minimizer_identity):
        h.update(part.encode() + b"\0")
    return h.hexdigest()


@dataclass(frozen=True, kw_only=True)
class CachedResult:
    btf: bytes | None  # the minimized BTF, or None when it failed
    error: str | None


class StatMemo:
    """Facts about files keyed by (path, size, mtime, inode): the sha256 of an archive file, the
    CO-RE signature of an object. An unchanged file is then not re-read on the next run. Kept
    by the parent process; workers report what they computed."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._entries: dict[str, list[Any]] = {}
        self._dirty = False
        try:
            loaded = json.loads(path.read_text())
            if isinstance(loaded, dict):
                self._entries = loaded
        except (OSError, ValueError):
            pass  # a missing or torn memo only costs a re-read

    @staticmethod
    def stamp(path: Path) -> list[Any]:
        st = path.stat()
        return [st.st_size, st.st_mtime_ns, st.st_ino]

    def lookup(self, path: Path, kind: str = "sha256") -> Any:
        memo = self._entries.get(f"{kind}:{os.path.abspath(path)}")
        try:
            stamp = self.stamp(path)
        except OSError:
            return None
        if memo and len(memo) == 4 and memo[:3] == stamp:
            return memo[3]
        return None

    def record(self, path: Path, stamp: list[Any], value: Any, kind: str = "sha256") -> None:
        self._entries[f"{kind}:{os.path.abspath(path)}"] = [*stamp, value]
        self._dirty = True

    def save(self) -> None:
        if self._dirty:
            # Best effort, like every cache write: a full or read-only cache costs re-reading
            # the inputs next time, never the run.
            with contextlib.suppress(OSError):
                atomic_write(self.path, json.dumps(self._entries, sort_keys=True).encode())
            self._dirty = False


class Cache:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.raw_dir = root / "raw"
        self.min_dir = root / "min"

    def memo(self) -> StatMemo:
        return StatMemo(self.root / "filememo.json")

    # -- run records: what the last run into an output directory saw and wrote -------------
    def _run_path(self, output_dir: Path) -> Path:
        digest = hashlib.sha256(os.path.abspath(output_dir).encode()).hexdigest()
        return self.root / "runs" / f"{digest}.json"

    def get_run(self, output_dir: Path) -> dict[str, Any] | None:
        try:
            record = json.loads(self._run_path(output_dir).read_bytes())
        except (OSError, ValueError):
            return None
        return record if isinstance(record, dict) else None

    def put_run(self, output_dir: Path, record: dict[str, Any]) -> None:
        with contextlib.suppress(OSError):  # best effort: the next run is just not a fast one
            atomic_write(self._run_path(output_dir), json.dumps(record, sort_keys=True).encode())

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

    def index_path(self, kernel_sha: str) -> Path:
        """The type index of raw_path(kernel_sha); evicted with it."""
        return self.raw_dir / f"{kernel_sha}.idx"

    def evict_raw(self, limit: int = DEFAULT_RAW_LIMIT) -> int:
        """Delete least recently used raw BTFs (and their indexes) beyond limit bytes; return
        bytes freed."""
        sizes: dict[str, int] = {}
        used: dict[str, float] = {}
        try:
            for e in os.scandir(self.raw_dir):
                stem, dot, ext = e.name.rpartition(".")
                if not dot or ext not in ("btf", "idx") or e.name.startswith("."):
                    continue
                st = e.stat()
                sizes[stem] = sizes.get(stem, 0) + st.st_size
                if ext == "btf":
                    used[stem] = st.st_mtime
        except OSError:
            return 0
        total = sum(sizes.values())
        freed = 0
        # An index whose BTF is gone sorts first (time 0): it is of no use.
        for _, stem in sorted((used.get(stem, 0.0), stem) for stem in sizes):
            if total - freed <= limit:
                break
            for ext in ("btf", "idx"):
                with contextlib.suppress(FileNotFoundError, OSError):
                    os.unlink(self.raw_dir / f"{stem}.{ext}")
            freed += sizes[stem]
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

    @contextlib.contextmanager
    def computing(self, key: str) -> Iterator[None]:
        """Held while one worker computes an entry, so another worker (or another gobtfgen run)
        that needs the same entry (the same kernel file under two names, as btfhub has) waits
        and takes it from the cache instead of computing it twice. 256 lock stripes: keys
        sharing a stripe at worst wait for each other."""
        path = self.root / "locks" / f"{key[:2]}.lock"
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError:
            yield  # no lock on a read-only or full cache: at worst duplicate work
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _fullsum_path(self, kernel_sha: str) -> Path:
        return self.root / "fullsum" / kernel_sha[:2] / kernel_sha

    def get_fullsum(self, kernel_sha: str) -> str | None:
        """The "<size>:<sha256>" of a kernel's full raw BTF, recorded when it was inflated."""
        try:
            text = self._fullsum_path(kernel_sha).read_text().strip()
        except OSError:
            return None
        return text if re.fullmatch(r"[0-9]+:[0-9a-f]{64}", text) else None

    def put_fullsum(self, kernel_sha: str, fullsum: str) -> None:
        atomic_write(self._fullsum_path(kernel_sha), fullsum.encode())

    def put_min(self, key: str, btf: bytes) -> None:
        atomic_write(self.min_dir / key[:2] / f"{key}.btf", btf)

    def put_min_error(self, key: str, message: str) -> None:
        atomic_write(self.min_dir / key[:2] / f"{key}.err", message.encode())
