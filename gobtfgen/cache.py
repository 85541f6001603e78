"""The per-kernel cache.

Layout under the cache dir (default `$XDG_CACHE_HOME/gobtfgen`):
  raw/<sha256 of the .btf.tar.xz>.zst     the kernel's BTF, stripped of what CO-RE cannot reach
                                          (gobtfgen.btf.strip), zstd level 1 (RawEntry below),
                                          so a run whose relocations changed skips xz (the
                                          larger part of a cold run): about 19% of the raw BTF
                                          on disk (34% unstripped), read back 15x faster than xz
  raw/<sha256>.idx                        where each of its type records starts (written by the
                                          built-in minimizer, gobtfgen.btf.index, compressed), so
                                          it is framed once, not once per run; only without the
                                          C extension, whose framing is cheaper than the file
  min/<key>.btf | min/<key>.err           a minimized BTF, or the one-line reason it failed
  pack/<pack key>.pack                    a packed payload and its stats, by its input
                                          (gobtfgen.pack.pack_key)
  fullsum/<sha256>                        the size and sha256 of the kernel's raw BTF
  filememo.json                           (path, size, mtime, inode) -> sha256 or CO-RE
                                          signature, so unchanged inputs are not re-read
  runs/<output dir hash>.json             the inputs and outputs of the last run into a
                                          directory: an unchanged re-run stops right there
One size limit covers every file under the root, whatever module wrote it (evict(): least
recently used first; a read marks an entry used). The default, DEFAULT_LIMIT, holds the whole
btfhub-archive (about 4,300 kernels, 19 GB of raw BTF: about 7 GB here); --cache-limit
(GOBTFGEN_CACHE_LIMIT) caps it. Every file is written to a temp name and renamed, so a killed
run never leaves a torn entry; an entry that does not check out (damaged, truncated, another
kernel's, an older format) is deleted and rebuilt, never used; concurrent runs at worst compute
the same entry twice.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import stat
import struct
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gobtfgen.fileio import write_atomic

DEFAULT_LIMIT = 10 << 30  # bytes of disk the whole cache may use; least recently used goes first
LIMIT_ENV = "GOBTFGEN_CACHE_LIMIT"
RAW_LEVEL = 1  # zstd level of raw BTF: see RawEntry
# A temp file older than this is a killed writer's leftover; younger, a writer may still be on it.
STALE_TMP_SECONDS = 3600
_SIZE_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_size(text: str) -> int:
    """Bytes from "10G", "500M", "4096" (binary units; a trailing B or iB is allowed)."""
    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([KMGT]?)(?:i?B)?\s*", text, re.IGNORECASE)
    if not m:
        raise ValueError(f"{text!r} is not a size (use bytes or K, M, G, T: 10G, 500M)")
    return int(float(m[1]) * _SIZE_UNITS[m[2].upper()])


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "gobtfgen"


def _file_mode() -> int:
    # mkstemp creates 0600 files; a written file gets the mode a plain open() would give it.
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write(path: Path, data: bytes) -> None:
    # Not tempfile.mkstemp: it names its file only once created, so a Ctrl-C landing in between
    # left a temp file no one could name; write_atomic chooses the name first.
    write_atomic(path, data)


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
            # Forget files that are gone: otherwise every archive path ever hashed stays, and
            # each `gobtfgen fetch` update (a worktree per commit, the old one removed) would
            # add a whole archive's entries that no run can use again, loaded by every run.
            # One lstat an entry, on runs that learnt something (never on an unchanged one).
            self._entries = {key: value for key, value in self._entries.items()
                             if os.path.lexists(key.partition(":")[2])}
            # Best effort, like every cache write: a full or read-only cache costs re-reading
            # the inputs next time, never the run.
            with contextlib.suppress(OSError):
                atomic_write(self.path, json.dumps(self._entries, sort_keys=True).encode())
            self._dirty = False


class RawEntry:
    """A kernel's BTF as the cache keeps it:

        magic "GBTFRZ\\0\\2", the sha256 of the archive file it came from (32 bytes), the BTF's
        length (u64 LE), flags (u32 LE: bit 0 set when the BTF is stripped), then one zstd frame
        with its content checksum. (Entries of format 1, "GBTFRZ\\0\\1", have no flags word
        and hold the full BTF; they are read as such.)

    Stripped (gobtfgen.btf.strip): the records no CO-RE relocation can reach are blanked, ids
    and string offsets unchanged; the entry is then 55% of the full BTF's on btfhub's kernels.
    zstd level 1 is the fastest codec that keeps the cache near the archive's size: on
    btfhub's kernels the full BTF takes 34% of its size (xz -6: 23%; lz4 52%; zstd 3 33% at
    twice the write time; even zstd 19 is 1.13x xz), the stripped one about 19%, under xz's
    own; it writes at about 250 MB/s and reads at 1 GB/s (3 ms, against 58 ms for xz). The key
    ties an entry to its name (a file copied or renamed from another kernel is not this one);
    the checksum and the length catch damage and truncation. decode() returns None for
    anything else: the caller inflates the archive file again."""

    MAGIC = b"GBTFRZ\0\2"
    MAGIC_V1 = b"GBTFRZ\0\1"
    HEAD = struct.Struct("<32sQI")
    HEAD_V1 = struct.Struct("<32sQ")
    STRIPPED = 1

    @classmethod
    def encode(cls, kernel_sha: str, btf: bytes, *, stripped: bool = False) -> bytes:
        import zstandard

        frame = zstandard.ZstdCompressor(level=RAW_LEVEL, write_checksum=True,
                                         write_content_size=True).compress(btf)
        flags = cls.STRIPPED if stripped else 0
        return cls.MAGIC + cls.HEAD.pack(bytes.fromhex(kernel_sha), len(btf), flags) + frame

    @classmethod
    def decode(cls, kernel_sha: str, blob: bytes) -> CachedKernel | None:
        import zstandard

        if blob.startswith(cls.MAGIC):
            start = len(cls.MAGIC) + cls.HEAD.size
            if len(blob) < start:
                return None
            key, size, flags = cls.HEAD.unpack_from(blob, len(cls.MAGIC))
            if flags & ~cls.STRIPPED:
                return None  # a later format's flag this reader does not know
        elif blob.startswith(cls.MAGIC_V1):
            start = len(cls.MAGIC_V1) + cls.HEAD_V1.size
            if len(blob) < start:
                return None
            key, size = cls.HEAD_V1.unpack_from(blob, len(cls.MAGIC_V1))
            flags = 0
        else:
            return None
        if key != bytes.fromhex(kernel_sha):
            return None
        try:
            btf = zstandard.ZstdDecompressor().decompress(memoryview(blob)[start:],
                                                          max_output_size=size)
        except zstandard.ZstdError:
            return None
        if len(btf) != size:
            return None
        return CachedKernel(btf=btf, stripped=bool(flags & cls.STRIPPED))


@dataclass(frozen=True)
class CachedKernel:
    """A kernel's BTF from the cache: the full one, or stripped (gobtfgen.btf.strip), which
    minimizes the same for objects strip.serves() accepts."""

    btf: bytes
    stripped: bool


class Cache:
    def __init__(self, root: Path, limit: int = DEFAULT_LIMIT) -> None:
        self.root = root
        self.limit = limit
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
        return self.raw_dir / f"{kernel_sha}.zst"

    def get_kernel(self, kernel_sha: str) -> CachedKernel | None:
        """The kernel's BTF if the cache holds a sound entry for it (marked used), else None;
        an entry that does not check out is deleted, and the caller rebuilds it."""
        path = self.raw_path(kernel_sha)
        try:
            blob = path.read_bytes()
        except OSError:
            return None
        entry = RawEntry.decode(kernel_sha, blob)
        with contextlib.suppress(OSError):
            if entry is None:
                path.unlink()
            else:
                os.utime(path)
        return entry

    def put_kernel(self, kernel_sha: str, btf: bytes, *, stripped: bool = False) -> Path:
        path = self.raw_path(kernel_sha)
        atomic_write(path, RawEntry.encode(kernel_sha, btf, stripped=stripped))
        return path

    def index_path(self, kernel_sha: str) -> Path:
        """Where the type index of a kernel is kept (by the sha256 of its archive file, or by
        that of its raw BTF for `gobtfgen minimize`)."""
        return self.raw_dir / f"{kernel_sha}.idx"

    def usage(self) -> int:
        """Bytes of disk the cache's files take (allocated blocks, as du counts them)."""
        return sum(size for _, size, _ in self._files(time.time()))

    def entry_bytes(self, *paths: Path) -> int:
        """Disk the files at paths take now (missing ones nothing): what a worker reports it
        added, so the parent knows when to evict without walking the whole cache."""
        total = 0
        for path in paths:
            with contextlib.suppress(OSError):
                total += os.lstat(path).st_blocks * 512
        return total

    def _files(self, now: float) -> list[tuple[float, int, str]]:
        """(last use, disk bytes, path) of every evictable file under the root; removes temp
        files that killed writers left behind. (scandir and one lstat a file: 20k files, what
        the whole archive leaves, take a fraction of a second.)"""
        found: list[tuple[float, int, str]] = []
        stack = [str(self.root)]
        while stack:
            top = stack.pop()
            locks = os.path.basename(top) == "locks"
            raw = top == str(self.raw_dir)
            try:
                it = os.scandir(top)
            except OSError:
                continue  # removed meanwhile, or no cache yet
            with it:
                for e in it:
                    try:
                        if e.is_dir(follow_symlinks=False):
                            stack.append(e.path)
                            continue
                        st = e.stat(follow_symlinks=False)
                    except OSError:
                        continue  # removed meanwhile
                    name = e.name
                    if not stat.S_ISREG(st.st_mode) or (locks and name.endswith(".lock")):
                        continue  # lock files: a few hundred bytes, held by running processes
                    if raw and name.endswith(".btf"):
                        # Uncompressed raw BTF of cache versions before the .zst entries: no
                        # run reads it any more, and it takes three times the disk.
                        with contextlib.suppress(OSError):
                            os.unlink(e.path)
                        continue
                    if name.startswith(".") and name.endswith(".tmp"):
                        if now - st.st_mtime > STALE_TMP_SECONDS:
                            with contextlib.suppress(OSError):
                                os.unlink(e.path)
                        continue
                    found.append((st.st_mtime, st.st_blocks * 512, e.path))
        return found

    def evict(self, limit: int | None = None) -> int:
        """Delete the least recently used files under the root (any entry, whichever module
        wrote it) until the cache takes at most limit bytes of disk (default: the cache's
        limit); return bytes freed. Safe while other runs use the cache: a file deleted under
        a reader only costs that reader a recomputation."""
        return self.trim(limit)[0]

    def trim(self, limit: int | None = None) -> tuple[int, int]:
        """evict(), returning (bytes freed, bytes the cache takes after)."""
        limit = self.limit if limit is None else limit
        files = self._files(time.time())
        total = sum(size for _, size, _ in files)
        freed = 0
        for _, size, path in sorted(files):
            if total - freed <= limit:
                break
            with contextlib.suppress(OSError):
                os.unlink(path)
                freed += size
        return freed, total - freed

    # -- minimized results -------------------------------------------------------------------
    def get_min(self, key: str) -> CachedResult | None:
        base = self.min_dir / key[:2] / key
        for suffix in (".btf", ".err"):
            path = base.with_suffix(suffix)
            try:
                data = _unwrap(path.read_bytes())
            except OSError:
                continue
            if data is None:
                with contextlib.suppress(OSError):
                    path.unlink()  # damaged, or of an older format: computed again
                continue
            with contextlib.suppress(OSError):
                os.utime(path)  # used: evicted last
            if suffix == ".btf":
                return CachedResult(btf=data, error=None)
            return CachedResult(btf=None, error=data.decode(errors="replace"))
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

    def fullsum_path(self, kernel_sha: str) -> Path:
        return self.root / "fullsum" / kernel_sha[:2] / kernel_sha

    def get_fullsum(self, kernel_sha: str) -> str | None:
        """The "<size>:<sha256>" of a kernel's full raw BTF, recorded when it was inflated."""
        try:
            text = self.fullsum_path(kernel_sha).read_text().strip()
        except OSError:
            return None
        return text if re.fullmatch(r"[0-9]+:[0-9a-f]{64}", text) else None

    def put_fullsum(self, kernel_sha: str, fullsum: str) -> None:
        atomic_write(self.fullsum_path(kernel_sha), fullsum.encode())

    def min_path(self, key: str) -> Path:
        return self.min_dir / key[:2] / f"{key}.btf"

    def put_min(self, key: str, btf: bytes) -> None:
        atomic_write(self.min_path(key), _wrap(btf))

    def put_min_error(self, key: str, message: str) -> None:
        atomic_write(self.min_dir / key[:2] / f"{key}.err", _wrap(message.encode()))

    # -- packed payloads (gobtfgen.pack.pack_key) -------------------------------------------
    def pack_path(self, key: str) -> Path:
        return self.root / "pack" / f"{key}.pack"

    def get_pack(self, key: str) -> tuple[bytes, dict[str, Any]] | None:
        """A payload packed before from the same input, and its stats; None if none is kept
        (or the entry does not check out: deleted, packed again)."""
        path = self.pack_path(key)
        try:
            data = _unwrap(path.read_bytes())
        except OSError:
            return None
        try:
            if data is None:
                raise ValueError("damaged")
            (head_len,) = struct.unpack_from("<I", data)
            stats = json.loads(data[4:4 + head_len])
            if not isinstance(stats, dict):
                raise ValueError("not a stats record")
        except (ValueError, struct.error):
            with contextlib.suppress(OSError):
                path.unlink()
            return None
        with contextlib.suppress(OSError):
            os.utime(path)
        return data[4 + head_len:], stats

    def put_pack(self, key: str, payload: bytes, stats: dict[str, Any]) -> None:
        head = json.dumps(stats, sort_keys=True).encode()
        atomic_write(self.pack_path(key), _wrap(struct.pack("<I", len(head)) + head + payload))


_MIN_MAGIC = b"GBTFMN\0\1"


def _wrap(data: bytes) -> bytes:
    """A result entry: magic, length and crc32, then the bytes (so damage is seen)."""
    return _MIN_MAGIC + struct.pack("<II", len(data), zlib.crc32(data)) + data


def _unwrap(blob: bytes) -> bytes | None:
    head = len(_MIN_MAGIC) + 8
    if len(blob) < head or not blob.startswith(_MIN_MAGIC):
        return None
    size, crc = struct.unpack_from("<II", blob, len(_MIN_MAGIC))
    data = blob[head:]
    return data if len(data) == size and zlib.crc32(data) == crc else None
