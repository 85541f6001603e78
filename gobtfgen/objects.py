"""BPF objects: discovery (bpf2go naming), ELF reading, and the CO-RE signature.

The signature is what makes the cache survive code edits: it hashes the CO-RE relocations (kind,
access string, in order) and the local types they name, canonicalized so that local type ids
renumbered by an unrelated edit do not change it. Instruction offsets and program code are
deliberately left out: the minimized BTF depends only on what the relocations ask for.
"""

from __future__ import annotations

import hashlib
import re
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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

_FIX_OBJECT = ("pass a BPF object built by clang -target bpf with -g (bpf2go's *_bpfel.o)")


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

_REF_KINDS = {2, 8, 9, 10, 11, 12, 14, 17, 18}  # kinds whose size_or_type is a type id


class _LocalBTF:
    """Just enough of a BTF reader for small object BTFs: records by id, names, references."""

    def __init__(self, blob: bytes, *, little: bool, what: Path) -> None:
        self.e = "<" if little else ">"
        try:
            (magic, _v, _f, hdr_len, type_off, type_len, str_off,
             str_len) = struct.unpack_from(self.e + "HBBIIIII", blob)
        except struct.error:
            raise InputError(f"{what}: .BTF is truncated; {_FIX_OBJECT}") from None
        if magic != 0xEB9F:
            raise InputError(f"{what}: .BTF has a bad magic; {_FIX_OBJECT}")
        self.types = blob[hdr_len + type_off: hdr_len + type_off + type_len]
        self.strings = blob[hdr_len + str_off: hdr_len + str_off + str_len]
        self.offsets = [0]  # id 0 is void
        pos = 0
        while pos + 12 <= len(self.types):
            self.offsets.append(pos)
            _name, info, _st = struct.unpack_from(self.e + "III", self.types, pos)
            pos += 12 + self._extra(info)
        self.what = what

    @staticmethod
    def _extra(info: int) -> int:
        kind, vlen = (info >> 24) & 0x1F, info & 0xFFFF
        return {1: 4, 3: 12, 4: 12 * vlen, 5: 12 * vlen, 6: 8 * vlen, 13: 8 * vlen, 14: 4,
                15: 12 * vlen, 17: 4, 19: 12 * vlen}.get(kind, 0)

    def name(self, off: int) -> str:
        end = self.strings.find(b"\0", off)
        return self.strings[off:end if end >= 0 else None].decode("utf-8", "replace")

    def record(self, type_id: int) -> tuple[int, int, int, list[int]]:
        """(name_off, info, size_or_type, trailing u32 words) of a type."""
        if type_id <= 0 or type_id >= len(self.offsets):
            raise InputError(f"{self.what}: .BTF.ext refers to type {type_id}, past .BTF; "
                             f"{_FIX_OBJECT}")
        pos = self.offsets[type_id]
        name, info, st = struct.unpack_from(self.e + "III", self.types, pos)
        n = self._extra(info) // 4
        words = list(struct.unpack_from(self.e + f"{n}I", self.types, pos + 12))
        return name, info, st, words


def _canonical(btf: _LocalBTF, roots: Iterable[int]) -> tuple[dict[int, int], list[str]]:
    """Number the types reachable from roots in visit order; describe each by names and
    canonical numbers only, so the description is independent of local type ids."""
    numbering: dict[int, int] = {0: 0}
    lines: list[str] = []
    stack = [r for r in roots][::-1]
    while stack:
        tid = stack.pop()
        if tid in numbering:
            continue
        numbering[tid] = len(numbering)
        name_off, info, st, words = btf.record(tid)
        kind, vlen = (info >> 24) & 0x1F, info & 0xFFFF
        refs: list[int] = []
        desc: list[object] = [kind, btf.name(name_off), info & 0x8000FFFF]
        if kind in _REF_KINDS:
            refs.append(st)
        else:
            desc.append(st)
        if kind == 3:  # array: elem, index, nelems
            refs += words[:2]
            desc.append(words[2])
        elif kind in (4, 5):  # members: name, type, offset
            for i in range(vlen):
                desc += [btf.name(words[3 * i]), words[3 * i + 2]]
                refs.append(words[3 * i + 1])
        elif kind == 6:
            desc += [(btf.name(words[2 * i]), words[2 * i + 1]) for i in range(vlen)]
        elif kind == 19:
            desc += [(btf.name(words[3 * i]), words[3 * i + 1], words[3 * i + 2])
                     for i in range(vlen)]
        elif kind == 15:  # datasec: (var type, offset, size)
            for i in range(vlen):
                refs.append(words[3 * i])
                desc += words[3 * i + 1: 3 * i + 3]
        elif kind == 13:
            for i in range(vlen):
                desc.append(btf.name(words[2 * i]))
                refs.append(words[2 * i + 1])
        else:
            desc += words
        desc.append(refs)  # resolved to canonical numbers below
        lines.append(repr(desc))
        stack.extend(r for r in reversed(refs) if r not in numbering)
    # Second pass: replace the reference lists by canonical numbers.
    out = []
    for line in lines:
        head, _, refs_repr = line.rpartition(", [")
        ids = [int(x) for x in refs_repr.rstrip("]").split(", ") if x]
        out.append(head + ", " + repr([numbering.get(i, -1) for i in ids]) + "]")
    return numbering, out


def core_signature(btf_blob: bytes, ext: bytes, *, little: bool, what: Path) -> tuple[int, str]:
    """(number of CO-RE relocations, sha256 of their canonical content)."""
    e = "<" if little else ">"
    try:
        magic, _v, _f, hdr_len = struct.unpack_from(e + "HBBI", ext)
    except struct.error:
        raise InputError(f"{what}: .BTF.ext is truncated; {_FIX_OBJECT}") from None
    if magic != 0xEB9F:
        raise InputError(f"{what}: .BTF.ext has a bad magic; {_FIX_OBJECT}")
    if hdr_len < 32:
        return 0, ""  # no core_relo section: an object without CO-RE relocations
    core_off, core_len = struct.unpack_from(e + "II", ext, 24)
    sub = ext[hdr_len + core_off: hdr_len + core_off + core_len]
    if core_len == 0 or len(sub) < 4:
        return 0, ""
    btf = _LocalBTF(btf_blob, little=little, what=what)
    (rec_size,) = struct.unpack_from(e + "I", sub)
    if rec_size < 16:
        raise InputError(f"{what}: .BTF.ext CO-RE record size {rec_size} < 16; {_FIX_OBJECT}")
    relos: list[tuple[int, int, str]] = []  # (type id, kind, access string)
    pos = 4
    while pos + 8 <= len(sub):
        _sec, count = struct.unpack_from(e + "II", sub, pos)
        pos += 8
        for _ in range(count):
            if pos + rec_size > len(sub):
                raise InputError(f"{what}: .BTF.ext CO-RE records run past the section; "
                                 f"{_FIX_OBJECT}")
            _insn, type_id, access_off, kind = struct.unpack_from(e + "IIII", sub, pos)
            relos.append((type_id, kind, btf.name(access_off)))
            pos += rec_size
    numbering, types = _canonical(btf, (t for t, _, _ in relos))
    h = hashlib.sha256()
    h.update(b"gobtfgen-core-signature-1\0" + (b"el" if little else b"eb"))
    for type_id, kind, access in relos:
        h.update(f"{kind}:{numbering[type_id]}:{access}\n".encode())
    h.update(b"\0types\0")
    for line in types:
        h.update(line.encode() + b"\n")
    return len(relos), h.hexdigest()


def signature_of(objects: Sequence[BpfObject]) -> str:
    """One signature for a set of objects: order-independent (the minimizer unions them)."""
    h = hashlib.sha256(b"gobtfgen-objects-1\0")
    for sig in sorted(o.signature for o in objects):
        h.update(sig.encode() + b"\n")
    return h.hexdigest()
