"""The generate summary (issue 16, points 3 and 5): one line per kind of problem with a count
and examples, every skipped object named, every problem in the manifest, payload lines in a
fixed order, and a go:generate line that, pasted, generates the same files."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest

from gobtfgen.cli import main
from gobtfgen.errors import Level, Problem
from gobtfgen.report import problem_lines
from tests.bpfobjs import bpf_objects
from tests.btfdata import add_kernel
from tests.dupkernel import real_kernel_btf

__all__ = ["bpf_objects"]

pytestmark = pytest.mark.tools
BAD = 6
NORELOC = 4


def test_problem_lines_group_by_kind() -> None:
    problems = [Problem(level=Level.WARNING, subject=f"k/{i}",
                        message=f"/a/k/{i}.btf.tar.xz: not an xz file; --exclude k/{i}")
                for i in range(BAD)]
    problems += [Problem(level=Level.NOTE, subject=f"o{i}.o",
                         message="no CO-RE relocations (.BTF.ext): needs no kernel BTF, skipped")
                 for i in range(NORELOC)]
    problems.append(Problem(level=Level.NOTE, subject="arm64", message="something else"))
    lines = problem_lines(problems, where="out/btfgen_manifest.json")
    assert lines == [
        f"warning: <file> not an xz file; --exclude <subject> ({BAD}): k/0, k/1, k/2 and "
        f"{BAD - 3} more (all in out/btfgen_manifest.json)",
        "note: arm64: something else",
        f"note: no CO-RE relocations (.BTF.ext): needs no kernel BTF, skipped ({NORELOC}): "
        + ", ".join(f"o{i}.o" for i in range(NORELOC)),
    ]


def _payload_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if ".payload:" in line or "payload.h:" in line]


def test_summary_manifest_and_pasted_go_generate(tmp_path: Path, bpf_objects: dict[str, Path],
                                                 capsys: pytest.CaptureFixture[str],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    raw = real_kernel_btf()
    archive = tmp_path / "archive"
    add_kernel(archive, "debian/12/x86_64/good", raw)
    add_kernel(archive, "debian/12/arm64/good", raw)
    for i in range(BAD):
        # Each damaged differently: a failure is cached by content, with its first file's name.
        add_kernel(archive, f"debian/12/x86_64/bad{i}", content=b"\xfd7zXZ\x00 cut %d" % i)
    objs = tmp_path / "objs"
    objs.mkdir()
    names = [bpf_objects["tracer"], bpf_objects["kprobe_x86"]]
    for i in range(NORELOC):
        copy = objs / f"helper{i}.bpf.o"
        copy.write_bytes(bpf_objects["noreloc"].read_bytes())
        names.append(copy)
    out = tmp_path / "out"
    args = ["generate", "--archive", str(archive), "--output-dir", str(out), "--pkg", "main",
            "--cache-dir", str(tmp_path / "cache"), "-j", "1"]
    for name in names:
        args += ["--object", str(name)]
    assert main([*args, "--quiet"]) == 0
    err = capsys.readouterr().err
    # --quiet still names the skipped objects, on one line.
    skipped = [line for line in err.splitlines() if "skipped (4)" in line]
    assert len(skipped) == 1 and all(f"helper{i}.bpf.o" in skipped[0] for i in range(NORELOC))
    assert main(args) == 0
    err = capsys.readouterr().err
    warnings = [line for line in err.splitlines() if "warning:" in line]
    assert len(warnings) == 1, err
    assert f"({BAD}):" in warnings[0] and f"and {BAD - 3} more (all in " in warnings[0]
    manifest = json.loads((out / "btfgen_manifest.json").read_text())
    listed = {(p["level"], p["subject"]) for p in manifest["problems"]}
    assert {("warning", f"debian/12/x86_64/bad{i}") for i in range(BAD)} <= listed
    assert {("note", f"../objs/{n.name}") for n in names[2:]} <= listed
    # An object built for x86 (its pt_regs reads say so) is embedded for arm64 too: said.
    assert any("kprobe_x86.o: reads x86_64 registers of pt_regs" in line
               and "fail on the 1 arm64 kernel(s)" in line for line in err.splitlines()), err
    # Payload lines: arch order, the same on a run that finds everything cached.
    first = _payload_lines(err)
    assert [line.split(":")[1].strip() for line in first] == ["btfgen_arm64.payload",
                                                             "btfgen_x86_64.payload"]
    assert main(args) == 0
    assert _payload_lines(capsys.readouterr().err) == first

    # The go:generate line names every object given, skipped ones too; pasted into a .go
    # file of the package (go generate runs in its directory and sets $GOPACKAGE), it
    # regenerates the same files.
    line = manifest["go_generate"]
    assert all(n.name in line for n in names), line
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    words = shlex.split(line.removeprefix("//go:generate "))
    assert words[0] == "gobtfgen"
    monkeypatch.chdir(out)
    monkeypatch.setenv("GOPACKAGE", "main")
    fresh = out.parent / "fresh-cache"
    assert main([*words[1:], "--cache-dir", str(fresh)]) == 0
    after = {p.name: p.read_bytes() for p in out.iterdir()}
    assert after == before
