"""BPF objects: discovery (bpf2go naming), ELF reading, and the CO-RE signature.

The signature is what makes the cache survive code edits: it hashes the CO-RE relocations (kind,
access string, in order) and the local types they name, canonicalized so that local type ids
renumbered by an unrelated edit do not change it. Instruction offsets and program code are
deliberately left out: the minimized BTF depends only on what the relocations ask for.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gobtfgen import coresig
from gobtfgen.coresig import FIX_OBJECT as _FIX_OBJECT
from gobtfgen.elf import EM_BPF, SHF_EXECINSTR, SHT_PROGBITS, ELFFormatError
from gobtfgen.elf import parse as parse_elf
from gobtfgen.errors import InputError

# bpf2go's target names (the __TARGET_ARCH_ values) -> btfhub arch folders. Targets btfhub has
# no kernels for map to None: their objects are noted and skipped.
BPF2GO_ARCH = {
    "x86": "x86_64", "amd64": "x86_64", "arm64": "arm64",
    "arm": None, "loongarch": None, "mips": None, "powerpc": None, "ppc64": None,
    "ppc64le": None, "riscv": None, "riscv64": None, "s390": None, "s390x": None,
    "sparc": None,
}
LITTLE_ENDIAN_ARCHES = ("x86_64", "arm64")  # every btfhub arch is little-endian

# <stem>_<target>_bpfel.o (bpf2go >= v0.13), <stem>_bpfel.o (generic), <stem>_bpfel_<target>.o
# (bpf2go < v0.13).
_TARGETS = "|".join(sorted(BPF2GO_ARCH, key=len, reverse=True))
_NAME_RE = re.compile(rf"^(?P<stem>.+?)(?:_(?P<t1>{_TARGETS}))?_bpf(?P<end>el|eb)"
                      rf"(?:_(?P<t2>{_TARGETS}))?\.o$")
DISCOVERY_GLOBS = ("*_bpfel.o", "*_bpfeb.o", "*_bpfel_*.o", "*_bpfeb_*.o")

# Program sections whose attach target is looked up in the running kernel's own BTF: no
# KernelTypes can stand in for it (cilium/ebpf resolves attach targets from the kernel).
NEEDS_KERNEL_BTF = ("fentry/", "fexit/", "fmod_ret/", "tp_btf/", "lsm/", "lsm.s/", "iter/",
                    "iter.s/", "struct_ops", "fentry.s/", "fexit.s/", "freplace/")



@dataclass(frozen=True, kw_only=True)
class BpfObject:
    path: Path
    little_endian: bool
    target: str | None  # bpf2go target from the file name, None for generic objects
    arches: tuple[str, ...]  # btfhub arches this object applies to
    core_relocations: int
    signature: str  # sha256 hex of the CO-RE content; "" when there are no relocations
    kernel_btf_programs: tuple[str, ...]  # sections that need the running kernel's own BTF


def target_of(name: str) -> tuple[str | None, bool | None]:
    """(bpf2go target, little endian) from a file name; (None, None) when it is not bpf2go's."""
    match = _NAME_RE.match(name)
    if not match:
        return None, None
    return match["t1"] or match["t2"], match["end"] == "el"


def discover(directory: Path) -> list[Path]:
    found: set[Path] = set()
    for pattern in DISCOVERY_GLOBS:
        found.update(p for p in directory.glob(pattern) if p.is_file())
    return sorted(found)


def read_object_memo(path: Path, memo: Any) -> BpfObject:
    """read_object, remembered by the file's stat in a cache.StatMemo: an unchanged object is
    not parsed again on the next run."""
    stamp = memo.stamp(path)
    fields = memo.lookup(path, "object")
    if isinstance(fields, dict):
        try:
            return BpfObject(path=path, little_endian=bool(fields["little_endian"]),
                             target=fields["target"], arches=tuple(fields["arches"]),
                             core_relocations=int(fields["core_relocations"]),
                             signature=str(fields["signature"]),
                             kernel_btf_programs=tuple(fields["kernel_btf_programs"]))
        except (KeyError, TypeError, ValueError):
            pass
    obj = read_object(path)
    memo.record(path, stamp, {"little_endian": obj.little_endian, "target": obj.target,
                              "arches": list(obj.arches), "core_relocations": obj.core_relocations,
                              "signature": obj.signature,
                              "kernel_btf_programs": list(obj.kernel_btf_programs)}, "object")
    return obj


def read_object(path: Path) -> BpfObject:
    try:
        elf = parse_elf(path.read_bytes())
    except ELFFormatError as exc:
        raise InputError(f"{path}: not an ELF file ({exc}); {_FIX_OBJECT}") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror})") from None
    if elf.machine != EM_BPF:
        raise InputError(f"{path}: an ELF for {elf.machine_name}, not a BPF object; "
                         f"{_FIX_OBJECT}")
    little = elf.little_endian
    btf_sec = elf.section(".BTF")
    ext_sec = elf.section(".BTF.ext")
    btf = elf.section_data(btf_sec) if btf_sec is not None else None
    ext = elf.section_data(ext_sec) if ext_sec is not None else None
    programs = tuple(s.name for s in elf.sections
                     if s.type == SHT_PROGBITS and s.flags & SHF_EXECINSTR)
    if btf is None:
        raise InputError(f"{path}: has no .BTF section; rebuild it with clang -g "
                         "(bpf2go passes -g by default)")
    target, name_little = target_of(path.name)
    if target is not None:
        arch = BPF2GO_ARCH.get(target)
        arches: tuple[str, ...] = (arch,) if arch else ()
    else:
        arches = LITTLE_ENDIAN_ARCHES if little else ()
    if not little:
        arches = ()  # no btfhub kernel is big-endian: noted and skipped, never a failure
    relos, signature = (0, "")
    if ext is not None:
        relos, signature = core_signature(btf, ext, little=little, what=path)
    kbtf = tuple(sorted(p for p in programs if p.startswith(NEEDS_KERNEL_BTF)))
    return BpfObject(path=path, little_endian=little, target=target, arches=arches,
                     core_relocations=relos, signature=signature, kernel_btf_programs=kbtf)


# ---- CO-RE signature -------------------------------------------------------------------------


def core_signature(btf_blob: bytes, ext: bytes, *, little: bool, what: Path) -> tuple[int, str]:
    """(number of CO-RE relocations, sha256 of their canonical content): gobtfgen.coresig."""
    try:
        return coresig.core_signature(btf_blob, ext, little=little, what=what)
    except coresig.CoreSignatureError as exc:
        raise InputError(str(exc)) from None


def signature_of(objects: Sequence[BpfObject]) -> str:
    """One signature for a set of objects: order-independent (the minimizer unions them)."""
    h = hashlib.sha256(b"gobtfgen-objects-1\0")
    for sig in sorted(o.signature for o in objects):
        h.update(sig.encode() + b"\n")
    return h.hexdigest()
