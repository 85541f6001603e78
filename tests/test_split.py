"""Split BTF (kernel modules) merged into one BTF with its vmlinux base (gobtfgen.btf.split):
synthetic splits for the id and string arithmetic and the deduplication rules, then Debian's
real nf_conntrack modules, read back by bpftool (libbpf) and by cilium/ebpf."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile

from gobtfgen.btf import BTF, Builder
from gobtfgen.btf.split import SplitError, merge, module_of, parse_split, ranges_to_ids
from tests import corpus, gomod


class SplitBuilder(Builder):
    """Builds split BTF against base the way pahole does for a module: ids continue after the
    base's, string offsets after the base's string section (no leading NUL of its own)."""

    def __init__(self, base: bytes) -> None:
        super().__init__()
        b = BTF(base)
        self.count = len(b) - 1
        self._nbase = len(b.strings)
        self._strs = bytearray()

    def add_str(self, s: str) -> int:
        if not s:
            return 0
        off = self._str_index.get(s)
        if off is None:
            off = len(self._strs)
            self._strs += s.encode() + b"\0"
            self._str_index[s] = off
        return self._nbase + off


def _base() -> tuple[bytes, dict[str, int]]:
    b = Builder()
    ids = {"int": b.add_int("int", 4, signed=True)}
    ids["task"] = b.struct("task", 8, [("pid", ids["int"], 0, 0), ("tgid", ids["int"], 32, 0)])
    return b.to_bytes(), ids


def _module(base: bytes, ids: dict[str, int], *, l4size: int = 16,
            extra: str = "") -> bytes:
    s = SplitBuilder(base)
    l4 = s.struct("l4proto", l4size, [("proto", ids["int"], 0, 0)])
    p = s.ptr(l4)
    s.struct("net" + extra, 16, [("l4", p, 0, 0), ("count", ids["int"], 64, 0)])
    # a copy of a base type pahole failed to deduplicate: same shape, resolved to the base's
    s.struct("task", 8, [("pid", ids["int"], 0, 0), ("tgid", ids["int"], 32, 0)])
    return s.to_bytes()


def _names(blob: bytes, name: str) -> list[int]:
    return BTF(blob).find_named(name)


def test_ids_and_strings_continue_after_the_base() -> None:
    base, ids = _base()
    split = parse_split(_module(base, ids), BTF(base), name="m")
    assert split.start_id == len(BTF(base)) == 3
    merged = merge(base, [("m", _module(base, ids))])
    out = BTF(merged.btf)
    out.validate()
    # vmlinux's types keep their ids; the module's follow; its copy of `task` is the base's.
    assert out.find_named("task") == [ids["task"]]
    (l4,) = out.find_named("l4proto")
    (net,) = out.find_named("net")
    assert l4 == 3 and out.named_members(net)[0][0] == "l4"
    assert out.kind(out.members(net)[0][1]) == 2  # PTR
    assert merged.base_types == 3
    assert merged.modules["m"] == sorted({ids["task"], l4, l4 + 1, net})


def test_a_type_two_modules_share_is_merged_once() -> None:
    base, ids = _base()
    merged = merge(base, [("a", _module(base, ids)), ("b", _module(base, ids, extra="_b"))])
    out = BTF(merged.btf)
    out.validate()
    (l4,) = out.find_named("l4proto")
    (net,) = out.find_named("net")
    (net_b,) = out.find_named("net_b")
    # the pointer to the shared struct is shared too: one shape all the way down
    assert out.members(net)[0][1] == out.members(net_b)[0][1]
    owner = module_of(merged.modules)
    assert owner(l4) == ["a", "b"] and owner(net) == ["a"] and owner(net_b) == ["b"]
    assert owner(ids["int"]) == []
    side = merged.sidecar()
    assert side["base_types"] == 3
    assert isinstance(side["modules"], dict)
    assert ranges_to_ids(side["modules"]["b"]) == merged.modules["b"]


def test_same_name_other_shape_is_kept_apart() -> None:
    base, ids = _base()
    merged = merge(base, [("a", _module(base, ids)),
                          ("b", _module(base, ids, l4size=24, extra="_b"))])
    out = BTF(merged.btf)
    l4s = out.find_named("l4proto")
    assert [out.size(t) for t in l4s] == [16, 24]
    (net_b,) = out.find_named("net_b")
    ptr = out.members(net_b)[0][1]
    assert out.record(ptr)[2] == l4s[1]  # b's pointer points at b's own l4proto


def test_a_split_of_another_base_is_refused() -> None:
    base, ids = _base()
    module = _module(base, ids)
    other = Builder()
    other.add_int("unsigned long long int", 8)
    other.add_int("int", 4, signed=True)
    with pytest.raises(SplitError, match=r"m: its split BTF does not match this vmlinux BTF"):
        merge(other.to_bytes(), [("m", module)])
    with pytest.raises(SplitError, match="not BTF"):
        merge(base, [("m", b"\0" * 30)])


# --- Debian's modules ----------------------------------------------------------------------

RELEASE = "6.1.0-56-cloud-amd64"


def _pkg() -> corpus.KernelPackage:
    found = [p for p in corpus.packages() if p.release == RELEASE]
    if not found:
        pytest.skip(reason=f"{RELEASE} is not in tests/kernels.tsv; add it back")
    return found[0]


def _ko_btf(path: Path) -> bytes:
    with path.open("rb") as f:
        sec = ELFFile(f).get_section_by_name(".BTF")
        assert sec is not None, path
        return bytes(sec.data())


@pytest.fixture(scope="module")
def debian_merged(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    from gobtfgen.archive import read_kernel_btf
    pkg = _pkg()
    arch_file = corpus.archive() / "debian" / "12" / "x86_64" / f"{RELEASE}.btf.tar.xz"
    base = read_kernel_btf(arch_file)
    nf = corpus.modules_dir(pkg) / "kernel" / "net" / "netfilter"
    d = tmp_path_factory.mktemp("merged")
    (d / "vmlinux.btf").write_bytes(base)
    merged = merge(base, [(m, _ko_btf(nf / f"{m}.ko"))
                          for m in ("nf_conntrack", "nf_conntrack_netlink")])
    (d / "merged.btf").write_bytes(merged.btf)
    return d / "vmlinux.btf", d / "merged.btf", nf


def test_debian_modules_merge_and_bpftool_reads_them(
        debian_merged: tuple[Path, Path, Path]) -> None:
    if shutil.which("bpftool") is None:
        pytest.skip(reason="bpftool is missing; run scripts/setup")
    vmlinux, merged, nf = debian_merged
    dump = subprocess.run(["bpftool", "btf", "dump", "file", str(merged)], check=True,
                          capture_output=True, text=True).stdout
    # nf_conntrack_l4proto lives in nf_conntrack.ko and again in nf_conntrack_netlink.ko's
    # split BTF; merged, once. nf_conn is vmlinux's and stays at its id.
    assert dump.count("STRUCT 'nf_conntrack_l4proto' size=104 vlen=12") == 1
    assert dump.count("STRUCT 'nf_conntrack_net' ") == 1
    base_dump = subprocess.run(["bpftool", "btf", "dump", "file", str(vmlinux)], check=True,
                               capture_output=True, text=True).stdout
    conn = next(line for line in base_dump.splitlines() if "STRUCT 'nf_conn' " in line)
    assert conn in dump
    # The module type as libbpf reads it from the .ko against the base, member by member.
    def members(text: str, name: str) -> list[str]:
        lines = text.splitlines()
        at = next(i for i, line in enumerate(lines) if f"STRUCT '{name}' " in line)
        out = []
        for line in lines[at + 1:]:
            if not line.startswith("\t"):
                break
            out.append(line.split(" type_id=")[0] + line.split(" type_id=")[1].split(" ", 1)[1])
        return out
    mod_dump = subprocess.run(["bpftool", "-B", str(vmlinux), "btf", "dump", "file",
                               str(nf / "nf_conntrack.ko")], check=True, capture_output=True,
                              text=True).stdout
    for name in ("nf_conntrack_l4proto", "nf_conntrack_net"):
        assert members(dump, name) == members(mod_dump, name)


GO_MAIN = """package main

import (
	"fmt"
	"os"

	"github.com/cilium/ebpf/btf"
)

func main() {
	f, err := os.Open(os.Args[1])
	if err != nil {
		panic(err)
	}
	spec, err := btf.LoadSpecFromReader(f)
	if err != nil {
		fmt.Println("load:", err)
		os.Exit(1)
	}
	for _, name := range os.Args[2:] {
		var s *btf.Struct
		if err := spec.TypeByName(name, &s); err != nil {
			fmt.Println(name, "error:", err)
			continue
		}
		fmt.Println(name, s.Size, len(s.Members), s.Members[0].Name)
	}
}
"""


def test_cilium_ebpf_loads_the_merged_btf(debian_merged: tuple[Path, Path, Path],
                                          tmp_path: Path) -> None:
    if gomod.find_go() is None:
        pytest.skip(reason="go is missing; run scripts/setup (installs Go)")
    _, merged, _ = debian_merged
    mod = gomod.make_module(tmp_path / "load", files={"main.go": GO_MAIN})
    out = gomod.run_go(["run", ".", str(merged), "nf_conntrack_l4proto", "nf_conntrack_net",
                        "nf_conn"], cwd=mod).stdout
    assert out.splitlines() == ["nf_conntrack_l4proto 104 12 l4proto",
                                "nf_conntrack_net 136 7 count",
                                "nf_conn 248 14 ct_general"], out
