"""The VM harness's own parts that need no qemu: the initramfs writer and the console parser
(tests/test_vm_matrix.py boots real guests with them)."""

from __future__ import annotations

import stat
from pathlib import Path

from tests import vm


def read_cpio(data: bytes) -> dict[str, tuple[int, bytes]]:
    """name -> (mode, content) of a newc archive, read the way the kernel's unpacker does."""
    entries: dict[str, tuple[int, bytes]] = {}
    pos = 0
    while True:
        assert data[pos:pos + 6] == b"070701", pos
        fields = [int(data[pos + 6 + 8 * i:pos + 14 + 8 * i], 16) for i in range(13)]
        mode, size, namesize = fields[1], fields[6], fields[11]
        name_start = pos + 110
        name = data[name_start:name_start + namesize - 1].decode()
        body = name_start + namesize
        body += -body % 4
        if name == "TRAILER!!!":
            return entries
        entries[name] = (mode, data[body:body + size])
        pos = body + size
        pos += -pos % 4


def test_cpio_holds_files_dirs_and_links(tmp_path: Path) -> None:
    out = tmp_path / "initrd.cpio"
    vm.write_cpio(out, {"init": b"#!/bin/sh\n", "bin/tool": b"\x7fELF...", "etc/x/y": b"odd"},
                  executables={"init", "bin/tool"}, symlinks={"bin/sh": "busybox"})
    entries = read_cpio(out.read_bytes())
    assert entries["init"] == (stat.S_IFREG | 0o755, b"#!/bin/sh\n")
    assert entries["etc/x/y"] == (stat.S_IFREG | 0o644, b"odd")
    assert entries["bin/sh"] == (stat.S_IFLNK | 0o777, b"busybox")
    for parent in ("etc", "etc/x", "bin", "proc", "sys", "dev", "tmp"):
        assert stat.S_ISDIR(entries[parent][0]), parent
    # Parents come before their children: the kernel creates them in archive order.
    names = list(entries)
    assert names.index("etc/x") < names.index("etc/x/y")


def test_console_parser_keeps_each_checks_output() -> None:
    console = ("[    1.0] kernel noise\r\n@@vm ready 6.1.0 btf=0\r\n@@vm begin one\r\n"
               "hello\r\nworld\r\n@@vm end one 0\r\n@@vm begin two\r\n@@vm end two 3\r\n"
               "@@vm begin three\r\nunfinished\r\n@@vm done\r\n")
    results = vm.parse_console(console)
    assert results["one"] == vm.CheckResult(name="one", status=0, output="hello\nworld")
    assert results["two"].status == 3 and results["two"].output == ""
    assert "three" not in results  # never ended: the test says so with the console's tail


def test_init_script_hides_btf_only_when_asked(tmp_path: Path) -> None:
    checks = [vm.Check(name="c", script="true")]
    hidden = vm.init_script(vm.Guest(arch="x86_64", kernel=tmp_path, checks=checks))
    visible = vm.init_script(vm.Guest(arch="x86_64", kernel=tmp_path, checks=checks,
                                      hide_btf=False))
    assert "/sys/kernel/btf" in hidden.split("mount -t tmpfs", 1)[1].splitlines()[0]
    assert "mount -t tmpfs" not in visible
    # The kernel's own BTF is copied before it is hidden, for the checks that compare with it.
    assert hidden.index("/tmp/kernel.btf") < hidden.index("mount -t tmpfs")
    assert "ID=debian" in hidden and 'VERSION_ID="12"' in hidden
