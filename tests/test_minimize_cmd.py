"""gobtfgen minimize INPUT OUTPUT OBJECT...: bpftool's argument order, for one kernel."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from gobtfgen import cli
from gobtfgen.archive import read_kernel_btf
from tests.conftest import FIXTURES, compile_bpf, need

pytestmark = pytest.mark.tools


def test_btfhub_file_and_raw_btf_give_bpftools_bytes(tmp_path: Path, sample_archive: Path,
                                                     probe_objects: dict[str, Path]) -> None:
    bpftool = need("bpftool")
    src = sample_archive / "debian" / "12" / "x86_64" / "6.1.0-56-amd64.btf.tar.xz"
    obj = probe_objects["base"]
    assert cli.main(["minimize", str(src), str(tmp_path / "a.btf"), str(obj),
                     "--minimizer", "bpftool", "--bpftool", bpftool]) == 0
    raw = tmp_path / "kernel.btf"
    raw.write_bytes(read_kernel_btf(src))
    assert cli.main(["minimize", str(raw), str(tmp_path / "b.btf"), str(obj),
                     "--minimizer", "bpftool", "--bpftool", bpftool]) == 0
    subprocess.run([bpftool, "gen", "min_core_btf", str(raw), str(tmp_path / "c.btf"), str(obj)],
                   check=True, capture_output=True)
    want = (tmp_path / "c.btf").read_bytes()
    assert (tmp_path / "a.btf").read_bytes() == want == (tmp_path / "b.btf").read_bytes()
    mask = os.umask(0)
    os.umask(mask)
    assert (tmp_path / "a.btf").stat().st_mode & 0o777 == 0o666 & ~mask


def test_bad_inputs(tmp_path: Path, probe_objects: dict[str, Path],
                    capsys: pytest.CaptureFixture[str]) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("this is a text file, not BTF at all\n")
    assert cli.main(["minimize", str(text), str(tmp_path / "o.btf"),
                     str(probe_objects["base"])]) == 1
    err = capsys.readouterr().err
    assert "not BTF" in err and "pass a raw kernel BTF" in err
    vmlinux = Path("/sys/kernel/btf/vmlinux")
    if vmlinux.exists():
        big = tmp_path / "probe_bpfeb.o"
        multiarch = subprocess.run(["gcc", "-print-multiarch"], capture_output=True, text=True)
        subprocess.run([need("clang"), "-g", "-O2", "-target", "bpfeb", "-D__TARGET_ARCH_s390",
                        f"-I/usr/include/{multiarch.stdout.strip()}", "-c",
                        str(FIXTURES / "probe.bpf.c"), "-o", str(big)], check=True)
        assert cli.main(["minimize", str(vmlinux), str(tmp_path / "o.btf"), str(big)]) == 1
        assert "a big-endian object for a little-endian kernel BTF" in capsys.readouterr().err
    maps = compile_bpf(FIXTURES / "maps_only.bpf.c", tmp_path / "maps.o")
    assert cli.main(["minimize", str(vmlinux), str(tmp_path / "o.btf"), str(maps)]) == 1
    assert "has no CO-RE relocations" in capsys.readouterr().err
    assert not (tmp_path / "o.btf").exists()
