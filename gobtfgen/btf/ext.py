""".BTF.ext of a BPF object: its CO-RE relocation records, and the object's parsed BTF.

Only the CO-RE subsection matters to the minimizer; func_info and line_info are skipped by
their lengths. Records are read with the subsection's own record size, since newer compilers
may append fields.
"""

from __future__ import annotations

import os
import struct
from _thread import allocate_lock  # threading.Lock without threading (1-3 ms to import)

from gobtfgen.btf import BTF, BTFError, essential_name
from gobtfgen.record import Record

# `gobtfgen minimize` imports this module in every process: pathlib (with re and enum) and
# collections.abc cost it 5-10 ms. typing.TYPE_CHECKING without importing typing (mypy reads
# this name).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence
    from os import PathLike

EXT_MAGIC = 0xEB9F

# enum bpf_core_relo_kind
FIELD_BYTE_OFFSET = 0
FIELD_BYTE_SIZE = 1
FIELD_EXISTS = 2
FIELD_SIGNED = 3
FIELD_LSHIFT_U64 = 4
FIELD_RSHIFT_U64 = 5
TYPE_ID_LOCAL = 6
TYPE_ID_TARGET = 7
TYPE_EXISTS = 8
TYPE_SIZE = 9
ENUMVAL_EXISTS = 10
ENUMVAL_VALUE = 11
TYPE_MATCHES = 12

RELO_KIND_NAMES = {
    FIELD_BYTE_OFFSET: "byte_off", FIELD_BYTE_SIZE: "byte_sz", FIELD_EXISTS: "field_exists",
    FIELD_SIGNED: "signed", FIELD_LSHIFT_U64: "lshift_u64", FIELD_RSHIFT_U64: "rshift_u64",
    TYPE_ID_LOCAL: "local_type_id", TYPE_ID_TARGET: "target_type_id",
    TYPE_EXISTS: "type_exists", TYPE_SIZE: "type_size", ENUMVAL_EXISTS: "enumval_exists",
    ENUMVAL_VALUE: "enumval_value", TYPE_MATCHES: "type_matches",
}


class CoreRelo(Record):
    __slots__ = ("section", "index", "insn_off", "type_id", "access", "kind")

    def __init__(self, *, section: str, index: int, insn_off: int, type_id: int, access: str,
                 kind: int) -> None:
        self.section = section  # ELF section of the program ("tracepoint/sched/...")
        self.index = index  # index of the record within its section (libbpf's relo_idx)
        self.insn_off = insn_off  # byte offset of the instruction within the section
        self.type_id = type_id  # local root type id in the object's BTF
        self.access = access  # access string ("0:1:2")
        self.kind = kind


class ObjectError(ValueError):
    """The object cannot be used (no .BTF, no .BTF.ext, malformed records)."""


def parse_core_relos(btf_ext: bytes, btf: BTF) -> list[CoreRelo]:
    """The CO-RE relocations of a .BTF.ext section, in file order."""
    if len(btf_ext) < 8:
        raise ObjectError(".BTF.ext is shorter than its header")
    magic = struct.unpack_from("<H", btf_ext, 0)[0]
    if magic == EXT_MAGIC:
        order = "<"
    elif magic == 0x9FEB:
        order = ">"
    else:
        raise ObjectError(f".BTF.ext has bad magic {magic:#06x}")
    hdr_len = struct.unpack_from(order + "I", btf_ext, 4)[0]
    if hdr_len < 32 or hdr_len > len(btf_ext):
        # No core_relo fields in a 24-byte header: an object without CO-RE relocations.
        return []
    core_off, core_len = struct.unpack_from(order + "II", btf_ext, 24)
    if core_len == 0:
        return []
    start = hdr_len + core_off
    end = start + core_len
    if end > len(btf_ext) or core_len < 4:
        raise ObjectError(".BTF.ext CO-RE subsection extends past the section")
    rec_size = struct.unpack_from(order + "I", btf_ext, start)[0]
    if rec_size < 16:
        raise ObjectError(f".BTF.ext CO-RE record size {rec_size} is too small")
    pos = start + 4
    out: list[CoreRelo] = []
    rec = struct.Struct(order + "IIII")
    while pos < end:
        if pos + 8 > end:
            raise ObjectError(".BTF.ext CO-RE subsection ends inside a section header")
        sec_name_off, num = struct.unpack_from(order + "II", btf_ext, pos)
        pos += 8
        if pos + num * rec_size > end:
            raise ObjectError(".BTF.ext CO-RE records extend past the subsection")
        try:
            sec_name = btf.str_at(sec_name_off)
        except BTFError as exc:
            raise ObjectError(f".BTF.ext section name: {exc}") from None
        for i in range(num):
            insn_off, type_id, access_off, kind = rec.unpack_from(btf_ext, pos)
            pos += rec_size
            try:
                access = btf.str_at(access_off)
            except BTFError as exc:
                raise ObjectError(f".BTF.ext access string: {exc}") from None
            out.append(CoreRelo(section=sec_name, index=i, insn_off=insn_off, type_id=type_id,
                                access=access, kind=kind))
    return out


class ParsedObject(Record):
    __slots__ = ("path", "btf", "relos", "little_endian", "machine", "has_btf_ext", "symbols",
                 "code", "core_names")

    def __init__(self, *, path: str | PathLike[str], btf: BTF, relos: tuple[CoreRelo, ...],
                 little_endian: bool, machine: str, has_btf_ext: bool,
                 symbols: tuple[tuple[str, int, str], ...] = (),
                 code: dict[str, bytes] | None = None,
                 core_names: frozenset[str] = frozenset()) -> None:
        self.path = path
        self.btf = btf
        self.relos = relos
        self.little_endian = little_endian
        self.machine = machine
        self.has_btf_ext = has_btf_ext
        self.symbols = symbols  # (section, value, function)
        self.code = {} if code is None else code  # executable sections' bytes
        # Essential names of the local types the relocations search candidates for.
        self.core_names = core_names

    def __hash__(self) -> int:
        return id(self)  # holds a dict and a BTF

    @property
    def name(self) -> str:
        """The object's file name, for messages."""
        return os.path.basename(os.fspath(self.path))

    def insn_class(self, section: str, insn_off: int) -> int | None:
        """BPF_CLASS of the instruction a relocation patches (BPF_LDX=1, BPF_ST=2, BPF_STX=3)."""
        data = self.code.get(section)
        if data is None or insn_off >= len(data):
            return None
        return data[insn_off] & 0x07

    def function_at(self, section: str, insn_off: int) -> str:
        """The name of the function containing the instruction (else the section name)."""
        best = ""
        best_val = -1
        for sec, value, name in self.symbols:
            if sec == section and best_val < value <= insn_off:
                best, best_val = name, value
        return best or section


_SectionData = tuple[bytes, bytes | None, bool, str, list[tuple[str, int, str]], dict[str, bytes]]


def read_sections(path: str | PathLike[str]) -> _SectionData:
    """(.BTF, .BTF.ext or None, little endian, machine, function symbols, code) of a BPF ELF."""
    from gobtfgen.elf import SHF_EXECINSTR, SHT_PROGBITS, ELFFormatError
    from gobtfgen.elf import parse as parse_elf

    try:
        with open(path, "rb") as f:
            elf = parse_elf(f.read())
        btf_sec = elf.section(".BTF")
        if btf_sec is None:
            raise ObjectError(f"{path}: no .BTF section; compile with clang -g")
        ext_sec = elf.section(".BTF.ext")
        ext_data = elf.section_data(ext_sec) if ext_sec is not None else None
        code = {sec.name: elf.section_data(sec) for sec in elf.sections
                if sec.type == SHT_PROGBITS and sec.flags & SHF_EXECINSTR}
        return (elf.section_data(btf_sec), ext_data, elf.little_endian, elf.machine_name,
                elf.functions(), code)
    except (ELFFormatError, OSError, struct.error) as exc:
        raise ObjectError(f"{path}: not a readable ELF object ({exc})") from None


def parse_object(path: str | PathLike[str]) -> ParsedObject:
    btf_data, ext_data, le, machine, funcs, code = read_sections(path)
    try:
        btf = BTF(btf_data)
        btf.validate()
    except BTFError as exc:
        raise ObjectError(f"{path}: .BTF: {exc}") from None
    relos = parse_core_relos(ext_data, btf) if ext_data is not None else []
    names = set()
    for relo in relos:
        if relo.kind != TYPE_ID_LOCAL and 0 < relo.type_id < len(btf):
            name = essential_name(btf.name(relo.type_id))
            if name:
                names.add(name)
    return ParsedObject(path=path, btf=btf, relos=tuple(relos), little_endian=le,
                        machine=machine, has_btf_ext=ext_data is not None,
                        symbols=tuple(funcs), code=code, core_names=frozenset(names))


class ObjectCache:
    """Parses each object once per process, keyed by path, mtime and size."""

    def __init__(self) -> None:
        self._cache: dict[tuple[str, int, int], ParsedObject] = {}
        self._lock = allocate_lock()

    def get(self, path: str | PathLike[str]) -> ParsedObject:
        st = os.stat(path)
        key = (os.path.realpath(path), st.st_mtime_ns, st.st_size)
        with self._lock:
            hit = self._cache.get(key)
        if hit is not None:
            return hit
        parsed = parse_object(path)
        with self._lock:
            self._cache[key] = parsed
        return parsed

    def get_all(self, paths: Sequence[str | PathLike[str]]) -> list[ParsedObject]:
        return [self.get(p) for p in paths]

