"""Kernel BTF out of boot images and kernel packages (gobtfgen/kernelimage.py, `gobtfgen archive
add --from`): the real Debian corpus images of both arches against independent extractions,
synthetic bzImages and packages built here, and broken files."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import shutil
import struct
import subprocess
import tarfile
from pathlib import Path

import lz4.block
import pytest
import zstandard

from gobtfgen import cli, kernelimage, pack
from gobtfgen.archive import read_kernel_btf, scan_archive
from gobtfgen.errors import InputError
from tests import corpus
from tests.conftest import need
from tests.tinybtf import tiny_btf

PACKAGES = corpus.packages()
X86 = [p for p in PACKAGES if p.arch == "x86_64"]
ARM64 = [p for p in PACKAGES if p.arch == "arm64"]
_DEBIAN = "Debian Kernel Team <debian-kernel@lists.debian.org>"


def ids(pkgs: list[corpus.KernelPackage]) -> list[str]:
    return [p.release for p in pkgs]


# --- synthetic files -----------------------------------------------------------------------

def tiny_elf(btf: bytes, banner: bytes = b"Linux version 6.1.0-99-test (me@here) (gcc) #1\0",
             machine: int = 62) -> bytes:
    """A minimal ELF64 (x86_64 unless machine says) with .BTF and .rodata sections, enough for
    a vmlinux reader: no program headers, section headers at the end."""
    shstrtab = b"\0.BTF\0.rodata\0.shstrtab\0"
    body = bytearray(b"\0" * 64)
    sections = []  # (name offset, type, offset, size)
    for name_off, data in ((1, btf), (6, banner)):
        sections.append((name_off, 1, len(body), len(data)))  # SHT_PROGBITS
        body += data
    sections.append((14, 3, len(body), len(shstrtab)))  # SHT_STRTAB
    body += shstrtab
    while len(body) % 8:
        body += b"\0"
    shoff = len(body)
    body += b"\0" * 64  # the null section
    for name_off, sh_type, offset, size in sections:
        body += struct.pack("<IIQQQQIIQQ", name_off, sh_type, 0, 0, offset, size, 0, 0, 1, 0)
    ident = b"\x7fELF\x02\x01\x01" + b"\0" * 9
    body[:64] = ident + struct.pack("<HHIQQQIHHHHHH", 2, machine, 1, 0, 0, shoff, 0, 64, 0, 0,
                                    64, len(sections) + 1, len(sections))
    return bytes(body)


def lz4_legacy(data: bytes) -> bytes:
    """What the kernel's build makes (lz4 -l, then the inflated size appended)."""
    out = bytearray(b"\x02\x21\x4c\x18")
    for i in range(0, len(data), 8 << 20):
        block = lz4.block.compress(data[i:i + (8 << 20)], store_size=False)
        out += struct.pack("<I", len(block)) + block
    return bytes(out + struct.pack("<I", len(data)))


def bzimage(payload: bytes, *, setup_sects: int = 1, version: int = 0x20F) -> bytes:
    """An x86 boot image: setup sectors with the setup header, then the payload."""
    setup = bytearray((setup_sects + 1) * 512)
    setup[0:2] = b"MZ"
    setup[0x1F1] = setup_sects
    setup[0x202:0x206] = b"HdrS"
    struct.pack_into("<H", setup, 0x206, version)
    struct.pack_into("<II", setup, 0x248, 16, len(payload))  # payload_offset, payload_length
    return bytes(setup) + b"\0" * 16 + payload + b"\0" * 8


def tar(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def tar_xz(files: dict[str, bytes]) -> bytes:
    return lzma.compress(tar(files))


# data.tar's compressions: Debian's xz, Ubuntu's zstd, older packages' gzip and bzip2.
DATA_TAR = {"xz": lzma.compress, "zst": lambda d: zstandard.ZstdCompressor().compress(d),
            "gz": gzip.compress, "bz2": bz2.compress, "": lambda d: d}


def ar(members: dict[str, bytes]) -> bytes:
    out = bytearray(b"!<arch>\n")
    for name, data in members.items():
        out += f"{name:<16}{0:<12}{0:<6}{0:<6}{100644:<8}{len(data):<10}`\n".encode()
        out += data + (b"\n" if len(data) % 2 else b"")
    return bytes(out)


def deb(files: dict[str, bytes], *, package: str = "linux-image-6.1.0-99-cloud-amd64",
        arch: str = "amd64", maintainer: str = _DEBIAN, version: str = "6.1.200-1",
        data_tar: str = "xz") -> bytes:
    control = (f"Package: {package}\nVersion: {version}\nArchitecture: {arch}\n"
               f"Maintainer: {maintainer}\nDescription: test\n multi-line\n").encode()
    data_name = f"data.tar.{data_tar}".rstrip(".")
    return ar({"debian-binary": b"2.0\n", "control.tar.xz": tar_xz({"./control": control}),
               data_name: DATA_TAR[data_tar](tar(files))})


def read(data: bytes, name: str = "f") -> kernelimage.Source:
    return kernelimage.read(data, Path(name))


# --- synthetic ----------------------------------------------------------------------------

@pytest.mark.parametrize(("compress", "name"), [
    (lz4_legacy, "LZ4"), (lambda d: gzip.compress(d) + b"\0\0\0\0", "gzip"),
    (lambda d: lzma.compress(d), "xz"), (lambda d: lzma.compress(d, lzma.FORMAT_ALONE), "lzma"),
])
def test_synthetic_bzimage(compress: object, name: str) -> None:
    btf = tiny_btf("bz")
    assert callable(compress)
    got = read(bzimage(compress(tiny_elf(btf))))
    assert (got.btf, got.arch, got.release, got.kind) == (
        btf, "x86_64", "6.1.0-99-test", f"x86 bzImage ({name})")


def test_lz4_block_boundaries() -> None:
    """A payload of several 8 MiB blocks (a real vmlinux is ~60 MB)."""
    btf = tiny_btf("big", padding=2_000_000)  # ~22 MB of strings: three blocks
    got = read(bzimage(lz4_legacy(tiny_elf(btf))))
    assert got.btf == btf


def test_setup_sects_zero_means_four() -> None:
    btf = tiny_btf("old")
    image = bytearray(bzimage(lz4_legacy(tiny_elf(btf)), setup_sects=4))
    image[0x1F1] = 0
    assert read(bytes(image)).btf == btf


def test_old_boot_protocol() -> None:
    with pytest.raises(InputError, match=r"^f: x86 boot protocol 2\.6 .*extract-vmlinux"):
        read(bzimage(b"", version=0x206))


@pytest.mark.parametrize(("cut", "message"), [
    (0.5, "payload ends past the file"),
])
def test_truncated_bzimage(cut: float, message: str) -> None:
    image = bzimage(lz4_legacy(tiny_elf(tiny_btf("t", padding=10000))))
    with pytest.raises(InputError, match=f"^f: .*{message}.*truncated"):
        read(image[:int(len(image) * cut)])


@pytest.mark.parametrize("compress", [lz4_legacy, gzip.compress, lzma.compress])
def test_payload_stream_cut_short(compress: object) -> None:
    """The header's length agrees with the file, but the stream inside ends early."""
    assert callable(compress)
    payload = compress(tiny_elf(tiny_btf("t", padding=100000)))
    with pytest.raises(InputError, match=r"^f: the bzImage payload ends inside its .* stream; "
                                         "the file is truncated"):
        read(bzimage(payload[:len(payload) // 2]))


def test_payload_not_elf() -> None:
    with pytest.raises(InputError, match="payload is not an ELF vmlinux"):
        read(bzimage(gzip.compress(b"not an elf" * 100)))


def test_unknown_payload_compression() -> None:
    with pytest.raises(InputError, match="compressed in a format gobtfgen does not read"):
        read(bzimage(b"\x89LZO\0" + b"x" * 100))


def test_btf_blob_scan() -> None:
    btf = tiny_btf("scan")
    fake = b"\x9f\xeb\x01\x00" + b"\xff" * 40  # a magic with a nonsense header
    banner = b"Linux version 6.1.0-1-arm64 (x)"
    image = b"\0" * 0x38 + b"ARM\x64" + b"\0" * 100 + fake + btf + banner
    got = read(image)
    assert (got.btf, got.arch, got.release, got.kind) == (btf, "arm64", "6.1.0-1-arm64",
                                                          "arm64 Image")
    assert read(gzip.compress(image)).kind == "gzip'd arm64 Image"


def test_arm64_image_without_btf() -> None:
    image = b"\0" * 0x38 + b"ARM\x64" + b"\0" * 200
    with pytest.raises(InputError, match="^f: the arm64 Image holds no BTF; .*DEBUG_INFO_BTF"):
        read(image)


@pytest.mark.parametrize("content", [b"", b"hello, no kernel here", b"MZ" + b"\0" * 600,
                                     gzip.compress(b"hello")])
def test_no_kernel(tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes) -> None:
    src = tmp_path / "notes.txt"
    src.write_bytes(content)
    assert cli.main(["archive", "add", str(tmp_path / "a"), "--from", str(src), "--id", "x",
                     "--version", "1", "--release", "r"]) == 1
    err = capsys.readouterr().err
    assert f"{src}: not a kernel image, kernel .deb, vmlinux ELF or raw BTF" in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "a").exists()


def test_synthetic_deb_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    btf = tiny_btf("deb")
    image = bzimage(lz4_legacy(tiny_elf(btf)))
    src = tmp_path / "k.deb"
    src.write_bytes(deb({"./boot/config-6.1.0-99-cloud-amd64": b"CONFIG_X=y\n",
                         "./boot/vmlinuz-6.1.0-99-cloud-amd64": image}))
    got = read(src.read_bytes())
    assert (got.btf, got.arch, got.release, got.os_id, got.os_version, got.package) == (
        btf, "x86_64", "6.1.0-99-cloud-amd64", "debian", "12", "linux-image-6.1.0-99-cloud-amd64")
    archive = tmp_path / "archive"
    assert cli.main(["archive", "add", str(archive), "--from", str(src)]) == 0
    assert read_kernel_btf(archive / "debian/12/x86_64/6.1.0-99-cloud-amd64.btf.tar.xz") == btf
    # --id / --version override what the package says.
    assert cli.main(["archive", "add", str(archive), "--from", str(src), "--id", "mine",
                     "--version", "7"]) == 0
    assert (archive / "mine/7/x86_64/6.1.0-99-cloud-amd64.btf.tar.xz").is_file()
    capsys.readouterr()


@pytest.mark.parametrize("data_tar", sorted(DATA_TAR))
def test_deb_data_tar_compressions(data_tar: str) -> None:
    btf = tiny_btf(f"c{data_tar}")
    got = read(deb({"./boot/vmlinuz-6.1.0-99-arm64": gzip.compress(
        b"\0" * 0x38 + b"ARM\x64" + btf + b"Linux version 6.1.0-99-arm64 (x)")},
        arch="arm64", data_tar=data_tar))
    assert (got.btf, got.arch, got.release, got.os_version) == (btf, "arm64", "6.1.0-99-arm64",
                                                                "12")


def test_deb_not_debians(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "k.deb"
    src.write_bytes(deb({"./boot/vmlinuz-5.15.0-1-generic": bzimage(lz4_legacy(tiny_elf(
        tiny_btf("u"))))}, package="linux-image-5.15.0-1-generic",
        maintainer="Ubuntu Kernel Team <kernel-team@lists.ubuntu.com>"))
    assert cli.main(["archive", "add", str(tmp_path / "a"), "--from", str(src)]) == 2
    err = capsys.readouterr().err
    assert "--id and --version are needed" in err and "linux-image-5.15.0-1-generic" in err
    assert cli.main(["archive", "add", str(tmp_path / "a"), "--from", str(src), "--id", "ubuntu",
                     "--version", "22.04"]) == 0
    assert (tmp_path / "a/ubuntu/22.04/x86_64/5.15.0-1-generic.btf.tar.xz").is_file()


def test_deb_without_kernel_image(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "linux-headers.deb"
    src.write_bytes(deb({"./usr/share/doc/linux-headers/copyright": b"GPL\n"},
                        package="linux-headers-6.1.0-99-amd64"))
    assert cli.main(["archive", "add", str(tmp_path / "a"), "--from", str(src)]) == 1
    err = capsys.readouterr().err
    assert f"{src}: the package linux-headers-6.1.0-99-amd64 has no boot/vmlinuz-*" in err
    assert err.count("\n") == 1


def test_ar_but_not_deb_and_truncated_deb() -> None:
    with pytest.raises(InputError, match="^f: an ar archive but not a Debian package"):
        read(ar({"foo.o": b"x"}))
    whole = deb({"./boot/vmlinuz-6.1.0-1-amd64": b"x" * 1000})
    with pytest.raises(InputError, match="^f: the package's data.tar.xz ends past the file; "
                                         "the file is truncated"):
        read(whole[:-100])


@pytest.mark.parametrize(("fields", "release", "want"), [
    ({"Version": "6.1.170-3"}, "6.1.0-47-cloud-amd64", "12"),
    ({"Version": "6.12.117-1~deb12u1"}, "6.12.117+deb12-cloud-amd64", "12"),
    ({"Version": "6.12.38-1"}, "6.12.38+deb13-amd64", "13"),
    ({"Version": "5.10.237-1"}, "5.10.0-35-cloud-amd64", "11"),
    ({"Version": "6.1.76-1~bpo11+1"}, "6.1.0-0.deb11.17-amd64", "11"),
    ({"Version": "4.19.304-1"}, "4.19.0-26-amd64", "10"),
    ({"Version": "6.5.3-1"}, "6.5.0-1-amd64", None),  # sid only: no release to file it under
])
def test_debian_version_rule(fields: dict[str, str], release: str, want: str | None) -> None:
    assert kernelimage.debian_version({"Maintainer": _DEBIAN, **fields}, release) == want
    assert kernelimage.debian_version({"Maintainer": "Someone <x@y>", **fields}, release) is None


# --- the real corpus ----------------------------------------------------------------------

def _oracle_vmlinux(image: Path, tmp_path: Path) -> Path:
    """The vmlinux inside a bzImage, the way scripts/extract-vmlinux gets it: the payload's
    decompressor program (lz4, zstd, xz), independent of gobtfgen's inflaters."""
    data = image.read_bytes()
    offset, length = struct.unpack_from("<II", data, 0x248)
    payload = data[(data[0x1F1] + 1) * 512 + offset:][:length]
    tool = {b"\x02\x21": "lz4", b"\x28\xb5": "zstd", b"\xfd7": "xz"}[payload[:2]]
    need(tool, f" (it decompresses {image.name} independently of gobtfgen)")
    out = subprocess.run([tool, "-dc"], input=payload, capture_output=True)
    # lz4 and xz complain about the size the kernel's build appends, after the whole stream.
    vmlinux = tmp_path / "vmlinux"
    vmlinux.write_bytes(out.stdout)
    return vmlinux


@pytest.mark.tools
@pytest.mark.parametrize("pkg", X86, ids=ids(X86))
def test_corpus_x86(pkg: corpus.KernelPackage, tmp_path: Path) -> None:
    image = corpus.boot_image(pkg)
    got = kernelimage.read(image.read_bytes(), image)
    assert (got.arch, got.release) == ("x86_64", pkg.release)
    objcopy = need("llvm-objcopy", " (it cuts .BTF out of the vmlinux)")
    vmlinux = _oracle_vmlinux(image, tmp_path)
    subprocess.run([objcopy, f"--dump-section=.BTF={tmp_path / 'btf'}", str(vmlinux),
                    str(tmp_path / "discard")], check=True)
    assert got.btf == (tmp_path / "btf").read_bytes()
    from_deb = kernelimage.read(corpus.deb(pkg).read_bytes(), corpus.deb(pkg))
    assert (from_deb.btf, from_deb.arch, from_deb.release, from_deb.os_id,
            from_deb.os_version) == (got.btf, "x86_64", pkg.release, "debian", "12")


@pytest.mark.tools
@pytest.mark.parametrize("pkg", ARM64, ids=ids(ARM64))
def test_corpus_arm64(pkg: corpus.KernelPackage, tmp_path: Path) -> None:
    image = corpus.boot_image(pkg)
    data = image.read_bytes()
    got = kernelimage.read(data, image)
    assert (got.arch, got.release, got.kind) == ("arm64", pkg.release, "arm64 Image")
    # The blob is the Image's own bytes, one of a kind there, and bpftool reads all of it.
    assert data.count(got.btf) == 1
    raw = tmp_path / "raw.btf"
    raw.write_bytes(got.btf)
    dump = subprocess.run([need("bpftool"), "btf", "dump", "file", str(raw)],
                          capture_output=True, text=True, check=True).stdout
    assert dump.count("\n") > 50000 and "STRUCT 'task_struct'" in dump
    from_deb = kernelimage.read(corpus.deb(pkg).read_bytes(), corpus.deb(pkg))
    assert (from_deb.btf, from_deb.arch, from_deb.release, from_deb.os_id,
            from_deb.os_version) == (got.btf, "arm64", pkg.release, "debian", "12")


def test_gzipped_arm64_image() -> None:
    pkg = ARM64[0]
    image = corpus.boot_image(pkg)
    data = image.read_bytes()
    got = kernelimage.read(gzip.compress(data, compresslevel=1), image)
    assert got.kind == "gzip'd arm64 Image" and got.release == pkg.release
    assert got.btf == kernelimage.read(data, image).btf


@pytest.mark.parametrize("pkg", [X86[0], ARM64[0]], ids=["x86_64", "arm64"])
def test_truncated_corpus_image(pkg: corpus.KernelPackage) -> None:
    image = corpus.boot_image(pkg)
    data = image.read_bytes()
    with pytest.raises(InputError, match=f"^{image}: .*truncated, download it again"):
        kernelimage.read(data[:len(data) // 3], image)


def test_truncated_corpus_deb() -> None:
    path = corpus.deb(X86[0])
    data = path.read_bytes()
    with pytest.raises(InputError, match=f"^{path}: .*truncated, download it again"):
        kernelimage.read(data[:len(data) // 2], path)


@pytest.mark.tools
def test_add_corpus_debs_then_generate(tmp_path: Path, probe_objects: dict[str, Path],
                                       capsys: pytest.CaptureFixture[str]) -> None:
    """The user's path end to end: archive add each arch's package, generate minimizes them."""
    archive = tmp_path / "archive"
    chosen = [X86[0], ARM64[0]]
    for pkg in chosen:
        assert cli.main(["archive", "add", str(archive), "--from", str(corpus.deb(pkg))]) == 0
        assert f"{pkg.key}: added" in capsys.readouterr().out
    kernels, problems = scan_archive(archive, ["x86_64", "arm64"])
    assert sorted(k.key for k in kernels) == sorted(p.key for p in chosen) and not problems
    out = tmp_path / "out"
    assert cli.main(["generate", "--archive", str(archive), "--object",
                     str(probe_objects["base"]), "--output-dir", str(out), "--cache-dir",
                     str(tmp_path / "cache"), "--pkg", "btfgen"]) == 0
    for pkg in chosen:
        arch, entries = pack.unpack((out / f"btfgen_{pkg.arch}.payload").read_bytes())
        full = read_kernel_btf(archive / f"{pkg.key}.btf.tar.xz")
        assert arch == pkg.arch and 0 < len(entries[pkg.key]) < len(full) // 100
    shutil.rmtree(archive)
