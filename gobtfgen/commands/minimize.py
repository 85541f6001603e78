"""gobtfgen minimize INPUT OUTPUT OBJECT...: one kernel, in bpftool gen min_core_btf's order."""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

from gobtfgen.archive import SUFFIX, check_btf, read_kernel_btf
from gobtfgen.cache import atomic_write
from gobtfgen.commands.generate import add_minimizer_flags
from gobtfgen.errors import InputError, UsageError
from gobtfgen.minimize import MinimizeError, get_minimizer
from gobtfgen.objects import read_object

_FIX_KERNEL = ("pass a raw kernel BTF (/sys/kernel/btf/vmlinux, a .btf file) or a btfhub "
               ".btf.tar.xz")


def register(sub: Any) -> None:
    p = sub.add_parser(
        "minimize", help="minimize one kernel BTF for BPF objects (like bpftool gen min_core_btf)",
        description="Write to OUTPUT the part of the kernel BTF INPUT (raw BTF, or a btfhub "
                    ".btf.tar.xz) that the CO-RE relocations of the OBJECTs need.")
    p.add_argument("input", metavar="INPUT", help="kernel BTF: raw .btf or btfhub .btf.tar.xz")
    p.add_argument("output", metavar="OUTPUT", help="minimized BTF to write")
    p.add_argument("objects", metavar="OBJECT", nargs="+", help="BPF objects (with .BTF.ext)")
    add_minimizer_flags(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    source = Path(args.input)
    if not source.is_file():
        raise UsageError(f"{source}: no such kernel BTF file")
    objects = [Path(o) for o in args.objects]
    parsed = []
    for path in objects:
        if not path.is_file():
            raise UsageError(f"{path}: no such object file")
        obj = read_object(path)
        if obj.core_relocations == 0:
            raise InputError(f"{path}: has no CO-RE relocations (.BTF.ext), so it needs no "
                             "kernel BTF; leave it out")
        parsed.append(obj)
    minimizer = get_minimizer(args.minimizer, bpftool=args.bpftool)
    with tempfile.TemporaryDirectory(prefix="gobtfgen-") as tmp:
        if source.name.endswith(SUFFIX):
            raw = Path(tmp) / "kernel.btf"
            btf = read_kernel_btf(source)
            raw.write_bytes(btf)
        else:
            raw = source
            btf = source.read_bytes()
        little = check_btf(btf, what=source, fix=_FIX_KERNEL)
        for obj in parsed:
            if obj.little_endian != little:
                raise InputError(
                    f"{obj.path}: a {'little' if obj.little_endian else 'big'}-endian object "
                    f"for a {'little' if little else 'big'}-endian kernel BTF ({source}); "
                    f"build it for the kernel's byte order (bpf2go's "
                    f"{'bpfel' if little else 'bpfeb'} object)")
        try:
            out = minimizer.minimize(raw, objects)
        except MinimizeError as exc:
            raise InputError(f"{source}: {exc}") from None
    atomic_write(Path(args.output), out)
    return 0
