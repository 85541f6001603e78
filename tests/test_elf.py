"""gobtfgen.elf, the light section reader generate uses for objects, against pyelftools."""

from __future__ import annotations

import shutil
import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gobtfgen import elf
from tests.bpfobjs import bpf_objects

__all__ = ["bpf_objects"]


def pyelftools_view(path: Path) -> tuple[bool, str, list[tuple[str, int, int, int, int]]]:
    from elftools.elf.elffile import ELFFile
    from elftools.elf.enums import ENUM_SH_TYPE_BASE

    types = {name: value for name, value in ENUM_SH_TYPE_BASE.items() if isinstance(value, int)}
    with path.open("rb") as f:
        e = ELFFile(f)
        sections = []
        for s in e.iter_sections():
            sh_type = s["sh_type"]
            sections.append((s.name, types.get(sh_type, sh_type), s["sh_flags"], s["sh_offset"],
                             s["sh_size"]))
        return e.little_endian, e["e_machine"], sections


def ours(path: Path) -> tuple[bool, str, list[tuple[str, int, int, int, int]]]:
    e = elf.parse(path.read_bytes())
    return e.little_endian, e.machine_name, [(s.name, s.type, s.flags, s.offset, s.size)
                                             for s in e.sections]


@pytest.mark.tools
def test_same_sections_as_pyelftools(bpf_objects: dict[str, Path]) -> None:
    paths = [*bpf_objects.values(), Path(shutil.which("true") or "/bin/true")]
    assert any(not elf.parse(p.read_bytes()).little_endian for p in paths)  # fields_eb
    for path in paths:
        assert ours(path) == pyelftools_view(path), path
        e = elf.parse(path.read_bytes())
        btf = e.section(".BTF")
        if path.suffix == ".o":
            assert e.machine == elf.EM_BPF and btf is not None
            assert e.section_data(btf)[:2] in (b"\x9f\xeb", b"\xeb\x9f")


def _elf32(names: list[str], *, little: bool = True) -> bytes:
    """A minimal 32-bit relocatable ELF: a null section, one PROGBITS per name, .shstrtab."""
    e = "<" if little else ">"
    strtab = b"\0" + b"".join(n.encode() + b"\0" for n in [*names, ".shstrtab"])
    body = b"code" * 4
    shoff = 52 + len(body) + len(strtab)
    count = len(names) + 2
    ident = b"\x7fELF" + bytes([1, 1 if little else 2, 1]) + bytes(9)
    head = ident + struct.pack(e + "HHIIIIIHHHHHH", 1, 3, 1, 0, 0, shoff, 0, 52, 0, 0, 40,
                               count, count - 1)
    sh = [struct.pack(e + "10I", *([0] * 10))]
    offset = 1
    for name in names:
        sh.append(struct.pack(e + "10I", offset, elf.SHT_PROGBITS, 6, 0, 52, len(body),
                              0, 0, 4, 0))
        offset += len(name) + 1
    sh.append(struct.pack(e + "10I", offset, 3, 0, 0, 52 + len(body), len(strtab), 0, 0, 1, 0))
    return head + body + strtab + b"".join(sh)


@pytest.mark.parametrize("little", [True, False])
def test_32_bit_files_and_both_byte_orders(tmp_path: Path, little: bool) -> None:
    path = tmp_path / "a.o"
    path.write_bytes(_elf32(["text", ".BTF"], little=little))
    assert ours(path) == pyelftools_view(path)
    e = elf.parse(path.read_bytes())
    assert e.machine_name == "EM_386" and e.little_endian == little
    assert e.section_data(e.section(".BTF")) == b"code" * 4  # type: ignore[arg-type]


@pytest.mark.parametrize("blob, why", [
    (b"", "no ELF magic"),
    (b"hello world, not an object", "no ELF magic"),
    (b"\x7fELF" + bytes([3, 1]) + bytes(10), "unknown ELF class"),
    (b"\x7fELF" + bytes([2, 1]) + bytes(20), "truncated ELF header"),
])
def test_not_elf(blob: bytes, why: str) -> None:
    with pytest.raises(elf.ELFFormatError, match=why):
        elf.parse(blob)


def test_every_truncation_is_a_format_error() -> None:
    blob = _elf32(["text", ".BTF"])  # the section header table is last: any cut damages it
    assert elf.parse(blob).sections
    for n in range(len(blob)):
        with pytest.raises(elf.ELFFormatError):
            elf.parse(blob[:n])


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_damaged_files_raise_only_format_errors(data: st.DataObject) -> None:
    blob = bytearray(_elf32(["text", ".BTF", ".BTF.ext"], little=data.draw(st.booleans())))
    for _ in range(data.draw(st.integers(1, 8))):
        at = data.draw(st.integers(0, len(blob) - 1))
        blob[at] = data.draw(st.integers(0, 255))
    try:
        parsed = elf.parse(bytes(blob))
    except elf.ELFFormatError:
        return
    for sec in parsed.sections:
        assert len(parsed.section_data(sec)) in (0, sec.size)
