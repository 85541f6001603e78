"""gobtfgen archive add: put a kernel's BTF into an archive directory under the right key, as
a `.btf.tar.xz` like btfhub's, so self-built kernels can be embedded too."""

from __future__ import annotations

import argparse
import io
import lzma
import os
import re
import struct
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile

from gobtfgen import hostinfo, keys
from gobtfgen.archive import SUFFIX, read_kernel_btf
from gobtfgen.errors import InputError, UsageError
from gobtfgen.options import add

BTF_MAGIC_LE = b"\x9f\xeb"
BTF_MAGIC_BE = b"\xeb\x9f"
# e_machine of the ELF arches btfhub has.
_ARCH_OF_EM = {"EM_X86_64": "x86_64", "EM_AARCH64": "arm64"}
# The kernel's linux_banner: "Linux version 5.4.0-1029-aws (buildd@...) (gcc ...) #30-Ubuntu".
_BANNER = re.compile(rb"Linux version ([\x21-\x7e]{1,128}) \(")
# btfhub compresses with `tar cJf` (xz preset 6); preset 9 would need ~700 MB to compress.
_XZ_PRESET = 6


def register(sub: Any) -> None:
    p = sub.add_parser("archive", help="manage a btfhub-style archive directory",
                       description="Manage a btfhub-style archive directory.")
    archive_sub = p.add_subparsers(dest="archive_command", metavar="ACTION", required=True)
    a = archive_sub.add_parser(
        "add", help="add a kernel's BTF (this kernel's, a raw BTF file or a vmlinux ELF)",
        description="Write a kernel's BTF into ARCHIVE/<id>/<version>/<arch>/<release>.btf.tar.xz "
                    "(one member <release>.btf, as btfhub does), so gobtfgen generate embeds it. "
                    "The key defaults to this host's (os-release under --host-root, uname); a "
                    "vmlinux ELF gives its own arch and release.",
        epilog="For a self-built kernel: build it with CONFIG_DEBUG_INFO_BTF=y (or run pahole "
               "-J on its vmlinux), then: gobtfgen archive add ARCHIVE --from vmlinux --id ID "
               "--version VERSION.")
    a.add_argument("archive", type=Path, metavar="ARCHIVE", help="the archive directory")
    a.add_argument("--from", dest="source", type=Path, default=Path(hostinfo.NATIVE_BTF),
                   metavar="FILE",
                   help="raw BTF or a vmlinux ELF with a .BTF section (default: %(default)s, "
                        "the running kernel's)")
    a.add_argument("--id", help="os-release ID of the distro the kernel runs on "
                                "(default: this host's)")
    a.add_argument("--version", help="archive version folder (default: this host's VERSION_ID, "
                                     "cut to the major number where btfhub does: rhel 8.4 -> 8)")
    a.add_argument("--arch", help="x86_64 or arm64 (aarch64 accepted; default: the ELF's, "
                                  "else this machine's)")
    a.add_argument("--release", help="the kernel's `uname -r` (default: the ELF's banner, else "
                                     "this kernel's when adding /sys/kernel/btf/vmlinux)")
    add(a, "--host-root", env="HOST_ROOT", default="/", metavar="DIR",
        help="where this host's os-release is found (in a container: the host's /)")
    a.add_argument("--force", action="store_true",
                   help="replace an existing file that holds different BTF")
    a.set_defaults(func=run)


@dataclass(frozen=True, kw_only=True)
class Source:
    btf: bytes
    kind: str  # "raw BTF" or "vmlinux ELF"
    arch: str | None  # from the ELF header
    release: str | None  # from the ELF's linux_banner


def _check_btf(data: bytes, what: Path) -> None:
    if len(data) < 24 or data[:2] not in (BTF_MAGIC_LE, BTF_MAGIC_BE):
        raise InputError(f"{what}: the .BTF data is not BTF (bad magic); regenerate it with "
                         "pahole -J")
    order = "<" if data[:2] == BTF_MAGIC_LE else ">"
    _v, _f, hdr_len, type_off, type_len, str_off, str_len = struct.unpack_from(
        order + "BBIIIII", data, 2)
    end = max(type_off + type_len, str_off + str_len)
    if hdr_len < 24 or hdr_len + end > len(data):
        raise InputError(f"{what}: truncated BTF (sections end past the data); regenerate it")


def read_source(path: Path) -> Source:
    try:
        data = path.read_bytes()
    except OSError as exc:
        hint = ("this kernel has no BTF of its own (no CONFIG_DEBUG_INFO_BTF); pass --from "
                "FILE" if str(path) == hostinfo.NATIVE_BTF else "check the path")
        raise InputError(f"{path}: cannot read ({exc.strerror}); {hint}") from None
    if data[:2] in (BTF_MAGIC_LE, BTF_MAGIC_BE):
        _check_btf(data, path)
        return Source(btf=data, kind="raw BTF", arch=None, release=None)
    if data[:4] != b"\x7fELF":
        raise InputError(f"{path}: neither raw BTF nor an ELF file; pass a vmlinux (a "
                         "compressed vmlinuz must be extracted first, e.g. with "
                         "scripts/extract-vmlinux) or a .btf file")
    try:
        elf = ELFFile(io.BytesIO(data))
        section = elf.get_section_by_name(".BTF")
        machine = str(elf.header["e_machine"])
        btf = section.data() if section is not None else None
        # linux_banner lives in .rodata; searching only there keeps a stray "Linux version"
        # elsewhere (a comment section, a module string) from naming the release.
        rodata = [s.data() for s in elf.iter_sections()
                  if s.name.startswith(".rodata") and s["sh_type"] != "SHT_NOBITS"]
    except (ELFError, ValueError, struct.error) as exc:
        raise InputError(f"{path}: unreadable ELF ({exc}); pass a vmlinux or raw BTF") from None
    if btf is None:
        raise InputError(f"{path}: no .BTF section; build the kernel with "
                         "CONFIG_DEBUG_INFO_BTF=y or add BTF with pahole -J")
    _check_btf(btf, path)
    banner = next((m for m in map(_BANNER.search, rodata) if m), None)
    return Source(btf=btf, kind="vmlinux ELF", arch=_ARCH_OF_EM.get(machine),
                  release=banner.group(1).decode() if banner else None)


def tar_xz(release: str, btf: bytes) -> bytes:
    """A btfhub-style .btf.tar.xz holding `<release>.btf`; same input, same bytes."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        info = tarfile.TarInfo(f"{release}.btf")
        info.size, info.mode, info.mtime = len(btf), 0o644, 0
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        tar.addfile(info, io.BytesIO(btf))
    return lzma.compress(buf.getvalue(), format=lzma.FORMAT_XZ, preset=_XZ_PRESET)


def write_atomic(dest: Path, data: bytes) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _key_part(flag: str, value: str) -> str:
    if not keys.valid_key_part(value):
        raise UsageError(f"{flag} {value!r} cannot be an archive folder or file name (empty, "
                         "leading dot, or a / in it); pass a plain name")
    return value


def run(args: argparse.Namespace) -> int:
    source = read_source(args.source)
    live = str(args.source) == hostinfo.NATIVE_BTF
    host = hostinfo.gather(root=args.host_root)

    release = args.release or source.release or (host.release if live else None)
    if not release:
        raise UsageError(f"--release is needed: {args.source} ({source.kind}) does not say which "
                         "kernel it belongs to; pass that kernel's `uname -r`")
    if args.arch:
        arch = keys.btfhub_arch(args.arch)
        if arch is None:
            raise UsageError(f"--arch {args.arch!r}: btfhub has x86_64 and arm64 only")
        if source.arch and source.arch != arch:
            raise UsageError(f"--arch {arch} but {args.source} is an {source.arch} ELF; drop "
                             "--arch or pass the right file")
    else:
        arch = source.arch or host.arch
        if arch is None:
            raise UsageError(f"this machine ({host.machine}) is not an arch btfhub has; pass "
                             "--arch x86_64 or --arch arm64")
    os_id = args.id or host.os.id
    version = args.version or keys.archive_version(host.os.id, host.os.version_id)
    if not os_id or not version:
        where = host.os_release_path or f"no os-release under {host.root}"
        raise UsageError(f"--id and --version are needed: this host's os-release ({where}) "
                         "has no ID or VERSION_ID")
    key = keys.format_key(_key_part("--id", keys.ascii_lower(os_id)),
                          _key_part("--version", version), arch, _key_part("--release", release))

    dest = args.archive / keys.parse_key(key)[0] / version / arch / f"{release}{SUFFIX}"
    if dest.exists():
        try:
            same = read_kernel_btf(dest) == source.btf
        except InputError:
            same = False
        if same:
            print(f"{key}: already in {dest} with the same BTF; nothing to do")
            return 0
        if not args.force:
            raise InputError(f"{dest} exists and holds different BTF; pass --force to replace "
                             "it, or another --id/--version/--release")
    write_atomic(dest, tar_xz(release, source.btf))
    read_kernel_btf(dest)  # what generate will read must read back
    print(f"{key}: added {len(source.btf)} bytes of BTF ({source.kind} {args.source}) as {dest}")
    print("run gobtfgen generate to embed it")
    return 0
