"""The BTF-less test kernel (tests/nobtf_kernel.py, built by scripts/build-test-kernel): its
config really has BTF off and DWARF on, pahole's BTF of it goes into an archive through
`gobtfgen archive add`, and it boots in the VM harness (tests/vm.py) to a shell with no
/sys/kernel/btf at all, the syscall tracepoint and kprobes lab3 needs, and a poweroff that ends
qemu."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gobtfgen import cli
from gobtfgen.archive import read_kernel_btf, scan_archive
from gobtfgen.btf import BTF
from tests import vm
from tests.nobtf_kernel import NoBTFKernel, arches, nobtf_kernel

pytestmark = pytest.mark.tools
ARCHES = arches()


def config_of(kernel: NoBTFKernel) -> dict[str, str]:
    values = {}
    for line in kernel.config.read_text().splitlines():
        if m := re.fullmatch(r"(CONFIG_\w+)=(.*)", line):
            values[m[1]] = m[2]
    return values


@pytest.mark.parametrize("arch", ARCHES)
def test_config_has_no_btf_and_dwarf(arch: str) -> None:
    kernel = nobtf_kernel(arch)
    config = config_of(kernel)
    assert "CONFIG_DEBUG_INFO_BTF" not in config
    assert config.get("CONFIG_DEBUG_INFO_DWARF5") == "y"
    for needed in ("BPF_SYSCALL", "BPF_EVENTS", "KPROBES", "KPROBE_EVENTS", "FTRACE_SYSCALLS",
                   "BLK_DEV_INITRD", "DEVTMPFS"):
        assert config.get(f"CONFIG_{needed}") == "y", needed
    assert not [k for k, v in config.items() if v == "m"]
    assert re.fullmatch(r"6\.1\.\d+-gobtfgen-nobtf", kernel.release)
    assert kernel.image.stat().st_size > 1 << 20


@pytest.mark.parametrize("arch", ARCHES)
def test_pahole_btf_goes_into_the_archive(arch: str, tmp_path: Path) -> None:
    kernel = nobtf_kernel(arch)
    archive = tmp_path / "archive"
    assert cli.main(["archive", "add", str(archive), "--from", str(kernel.btf), "--id", "debian",
                     "--version", "12", "--arch", arch, "--release", kernel.release]) == 0
    dest = archive / "debian" / "12" / arch / f"{kernel.release}.btf.tar.xz"
    data = read_kernel_btf(dest)
    assert data == kernel.btf.read_bytes()
    kernels, problems = scan_archive(archive, [arch])
    assert [k.key for k in kernels] == [f"debian/12/{arch}/{kernel.release}"] and not problems
    # What lab3's program relocates against, present as in any btfhub-archive file.
    btf = BTF(data, wanted=["task_struct", "trace_event_raw_sys_enter"])
    assert btf.by_essential_name("task_struct")
    assert btf.by_essential_name("trace_event_raw_sys_enter")


# The execve entry point a kprobe attaches to on each arch (lab3's kprobe does the same).
EXECVE = {"x86_64": "__x64_sys_execve", "arm64": "__arm64_sys_execve"}
PROBE = """
uname -r
if [ -e /sys/kernel/btf ]; then echo "has /sys/kernel/btf"; else echo "no /sys/kernel/btf"; fi
[ -d /sys/kernel/tracing/events/syscalls/sys_enter_execve ] && echo "tracepoint ok"
echo "p:probe_execve {execve}" > /sys/kernel/tracing/kprobe_events && echo "kprobe ok"
"""


@pytest.mark.parametrize("arch", ARCHES)
def test_boots_without_btf(arch: str, tmp_path: Path) -> None:
    """With BTF not hidden by the harness: the kernel itself has none. That the harness's
    `poweroff -f` ends qemu is part of this (the boot would time out otherwise)."""
    kernel = nobtf_kernel(arch)
    guest = vm.Guest(arch=arch, kernel=kernel.image, hide_btf=False, timeout=300,
                     checks=[vm.Check(name="probe", script=PROBE.format(execve=EXECVE[arch]))])
    booted = vm.boot(guest, tmp_path)
    result = booted["probe"]
    assert result.lines == [kernel.release, "no /sys/kernel/btf", "tracepoint ok", "kprobe ok"], \
        booted.describe("probe")
