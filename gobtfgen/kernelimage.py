"""Find a kernel's BTF in the files people have: raw BTF, a vmlinux ELF, a boot image (x86
bzImage, arm64 Image, compressed or not) or a distro kernel package (.deb), and what the file
tells about the kernel (arch, release, and for a distro package its distro and version).

Pure: bytes in, BTF out, no programs run. The decompressors are Python's (gzip, xz, lzma,
bzip2), the `lz4` package (Debian 12 compresses its cloud x86 kernels with LZ4) and `zstandard`
(its 6.12 kernels, Ubuntu's packages): both are dependencies, since Debian's own kernels need
them.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import re
import struct
import tarfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, Any

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile

from gobtfgen.errors import InputError

BTF_MAGIC_LE = b"\x9f\xeb"
BTF_MAGIC_BE = b"\xeb\x9f"
# e_machine of the ELF arches btfhub has.
_ARCH_OF_EM = {"EM_X86_64": "x86_64", "EM_AARCH64": "arm64"}
# The kernel's linux_banner: "Linux version 5.4.0-1029-aws (buildd@...) (gcc ...) #30-Ubuntu".
_BANNER = re.compile(rb"Linux version ([\x21-\x7e]{1,128}) \(")
# Debian architecture names of btfhub's arches.
_ARCH_OF_DEB = {"amd64": "x86_64", "arm64": "arm64"}
# The kernel image in a distro kernel package (Debian, Ubuntu: boot/vmlinuz-<release>; some
# arches ship an uncompressed boot/vmlinux-<release>).
_BOOT_IMAGE = re.compile(r"(?:\./)?boot/vmlinu[xz]-([\x21-\x7e]+)")
# Debian kernel series -> Debian version, for packages whose release does not say it (6.1's
# "6.1.0-56-cloud-amd64"); newer ones carry it: "6.12.117+deb12-cloud-amd64".
DEBIAN_SERIES = {"3.16": "8", "4.9": "9", "4.19": "10", "5.10": "11", "6.1": "12"}
DEBIAN_KERNEL_TEAM = "debian-kernel@lists.debian.org"
# Debian's legacy LZ4 stream (lz4 -l, what the kernel's build uses): this magic, then blocks of
# u32 compressed length + data, each inflating to at most 8 MiB.
_LZ4_LEGACY = b"\x02\x21\x4c\x18"
_LZ4_BLOCK = 8 << 20
# A wrapped file (a gzip'd Image, a vmlinux.xz) is unwrapped at most this often: a kernel image
# is never nested deeper, and a crafted file must not recurse forever.
_MAX_DEPTH = 3


@dataclass(frozen=True, kw_only=True)
class Source:
    btf: bytes
    kind: str  # what the file was: "raw BTF", "vmlinux ELF", "x86 bzImage (LZ4)", ...
    arch: str | None  # btfhub's name, when the file says
    release: str | None  # uname -r, when the file says
    os_id: str | None = None  # the distro, from a distro package
    os_version: str | None = None  # its archive version folder
    package: str | None = None  # the distro package's name, when the file is one


def check_btf(data: bytes, what: Path) -> None:
    if len(data) < 24 or data[:2] not in (BTF_MAGIC_LE, BTF_MAGIC_BE):
        raise InputError(f"{what}: the .BTF data is not BTF (bad magic); regenerate it with "
                         "pahole -J")
    order = "<" if data[:2] == BTF_MAGIC_LE else ">"
    _v, _f, hdr_len, type_off, type_len, str_off, str_len = struct.unpack_from(
        order + "BBIIIII", data, 2)
    end = max(type_off + type_len, str_off + str_len)
    if hdr_len < 24 or hdr_len + end > len(data):
        raise InputError(f"{what}: truncated BTF (sections end past the data); regenerate it")


def read(data: bytes, path: Path) -> Source:
    """The BTF in data (the bytes of the file at path, named in errors) and what it tells."""
    return _read(data, path, 0)


def _read(data: bytes, path: Path, depth: int) -> Source:
    if data[:2] in (BTF_MAGIC_LE, BTF_MAGIC_BE):
        check_btf(data, path)
        return Source(btf=data, kind="raw BTF", arch=None, release=None)
    if data[:4] == b"\x7fELF":
        return _from_elf(data, path, "vmlinux ELF")
    if data[:8] == b"!<arch>\n":
        return _from_deb(data, path, depth)
    if len(data) >= 0x206 and data[0x202:0x206] == b"HdrS":
        return _from_bzimage(data, path)
    if len(data) >= 0x40 and data[0x38:0x3C] == b"ARM\x64":
        return _from_arm64_image(data, path)
    wrapper = _compression(data)
    if wrapper is not None and depth < _MAX_DEPTH:
        name, _ = wrapper
        inner = _inflate(data, path, f"{name}-compressed file")
        found = _read(inner, path, depth + 1)
        return replace(found, kind=f"{name}'d {found.kind}")
    raise InputError(f"{path}: not a kernel image, kernel .deb, vmlinux ELF or raw BTF (it starts "
                     f"with {data[:8].hex(' ')}); pass one of those")


def _from_elf(data: bytes, path: Path, kind: str) -> Source:
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
        raise InputError(f"{path}: the {kind} has no .BTF section; build the kernel with "
                         "CONFIG_DEBUG_INFO_BTF=y or add BTF with pahole -J")
    check_btf(btf, path)
    banner = next((m for m in map(_BANNER.search, rodata) if m), None)
    return Source(btf=btf, kind=kind, arch=_ARCH_OF_EM.get(machine),
                  release=banner.group(1).decode() if banner else None)


# --- compressed payloads -------------------------------------------------------------------

class _MissingModule(Exception):
    """A decompressor's Python package is not importable (the caller names the file)."""


def _lz4_block() -> Any:
    # lz4 and zstandard are dependencies; imported here so that an install without them still
    # runs every command but these, and says what to install.
    try:
        import lz4.block
    except ImportError:
        raise _MissingModule("it is LZ4-compressed and the lz4 Python package is missing; "
                             "pip install lz4") from None
    return lz4.block


def _zstandard() -> Any:
    try:
        import zstandard
    except ImportError:
        raise _MissingModule("it is zstd-compressed and the zstandard Python package is "
                             "missing; pip install zstandard") from None
    return zstandard


def _compression(data: bytes) -> tuple[str, Callable[[bytes], tuple[bytes, bool]]] | None:
    """The format of a compressed stream at the start of data, and its inflater (which returns
    the output and whether the stream ended; bytes after the end, like the size the kernel's
    build appends, are ignored)."""
    for magic, name, inflate in _FORMATS:
        if data.startswith(magic):
            return name, inflate
    return None


def _stdlib(make: Callable[[], Any]) -> Callable[[bytes], tuple[bytes, bool]]:
    def inflate(data: bytes) -> tuple[bytes, bool]:
        d = make()
        out: bytes = d.decompress(data)
        return out, bool(d.eof)
    return inflate


def _lz4_legacy(data: bytes) -> tuple[bytes, bool]:
    block = _lz4_block()
    blocks: list[bytes] = []
    view = memoryview(data)
    pos = 4
    while len(data) - pos >= 4:
        (size,) = struct.unpack_from("<I", data, pos)
        if size == int.from_bytes(_LZ4_LEGACY, "little"):  # concatenated streams
            pos += 4
            continue
        if pos + 4 + size > len(data) or size > _LZ4_BLOCK + _LZ4_BLOCK // 255 + 16:
            # After the last block the kernel's build appends the inflated size (4 bytes);
            # anything else that does not fit is a cut file.
            out = b"".join(blocks)
            return out, len(data) - pos == 4 and size == len(out) > 0
        try:
            blocks.append(block.decompress(view[pos + 4:pos + 4 + size],
                                           uncompressed_size=_LZ4_BLOCK))
        except block.LZ4BlockError:
            return b"".join(blocks), False
        pos += 4 + size
    return b"".join(blocks), bool(blocks) and pos == len(data)


def _zstd(data: bytes) -> tuple[bytes, bool]:
    zstandard = _zstandard()
    d = zstandard.ZstdDecompressor().decompressobj()
    try:
        out: bytes = d.decompress(data)
    except zstandard.ZstdError:
        return b"", False
    return out, bool(d.eof)


_FORMATS: list[tuple[bytes, str, Callable[[bytes], tuple[bytes, bool]]]] = [
    (b"\x1f\x8b", "gzip", _stdlib(lambda: zlib.decompressobj(wbits=31))),
    (b"\xfd7zXZ\x00", "xz", _stdlib(lambda: lzma.LZMADecompressor(format=lzma.FORMAT_XZ))),
    (b"\x5d\x00\x00", "lzma", _stdlib(lambda: lzma.LZMADecompressor(format=lzma.FORMAT_ALONE))),
    (b"BZh", "bzip2", _stdlib(bz2.BZ2Decompressor)),
    (_LZ4_LEGACY, "LZ4", _lz4_legacy),
    (b"\x28\xb5\x2f\xfd", "zstd", _zstd),
]


def _inflate(data: bytes, path: Path, what: str) -> bytes:
    found = _compression(data)
    if found is None:
        raise InputError(f"{path}: the {what} is compressed in a format gobtfgen does not read "
                         f"(starts with {data[:6].hex(' ')}); extract the vmlinux with the "
                         "kernel's scripts/extract-vmlinux and pass that")
    name, inflate = found
    try:
        out, ended = inflate(data)
    except _MissingModule as exc:
        raise InputError(f"{path}: cannot read the {what}: {exc}") from None
    except (zlib.error, lzma.LZMAError, OSError, EOFError, ValueError) as exc:
        raise InputError(f"{path}: the {what} does not inflate as {name} ({exc}); the file is "
                         "damaged, download it again") from None
    if not ended:
        raise InputError(f"{path}: the {what} ends inside its {name} stream; the file is "
                         "truncated, download it again")
    return out


# --- boot images ---------------------------------------------------------------------------

def _from_bzimage(data: bytes, path: Path) -> Source:
    """x86 bzImage: the setup header (Documentation/arch/x86/boot.rst) gives the compressed
    payload, which is the vmlinux ELF (stripped of debug info, .BTF kept: it is loaded)."""
    (version,) = struct.unpack_from("<H", data, 0x206)
    if version < 0x208:
        raise InputError(f"{path}: x86 boot protocol {version >> 8}.{version & 0xff} (before "
                         "2.08) does not locate its payload; extract the vmlinux with the "
                         "kernel's scripts/extract-vmlinux and pass that")
    setup_sects = data[0x1F1] or 4  # 0 means 4, for old boot loaders
    offset, length = struct.unpack_from("<II", data, 0x248)
    start = (setup_sects + 1) * 512 + offset
    if start + length > len(data):
        raise InputError(f"{path}: the bzImage's payload ends past the file ({start + length} > "
                         f"{len(data)} bytes); the file is truncated, download it again")
    payload = data[start:start + length]
    found = _compression(payload)
    name = found[0] if found else "unknown"
    vmlinux = _inflate(payload, path, "bzImage payload")
    del payload
    if vmlinux[:4] != b"\x7fELF":
        raise InputError(f"{path}: the bzImage's payload is not an ELF vmlinux; extract it with "
                         "the kernel's scripts/extract-vmlinux and pass that")
    return _from_elf(vmlinux, path, f"x86 bzImage ({name})")


def find_btf_blob(data: bytes) -> bytes | None:
    """The largest well-formed BTF blob inside data, found by its header: little-endian magic,
    version 1, flags 0, 24-byte header, types first, strings right after them, starting with
    NUL and ending with one, all inside data. (arm64 Images carry .BTF with no ELF around it.)"""
    best: tuple[int, int] | None = None
    pos = data.find(b"\x9f\xeb\x01\x00")
    while pos >= 0:
        if pos + 24 <= len(data):
            hdr_len, type_off, type_len, str_off, str_len = struct.unpack_from(
                "<IIIII", data, pos + 4)
            end = pos + 24 + str_off + str_len
            if (hdr_len == 24 and type_off == 0 and str_off == type_len and str_len > 0
                    and end <= len(data) and data[pos + 24 + str_off] == 0
                    and data[end - 1] == 0 and (best is None or end - pos > best[1] - best[0])):
                best = (pos, end)
        pos = data.find(b"\x9f\xeb\x01\x00", pos + 1)
    return data[best[0]:best[1]] if best else None


def _pe_end(data: bytes) -> int | None:
    """Where an EFI-stub kernel's PE file ends (its last section's raw data or the signature
    appended by Secure Boot signing), or None when data has no PE header to tell. (The arm64
    header's image_size counts the BSS too, so it cannot tell a cut file.)"""
    if data[:2] != b"MZ" or len(data) < 0x40:
        return None
    (pe,) = struct.unpack_from("<I", data, 0x3C)
    if pe + 24 > len(data) or data[pe:pe + 4] != b"PE\0\0":
        return None
    nsections, _, _, _, opt_size = struct.unpack_from("<HIIIH", data, pe + 6)
    table = pe + 24 + opt_size
    if table + 40 * nsections > len(data) or opt_size < 2:
        return None
    end = max((sum(struct.unpack_from("<II", data, table + 40 * i + 16))
               for i in range(nsections)), default=0)
    # Data directory 4 (the certificate table) holds a file offset, not an address.
    (magic,) = struct.unpack_from("<H", data, pe + 24)
    certs = pe + 24 + (112 if magic == 0x20B else 96) + 8 * 4
    if certs + 8 <= table:
        end = max(end, sum(struct.unpack_from("<II", data, certs)))
    return end


def _from_arm64_image(data: bytes, path: Path) -> Source:
    end = _pe_end(data)
    if end is not None and len(data) < end:
        raise InputError(f"{path}: the arm64 Image is {len(data)} bytes, its PE header says "
                         f"{end}; the file is truncated, download it again")
    btf = find_btf_blob(data)
    if btf is None:
        raise InputError(f"{path}: the arm64 Image holds no BTF; build the kernel with "
                         "CONFIG_DEBUG_INFO_BTF=y")
    banner = _BANNER.search(data)
    return Source(btf=btf, kind="arm64 Image", arch="arm64",
                  release=banner.group(1).decode() if banner else None)


# --- Debian packages -----------------------------------------------------------------------

class _ViewReader(io.RawIOBase):
    """A file over part of a bytes object, so an ar member is read without copying it."""

    def __init__(self, view: memoryview) -> None:
        self._view, self._pos = view, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = min(len(buffer), len(self._view) - self._pos)
        buffer[:n] = self._view[self._pos:self._pos + n]
        self._pos += n
        return n


def _ar_members(data: bytes, path: Path) -> dict[str, memoryview]:
    """The members of an ar archive (a .deb), by name, as views into data."""
    view = memoryview(data)
    members = {}
    pos = 8
    while pos + 60 <= len(data):
        header = data[pos:pos + 60]
        if header[58:60] != b"`\n":
            raise InputError(f"{path}: damaged ar archive (bad member header at byte {pos}); "
                             "download the package again")
        name = header[:16].decode("ascii", "replace").strip().rstrip("/")
        try:
            size = int(header[48:58])
        except ValueError:
            raise InputError(f"{path}: damaged ar archive (bad member size at byte {pos}); "
                             "download the package again") from None
        if pos + 60 + size > len(data):
            raise InputError(f"{path}: the package's {name} ends past the file; the file is "
                             "truncated, download it again")
        members[name] = view[pos + 60:pos + 60 + size]
        pos += 60 + size + (size & 1)  # members are 2-byte aligned
    return members


def _open_tar(member: memoryview, name: str, path: Path) -> tarfile.TarFile:
    """A streaming reader of a .deb's (compressed) tar member."""
    raw = io.BufferedReader(_ViewReader(member), 1 << 20)
    stream: io.BufferedIOBase | IO[bytes]
    if name.endswith(".tar"):
        stream = raw
    # The streams live as long as the TarFile the caller closes; they hold memory only.
    elif name.endswith(".xz"):  # Debian's packages
        stream = lzma.LZMAFile(raw)  # noqa: SIM115
    elif name.endswith(".gz"):
        stream = gzip.GzipFile(fileobj=raw)  # noqa: SIM115
    elif name.endswith(".bz2"):
        stream = bz2.BZ2File(raw)  # noqa: SIM115
    elif name.endswith(".zst"):  # Ubuntu's packages
        try:
            stream = _zstandard().ZstdDecompressor().stream_reader(raw)
        except _MissingModule as exc:
            raise InputError(f"{path}: cannot read the package's {name}: {exc}") from None
    else:
        raise InputError(f"{path}: the package's {name} is in a format gobtfgen does not read; "
                         "extract boot/vmlinuz-* with dpkg-deb -x and pass that")
    return tarfile.open(fileobj=stream, mode="r|")


def _tar_member(member: memoryview, name: str, path: Path,
                want: Callable[[str], bool]) -> tuple[str, bytes] | None:
    """The first regular file of a (compressed) tar member that want() accepts, streaming the
    tar so a package's other hundreds of MB are not inflated past it."""
    try:
        with _open_tar(member, name, path) as tar:
            for info in tar:
                if info.isfile() and want(info.name):
                    f = tar.extractfile(info)
                    assert f is not None
                    return info.name, f.read()
    except (tarfile.TarError, lzma.LZMAError, zlib.error, OSError, EOFError) as exc:
        raise InputError(f"{path}: the package's {name} is damaged ({exc}); download the "
                         "package again") from None
    return None


def _control_fields(text: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if line[:1] not in (" ", "\t", "") and ":" in line:
            key, _, value = line.partition(":")
            fields[key.strip()] = value.strip()
    return fields


def debian_version(fields: dict[str, str], release: str) -> str | None:
    """The Debian version a Debian kernel team package is built for, or None when the package
    is not one. Rule, first that applies: the package version's ~debNNuM / +debNNuM / ~bpoNN
    (security and point-release updates, backports), the release's +debNN (6.12 and later:
    6.12.117+deb12-cloud-amd64), the kernel series Debian ships in one release only (6.1 -> 12,
    5.10 -> 11, 4.19 -> 10, 4.9 -> 9, 3.16 -> 8)."""
    if DEBIAN_KERNEL_TEAM not in fields.get("Maintainer", ""):
        return None
    if m := re.search(r"[~+](?:deb(\d+)u|bpo(\d+))", fields.get("Version", "")):
        return m.group(1) or m.group(2)
    if m := re.search(r"\+deb(\d+)", release):
        return m.group(1)
    series = re.match(r"(\d+\.\d+)\.", release)
    return DEBIAN_SERIES.get(series.group(1)) if series else None


def _from_deb(data: bytes, path: Path, depth: int) -> Source:
    members = _ar_members(data, path)
    control_name = next((n for n in members if n.startswith("control.tar")), None)
    data_name = next((n for n in members if n.startswith("data.tar")), None)
    if "debian-binary" not in members or control_name is None or data_name is None:
        raise InputError(f"{path}: an ar archive but not a Debian package (no debian-binary, "
                         "control.tar.* and data.tar.*); pass a kernel .deb")
    control = _tar_member(members[control_name], control_name, path,
                          lambda n: n.lstrip("./") == "control")
    fields = _control_fields(control[1].decode("utf-8", "replace")) if control else {}
    package = fields.get("Package", "?")
    image = _tar_member(members[data_name], data_name, path,
                        lambda n: _BOOT_IMAGE.fullmatch(n) is not None)
    if image is None:
        raise InputError(f"{path}: the package {package} has no boot/vmlinuz-* (no kernel "
                         "image); pass the linux-image-<release> package itself")
    image_name, image_data = image
    match = _BOOT_IMAGE.fullmatch(image_name)
    assert match is not None
    release = match.group(1)
    found = _read(image_data, path / image_name.lstrip("./"), depth + 1)
    arch = _ARCH_OF_DEB.get(fields.get("Architecture", ""))
    if arch is None:
        raise InputError(f"{path}: the package is for architecture "
                         f"{fields.get('Architecture', '(none)')}; btfhub has amd64 (x86_64) "
                         "and arm64 only")
    if found.arch and found.arch != arch:
        raise InputError(f"{path}: an {fields['Architecture']} package holding an {found.arch} "
                         "kernel; the package is broken")
    version = debian_version(fields, release)
    return Source(btf=found.btf, kind=f"Debian package {package}, {found.kind}", arch=arch,
                  release=release, os_id="debian" if version else None, os_version=version,
                  package=package)
