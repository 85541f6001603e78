"""gobtfgen minimize INPUT OUTPUT OBJECT...: bpftool's argument order, for one kernel."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from gobtfgen import cli
from gobtfgen.archive import read_kernel_btf
from tests import realkernels
from tests.bpfobjs import bpf_objects
from tests.conftest import FIXTURES, compile_bpf, need
from tests.dupkernel import real_kernel_btf

__all__ = ["bpf_objects"]

pytestmark = pytest.mark.tools


def test_btfhub_file_and_raw_btf_give_bpftools_bytes(tmp_path: Path,
                                                     probe_objects: dict[str, Path]) -> None:
    bpftool = need("bpftool")
    src = realkernels.kernel("debian/12/x86_64/6.1.0-56-amd64")
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
    assert not (tmp_path / "o.btf").exists()


# Argument lists as Makefiles pass them to `bpftool gen min_core_btf` (bpftool's usage:
# `bpftool [OPTIONS] gen min_core_btf INPUT OUTPUT OBJECT [OBJECT...]`, OPTIONS anywhere).
# {k} kernel, {o} output, objects by name.
ARG_LISTS = [
    (["{k}", "{o}", "tracer"], []),
    (["{k}", "{o}", "tracer", "execsnoop", "noreloc"], []),
    (["{k}", "{o}", "tracer", "-d", "execsnoop"], []),
    (["{k}", "{o}", "tracer", "-j", "-p"], []),
    (["{k}", "{o}", "noreloc"], []),
    (["--", "{k}", "{o}", "tracer"], ["-L"]),
    (["{k}", "{o}", "kprobe_x86", "noreloc", "tracer"], ["-jp"]),
]


@pytest.mark.parametrize(("words", "front"), ARG_LISTS)
def test_drop_in_for_bpftool(words: list[str], front: list[str], tmp_path: Path,
                             bpf_objects: dict[str, Path],
                             capsys: pytest.CaptureFixture[str]) -> None:
    bpftool = need("bpftool")
    kernel = tmp_path / "vmlinux.btf"
    kernel.write_bytes(real_kernel_btf())

    def argv(out: str) -> list[str]:
        subst = {"{k}": str(kernel), "{o}": str(tmp_path / out)}
        return [subst.get(w, str(bpf_objects[w]) if w in bpf_objects else w) for w in words]

    theirs = subprocess.run([bpftool, *front, "gen", "min_core_btf", *argv("bpftool.btf")],
                            capture_output=True, text=True)
    assert theirs.returncode == 0, theirs.stderr
    assert cli.main(["minimize", "--minimizer", "python-compat", *front,
                     *argv("compat.btf")]) == 0
    assert (tmp_path / "compat.btf").read_bytes() == (tmp_path / "bpftool.btf").read_bytes()
    assert cli.main(["minimize", *front, *argv("python.btf")]) == 0
    assert (tmp_path / "python.btf").stat().st_size <= (tmp_path / "bpftool.btf").stat().st_size
    err = capsys.readouterr().err
    assert ("noreloc.o: no CO-RE relocations" in err) == ("noreloc" in words)


def test_no_btf_ext_skipped_where_bpftool_fails(tmp_path: Path, bpf_objects: dict[str, Path],
                                                capsys: pytest.CaptureFixture[str]) -> None:
    # A map-only object without .BTF.ext makes bpftool fail; gobtfgen skips it with a note.
    bpftool = need("bpftool")
    kernel = tmp_path / "vmlinux.btf"
    kernel.write_bytes(real_kernel_btf())
    maps = compile_bpf(FIXTURES / "maps_only.bpf.c", tmp_path / "maps.o")
    tracer = str(bpf_objects["tracer"])
    theirs = subprocess.run([bpftool, "gen", "min_core_btf", str(kernel), str(tmp_path / "b.btf"),
                             tracer, str(maps)], capture_output=True, text=True)
    assert theirs.returncode != 0
    assert cli.main(["minimize", str(kernel), str(tmp_path / "o.btf"), tracer, str(maps),
                     "--minimizer", "python-compat"]) == 0
    assert "maps.o: no CO-RE relocations" in capsys.readouterr().err
    subprocess.run([bpftool, "gen", "min_core_btf", str(kernel), str(tmp_path / "b.btf"), tracer],
                   check=True, capture_output=True)
    assert (tmp_path / "o.btf").read_bytes() == (tmp_path / "b.btf").read_bytes()


@pytest.mark.parametrize("line", [
    ["gen", "min_core_btf", "{k}", "{o}", "tracer", "noreloc"],
    ["-d", "gen", "min", "{k}", "{o}", "tracer"],
    ["gen", "min_core_btf", "{k}", "{o}", "tracer", "-jp", "execsnoop"],
])
def test_bpftool_command_line_as_is(line: list[str], tmp_path: Path,
                                    bpf_objects: dict[str, Path]) -> None:
    """BPFTOOL=gobtfgen in a Makefile: bpftool's own words, `gen` and a prefix of
    `min_core_btf` (bpftool matches command prefixes) included."""
    bpftool = need("bpftool")
    kernel = tmp_path / "vmlinux.btf"
    kernel.write_bytes(real_kernel_btf())

    def argv(out: str) -> list[str]:
        subst = {"{k}": str(kernel), "{o}": str(tmp_path / out)}
        return [subst.get(w, str(bpf_objects[w]) if w in bpf_objects else w) for w in line]

    subprocess.run([bpftool, *argv("bpftool.btf")], check=True, capture_output=True)
    assert cli.main([*argv("compat.btf"), "--minimizer", "python-compat"]) == 0
    assert (tmp_path / "compat.btf").read_bytes() == (tmp_path / "bpftool.btf").read_bytes()


def test_type_index_kept_between_runs(tmp_path: Path, probe_objects: dict[str, Path],
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """minimize keeps the kernel's type index where generate's cache does (raw/<sha256 of the
    raw BTF>.idx): a second run reads it and writes the same bytes; a damaged index is framed
    again and rewritten; GOBTFGEN_CACHE_DIR= (empty) keeps nothing. (The kept results of
    tests/test_minimize_replay.py are removed before each run, or they would answer it.)"""
    import hashlib
    import shutil

    from gobtfgen.btf import index as btf_index

    # The index is kept where the framing runs in Python (it is not worth a file with the
    # compiled framing: btf_index.KEEP); this run keeps it either way.
    monkeypatch.setattr(btf_index, "KEEP", True)
    src = realkernels.kernel("debian/12/x86_64/6.1.0-56-amd64")
    raw = tmp_path / "kernel.btf"
    raw.write_bytes(read_kernel_btf(src))
    obj = str(probe_objects["base"])
    cache = tmp_path / "cache"
    monkeypatch.setenv("GOBTFGEN_CACHE_DIR", str(cache))
    idx = cache / "raw" / f"{hashlib.sha256(raw.read_bytes()).hexdigest()}.idx"

    def minimize(kernel: Path, name: str) -> None:
        shutil.rmtree(cache / "minimize", ignore_errors=True)
        assert cli.main(["minimize", str(kernel), str(tmp_path / f"{name}.btf"), obj]) == 0

    minimize(raw, "cold")
    kept = idx.read_bytes()
    minimize(raw, "seen")
    idx.write_bytes(kept[:-7] + b"damaged")
    minimize(raw, "damaged")
    assert idx.read_bytes() == kept
    # The .tar.xz names the same kernel: the same index (keyed by the raw BTF, not the file).
    minimize(src, "tar")
    assert sorted(p.name for p in (cache / "raw").iterdir()) == [idx.name]
    monkeypatch.setenv("GOBTFGEN_CACHE_DIR", "")
    minimize(raw, "nocache")
    assert not (cache / "minimize").exists()
    want = (tmp_path / "cold.btf").read_bytes()
    for name in ("seen", "damaged", "tar", "nocache"):
        assert (tmp_path / f"{name}.btf").read_bytes() == want, name
