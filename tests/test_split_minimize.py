"""Module types in the minimizer: `gobtfgen minimize -B VMLINUX SPLIT OUT OBJ` (which bpftool
cannot do), merged kernels in minimize, generate and check, and the relocation semantics:
against Debian's real nf_conntrack modules, an object of ours (tests/bpf/modules.c) reading a
module-only type, a type two modules carry and a type both vmlinux and a module carry resolves
against the minimized BTF as against the full merged one, under cilium/ebpf's rules (every
candidate in the one spec: the real cilium/ebpf loads both into this kernel, tests/modequiv)
and under libbpf's on a running kernel (vmlinux candidates first, modules only when vmlinux has
none)."""

from __future__ import annotations

import io
import json
import lzma
import subprocess
import tarfile
from pathlib import Path

import pytest

from gobtfgen import cli
from gobtfgen.archive import read_kernel_btf
from gobtfgen.btf import BTF, STRUCT
from gobtfgen.btf.ext import parse_object
from gobtfgen.minimize.python import minimize_merged
from gobtfgen.relocs import evaluate_object, find_candidates
from tests import corpus, gomod
from tests.bpfobjs import bpftool_or_skip, clang_or_skip

RELEASE = "6.1.0-56-cloud-amd64"
MODULES = ("nf_conntrack", "nf_conntrack_netlink", "nf_conntrack_broadcast")
SOURCE = Path(__file__).resolve().parent / "bpf" / "modules.c"
HELPER = Path(__file__).resolve().parent / "modequiv" / "main.go"


def _pkg() -> corpus.KernelPackage:
    found = [p for p in corpus.packages() if p.release == RELEASE]
    if not found:
        pytest.skip(reason=f"{RELEASE} is not in tests/kernels.tsv; add it back")
    return found[0]


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("splitmin")


@pytest.fixture(scope="module")
def obj(work: Path) -> Path:
    clang = clang_or_skip()
    out = work / "modules.o"
    subprocess.run([clang, "-g", "-O2", "-target", "bpfel", "-D__TARGET_ARCH_x86", "-c",
                    str(SOURCE), "-o", str(out)], check=True)
    return out


@pytest.fixture(scope="module")
def merged(work: Path) -> tuple[Path, bytes, int]:
    """An archive holding RELEASE with MODULES merged (archive add --modules), its BTF and
    where its module types start."""
    archive = work / "archive"
    assert cli.main(["archive", "add", str(archive), "--from", str(corpus.deb(_pkg())),
                     "--modules", ",".join(MODULES)]) == 0
    dest = archive / "debian/12/x86_64" / f"{RELEASE}.btf.tar.xz"
    with tarfile.open(fileobj=io.BytesIO(lzma.decompress(dest.read_bytes()))) as tar:
        f = tar.extractfile(f"{RELEASE}.modules.json")
        assert f is not None
        side = json.loads(f.read())
    return archive, read_kernel_btf(dest), side["base_types"]


def _outcomes(obj: Path, btf: bytes, module_start: int | None = None) -> list[tuple[object, ...]]:
    parsed = parse_object(obj)
    return [o.comparable() for o in evaluate_object(parsed, BTF(btf), module_start=module_start)]


def _vmlinux() -> bytes:
    return read_kernel_btf(corpus.archive() / "debian/12/x86_64" / f"{RELEASE}.btf.tar.xz")


def test_minimize_split_against_its_base(work: Path, obj: Path) -> None:
    nf = corpus.modules_dir(_pkg()) / "kernel/net/netfilter"
    base = work / "vmlinux.btf"
    base.write_bytes(_vmlinux())
    out = work / "split-min.btf"
    assert cli.main(["minimize", "-B", str(base), str(nf / "nf_conntrack.ko"), str(out),
                     str(obj)]) == 0
    small = BTF(out.read_bytes())
    assert small.find_named("nf_conntrack_net", (STRUCT,))
    # Against the minimized BTF every relocation resolves as against vmlinux + nf_conntrack.
    from gobtfgen.btf.split import merge
    from gobtfgen.modules import ko_btf
    blob = ko_btf((nf / "nf_conntrack.ko").read_bytes(), "nf_conntrack.ko", RELEASE)
    assert blob is not None
    full = merge(base.read_bytes(), [("nf_conntrack", blob)]).btf
    assert _outcomes(obj, out.read_bytes()) == _outcomes(obj, full)
    assert ("ok", False, 4, 4, False, True) in _outcomes(obj, full)  # expect_count at 4
    # bpftool reads split BTF with -B but cannot minimize it.
    proc = subprocess.run([bpftool_or_skip(), "-B", str(base), "gen", "min_core_btf",
                           str(nf / "nf_conntrack.ko"), str(work / "bpftool.btf"), str(obj)],
                          capture_output=True, text=True)
    assert proc.returncode != 0
    # The wrong base is refused in one line naming the module.
    other = work / "other.btf"
    other.write_bytes(read_kernel_btf(corpus.archive() / "debian/12/x86_64"
                                      / "6.1.0-47-cloud-amd64.btf.tar.xz"))
    assert cli.main(["minimize", "-B", str(other), str(nf / "nf_conntrack.ko"),
                     str(work / "x.btf"), str(obj)]) != 0
    assert not (work / "x.btf").exists()


def test_module_relocations_under_both_rules(merged: tuple[Path, bytes, int], obj: Path,
                                             work: Path) -> None:
    archive, full, module_start = merged
    parsed = parse_object(obj)
    kernel = BTF(full)
    lb = parsed.btf

    def cands(name: str) -> list[int]:
        (local,) = [t for t in range(1, len(lb)) if lb.name(t) == name and lb.kind(t) == STRUCT]
        return find_candidates(lb, local, kernel)

    assert all(c >= module_start for c in cands("nf_conntrack_net"))  # module-only
    assert len(cands("nf_conntrack_l4proto")) == 1  # two modules' copies, merged once
    expect = cands("nf_conntrack_expect")  # vmlinux's and nf_conntrack_broadcast's
    assert len(expect) == 2 and expect[0] < module_start <= expect[1]
    assert all(c < module_start for c in cands("nf_conn"))

    all_in_one = _outcomes(obj, full)
    native = _outcomes(obj, full, module_start)
    assert all(o[0] == "ok" and not o[1] for o in all_in_one), all_in_one
    # Here both rule sets agree (the two nf_conntrack_expect have one layout).
    assert native == all_in_one

    out = work / "merged-min.btf"
    assert cli.main(["minimize", str(archive / "debian/12/x86_64" / f"{RELEASE}.btf.tar.xz"),
                     str(out), str(obj)]) == 0
    # cilium/ebpf, libbpf with btf_custom_path: every candidate in the one spec.
    assert _outcomes(obj, out.read_bytes()) == all_in_one
    # libbpf on the running kernel: vmlinux first; the minimized BTF keeps the order.
    small, small_start = minimize_merged(full, [parsed], module_start)
    assert _outcomes(obj, small, small_start) == native
    assert _outcomes(obj, small) == all_in_one
    # The default minimizer (what generate runs, which is not told where module types start)
    # keeps the same types: libbpf's order looks at a subset of the candidates it keeps. Only
    # their order differs (its canonical order does not keep module types last).
    def kept(blob: bytes) -> list[tuple[int, str, int]]:
        b = BTF(blob)
        return sorted((b.kind(t), b.name(t), b.vlen(t)) for t in range(1, len(b)))

    assert kept(out.read_bytes()) == kept(small) and len(out.read_bytes()) == len(small)


def test_cilium_ebpf_loads_the_same_programs(merged: tuple[Path, bytes, int], obj: Path,
                                             work: Path) -> None:
    if gomod.find_go() is None:
        pytest.skip(reason="go is missing; run scripts/setup (installs Go)")
    archive, full, _ = merged
    paths = {"full": work / "full.btf", "vmlinux": work / "vmlinux-only.btf",
             "min": work / "merged-min2.btf"}
    paths["full"].write_bytes(full)
    paths["vmlinux"].write_bytes(_vmlinux())
    assert cli.main(["minimize", str(paths["full"]), str(paths["min"]), str(obj)]) == 0
    mod = gomod.make_module(work / "modequiv", files={"main.go": HELPER.read_text()})
    gomod.run_go(["build", "-o", "modequiv", "."], cwd=mod)
    proc = subprocess.run([str(mod / "modequiv"), str(obj), *map(str, paths.values())],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    res = {k: json.loads(line) for k, line in zip(paths, proc.stdout.splitlines(), strict=True)}
    if "operation not permitted" in res["full"].get("error", "").lower():
        pytest.skip(reason="loading BPF programs needs root (CAP_BPF, CAP_PERFMON)")
    assert "error" not in res["full"], res["full"]
    assert res["min"] == {**res["full"], "path": str(paths["min"])}
    # Without the module types the module-only read cannot be relocated.
    assert "error" in res["vmlinux"] or res["vmlinux"]["programs"] != res["full"]["programs"]


def test_generate_and_check_a_merged_kernel(merged: tuple[Path, bytes, int], obj: Path,
                                            work: Path, capsys: pytest.CaptureFixture[str]
                                            ) -> None:
    archive, _, _ = merged
    capsys.readouterr()
    cache = ["--cache-dir", str(work / "cache")]
    assert cli.main(["check", "--archive", str(archive), "--object", str(obj), "--arch",
                     "x86_64", *cache]) == 0
    # The same kernel without its modules' BTF: the module-only reads fail, and check says so.
    plain = work / "plain"
    assert cli.main(["archive", "add", str(plain), "--from", str(work / "vmlinux.btf")
                     if (work / "vmlinux.btf").exists() else str(corpus.deb(_pkg())),
                     "--id", "debian", "--version", "12", "--arch", "x86_64",
                     "--release", RELEASE]) == 0
    capsys.readouterr()
    assert cli.main(["check", "--archive", str(plain), "--object", str(obj), "--arch",
                     "x86_64", *cache]) == 1
    assert "nf_conntrack_net" in capsys.readouterr().out
    out = work / "gen"
    assert cli.main(["generate", "--archive", str(archive), "--object", str(obj), "--arch",
                     "x86_64", "--output-dir", str(out), "--quiet", *cache]) == 0
    assert any(out.iterdir())
