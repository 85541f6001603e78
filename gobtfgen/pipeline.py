"""The generate pipeline, in order:

    plan (objects, kernels) -> minimize each kernel (parallel, cached) -> pack per arch
    -> render -> write atomically -> report

`plan()` and `minimize_all()` have no side effects on the output directory; `build()` runs the
stages and returns the outcome with the problems it collected.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import shlex
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from gobtfgen import __version__, fetch, pack, render, targets, tools
from gobtfgen.archive import (
    ARCHES,
    Kernel,
    archive_commit,
    check_btf,
    kernel_btf_of,
    scan_archive,
)
from gobtfgen.btf import BTFError, native, strip
from gobtfgen.btf.ext import ObjectCache, ObjectError
from gobtfgen.cache import DEFAULT_LIMIT, Cache, StatMemo, minimize_key
from gobtfgen.errors import GobtfgenError, InputError, Level, Problem
from gobtfgen.minimize import MinimizeError, Minimizer, builtin_identity, get_minimizer
from gobtfgen.objects import BpfObject, discover, read_object_memo, signature_of
from gobtfgen.report import Progress
from gobtfgen.write import MANIFEST, WriteResult, output_lock, write_outputs

if TYPE_CHECKING:
    from concurrent.futures import Executor, Future

KERNELS_LIST = "btfgen_kernels.txt"
MAKEFILE = "Makefile.btfgen"
# Written by the Makefile.btfgen fragment (never by gobtfgen): what make last asked for.
MAKEFILE_ARGS = "Makefile.btfgen.args"


@dataclass(frozen=True, kw_only=True)
class GenerateOptions:
    objects: tuple[Path, ...]  # explicit objects; empty: discover bpf2go outputs in output_dir
    archive: Path
    archive_arg: str  # the archive as the user wrote it (for the Makefile and the manifest)
    arches: tuple[str, ...]
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    package: str = "main"
    output_dir: Path = Path(".")
    jobs: int = 1
    minimizer: str = "bpftool"
    bpftool: str = "bpftool"
    env_prefix: str = "BTFGEN"
    cache_dir: Path = Path(".")
    cache_limit: int = DEFAULT_LIMIT  # bytes of disk the cache may keep after a run
    strict: bool = False
    progress: bool | None = None  # None: when stderr is a terminal
    lang: str = "go"  # the runtime of the "source" format: one of targets.LANGS
    formats: tuple[str, ...] = ("source",)  # of targets.FORMATS
    ld: str = "ld"


@dataclass(frozen=True, kw_only=True)
class Plan:
    kernels: tuple[Kernel, ...]
    objects: tuple[BpfObject, ...]
    objects_by_arch: dict[str, tuple[BpfObject, ...]]
    signature_by_arch: dict[str, str]
    problems: tuple[Problem, ...]
    # The archive's path and commit(s), read together with its kernels.
    archive_doc: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True, slots=True)
class KernelResult:
    kernel: Kernel
    status: str  # "minimized" | "cached" | "failed" | "skipped"
    btf: bytes | None = None
    message: str | None = None
    kernel_sha: str | None = None
    stamp: list[object] | None = None  # the archive file's stat when its hash was computed
    # "<size>:<sha256>" of the kernel's full raw BTF: the Go runtime's PreferEmbedded compares
    # the running kernel's /sys/kernel/btf/vmlinux with it.
    full_sum: str | None = None
    cache_bytes: int = 0  # disk the worker's new cache entries for this kernel take


@dataclass(frozen=True, kw_only=True)
class Outcome:
    results: tuple[KernelResult, ...]
    problems: tuple[Problem, ...]
    stats: dict[str, pack.PackStats]
    written: WriteResult | None
    elapsed: float
    exit_code: int
    minimizer_identity: str = ""
    counts: dict[str, int] = field(default_factory=dict)
    go_generate: str = ""


# ---- plan ------------------------------------------------------------------------------------

def plan(options: GenerateOptions, memo: StatMemo | None = None) -> Plan:
    memo = memo or Cache(options.cache_dir).memo()
    problems: list[Problem] = []
    paths = list(options.objects)
    if not paths:
        paths = discover(options.output_dir)
        if not paths:
            raise InputError(f"no BPF objects in {options.output_dir} (looked for bpf2go's "
                             "*_bpfel.o, *_<arch>_bpfel.o, *_bpfel_x86.o); run bpf2go first or "
                             "pass --object FILE")
    objects: list[BpfObject] = []
    warned: set[str] = set()
    for path in paths:
        if not path.is_file():
            raise InputError(f"{path}: no such object file; check the --object path")
        obj = read_object_memo(path, memo)
        if obj.core_relocations == 0:
            problems.append(Problem(level=Level.NOTE, subject=str(path),
                                    message="no CO-RE relocations (.BTF.ext): needs no kernel "
                                            "BTF, skipped"))
            continue
        if not obj.little_endian:
            problems.append(Problem(level=Level.NOTE, subject=str(path),
                                    message="big-endian object: btfhub has no big-endian "
                                            "kernels, skipped"))
            continue
        if not obj.arches:
            problems.append(Problem(level=Level.NOTE, subject=str(path),
                                    message=f"target {obj.target} has no btfhub kernels, skipped"))
            continue
        # One warning per program, not per object (bpf2go builds one object per arch), and
        # only for objects of the arches being embedded.
        for prog in obj.kernel_btf_programs:
            if prog in warned or not set(obj.arches) & set(options.arches):
                continue
            warned.add(prog)
            problems.append(Problem(
                level=Level.WARNING, subject=f"{path.name}:{prog}",
                message="attaches through the running kernel's own BTF (fentry/fexit/tp_btf/"
                        "lsm/iter/struct_ops); no embedded BTF can rescue it on kernels without "
                        "BTF: skip it there"))
        objects.append(obj)
    if not objects:
        raise InputError("none of the BPF objects has CO-RE relocations for a btfhub arch "
                         f"({', '.join(str(p) for p in paths)}); nothing needs embedded BTF")
    by_arch = {arch: tuple(o for o in objects if arch in o.arches) for arch in options.arches}
    kernels, scan_problems = scan_archive(options.archive, options.arches, options.include,
                                          options.exclude)
    # Kernels of a fetched archive are read from the trees their links point into now, which
    # stay while this run holds fetch.reading(), whatever a concurrent fetch does.
    kernels = fetch.kernel_files(options.archive, kernels)
    archive_doc = _archive_doc(options)
    problems += scan_problems
    if not kernels:
        raise InputError(f"no kernels selected in {options.archive} for "
                         f"{','.join(options.arches)}"
                         + (f" with --include {' '.join(options.include)}"
                            if options.include else "")
                         + (f" --exclude {' '.join(options.exclude)}" if options.exclude else "")
                         + "; check the archive layout (<id>/<version>/<arch>/<release>"
                           ".btf.tar.xz) and the filters")
    return Plan(kernels=tuple(kernels), objects=tuple(objects), objects_by_arch=by_arch,
                signature_by_arch={a: signature_of(objs) for a, objs in by_arch.items() if objs},
                problems=tuple(problems), archive_doc=archive_doc)


# ---- minimize --------------------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class Task:
    kernel: Kernel
    known_sha: str | None
    objects: tuple[Path, ...]
    signature: str
    minimizer: str
    minimizer_options: tuple[tuple[str, str], ...]
    cache_root: Path


_minimizers: dict[tuple[str, tuple[tuple[str, str], ...]], Minimizer] = {}
_minimizers_lock = threading.Lock()


def _minimizer_for(name: str, options: tuple[tuple[str, str], ...]) -> Minimizer:
    # One instance per process: a Python minimizer parses each object once and serves every
    # kernel this worker gets.
    with _minimizers_lock:
        key = (name, options)
        if key not in _minimizers:
            _minimizers[key] = get_minimizer(name, **dict(options))
        return _minimizers[key]


def _minimizer_identity(options: GenerateOptions, memo: StatMemo) -> str:
    """The minimizer's identity, remembered by the bpftool binary's stat: an unchanged re-run
    need not run `bpftool version` (a process start) to know it."""
    builtin = builtin_identity(options.minimizer)
    if builtin is not None:
        return builtin  # without importing the minimizer: the fast path may need no more
    exe = Path(tools.resolve(options.bpftool, tool="bpftool")).resolve()
    known = memo.lookup(exe, "minimizer-identity")
    if isinstance(known, str):
        return known
    identity = _fresh_minimizer(options.minimizer, _minimizer_options(options)).identity()
    memo.record(exe, StatMemo.stamp(exe), identity, "minimizer-identity")
    return identity


def _fresh_minimizer(name: str, options: tuple[tuple[str, str], ...]) -> Minimizer:
    """A minimizer checked now (bpftool found and recent enough, with today's PATH), which the
    worker threads of this process then share."""
    minimizer = get_minimizer(name, **dict(options))
    with _minimizers_lock:
        _minimizers[(name, options)] = minimizer
    return minimizer


def minimize_kernel(task: Task) -> KernelResult:
    """One kernel: content hash, cache lookup, inflate, minimize, store. Runs in a worker.
    Whatever goes wrong becomes this kernel's problem; the run goes on."""
    try:
        return _minimize_kernel(task)
    except Exception as exc:  # a bug must not take the other kernels down with it
        return KernelResult(kernel=task.kernel, status="failed",
                            message=f"internal error ({type(exc).__name__}: {exc}); please "
                                    "report it with this kernel file")


def _minimize_kernel(task: Task) -> KernelResult:
    kernel = task.kernel
    cache = Cache(task.cache_root)
    data: bytes | None = None
    stamp: list[object] | None = None
    try:
        sha = task.known_sha
        if sha is None:
            stamp = StatMemo.stamp(kernel.path)
            data = kernel.path.read_bytes()
            sha = hashlib.sha256(data).hexdigest()
    except OSError as exc:
        return KernelResult(kernel=kernel, status="failed",
                            message=f"cannot read {kernel.path} ({exc.strerror})")
    minimizer = _minimizer_for(task.minimizer, task.minimizer_options)
    key = minimize_key(sha, task.signature, minimizer.identity())
    cached = cache.get_min(key)
    if cached is None:
        with cache.computing(key):
            cached = cache.get_min(key)  # another worker may have just made it
            if cached is None:
                return _compute(task, cache, minimizer, key, sha, data, stamp)
    full_sum = cache.get_fullsum(sha)
    if full_sum is None and cached.btf:
        # A cache entry older than the full-BTF checksums, or whose checksum was evicted.
        full_sum = _recover_fullsum(cache, sha, kernel, data)
    return KernelResult(kernel=kernel, status="cached" if cached.btf else "failed",
                        btf=cached.btf, message=cached.error, kernel_sha=sha, stamp=stamp,
                        full_sum=full_sum)


def fullsum_of(raw: bytes) -> str:
    """What PreferEmbedded compares a running kernel's BTF file with: "<size>:<sha256>"."""
    return f"{len(raw)}:{hashlib.sha256(raw).hexdigest()}"


def _recover_fullsum(cache: Cache, sha: str, kernel: Kernel, data: bytes | None) -> str | None:
    """The full BTF's checksum from the cached BTF when it is the full one, else from the
    archive file (a stripped entry cannot give it). None when neither can be read."""
    entry = cache.get_kernel(sha)
    try:
        if entry is not None and not entry.stripped:
            full_sum = fullsum_of(entry.btf)
        else:
            if data is None:
                data = kernel.path.read_bytes()
            full_sum = fullsum_of(kernel_btf_of(data, what=kernel.path))
    except (OSError, InputError):
        return None
    with contextlib.suppress(OSError):
        cache.put_fullsum(sha, full_sum)
    return full_sum


_objects = ObjectCache()  # this process's parsed objects, for strip.serves


def _stripped_serves(objects: Sequence[Path]) -> bool:
    """Whether these objects minimize the same against a stripped kernel (strip.serves); an
    object that does not parse says no, so the minimizer sees the full BTF and reports it."""
    try:
        return strip.serves(_objects.get_all(objects))
    except (ObjectError, OSError, BTFError):
        return False


def kernel_btf(cache: Cache, sha: str, kernel: Kernel, data: bytes | None,
               objects: Sequence[Path]) -> tuple[bytes, str | None, bool]:
    """The kernel's BTF to minimize these objects against; the full BTF's checksum when this
    call inflated the archive file (else None: the cache has it); whether it added the entry.

    From the cache when it holds the kernel (stripped, unless the objects need the full BTF);
    else from the archive file, and then the cache gets the stripped form (or the full one
    without the compiled module), the checksum first: who finds the entry finds the checksum.
    Cache writes are best effort: a full or read-only cache only costs xz next time.
    """
    entry = cache.get_kernel(sha)
    serves = entry is None or not entry.stripped or _stripped_serves(objects)
    if entry is not None and serves:
        return entry.btf, None, False
    if data is None:
        data = kernel.path.read_bytes()
    raw = kernel_btf_of(data, what=kernel.path)
    full_sum = fullsum_of(raw)  # of the full BTF, before stripping
    if entry is not None:  # stripped, and these objects need the full BTF: keep the entry
        if cache.get_fullsum(sha) is None:
            with contextlib.suppress(OSError):
                cache.put_fullsum(sha, full_sum)
        return raw, full_sum, False
    stripped = strip.strip(raw)
    with contextlib.suppress(OSError):
        cache.put_fullsum(sha, full_sum)
        cache.put_kernel(sha, raw if stripped is None else stripped,
                         stripped=stripped is not None)
    if stripped is not None and _stripped_serves(objects):
        return stripped, full_sum, True
    return raw, full_sum, True


def _compute(task: Task, cache: Cache, minimizer: Minimizer, key: str, sha: str,
             data: bytes | None, stamp: list[object] | None) -> KernelResult:
    kernel = task.kernel
    spare: Path | None = None  # the kernel BTF in a file, for a minimizer that reads one
    try:
        btf, full_sum, inflated = kernel_btf(cache, sha, kernel, data, task.objects)
        kernel_file = kernel.path
        if minimizer.reads_file:
            kernel_file = spare = _spare_file(btf)
        out = minimizer.minimize(kernel_file, task.objects, data=btf, index=cache.index_path(sha))
        check_btf(out, what=f"{minimizer.identity()} output for {kernel.key}")
        if full_sum is None:  # hashed once per kernel: read the recorded one
            full_sum = cache.get_fullsum(sha) or _recover_fullsum(cache, sha, kernel, data)
    except (InputError, MinimizeError) as exc:
        # Remember deterministic failures so an unchanged re-run runs no minimizer; a minimizer
        # killed by a signal (Ctrl-C) is not the kernel's fault and is retried next time.
        if getattr(exc, "cacheable", True):
            with contextlib.suppress(OSError):  # a full cache only costs a recomputation
                cache.put_min_error(key, str(exc))
        return KernelResult(kernel=kernel, status="failed", message=str(exc), kernel_sha=sha,
                            stamp=stamp)
    except OSError as exc:
        return KernelResult(kernel=kernel, status="failed", kernel_sha=sha, stamp=stamp,
                            message=f"cannot read {kernel.path} ({exc.strerror})")
    finally:
        if spare is not None:
            with contextlib.suppress(OSError):
                spare.unlink()
    with contextlib.suppress(OSError):
        cache.put_min(key, out)
    added = cache.entry_bytes(cache.min_path(key))
    if inflated:
        added += cache.entry_bytes(cache.raw_path(sha), cache.index_path(sha),
                                   cache.fullsum_path(sha))
    return KernelResult(kernel=kernel, status="minimized", btf=out, kernel_sha=sha, stamp=stamp,
                        full_sum=full_sum, cache_bytes=added)


def _spare_file(raw: bytes) -> Path:
    """The raw BTF in a temporary file, for a minimizer that reads a file (bpftool); the
    caller removes it."""
    path: Path | None = None
    try:
        fd, name = tempfile.mkstemp(prefix="gobtfgen-kernel-", suffix=".btf")
        path = Path(name)
        with os.fdopen(fd, "wb") as f:
            f.write(raw)
        return path
    except OSError as exc:
        if path is not None:
            with contextlib.suppress(OSError):
                path.unlink()
        raise MinimizeError(f"cannot write the kernel BTF for the minimizer ({exc.strerror}); "
                            "free space in $TMPDIR", cacheable=False) from None


def _minimizer_options(options: GenerateOptions) -> tuple[tuple[str, str], ...]:
    return (("bpftool", options.bpftool),) if options.minimizer == "bpftool" else ()


def minimize_all(p: Plan, options: GenerateOptions, memo: StatMemo, *,
                 on_result: Callable[[KernelResult], None] | None = None,
                 meanwhile: Callable[[], None] | None = None,
                 ) -> tuple[list[KernelResult], str]:
    """Minimize every kernel of the plan in a bounded pool; meanwhile runs in this thread once
    the first tasks are submitted."""
    cache = Cache(options.cache_dir, options.cache_limit)
    minimizer_options = _minimizer_options(options)
    # Build the minimizer here first: a missing or too old bpftool is one clear error up front.
    minimizer = _fresh_minimizer(options.minimizer, minimizer_options)
    results: list[KernelResult] = []
    paths_by_arch = {arch: tuple(o.path for o in objs)
                     for arch, objs in p.objects_by_arch.items() if objs}

    def tasks() -> Iterator[Task]:
        # Made as the pool takes them, not as a list of every kernel's task up front: the main
        # process's memory should follow the tasks in flight, not the archive.
        for kernel in p.kernels:
            objs = paths_by_arch.get(kernel.arch)
            if objs is None:
                result = KernelResult(kernel=kernel, status="skipped",
                                      message=f"no BPF object for {kernel.arch}")
                results.append(result)
                if on_result:
                    on_result(result)
                continue
            yield Task(kernel=kernel, known_sha=memo.lookup(kernel.path), objects=objs,
                       signature=p.signature_by_arch[kernel.arch], minimizer=options.minimizer,
                       minimizer_options=minimizer_options, cache_root=options.cache_dir)

    # Imported here: concurrent.futures (and the logging it loads) costs an unchanged
    # re-run, which never gets this far, 5 ms.
    from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

    # What the cache may still take before it must be trimmed: one walk of the cache now, then
    # the workers' reports of what they added. (A walk of a 4,300-kernel cache takes a fraction
    # of a second; once per 200 kernels, as before, it was a tenth of a run whose relocations
    # changed.)
    room = cache.limit - cache.usage()
    # Before the workers fork: each kernel's multi-megabyte buffers then reuse the last one's
    # pages instead of faulting in fresh ones (a tenth of a cold run's CPU was system time).
    native.keep_heap()
    executor: Executor
    if minimizer.parallel == "processes" and options.jobs > 1:
        for paths in set(paths_by_arch.values()):
            minimizer.prepare(paths)
        from gobtfgen.pool import process_pool

        executor = process_pool(options.jobs)
    else:
        executor = ThreadPoolExecutor(max_workers=max(1, options.jobs))
    try:
        # The kernel of each task in flight: a result comes back from a worker with a copy of
        # it (unpickled), which this process's own object replaces.
        pending: dict[Future[KernelResult], Kernel] = {}
        queue = tasks()
        # Keep a bounded number of tasks in flight: memory stays flat on a 5000-kernel archive.
        for task in queue:
            pending[executor.submit(minimize_kernel, task)] = task.kernel
            if len(pending) >= 2 * max(1, options.jobs):
                break
        if meanwhile is not None:
            meanwhile()
        interned: dict[bytes, bytes] = {}  # sha256 -> the one copy of identical minimized BTFs
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                kernel = pending.pop(fut)
                result = fut.result()
                if result.stamp is not None and result.kernel_sha:
                    memo.record(kernel.path, result.stamp, result.kernel_sha)
                btf = result.btf
                if btf is not None:
                    # Thousands of kernels share a few distinct results: keep one copy of each,
                    # so memory follows the payload, not the archive.
                    btf = interned.setdefault(hashlib.sha256(btf).digest(), btf)
                # What stays for the outputs: this process's kernel, the one copy of the BTF,
                # no stamp (the memo has it).
                result = dataclasses.replace(result, kernel=kernel, btf=btf, stamp=None)
                room -= result.cache_bytes
                if room < 0:  # keep the cache bounded during long runs too
                    room = cache.limit - cache.trim()[1]
                results.append(result)
                if on_result:
                    on_result(result)
                nxt = next(queue, None)
                if nxt is not None:
                    pending[executor.submit(minimize_kernel, nxt)] = nxt.kernel
    finally:
        executor.shutdown(wait=True, cancel_futures=True)
        memo.save()
    if room < 0 or cache.limit == 0:
        cache.evict()
    results.sort(key=lambda r: r.kernel.key)
    return results, minimizer.identity()


# ---- pack, render, write ---------------------------------------------------------------------

def _relative_archive(options: GenerateOptions) -> str:
    arg = options.archive_arg
    if os.path.isabs(arg):
        return arg
    rel = os.path.relpath(os.path.abspath(arg), os.path.abspath(options.output_dir))
    return "$(BTFGEN_DIR)/" + rel if rel != "." else "$(BTFGEN_DIR)"


def render_makefile(options: GenerateOptions, p: Plan) -> str:
    out_abs = os.path.abspath(options.output_dir)
    objects = []
    for obj in p.objects:
        rel = os.path.relpath(os.path.abspath(obj.path), out_abs)
        objects.append(rel)
    flags = [f"--env-prefix {options.env_prefix}", f"--minimizer {options.minimizer}"]
    flags += [f"--include '{pat}'" for pat in options.include]
    flags += [f"--exclude '{pat}'" for pat in options.exclude]
    if options.lang != "go":
        flags.append(f"--lang {options.lang}")
    if options.formats != ("source",):
        flags.append(f"--format {','.join(options.formats)}")
    return render.render(
        "Makefile.btfgen.j2", mark=render.GENERATED_MARK, archive=_relative_archive(options),
        arches=",".join(options.arches), package=options.package,
        objects=sorted(objects), discovered=not options.objects, flags=" ".join(flags),
        manifest=MANIFEST, args_file=MAKEFILE_ARGS)


def _foreign_arch_notes(p: Plan) -> list[Problem]:
    """Generic objects whose pt_regs reads say they were built for one arch (an x86 kprobe
    reading `di`): their BTF is embedded for the other arch's kernels too, where those
    relocations fail by construction. Said after the fast path, so unchanged runs cost
    nothing; the note is kept in the run record with the other problems."""
    from gobtfgen import checker
    from gobtfgen.btf.ext import ObjectError, parse_object

    notes = []
    for obj in p.objects:
        if obj.target is not None:
            continue  # a bpf2go name already says which arch it is for
        try:
            built_for = checker.target_arch(parse_object(obj.path))
        except (ObjectError, OSError):
            continue
        others = sorted({k.arch for k in p.kernels if k.arch != built_for
                         and obj in p.objects_by_arch.get(k.arch, ())})
        if built_for is None or not others:
            continue
        count = sum(1 for k in p.kernels if k.arch in others)
        notes.append(Problem(
            level=Level.NOTE, subject=str(obj.path),
            message=f"reads {built_for} registers of pt_regs (built for {built_for}): those "
                    f"reads fail on the {count} {'/'.join(others)} kernel(s) whatever BTF is "
                    f"embedded; build one object per arch (bpf2go -target amd64,arm64) or "
                    f"pass --arch {built_for}"))
    return notes


def go_generate_line(options: GenerateOptions, p: Plan) -> str:
    """The //go:generate line that repeats this generation from the package directory
    (go generate runs there and sets $GOPACKAGE, so --pkg and --output-dir are left out)."""
    archive = options.archive_arg
    if not os.path.isabs(archive):
        archive = os.path.relpath(os.path.abspath(archive), os.path.abspath(options.output_dir))
    parts = ["//go:generate", "gobtfgen", "generate", "--archive", archive,
             "--arch", ",".join(options.arches)]
    for flag, values in (("--include", options.include), ("--exclude", options.exclude)):
        for value in values:
            parts += [flag, value]
    if options.minimizer != "bpftool":
        parts += ["--minimizer", options.minimizer]
    if options.env_prefix != "BTFGEN":
        parts += ["--env-prefix", options.env_prefix]
    if options.objects:
        # Every object the user named, skipped ones included: pasted, the line makes the same
        # plan (and the same notes) again.
        out_abs = os.path.abspath(options.output_dir)
        for path in options.objects:
            parts += ["--object", os.path.relpath(os.path.abspath(path), out_abs)]
    return " ".join(shlex.quote(part) if part != "//go:generate" else part for part in parts)


def kernels_text(results: Sequence[KernelResult]) -> str:
    lines = [f"# {render.GENERATED_MARK}",
             "# Kernels whose BTF is embedded (status: minimized or cached = supported).", ""]
    for r in results:
        status = "supported" if r.btf else r.status
        note = f"  # {r.message}" if r.message and not r.btf else ""
        lines.append(f"{status:<10} {r.kernel.key}{note}")
    return "\n".join(lines) + "\n"


def manifest_json(options: GenerateOptions, p: Plan, results: Sequence[KernelResult],
                  identity: str, stats: dict[str, pack.PackStats], files: Sequence[str],
                  problems: Sequence[Problem] = ()) -> str:
    def blob_id(btf: bytes | None) -> str | None:
        return hashlib.sha256(btf).hexdigest() if btf else None

    out_abs = os.path.abspath(options.output_dir)
    doc = {
        "generator": "gobtfgen",
        "gobtfgen_version": __version__,
        "archive": p.archive_doc,
        "minimizer": identity,
        "go_generate": go_generate_line(options, p),
        "objects": [{"path": os.path.relpath(os.path.abspath(o.path), out_abs),
                     "arches": list(o.arches), "core_relocations": o.core_relocations,
                     "signature": o.signature} for o in p.objects],
        "payload": {arch: {"file": _payload_name(options, arch), "kernels": s.entries,
                           "unique_btfs": s.blobs, "raw_bytes": s.raw_bytes,
                           "payload_bytes": s.payload_bytes, "format_version": s.version,
                           "type_nodes": s.nodes} for arch, s in stats.items()},
        "files": sorted([*files, MANIFEST]),
        # Every problem of the run: the summary groups them and points here for the rest.
        # Subjects naming files are relative to the output directory, like "objects".
        "problems": [{"level": pr.level.value, "message": pr.message,
                      "subject": os.path.relpath(os.path.abspath(pr.subject), out_abs)
                      if os.path.isfile(pr.subject) else pr.subject} for pr in problems],
    }
    # The kernels last, one line each (a re-run's diff is a line a kernel): each dumped on its
    # own by the C encoder. json.dumps(indent=...) takes the pure-Python encoder, whose pieces
    # of the whole document were, over 4,300 kernels, the main process's peak (4.6 MB).
    def line(r: KernelResult) -> str:
        return "  " + json.dumps({"key": r.kernel.key,
                                  "status": "embedded" if r.btf else r.status,
                                  "btf_sha256": blob_id(r.btf),
                                  "problem": None if r.btf else r.message})

    head = json.dumps(doc, indent=1)
    assert head.endswith("\n}")
    return (head[:-2] + ',\n "kernels": [' + ("\n" if results else "")
            + ",\n".join(line(r) for r in results) + "\n ]\n}\n")


def _payload_name(options: GenerateOptions, arch: str) -> str | None:
    """The file holding an arch's payload: none when only the tar.gz/ld formats are written."""
    return payload_file(_targets(options), arch)


def _targets(options: GenerateOptions) -> tuple[targets.Target, ...]:
    return targets.selected(options.lang, options.formats)


def _target_options(options: GenerateOptions) -> targets.TargetOptions:
    return targets.TargetOptions(package=options.package, env_prefix=options.env_prefix,
                                 ld=options.ld)


def payload_file(selected: Sequence[targets.Target], arch: str) -> str | None:
    """The file of these targets that holds an arch's payload, if one does."""
    return next((name for t in selected if (name := t.payload_file(arch)) is not None), None)


def _archive_doc(options: GenerateOptions) -> dict[str, object]:
    doc: dict[str, object] = {"path": options.archive_arg,
                              "commit": archive_commit(options.archive)}
    # An archive made by gobtfgen fetch: a view over one or more checkouts, whose commits its
    # record holds (the first repository's commit stands for the archive's).
    sources = fetch.sources_of(options.archive)
    if sources is not None:
        doc["commit"] = doc["commit"] or (sources[0]["commit"] if sources else None)
        doc["sources"] = sources
    return doc


def _packed(cache: Cache, arch: str, entries: dict[str, bytes], version: int
            ) -> tuple[bytes, pack.PackStats]:
    """pack.pack, or the payload the cache kept for the same input (best effort both ways)."""
    key = pack.pack_key(arch, entries, version=version)
    hit = cache.get_pack(key)
    if hit is not None:
        with contextlib.suppress(TypeError):  # a stats record of other fields: pack again
            return hit[0], pack.PackStats(**hit[1])
    payload, stats = pack.pack(arch, entries, version=version)
    with contextlib.suppress(OSError):
        cache.put_pack(key, payload, dataclasses.asdict(stats))
    return payload, stats


def _run_digest(options: GenerateOptions, p: Plan, kernel_shas: Sequence[str],
                identity: str) -> str:
    """Everything an output depends on. Equal digests and untouched outputs: nothing to do."""
    h = hashlib.sha256(f"gobtfgen {__version__}\0".encode())
    for template in sorted(render.templates_dir().rglob("*.j2")):
        h.update(template.name.encode() + b"\0" + template.read_bytes() + b"\0")
    fields = {k: str(v) for k, v in vars(options).items()
              if k not in ("jobs", "progress", "cache_limit")}
    h.update(json.dumps(fields, sort_keys=True).encode())
    h.update(os.path.abspath(options.archive).encode() + b"\0" + identity.encode() + b"\0")
    for obj in p.objects:
        h.update(f"{os.path.abspath(obj.path)}\0{obj.signature}\0{obj.arches}\0".encode())
    for kernel, sha in zip(p.kernels, kernel_shas, strict=True):
        h.update(f"{kernel.key}\0{sha}\0".encode())
    return h.hexdigest()


def _outputs_untouched(out_dir: Path, hashes: dict[str, str]) -> bool:
    for name, digest in hashes.items():
        try:
            if hashlib.sha256((out_dir / name).read_bytes()).hexdigest() != digest:
                return False
        except OSError:
            return False
    return bool(hashes)


def _unchanged_outcome(record: dict[str, object], start: float) -> Outcome:
    summary = record["summary"]
    assert isinstance(summary, dict)
    problems = tuple(Problem(level=Level(p["level"]), subject=p["subject"], message=p["message"])
                     for p in summary["problems"])
    stats = {arch: pack.PackStats(**s) for arch, s in summary["stats"].items()}
    counts = dict(summary["counts"])
    counts["cached"] = counts.get("cached", 0) + counts.pop("minimized", 0)
    counts["minimized"] = 0
    outputs = record["outputs"]
    assert isinstance(outputs, dict)
    return Outcome(results=(), problems=problems, stats=stats,
                   go_generate=str(summary["go_generate"]),
                   written=WriteResult(written=(), unchanged=tuple(outputs), removed=()),
                   elapsed=time.monotonic() - start, exit_code=int(summary["strict_exit"]),
                   minimizer_identity=str(summary["identity"]), counts=counts)


def build(options: GenerateOptions) -> Outcome:
    with output_lock(options.output_dir,
                     wait_message=f"gobtfgen: waiting for another gobtfgen run writing to "
                                  f"{options.output_dir}"), fetch.reading(options.archive):
        return _build(options)


def _build(options: GenerateOptions) -> Outcome:
    start = time.monotonic()
    cache = Cache(options.cache_dir)
    memo = cache.memo()
    p = plan(options, memo)
    identity = _minimizer_identity(options, memo)
    # Fast path: the same inputs as the last run into this directory, whose outputs nobody
    # touched since. Costs a stat per kernel and a hash per output file.
    known = [memo.lookup(k.path) if p.objects_by_arch.get(k.arch) else "-" for k in p.kernels]
    if all(known):
        digest = _run_digest(options, p, known, identity)
        record = cache.get_run(options.output_dir)
        if record and record.get("inputs") == digest and isinstance(record.get("outputs"), dict) \
                and _outputs_untouched(options.output_dir, record["outputs"]):
            memo.save()
            return _unchanged_outcome(record, start)
    problems = list(p.problems)
    selected = _targets(options)
    target_options = _target_options(options)
    prerendered: dict[str, bytes] = {}

    def prerender() -> None:
        # What depends only on the options is rendered while the workers minimize (the main
        # thread would only wait): jinja2's import and template compilation cost nothing then.
        prerendered[MAKEFILE] = render_makefile(options, p).encode()
        for target in selected:
            prerendered.update(target.static(target_options))

    progress = Progress(len(p.kernels), label="kernels", enabled=options.progress)
    try:
        results, identity = minimize_all(p, options, memo, meanwhile=prerender,
                                         on_result=lambda r: progress.advance(r.status))
    finally:
        progress.close()
    if not prerendered:
        prerender()
    for r in results:
        if r.status == "failed":
            problems.append(Problem(level=Level.WARNING, subject=r.kernel.key,
                                    message=r.message or "failed"))
    for arch, objs in p.objects_by_arch.items():
        if not objs and any(k.arch == arch for k in p.kernels):
            problems.append(Problem(level=Level.NOTE, subject=arch,
                                    message="no BPF object targets this arch: its kernels skipped"))
    problems += _foreign_arch_notes(p)
    usable = [r for r in results if r.btf]
    if not usable:
        reasons = sorted({r.message or r.status for r in results})[:3]
        raise GobtfgenError("no kernel could be minimized, nothing written; first reasons: "
                            + " | ".join(reasons))
    stats: dict[str, pack.PackStats] = {}
    payloads: dict[str, bytes] = {}
    version = targets.payload_version(selected)
    # Every arch gets a payload, so every build target finds its file. The arches are packed
    # at once: Zopfli releases the GIL and takes 0.3-0.6 s an arch on the sample's payloads.
    with ThreadPoolExecutor(max_workers=len(ARCHES)) as packers:
        packed = {arch: packers.submit(
            _packed, cache, arch,
            {r.kernel.key: r.btf for r in usable if r.kernel.arch == arch and r.btf}, version)
            for arch in ARCHES}
        for arch in ARCHES:
            payloads[arch], stats[arch] = packed[arch].result()
    target_input = targets.TargetInput(options=target_options, payloads=payloads, stats=stats,
                                       btfs={r.kernel.key: r.btf for r in usable if r.btf},
                                       full_sums={r.kernel.key: r.full_sum for r in usable
                                                  if r.full_sum})
    files = dict(prerendered)
    for target in selected:
        rendered = target.render(target_input)
        files.update(rendered.files)
        problems += rendered.problems
    files[KERNELS_LIST] = kernels_text(results).encode()
    files[MANIFEST] = manifest_json(options, p, results, identity, stats, list(files),
                                    problems).encode()
    written = write_outputs(options.output_dir, files)
    failed = sum(1 for r in results if r.status == "failed")
    counts = {s: sum(1 for r in results if r.status == s)
              for s in ("minimized", "cached", "skipped", "failed")}
    exit_code = 1 if options.strict and (failed or any(
        pr.level is not Level.NOTE for pr in problems)) else 0
    by_key = {r.kernel.key: "-" if r.status == "skipped" else r.kernel_sha for r in results}
    if all(by_key.get(k.key) for k in p.kernels):
        cache.put_run(options.output_dir, {
            "inputs": _run_digest(options, p, [by_key[k.key] or "" for k in p.kernels],
                                  identity),
            "outputs": {name: hashlib.sha256(data).hexdigest() for name, data in files.items()},
            "summary": {"counts": counts, "identity": identity, "strict_exit": exit_code,
                        "go_generate": go_generate_line(options, p),
                        "stats": {a: vars(s) for a, s in stats.items()},
                        "problems": [{"level": pr.level.value, "subject": pr.subject,
                                      "message": pr.message} for pr in problems]},
        })
    return Outcome(results=tuple(results), problems=tuple(problems), stats=stats,
                   written=written, elapsed=time.monotonic() - start, exit_code=exit_code,
                   minimizer_identity=identity, counts=counts,
                   go_generate=go_generate_line(options, p))
