"""Results of `gobtfgen minimize` kept for inputs seen before: a repeated command replays them.

A one-kernel command that a Makefile or a script runs again with the same kernel and objects
pays Python's start, the imports and the first walk of the kernel for an answer it computed
before; bpftool's whole process takes about as long as Python's start. An entry keeps the
answer, and a repeated command reads it back with nothing imported but os and a hash:

  <cache>/minimize/<key>.res     one result: the minimized BTF and which objects were skipped
                                 (no CO-RE relocations); key = sha256 hex of what decides the
                                 output (below)
  <cache>/minimize/<path>.stat   one input file (the kernel, or an object): its stat identity
                                 when it was read, and what was computed from it (the kernel's
                                 sha256, the object's CO-RE digest); path = sha256 hex of
                                 "kernel" or "object", a NUL and the file's absolute path

What decides the output, all in the key:
- the kernel: sha256 of the INPUT file as given (raw BTF or .btf.tar.xz). Reading and hashing
  4-27 MB costs a repeated run 3-15 ms, more than its whole budget, so `.stat` remembers the
  hash by (device, inode, size, mtime, ctime): any change to a file sets its ctime, which no
  system call sets back. Timestamps are coarse (a clock tick, a second on some filesystems),
  so a file changed twice within one tick can keep its identity: as git does for "racy"
  index entries, an identity recorded less than RACY_NS after the file's ctime is not
  trusted, and the file is read again (and recorded again once it is old enough).
- the objects, in order: per object its CO-RE signature (gobtfgen.coresig: the relocations
  and the local types they name, canonical; what generate's cache is keyed by), so a code-only
  edit keeps the entry; "skipped" for an object without CO-RE relocations. Computing it costs
  a millisecond per object, so `.stat` remembers it the same way.
- the minimizer (python or python-compat, with the built-in version), gobtfgen's version and
  GOBTFGEN_VERIFY.
Only successful runs are kept: a failing one runs again and reports itself. -B, .ko inputs and
--minimizer bpftool are never replayed. Entries are written to a temp name and renamed; one
whose checksum does not match its content (damaged, truncated) is ignored and rewritten by
the run that follows. The files sit under the cache root beside generate's, so one size limit
covers both.
"""

from __future__ import annotations

import os
import time

from gobtfgen import __version__
from gobtfgen.fileio import write_atomic
from gobtfgen.minimize import BUILTIN_VERSION
from gobtfgen.sha256 import sha256

# typing.TYPE_CHECKING without importing typing, 10-15 ms of a replay (mypy reads this name);
# collections.abc, unlike the _collections_abc os has loaded, costs 4 ms.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence

SUBDIR = "minimize"
RES_SUFFIX = ".res"
STAT_SUFFIX = ".stat"
RACY_NS = 2_000_000_000  # coarsest common timestamp granularity (FAT: 2 s) plus margin
_RES_MAGIC = b"GBTFMR\0\1"
_STAT_MAGIC = "gobtfgen-minimize-stat 2"
_REPLAYED = ("python", "python-compat")
SKIPPED = "skipped"  # the digest of an object without CO-RE relocations: the command skips it


def cache_root() -> str | None:
    """GOBTFGEN_CACHE_DIR as generate reads it (empty: no cache), else the default
    ($XDG_CACHE_HOME/gobtfgen, as gobtfgen.cache.default_cache_dir)."""
    root = os.environ.get("GOBTFGEN_CACHE_DIR")
    if root is not None:
        return root or None
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "gobtfgen")


def identity(minimizer: str) -> str | None:
    """What besides the inputs decides a replayed output; None: this minimizer is not
    replayed (bpftool's output depends on the installed tool)."""
    if minimizer not in _REPLAYED:
        return None
    verify = os.environ.get("GOBTFGEN_VERIFY", "") not in ("", "0")
    return f"{minimizer} {BUILTIN_VERSION} gobtfgen {__version__} verify={int(verify)}"


def index_path(root: str, raw_sha: str) -> str:
    """gobtfgen.cache.Cache(root).index_path(raw_sha), without importing the cache module
    (json, tempfile, hashlib): where generate's cache keeps a kernel's type index
    (tests/test_minimize_replay.py holds the two to the same path)."""
    return os.path.join(root, "raw", f"{raw_sha}.idx")


def is_regular(path: str) -> bool:
    """pathlib's is_file(), which the command checks its inputs with (a FIFO is not read)."""
    try:
        return (os.stat(path).st_mode & 0o170000) == 0o100000
    except (OSError, ValueError):
        return False


def file_sha256(data: bytes) -> str:
    # The compiled SHA-256 (gobtfgen/_native.c) where the CPU has the SHA extensions: as fast
    # as OpenSSL's, and importing hashlib (libcrypto) costs a cold run 2.5-3.5 ms. The reader
    # imported here is what the run imports next anyway.
    from gobtfgen.btf.native import native

    digest = native.sha256(data) if native is not None else None
    if digest is not None:
        return str(digest.hex())
    import hashlib  # OpenSSL's SHA-256: 3-5x CPython's own on a kernel's megabytes

    return hashlib.sha256(data).hexdigest()


# -- objects -----------------------------------------------------------------------------------


# object_digest's results by the object's bytes. store() reads every object again to see that
# the run's inputs did not change under it; when the bytes are the ones digested before, so is
# the digest, and the signature (a millisecond for a small object, first calls being cold) is
# not computed twice. Bounded: a long-lived process digests many objects.
_DIGESTED: dict[bytes, str | None] = {}


def object_digest(data: bytes) -> str | None:
    """What of a BPF object decides the output: "skipped" for one without CO-RE relocations
    (the command skips it with a note), else its CO-RE signature (gobtfgen.coresig, what
    generate's cache is keyed by). None when it is not a BPF object the command would read
    (the command then reports why)."""
    try:
        return _DIGESTED[data]
    except KeyError:
        pass
    digest = _object_digest(data)
    if len(_DIGESTED) >= 64:
        _DIGESTED.clear()
    _DIGESTED[data] = digest
    return digest


def _object_digest(data: bytes) -> str | None:
    from gobtfgen import coresig, elf

    try:
        e = elf.parse(data)
    except elf.ELFFormatError:
        return None
    btf = e.section(".BTF")
    if e.machine != elf.EM_BPF or btf is None:
        return None
    ext = e.section(".BTF.ext")
    if ext is None:
        return SKIPPED
    try:
        count, signature = coresig.core_signature(e.section_data(btf), e.section_data(ext),
                                                  little=e.little_endian, what="object")
    except coresig.CoreSignatureError:
        return None
    return signature_digest(count, signature)


def signature_digest(core_relocations: int, signature: str) -> str:
    """object_digest from what gobtfgen.objects.read_object computed."""
    return f"{core_relocations}:{signature}" if core_relocations else SKIPPED


def object_digests(paths: Sequence[str], root: str | None = None) -> list[str] | None:
    """Each object's object_digest, in order; None when one is not a regular file or not a BPF
    object. root: the cache, whose .stat records spare reading an object seen before."""
    out = []
    for path in paths:
        recorded_ns = time.time_ns()
        try:
            st = os.stat(path)
        except (OSError, ValueError):
            return None
        if (st.st_mode & 0o170000) != 0o100000:
            return None  # the command says "no such object file"
        digest = _recall(root, "object", path, st) if root is not None else None
        if digest is None:
            try:
                with open(path, "rb") as f:
                    digest = object_digest(f.read())
            except OSError:
                return None
            if digest is None:
                return None
            if root is not None:
                _remember(root, "object", path, st, recorded_ns, digest)
        out.append(digest)
    return out


# -- what was computed from a file, remembered by its stat -------------------------------------


def _stamp(st: os.stat_result) -> tuple[int, int, int, int, int]:
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns


def _stat_path(root: str, kind: str, path: str) -> str:
    name = sha256(f"{kind}\0{os.path.abspath(path)}".encode()).hexdigest()
    return os.path.join(root, SUBDIR, name + STAT_SUFFIX)


def _recall(root: str, kind: str, path: str, st: os.stat_result) -> str | None:
    """The value recorded for the file at path, when the record is this file as it is now and
    was taken long enough after its last change to be trusted."""
    try:
        with open(_stat_path(root, kind, path), encoding="utf-8") as f:
            fields = f.read().split(" ", 10)
    except (OSError, ValueError):
        return None
    if len(fields) != 11 or " ".join(fields[:2]) != _STAT_MAGIC or fields[2] != kind:
        return None
    try:
        stamp = tuple(int(x) for x in fields[3:8])
        recorded = int(fields[8])
    except ValueError:
        return None
    if stamp != _stamp(st) or fields[10] != os.path.abspath(path) + "\n":
        return None
    if stamp[4] + RACY_NS > recorded:
        return None  # racy: the file may have changed again within its timestamp's tick
    return fields[9]


def _remember(root: str, kind: str, path: str, st: os.stat_result, recorded_ns: int,
              value: str) -> None:
    """Record that the file at path, with stat st taken at recorded_ns (before it was read),
    gives value. Best effort, like every cache write."""
    line = " ".join([_STAT_MAGIC, kind, *map(str, _stamp(st)), str(recorded_ns), value,
                     os.path.abspath(path)]) + "\n"
    try:  # noqa: SIM105 (contextlib costs a replay 1-2 ms to import)
        write_atomic(_stat_path(root, kind, path), line.encode())
    except OSError:
        pass


# -- result entries ----------------------------------------------------------------------------


def _key(kernel_sha: str, digests: Sequence[str], ident: str) -> str:
    h = sha256(b"gobtfgen-minimize-replay-1\0")
    for part in (kernel_sha, ident, *digests):
        h.update(part.encode() + b"\0")
    return h.hexdigest()


def _res_path(root: str, key: str) -> str:
    return os.path.join(root, SUBDIR, key + RES_SUFFIX)


def _encode(key: str, out: bytes, skipped: Sequence[int]) -> bytes:
    body = b"".join([bytes.fromhex(key), len(skipped).to_bytes(4, "little"),
                     *(i.to_bytes(4, "little") for i in skipped), out])
    return _RES_MAGIC + sha256(body).digest() + body


def _decode(key: str, blob: bytes, n_objects: int) -> tuple[bytes, list[int]] | None:
    head = len(_RES_MAGIC) + 32
    body = blob[head:]
    if not blob.startswith(_RES_MAGIC) or sha256(body).digest() != blob[len(_RES_MAGIC):head]:
        return None
    if body[:32] != bytes.fromhex(key) or len(body) < 36:
        return None
    count = int.from_bytes(body[32:36], "little")
    if 36 + 4 * count > len(body):
        return None
    skipped = [int.from_bytes(body[at:at + 4], "little") for at in range(36, 36 + 4 * count, 4)]
    if any(i >= n_objects for i in skipped):
        return None
    return body[36 + 4 * count:], skipped


class Inputs:
    """What a run's entry is keyed by, taken before the run reads its kernel."""

    def __init__(self, root: str, kernel: str, objects: Sequence[str], ident: str,
                 st: os.stat_result, recorded_ns: int, digests: list[str]) -> None:
        self.root = root
        self.kernel = kernel
        self.objects = list(objects)
        self.ident = ident
        self.st = st
        self.recorded_ns = recorded_ns
        self.digests = digests
        # Set by lookup() when it had to read and hash the kernel: a run that follows a miss
        # takes them from here instead of reading the file again.
        self.kernel_sha: str | None = None
        self.kernel_data: bytes | None = None


def inputs(kernel: str, objects: Sequence[str], minimizer: str,
           digests: list[str] | None = None) -> Inputs | None:
    """The key material of a run about to read its kernel; None when it is not replayable
    (no cache, a minimizer that is not replayed, an input that is not a regular file or not a
    BPF object: the run then reports it). digests: the objects' (object_digests), when the
    caller has them already."""
    root = cache_root()
    ident = identity(minimizer)
    if root is None or ident is None:
        return None
    if digests is None:
        digests = object_digests(objects, root)
        if digests is None:
            return None
    recorded_ns = time.time_ns()
    try:
        st = os.stat(kernel)
    except OSError:
        return None
    if (st.st_mode & 0o170000) != 0o100000:
        return None
    return Inputs(root, kernel, objects, ident, st, recorded_ns, digests)


def lookup(inp: Inputs) -> tuple[bytes, list[int]] | None:
    """(minimized BTF, indexes of skipped objects) kept for these inputs, or None."""
    sha = _recall(inp.root, "kernel", inp.kernel, inp.st)
    rehashed = sha is None
    if sha is None:
        try:
            with open(inp.kernel, "rb") as f:
                inp.kernel_data = f.read()
        except OSError:
            return None
        sha = inp.kernel_sha = file_sha256(inp.kernel_data)
    key = _key(sha, inp.digests, inp.ident)
    path = _res_path(inp.root, key)
    try:
        with open(path, "rb") as f:
            blob = f.read()
    except OSError:
        return None
    hit = _decode(key, blob, len(inp.objects))
    if hit is None:
        return None
    try:  # noqa: SIM105 (as above)
        os.utime(path)  # recently used, for the cache's eviction by age
    except OSError:
        pass
    if rehashed:
        _remember(inp.root, "kernel", inp.kernel, inp.st, inp.recorded_ns, sha)
    return hit


def store(inp: Inputs, kernel_sha: str, out: bytes, skipped: Sequence[int]) -> None:
    """Keep a successful run's output, if its inputs are still what the key says (a kernel
    or object changed while the run read it is not recorded). Best effort."""
    try:
        if _stamp(os.stat(inp.kernel)) != _stamp(inp.st):
            return
    except OSError:
        return
    if object_digests(inp.objects) != inp.digests:  # read again, not recalled
        return
    key = _key(kernel_sha, inp.digests, inp.ident)
    try:
        write_atomic(_res_path(inp.root, key), _encode(key, out, skipped))
    except OSError:
        return
    _remember(inp.root, "kernel", inp.kernel, inp.st, inp.recorded_ns, kernel_sha)
