"""Just enough ELF to list a BPF object's sections, for the pipeline's per-run object check.

generate reads every changed object to compute its CO-RE signature; with pyelftools that cost
31 ms of import before the first byte (measured), a sixth of a re-run after a code edit. BPF
objects are plain relocatable ELF files, so the section header table is all this needs. The
built-in minimizer reads function symbols and code through it too (gobtfgen/btf/ext.py): the
one-kernel `minimize` command pays every import in every process.

Every offset and size is checked against the file: a damaged or foreign file raises
ELFFormatError, never an IndexError or a struct.error.
"""

from __future__ import annotations

import struct

EM_BPF = 247
SHT_NOBITS = 8
SHT_PROGBITS = 1
SHF_EXECINSTR = 0x4
# Names for the messages of the machines one may pass by mistake (elf.h).
MACHINE_NAMES = {0: "EM_NONE", 3: "EM_386", 8: "EM_MIPS", 20: "EM_PPC", 21: "EM_PPC64",
                 22: "EM_S390", 40: "EM_ARM", 62: "EM_X86_64", 183: "EM_AARCH64",
                 243: "EM_RISCV", EM_BPF: "EM_BPF", 258: "EM_LOONGARCH"}


class ELFFormatError(ValueError):
    """Not an ELF file, or a damaged one (the message says what is wrong)."""


class Section:
    """One section header. (Plain classes here, not dataclasses: `gobtfgen minimize` replays
    a result after reading its objects through this module, and importing dataclasses alone
    costs that whole command 5-10 ms.)"""

    __slots__ = ("name", "type", "flags", "offset", "size", "link")

    def __init__(self, name: str, type: int, flags: int, offset: int, size: int,
                 link: int = 0) -> None:
        self.name = name
        self.type = type
        self.flags = flags
        self.offset = offset
        self.size = size
        self.link = link  # sh_link: a symbol table's string table

    def __repr__(self) -> str:
        return (f"Section(name={self.name!r}, type={self.type}, flags={self.flags:#x}, "
                f"offset={self.offset}, size={self.size}, link={self.link})")


SHT_SYMTAB = 2
STT_FUNC = 2
SHN_LORESERVE = 0xFF00  # section indexes from here on are special (SHN_ABS, SHN_COMMON, ...)


class ELF:
    __slots__ = ("little_endian", "machine", "sections", "data")

    def __init__(self, little_endian: bool, machine: int, sections: tuple[Section, ...],
                 data: bytes) -> None:
        self.little_endian = little_endian
        self.machine = machine
        self.sections = sections
        self.data = data

    @property
    def machine_name(self) -> str:
        return MACHINE_NAMES.get(self.machine, f"machine {self.machine}")

    def section(self, name: str) -> Section | None:
        for sec in self.sections:
            if sec.name == name:
                return sec
        return None

    def section_data(self, sec: Section) -> bytes:
        return b"" if sec.type == SHT_NOBITS else self.data[sec.offset:sec.offset + sec.size]

    def functions(self) -> list[tuple[str, int, str]]:
        """(section name, st_value, name) of every STT_FUNC symbol defined in a section, in
        .symtab order (the built-in minimizer names relocations' functions by them)."""
        symtab = self.section(".symtab")
        if symtab is None or symtab.type != SHT_SYMTAB or symtab.link >= len(self.sections):
            return []
        order = "<" if self.little_endian else ">"
        if self.data[4] == 2:
            layout, fields = struct.Struct(order + "IBBHQQ"), (0, 1, 3, 4)
        else:
            layout, fields = struct.Struct(order + "IIIBBH"), (0, 3, 5, 1)
        names = self.section_data(self.sections[symtab.link])
        table = self.section_data(symtab)
        out = []
        for at in range(0, len(table) - layout.size + 1, layout.size):
            rec = layout.unpack_from(table, at)
            name_off, info, shndx, value = (rec[i] for i in fields)
            if info & 0xF != STT_FUNC or not 0 < shndx < min(SHN_LORESERVE, len(self.sections)):
                continue
            end = names.find(b"\0", name_off)
            name = names[name_off:end if end >= 0 else len(names)].decode("utf-8", "replace")
            out.append((self.sections[shndx].name, value, name))
        return out


# (header after e_ident, section header) layouts by ELF class: 1 = 32-bit, 2 = 64-bit.
_LAYOUTS = {1: ("HHIIIIIHHHHHH", "IIIIIIIIII"), 2: ("HHIQQQIHHHHHH", "IIQQQQIIQQ")}


def parse(data: bytes) -> ELF:
    if len(data) < 16 or data[:4] != b"\x7fELF":
        raise ELFFormatError("no ELF magic number")
    cls, enc = data[4], data[5]
    if cls not in _LAYOUTS or enc not in (1, 2):
        raise ELFFormatError(f"unknown ELF class {cls} or data encoding {enc}")
    order = "<" if enc == 1 else ">"
    head, sh_layout = (struct.Struct(order + fmt) for fmt in _LAYOUTS[cls])
    try:
        (_type, machine, _version, _entry, _phoff, shoff, _flags, _ehsize, _phentsize, _phnum,
         shentsize, shnum, shstrndx) = head.unpack_from(data, 16)
    except struct.error:
        raise ELFFormatError("truncated ELF header") from None

    def header(index: int) -> tuple[int, ...]:
        at = shoff + index * shentsize
        if shentsize < sh_layout.size or at + sh_layout.size > len(data) or at < 0:
            raise ELFFormatError(f"section header {index} lies outside the file")
        return sh_layout.unpack_from(data, at)

    if shoff == 0:
        return ELF(little_endian=order == "<", machine=machine, sections=(), data=data)
    first = header(0)
    if shnum == 0:  # more than 0xff00 sections: the count is in section 0 (elf(5))
        shnum = first[5]
    if shstrndx == 0xFFFF:
        shstrndx = first[6]
    if shnum > (len(data) - shoff) // max(shentsize, 1) or shstrndx >= max(shnum, 1):
        raise ELFFormatError("section header table does not fit the file")
    raw = [header(i) for i in range(shnum)]
    _, names_type, _, _, names_off, names_size, *_ = raw[shstrndx]
    if names_type == SHT_NOBITS or names_off + names_size > len(data):
        raise ELFFormatError("section name table lies outside the file")
    names = data[names_off:names_off + names_size]
    sections = []
    for i, (name_off, sh_type, flags, _addr, offset, size, link, *_rest) in enumerate(raw):
        if sh_type != SHT_NOBITS and offset + size > len(data):
            raise ELFFormatError(f"section {i} lies outside the file")
        end = names.find(b"\0", name_off)
        name = names[name_off:end if end >= 0 else len(names)].decode("utf-8", "replace")
        sections.append(Section(name=name, type=sh_type, flags=flags, offset=offset, size=size,
                                link=link))
    return ELF(little_endian=order == "<", machine=machine, sections=tuple(sections), data=data)
