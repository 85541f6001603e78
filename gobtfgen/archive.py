"""btfhub-archive layout: scanning, filtering and safe in-memory reading of `.btf.tar.xz` files.

Layout: `<os-release ID>/<version>/<x86_64|arm64>/<uname -r>.btf.tar.xz`, each tar holding one
member `<uname -r>.btf` (raw BTF); a tar whose single regular member has another name (Datadog's
fork: `vmlinux`) is read the same way. Nothing is ever extracted to disk: archives are user input,
and a member named `../../x` or a symlink must not be able to touch anything.
"""

from __future__ import annotations

import fnmatch
import io
import lzma
import os
import struct
import tarfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from gobtfgen.errors import InputError, Level, Problem
from gobtfgen.keys import ARCHES

__all__ = ["ARCHES", "Kernel", "scan_archive", "read_kernel_btf"]

SUFFIX = ".btf.tar.xz"
# Beside <release>.btf in a file gobtfgen merged module BTF into: which ids came from which
# module (gobtfgen.btf.split.Merged.sidecar), for libbpf's vmlinux-first candidate order.
MODULES_SUFFIX = ".modules.json"
# The largest kernel BTF seen is ~27 MB (560k types); xz input past this is an xz bomb or not
# a kernel BTF, and we stop inflating instead of exhausting memory.
MAX_TAR_BYTES = 256 << 20
MAX_XZ_BYTES = 128 << 20
BTF_MAGIC = 0xEB9F

_FIX = "re-fetch it (gobtfgen fetch) or leave it out with --exclude"


@dataclass(frozen=True, kw_only=True, slots=True)
class Kernel:
    key: str  # "<id>/<version>/<arch>/<release>": the payload key and the filter subject
    distro: str
    version: str
    arch: str
    release: str
    path: Path


def archive_commit(root: Path) -> str | None:
    """The commit a btfhub-archive checkout is at, read from .git without running git (the
    archive loses files over time, so the manifest records which state a run used)."""
    git = root / ".git"
    try:
        if git.is_file():  # a worktree or submodule: "gitdir: <path>"
            git = (root / git.read_text().split(":", 1)[1].strip()).resolve()
        head = (git / "HEAD").read_text().strip()
        if not head.startswith("ref: "):
            return head or None
        ref = head[5:]
        ref_file = git / ref
        if ref_file.is_file():
            return ref_file.read_text().strip() or None
        for line in (git / "packed-refs").read_text().splitlines():
            if line.endswith(" " + ref):
                return line.split(" ", 1)[0]
    except (OSError, IndexError):
        return None
    return None


def _matches(key: str, patterns: Sequence[str]) -> bool:
    # A pattern matches the whole key, or a prefix of it ending at a "/" (so "ubuntu" and
    # "centos/7" select folders the way a user expects).
    for pat in patterns:
        pat = pat.rstrip("/")
        if fnmatch.fnmatchcase(key, pat) or fnmatch.fnmatchcase(key, pat + "/*"):
            return True
    return False


def scan_archive(root: Path, arches: Iterable[str], include: Sequence[str] = (),
                 exclude: Sequence[str] = ()) -> tuple[list[Kernel], list[Problem]]:
    """All kernels under root for the given arches, filtered, sorted by key."""
    if not root.is_dir():
        raise InputError(f"archive {root} is not a directory; pass --archive DIR (or set "
                         "BTFHUB_ARCHIVE) pointing at a btfhub-archive checkout")
    wanted = set(arches)
    kernels: list[Kernel] = []
    problems: list[Problem] = []
    for distro in _subdirs(root):
        for version in _subdirs(distro):
            for arch in _subdirs(version):
                if arch.name not in ARCHES:
                    if arch.name == "aarch64":
                        problems.append(Problem(
                            level=Level.WARNING, subject=str(arch),
                            message="btfhub names this arch arm64, not aarch64; rename the "
                                    "folder to arm64 to use these kernels"))
                    continue
                if arch.name not in wanted:
                    continue
                # One string per folder name and paths made from their folder's, whose parts
                # they share: a whole archive's kernels stay a few hundred bytes each.
                names = (distro.name, version.name, arch.name)
                prefix = "/".join(names) + "/"
                for entry in sorted(os.scandir(arch), key=lambda e: e.name):
                    if entry.name.endswith(SUFFIX) and entry.is_file():
                        release = entry.name[: -len(SUFFIX)]
                        kernel = Kernel(key=prefix + release, distro=names[0], version=names[1],
                                        arch=names[2], release=release, path=arch / entry.name)
                        if (not include or _matches(kernel.key, include)) and \
                                not _matches(kernel.key, exclude):
                            kernels.append(kernel)
    kernels.sort(key=lambda k: k.key)
    return kernels, problems


def _subdirs(path: Path) -> list[Path]:
    # Dot folders (.git) are never part of the layout.
    return sorted(Path(e.path) for e in os.scandir(path)
                  if e.is_dir(follow_symlinks=False) and not e.name.startswith("."))


def inflate_xz(data: bytes, *, what: Path, limit: int = MAX_TAR_BYTES) -> bytes:
    """Decompress xz data, refusing to produce more than limit bytes."""
    decomp = lzma.LZMADecompressor(format=lzma.FORMAT_XZ)
    try:
        out = decomp.decompress(data, max_length=limit + 1)
    except lzma.LZMAError as exc:
        raise InputError(f"{what}: corrupt xz data ({exc}); {_FIX}") from None
    if len(out) > limit:
        raise InputError(f"{what}: inflates past {limit >> 20} MiB, more than any kernel BTF "
                         f"(an xz bomb or not a btfhub file); {_FIX}")
    if not decomp.eof:
        raise InputError(f"{what}: truncated xz data; {_FIX}")
    return out


def read_kernel_btf(path: Path) -> bytes:
    """The raw BTF inside a btfhub `.btf.tar.xz`, read in memory with strict member checks."""
    return kernel_btf_of(read_archive_file(path), what=path)


def read_archive_file(path: Path) -> bytes:
    """A btfhub `.btf.tar.xz` file's bytes, refusing files too large to be one."""
    try:
        size = path.stat().st_size
        if size > MAX_XZ_BYTES:
            raise InputError(f"{path}: {size >> 20} MiB is too large for a btfhub BTF file; {_FIX}")
        return path.read_bytes()
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror}); check its permissions") from None


def kernel_btf_of(data: bytes, *, what: Path) -> bytes:
    """The raw BTF inside the bytes of a btfhub `.btf.tar.xz` (what names it in errors)."""
    return btf_from_tar(inflate_xz(data, what=what), what=what)


def btf_from_tar(tar_bytes: bytes, *, what: Path) -> bytes:
    try:
        tar = tarfile.open(fileobj=io.BytesIO(tar_bytes), mode="r:")  # noqa: SIM115 (in memory)
        members = tar.getmembers()
    except (tarfile.TarError, EOFError) as exc:
        raise InputError(f"{what}: not a valid tar inside the xz ({exc}); {_FIX}") from None
    btf_members = []
    regular = []
    for member in members:
        name = member.name
        if name.startswith("/") or ".." in Path(name).parts:
            raise InputError(f"{what}: tar member {name!r} escapes the archive (absolute path "
                             f"or '..'); refusing the file; {_FIX}")
        if member.issym() or member.islnk():
            raise InputError(f"{what}: tar member {name!r} is a link; btfhub files hold one "
                             f"regular .btf file; {_FIX}")
        if member.isdir():
            continue
        if not member.isfile():
            raise InputError(f"{what}: tar member {name!r} is a device or special file; {_FIX}")
        regular.append(member)
        if name.endswith(".btf"):
            btf_members.append(member)
    if len(btf_members) > 1:
        raise InputError(f"{what}: the tar holds {len(btf_members)} .btf members, btfhub files "
                         f"hold one; {_FIX}")
    if btf_members:
        chosen = btf_members[0]
    elif len(regular) == 1:
        # Datadog's fork of btfhub-archive names the single member `vmlinux` (vmlinux and
        # module BTF merged); any lone regular member is read as BTF and checked as such.
        chosen = regular[0]
    elif not regular:
        raise InputError(f"{what}: the tar holds no .btf member; {_FIX}")
    else:
        raise InputError(f"{what}: the tar holds no .btf member and {len(regular)} other files, "
                         f"so none is the kernel's BTF; {_FIX}")
    extracted = tar.extractfile(chosen)
    if extracted is None:  # pragma: no cover - isfile() checked above
        raise InputError(f"{what}: cannot read {chosen.name}; {_FIX}")
    btf = extracted.read()
    check_btf(btf, what=f"{what} ({chosen.name})")
    return btf


def check_btf(blob: bytes, *, what: object, fix: str = _FIX) -> bool:
    """Header sanity of a raw BTF blob: magic, version, section bounds. Returns whether it is
    little-endian. fix is the advice that ends each message."""
    if len(blob) < 24:
        raise InputError(f"{what}: {len(blob)} bytes is too short for BTF; {fix}")
    magic = struct.unpack_from("<H", blob)[0]
    if magic == BTF_MAGIC:
        order = "<"
    elif magic == 0x9FEB:
        order = ">"
    else:
        raise InputError(f"{what}: not BTF (magic {blob[:2].hex()}, want eb9f); {fix}")
    version, _flags, hdr_len, type_off, type_len, str_off, str_len = struct.unpack_from(
        order + "BBIIIII", blob, 2)
    if version != 1 or hdr_len < 24 or hdr_len > len(blob):
        raise InputError(f"{what}: unsupported BTF header (version {version}, length "
                         f"{hdr_len}); {fix}")
    body = len(blob) - hdr_len
    if type_off + type_len > body or str_off + str_len > body:
        raise InputError(f"{what}: BTF sections run past the end of the data (damaged); {fix}")
    return order == "<"
