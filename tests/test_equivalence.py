"""Minimized BTF is as good as the full one, checked by the kernel itself: for this host's kernel
and every real kernel of this machine's arch (x86_64 here: the sample's and the corpus's),
lab3's programs are loaded once with KernelTypes = that kernel's full BTF and once with its
minimized BTF read back from the payload (rebuilt by the generated Go runtime from the payload's
shared type nodes), and the loaded (xlated) instructions must be identical.

Every kernel's programs load into the running kernel: its tracepoint, raw tracepoint and kprobe
programs read kernel memory through probe_read, so the verifier accepts whatever offsets the
CO-RE relocations produced, and the instructions show exactly those offsets. (lab3's fentry
program is left out: its attach target comes from the running kernel's BTF, never from
KernelTypes.) The real kernels of the other arch (arm64 here) are compared the same way with
lab3's arm64 object, which loads here too: the bytecode is arch-neutral, only the offsets differ;
their minimized BTF is read back with gobtfgen's payload reader, since this binary embeds only
its own arch's payload."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from gobtfgen import minimize, pack
from gobtfgen.archive import read_kernel_btf
from tests import lab3build, realkernels

pytestmark = [pytest.mark.tools, pytest.mark.slow]


@pytest.fixture(scope="module")
def kernels(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Path]]:
    """arch -> key -> raw full BTF of every kernel compared: this host's and the sample's."""
    lab3build.require_lab3_tools()
    out = tmp_path_factory.mktemp("full-btf")
    found: dict[str, dict[str, Path]] = {arch: {} for arch in lab3build.BPF2GO_ARCH}
    found[lab3build.host_arch()][lab3build.host_key()] = lab3build.VMLINUX
    for arch, by_key in found.items():
        for kernel in realkernels.KERNELS:
            if kernel.arch != arch:
                continue
            raw = out / (kernel.key.replace("/", "_") + ".btf")
            raw.write_bytes(read_kernel_btf(kernel.path))
            by_key[kernel.key] = raw
    return found


@pytest.fixture(scope="module")
def lab3(tmp_path_factory: pytest.TempPathFactory) -> lab3build.Build:
    return lab3build.build("main", tmp_path_factory)


@pytest.mark.parametrize("minimizer", minimize.available())
def test_minimized_btf_loads_identical_programs(
        minimizer: str, kernels: dict[str, dict[str, Path]], lab3: lab3build.Build,
        tmp_path: Path, record_property: pytest.RecordProperty) -> None:
    host_arch = lab3build.host_arch()
    objects = {arch: lab3.dir / f"execsnoop_{name}_bpfel.o"
               for arch, name in lab3build.BPF2GO_ARCH.items()}

    # The helper program, with the generated runtime and payloads next to it.
    helper = tmp_path / "equiv"
    shutil.copytree(lab3build.EQUIV, helper)
    lab3build.run([*lab3build.gobtfgen_command(), "generate", "--archive", str(lab3.archive),
                   "--arch", ",".join(kernels), "--pkg", "main", "--output-dir", str(helper),
                   "--minimizer", minimizer, "--quiet",
                   *[arg for obj in objects.values() for arg in ("--object", str(obj))]],
                  cwd=helper, env=lab3.env)
    lab3build.run(["go", "build", "-o", "equiv", "."], cwd=helper, env=lab3.env)
    for arch in kernels:
        # What is compared below is the BTF the runtime rebuilds from shared type nodes
        # (payload version 2), not a copy stored whole.
        stored_whole = pack.raw_kernel_count((helper / f"btfgen_{arch}.payload").read_bytes())
        assert stored_whole == 0, f"btfgen_{arch}.payload stores {stored_whole} kernels whole"

    failures: list[str] = []
    compared: dict[str, int] = {}
    for arch, by_key in kernels.items():
        if not by_key:
            continue
        if arch == host_arch:
            # Read back by the generated Go runtime (BTFGenRaw), as a user's binary does.
            listing = "".join(f"{key}\t{path}\n" for key, path in by_key.items())
        else:
            # The other arch's payload is embedded only in binaries of that GOARCH: read it back
            # with gobtfgen's own reader. Its programs still load here: the BPF bytecode is the
            # same, only the CO-RE offsets (which the kernel does not check) come from arm64.
            _, entries = pack.unpack((helper / f"btfgen_{arch}.payload").read_bytes())
            listing = ""
            for key, path in by_key.items():
                assert key in entries, f"{key} is missing from btfgen_{arch}.payload"
                mini = tmp_path / (key.replace("/", "_") + ".min.btf")
                mini.write_bytes(entries[key])
                listing += f"{key}\t{path}\t{mini}\n"
        results = run_helper(helper / "equiv", objects[arch], listing, lab3.env)
        compared[arch] = compare(by_key, results, failures)
        if len(by_key) > 1:
            # The comparison sees relocations at all: kernels with other layouts must give
            # other instructions.
            distinct = {json.dumps(results[key, "full"]["programs"], sort_keys=True)
                        for key in by_key}
            assert len(distinct) > 1, f"every {arch} kernel gave the same instructions"

    total = sum(compared.values())
    record_property("kernels_compared", total)
    print(f"\n{minimizer}: identical programs with full and minimized BTF on "
          + ", ".join(f"{n} of {len(kernels[a])} {a} kernels" for a, n in compared.items()))
    assert not failures, "\n".join(failures)
    assert compared[host_arch] == len(kernels[host_arch])


def run_helper(binary: Path, obj: Path, listing: str,
               env: dict[str, str]) -> dict[tuple[str, str], dict[str, object]]:
    proc = subprocess.run([str(binary), "-object", str(obj)], input=listing,
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    results = {}
    for line in proc.stdout.splitlines():
        row = json.loads(line)
        results[row["key"], row["variant"]] = row
    return results


def compare(by_key: dict[str, Path], results: dict[tuple[str, str], dict[str, object]],
            failures: list[str]) -> int:
    """Count the kernels whose programs are identical; describe the others in failures."""
    compared = 0
    for key in by_key:
        full, mini = results[key, "full"], results[key, "minimized"]
        if full.get("error"):
            failures.append(f"{key}: does not load with its full BTF: {full['error']}")
        elif mini.get("error"):
            failures.append(f"{key}: does not load with its minimized BTF: {mini['error']}")
        elif full["programs"] != mini["programs"]:
            failures.append(f"{key}: {first_difference(full, mini)}")
        else:
            compared += 1
    return compared


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
