"""gobtfgen check: relocation failures per kernel, grouped, guarded or not, exit status."""

from __future__ import annotations

import json
import lzma
import shutil
import tarfile
from io import BytesIO
from pathlib import Path

import pytest

from gobtfgen import checker, pipeline
from gobtfgen.archive import read_kernel_btf
from gobtfgen.btf import Builder
from gobtfgen.btf.ext import parse_object
from gobtfgen.cli import main
from tests import realkernels
from tests.bpfobjs import bpf_objects

__all__ = ["bpf_objects"]

pytestmark = pytest.mark.tools
NEW = "debian/12/x86_64/6.1.0-56-amd64"
# A pre-5.14 kernel (task_struct.state, not __state): the sample's Amazon Linux 2 kernel where
# the sample is present, else NEW with that member renamed back (realkernels.renamed_member).
SAMPLE_OLD = "amzn/2/x86_64/4.14.256-197.484.amzn2.x86_64"
OLD = SAMPLE_OLD if SAMPLE_OLD in {k.key for k in realkernels.KERNELS} else \
    "derived/1/x86_64/6.1.0-56-amd64-pre514"


def _real_archive(tmp_path: Path, keys: list[str]) -> Path:
    root = tmp_path / "archive"
    for key in keys:
        dst = root / f"{key}.btf.tar.xz"
        dst.parent.mkdir(parents=True, exist_ok=True)
        if key.startswith("derived/"):
            new = read_kernel_btf(realkernels.kernel(NEW))
            old = realkernels.renamed_member(new, "task_struct", "__state", "state")
            _btfhub_file(dst, key.rsplit("/", 1)[1], old)
        else:
            shutil.copyfile(realkernels.kernel(key), dst)
    return root


def _btfhub_file(path: Path, release: str, blob: bytes) -> None:
    buf = BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo(f"{release}.btf")
        info.size = len(blob)
        tar.addfile(info, BytesIO(blob))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(lzma.compress(buf.getvalue()))


def test_sample_kernels_human_and_json(tmp_path: Path, bpf_objects: dict[str, Path],
                                       capsys: pytest.CaptureFixture[str]) -> None:
    archive = _real_archive(tmp_path, [OLD, NEW])
    args = ["check", "--archive", str(archive), "--object", str(bpf_objects["fields"]),
            "--arch", "x86_64", "-j", "1", "--cache-dir", str(tmp_path / "cache")]
    assert main(args) == 1  # fields.c reads a field no kernel has, unguarded
    out = capsys.readouterr().out
    assert out.splitlines()[-1].startswith("0 of 2 kernels run every program correctly")
    assert main([*args, "--verbose"]) == 1
    out = capsys.readouterr().out
    assert "2 kernels lack `task_struct.gobtfgen_no_such_field` (byte_off), unguarded in " \
           "`handle_exec`" in out
    # Each layout of task_struct::state is guarded by the __state existence check.
    assert ("1 kernel lacks `task_struct___post514.__state`, guarded by "
            "`bpf_core_field_exists(task_struct___post514.__state)` in `handle_exec`") in out
    assert "1 kernel lacks `task_struct___pre514.state`, guarded by" in out

    assert main([*args, "--json"]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["ok"] is False
    assert sorted(doc["kernels"]) == sorted([OLD, NEW])
    by_target = {f["target"]: f for f in doc["failures"]}
    assert by_target["task_struct.gobtfgen_no_such_field"]["guarded"] is False
    assert by_target["task_struct.gobtfgen_no_such_field"]["program"] == "handle_exec"
    assert by_target["task_struct___pre514.state"]["kernels"] == [NEW]
    assert by_target["task_struct___post514.__state"]["kernels"] == [OLD]


def test_all_satisfied_exits_zero(tmp_path: Path, bpf_objects: dict[str, Path],
                                  capsys: pytest.CaptureFixture[str]) -> None:
    archive = _real_archive(tmp_path, [NEW])
    assert main(["check", "--archive", str(archive), "--object", str(bpf_objects["net"]),
                 "-j", "1", "--cache-dir", str(tmp_path / "cache")]) == 0
    assert "every relocation is satisfied on all 1 kernels" in capsys.readouterr().out


def test_check_after_generate_reads_the_cached_kernels(tmp_path: Path,
                                                      bpf_objects: dict[str, Path],
                                                      monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """generate leaves each kernel's raw BTF and type index in the cache; check then needs no
    xz and no walk, and gives the same report as from the archive alone."""
    from gobtfgen import btf as B
    from gobtfgen.btf import index as btf_index

    # Where the framing runs in Python the cache keeps type indexes (btf_index.KEEP), which
    # check then reads instead of framing; the compiled framing keeps none.
    monkeypatch.setattr(btf_index, "KEEP", True)
    archive = _real_archive(tmp_path, [OLD, NEW])
    obj = str(bpf_objects["fields"])
    alone = ["check", "--archive", str(archive), "--object", obj, "--arch", "x86_64", "-j", "1",
             "--json", "--cache-dir", str(tmp_path / "other-cache")]
    assert main(alone) == 1
    want = json.loads(capsys.readouterr().out)
    cache = tmp_path / "cache"
    assert main(["generate", "--archive", str(archive), "--object", obj, "--arch", "x86_64",
                 "--output-dir", str(tmp_path / "out"), "--cache-dir", str(cache), "--jobs",
                 "1", "--quiet"]) == 0
    assert len(list((cache / "raw").glob("*.idx"))) == 2

    def no_xz(data: bytes, *, what: Path) -> bytes:
        raise AssertionError(f"{what} was decompressed although generate cached it")

    real_walk = B.index_types

    def objects_walked_only(words: list[int]) -> B.TypeIndex:
        if len(words) > 100_000:  # a kernel, not an object's own BTF
            raise AssertionError("a kernel was framed again although its index was cached")
        return real_walk(words)

    monkeypatch.setattr(pipeline, "kernel_btf_of", no_xz)
    monkeypatch.setattr(B, "index_types", objects_walked_only)
    capsys.readouterr()
    assert main([*alone[:-1], str(cache)]) == 1
    assert json.loads(capsys.readouterr().out) == want


def test_synthetic_kernel_refused_and_missing(tmp_path: Path,
                                              bpf_objects: dict[str, Path]) -> None:
    b = Builder()
    i = b.add_int("int", 4, signed=True)
    b.struct("gbt_amb", 4, [("a", i, 0, 0)])
    b.struct("gbt_amb", 8, [("pad", i, 0, 0), ("a", i, 32, 0)])
    b.struct("gbt_flav___v2", 8, [("pad", i, 0, 0), ("x", i, 32, 0)])
    obj = parse_object(bpf_objects["synth"])
    report = checker.check_kernel("synthetic/1/x86_64/1.0", b.to_bytes(), [obj])
    by = {(f.program, f.target): f for f in report.failures}
    amb = by[("prog_amb", "gbt_amb.a")]
    assert amb.status == "refused" and "ambiguity" in amb.detail and amb.guard is None
    assert ("prog_flav", "gbt_flav.x") not in by  # the kernel-side flavour satisfies it
    assert by[("prog_dup", "gbt_dup.a")].status == "missing"
    assert by[("prog_enum", "gbt_big::GBT_TWO")].kind == "enumval_value"
    groups = checker.group([report])
    assert checker.has_unguarded(groups)
    text = checker.format_human([report], [obj], verbose=True)
    assert "libbpf refuses the relocation: the program will not load" in text
    compact = checker.format_human([report], [obj])
    assert "refused by libbpf (ambiguity: the program will not load)" in compact
    assert compact.splitlines()[-1].endswith("; 1 do not: synthetic/1/x86_64/1.0")


def test_unreadable_kernel_is_reported_not_fatal(tmp_path: Path, bpf_objects: dict[str, Path],
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "archive"
    b = Builder()
    i = b.add_int("int", 4, signed=True)
    b.struct("gbt_flav___v2", 8, [("pad", i, 0, 0), ("x", i, 32, 0)])
    _btfhub_file(root / "test/1/x86_64/1.0.btf.tar.xz", "1.0", b.to_bytes())
    bad = root / "test/1/x86_64/2.0.btf.tar.xz"
    bad.write_bytes(b"not xz")
    rc = main(["check", "--archive", str(root), "--object", str(bpf_objects["synth"]),
               "--arch", "x86_64", "-j", "1", "--cache-dir", str(tmp_path / "cache")])
    out = capsys.readouterr().out
    assert rc == 1
    assert "test/1/x86_64/2.0: not checked" in out
    assert "gobtfgen check: 1 kernels" in out


def _insn(code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> bytes:
    return bytes([code, dst | (src << 4)]) + off.to_bytes(2, "little", signed=True) \
        + imm.to_bytes(4, "little", signed=True)


def test_reachability_follows_relocated_constants() -> None:
    # 0: r1 = <exists relo>   1: if r1 == 0 goto +2   2: r0 = <read relo>   3: exit
    # 4: r0 = 0               5: exit
    # (clang writes the local answer, 1, into the immediate; libbpf patches it per kernel)
    code = b"".join([_insn(0xB7, 1, imm=1), _insn(0x15, 1, off=2), _insn(0xB7, 0, imm=8),
                     _insn(0x95), _insn(0xB7, 0), _insn(0x95)])
    reached, deciders = checker.reachable(code, [0], {0: (1, 7)}) or (set(), set())
    assert reached == {0, 1, 2, 3} and deciders == {7}
    reached, deciders = checker.reachable(code, [0], {0: (0, 7)}) or (set(), set())
    assert reached == {0, 1, 4, 5} and deciders == {7}
    reached, deciders = checker.reachable(code, [0], {}) or (set(), set())
    assert reached == {0, 1, 2, 3} and not deciders
    # An unknown register (a load) keeps both branches.
    code = _insn(0x79, 1, 1) + code[8:]
    reached, deciders = checker.reachable(code, [0], {}) or (set(), set())
    assert reached == set(range(6)) and not deciders
    # A 32-bit move, a register copy and a JNE with a register operand still decide.
    code = b"".join([_insn(0xB4, 2), _insn(0xBF, 3, 2), _insn(0xB7, 4, imm=0),
                     _insn(0x5D, 3, 4, off=1), _insn(0x95), _insn(0xB7, 0), _insn(0x95)])
    reached, _ = checker.reachable(code, [0], {0: (0, 1)}) or (set(), set())
    assert 5 not in reached and 4 in reached


ARM = next((k.key for k in realkernels.KERNELS if k.arch == "arm64"), "debian/12/arm64/none")


def test_last_line_counts_kernels_and_foreign_arch(tmp_path: Path, bpf_objects: dict[str, Path],
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 16, points 4 and 5: the last line says how many kernels run every program
    correctly (guarded failures are fine) and which do not; an x86 kprobe is not held against
    arm64 kernels unless --any-arch asks."""
    assert checker.target_arch(parse_object(bpf_objects["kprobe_x86"])) == "x86_64"
    assert checker.target_arch(parse_object(bpf_objects["tracer"])) is None
    archive = _real_archive(tmp_path, [NEW, ARM])
    args = ["check", "--archive", str(archive), "-j", "1", "--cache-dir", str(tmp_path / "c")]
    for name in ("kprobe_x86", "execsnoop", "tracer"):
        args += ["--object", str(bpf_objects[name])]
    assert main(args) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-1] == ("2 of 2 kernels run every program correctly (guarded failures count as "
                       "correct)")
    assert any("kprobe_x86.o reads x86_64 registers of pt_regs" in line
               and "not checked on the 1 arm64 kernel(s)" in line for line in out), out
    # execsnoop's read of a field no kernel has is guarded: one compact line, detail on demand.
    assert any(line.startswith("ok   1 guarded failure(s) on 2 kernel(s)") for line in out)
    assert main([*args, "--verbose"]) == 0
    assert "guarded by `bpf_core_field_exists(task_struct.gobtfgen_no_such_field)`" in \
        capsys.readouterr().out

    assert main([*args, "--any-arch"]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[-1] == ("1 of 2 kernels run every program correctly (guarded failures count as "
                       f"correct); 1 do not: {ARM}")
    assert any(line.startswith("FAIL 1 kernel: `pt_regs.di`, `pt_regs.si` missing, unguarded")
               for line in out), out
    assert main([*args, "--any-arch", "--json"]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["failing_kernels"] == [ARM] and doc["notes"] == []

    # Objects without relocations: one note line however many, and nothing else to check.
    bare = ["check", "--archive", str(archive), "-j", "1", "--cache-dir", str(tmp_path / "c"),
            "--object", str(bpf_objects["noreloc"]), "--object", str(bpf_objects["noreloc"])]
    assert main(bare) == 0
    captured = capsys.readouterr()
    assert captured.err.count("no CO-RE relocations, nothing to check") == 1
    assert "nothing to check" in captured.out


def test_fold_kernels() -> None:
    ks = [f"ubuntu/20.04/x86_64/5.4.0-{i}-aws" for i in range(9)] + ["amzn/2/x86_64/4.14.1"]
    assert checker.fold_kernels(ks) == "amzn/2/x86_64/4.14.1, ubuntu/20.04/x86_64 (9)"
