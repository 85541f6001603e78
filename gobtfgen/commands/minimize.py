"""gobtfgen minimize INPUT OUTPUT OBJECT...: one kernel, in bpftool gen min_core_btf's order.

A drop-in for `bpftool [OPTIONS] gen min_core_btf INPUT OUTPUT OBJECT [OBJECT...]`: the same
positional arguments, bpftool's global options accepted wherever they stand (bpftool's
getopt_long permutes argv, so Makefiles put them first or last), and objects without CO-RE
relocations skipped with a note, as bpftool ignores them (libbpf tool collections pass
`*.bpf.o`, helpers and map-only objects included).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

# Only what every run needs is imported here: a one-kernel command pays for each import in
# every process (pyelftools for -B's .ko and generate's pipeline are lazy).
from gobtfgen import tools
from gobtfgen.archive import (
    SUFFIX,
    check_btf,
    kernel_btf_of,
    read_archive_file,
    read_kernel_btf,
)
from gobtfgen.btf import BTFWriter
from gobtfgen.cache import Cache, atomic_write, default_cache_dir
from gobtfgen.commands.minimize_fast import _BPFTOOL_NOOP_FLAGS, bpftool_order, skipped_note
from gobtfgen.errors import InputError, UsageError
from gobtfgen.minimize import MinimizeError, get_minimizer
from gobtfgen.minimize import replay as kept
from gobtfgen.objects import read_object
from gobtfgen.options import add_minimizer_flags

__all__ = ["bpftool_order", "register", "run"]

_FIX_KERNEL = ("pass a raw kernel BTF (/sys/kernel/btf/vmlinux, a .btf file) or a btfhub "
               ".btf.tar.xz")


def register(sub: Any) -> None:
    p = sub.add_parser(
        "minimize", help="minimize one kernel BTF for BPF objects (like bpftool gen min_core_btf)",
        description="Write to OUTPUT the part of the kernel BTF INPUT (raw BTF, or a btfhub "
                    ".btf.tar.xz) that the CO-RE relocations of the OBJECTs need.")
    p.add_argument("input", metavar="INPUT", help="kernel BTF: raw .btf or btfhub .btf.tar.xz")
    p.add_argument("output", metavar="OUTPUT", help="minimized BTF to write")
    p.add_argument("objects", metavar="OBJECT", nargs="+",
                   help="BPF objects; those without CO-RE relocations are skipped with a note")
    add_minimizer_flags(p)
    # bpftool's global options (main.c), so `bpftool -d gen min_core_btf ...` lines port as
    # they are: -d prints the commands run, like gobtfgen -v; the others change nothing here
    # (min_core_btf prints nothing and pins nothing).
    g = p.add_argument_group("bpftool's global options (accepted for drop-in use)")
    g.add_argument("-d", "--debug", action="store_true", help="as gobtfgen -v")
    for short, long in _BPFTOOL_NOOP_FLAGS:
        g.add_argument(short, long, action="store_true", help=argparse.SUPPRESS)
    # bpftool's -B names the base of split BTF, but its min_core_btf cannot minimize split
    # BTF; here INPUT is then a module's split BTF (raw, /sys/kernel/btf/<module>, or a .ko),
    # merged after its base as `archive add --modules` does, and the merged BTF minimized.
    p.add_argument("-B", "--base", "--base-btf", dest="base_btf", metavar="VMLINUX",
                   help="INPUT is split BTF (a module's: raw, /sys/kernel/btf/<module> or a "
                        ".ko) against this vmlinux BTF (raw or .btf.tar.xz); the output holds "
                        "the types of both the objects need")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.debug:
        tools.VERBOSE = True
    source = Path(args.input)
    if not source.is_file():
        raise UsageError(f"{source}: no such kernel BTF file")
    parsed = []
    skipped = []
    digests = []
    for i, path in enumerate(Path(o) for o in args.objects):
        if not path.is_file():
            raise UsageError(f"{path}: no such object file")
        obj = read_object(path)
        digests.append(kept.signature_digest(obj.core_relocations, obj.signature))
        if obj.core_relocations == 0:
            print(skipped_note(str(path)), file=sys.stderr)
            skipped.append(i)
            continue
        parsed.append(obj)
    # Taken before the kernel is read: what a kept result is keyed by (replay).
    inputs = kept.inputs(args.input, args.objects, args.minimizer, digests) \
        if args.base_btf is None else None
    objects = [obj.path for obj in parsed]
    minimizer = get_minimizer(args.minimizer, bpftool=args.bpftool)
    with tempfile.TemporaryDirectory(prefix="gobtfgen-") as tmp:
        if args.base_btf is not None:
            raw = Path(tmp) / "merged.btf"
            btf = _merge_split(Path(args.base_btf), source)
            raw.write_bytes(btf)
            file_sha = None
        elif source.name.endswith(SUFFIX):
            raw = Path(tmp) / "kernel.btf"
            packed = read_archive_file(source)
            file_sha = kept.file_sha256(packed) if inputs is not None else None
            btf = kernel_btf_of(packed, what=source)
            raw.write_bytes(btf)
        else:
            raw = source
            btf = source.read_bytes()
            file_sha = None
        btf_sha = hashlib.sha256(btf).hexdigest()
        little = check_btf(btf, what=source, fix=_FIX_KERNEL)
        for obj in parsed:
            if obj.little_endian != little:
                raise InputError(
                    f"{obj.path}: a {'little' if obj.little_endian else 'big'}-endian object "
                    f"for a {'little' if little else 'big'}-endian kernel BTF ({source}); "
                    f"build it for the kernel's byte order (bpf2go's "
                    f"{'bpfel' if little else 'bpfeb'} object)")
        if not objects:
            # bpftool's output for objects without relocations: no type, the empty string.
            out = BTFWriter().to_bytes()
        else:
            try:
                out = minimizer.minimize(raw, objects, data=btf, index=_index_path(btf_sha))
            except MinimizeError as exc:
                raise InputError(f"{source}: {exc}") from None
    atomic_write(Path(args.output), out)
    if inputs is not None:
        kept.store(inputs, file_sha or btf_sha, out, skipped)
    return 0


def _index_path(btf_sha: str) -> Path | None:
    """Where generate's cache keeps this kernel's type index (raw/<sha>.idx, keyed here by the
    raw BTF's sha256): a kernel minimized before skips framing its records, the first walk.
    GOBTFGEN_CACHE_DIR as generate reads it; an empty value turns the cache off."""
    root = os.environ.get("GOBTFGEN_CACHE_DIR", str(default_cache_dir()))
    if not root:
        return None
    return Cache(Path(root)).index_path(btf_sha)


def _merge_split(base_path: Path, source: Path) -> bytes:
    """The base's BTF with the split BTF in source merged after it (source: raw split BTF or a
    module .ko)."""
    if not base_path.is_file():
        raise UsageError(f"{base_path}: no such base BTF file; pass the vmlinux BTF the module "
                         "was built against (/sys/kernel/btf/vmlinux, a .btf or .btf.tar.xz)")
    base = (read_kernel_btf(base_path) if base_path.name.endswith(SUFFIX)
            else base_path.read_bytes())
    check_btf(base, what=base_path, fix=_FIX_KERNEL)
    data = source.read_bytes()
    from gobtfgen import modules
    from gobtfgen.btf import split

    blob = modules.ko_btf(data, str(source), None) if data[:4] == b"\x7fELF" \
        or modules.module_name(source.name) else data
    if blob is None:
        raise InputError(f"{source}: the module has no .BTF section; build it with "
                         "CONFIG_DEBUG_INFO_BTF_MODULES=y")
    try:
        return split.merge(base, [(str(source), blob)]).btf
    except split.SplitError as exc:
        raise InputError(f"{exc} (-B {base_path})") from None
