"""The kernel corpus: real Debian 12 kernel packages (both arches, several versions and flavours)
that any machine can get with apt, so tests over real kernels run without ../shared.

`scripts/fetch-kernels` (run by scripts/setup) downloads the packages listed in tests/kernels.tsv
into CACHE/kernels/debs, checks each against the list's sha256 and size, extracts the kernel
images and builds a btfhub-layout archive of them with `gobtfgen archive add --from <deb>`.
Tests read it through the functions here; each skips, saying to run scripts/setup, when its
file is absent. Extraction and the archive are made in a temporary name and renamed into place,
so tests running side by side never see half a file.

Run as `python -m tests.corpus [--quiet]` (what scripts/fetch-kernels does).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import functools
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

CACHE = Path(os.environ.get("GOBTFGEN_TEST_CACHE")
             or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
             / "gobtfgen-tests")
KERNELS = CACHE / "kernels"
DEBS = KERNELS / "debs"
ARCHIVE = KERNELS / "archive"
LIST = Path(__file__).resolve().with_name("kernels.tsv")
REPO = LIST.parents[1]
# Debian's architecture names for btfhub's.
_DEBARCH = {"x86_64": "amd64", "arm64": "arm64"}
_SETUP_HINT = "run scripts/setup (or scripts/fetch-kernels) to download the kernel corpus"


@dataclass(frozen=True)
class KernelPackage:
    name: str  # linux-image-6.1.0-56-cloud-amd64
    version: str  # Debian package version, 6.1.192-2
    arch: str  # x86_64 or arm64 (btfhub's names)
    release: str  # uname -r, 6.1.0-56-cloud-amd64
    sha256: str
    size: int

    @property
    def debarch(self) -> str:
        return _DEBARCH[self.arch]

    @property
    def apt_spec(self) -> str:
        """What `apt-get download` takes: foreign arches need the `:arch` qualifier."""
        qualifier = "" if self.debarch == _native_debarch() else f":{self.debarch}"
        return f"{self.name}{qualifier}={self.version}"

    @property
    def filename(self) -> str:
        # apt-get download's own naming (an epoch's ':' would be %3a; no corpus kernel has one).
        return f"{self.name}_{self.version.replace(':', '%3a')}_{self.debarch}.deb"

    @property
    def key(self) -> str:
        return f"debian/12/{self.arch}/{self.release}"


class CorpusError(Exception):
    """A corpus file is wrong or cannot be fetched; the message says which and what to do."""


@functools.cache
def _native_debarch() -> str:
    try:
        out = subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True)
        if out.returncode == 0:
            return out.stdout.strip()
    except FileNotFoundError:
        pass
    return "amd64"


@functools.cache
def packages() -> list[KernelPackage]:
    """The committed list tests/kernels.tsv, in its order."""
    result = []
    for line in LIST.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        name, version, arch, release, sha256, size = line.split("\t")
        result.append(KernelPackage(name, version, arch, release, sha256, int(size)))
    return result


def deb_path(pkg: KernelPackage) -> Path:
    """Where the package's .deb is cached (it may be absent)."""
    return DEBS / pkg.filename


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def check_deb(pkg: KernelPackage, path: Path) -> None:
    """Raise CorpusError (after deleting the file) unless path has the listed size and sha256."""
    size = path.stat().st_size
    if size != pkg.size:
        path.unlink()
        raise CorpusError(f"{path}: {size} bytes, tests/kernels.tsv says {pkg.size} for "
                          f"{pkg.name} {pkg.version}; deleted it, {_SETUP_HINT} again")
    digest = _sha256(path)
    if digest != pkg.sha256:
        path.unlink()
        raise CorpusError(f"{path}: sha256 {digest} is not {pkg.sha256} (tests/kernels.tsv) for "
                          f"{pkg.name} {pkg.version}; deleted it, {_SETUP_HINT} again")


# Hashing the whole corpus takes about a second; do it once per process and package.
_verified: set[KernelPackage] = set()


def _cached_deb(pkg: KernelPackage) -> Path | None:
    path = deb_path(pkg)
    if not path.is_file():
        return None
    if pkg not in _verified:
        check_deb(pkg, path)
        _verified.add(pkg)
    return path


def deb(pkg: KernelPackage) -> Path:
    """The verified cached .deb; skips the test when it was not downloaded."""
    try:
        path = _cached_deb(pkg)
    except CorpusError as e:
        pytest.fail(str(e))
    if path is None:
        pytest.skip(reason=f"{deb_path(pkg)} is absent; {_SETUP_HINT}")
    return path


def _tmp_beside(dest: Path) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))


def _extract_boot_image(pkg: KernelPackage, path: Path, dest: Path) -> None:
    """Copy boot/vmlinuz-<release> out of the package with dpkg-deb (Debian's own reader, so
    the corpus does not depend on gobtfgen's .deb parser, which these files test)."""
    member = f"./boot/vmlinuz-{pkg.release}"
    tmp = _tmp_beside(dest)
    try:
        # Reading stops at the image (near the start), which kills dpkg-deb by SIGPIPE: its
        # complaint about that is noise, and a real failure shows as the image not found.
        proc = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(path)], stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL)
        assert proc.stdout is not None
        found = False
        with tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
            for info in tar:
                if info.name == member and info.isfile():
                    src = tar.extractfile(info)
                    assert src is not None
                    with (tmp / dest.name).open("wb") as out:
                        shutil.copyfileobj(src, out)
                    found = True
                    break
        proc.stdout.close()
        proc.wait()
        if not found:
            raise CorpusError(f"{path}: no {member} in the package (dpkg-deb --fsys-tarfile "
                              f"exit {proc.returncode}); tests/kernels.tsv must name the package "
                              "that holds the kernel image")
        os.replace(tmp / dest.name, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def boot_image_path(pkg: KernelPackage) -> Path:
    return KERNELS / pkg.release / "boot" / f"vmlinuz-{pkg.release}"


def boot_image(pkg: KernelPackage) -> Path:
    """The package's boot/vmlinuz-<release>, extracted beside the cached .deb."""
    dest = boot_image_path(pkg)
    if not dest.is_file():
        try:
            _extract_boot_image(pkg, deb(pkg), dest)
        except CorpusError as e:
            pytest.fail(str(e))
    return dest


def modules_dir(pkg: KernelPackage) -> Path:
    """The package's lib/modules/<release>, extracted on first use (a few hundred MB for a
    full flavour, so scripts/setup leaves it in the .deb)."""
    dest = KERNELS / pkg.release / "lib" / "modules" / pkg.release
    if not dest.is_dir():
        path = deb(pkg)
        tmp = _tmp_beside(dest)
        try:
            subprocess.run(["dpkg-deb", "-x", str(path), str(tmp)], check=True)
            try:
                os.rename(tmp / "lib" / "modules" / pkg.release, dest)
            except OSError:
                if not dest.is_dir():  # else another test extracted it first
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return dest


def _root_cmd(*cmd: str) -> list[str]:
    if os.geteuid() == 0:
        return list(cmd)
    if shutil.which("sudo") is None:
        raise CorpusError(f"`{' '.join(cmd)}` needs root and sudo is missing; run scripts/setup "
                          "as root")
    return ["sudo", *cmd]


def _apt_update(say: bool) -> None:
    if say:
        print("fetch-kernels: apt-get update", file=sys.stderr)
    subprocess.run(_root_cmd("apt-get", "update", "-qq"), check=True, stdout=subprocess.DEVNULL)


def _add_architectures(missing: list[KernelPackage], say: bool) -> bool:
    """dpkg --add-architecture for a foreign arch apt does not know yet; True when it did (the
    package lists then need refreshing)."""
    native = _native_debarch()
    foreign = set(subprocess.run(["dpkg", "--print-foreign-architectures"], capture_output=True,
                                 text=True, check=True).stdout.split())
    added = False
    for arch in sorted({p.debarch for p in missing} - {native} - foreign):
        if say:
            print(f"fetch-kernels: dpkg --add-architecture {arch}", file=sys.stderr)
        subprocess.run(_root_cmd("dpkg", "--add-architecture", arch), check=True)
        added = True
    return added


def _apt_download(missing: list[KernelPackage], into: Path) -> str | None:
    """Run apt-get download; None when it worked, else apt's complaint."""
    out = subprocess.run(["apt-get", "download", "-qq", *[p.apt_spec for p in missing]],
                         cwd=into, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if out.returncode == 0:
        return None
    errors = [line for line in out.stderr.splitlines() if line.startswith("E:")]
    return "; ".join(errors) or out.stderr.strip() or f"exit {out.returncode}"


def _download(missing: list[KernelPackage], say: bool) -> None:
    """Download the missing packages. Asking apt whether it knows each one costs seconds per
    package, so just try, and refresh the package lists (once) only when apt does not know one."""
    updated = _add_architectures(missing, say)
    if updated:
        _apt_update(say)
    DEBS.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".download.", dir=DEBS))
    try:
        total = sum(p.size for p in missing)
        if say:
            print(f"fetch-kernels: downloading {len(missing)} kernel packages "
                  f"({total / 1e6:.0f} MB) from Debian with apt-get download", file=sys.stderr)
        # apt drops to the _apt user to download; it must be able to write the directory.
        tmp.chmod(0o777)
        started = time.monotonic()
        failure = _apt_download(missing, tmp)
        if failure is not None and not updated:
            _apt_update(say)
            failure = _apt_download(missing, tmp)
        if failure is not None:
            raise CorpusError(f"apt-get download failed: {failure}. If apt no longer serves a "
                              "version (Debian removes superseded kernels), put current ones in "
                              "tests/kernels.tsv (name, version, arch, release, and SHA256 and "
                              "Size from `apt-cache show`)")
        for pkg in missing:
            got = tmp / pkg.filename
            if not got.is_file():
                raise CorpusError(f"apt-get download {pkg.apt_spec} gave no {pkg.filename}")
            check_deb(pkg, got)
            os.replace(got, deb_path(pkg))
            _verified.add(pkg)
        if say:
            print(f"fetch-kernels: {total / 1e6:.0f} MB in {time.monotonic() - started:.0f} s",
                  file=sys.stderr)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _archive_stamp() -> str:
    """What the archive was built from: the list. (Not gobtfgen's code: the BTF in a package
    does not change with it, and tests/test_kernelimage.py runs archive add afresh.)"""
    return hashlib.sha256(LIST.read_bytes()).hexdigest()


def _archive_ready(stamp: str) -> bool:
    try:
        if (ARCHIVE / ".stamp").read_text() != stamp:
            return False
    except OSError:
        return False
    return all((ARCHIVE / f"{p.key}.btf.tar.xz").is_file() for p in packages())


@contextlib.contextmanager
def _lock() -> Iterator[None]:
    """One fetch or archive build at a time per cache (engineers and test runs share it): the
    second waits, then finds the work done."""
    KERNELS.mkdir(parents=True, exist_ok=True)
    with (KERNELS / ".lock").open("w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def build_archive(say: bool = False) -> Path:
    with _lock():
        return _build_archive(say)


def _build_archive(say: bool) -> Path:
    """Build ARCHIVE from the cached packages with the real CLI, `gobtfgen archive add ARCHIVE
    --from <deb>` (so the key comes from the package, as a user's would), in a temporary
    directory renamed into place. Raises CorpusError when a package is missing or add fails."""
    stamp = _archive_stamp()
    if _archive_ready(stamp):
        return ARCHIVE
    debs = []
    for pkg in packages():
        path = _cached_deb(pkg)
        if path is None:
            raise CorpusError(f"{deb_path(pkg)} is absent; {_SETUP_HINT}")
        debs.append((pkg, path))
    if say:
        print(f"fetch-kernels: building {ARCHIVE} (gobtfgen archive add --from each package)",
              file=sys.stderr)
    started = time.monotonic()
    KERNELS.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".archive.", dir=KERNELS))
    try:
        # Two at a time: each is one core of xz compression for ~10 s.
        pending = list(debs)
        running: list[tuple[KernelPackage, subprocess.Popen[bytes]]] = []
        while pending or running:
            while pending and len(running) < 2:
                pkg, path = pending.pop(0)
                running.append((pkg, subprocess.Popen(
                    [sys.executable, "-m", "gobtfgen", "archive", "add", str(tmp), "--from",
                     str(path)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=REPO)))
            pkg, proc = running.pop(0)
            _, err = proc.communicate()
            if proc.returncode != 0:
                raise CorpusError(f"gobtfgen archive add --from {deb_path(pkg)} failed: "
                                  f"{err.decode().strip()}")
            if not (tmp / f"{pkg.key}.btf.tar.xz").is_file():
                raise CorpusError(f"gobtfgen archive add --from {deb_path(pkg)} did not write "
                                  f"{pkg.key}.btf.tar.xz")
        (tmp / ".stamp").write_text(stamp)
        old = KERNELS / f".archive.old.{os.getpid()}"
        if ARCHIVE.exists():
            os.rename(ARCHIVE, old)
        try:
            os.rename(tmp, ARCHIVE)
        except OSError:
            if not _archive_ready(stamp):  # else another run put the same archive in place
                raise
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if say:
        print(f"fetch-kernels: archive of {len(debs)} kernels in "
              f"{time.monotonic() - started:.0f} s", file=sys.stderr)
    return ARCHIVE


def archive() -> Path:
    """The btfhub-layout archive debian/12/<arch>/<release>.btf.tar.xz of every corpus kernel,
    made with `gobtfgen archive add --from <deb>` (by scripts/setup, else here, once)."""
    try:
        return build_archive()
    except CorpusError as e:
        if not all(deb_path(p).is_file() for p in packages()):
            pytest.skip(reason=str(e))
        pytest.fail(str(e))


def fetch(say: bool = True) -> None:
    """Download what is missing, verify everything, extract the kernel images, build the
    archive. Prints nothing when all is cached."""
    with _lock():
        missing = []
        for pkg in packages():
            if _cached_deb(pkg) is None:
                missing.append(pkg)
        if missing:
            _download(missing, say)
        for pkg in packages():
            dest = boot_image_path(pkg)
            if not dest.is_file():
                _extract_boot_image(pkg, deb_path(pkg), dest)
        _build_archive(say)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fetch-kernels", description=__doc__)
    parser.add_argument("--quiet", action="store_true", help="print only errors")
    args = parser.parse_args(argv)
    try:
        fetch(say=not args.quiet)
    except (CorpusError, subprocess.CalledProcessError) as e:
        print(f"fetch-kernels: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
