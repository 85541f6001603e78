"""gobtfgen generate: BPF objects + btfhub-archive -> minimized BTF payloads + Go + Makefile."""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path
from typing import Any

from gobtfgen import fetch, pipeline, render, targets
from gobtfgen.cache import default_cache_dir
from gobtfgen.errors import UsageError
from gobtfgen.minimize import available
from gobtfgen.options import (
    add,
    add_cache_limit,
    add_kernel_filters,
    add_minimizer_flags,
    parse_arches,
    parse_cache_limit,
)
from gobtfgen.report import human_bytes, is_skip_note, print_problems
from gobtfgen.targets import go, ld, targz
from gobtfgen.write import MANIFEST

_PACKAGE_RE = re.compile(rb"^package\s+([A-Za-z_][A-Za-z0-9_]*)", re.M)


def register(sub: Any) -> None:
    p = sub.add_parser(
        "generate", help="minimize kernel BTFs for BPF objects and generate Go code embedding them",
        description="Minimize every selected kernel of a btfhub-archive for the CO-RE "
                    "relocations of the BPF objects, pack the results per arch, and write Go "
                    "code (GetBTFSpec, LoadBTFSpec, LookupBTF), the payloads, a manifest, a "
                    "kernel list and Makefile.btfgen into the output directory.",
        epilog="From go generate: //go:generate gobtfgen generate --archive $BTFHUB_ARCHIVE "
               "(the package name comes from $GOPACKAGE).")
    add(p, "--object", env="GOBTFGEN_OBJECTS", kind="list", dest="objects", metavar="FILE",
        help="a BPF object (repeatable); none: bpf2go outputs found in the output directory")
    add(p, "--archive", env="BTFHUB_ARCHIVE", metavar="DIR",
        help="btfhub-archive directory (<id>/<version>/<arch>/<release>.btf.tar.xz); default: "
             "the archive `gobtfgen fetch` made in $BTFHUB_CACHE_DIR or "
             f"{fetch.default_cache_dir()}")
    add(p, "--arch", env="GOBTFGEN_ARCH", default="x86_64,arm64",
        help="comma-separated arches to embed: x86_64 (amd64), arm64 (aarch64)")
    add_kernel_filters(p)
    add(p, "--pkg", env="GOPACKAGE", metavar="NAME",
        help="Go package of the generated code (default: the package of the Go files in the "
             "output directory, else main)")
    add(p, "--output-dir", env="GOBTFGEN_OUTPUT_DIR", default=".", metavar="DIR",
        help="where the Go files, payloads, manifest and Makefile.btfgen go")
    add(p, "--jobs", "-j", env="GOBTFGEN_JOBS", default=os.cpu_count() or 1, kind="int",
        metavar="N", help="kernels minimized in parallel")
    add_minimizer_flags(p)
    add(p, "--lang", env="GOBTFGEN_LANG", default="go", choices=list(targets.LANGS),
        help="the runtime to generate: go (btfgen*.go, GetBTFSpec), c (btfgen.c and "
             "btfgen.h, ensure_core_btf() for libbpf programs) or rust (btfgen.rs, find_btf() "
             "for aya and libbpf-rs programs)")
    add(p, "--format", env="GOBTFGEN_FORMAT", default="source", dest="formats",
        metavar="LIST",
        help="comma-separated outputs: source (the --lang code with the payload), tar.gz "
             f"({targz.TARGZ_FILE}, as bcc's libbpf-tools and bpf-compatible load it), ld "
             f"(also {ld.LD_FILE}, the tar.gz linked with `ld -r -b binary`)")
    add(p, "--ld", env="LD", default="ld", metavar="PATH", help="ld for --format ld")
    add(p, "--env-prefix", env="GOBTFGEN_ENV_PREFIX", default="BTFGEN", metavar="PREFIX",
        help="prefix of the generated program's environment variables (PREFIX_BTF_FILE "
             "overrides the BTF at run time)")
    add(p, "--cache-dir", env="GOBTFGEN_CACHE_DIR", default=str(default_cache_dir()),
        metavar="DIR", help="per-kernel cache")
    add_cache_limit(p)
    add(p, "--strict", env="GOBTFGEN_STRICT", kind="bool",
        help="exit 1 when any kernel failed or any warning was reported")
    add(p, "--progress", env="GOBTFGEN_PROGRESS", kind="bool",
        help="show the progress bar even when stderr is not a terminal")
    add(p, "--quiet", "-q", env="GOBTFGEN_QUIET", kind="bool",
        help="print only warnings and errors")
    p.set_defaults(func=run)


def detect_package(directory: Path) -> str | None:
    """The package clause of the hand-written Go files in directory, if they agree."""
    names = set()
    for path in sorted(directory.glob("*.go")):
        if path.name.endswith("_test.go"):
            continue
        try:
            head = path.read_bytes()[:8192]
        except OSError:
            continue
        if render.GENERATED_MARK.encode() in head.split(b"\n", 1)[0]:
            continue
        match = _PACKAGE_RE.search(head)
        if match:
            names.add(match[1].decode())
    return names.pop() if len(names) == 1 else None


def options_from_args(args: argparse.Namespace) -> pipeline.GenerateOptions:
    if not args.archive:
        fetched = fetch.default_archive()
        if fetched is None:
            raise UsageError("no archive: pass --archive DIR or set BTFHUB_ARCHIVE to a "
                             "btfhub-archive checkout (gobtfgen fetch downloads one, gobtfgen "
                             "archive add makes one from this host's kernel)")
        args.archive = str(fetched)
        if not args.quiet:
            print(f"gobtfgen: archive {fetched} (made by gobtfgen fetch)", file=sys.stderr)
    if args.jobs < 1:
        raise UsageError(f"--jobs {args.jobs}: must be at least 1")
    output_dir = Path(args.output_dir)
    package = args.pkg or detect_package(output_dir) or "main"
    go.validate_package(package)
    render.validate_env_prefix(args.env_prefix)
    if args.minimizer not in available():
        raise UsageError(f"--minimizer {args.minimizer} is not built into this gobtfgen; use "
                         f"{' or '.join(available())}")
    return pipeline.GenerateOptions(
        objects=tuple(Path(o) for o in args.objects), archive=Path(args.archive),
        archive_arg=args.archive, arches=parse_arches(args.arch),
        include=tuple(args.include), exclude=tuple(args.exclude), package=package,
        output_dir=output_dir, jobs=args.jobs, minimizer=args.minimizer, bpftool=args.bpftool,
        env_prefix=args.env_prefix, cache_dir=Path(args.cache_dir),
        cache_limit=parse_cache_limit(args.cache_limit), strict=args.strict,
        progress=True if args.progress else None, lang=args.lang,
        formats=targets.parse_formats(args.formats), ld=args.ld)


def run(args: argparse.Namespace) -> int:
    options = options_from_args(args)
    outcome = pipeline.build(options)
    err = sys.stderr
    # --quiet drops notes, except those naming inputs left out of the output.
    problems = [p for p in outcome.problems
                if not args.quiet or p.level.value != "note" or is_skip_note(p)]
    print_problems(problems, where=str(Path(options.output_dir) / MANIFEST))
    if not args.quiet:
        c = outcome.counts
        print(f"gobtfgen: {sum(c.values())} kernels: {c['minimized']} minimized, "
              f"{c['cached']} from cache, {c['skipped']} skipped, {c['failed']} failed "
              f"({outcome.minimizer_identity})", file=err)
        for arch, s in sorted(outcome.stats.items()):  # the same order on every run
            if s.entries and "source" in options.formats:
                ratio = 100.0 * s.payload_bytes / max(s.raw_bytes, 1)
                shown = pipeline.payload_file(targets.selected(options.lang, options.formats),
                                              arch)
                print(f"gobtfgen: {shown}: {s.entries} kernels, {s.blobs} "
                      f"unique BTFs, {human_bytes(s.raw_bytes)} minimized -> "
                      f"{human_bytes(s.payload_bytes)} ({ratio:.1f}%)", file=err)
        w = outcome.written
        if w is not None:
            print(f"gobtfgen: {options.output_dir}: {len(w.written)} written, "
                  f"{len(w.unchanged)} unchanged, {len(w.removed)} removed, in "
                  f"{outcome.elapsed:.2f} s", file=err)
        # The hint is for a person at a terminal, not for every make or go generate run.
        if options.lang == "go" and "source" in options.formats and err.isatty() \
                and not os.environ.get("GOFILE"):
            print(f"gobtfgen: to regenerate from go generate, put in a .go file of the "
                  f"package:\n  {outcome.go_generate}", file=err)
    return outcome.exit_code
