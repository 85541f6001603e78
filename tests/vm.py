"""Boots a kernel in qemu (x86_64 or arm64 guest, on any host) with a small initramfs, runs shell
checks in it and returns what each printed: the harness of the kernel matrix
(tests/test_vm_matrix.py) and of `scripts/demo`.

Why a hand-made initramfs rather than virtme-ng: virtme-ng boots the guest on the host's own root
file system over 9p/virtiofs, which needs host binaries of the guest's arch (an arm64 guest on an
x86_64 host has none), a kernel with those file systems built in, and root-owned mounts on the
host. A cpio archive written here holds only what a check needs (a static busybox of the guest's
arch, the binaries under test, their files), needs no root, and boots the same way under TCG for
both arches; the whole harness is this file.

The guest's /init mounts proc, sys, devtmpfs and tracefs, writes /etc/os-release (Debian 12 by
default, so the binaries look up the key debian/12/<arch>/<release>), copies the kernel's own BTF
to /tmp/kernel.btf when it has one (for checks that compare against it), optionally hides
/sys/kernel/btf under an empty tmpfs (what a kernel without BTF looks like to userspace), runs each
check between markers, and powers off. Everything the console printed is kept in a log file whose
path and tail every failure message carries.

Under TCG a Debian cloud kernel boots to /init in 5-10 s. KVM is used only where a 5 s probe boot
really finishes (on these machines /dev/kvm exists but a KVM guest hangs). GOBTFGEN_VM_ACCEL=tcg
or kvm skips the probe.

`python -m tests.vm setup` (run by scripts/setup) downloads the arm64 and x86_64 busybox-static
packages into the test cache; tests skip, naming scripts/setup, when they are absent."""

from __future__ import annotations

import hashlib
import os
import platform
import re
import shlex
import shutil
import stat
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests import corpus

CACHE = corpus.CACHE
VM_CACHE = CACHE / "vm"

# btfhub arch -> Debian arch, qemu binary and the apt package that has it.
DEBIAN_ARCH = {"x86_64": "amd64", "arm64": "arm64"}
QEMU = {"x86_64": ("qemu-system-x86_64", "qemu-system-x86"),
        "arm64": ("qemu-system-aarch64", "qemu-system-arm")}
ELF_MACHINE = {"x86_64": 62, "arm64": 183}  # e_machine of the guest's binaries
CONSOLE = {"x86_64": "ttyS0", "arm64": "ttyAMA0"}

DEBIAN_12 = 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nNAME="Debian GNU/Linux"\n' \
            'VERSION_ID="12"\nVERSION="12 (bookworm)"\nVERSION_CODENAME=bookworm\nID=debian\n'

MARK = "@@vm"  # marker lines: "@@vm begin <name>", "@@vm end <name> <status>", "@@vm done"


class VMError(AssertionError):
    """The guest did not run to its end marker: the message carries the console's tail."""


@dataclass(frozen=True, kw_only=True)
class Check:
    """A shell script run in the guest by busybox sh, stdout and stderr to the console."""
    name: str
    script: str


@dataclass(frozen=True, kw_only=True)
class CheckResult:
    name: str
    status: int  # the script's exit status
    output: str  # what it printed, console line endings normalized

    @property
    def lines(self) -> list[str]:
        return self.output.splitlines()


@dataclass(frozen=True, kw_only=True)
class Guest:
    """What to boot and what to run there."""
    arch: str  # btfhub arch of the kernel: x86_64 or arm64
    kernel: Path  # bzImage (x86_64) or Image (arm64)
    checks: Sequence[Check]
    files: Mapping[str, Path | bytes] = field(default_factory=dict)  # guest path -> content
    hide_btf: bool = True  # an empty tmpfs over /sys/kernel/btf
    os_release: str = DEBIAN_12
    memory: str = "1G"
    timeout: float = 600  # seconds for the whole boot


@dataclass(frozen=True, kw_only=True)
class Boot:
    guest: Guest
    console: str  # everything the guest printed
    log: Path  # the same, on disk
    seconds: float
    accel: str
    results: Mapping[str, CheckResult]

    def __getitem__(self, name: str) -> CheckResult:
        if name not in self.results:
            raise VMError(f"check {name!r} did not run in the guest; console ({self.log}):\n"
                          f"{tail(self.console)}")
        return self.results[name]

    def describe(self, name: str) -> str:
        """For assertion messages: the check's output and where the whole console is."""
        result = self.results.get(name)
        shown = result.output if result else tail(self.console)
        return f"guest check {name!r} ({self.guest.kernel.name}, console log {self.log}):\n{shown}"


def tail(text: str, lines: int = 60) -> str:
    return "\n".join(text.splitlines()[-lines:])


# ---------------------------------------------------------------------------------------------
# busybox-static of the guest's arch, from Debian's package (checked, cached)


@dataclass(frozen=True, kw_only=True)
class AptPackage:
    name: str  # with :arch
    version: str
    filename: str  # pool path; its basename is what apt-get download writes
    size: int
    sha256: str


def apt_candidate(name: str) -> AptPackage:
    """The candidate version's record in apt's (signed) index."""
    proc = subprocess.run(["apt-cache", "show", "--no-all-versions", name], capture_output=True,
                          text=True)
    if proc.returncode != 0 or not proc.stdout.strip():
        raise RuntimeError(f"apt knows no {name} ({proc.stderr.strip()}); for arm64 run "
                           "dpkg --add-architecture arm64 && apt-get update (scripts/setup does)")
    fields: dict[str, str] = {}
    for line in proc.stdout.splitlines():
        key, sep, value = line.partition(": ")
        if sep and not line.startswith(" "):
            fields.setdefault(key, value.strip())
    return AptPackage(name=name, version=fields["Version"], filename=fields["Filename"],
                      size=int(fields["Size"]), sha256=fields["SHA256"])


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fetch_busybox(arch: str) -> Path:
    """Download (apt-get download) and unpack busybox-static for arch into VM_CACHE; the .deb is
    checked against the size and sha256 of apt's index before it is unpacked."""
    pkg = apt_candidate(f"busybox-static:{DEBIAN_ARCH[arch]}")
    dest = VM_CACHE / f"busybox-{arch}"
    VM_CACHE.mkdir(parents=True, exist_ok=True)
    # apt-get download names the file after the pool's (an epoch's ':' becomes %3a): download
    # into an empty directory and take what it wrote.
    download = VM_CACHE / f".download-{arch}"
    shutil.rmtree(download, ignore_errors=True)
    download.mkdir()
    subprocess.run(["apt-get", "download", "-q", pkg.name], cwd=download, check=True,
                   capture_output=True)
    (deb,) = download.glob("*.deb")
    got = sha256_of(deb)
    if deb.stat().st_size != pkg.size or got != pkg.sha256:
        raise RuntimeError(f"{deb.name}: sha256 {got}, apt's index says {pkg.sha256}")
    unpack = VM_CACHE / f".unpack-{arch}"
    shutil.rmtree(unpack, ignore_errors=True)
    subprocess.run(["dpkg-deb", "-x", str(deb), str(unpack)], check=True)
    dest.mkdir(exist_ok=True)
    os.replace(unpack / "bin" / "busybox", dest / "busybox")
    # The hash the binary was unpacked with: busybox() checks it before every use.
    (dest / "busybox.sha256").write_text(f"{sha256_of(dest / 'busybox')} {pkg.version}\n")
    shutil.rmtree(unpack)
    shutil.rmtree(download)
    return dest / "busybox"


def busybox(arch: str) -> Path:
    """The cached static busybox for the guest's arch, checked; skips when setup has not run."""
    path = VM_CACHE / f"busybox-{arch}" / "busybox"
    record = path.with_name("busybox.sha256")
    if not path.is_file() or not record.is_file():
        pytest.skip(reason=f"busybox-static for {arch} is not in {VM_CACHE}; scripts/setup "
                           "downloads it (python -m tests.vm setup)")
    if sha256_of(path) != record.read_text().split()[0]:
        pytest.fail(f"{path} does not match its recorded sha256; remove {path.parent} and run "
                    "scripts/setup again")
    if elf_machine(path.read_bytes()[:64]) != ELF_MACHINE[arch]:
        pytest.fail(f"{path} is not an {arch} binary; remove {path.parent} and run scripts/setup")
    return path


def elf_machine(head: bytes) -> int | None:
    if head[:4] != b"\x7fELF" or len(head) < 20:
        return None
    return int.from_bytes(head[18:20], "little" if head[5] == 1 else "big")


# ---------------------------------------------------------------------------------------------
# the initramfs: cpio "newc", written here (no root, no cpio tool)


def _cpio_entry(out: bytearray, name: str, mode: int, data: bytes, ino: int) -> None:
    header = "070701" + "".join(f"{v:08x}" for v in (
        ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(name) + 1, 0))
    out += header.encode() + name.encode() + b"\0"
    out += b"\0" * (-len(out) % 4)
    out += data
    out += b"\0" * (-len(out) % 4)


def write_cpio(path: Path, files: Mapping[str, bytes], *, executables: Iterable[str] = (),
               symlinks: Mapping[str, str] | None = None) -> None:
    """A newc archive: every parent directory, files (mode 0755 for executables, else 0644),
    symlinks; the kernel unpacks it as the root file system."""
    execs = set(executables)
    links = dict(symlinks or {})
    dirs = {"dev", "proc", "sys", "tmp", "etc", "bin", "sbin", "usr", "usr/bin", "usr/sbin", "root"}
    for name in [*files, *links]:
        parent = Path(name).parent
        while str(parent) not in (".", "/"):
            dirs.add(str(parent))
            parent = parent.parent
    out = bytearray()
    ino = 1
    for d in sorted(dirs):
        _cpio_entry(out, d, stat.S_IFDIR | 0o755, b"", ino)
        ino += 1
    for name, data in sorted(files.items()):
        _cpio_entry(out, name, stat.S_IFREG | (0o755 if name in execs else 0o644), data, ino)
        ino += 1
    for name, target in sorted(links.items()):
        _cpio_entry(out, name, stat.S_IFLNK | 0o777, target.encode(), ino)
        ino += 1
    _cpio_entry(out, "TRAILER!!!", 0, b"", 0)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(bytes(out))
    os.replace(tmp, path)


def init_script(guest: Guest) -> str:
    """The guest's /init (busybox sh)."""
    lines = [
        "#!/bin/sh",
        "/bin/busybox --install -s /bin",
        "export PATH=/bin:/sbin:/usr/bin:/usr/sbin HOME=/root",
        "mount -t proc proc /proc",
        "mount -t sysfs sysfs /sys",
        "mount -t devtmpfs devtmpfs /dev",
        # Tracepoints attach through tracefs; older kernels have it only under debugfs.
        "mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null || "
        "{ mount -t debugfs debugfs /sys/kernel/debug && "
        "mount -t tracefs tracefs /sys/kernel/debug/tracing 2>/dev/null; }",
        "cat > /etc/os-release <<'EOF'",
        guest.os_release.rstrip("\n"),
        "EOF",
        # The kernel's own BTF, read before it is hidden: the reference the checks compare with.
        "[ -f /sys/kernel/btf/vmlinux ] && cat /sys/kernel/btf/vmlinux > /tmp/kernel.btf",
    ]
    if guest.hide_btf:
        lines.append("mount -t tmpfs -o size=4k,mode=0555 nobtf /sys/kernel/btf")
    lines.append(f'echo "{MARK} ready $(uname -r) btf=$(ls /sys/kernel/btf 2>/dev/null | wc -l)"')
    for check in guest.checks:
        lines += [
            f'echo "{MARK} begin {check.name}"',
            "(",
            check.script.rstrip("\n"),
            ") </dev/null 2>&1",
            f'echo "{MARK} end {check.name} $?"',
        ]
    lines += [f'echo "{MARK} done"', "sync", "poweroff -f"]
    return "\n".join(lines) + "\n"


def make_initramfs(guest: Guest, path: Path) -> Path:
    files: dict[str, bytes] = {"init": init_script(guest).encode(),
                               "bin/busybox": busybox(guest.arch).read_bytes()}
    execs = {"init", "bin/busybox"}
    for name, content in guest.files.items():
        name = name.lstrip("/")
        data = content.read_bytes() if isinstance(content, Path) else content
        files[name] = data
        if (isinstance(content, Path) and os.access(content, os.X_OK)) \
                or data[:4] == b"\x7fELF" or data[:2] == b"#!":
            execs.add(name)
    write_cpio(path, files, executables=execs, symlinks={"bin/sh": "busybox"})
    return path


# ---------------------------------------------------------------------------------------------
# qemu


def qemu(arch: str) -> str:
    binary, package = QEMU[arch]
    path = shutil.which(binary)
    if not path:
        pytest.skip(reason=f"{binary} is not installed: scripts/setup installs {package} "
                           "(apt-get install qemu-system-x86 qemu-system-arm)")
    return path


def qemu_command(arch: str, kernel: Path, initrd: Path, accel: str, memory: str) -> list[str]:
    machine = ["-M", "pc", "-cpu", "max"] if arch == "x86_64" else \
              ["-M", "virt", "-cpu", "cortex-a72" if accel == "tcg" else "host"]
    return [qemu(arch), "-accel", accel, *machine, "-m", memory, "-smp", "1",
            "-nodefaults", "-no-user-config", "-display", "none", "-serial", "stdio",
            "-no-reboot", "-kernel", str(kernel), "-initrd", str(initrd),
            "-append", f"console={CONSOLE[arch]} panic=-1 quiet"]


_accel: dict[str, str] = {}


def host_arch() -> str:
    return {"aarch64": "arm64", "arm64": "arm64"}.get(platform.machine(), platform.machine())


def accel_for(arch: str, kernel: Path, workdir: Path) -> str:
    """kvm when it runs a guest to its end within 5 s here, else tcg (probed once per arch)."""
    forced = os.environ.get("GOBTFGEN_VM_ACCEL")
    if forced:
        return forced
    if arch in _accel:
        return _accel[arch]
    _accel[arch] = "tcg"
    if arch == host_arch() and os.access("/dev/kvm", os.R_OK | os.W_OK):
        workdir.mkdir(parents=True, exist_ok=True)
        probe = Guest(arch=arch, kernel=kernel, checks=[], hide_btf=False)
        initrd = make_initramfs(probe, workdir / "kvm-probe.cpio")
        try:
            proc = subprocess.run(qemu_command(arch, kernel, initrd, "kvm", "256M"),
                                  stdin=subprocess.DEVNULL, capture_output=True, timeout=5)
            if f"{MARK} done".encode() in proc.stdout:
                _accel[arch] = "kvm"
        except subprocess.TimeoutExpired:
            pass  # the hang these machines show: TCG it is
    return _accel[arch]


_BEGIN = re.compile(rf"^{MARK} begin (\S+)$")
_END = re.compile(rf"^{MARK} end (\S+) (\d+)$")


def parse_console(console: str) -> dict[str, CheckResult]:
    results: dict[str, CheckResult] = {}
    current: str | None = None
    body: list[str] = []
    for line in console.splitlines():
        line = line.rstrip("\r")
        begin, end = _BEGIN.match(line), _END.match(line)
        if begin:
            current, body = begin.group(1), []
        elif end and end.group(1) == current:
            results[current] = CheckResult(name=current, status=int(end.group(2)),
                                           output="\n".join(body))
            current = None
        elif current is not None:
            body.append(line)
    return results


def boot(guest: Guest, workdir: Path, name: str = "guest") -> Boot:
    """Boot guest; returns each check's output. Raises VMError (with the console's tail and the
    log's path) when the guest does not reach its end marker in time."""
    workdir.mkdir(parents=True, exist_ok=True)
    if not guest.kernel.is_file():
        raise VMError(f"kernel image {guest.kernel} does not exist")
    initrd = make_initramfs(guest, workdir / f"{name}.cpio")
    accel = accel_for(guest.arch, guest.kernel, workdir)
    log = workdir / f"{name}.console.log"
    cmd = qemu_command(guest.arch, guest.kernel, initrd, accel, guest.memory)
    start = time.monotonic()
    timed_out = False
    with log.open("wb") as out:
        out.write(f"# {shlex.join(cmd)}\n".encode())
        out.flush()
        try:
            proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=out,
                                  stderr=subprocess.STDOUT, timeout=guest.timeout)
            status = proc.returncode
        except subprocess.TimeoutExpired:
            timed_out, status = True, -1
    seconds = time.monotonic() - start
    console = log.read_bytes().decode(errors="replace").replace("\r\n", "\n")
    if timed_out or f"{MARK} done" not in console:
        why = f"timed out after {guest.timeout:.0f} s" if timed_out else f"qemu exited {status}"
        raise VMError(f"guest {name} ({guest.kernel}) {why} before its end marker; console "
                      f"log {log}:\n{tail(console)}")
    return Boot(guest=guest, console=console, log=log, seconds=seconds, accel=accel,
                results=parse_console(console))


# ---------------------------------------------------------------------------------------------
# scripts/demo's guest


def demo_package() -> corpus.KernelPackage:
    """The corpus kernel scripts/demo boots: the newest 6.1 Debian cloud kernel of this host's
    arch (the binary make built runs on this arch only)."""
    cloud = [p for p in corpus.packages() if p.arch == host_arch()
             and "-cloud-" in p.release and p.release.startswith("6.1.")]
    if not cloud:
        raise RuntimeError(f"tests/kernels.tsv has no Debian 6.1 cloud kernel for {host_arch()}")
    return cloud[-1]


def demo_archive(dest: Path) -> str:
    """Copy the demo kernel's BTF from the corpus archive into the archive at dest; returns
    its key."""
    pkg = demo_package()
    key = f"debian/12/{host_arch()}/{pkg.release}"
    source = corpus.archive() / f"{key}.btf.tar.xz"
    target = dest / f"{key}.btf.tar.xz"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(source, target)
    return key


def demo(binary: Path, workdir: Path) -> int:
    """Boot the demo kernel with its BTF hidden and trace one exec with binary (lab3), printing
    the guest's lines."""
    pkg = demo_package()
    script = f"""
{shlex.quote("/bin/" + binary.name)} -json -timeout 60s >/tmp/out 2>/tmp/err &
t=$!
i=0
while ! grep -q "tracing execve" /tmp/err; do
  kill -0 $t 2>/dev/null || break; i=$((i+1)); [ $i -gt 600 ] && break; sleep 0.1
done
/bin/hello-from-the-guest
sleep 1
kill -INT $t 2>/dev/null
wait $t
rc=$?
cat /tmp/err /tmp/out
exit $rc
"""
    guest = Guest(arch=host_arch(), kernel=corpus.boot_image(pkg),
                  checks=[Check(name="demo", script=script)],
                  files={f"bin/{binary.name}": binary,
                         "bin/hello-from-the-guest": b"#!/bin/sh\nexit 0\n"})
    print(f"demo: booting Debian 12's {pkg.release} in qemu ({host_arch()}, "
          "its BTF hidden under an empty tmpfs) to run the same binary there", file=sys.stderr)
    booted = boot(guest, workdir, "demo")
    result = booted["demo"]
    for line in result.lines:
        print(f"  guest| {line}")
    print(f"demo: guest booted and traced in {booted.seconds:.0f} s ({booted.accel}); console "
          f"log {booted.log}", file=sys.stderr)
    return 0 if result.status == 0 and "hello-from-the-guest" in result.output else 1


def main(argv: list[str]) -> int:
    usage = ("usage: python -m tests.vm setup               download busybox-static for the "
             "guests\n"
             "       python -m tests.vm demo-archive DIR    add the demo kernel's BTF to DIR\n"
             "       python -m tests.vm demo BINARY WORKDIR boot the demo kernel, run BINARY")
    try:
        if argv[:1] == ["demo-archive"] and len(argv) == 2:
            print(demo_archive(Path(argv[1])))
            return 0
        if argv[:1] == ["demo"] and len(argv) == 3:
            return demo(Path(argv[1]).resolve(), Path(argv[2]))
    except (pytest.skip.Exception, pytest.fail.Exception, RuntimeError, VMError) as err:
        print(f"tests.vm: {getattr(err, 'msg', None) or err}", file=sys.stderr)
        return 1
    if argv != ["setup"]:
        print(usage, file=sys.stderr)
        return 2
    for arch in DEBIAN_ARCH:
        record = VM_CACHE / f"busybox-{arch}" / "busybox.sha256"
        if not record.is_file():
            try:
                fetch_busybox(arch)
            except (RuntimeError, subprocess.CalledProcessError) as err:
                print(f"tests.vm: busybox-static for {arch}: {err}", file=sys.stderr)
                return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
