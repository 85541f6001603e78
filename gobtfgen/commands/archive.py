"""gobtfgen archive add: put a kernel's BTF into an archive directory under the right key, as
a `.btf.tar.xz` like btfhub's, so self-built kernels can be embedded too."""

from __future__ import annotations

import argparse
import io
import json
import lzma
import os
import tarfile
import tempfile
from pathlib import Path
from typing import Any

from gobtfgen import hostinfo, kernelimage, keys, modules
from gobtfgen.archive import MODULES_SUFFIX, SUFFIX, read_kernel_btf
from gobtfgen.btf import split
from gobtfgen.errors import InputError, UsageError
from gobtfgen.kernelimage import Source
from gobtfgen.options import add

# btfhub compresses with `tar cJf` (xz preset 6); preset 9 would need ~700 MB to compress.
_XZ_PRESET = 6


def register(sub: Any) -> None:
    p = sub.add_parser("archive", help="manage a btfhub-style archive directory",
                       description="Manage a btfhub-style archive directory.")
    archive_sub = p.add_subparsers(dest="archive_command", metavar="ACTION", required=True)
    a = archive_sub.add_parser(
        "add", help="add a kernel's BTF (this kernel's, or from a kernel image, a kernel .deb, a "
                    "vmlinux ELF or raw BTF)",
        description="Write a kernel's BTF into ARCHIVE/<id>/<version>/<arch>/<release>.btf.tar.xz "
                    "(one member <release>.btf, as btfhub does), so gobtfgen generate embeds it. "
                    "--from takes: raw BTF (/sys/kernel/btf/vmlinux, pahole -J output); a vmlinux "
                    "ELF with a .BTF section; an x86 bzImage / vmlinuz (payload gzip, xz, lzma, "
                    "bzip2, LZ4 or zstd); an arm64 Image (plain or gzip'd); any of these "
                    "gzip/xz/bzip2/zstd-compressed; a kernel .deb (its boot/vmlinuz-<release>). "
                    "The key defaults to this host's (os-release under --host-root, uname); an "
                    "ELF or kernel image gives its own arch and release (from its banner); a "
                    ".deb gives arch and release, and for a Debian kernel team package "
                    "(maintainer debian-kernel@lists.debian.org) id debian and the Debian "
                    "version: the package version's debNNuM or bpoNN, else the release's "
                    "+debNN, else the kernel series (6.1 -> 12, 5.10 -> 11, 4.19 -> 10, "
                    "4.9 -> 9, 3.16 -> 8). Flags override all of these.",
        epilog="Examples: gobtfgen archive add ARCHIVE --from "
               "linux-image-6.1.0-56-cloud-arm64_6.1.192-2_arm64.deb (key "
               "debian/12/arm64/6.1.0-56-cloud-arm64); gobtfgen archive add ARCHIVE --from "
               "/boot/vmlinuz-$(uname -r). For a self-built kernel: build it with "
               "CONFIG_DEBUG_INFO_BTF=y (or run pahole -J on its vmlinux), then: gobtfgen "
               "archive add ARCHIVE --from vmlinux --id ID --version VERSION.")
    a.add_argument("archive", type=Path, metavar="ARCHIVE", help="the archive directory")
    a.add_argument("--from", dest="source", type=Path, default=Path(hostinfo.NATIVE_BTF),
                   metavar="FILE",
                   help="raw BTF, a vmlinux ELF, a kernel image (bzImage, vmlinuz, arm64 Image, "
                        "compressed or not) or a kernel .deb (default: %(default)s, the running "
                        "kernel's)")
    a.add_argument("--id", help="os-release ID of the distro the kernel runs on "
                                "(default: a Debian .deb's debian, else this host's)")
    a.add_argument("--version", help="archive version folder (default: a Debian .deb's, else "
                                     "this host's VERSION_ID, cut to the major number where "
                                     "btfhub does: rhel 8.4 -> 8)")
    a.add_argument("--arch", help="x86_64 or arm64 (aarch64 accepted; default: the file's, "
                                  "else this machine's)")
    a.add_argument("--release", help="the kernel's `uname -r` (default: the file's, else "
                                     "this kernel's when adding /sys/kernel/btf/vmlinux)")
    add(a, "--host-root", env="HOST_ROOT", default="/", metavar="DIR",
        help="where this host's os-release is found (in a container: the host's /)")
    a.add_argument("--modules", nargs="?", const="", default=None, metavar="NAME,...",
                   help="merge kernel modules' BTF after vmlinux's (all modules, or the named "
                        "ones): the loaded modules' /sys/kernel/btf/<module> when adding this "
                        "kernel, a .deb's lib/modules when --from is one, else --modules-from's")
    a.add_argument("--modules-from", type=Path, metavar="PATH",
                   help="a kernel .deb or a directory of .ko files (.ko.xz, .ko.zst, .ko.gz "
                        "too) whose modules' .BTF to merge (implies --modules)")
    a.add_argument("--force", action="store_true",
                   help="replace an existing file that holds different BTF")
    a.set_defaults(func=run)


def read_source(path: Path) -> Source:
    try:
        data = path.read_bytes()
    except OSError as exc:
        hint = ("this kernel has no BTF of its own (no CONFIG_DEBUG_INFO_BTF); pass --from "
                "FILE" if str(path) == hostinfo.NATIVE_BTF else "check the path")
        raise InputError(f"{path}: cannot read ({exc.strerror}); {hint}") from None
    return kernelimage.read(data, path)


def tar_xz(release: str, btf: bytes, *, modules: bytes | None = None) -> bytes:
    """A btfhub-style .btf.tar.xz holding `<release>.btf` (and, for merged module BTF, which
    ids came from which module as `<release>.modules.json`); same input, same bytes."""
    buf = io.BytesIO()
    members = [(f"{release}.btf", btf)]
    if modules is not None:
        members.append((f"{release}{MODULES_SUFFIX}", modules))
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(data))
    return lzma.compress(buf.getvalue(), format=lzma.FORMAT_XZ, preset=_XZ_PRESET)


def write_atomic(dest: Path, data: bytes) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _key_part(flag: str, value: str) -> str:
    if not keys.valid_key_part(value):
        raise UsageError(f"{flag} {value!r} cannot be an archive folder or file name (empty, "
                         "leading dot, or a / in it); pass a plain name")
    return value


def run(args: argparse.Namespace) -> int:
    source = read_source(args.source)
    live = str(args.source) == hostinfo.NATIVE_BTF
    host = hostinfo.gather(root=args.host_root)

    release = args.release or source.release or (host.release if live else None)
    if not release:
        raise UsageError(f"--release is needed: {args.source} ({source.kind}) does not say which "
                         "kernel it belongs to; pass that kernel's `uname -r`")
    if args.arch:
        arch = keys.btfhub_arch(args.arch)
        if arch is None:
            raise UsageError(f"--arch {args.arch!r}: btfhub has x86_64 and arm64 only")
        if source.arch and source.arch != arch:
            raise UsageError(f"--arch {arch} but {args.source} is an {source.arch} "
                             f"{source.kind}; drop --arch or pass the right file")
    else:
        arch = source.arch or host.arch
        if arch is None:
            raise UsageError(f"this machine ({host.machine}) is not an arch btfhub has; pass "
                             "--arch x86_64 or --arch arm64")
    if source.package and not (args.id and args.version) and not source.os_id:
        # A package says which distro it is for; this host's key would file it wrongly.
        raise UsageError(f"--id and --version are needed: {args.source} ({source.package}) is "
                         "not a Debian kernel team package of a known series; pass the distro's "
                         "os-release ID and archive version")
    os_id = args.id or source.os_id or host.os.id
    version = (args.version or source.os_version
               or keys.archive_version(host.os.id, host.os.version_id))
    if not os_id or not version:
        where = host.os_release_path or f"no os-release under {host.root}"
        raise UsageError(f"--id and --version are needed: this host's os-release ({where}) "
                         "has no ID or VERSION_ID")
    key = keys.format_key(_key_part("--id", keys.ascii_lower(os_id)),
                          _key_part("--version", version), arch, _key_part("--release", release))

    btf, sidecar, what = source.btf, None, f"{source.kind} {args.source}"
    mods = _modules(args, source, live, release)
    if mods is not None:
        if not mods:
            raise InputError(f"{args.modules_from or args.source}: no module with BTF to merge; "
                             "drop --modules or name a place that has some")
        try:
            merged = split.merge(btf, [(m.where, m.btf) for m in mods])
        except split.SplitError as exc:
            raise InputError(str(exc)) from None
        # The merge names modules by file (for its errors); the record names them by module.
        merged.modules = {m.name: merged.modules[m.where] for m in mods}
        btf = merged.btf
        sidecar = json.dumps(merged.sidecar(), sort_keys=True).encode()
        shown = ", ".join(m.name for m in mods[:4]) + (", ..." if len(mods) > 4 else "")
        what += f" + {len(mods)} module{'s' if len(mods) != 1 else ''} ({shown})"
    dest = args.archive / keys.parse_key(key)[0] / version / arch / f"{release}{SUFFIX}"
    if dest.exists():
        try:
            same = read_kernel_btf(dest) == btf
        except InputError:
            same = False
        if same:
            print(f"{key}: already in {dest} with the same BTF; nothing to do")
            return 0
        if not args.force:
            raise InputError(f"{dest} exists and holds different BTF; pass --force to replace "
                             "it, or another --id/--version/--release")
    write_atomic(dest, tar_xz(release, btf, modules=sidecar))
    read_kernel_btf(dest)  # what generate will read must read back
    print(f"{key}: added {len(btf)} bytes of BTF ({what}) as {dest}")
    print("run gobtfgen generate to embed it")
    return 0


def _modules(args: argparse.Namespace, source: Source, live: bool,
             release: str) -> list[modules.ModuleBTF] | None:
    """The modules --modules / --modules-from ask for, or None when neither is given."""
    if args.modules is None and args.modules_from is None:
        return None
    wanted = modules.parse_names(args.modules or None)
    where: Path | None = args.modules_from
    if where is None:
        if live:
            return modules.from_sysfs(Path(hostinfo.NATIVE_BTF).parent, wanted)
        if source.package:
            where = args.source
        else:
            raise UsageError(f"--modules: {args.source} ({source.kind}) holds no modules; pass "
                             "--modules-from with the kernel's .deb or a directory of its .ko "
                             "files")
    if where.is_dir():
        return modules.from_dir(where, wanted, release)
    if where.is_file() and _starts_with(where, b"!<arch>\n"):
        return modules.from_deb(where, wanted, release)
    if not where.exists():
        raise InputError(f"{where}: no such file or directory; pass a kernel .deb or a "
                         "directory of .ko files")
    raise InputError(f"{where}: not a .deb or a directory; pass a kernel .deb or a directory "
                     "of .ko files")


def _starts_with(path: Path, magic: bytes) -> bool:
    try:
        with path.open("rb") as f:
            return f.read(len(magic)) == magic
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror}); check the path") from None
