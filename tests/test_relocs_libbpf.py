"""libbpf itself as the oracle: bpftool -d logs, for every relocation, libbpf's local spec and
each candidate's match decision and target spec (bpf_core_format_spec). Our relocation engine
must print the same lines for every candidate of every relocation on every sample kernel."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from gobtfgen.archive import read_kernel_btf
from gobtfgen.btf import BTF
from gobtfgen.btf.ext import ParsedObject, parse_object
from gobtfgen.relocs import evaluate_object, wanted_names
from tests import realkernels
from tests.bpfobjs import bpf_objects, bpftool_or_skip

__all__ = ["bpf_objects"]

LINE = re.compile(r"^libbpf: prog '(?P<prog>[^']*)': relo #(?P<idx>\d+): "
                  r"(?P<what>matching|non-matching) candidate #(?P<cand>\d+) (?P<spec>.*)$")
LOCAL = re.compile(r"^libbpf: prog '(?P<prog>[^']*)': relo #(?P<idx>\d+): (?P<spec><.*)$")
OBJECTS = ("fields", "types", "matches", "net", "tracer")


def libbpf_log(kernel: Path, obj: Path, out: Path) -> tuple[dict[tuple[str, int], list[str]],
                                                            dict[tuple[str, int], str]]:
    proc = subprocess.run([bpftool_or_skip(), "-d", "gen", "min_core_btf", str(kernel),
                           str(out), str(obj)], capture_output=True, text=True)
    cands: dict[tuple[str, int], list[str]] = {}
    local: dict[tuple[str, int], str] = {}
    for line in proc.stderr.splitlines():
        m = LINE.match(line)
        if m:
            cands.setdefault((m["prog"], int(m["idx"])), []).append(
                f"{m['what']} #{m['cand']} {m['spec'].rstrip()}")
            continue
        m = LOCAL.match(line)
        if m:
            local[(m["prog"], int(m["idx"]))] = m["spec"].rstrip()
    return cands, local


def ours(tb: BTF, obj: ParsedObject) -> tuple[dict[tuple[str, int], list[str]],
                                              dict[tuple[str, int], str]]:
    traces: dict[tuple[str, int], list[tuple[int, bool, str]]] = {}
    local: dict[tuple[str, int], str] = {}
    cands: dict[tuple[str, int], list[str]] = {}
    for out in evaluate_object(obj, tb, traces):
        key = (out.relo.section, out.relo.index)
        if out.local is not None:
            local[key] = out.local.format()
        lines = [f"{'matching' if ok else 'non-matching'} #{i} {spec}"
                 for i, ok, spec in traces.get(key, [])]
        if lines:
            cands[key] = lines
        if out.error is not None:
            break  # bpftool stops at the first failing relocation
    return cands, local


@pytest.mark.tools
@pytest.mark.parametrize("kernel", realkernels.params())
def test_candidates_and_specs_match_libbpf(kernel: realkernels.RealKernel, tmp_path: Path,
                                           bpf_objects: dict[str, Path]) -> None:
    raw = read_kernel_btf(kernel.path)
    kpath = tmp_path / "kernel.btf"
    kpath.write_bytes(raw)
    parsed = {name: parse_object(bpf_objects[name]) for name in OBJECTS}
    tb = BTF(raw, wanted=wanted_names(parsed.values()))  # one index serves every object
    for name in OBJECTS:
        theirs_c, theirs_l = libbpf_log(kpath, bpf_objects[name], tmp_path / "out.btf")
        ours_c, ours_l = ours(tb, parsed[name])
        assert theirs_l, f"no libbpf debug lines for {name}"
        assert ours_l == theirs_l, f"{name}: local specs differ"
        assert ours_c == theirs_c, f"{name}: candidate decisions differ"
