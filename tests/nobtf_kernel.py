"""The test kernel with no BTF at all (issue 12): built from Debian's linux-source-6.1 with
CONFIG_DEBUG_INFO_BTF off by scripts/build-test-kernel (scripts/setup runs it for the arches in
GOBTFGEN_NOBTF_ARCHES, both by default), its archive BTF made by pahole from its DWARF. Tests
only find the cached build here; they never start the several-minute build themselves."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "build-test-kernel"
# The kernel image each arch's build leaves, as qemu's -kernel takes it.
IMAGE = {"x86_64": "bzImage", "arm64": "Image"}


@dataclass(frozen=True, kw_only=True)
class NoBTFKernel:
    arch: str  # btfhub arch: x86_64 or arm64
    image: Path  # bzImage (x86_64) or Image (arm64), for qemu -kernel
    btf: Path  # pahole --btf_encode_detached of vmlinux's DWARF: the archive's BTF for it
    release: str  # uname -r in the guest, e.g. 6.1.192-gobtfgen-nobtf
    config: Path  # the .config it was built with


def build_dir(arch: str) -> Path:
    """Where scripts/build-test-kernel keeps (or would keep) the build of the committed config:
    the script computes the key (source version, config hash, pahole version), so this module
    and the script cannot disagree on it."""
    if arch not in IMAGE:
        raise ValueError(f"no BTF-less test kernel for arch {arch!r}; one of {sorted(IMAGE)}")
    done = subprocess.run(["bash", str(SCRIPT), "--dir", arch], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(reason=f"{SCRIPT.name} cannot locate the {arch} kernel build: "
                    f"{done.stderr.strip()}")
    return Path(done.stdout.strip())


def nobtf_kernel(arch: str) -> NoBTFKernel:
    """The cached BTF-less kernel for arch; skips, naming the command that builds it, when the
    build of the committed config is absent."""
    out = build_dir(arch)
    kernel = NoBTFKernel(arch=arch, image=out / IMAGE[arch], btf=out / "vmlinux.btf",
                         release=(out / "release").read_text().strip()
                         if (out / "release").is_file() else "",
                         config=out / "config")
    if not (kernel.release and kernel.image.is_file() and kernel.btf.is_file()):
        pytest.skip(reason=f"the BTF-less {arch} test kernel is not built ({out} is absent); run "
                    f"scripts/build-test-kernel {arch}, or scripts/setup with "
                    f'GOBTFGEN_NOBTF_ARCHES containing {arch} (about 3 minutes on 2 cores)')
    return kernel


def arches() -> list[str]:
    """The arches whose BTF-less kernel this run tests: those scripts/setup builds
    (GOBTFGEN_NOBTF_ARCHES, "x86_64 arm64" by default) and any other whose build is already
    cached here. An arch left out is
    a row the run does not have, not a skipped one."""
    chosen = os.environ.get("GOBTFGEN_NOBTF_ARCHES", "x86_64 arm64").split()
    found = []
    for arch in IMAGE:
        if arch in chosen:
            found.append(arch)
            continue
        try:
            nobtf_kernel(arch)
        except pytest.skip.Exception:
            continue
        found.append(arch)
    return found
