from __future__ import annotations

import lzma
import tarfile
from pathlib import Path

import pytest

from gobtfgen import archive
from gobtfgen.errors import InputError
from tests.btfdata import add_kernel, btfhub_file, tar_xz, tiny_btf


def make_archive(root: Path) -> Path:
    for key in ("ubuntu/20.04/x86_64/5.4.0-1029-aws", "ubuntu/20.04/arm64/5.4.0-1029-aws",
                "centos/7/x86_64/3.10.0-1160.el7.x86_64", "centos/8/x86_64/4.18.0-305.el8.x86_64",
                "sles/15.3/x86_64/5.3.18-57-default"):
        add_kernel(root, key)
    (root / ".git" / "objects").mkdir(parents=True)
    (root / "README.md").write_text("not a kernel")
    return root


def keys(kernels: list[archive.Kernel]) -> list[str]:
    return [k.key for k in kernels]


def test_scan_selects_arches_and_sorts(tmp_path: Path) -> None:
    kernels, problems = archive.scan_archive(make_archive(tmp_path), ["x86_64"])
    assert keys(kernels) == ["centos/7/x86_64/3.10.0-1160.el7.x86_64",
                             "centos/8/x86_64/4.18.0-305.el8.x86_64",
                             "sles/15.3/x86_64/5.3.18-57-default",
                             "ubuntu/20.04/x86_64/5.4.0-1029-aws"]
    assert problems == []
    k = kernels[2]
    assert (k.distro, k.version, k.arch, k.release) == ("sles", "15.3", "x86_64",
                                                        "5.3.18-57-default")


@pytest.mark.parametrize("include, exclude, expected", [
    (["centos"], [], 2),
    (["centos/7"], [], 1),
    (["*el8*"], [], 1),
    ([], ["centos/*"], 2),
    (["ubuntu", "sles"], ["*aws"], 1),
])
def test_include_exclude(tmp_path: Path, include: list[str], exclude: list[str],
                         expected: int) -> None:
    kernels, _ = archive.scan_archive(make_archive(tmp_path), ["x86_64"], include, exclude)
    assert len(kernels) == expected


def test_aarch64_folder_is_reported(tmp_path: Path) -> None:
    add_kernel(tmp_path, "fedora/34/aarch64/5.11.12-300.fc34.aarch64")
    kernels, problems = archive.scan_archive(tmp_path, ["x86_64", "arm64"])
    assert kernels == []
    assert "arm64, not aarch64" in problems[0].message


def test_missing_archive_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="--archive DIR"):
        archive.scan_archive(tmp_path / "nope", ["x86_64"])


def test_reads_valid_file(tmp_path: Path) -> None:
    path = add_kernel(tmp_path, "a/1/x86_64/r1", tiny_btf(("int", "long")))
    assert archive.read_kernel_btf(path) == tiny_btf(("int", "long"))


def test_reads_a_lone_member_of_another_name(tmp_path: Path) -> None:
    """Datadog's btfhub-archive fork: one member named vmlinux (vmlinux and modules merged)."""
    blob = tiny_btf(("int", "nf_conn"))
    path = add_kernel(tmp_path, "a/1/x86_64/r1", content=tar_xz([(_member("vmlinux"), blob)]))
    assert archive.read_kernel_btf(path) == blob
    # Directories beside it do not count as members.
    path = add_kernel(tmp_path, "a/1/x86_64/r2", content=tar_xz(
        [(_member("d", tarfile.DIRTYPE), None), (_member("d/vmlinux"), blob)]))
    assert archive.read_kernel_btf(path) == blob


def _member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = link
    return info


HOSTILE = {
    "truncated xz": (lambda: btfhub_file("r", tiny_btf())[:-30], "truncated|corrupt"),
    "not xz": (lambda: b"hello, not xz at all" * 10, "corrupt xz"),
    "dotdot": (lambda: tar_xz([(_member("../../etc/r.btf"), tiny_btf())]), "escapes"),
    "absolute": (lambda: tar_xz([(_member("/etc/r.btf"), tiny_btf())]), "escapes"),
    "symlink": (lambda: tar_xz([(_member("r.btf", tarfile.SYMTYPE, "/etc/passwd"), None)]),
                "is a link"),
    "hardlink": (lambda: tar_xz([(_member("a.btf"), tiny_btf()),
                                 (_member("r.btf", tarfile.LNKTYPE, "a.btf"), None)]),
                 "is a link"),
    "device": (lambda: tar_xz([(_member("r.btf", tarfile.CHRTYPE), None)]), "device"),
    "two btfs": (lambda: tar_xz([(_member("a.btf"), tiny_btf()), (_member("b.btf"), tiny_btf())]),
                 "2 .btf members"),
    "no btf": (lambda: tar_xz([(_member("readme.txt"), b"hi")]), r"\(readme.txt\): 2 bytes"),
    "empty tar": (lambda: tar_xz([(_member("d", tarfile.DIRTYPE), None)]), "no .btf member"),
    "no btf, two files": (lambda: tar_xz([(_member("a"), tiny_btf()), (_member("b"), b"x")]),
                          "no .btf member and 2 other files"),
    "vmlinux not btf": (lambda: tar_xz([(_member("vmlinux"), b"\x7fELF" + bytes(100))]),
                        r"\(vmlinux\): not BTF"),
    "not btf": (lambda: tar_xz([(_member("r.btf"), b"\x7fELF" + bytes(100))]), "not BTF"),
    "short btf": (lambda: tar_xz([(_member("r.btf"), b"\x9f\xeb\x01")]), "too short"),
    "btf past end": (lambda: tar_xz([(_member("r.btf"), tiny_btf()[:-3])]), "past the end"),
    "not tar": (lambda: lzma.compress(b"just some text, no tar header" * 30), "not a valid tar"),
    "huge name": (lambda: tar_xz([(_member("x" * 5000 + ".btf"), tiny_btf())]), None),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_files_give_one_line_errors(tmp_path: Path, case: str) -> None:
    make, pattern = HOSTILE[case]
    path = add_kernel(tmp_path, "a/1/x86_64/r", content=make())
    if pattern is None:  # a long but harmless name is fine
        assert archive.read_kernel_btf(path) == tiny_btf()
        return
    with pytest.raises(InputError, match=pattern) as exc:
        archive.read_kernel_btf(path)
    message = str(exc.value)
    assert "\n" not in message and str(path) in message and "--exclude" in message


def test_xz_bomb_is_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # 64 MiB of zeros compresses to ~10 kB; with the bound lowered to 1 MiB it must stop early.
    bomb = lzma.compress(bytes(64 << 20), format=lzma.FORMAT_XZ, preset=1)
    path = add_kernel(tmp_path, "a/1/x86_64/r", content=bomb)
    monkeypatch.setattr(archive, "MAX_TAR_BYTES", 1 << 20)
    with pytest.raises(InputError, match="xz bomb"):
        archive.inflate_xz(path.read_bytes(), what=path, limit=archive.MAX_TAR_BYTES)


def test_nothing_is_extracted(tmp_path: Path) -> None:
    path = add_kernel(tmp_path, "a/1/x86_64/r", content=tar_xz([(_member("../evil.btf"),
                                                                   tiny_btf())]))
    before = sorted(p.name for p in tmp_path.rglob("*"))
    with pytest.raises(InputError):
        archive.read_kernel_btf(path)
    assert sorted(p.name for p in tmp_path.rglob("*")) == before


@pytest.mark.tools
def test_archive_commit_matches_git(tmp_path: Path) -> None:
    import subprocess

    make_archive(tmp_path)
    assert archive.archive_commit(tmp_path) is None  # a .git folder with no HEAD
    import shutil

    shutil.rmtree(tmp_path / ".git")
    git = ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "kernels"], check=True)
    head = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True,
                          check=True).stdout.strip()
    assert archive.archive_commit(tmp_path) == head
    subprocess.run([*git, "pack-refs", "--all"], check=True)  # the ref now only in packed-refs
    assert archive.archive_commit(tmp_path) == head
