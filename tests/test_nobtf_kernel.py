"""The BTF-less test kernel (tests/nobtf_kernel.py, built by scripts/build-test-kernel): its
config really has BTF off and DWARF on, pahole's BTF of it goes into an archive through
`gobtfgen archive add`, and it boots under qemu to a shell with no /sys/kernel/btf at all,
the syscall tracepoint and kprobes lab3 needs, and a poweroff that ends qemu."""

from __future__ import annotations

import gzip
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from gobtfgen import cli
from gobtfgen.archive import read_kernel_btf, scan_archive
from gobtfgen.btf import BTF
from tests.nobtf_kernel import NoBTFKernel, nobtf_kernel

pytestmark = pytest.mark.tools
ARCHES = ["x86_64", "arm64"]


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


INIT = """#!/bin/sh
mount -t proc proc /proc
mount -t sysfs sysfs /sys
echo "probe: release $(uname -r)"
if [ -e /sys/kernel/btf ]; then echo "probe: has /sys/kernel/btf"; else echo "probe: no btf"; fi
mount -t tracefs tracefs /sys/kernel/tracing
[ -d /sys/kernel/tracing/events/syscalls/sys_enter_execve ] && echo "probe: tracepoint ok"
echo "p:probe_execve $1" > /sys/kernel/tracing/kprobe_events && echo "probe: kprobe ok"
poweroff -f
"""
# qemu for each arch, and the execve entry point the kprobe attaches to (as lab3's does).
QEMU = {
    "x86_64": (["qemu-system-x86_64", "-M", "pc"], "ttyS0", "__x64_sys_execve", "x86_64"),
    "arm64": (["qemu-system-aarch64", "-M", "virt", "-cpu", "cortex-a72"], "ttyAMA0",
              "__arm64_sys_execve", "aarch64"),
}


def busybox_for(machine: str) -> Path:
    """A static busybox that runs in the guest: Debian's busybox-static for the host's arch."""
    if os.uname().machine != machine:
        pytest.skip(reason=f"the boot probe needs a {machine} static busybox; the host's "
                    f"busybox-static is {os.uname().machine} (the VM harness covers {machine})")
    busybox = shutil.which("busybox") or "/bin/busybox"
    if not Path(busybox).is_file():
        pytest.skip(reason="busybox is not installed; apt-get install busybox-static")
    return Path(busybox)


def initramfs(busybox: Path, probe: str, out: Path) -> Path:
    """A newc cpio (what the kernel unpacks as its root), written without the cpio tool."""
    files: list[tuple[str, int, bytes]] = [("bin", 0o040755, b""), ("proc", 0o040755, b""),
                                           ("sys", 0o040755, b""), ("dev", 0o040755, b""),
                                           ("bin/busybox", 0o100755, busybox.read_bytes()),
                                           ("init", 0o100755, INIT.replace("$1", probe).encode())]
    files += [(f"bin/{name}", 0o120777, b"busybox")
              for name in ("sh", "mount", "uname", "echo", "poweroff")]
    blob = bytearray()
    for ino, (name, mode, data) in enumerate([*files, ("TRAILER!!!", 0, b"")], start=1):
        raw = name.encode() + b"\0"
        fields = [ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(raw), 0]
        blob += b"070701" + b"".join(b"%08X" % f for f in fields) + raw
        blob += b"\0" * (-len(blob) % 4) + data + b"\0" * (-len(data) % 4)
    out.write_bytes(gzip.compress(bytes(blob)))
    return out


@pytest.mark.parametrize("arch", ARCHES)
def test_boots_without_btf(arch: str, tmp_path: Path) -> None:
    kernel = nobtf_kernel(arch)
    qemu, console, probe, machine = QEMU[arch]
    if not shutil.which(qemu[0]):
        pytest.skip(reason=f"{qemu[0]} is not installed; run scripts/setup")
    initrd = initramfs(busybox_for(machine), probe, tmp_path / "initrd.gz")
    cmd = [*qemu, "-accel", "tcg", "-m", "512", "-nographic", "-no-reboot", "-kernel",
           str(kernel.image), "-initrd", str(initrd), "-append", f"console={console} panic=-1"]
    # poweroff must end qemu by itself: a timeout here means the guest cannot power off.
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL)
    lines = [line.strip() for line in done.stdout.splitlines() if line.startswith("probe:")]
    assert lines == [f"probe: release {kernel.release}", "probe: no btf", "probe: tracepoint ok",
                     "probe: kprobe ok"], done.stdout[-3000:]
