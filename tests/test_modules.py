"""gobtfgen archive add --modules / --modules-from: module BTF from a kernel .deb, a directory
of .ko files (plain, xz, zstd) and a running kernel's /sys/kernel/btf, merged after vmlinux's,
with which ids came from which module beside it; the errors for a wrong base, a module of
another release, a missing module."""

from __future__ import annotations

import io
import json
import lzma
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from gobtfgen import cli
from gobtfgen.archive import read_kernel_btf
from gobtfgen.btf import BTF, STRUCT
from gobtfgen.btf.split import ranges_to_ids
from tests import corpus

RELEASE = "6.1.0-56-cloud-amd64"
OTHER = "6.1.0-47-cloud-amd64"
SYSFS = Path("/sys/kernel/btf")


def _pkg(release: str) -> corpus.KernelPackage:
    found = [p for p in corpus.packages() if p.release == release]
    if not found:
        pytest.skip(reason=f"{release} is not in tests/kernels.tsv; add it back")
    return found[0]


def add(*args: str | Path) -> int:
    return cli.main(["archive", "add", *map(str, args)])


def _members(path: Path) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(lzma.decompress(path.read_bytes()))) as tar:
        out = {}
        for m in tar.getmembers():
            f = tar.extractfile(m)
            assert f is not None
            out[m.name] = f.read()
        return out


def _netfilter(tmp_path: Path) -> Path:
    return corpus.modules_dir(_pkg(RELEASE)) / "kernel" / "net" / "netfilter"


def test_deb_modules_are_merged_with_a_record_of_where_types_came_from(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    deb = corpus.deb(_pkg(RELEASE))
    archive = tmp_path / "a"
    assert add(archive, "--from", deb, "--modules", "nf_conntrack,nf-conntrack-netlink") == 0
    out = capsys.readouterr().out
    assert "+ 2 modules (nf_conntrack, nf_conntrack_netlink)" in out
    dest = archive / "debian/12/x86_64" / f"{RELEASE}.btf.tar.xz"
    members = _members(dest)
    assert sorted(members) == [f"{RELEASE}.btf", f"{RELEASE}.modules.json"]
    btf = BTF(read_kernel_btf(dest))
    side = json.loads(members[f"{RELEASE}.modules.json"])
    base_types = side["base_types"]
    (l4,) = btf.find_named("nf_conntrack_l4proto", (STRUCT,))
    (conn,) = btf.find_named("nf_conn", (STRUCT,))
    assert conn < base_types <= l4  # nf_conn is vmlinux's; l4proto a module's, merged once
    ids = {m: set(ranges_to_ids(r)) for m, r in side["modules"].items()}
    assert l4 in ids["nf_conntrack"] and l4 in ids["nf_conntrack_netlink"]
    (net,) = btf.find_named("nf_conntrack_net", (STRUCT,))
    assert net in ids["nf_conntrack"] and net not in ids["nf_conntrack_netlink"]
    # Same input, same file: a second run has nothing to do.
    assert add(archive, "--from", deb, "--modules", "nf_conntrack,nf_conntrack_netlink") == 0
    assert "nothing to do" in capsys.readouterr().out


def test_a_directory_of_plain_and_compressed_modules(tmp_path: Path) -> None:
    zstandard = pytest.importorskip("zstandard", reason="zstandard is a dependency; run "
                                    "scripts/setup")
    nf = _netfilter(tmp_path)
    mods = tmp_path / "mods"
    mods.mkdir()
    shutil.copy(nf / "nf_conntrack.ko", mods / "nf_conntrack.ko")
    (mods / "nf_conntrack_netlink.ko.xz").write_bytes(
        lzma.compress((nf / "nf_conntrack_netlink.ko").read_bytes(), format=lzma.FORMAT_XZ))
    (mods / "sub").mkdir()
    (mods / "sub" / "nf_nat.ko.zst").write_bytes(
        zstandard.ZstdCompressor().compress((nf / "nf_nat.ko").read_bytes()))
    base = tmp_path / "vmlinux.btf"
    base.write_bytes(read_kernel_btf(corpus.archive() / "debian/12/x86_64"
                                     / f"{RELEASE}.btf.tar.xz"))
    key = ["--id", "debian", "--version", "12", "--arch", "x86_64", "--release", RELEASE]
    assert add(tmp_path / "a", "--from", base, *key, "--modules-from", mods) == 0
    dest = tmp_path / "a/debian/12/x86_64" / f"{RELEASE}.btf.tar.xz"
    side = json.loads(_members(dest)[f"{RELEASE}.modules.json"])
    assert sorted(side["modules"]) == ["nf_conntrack", "nf_conntrack_netlink", "nf_nat"]
    # The same modules from the package give the same BTF.
    assert add(tmp_path / "b", "--from", corpus.deb(_pkg(RELEASE)), "--modules",
               "nf_conntrack,nf_conntrack_netlink,nf_nat") == 0
    assert read_kernel_btf(tmp_path / "b/debian/12/x86_64" / f"{RELEASE}.btf.tar.xz") \
        == read_kernel_btf(dest)


def test_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    nf = _netfilter(tmp_path)
    other = tmp_path / "other.btf"
    other.write_bytes(read_kernel_btf(corpus.archive() / "debian/12/x86_64"
                                      / f"{OTHER}.btf.tar.xz"))
    key = ["--id", "debian", "--version", "12", "--arch", "x86_64"]
    archive = tmp_path / "a"

    def err(*args: str | Path) -> str:
        assert add(archive, *args) != 0
        text = capsys.readouterr().err
        assert len(text.strip().splitlines()) == 1 and "Traceback" not in text, text
        return text

    # Modules of one build against another build's vmlinux (the release passed wrongly).
    msg = err("--from", other, *key, "--release", RELEASE, "--modules-from", nf,
              "--modules", "nf_conntrack")
    assert "nf_conntrack.ko: its split BTF does not match this vmlinux BTF" in msg
    assert "pass the vmlinux of the kernel build" in msg
    # Modules of another release.
    msg = err("--from", other, *key, "--release", OTHER, "--modules-from", nf,
              "--modules", "nf_conntrack")
    assert f"built for kernel {RELEASE}, not {OTHER}" in msg
    msg = err("--from", corpus.deb(_pkg(RELEASE)), "--modules", "nf_conntrack,no_such_mod")
    assert "no module no_such_mod" in msg
    msg = err("--from", other, *key, "--release", OTHER, "--modules", "x")
    assert "holds no modules; pass --modules-from" in msg
    msg = err("--from", other, *key, "--release", OTHER, "--modules-from", tmp_path / "nope")
    assert "no such file or directory" in msg
    assert not archive.exists()  # nothing half-written


def test_running_kernel_loaded_modules(tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    if not (SYSFS / "vmlinux").exists():
        pytest.skip(reason="this kernel has no BTF (/sys/kernel/btf/vmlinux); run on one "
                    "built with CONFIG_DEBUG_INFO_BTF")
    loaded = sorted(p.name for p in SYSFS.iterdir() if p.name != "vmlinux")
    # A module that is not loaded is named, with the fix.
    assert add(tmp_path / "a", "--modules", "surely_not_loaded_mod") != 0
    assert "surely_not_loaded_mod not loaded" in capsys.readouterr().err
    if loaded:  # a host with modules of its own: every loaded one merges
        assert add(tmp_path / "a", "--modules", "--force") == 0
        assert f"+ {len(loaded)} module" in capsys.readouterr().out


def test_loaded_modules_from_a_sysfs_of_a_real_kernel(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """`--modules` on a running kernel with nf_conntrack loaded, where this host has no module
    with BTF: /sys/kernel/btf is laid out from a real Debian kernel (its vmlinux BTF, and the
    .BTF section of its nf_conntrack.ko, which is what the kernel shows as
    /sys/kernel/btf/nf_conntrack; the VM test reads the guest's real file), and gobtfgen is
    pointed at it. Dumped by llvm-objcopy, not by gobtfgen's own reader."""
    objcopy = shutil.which("llvm-objcopy") or shutil.which("objcopy")
    if objcopy is None:
        pytest.skip(reason="llvm-objcopy is missing; apt-get install llvm (scripts/setup)")
    from gobtfgen import hostinfo

    pkg = _pkg(RELEASE)
    sysfs = tmp_path / "sys" / "kernel" / "btf"
    sysfs.mkdir(parents=True)
    (sysfs / "vmlinux").write_bytes(read_kernel_btf(corpus.archive() / f"{pkg.key}.btf.tar.xz"))
    subprocess.run([objcopy, f"--dump-section=.BTF={sysfs / 'nf_conntrack'}",
                    str(_netfilter(tmp_path) / "nf_conntrack.ko"), str(tmp_path / "ko.out")],
                   check=True)
    monkeypatch.setattr(hostinfo, "NATIVE_BTF", str(sysfs / "vmlinux"))
    key = ("--id", "debian", "--version", "12", "--arch", "x86_64", "--release", RELEASE)
    archive = tmp_path / "a"
    assert add(archive, *key, "--modules") == 0
    assert "+ 1 module (nf_conntrack)" in capsys.readouterr().out
    # The same merge as from the package's own .ko.
    assert add(tmp_path / "b", "--from", corpus.deb(pkg), "--modules", "nf_conntrack") == 0
    (live,) = archive.rglob(f"{RELEASE}.btf.tar.xz")
    (deb,) = (tmp_path / "b").rglob(f"{RELEASE}.btf.tar.xz")
    assert read_kernel_btf(live) == read_kernel_btf(deb)


@pytest.mark.parametrize("release", ["6.12.117+deb12-cloud-amd64",
                                     "6.12.117+deb12-cloud-arm64"])
def test_newer_kernels_both_arches(tmp_path: Path, release: str) -> None:
    bpftool = shutil.which("bpftool")
    if bpftool is None:
        pytest.skip(reason="bpftool is missing; run scripts/setup")
    pkg = _pkg(release)
    assert add(tmp_path / "a", "--from", corpus.deb(pkg), "--modules", "nf_conntrack") == 0
    (dest,) = (tmp_path / "a").rglob(f"{release}.btf.tar.xz")
    raw = tmp_path / "merged.btf"
    raw.write_bytes(read_kernel_btf(dest))
    dump = subprocess.run([bpftool, "btf", "dump", "file", str(raw)], check=True,
                          capture_output=True, text=True).stdout
    assert dump.count("STRUCT 'nf_conntrack_net' size=136") == 1


def test_distilled_base_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    objcopy = shutil.which("llvm-objcopy") or shutil.which("objcopy")
    if objcopy is None:
        pytest.skip(reason="llvm-objcopy is missing; apt-get install llvm (scripts/setup)")
    nf = _netfilter(tmp_path)
    mods = tmp_path / "mods"
    mods.mkdir()
    blob = tmp_path / "base.btf"
    blob.write_bytes(b"\x9f\xeb\x01\x00" + bytes(20))
    subprocess.run([objcopy, "--add-section", f".BTF.base={blob}", str(nf / "nf_conntrack.ko"),
                    str(mods / "nf_conntrack.ko")], check=True)
    assert add(tmp_path / "a", "--from", corpus.deb(_pkg(RELEASE)), "--modules-from", mods) != 0
    assert "split against a distilled base (.BTF.base)" in capsys.readouterr().err
