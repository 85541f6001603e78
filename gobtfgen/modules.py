"""Where kernel modules' split BTF comes from, for `gobtfgen archive add --modules`.

Three places: a running kernel's /sys/kernel/btf/<module> (the loaded modules, split against
/sys/kernel/btf/vmlinux); a kernel .deb (lib/modules/<release>/**/*.ko, read from the package
without unpacking it to disk); a directory of modules (`*.ko`, or `*.ko.xz`, `*.ko.zst`,
`*.ko.gz` as some distros ship them; Debian 12's are plain `.ko`). A module file is a
relocatable ELF whose `.BTF` section is its split BTF; its `.modinfo` vermagic names the
kernel release it was built for, which is checked against the kernel being added.
"""

from __future__ import annotations

import gzip
import io
import lzma
import re
import struct
import tarfile
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile

from gobtfgen import kernelimage
from gobtfgen.errors import InputError

_KO = re.compile(r"(?:.*/)?([^/]+)\.ko(?:\.(xz|zst|gz))?")
_VERMAGIC = re.compile(rb"(?:^|\0)vermagic=([\x21-\x7e]+)")


@dataclass(frozen=True)
class ModuleBTF:
    name: str  # the kernel's module name (KBUILD_MODNAME: `-` in a file name read as `_`)
    btf: bytes
    where: str  # the file or /sys path, for messages


def module_name(filename: str) -> str | None:
    """The module name of a module file name (nf_conntrack.ko.xz -> nf_conntrack), else None."""
    m = _KO.fullmatch(filename)
    return m.group(1).replace("-", "_") if m else None


def _inflate(data: bytes, where: str) -> bytes:
    try:
        if data[:6] == b"\xfd7zXZ\0":
            return lzma.decompress(data)
        if data[:4] == b"\x28\xb5\x2f\xfd":
            zstd = kernelimage._zstandard()
            return bytes(zstd.ZstdDecompressor().stream_reader(io.BytesIO(data)).read())
        if data[:2] == b"\x1f\x8b":
            return gzip.decompress(data)
    except (lzma.LZMAError, zlib.error, OSError, EOFError) as exc:
        raise InputError(f"{where}: damaged compressed module ({exc}); reinstall the "
                         "kernel's modules") from None
    except kernelimage._MissingModule as exc:
        raise InputError(f"{where}: cannot read: {exc}") from None
    return data


def ko_btf(data: bytes, where: str, release: str | None) -> bytes | None:
    """A module file's split BTF (None when it has no .BTF); InputError when the module is not
    an ELF or was built for another release than `release`."""
    data = _inflate(data, where)
    try:
        elf = ELFFile(io.BytesIO(data))
        sec = elf.get_section_by_name(".BTF")
        distilled = elf.get_section_by_name(".BTF.base") is not None
        modinfo = elf.get_section_by_name(".modinfo")
        btf = bytes(sec.data()) if sec is not None else None
        info = bytes(modinfo.data()) if modinfo is not None else b""
    except (ELFError, ValueError, struct.error) as exc:
        raise InputError(f"{where}: not a kernel module ELF ({exc}); pass .ko files") from None
    if distilled:
        # pahole's distilled base (out-of-tree modules, 6.11+): the split BTF is against a
        # minimal base of its own, to be relocated onto vmlinux's (libbpf's btf__relocate).
        raise InputError(f"{where}: its BTF is split against a distilled base (.BTF.base), "
                         "which gobtfgen does not relocate yet; rebuild the module against the "
                         "kernel's vmlinux BTF (without --btf_features=distilled_base)")
    vermagic = _VERMAGIC.search(info)
    if release and vermagic and vermagic.group(1).decode() != release:
        raise InputError(f"{where}: built for kernel {vermagic.group(1).decode()}, not "
                         f"{release}; pass the modules of {release}")
    return btf


def _select(found: dict[str, tuple[str, bytes]], wanted: list[str] | None,
            where: str, missing_hint: str) -> list[tuple[str, str, bytes]]:
    if wanted is None:
        return [(n, w, d) for n, (w, d) in sorted(found.items())]
    missing = [n for n in wanted if n not in found]
    if missing:
        raise InputError(f"{where}: no module {', '.join(missing)}; {missing_hint}")
    return [(n, *found[n]) for n in wanted]


def from_sysfs(btf_dir: Path, wanted: list[str] | None) -> list[ModuleBTF]:
    """Loaded modules' BTF from a running kernel's /sys/kernel/btf."""
    try:
        names = sorted(p.name for p in btf_dir.iterdir() if p.name != "vmlinux")
    except OSError as exc:
        raise InputError(f"{btf_dir}: cannot list ({exc.strerror}); this kernel has no BTF "
                         "(CONFIG_DEBUG_INFO_BTF); pass --modules-from DIR") from None
    if wanted is not None:
        missing = [n for n in wanted if n not in names]
        if missing:
            raise InputError(f"{btf_dir}: module {', '.join(missing)} not loaded (or built "
                             "without BTF: CONFIG_DEBUG_INFO_BTF_MODULES); load it with "
                             f"modprobe {missing[0]}, or pass --modules-from with its .ko files")
        names = wanted
    out = []
    for n in names:
        p = btf_dir / n
        try:
            out.append(ModuleBTF(name=n, btf=p.read_bytes(), where=str(p)))
        except OSError as exc:
            raise InputError(f"{p}: cannot read ({exc.strerror}); run as root") from None
    return out


def from_dir(root: Path, wanted: list[str] | None, release: str | None) -> list[ModuleBTF]:
    """Modules under a directory, recursively (a lib/modules/<release> or a build tree)."""
    files: dict[str, tuple[str, bytes]] = {}
    for p in sorted(root.rglob("*.ko*")):
        n = module_name(p.name)
        if n is None or not p.is_file() or (wanted is not None and n not in wanted):
            continue
        files.setdefault(n, (str(p), p.read_bytes()))
    return _btf_of(_select(files, wanted, str(root), "check the module names (modinfo -n NAME)"),
                   wanted, release)


def from_deb(path: Path, wanted: list[str] | None, release: str | None) -> list[ModuleBTF]:
    """Modules of a kernel .deb (lib/modules/<release>/...), streamed out of its data.tar."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror}); check the path") from None
    members = kernelimage._ar_members(data, path)
    data_name = next((n for n in members if n.startswith("data.tar")), None)
    if data_name is None:
        raise InputError(f"{path}: not a Debian package (no data.tar.*); pass a kernel .deb")
    files: dict[str, tuple[str, bytes]] = {}
    try:
        with kernelimage._open_tar(members[data_name], data_name, path) as tar:
            for info in tar:
                n = module_name(info.name)
                if n is None or not info.isfile() or "lib/modules/" not in info.name:
                    continue
                if wanted is not None and n not in wanted:
                    continue
                f = tar.extractfile(info)
                assert f is not None
                files.setdefault(n, (f"{path}:{info.name.lstrip('./')}", f.read()))
    except (tarfile.TarError, lzma.LZMAError, zlib.error, OSError, EOFError) as exc:
        raise InputError(f"{path}: the package's {data_name} is damaged ({exc}); download the "
                         "package again") from None
    if not files and wanted is None:
        raise InputError(f"{path}: the package has no kernel modules (lib/modules/*/*.ko); "
                         "pass the linux-image package that holds them")
    return _btf_of(_select(files, wanted, str(path), "the package does not ship it (a "
                           "built-in part of vmlinux needs no module BTF)"), wanted, release)


def _btf_of(selected: Iterable[tuple[str, str, bytes]], wanted: list[str] | None,
            release: str | None) -> list[ModuleBTF]:
    out = []
    for name, where, data in selected:
        btf = ko_btf(data, where, release)
        if btf is None:
            if wanted is not None:
                raise InputError(f"{where}: the module has no .BTF section; build it with "
                                 "CONFIG_DEBUG_INFO_BTF_MODULES=y")
            continue  # listing every module: those without BTF have nothing to add
        kernelimage.check_btf(btf, Path(where))
        out.append(ModuleBTF(name=name, btf=btf, where=where))
    return out


def parse_names(text: str | None) -> list[str] | None:
    """--modules' value: None (all) or the listed names, `-` read as `_`, duplicates dropped."""
    if text is None:
        return None
    names = [n.strip().replace("-", "_") for n in text.split(",") if n.strip()]
    return list(dict.fromkeys(names))

