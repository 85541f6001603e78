"""End to end in a VM: a Debian 12 cloud kernel boots with nf_conntrack loaded (insmod of the
package's .ko files in modules.dep order, read from each module's `depends=`), and a Go program
on cilium/ebpf relocates a module-only type (struct nf_conntrack_net, tests/bpf/modcore.c) with
the merged-and-minimized BTF gobtfgen generate embedded (vmlinux + nf_conntrack from
`archive add --modules`) while /sys/kernel/btf is hidden; the same binary with /sys/kernel/btf
visible (cilium/ebpf reads vmlinux and nf_conntrack's BTF itself) must report the same. The
guest's /sys/kernel/btf/nf_conntrack, merged as `archive add --modules` merges a running
kernel's, gives the same BTF as the package's nf_conntrack.ko."""

from __future__ import annotations

import base64
import re
import subprocess
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile

from gobtfgen import cli, kernelimage, modules
from gobtfgen.archive import read_kernel_btf
from gobtfgen.btf.split import merge
from tests import corpus, gomod, vm
from tests.bpfobjs import clang_or_skip

RELEASE = "6.1.0-56-cloud-amd64"
HERE = Path(__file__).resolve().parent
# offset 4 | sizeof(struct nf_conntrack_net) 136 << 8 | sizeof(expect_count) 4 << 24, as
# Debian's nf_conntrack.ko BTF says (tests/test_split_minimize.py reads the same layout).
EXPECTED = 4 | 136 << 8 | 4 << 24


def _depends(ko: Path) -> list[str]:
    with ko.open("rb") as f:
        sec = ELFFile(f).get_section_by_name(".modinfo")
        info = bytes(sec.data()) if sec is not None else b""
    m = re.search(rb"(?:^|\0)depends=([^\0]*)", info)
    return [d for d in m.group(1).decode().split(",") if d] if m else []


def load_order(mods: Path, name: str) -> list[Path]:
    """The .ko files to insmod for `name`, dependencies first (what modules.dep would say; the
    .deb ships none, depmod writes it at install)."""
    files = {p.name.removesuffix(".ko").replace("-", "_"): p for p in mods.rglob("*.ko")}
    order: list[Path] = []

    def visit(n: str) -> None:
        if files[n] in order:
            return
        for dep in _depends(files[n]):
            visit(dep.replace("-", "_"))
        order.append(files[n])

    visit(name)
    return order


def test_module_type_relocated_in_a_guest(tmp_path: Path) -> None:
    if gomod.find_go() is None:
        pytest.skip(reason="go is missing; run scripts/setup (installs Go)")
    vm.qemu("x86_64")
    clang = clang_or_skip()
    pkg = next((p for p in corpus.packages() if p.release == RELEASE), None)
    if pkg is None:
        pytest.skip(reason=f"{RELEASE} is not in tests/kernels.tsv; add it back")
    archive = tmp_path / "archive"
    assert cli.main(["archive", "add", str(archive), "--from", str(corpus.deb(pkg)),
                     "--modules", "nf_conntrack"]) == 0
    mod = gomod.make_module(tmp_path / "modvm", module="example.com/modvm",
                            files={"main.go": (HERE / "modvm" / "main.go").read_text()})
    subprocess.run([clang, "-g", "-O2", "-target", "bpfel", "-D__TARGET_ARCH_x86", "-c",
                    str(HERE / "bpf" / "modcore.c"), "-o", str(mod / "modcore.o")], check=True)
    assert cli.main(["generate", "--archive", str(archive), "--object", str(mod / "modcore.o"),
                     "--arch", "x86_64", "--output-dir", str(mod), "--pkg", "main",
                     "--quiet", "--cache-dir", str(tmp_path / "cache")]) == 0
    gomod.run_go(["build", "-o", "modvm", "."], cwd=mod,
                 env={"GOOS": "linux", "GOARCH": "amd64", "CGO_ENABLED": "0"})
    mods = corpus.modules_dir(pkg)
    order = load_order(mods, "nf_conntrack")
    files: dict[str, Path | bytes] = {"bin/modvm": mod / "modvm"}
    files.update({f"mods/{i:02d}-{p.name}": p for i, p in enumerate(order)})
    script = ("for m in /mods/*.ko; do insmod $m || exit 1; done\n"
              "ls /sys/kernel/btf | grep -c nf_conntrack\n/bin/modvm")
    # With BTF visible, the loaded module's split BTF as the kernel shows it, for the host to
    # merge the way `archive add --modules` merges a running kernel's.
    sysfs = vm.Check(name="sysfs", script="base64 /sys/kernel/btf/nf_conntrack")
    kernel = corpus.boot_image(pkg)
    results = {}
    live = b""
    for hidden in (True, False):
        checks = [vm.Check(name="modvm", script=script), *([] if hidden else [sysfs])]
        guest = vm.Guest(arch="x86_64", kernel=kernel, checks=checks, files=files,
                         hide_btf=hidden)
        boot = vm.boot(guest, tmp_path / ("hidden" if hidden else "native"))
        res = boot["modvm"]
        assert res.status == 0, boot.describe("modvm")
        results[hidden] = res.lines
        if not hidden:
            assert boot["sysfs"].status == 0, boot.describe("sysfs")
            live = base64.b64decode("".join(boot["sysfs"].lines))
    hidden_line = next(line for line in results[True] if line.startswith("modvm "))
    native_line = next(line for line in results[False] if line.startswith("modvm "))
    assert hidden_line == f'modvm btf="embedded debian/12/x86_64/{RELEASE}" ret={EXPECTED}', \
        results[True]
    assert native_line == f'modvm btf="kernel" ret={EXPECTED}', results[False]
    assert "0" in results[True] and "1" in results[False]  # nf_conntrack's BTF: hidden, seen
    # The running kernel's /sys/kernel/btf/nf_conntrack, merged as `archive add --modules` does
    # on that kernel, gives the BTF the package's nf_conntrack.ko gave.
    btf_dir = tmp_path / "sys-kernel-btf"
    btf_dir.mkdir()
    dest = archive / "debian/12/x86_64" / f"{RELEASE}.btf.tar.xz"
    (btf_dir / "vmlinux").write_bytes(corpus_vmlinux(pkg))
    (btf_dir / "nf_conntrack").write_bytes(live)
    (found,) = modules.from_sysfs(btf_dir, None)
    assert found.name == "nf_conntrack"
    assert merge(corpus_vmlinux(pkg), [(found.name, found.btf)]).btf == read_kernel_btf(dest)


def corpus_vmlinux(pkg: corpus.KernelPackage) -> bytes:
    return kernelimage.read(corpus.deb(pkg).read_bytes(), corpus.deb(pkg)).btf
