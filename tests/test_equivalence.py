"""Minimized BTF is as good as the full one, checked by the kernel itself: for this host's kernel
and every kernel of this machine's arch (x86_64 here) in the sample archive, lab3's programs are
loaded once with KernelTypes = that kernel's full BTF and once with its minimized BTF read back
from the payload (by the generated Go runtime), and the loaded (xlated) instructions must be
identical.

Every kernel's programs load into the running kernel: its tracepoint, raw tracepoint and kprobe
programs read kernel memory through probe_read, so the verifier accepts whatever offsets the
CO-RE relocations produced, and the instructions show exactly those offsets. (lab3's fentry
program is left out: its attach target comes from the running kernel's BTF, never from
KernelTypes.)"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from gobtfgen import minimize
from gobtfgen.archive import read_kernel_btf
from tests import lab3build

pytestmark = [pytest.mark.tools, pytest.mark.slow]


@pytest.fixture(scope="module")
def kernels(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """key -> raw full BTF of every kernel compared: this host's plus the sample's of its arch."""
    lab3build.require_lab3_tools()
    out = tmp_path_factory.mktemp("full-btf")
    found = {lab3build.host_key(): lab3build.VMLINUX}
    for path in sorted(lab3build.SAMPLE.glob(f"*/*/{lab3build.host_arch()}/*.btf.tar.xz")):
        key = path.relative_to(lab3build.SAMPLE).as_posix().removesuffix(".btf.tar.xz")
        raw = out / (key.replace("/", "_") + ".btf")
        raw.write_bytes(read_kernel_btf(path))
        found[key] = raw
    return found


@pytest.fixture(scope="module")
def lab3(tmp_path_factory: pytest.TempPathFactory) -> lab3build.Build:
    return lab3build.build("main", tmp_path_factory)


@pytest.mark.parametrize("minimizer", minimize.available())
def test_minimized_btf_loads_identical_programs(
        minimizer: str, kernels: dict[str, Path], lab3: lab3build.Build,
        tmp_path: Path, record_property: pytest.RecordProperty) -> None:
    env, lab3_object = lab3.env, lab3.host_object

    # The helper program, with the generated runtime and payload for these kernels next to it.
    helper = tmp_path / "equiv"
    shutil.copytree(lab3build.EQUIV, helper)
    lab3build.run([*lab3build.gobtfgen_command(), "generate", "--object", str(lab3_object),
                   "--archive", str(lab3.archive), "--arch", lab3build.host_arch(), "--pkg", "main",
                   "--output-dir", str(helper), "--minimizer", minimizer, "--quiet"],
                  cwd=helper, env=env)
    lab3build.run(["go", "build", "-o", "equiv", "."], cwd=helper, env=env)

    listing = "".join(f"{key}\t{path}\n" for key, path in kernels.items())
    proc = subprocess.run([str(helper / "equiv"), "-object", str(lab3_object)], input=listing,
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    results: dict[tuple[str, str], dict[str, object]] = {}
    for line in proc.stdout.splitlines():
        row = json.loads(line)
        results[row["key"], row["variant"]] = row

    failures = []
    compared = 0
    for key in kernels:
        full, mini = results[key, "full"], results[key, "minimized"]
        if full.get("error"):
            failures.append(f"{key}: does not load with its full BTF: {full['error']}")
        elif mini.get("error"):
            failures.append(f"{key}: does not load with its minimized BTF: {mini['error']}")
        elif full["programs"] != mini["programs"]:
            failures.append(f"{key}: {first_difference(full, mini)}")
        else:
            compared += 1
    record_property("kernels_compared", compared)
    print(f"\n{minimizer}: {compared} of {len(kernels)} kernels load identical programs "
          "with full and minimized BTF")
    assert not failures, "\n".join(failures)

    # The comparison sees relocations at all: kernels with other task_struct layouts must
    # give other instructions.
    distinct = {json.dumps(results[key, "full"]["programs"], sort_keys=True) for key in kernels}
    assert len(kernels) == 1 or len(distinct) > 1


def first_difference(full: dict[str, object], mini: dict[str, object]) -> str:
    fprogs = full["programs"]
    mprogs = mini["programs"]
    assert isinstance(fprogs, dict) and isinstance(mprogs, dict)
    for name in sorted(set(fprogs) | set(mprogs)):
        a, b = fprogs.get(name, []), mprogs.get(name, [])
        for i, (x, y) in enumerate(zip(a, b, strict=False)):
            if x != y:
                return f"program {name}, instruction {i}: full {x!r}, minimized {y!r}"
        if len(a) != len(b):
            return f"program {name}: {len(a)} instructions with full BTF, {len(b)} minimized"
    return "programs differ"
