"""gobtfgen check: which CO-RE relocations of which programs fail on which kernels."""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gobtfgen import checker, fetch
from gobtfgen.archive import Kernel, read_archive_file, scan_archive
from gobtfgen.btf.ext import ObjectCache, ObjectError, ParsedObject
from gobtfgen.cache import Cache, default_cache_dir
from gobtfgen.errors import GobtfgenError, InputError, UsageError
from gobtfgen.objects import discover, read_object
from gobtfgen.options import add, add_cache_limit, add_kernel_filters, parse_cache_limit
from gobtfgen.pipeline import kernel_btf
from gobtfgen.pool import process_pool

_objects = ObjectCache()


def register(sub: Any) -> None:
    p = sub.add_parser(
        "check", help="report which CO-RE relocations fail on which archive kernels",
        description="Resolve every CO-RE relocation of the BPF objects against every selected "
                    "kernel of a btfhub-archive with libbpf's rules, and report the ones that "
                    "fail, grouped by program and access, marked guarded when the program "
                    "checks existence of the same type first. Exits 1 when an unguarded "
                    "relocation fails on a selected kernel.")
    add(p, "--object", env="GOBTFGEN_OBJECTS", kind="list", dest="objects", metavar="FILE",
        help="a BPF object (repeatable); none: bpf2go outputs found in --output-dir")
    add(p, "--archive", env="BTFHUB_ARCHIVE", metavar="DIR",
        help="btfhub-archive directory (<id>/<version>/<arch>/<release>.btf.tar.xz); default: "
             "the archive `gobtfgen fetch` made")
    add(p, "--arch", env="GOBTFGEN_ARCH", default="x86_64,arm64",
        help="comma-separated arches to check: x86_64 (amd64), arm64 (aarch64)")
    add_kernel_filters(p)
    add(p, "--output-dir", env="GOBTFGEN_OUTPUT_DIR", default=".", metavar="DIR",
        help="where to look for bpf2go objects when no --object is given")
    add(p, "--jobs", "-j", env="GOBTFGEN_JOBS", default=os.cpu_count() or 1, kind="int",
        metavar="N", help="kernels checked in parallel")
    add(p, "--cache-dir", env="GOBTFGEN_CACHE_DIR", default=str(default_cache_dir()),
        metavar="DIR", help="generate's cache: kernels it decompressed and indexed are read "
                            "from there, and kernels checked first are kept there for it")
    add_cache_limit(p)
    add(p, "--json", env="GOBTFGEN_CHECK_JSON", kind="bool", help="print a JSON report")
    add(p, "--all-kernels", env="GOBTFGEN_CHECK_ALL", kind="bool",
        help="the full detail: every failure of every program, guarded ones too, with every "
             "kernel (default: unguarded failures by missing type, kernels folded)")
    p.add_argument("--verbose", dest="all_kernels", action="store_true",
                   help="the same as --all-kernels")
    add(p, "--any-arch", env="GOBTFGEN_CHECK_ANY_ARCH", kind="bool",
        help="also check objects against kernels of an arch they were not built for (told by "
             "the pt_regs registers they read), and count those failures")
    p.set_defaults(func=run)


def _parse(path: Path) -> ParsedObject:
    try:
        return _objects.get(path)
    except (ObjectError, OSError) as exc:
        raise InputError(f"{path}: {exc}; pass a BPF object built by clang -g") from None


def _kernel_btf(kernel: Kernel, object_paths: Sequence[Path],
                cache: Cache) -> tuple[bytes, Path | None]:
    """The kernel's BTF, from generate's cache when it has it (no xz; stripped unless the
    objects need the full one), and where its type index is kept. Cache writes are best
    effort: a read-only cache only costs time."""
    data = read_archive_file(kernel.path)  # read once: hashed, and inflated when not cached
    sha = hashlib.sha256(data).hexdigest()
    btf, _, _ = kernel_btf(cache, sha, kernel, data, object_paths)
    return btf, cache.index_path(sha)


def _check_one(kernel: Kernel, object_paths: Sequence[Path],
               cache_dir: str) -> checker.KernelReport:
    objs = [_parse(p) for p in object_paths]
    try:
        raw, index_file = _kernel_btf(kernel, object_paths, Cache(Path(cache_dir)))
    except GobtfgenError as exc:
        return checker.KernelReport(kernel=kernel.key, error=str(exc))
    return checker.check_kernel(kernel.key, raw, objs, index_file=index_file)


def run(args: argparse.Namespace) -> int:
    from gobtfgen.options import parse_arches

    if not args.archive:
        fetched = fetch.default_archive()
        if fetched is None:
            raise UsageError("no archive: pass --archive DIR or set BTFHUB_ARCHIVE to a "
                             "btfhub-archive checkout (gobtfgen fetch downloads one)")
        args.archive = str(fetched)
    if args.jobs < 1:
        raise UsageError(f"--jobs {args.jobs}: must be at least 1")
    paths = [Path(o) for o in args.objects] or discover(Path(args.output_dir))
    if not paths:
        raise UsageError(f"no BPF objects: pass --object FILE (none found in {args.output_dir})")
    arches = parse_arches(args.arch)
    per_arch: dict[str, list[Path]] = {a: [] for a in arches}
    parsed: list[ParsedObject] = []
    foreign: list[tuple[Path, str, list[str]]] = []  # (object, built for, arches left out)
    unrelocated: list[str] = []
    for path in paths:
        if not path.is_file():
            raise UsageError(f"{path}: no such object file; check the --object path")
        info = read_object(path)
        if info.core_relocations == 0:
            unrelocated.append(str(path))
            continue
        obj = _parse(path)
        parsed.append(obj)
        # Generic (non-bpf2go) little-endian objects apply to every arch, unless the pt_regs
        # registers they read say which arch they were built for: an x86 kprobe fails on
        # every arm64 kernel by construction, which says nothing about those kernels.
        applies = list(info.arches or (arches if info.little_endian else ()))
        built_for = checker.target_arch(obj) if info.target is None else None
        if built_for is not None and not args.any_arch:
            left_out = [a for a in applies if a != built_for and a in per_arch]
            if left_out:
                foreign.append((path, built_for, left_out))
            applies = [a for a in applies if a == built_for]
        for arch in applies:
            if arch in per_arch:
                per_arch[arch].append(path)
    if unrelocated:  # one line however many: helper and map-only objects are common
        print(f"gobtfgen: note: no CO-RE relocations, nothing to check: "
              f"{', '.join(unrelocated)}", file=sys.stderr)
    if not parsed:
        # Nothing they do depends on kernel types: they run the same on every kernel.
        print("gobtfgen check: no object has CO-RE relocations, nothing to check")
        return 0
    with fetch.reading(Path(args.archive)):
        return _check(args, Path(args.archive), arches, per_arch, parsed, foreign)


def _check(args: argparse.Namespace, archive: Path, arches: Sequence[str],
           per_arch: dict[str, list[Path]], parsed: list[ParsedObject],
           foreign: Sequence[tuple[Path, str, list[str]]] = ()) -> int:
    limit = parse_cache_limit(args.cache_limit)  # a bad value is said before any work
    kernels, problems = scan_archive(archive, arches, tuple(args.include), tuple(args.exclude))
    kernels = fetch.kernel_files(archive, kernels)
    for problem in problems:
        print(f"gobtfgen: {problem}", file=sys.stderr)
    if not kernels:
        raise InputError(f"no kernels selected in {args.archive} for {','.join(arches)}; "
                         "check the archive layout and the filters")
    todo = [(k, per_arch.get(k.arch, [])) for k in kernels]
    todo = [(k, objs) for k, objs in todo if objs]
    if args.jobs > 1 and len(todo) > 1:
        with process_pool(min(args.jobs, len(todo))) as pool:
            reports = list(pool.map(_check_one, [k for k, _ in todo], [o for _, o in todo],
                                    [args.cache_dir] * len(todo), chunksize=4))
    else:
        reports = [_check_one(k, objs, args.cache_dir) for k, objs in todo]
    Cache(Path(args.cache_dir), limit).evict()
    notes = []
    for path, built_for, left_out in foreign:
        n = sum(1 for k in kernels if k.arch in left_out)
        if n:
            notes.append(f"{path.name} reads {built_for} registers of pt_regs (built for "
                         f"{built_for}): not checked on the {n} {'/'.join(left_out)} kernel(s); "
                         "--any-arch checks and counts it there")
    if args.json:
        sys.stdout.write(checker.format_json(reports, parsed, notes=notes))
    else:
        sys.stdout.write(checker.format_human(reports, parsed, verbose=args.all_kernels,
                                              notes=notes))
    groups = checker.group(reports)
    if checker.has_unguarded(groups):
        return 1
    if not any(r.error is None for r in reports):
        return 1
    return 0
