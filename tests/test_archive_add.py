"""gobtfgen archive add: raw BTF, the running kernel's BTF and vmlinux ELFs into a btfhub-style
archive, read back by the same reader generate uses."""

from __future__ import annotations

import io
import lzma
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from gobtfgen import cli
from gobtfgen.archive import read_kernel_btf, scan_archive
from tests import lookup_vectors
from tests.tinybtf import tiny_btf

VECTORS = lookup_vectors.load()
NATIVE = Path("/sys/kernel/btf/vmlinux")


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HOST_ROOT", raising=False)


def fake_root(tmp_path: Path, name: str) -> Path:
    return lookup_vectors.make_root(VECTORS, {"files": {"etc/os-release": name}},
                                    tmp_path / "root")


def add(*args: str | Path) -> int:
    return cli.main(["archive", "add", *map(str, args)])


def test_raw_btf_with_explicit_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    btf = tmp_path / "custom.btf"
    btf.write_bytes(tiny_btf("custom"))
    archive = tmp_path / "archive"
    assert add(archive, "--from", btf, "--id", "Ubuntu", "--version", "20.04", "--arch",
               "aarch64", "--release", "5.4.0-1029-aws") == 0
    dest = archive / "ubuntu/20.04/arm64/5.4.0-1029-aws.btf.tar.xz"
    assert read_kernel_btf(dest) == btf.read_bytes()
    with tarfile.open(fileobj=io.BytesIO(lzma.decompress(dest.read_bytes()))) as tar:
        (member,) = tar.getmembers()
        assert (member.name, member.mode, member.mtime) == ("5.4.0-1029-aws.btf", 0o644, 0)
    kernels, problems = scan_archive(archive, ["arm64"])
    assert [k.key for k in kernels] == ["ubuntu/20.04/arm64/5.4.0-1029-aws"] and not problems
    assert "added" in capsys.readouterr().out
    assert [p.name for p in dest.parent.iterdir()] == [dest.name]  # no temp file left


def test_key_defaults_from_host_root(tmp_path: Path) -> None:
    btf = tmp_path / "k.btf"
    btf.write_bytes(tiny_btf("k"))
    for name, folder in [("rhel-8.4", "rhel/8"), ("sles-15.3", "sles/15.3"),
                         ("amzn-2018.03", "amzn/2018"), ("ubuntu-18.04", "ubuntu/18.04")]:
        root = lookup_vectors.make_root(VECTORS, {"files": {"etc/os-release": name}},
                                        tmp_path / name)
        archive = tmp_path / f"archive-{name}"
        assert add(archive, "--from", btf, "--release", "1.2.3", "--arch", "x86_64",
                   "--host-root", root) == 0
        assert (archive / folder / "x86_64/1.2.3.btf.tar.xz").is_file(), name


def test_same_bytes_every_time(tmp_path: Path) -> None:
    btf = tmp_path / "k.btf"
    btf.write_bytes(tiny_btf("k"))
    outs = []
    for n in range(2):
        archive = tmp_path / f"a{n}"
        assert add(archive, "--from", btf, "--id", "x", "--version", "1", "--arch", "x86_64",
                   "--release", "r") == 0
        outs.append((archive / "x/1/x86_64/r.btf.tar.xz").read_bytes())
    assert outs[0] == outs[1]


def test_existing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    first, second = tmp_path / "a.btf", tmp_path / "b.btf"
    first.write_bytes(tiny_btf("a"))
    second.write_bytes(tiny_btf("b"))
    archive = tmp_path / "archive"
    key = ["--id", "x", "--version", "1", "--arch", "x86_64", "--release", "r"]
    dest = archive / "x/1/x86_64/r.btf.tar.xz"
    assert add(archive, "--from", first, *key) == 0
    assert add(archive, "--from", first, *key) == 0
    assert "nothing to do" in capsys.readouterr().out
    assert add(archive, "--from", second, *key) == 1
    assert "holds different BTF; pass --force" in capsys.readouterr().err
    assert read_kernel_btf(dest) == first.read_bytes()
    assert add(archive, "--from", second, *key, "--force") == 0
    assert read_kernel_btf(dest) == second.read_bytes()
    dest.write_bytes(b"damaged")
    assert add(archive, "--from", first, *key) == 1  # a damaged file is not silently replaced
    assert add(archive, "--from", first, *key, "--force") == 0


@pytest.mark.parametrize(("args", "message"), [
    (["--release", "../escape"], "--release '../escape' cannot be"),
    (["--release", "r", "--id", "a/b"], "--id 'a/b' cannot be"),
    (["--release", "r", "--version", ".."], "--version '..' cannot be"),
    (["--release", "r", "--arch", "riscv64"], "btfhub has x86_64 and arm64 only"),
    ([], "--release is needed"),
])
def test_bad_keys(tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str],
                  message: str) -> None:
    btf = tmp_path / "k.btf"
    btf.write_bytes(tiny_btf("k"))
    root = fake_root(tmp_path, "debian-10")
    assert add(tmp_path / "archive", "--from", btf, "--host-root", root, *args) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "archive").exists()


def test_no_os_release_needs_id_and_version(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    btf = tmp_path / "k.btf"
    btf.write_bytes(tiny_btf("k"))
    assert add(tmp_path / "a", "--from", btf, "--release", "r", "--host-root", tmp_path) == 2
    assert "--id and --version are needed" in capsys.readouterr().err


@pytest.mark.parametrize(("content", "message"), [
    (b"hello world, not btf", "not a kernel image, kernel .deb, vmlinux ELF or raw BTF"),
    (b"\x9f\xeb\x01\x00\x18\x00\x00\x00" + b"\xff" * 16, "truncated BTF"),
    (b"\x7fELF\x02\x01\x01" + b"\x00" * 9, "unreadable ELF"),
])
def test_bad_sources(tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes,
                     message: str) -> None:
    src = tmp_path / "src"
    src.write_bytes(content)
    assert add(tmp_path / "a", "--from", src, "--release", "r", "--id", "x", "--version",
               "1") == 1
    assert message in capsys.readouterr().err


def test_missing_source(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert add(tmp_path / "a", "--from", tmp_path / "absent") == 1
    assert "cannot read" in capsys.readouterr().err


@pytest.mark.skipif(not NATIVE.exists(), reason="this kernel has no /sys/kernel/btf/vmlinux; "
                    "run on a kernel built with CONFIG_DEBUG_INFO_BTF=y")
def test_running_kernel(tmp_path: Path) -> None:
    root = fake_root(tmp_path, "ubuntu-20.04")
    archive = tmp_path / "archive"
    assert add(archive, "--host-root", root) == 0
    from gobtfgen.keys import btfhub_arch

    arch = btfhub_arch(os.uname().machine)
    dest = archive / "ubuntu/20.04" / str(arch) / f"{os.uname().release}.btf.tar.xz"
    assert read_kernel_btf(dest) == NATIVE.read_bytes()


def _elf(tmp_path: Path, btf: bytes | None, banner: bytes | None,
         banner_section: str = ".rodata.banner") -> Path:
    clang, objcopy = shutil.which("clang"), shutil.which("objcopy")
    if not (clang and objcopy):
        pytest.skip(reason="clang and objcopy are needed to build a test vmlinux ELF; install "
                           "clang "
                    "and binutils")
    empty = tmp_path / "empty.o"
    subprocess.run([clang, "-c", "-x", "c", "/dev/null", "-o", str(empty)], check=True)
    cmd = [objcopy]
    if btf is not None:
        (tmp_path / "btf.raw").write_bytes(btf)
        cmd += ["--add-section", f".BTF={tmp_path / 'btf.raw'}"]
    if banner is not None:
        (tmp_path / "banner.raw").write_bytes(banner)
        cmd += ["--add-section", f"{banner_section}={tmp_path / 'banner.raw'}"]
    out = tmp_path / "vmlinux"
    subprocess.run([*cmd, str(empty), str(out)], check=True)
    return out


@pytest.mark.tools
def test_vmlinux_elf_gives_release_and_arch(tmp_path: Path) -> None:
    btf = tiny_btf("vmlinux")
    banner = b"\0Linux version 5.4.17-2136.300.7.el8uek.x86_64 (mockbuild@host) (gcc 8) #2 SMP\0"
    vmlinux = _elf(tmp_path, btf, banner)
    archive = tmp_path / "archive"
    assert add(archive, "--from", vmlinux, "--id", "ol", "--version", "8") == 0
    from gobtfgen.keys import btfhub_arch

    # clang builds the empty object for this machine's arch.
    arch = btfhub_arch(os.uname().machine)
    dest = archive / "ol/8" / str(arch) / "5.4.17-2136.300.7.el8uek.x86_64.btf.tar.xz"
    assert read_kernel_btf(dest) == btf


@pytest.mark.tools
def test_vmlinux_elf_without_btf(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    vmlinux = _elf(tmp_path, None, None)
    assert add(tmp_path / "a", "--from", vmlinux, "--release", "r", "--id", "x",
               "--version", "1") == 1
    assert "no .BTF section; build the kernel with CONFIG_DEBUG_INFO_BTF=y" in \
        capsys.readouterr().err


@pytest.mark.tools
def test_vmlinux_elf_arch_mismatch(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    vmlinux = _elf(tmp_path, tiny_btf("v"), None)
    from gobtfgen.keys import btfhub_arch

    other = "arm64" if btfhub_arch(os.uname().machine) == "x86_64" else "x86_64"
    assert add(tmp_path / "a", "--from", vmlinux, "--release", "r", "--id", "x", "--version",
               "1", "--arch", other) == 2
    assert "drop --arch or pass the right file" in capsys.readouterr().err


@pytest.mark.tools
def test_vmlinux_banner_outside_rodata_is_ignored(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    vmlinux = _elf(tmp_path, tiny_btf("v"), b"Linux version 9.9.9-stray (x@y) #1\0",
                   banner_section=".comment.extra")
    assert add(tmp_path / "a", "--from", vmlinux, "--id", "x", "--version", "1") == 2
    assert "--release is needed" in capsys.readouterr().err
