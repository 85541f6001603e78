"""The promise, kept where users run it: the examples' binaries as `make` builds them, started
with no flags, on real kernels whose userspace finds no BTF, for x86_64 and arm64, in qemu
(tests/vm.py).

One row per kernel, each booted once with all its checks:
- Debian 12 cloud kernels (the 6.1 ones of tests/kernels.tsv, two versions per arch), BTF hidden
  by an empty tmpfs over /sys/kernel/btf: both binaries pick `embedded debian/12/<arch>/<release>`;
- the kernel built with no BTF at all (tests/nobtf_kernel.py), its archive BTF made by pahole;
- the corpus' 6.12 cloud kernel of each arch with its BTF visible: both binaries use the kernel's
  own (`btf: kernel`). That kernel is left out of the binaries' archive, so once the guest hides
  its BTF it is the "payload without this kernel" case (clear error, non-zero exit), and the
  override variable pointed at a copy of its BTF makes them work again.
In each: lab3 (Go, `make`, GOARCH for the guest's arch), examples/libbpf (C, `make`, linked
statically, cross-compiled for arm64) and examples/aya (Rust, `make`, linked statically,
RUST_TARGET for the guest's arch) report the exec of a program of a distinctive name by a
known parent with the right pid, ppid, comm and filename; and tests/equiv (the host's equivalence
helper, cross-built) loads lab3's programs in the guest kernel with its full BTF and with the
minimized BTF its payload carries: the relocated (xlated) instructions must be identical.

The run writes docs/tested-on.md (the README's "Tested on" table) when every row was attempted."""

from __future__ import annotations

import importlib
import json
import os
import platform
import re
import shutil
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests import cargo, corpus, lab3build, vm

pytestmark = [pytest.mark.tools, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
TESTED_ON = REPO / "docs" / "tested-on.md"
LIBBPF = REPO / "examples" / "libbpf"
AYA = REPO / "examples" / "aya"
RUST_TARGET = {"x86_64": "x86_64-unknown-linux-gnu", "arm64": cargo.AARCH64}
GOARCH = {"x86_64": "amd64", "arm64": "arm64"}
GNU_TRIPLET = {"x86_64": "x86_64-linux-gnu", "arm64": "aarch64-linux-gnu"}
OVERRIDE_ENV = "BTFGEN_BTF_FILE"

# The exec every tracer must report: /bin/vmparent (a busybox sh script) prints its pid, starts
# the probe and prints the child's pid. The probe's name is nothing else's in the guest.
PROBE = "gbtprobe-vm"
PARENT_SCRIPT = f'#!/bin/sh\necho "parent $$"\n/bin/{PROBE} &\necho "child $!"\nwait\n'
PROBE_SCRIPT = "#!/bin/sh\nexit 0\n"
EQUIV_OBJECT = "/lib/execsnoop.bpf.o"


@dataclass(frozen=True, kw_only=True)
class Row:
    id: str
    arch: str
    kind: str  # "hidden" (Debian, BTF hidden), "nobtf" (built without BTF), "native"
    package: corpus.KernelPackage | None = None  # None for the nobtf kernel

    @property
    def how(self) -> str:
        return {"hidden": "BTF hidden (empty tmpfs on /sys/kernel/btf)",
                "nobtf": "no BTF at all (CONFIG_DEBUG_INFO_BTF off; archive BTF by pahole)",
                "native": "native BTF visible"}[self.kind]


def _nobtf_arches() -> list[str]:
    try:
        module = importlib.import_module("tests.nobtf_kernel")
    except ImportError:
        return list(GOARCH)  # its rows then say the module is missing
    return list(module.arches())


NOBTF_ARCHES = _nobtf_arches()


def _rows() -> list[Row]:
    rows: list[Row] = []
    for arch in GOARCH:
        cloud = [p for p in corpus.packages() if p.arch == arch and "-cloud-" in p.release]
        rows += [Row(id=p.release, arch=arch, kind="hidden", package=p)
                 for p in cloud if p.release.startswith("6.1.")]
        if arch in NOBTF_ARCHES:
            rows.append(Row(id=f"nobtf-{arch}", arch=arch, kind="nobtf"))
        rows += [Row(id=f"{p.release}-native", arch=arch, kind="native", package=p)
                 for p in cloud if not p.release.startswith("6.1.")][:1]
    return rows


ROWS = _rows()
NATIVE = {row.arch: row for row in ROWS if row.kind == "native"}


# ---------------------------------------------------------------------------------------------
# the kernels, the archives and the builds (once per session)


@dataclass(frozen=True, kw_only=True)
class Kernel:
    image: Path
    release: str
    btf: Path | None  # the archive BTF of a kernel without its own (nobtf), else None


def nobtf_kernel(arch: str) -> Kernel:
    try:
        module = importlib.import_module("tests.nobtf_kernel")
    except ImportError:
        pytest.skip(reason="tests/nobtf_kernel.py (the BTF-less kernel build, issue 12) is not "
                           "in this checkout")
    built = module.nobtf_kernel(arch)
    return Kernel(image=built.image, release=built.release, btf=built.btf)


def kernel_of(row: Row) -> Kernel:
    if row.package is None:
        return nobtf_kernel(row.arch)
    return Kernel(image=corpus.boot_image(row.package), release=row.package.release, btf=None)


def key_of(row: Row, kernel: Kernel) -> str:
    return f"debian/12/{row.arch}/{kernel.release}"


@dataclass(frozen=True, kw_only=True)
class Archives:
    main: Path  # what the binaries embed: every row's kernel but the native ones
    full: Path  # what the equivalence helper embeds: every row's kernel
    nobtf: dict[str, Kernel | str]  # arch -> the BTF-less kernel, or why there is none
    carried: dict[str, int]  # arch -> kernels of that arch in main


_state: dict[str, object] = {}


def env_for(base: Path) -> dict[str, str]:
    env = lab3build.tool_env(base / "gobtfgen-cache")
    env.pop("GOARCH", None)
    return env


def corpus_archive() -> Path:
    """The corpus kernels' BTF in btfhub layout (`gobtfgen archive add --from <deb>`)."""
    make_archive = getattr(corpus, "archive", None)
    if make_archive is not None:
        return Path(make_archive())
    archive_dir = getattr(corpus, "ARCHIVE", None)
    if archive_dir is None or not any(Path(archive_dir).glob("*/*/*/*.btf.tar.xz")):
        pytest.skip(reason="the corpus archive (the corpus kernels' BTF, made by "
                           "scripts/fetch-kernels) is absent; run scripts/setup")
    return Path(archive_dir)


def archives(base: Path) -> Archives:
    if "archives" in _state:
        return _state["archives"]  # type: ignore[return-value]
    source = corpus_archive()
    env = env_for(base)
    main, full = base / "archive-main", base / "archive-full"
    native = {row.package.release for row in NATIVE.values() if row.package}
    for dest in (main, full):
        shutil.rmtree(dest, ignore_errors=True)
        for path in sorted(source.glob("*/*/*/*.btf.tar.xz")):
            if dest == main and path.name.removesuffix(".btf.tar.xz") in native:
                continue
            target = dest / path.relative_to(source)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)
    nobtf: dict[str, Kernel | str] = {}
    for arch in GOARCH:
        try:
            kernel = nobtf_kernel(arch)
        except pytest.skip.Exception as skipped:
            nobtf[arch] = str(skipped.msg)
            continue
        nobtf[arch] = kernel
        for dest in (main, full):
            lab3build.run([*lab3build.gobtfgen_command(), "archive", "add", str(dest), "--from",
                           str(kernel.btf), "--id", "debian", "--version", "12", "--arch", arch,
                           "--release", kernel.release], cwd=base, env=env)
    carried = {arch: len(list(main.glob(f"*/*/{arch}/*.btf.tar.xz"))) for arch in GOARCH}
    _state["archives"] = Archives(main=main, full=full, nobtf=nobtf, carried=carried)
    return _state["archives"]  # type: ignore[return-value]


@dataclass(frozen=True, kw_only=True)
class Binaries:
    """What runs in a guest of one arch, each built by its own Makefile (or go build)."""
    arch: str
    lab3: Path
    execsnoop: Path
    aya: Path
    equiv: Path
    object: Path  # lab3's BPF object for this arch (equiv loads it)
    logs: dict[str, str] = field(default_factory=dict)


def need_cross_c(arch: str) -> str:
    """The C compiler for arch, and a check that its static libbpf, libelf and zlib exist."""
    native = arch == lab3build.keys.btfhub_arch(platform.machine())
    cc = "cc" if native else f"{GNU_TRIPLET[arch]}-gcc"
    if not shutil.which(cc):
        pytest.skip(reason=f"{cc} is missing; scripts/setup installs gcc-{GNU_TRIPLET[arch]} "
                           "(cross compiler for the examples/libbpf guest binary)")
    for lib in ("libbpf.a", "libelf.a", "libz.a"):
        if not (Path("/usr/lib") / GNU_TRIPLET[arch] / lib).is_file():
            deb = GOARCH[arch] if arch != "x86_64" else "amd64"
            pytest.skip(reason=f"/usr/lib/{GNU_TRIPLET[arch]}/{lib} is missing; scripts/setup "
                               f"installs libbpf-dev:{deb} libelf-dev:{deb} zlib1g-dev:{deb}")
    return cc


def binaries(arch: str, base: Path) -> Binaries:
    key = f"binaries-{arch}"
    if key in _state:
        return _state[key]  # type: ignore[return-value]
    for tool in ("clang", "bpftool", "go", "make"):
        lab3build.need_tool(tool)
    if not lab3build.VMLINUX.is_file():
        pytest.skip(reason=f"{lab3build.VMLINUX} is absent: the examples' vmlinux.h comes from "
                           "the build machine's kernel BTF")
    cc = need_cross_c(arch)
    arch_archives = archives(base)
    env = env_for(base)
    out = base / arch
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)

    # lab3, unmodified: `GOARCH=<arch> make BTFHUB_ARCHIVE=...`.
    lab3_env = {**env, "GOARCH": GOARCH[arch]}
    lab3_log = lab3build.make_lab3(out / "lab3", lab3_env, arch_archives.main)

    # examples/libbpf: its `make`, static (the guest has no libraries), for the guest's arch.
    shutil.copytree(LIBBPF, out / "libbpf", ignore=shutil.ignore_patterns(
        "execsnoop", "*.o", "*.skel.h", "vmlinux.h", "btfgen*", "Makefile.btfgen*",
        ".btfhub-host"))
    c_log = lab3build.run(["make", "--no-print-directory", f"CC={cc}", "LDFLAGS=-static",
                           f"BTFHUB_ARCHIVE={arch_archives.main}"], cwd=out / "libbpf", env=env,
                          timeout=600)

    # examples/aya: its `make`, static, for the guest's arch (cargo's own target dir per arch
    # under the test cache, so a warm run recompiles nothing).
    aya_log = build_aya(arch, out / "aya", env, arch_archives.main)

    # The equivalence helper with a payload of every row's kernel, from lab3's own objects.
    helper = out / "equiv"
    shutil.copytree(lab3build.EQUIV, helper)
    objects = sorted((out / "lab3").glob("execsnoop_*_bpfel.o"))
    lab3build.run([*lab3build.gobtfgen_command(), "generate", "--archive",
                   str(arch_archives.full), "--arch", arch, "--pkg", "main", "--output-dir",
                   str(helper), "--quiet", *[a for o in objects for a in ("--object", str(o))]],
                  cwd=helper, env=env)
    lab3build.run(["go", "build", "-o", "equiv", "."], cwd=helper,
                  env={**env, "GOARCH": GOARCH[arch], "CGO_ENABLED": "0"})
    built = Binaries(arch=arch, lab3=out / "lab3" / "lab3", execsnoop=out / "libbpf" / "execsnoop",
                     aya=out / "aya" / "execsnoop", equiv=helper / "equiv",
                     object=out / "lab3" / f"execsnoop_{lab3build.BPF2GO_ARCH[arch]}_bpfel.o",
                     logs={"lab3": lab3_log, "libbpf": c_log, "aya": aya_log})
    for path in (built.lab3, built.execsnoop, built.aya, built.equiv):
        machine = vm.elf_machine(path.read_bytes()[:64])
        assert machine == vm.ELF_MACHINE[arch], f"{path} is not an {arch} binary ({machine})"
    _state[key] = built
    return built


def build_aya(arch: str, dest: Path, env: dict[str, str], archive: Path) -> str:
    """`make RUST_TARGET=<triple>` in a fresh copy of examples/aya, statically linked (the guest
    has no libraries): cross-linked for arm64 with aarch64-linux-gnu-gcc."""
    cargo.find_cargo()
    triple = RUST_TARGET[arch]
    extra = {"RUSTFLAGS": "-C target-feature=+crt-static",
             "CARGO_TARGET_DIR": str(cargo.TARGET_DIR / f"vm-aya-{arch}")}
    if arch != lab3build.keys.btfhub_arch(platform.machine()):
        if cargo.aarch64_toolchain() is None:
            pytest.skip(reason=cargo.AARCH64_MISSING)
        extra["CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER"] = f"{GNU_TRIPLET[arch]}-gcc"
    shutil.copytree(AYA, dest, ignore=shutil.ignore_patterns(
        "execsnoop", "*.o", "vmlinux.h", "btfgen*", "Makefile.btfgen*", ".btfhub-host",
        "target"))
    aya_env = {**env, **{k: v for k, v in cargo.env().items() if k == "PATH"}, **extra}
    return lab3build.run(["nice", "-n", "10", "make", "--no-print-directory",
                          f"RUST_TARGET={triple}", f"BTFHUB_ARCHIVE={archive}",
                          f"LAB3={REPO / 'examples' / 'lab3'}"], cwd=dest, env=aya_env,
                         timeout=1800)


# ---------------------------------------------------------------------------------------------
# the guest's checks


def trace_check(name: str, command: str, ready: str) -> vm.Check:
    """Start a tracer, wait until it traces, exec the probe from the known parent, wait for the
    probe's event, stop the tracer with SIGINT; prints parent/child pids, then the tracer's
    stderr and stdout. Exit status: the tracer's."""
    script = f"""
{command} >/tmp/{name}.out 2>/tmp/{name}.err &
t=$!
i=0
while ! grep -q "{ready}" /tmp/{name}.err; do
  kill -0 $t 2>/dev/null || break
  i=$((i+1)); [ $i -gt 1200 ] && break
  sleep 0.1
done
/bin/vmparent
i=0
while ! grep -q "{PROBE}" /tmp/{name}.out; do
  kill -0 $t 2>/dev/null || break
  i=$((i+1)); [ $i -gt 300 ] && break
  sleep 0.1
done
kill -INT $t 2>/dev/null
wait $t
rc=$?
echo "@stderr"; cat /tmp/{name}.err
echo "@stdout"; cat /tmp/{name}.out
exit $rc
"""
    return vm.Check(name=name, script=script)


LAB3 = "/bin/lab3 -json -timeout 120s"
EXECSNOOP = "/bin/execsnoop --json --timeout 120"
AYA_CMD = "/bin/aya --json --timeout 120s"
LAB3_READY = "tracing execve"
EXECSNOOP_READY = "tracing execve"


def checks_for(row: Row, kernel: Kernel) -> list[vm.Check]:
    reference = "/btf/kernel.btf" if kernel.btf else "/tmp/kernel.btf"
    checks = [
        trace_check("lab3", LAB3, LAB3_READY),
        trace_check("libbpf", EXECSNOOP, EXECSNOOP_READY),
        trace_check("aya", AYA_CMD, LAB3_READY),
        vm.Check(name="equiv", script=f'printf "%s\\t%s\\n" "{key_of(row, kernel)}" '
                                      f'"{reference}" | /bin/equiv -object {EQUIV_OBJECT}'),
    ]
    if row.kind == "native":
        # From here on the guest hides its BTF: a kernel the binaries do not carry.
        checks += [
            vm.Check(name="hide", script="mount -t tmpfs -o size=4k,mode=0555 nobtf "
                                         "/sys/kernel/btf && ls /sys/kernel/btf | wc -l"),
            vm.Check(name="lab3-missing", script="/bin/lab3 -json -count 1 -timeout 20s"),
            vm.Check(name="libbpf-missing", script="/bin/execsnoop --json --count 1 --timeout 20"),
            vm.Check(name="aya-missing", script="/bin/aya --json --count 1 --timeout 20s"),
            trace_check("lab3-override", f"env {OVERRIDE_ENV}=/tmp/kernel.btf {LAB3}", LAB3_READY),
            trace_check("libbpf-override", f"env {OVERRIDE_ENV}=/tmp/kernel.btf {EXECSNOOP}",
                        EXECSNOOP_READY),
            trace_check("aya-override", f"env {OVERRIDE_ENV}=/tmp/kernel.btf {AYA_CMD}",
                        LAB3_READY),
        ]
    return checks


@dataclass(frozen=True, kw_only=True)
class RowBoot:
    row: Row
    kernel: Kernel
    key: str
    boot: vm.Boot
    carried: int  # kernels of this arch the binaries carry


_boots: dict[str, RowBoot] = {}
_attempted: dict[str, str] = {}  # row id -> "" (booted) or the skip reason
_running: dict[str, Future[vm.Boot]] = {}
_prepared: dict[str, tuple[Kernel, int]] = {}
_pool: list[ThreadPoolExecutor] = []


def wanted_rows(session: pytest.Session) -> list[Row]:
    """The rows the selected tests of this run need (all of them, unless -k chose)."""
    wanted: set[str] = set()
    for item in session.items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        if isinstance(params.get("row"), Row):
            wanted.add(params["row"].id)
        elif params.get("arch") in NATIVE and item.module is not None \
                and item.module.__name__ == __name__:
            wanted.add(NATIVE[params["arch"]].id)
    return [row for row in ROWS if row.id in wanted]


def prepare(row: Row, base: Path) -> vm.Guest:
    """The guest of a row: its kernel, the binaries of its arch, its checks (may skip)."""
    vm.qemu(row.arch)
    kernel = kernel_of(row)
    built = binaries(row.arch, base)
    files: dict[str, Path | bytes] = {
        "bin/lab3": built.lab3, "bin/execsnoop": built.execsnoop, "bin/aya": built.aya,
        "bin/equiv": built.equiv,
        EQUIV_OBJECT: built.object, "bin/vmparent": PARENT_SCRIPT.encode(),
        f"bin/{PROBE}": PROBE_SCRIPT.encode()}
    if kernel.btf:
        files["btf/kernel.btf"] = kernel.btf
    _prepared[row.id] = (kernel, archives(base).carried[row.arch])
    return vm.Guest(arch=row.arch, kernel=kernel.image, checks=checks_for(row, kernel),
                    files=files, hide_btf=row.kind != "native")


def start_boots(rows: list[Row], base: Path) -> None:
    """Build everything first, then boot every row at once, GOBTFGEN_VM_JOBS (default: the
    number of CPUs) guests at a time: a TCG guest keeps one core busy, and the boots are most of
    the stage's time."""
    guests: dict[str, vm.Guest] = {}
    for row in rows:
        try:
            guests[row.id] = prepare(row, base)
        except pytest.skip.Exception as skipped:
            _attempted[row.id] = str(skipped.msg)
    for guest in {g.arch: g for g in guests.values()}.values():
        vm.accel_for(guest.arch, guest.kernel, base / "boots")  # probed once, before the pool
    jobs = int(os.environ.get("GOBTFGEN_VM_JOBS") or os.cpu_count() or 1)
    pool = ThreadPoolExecutor(max_workers=max(1, jobs), thread_name_prefix="vm")
    _pool.append(pool)
    for row_id, guest in guests.items():
        _attempted[row_id] = ""
        _running[row_id] = pool.submit(vm.boot, guest, base / "boots", row_id)


def booted(row: Row, request: pytest.FixtureRequest) -> RowBoot:
    if row.id in _boots:
        return _boots[row.id]
    factory: pytest.TempPathFactory = request.getfixturevalue("tmp_path_factory")
    base = factory.getbasetemp() / "vm-matrix"
    base.mkdir(exist_ok=True)
    if row.id not in _running and row.id not in _attempted:
        rows = [r for r in wanted_rows(request.session)
                if r.id not in _running and r.id not in _attempted]
        start_boots(rows if row in rows else [row], base)
    if row.id not in _running:
        pytest.skip(reason=_attempted[row.id])
    boot = _running[row.id].result()
    kernel, carried = _prepared[row.id]
    result = RowBoot(row=row, kernel=kernel, key=key_of(row, kernel), boot=boot, carried=carried)
    _boots[row.id] = result
    return result


# ---------------------------------------------------------------------------------------------
# reading the checks' output


@dataclass(frozen=True, kw_only=True)
class Trace:
    parent: int
    child: int
    stderr: list[str]
    events: list[dict[str, object]]

    @property
    def btf(self) -> str:
        lines = [line for line in self.stderr if line.startswith("btf: ")]
        return lines[0] if lines else "(no btf: line)"


def parse_trace(result: vm.CheckResult) -> Trace:
    parent = child = -1
    stderr: list[str] = []
    events: list[dict[str, object]] = []
    section = ""
    for line in result.lines:
        if line in ("@stderr", "@stdout"):
            section = line
        elif not section and line.startswith(("parent ", "child ")):
            word, _, pid = line.partition(" ")
            parent, child = (int(pid), child) if word == "parent" else (parent, int(pid))
        elif section == "@stderr":
            stderr.append(line)
        elif section == "@stdout" and line.startswith("{"):
            try:
                events.append(json.loads(line))
            except json.JSONDecodeError:
                stderr.append(f"(unreadable event line) {line}")
    return Trace(parent=parent, child=child, stderr=stderr, events=events)


def assert_traced(rb: RowBoot, check: str, btf_line: str) -> Trace:
    result = rb.boot[check]
    trace = parse_trace(result)
    where = rb.boot.describe(check)
    assert trace.btf == btf_line, where
    assert result.status == 0, where
    assert trace.parent > 0 and trace.child > 0, where
    ours = [e for e in trace.events if e.get("filename") == f"/bin/{PROBE}"]
    assert ours, f"no event for /bin/{PROBE}; {where}"
    assert ours[0] == {"pid": trace.child, "ppid": trace.parent, "uid": 0, "comm": PROBE,
                       "filename": f"/bin/{PROBE}"}, where
    return trace


def expected_btf(rb: RowBoot) -> str:
    return "btf: kernel" if rb.row.kind == "native" else f"btf: embedded {rb.key}"


# ---------------------------------------------------------------------------------------------
# the tests


ids = [row.id for row in ROWS]


@pytest.mark.parametrize("row", ROWS, ids=ids)
def test_lab3_in_guest(row: Row, request: pytest.FixtureRequest) -> None:
    rb = booted(row, request)
    trace = assert_traced(rb, "lab3", expected_btf(rb))
    if row.kind == "native":
        assert not any("skipped" in line for line in trace.stderr), rb.boot.describe("lab3")
    else:
        # fentry needs the kernel's own BTF: lab3 says so and uses the kprobe.
        assert any("fentry/security_bprm_check skipped" in line for line in trace.stderr), \
            rb.boot.describe("lab3")
    _record(rb, "lab3", trace)


@pytest.mark.parametrize("row", ROWS, ids=ids)
def test_libbpf_in_guest(row: Row, request: pytest.FixtureRequest) -> None:
    rb = booted(row, request)
    _record(rb, "libbpf", assert_traced(rb, "libbpf", expected_btf(rb)))


@pytest.mark.parametrize("row", ROWS, ids=ids)
def test_aya_in_guest(row: Row, request: pytest.FixtureRequest) -> None:
    rb = booted(row, request)
    trace = assert_traced(rb, "aya", expected_btf(rb))
    if row.kind != "native":
        assert any("fentry/security_bprm_check skipped" in line for line in trace.stderr), \
            rb.boot.describe("aya")
    _record(rb, "aya", trace)


@pytest.mark.parametrize("row", ROWS, ids=ids)
def test_relocations_equal_in_guest(row: Row, request: pytest.FixtureRequest) -> None:
    """lab3's programs, loaded by this kernel with its full BTF and with the minimized BTF of the
    payload, hold the same instructions after loading."""
    rb = booted(row, request)
    result = rb.boot["equiv"]
    where = rb.boot.describe("equiv")
    assert result.status == 0, where
    got = {}
    for line in result.lines:
        if line.startswith("{"):
            entry = json.loads(line)
            got[entry["variant"]] = entry
    assert set(got) == {"full", "minimized"}, where
    for variant in ("full", "minimized"):
        assert got[variant]["key"] == rb.key and not got[variant].get("error"), where
    full, mini = got["full"]["programs"], got["minimized"]["programs"]
    assert full and set(full) == set(mini), where
    for name in sorted(full):
        assert full[name] == mini[name], f"program {name} differs with minimized BTF; {where}"
    _table.setdefault(row.id, {})["relocs"] = f"{len(full)} programs identical"


@pytest.mark.parametrize("arch", sorted(NATIVE))
@pytest.mark.parametrize("tool", ["lab3", "libbpf", "aya"])
def test_payload_without_this_kernel_fails_clearly(
        arch: str, tool: str, request: pytest.FixtureRequest) -> None:
    rb = booted(NATIVE[arch], request)
    assert rb.boot["hide"].output.strip() == "0", rb.boot.describe("hide")
    result = rb.boot[f"{tool}-missing"]
    where = rb.boot.describe(f"{tool}-missing")
    assert result.status != 0, where
    text = result.output
    # The key tried, how many kernels the binary carries, and the two fixes.
    assert f"tried {rb.key}" in text, where
    assert f"all {rb.carried} {arch} kernels" in text, where
    assert "gobtfgen archive add" in text and OVERRIDE_ENV in text, where
    assert "Traceback" not in text and "panic" not in text, where


@pytest.mark.parametrize("arch", sorted(NATIVE))
@pytest.mark.parametrize("tool", ["lab3", "libbpf", "aya"])
def test_override_variable_in_guest(arch: str, tool: str, request: pytest.FixtureRequest) -> None:
    rb = booted(NATIVE[arch], request)
    assert_traced(rb, f"{tool}-override", "btf: override /tmp/kernel.btf")


# ---------------------------------------------------------------------------------------------
# docs/tested-on.md


_table: dict[str, dict[str, str]] = {}


def _record(rb: RowBoot, tool: str, trace: Trace) -> None:
    ours = next(e for e in trace.events if e.get("filename") == f"/bin/{PROBE}")
    cell = _table.setdefault(rb.row.id, {})
    cell[f"{tool}-btf"] = trace.btf.removeprefix("btf: ")
    cell[f"{tool}-event"] = (f"pid {ours['pid']} ppid {ours['ppid']} {ours['comm']} "
                             f"{ours['filename']}")
    cell["boot"] = f"{rb.boot.seconds:.0f} s ({rb.boot.accel})"


@pytest.fixture(scope="module", autouse=True)
def _write_tested_on(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    for pool in _pool:
        pool.shutdown(cancel_futures=True)
    partial = request.config.getoption("keyword") or request.config.getoption("markexpr")
    if partial or set(_attempted) != {row.id for row in ROWS} or not _boots:
        return  # a partial run (-k, -m) leaves the committed table as it is
    lines = ["# Tested on",
             "",
             "Written by `pytest tests/test_vm_matrix.py` (part of `scripts/test`); do not edit.",
             "Each kernel booted in qemu; the examples' binaries as `make` built them, started",
             "without flags. Events: the exec of /bin/" + PROBE + " by a known shell script.",
             "",
             "| kernel | arch | how BTF was absent | lab3 chose | lab3 saw | libbpf example chose "
             "| libbpf example saw | aya example chose | aya example saw "
             "| relocations (full vs minimized BTF) | boot |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in ROWS:
        if row.id not in _boots:
            # The reason without this machine's home directory (the file is committed).
            why = _attempted.get(row.id, "").replace(str(Path.home()), "~")
            lines.append(f"| {row.id} | {row.arch} | {row.how} | not run: {why} | | | | | | | |")
            continue
        rb, cell = _boots[row.id], _table.get(row.id, {})
        lines.append(
            f"| {rb.kernel.release} | {row.arch} | {row.how} | "
            f"{cell.get('lab3-btf', 'FAILED')} | {cell.get('lab3-event', 'FAILED')} | "
            f"{cell.get('libbpf-btf', 'FAILED')} | {cell.get('libbpf-event', 'FAILED')} | "
            f"{cell.get('aya-btf', 'FAILED')} | {cell.get('aya-event', 'FAILED')} | "
            f"{cell.get('relocs', 'FAILED')} | {cell.get('boot', '')} |")
    native = [row for row in ROWS if row.kind == "native" and row.id in _boots]
    if native:
        lines += ["", "With the BTF of the native rows' kernels hidden (the binaries do not carry "
                  "them): all three exit non-zero with the key tried and the fix; with "
                  f"`{OVERRIDE_ENV}` pointing at a copy of the kernel's BTF all three work again."]
    text = "\n".join(lines) + "\n"
    # Pids and boot seconds change on every run: a run whose results are otherwise the same
    # leaves the committed file alone, so a test run does not leave the checkout modified.
    if not TESTED_ON.is_file() or _stable(TESTED_ON.read_text()) != _stable(text):
        TESTED_ON.write_text(text)


def _stable(table: str) -> str:
    """tested-on.md without what differs between two runs with the same results."""
    table = re.sub(r"pid \d+ ppid \d+", "pid N ppid N", table)
    return re.sub(r"\| \d+ s \((\w+)\) \|", r"| N s (\1) |", table)


def test_rows_cover_both_arches() -> None:
    """The matrix itself: two hidden-BTF versions and a native row per arch, and a BTF-less row
    for every arch scripts/setup builds (both by default) and every other whose BTF-less kernel
    is built (tests/nobtf_kernel.arches)."""
    for arch in GOARCH:
        kinds = [row.kind for row in ROWS if row.arch == arch]
        assert kinds.count("hidden") >= 2 and "native" in kinds, kinds
        assert ("nobtf" in kinds) == (arch in NOBTF_ARCHES), (arch, kinds, NOBTF_ARCHES)
    if os.environ.get("GOBTFGEN_NOBTF_ARCHES") is None:
        assert set(NOBTF_ARCHES) == set(GOARCH), NOBTF_ARCHES


def test_tested_on_rewritten_only_when_results_change() -> None:
    """A rerun with new pids and boot times keeps docs/tested-on.md; another result does not."""
    row = ("| 6.1.0-47-cloud-amd64 | x86_64 | BTF hidden | embedded debian/12/x86_64/6.1.0-47 "
           "| pid 106 ppid 105 gbtprobe-vm /bin/gbtprobe-vm | 4 programs identical | 4 s (tcg) |")
    rerun = row.replace("pid 106 ppid 105", "pid 231 ppid 230").replace("4 s (tcg)", "11 s (tcg)")
    assert _stable(row) == _stable(rerun)
    assert _stable(row) != _stable(row.replace("embedded debian/12/x86_64/6.1.0-47", "kernel"))
    assert _stable(row) != _stable(row.replace("gbtprobe-vm /bin", "sh /bin"))
