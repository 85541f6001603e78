from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from gobtfgen.errors import InputError
from gobtfgen.objects import discover, read_object, signature_of, target_of
from tests.conftest import FIXTURES, compile_bpf, need


@pytest.mark.parametrize("name, target, little", [
    ("execsnoop_x86_bpfel.o", "x86", True),
    ("execsnoop_arm64_bpfel.o", "arm64", True),
    ("execsnoop_s390_bpfeb.o", "s390", False),
    ("execsnoop_bpfel.o", None, True),
    ("execsnoop_bpfeb.o", None, False),
    ("execsnoop_bpfel_x86.o", "x86", True),  # bpf2go < v0.13
    ("my_prog_bpfel_arm64.o", "arm64", True),
    ("my_prog_bpfel.o", None, True),
    ("probe.o", None, None),
])
def test_bpf2go_names(name: str, target: str | None, little: bool | None) -> None:
    assert target_of(name) == (target, little)


def test_discover_finds_bpf2go_outputs_only(tmp_path: Path) -> None:
    for name in ("a_x86_bpfel.o", "a_arm64_bpfel.o", "b_bpfel.o", "c_bpfel_x86.o", "d_bpfeb.o",
                 "other.o", "a_x86_bpfel.go"):
        (tmp_path / name).write_bytes(b"")
    assert [p.name for p in discover(tmp_path)] == ["a_arm64_bpfel.o", "a_x86_bpfel.o",
                                                   "b_bpfel.o", "c_bpfel_x86.o", "d_bpfeb.o"]


def test_text_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "notes_bpfel.o"
    path.write_text("this is not an object\n")
    with pytest.raises(InputError, match="not an ELF file") as exc:
        read_object(path)
    assert str(path) in str(exc.value) and "clang -target bpf" in str(exc.value)


def test_host_elf_is_not_a_bpf_object(tmp_path: Path) -> None:
    elf = Path(shutil.which("true") or "/bin/true")
    with pytest.raises(InputError, match="not a BPF object"):
        read_object(elf)


@pytest.mark.tools
def test_signature_ignores_code_and_follows_relocations(probe_objects: dict[str, Path]) -> None:
    base, code, relocs = (read_object(probe_objects[k]) for k in ("base", "code", "relocs"))
    assert base.core_relocations > 0
    assert base.signature == code.signature
    assert base.signature != relocs.signature
    assert base.arches == ("x86_64", "arm64")  # a generic object serves every LE arch
    assert signature_of([base, relocs]) == signature_of([relocs, base])


@pytest.mark.tools
def test_object_without_core_relocations(tmp_path: Path) -> None:
    obj = compile_bpf(FIXTURES / "maps_only.bpf.c", tmp_path / "maps_bpfel.o")
    assert read_object(obj).core_relocations == 0
    objcopy = need("llvm-objcopy")
    stripped = tmp_path / "maps_stripped_bpfel.o"
    subprocess.run([objcopy, "--remove-section", ".BTF.ext", str(obj), str(stripped)],
                   check=True)
    assert read_object(stripped).core_relocations == 0


@pytest.mark.tools
def test_object_without_btf_is_a_clear_error(tmp_path: Path) -> None:
    clang = need("clang")
    out = tmp_path / "nodebug_bpfel.o"
    multiarch = subprocess.run(["gcc", "-print-multiarch"], capture_output=True, text=True)
    subprocess.run([clang, "-O2", "-target", "bpf", f"-I/usr/include/{multiarch.stdout.strip()}",
                    "-c", str(FIXTURES / "maps_only.bpf.c"), "-o", str(out)], check=True)
    with pytest.raises(InputError, match="no .BTF section.*clang -g"):
        read_object(out)


@pytest.mark.tools
def test_big_endian_object_applies_to_no_btfhub_arch(tmp_path: Path) -> None:
    clang = need("clang")
    out = tmp_path / "probe_bpfeb.o"
    multiarch = subprocess.run(["gcc", "-print-multiarch"], capture_output=True, text=True)
    subprocess.run([clang, "-g", "-O2", "-target", "bpfeb",
                    f"-I/usr/include/{multiarch.stdout.strip()}", "-D__TARGET_ARCH_s390",
                    "-c", str(FIXTURES / "probe.bpf.c"), "-o", str(out)], check=True)
    obj = read_object(out)
    assert not obj.little_endian and obj.arches == () and obj.core_relocations > 0
