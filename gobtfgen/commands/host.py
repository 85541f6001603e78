"""gobtfgen host: this machine's lookup key, whether it has native BTF, and what the
generated runtime would do on it (optionally against a real payload or archive)."""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

from gobtfgen import hostinfo, keys, pack
from gobtfgen.errors import InputError
from gobtfgen.options import add
from gobtfgen.targets import go


def register(sub: Any) -> None:
    p = sub.add_parser(
        "host", help="print this machine's lookup key and what the generated code would do here",
        description="Print the key <id>/<version>/<arch>/<release> the generated runtime looks "
                    "up on this machine (from os-release under the host root and uname), "
                    "whether the kernel has its own BTF, and which BTF the runtime would use. "
                    "With --payload or --archive, run the whole lookup against those kernels "
                    "and exit 1 when it would find none.")
    add(p, "--host-root", env="HOST_ROOT", default="/", metavar="DIR",
        help="where the host's files are (in a container: the host's / mounted)")
    add(p, "--env-prefix", env="GOBTFGEN_ENV_PREFIX", default="BTFGEN", metavar="PREFIX",
        help="the --env-prefix the code was generated with (PREFIX_BTF_FILE overrides the BTF)")
    p.add_argument("--machine", metavar="NAME",
                   help="pretend `uname -m` is NAME (x86_64, aarch64); default: this machine")
    p.add_argument("--release", metavar="RELEASE",
                   help="pretend `uname -r` is RELEASE; default: this kernel")
    p.add_argument("--ignore-native", action="store_true",
                   help="as BTFOptions{IgnoreNative: true}: skip the native BTF check")
    p.add_argument("--native-btf", default=hostinfo.NATIVE_BTF, metavar="PATH",
                   help="the file whose existence means native BTF (default: %(default)s)")
    p.add_argument("--payload", action="append", default=[], type=Path, metavar="FILE",
                   help="a generated btfgen_<arch>.payload to look the kernel up in "
                        "(repeatable; the one of this machine's arch is used)")
    p.add_argument("--archive", type=Path, metavar="DIR",
                   help="a btfhub-archive directory to look the kernel up in")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def _payload_entries(paths: list[Path], arch: str | None) -> tuple[str, dict[str, int]] | None:
    """(arch, {key: blob number}) of the payload for arch; entries with identical BTF share a
    blob number, as they share a blob in the payload."""
    for path in paths:
        try:
            payload_arch, entries = pack.unpack(path.read_bytes())
        except OSError as exc:
            raise InputError(f"{path}: cannot read ({exc.strerror}); pass a generated "
                             "btfgen_<arch>.payload") from None
        except (pack.PayloadError, UnicodeDecodeError) as exc:
            raise InputError(f"{path}: not a valid payload ({exc}); regenerate it with "
                             "gobtfgen generate") from None
        if payload_arch == arch:
            blob_ids: dict[bytes, int] = {}
            return payload_arch, {k: blob_ids.setdefault(v, len(blob_ids))
                                  for k, v in entries.items()}
    return None


def _archive_entries(root: Path, arch: str | None, release: str) -> dict[str, int]:
    """{key: blob number} of an archive. Kernels of this release that hold identical BTF
    (Ubuntu files one HWE kernel under two versions) share a number, as their minimized BTF
    would share a blob in the payload; only those few files are read."""
    from gobtfgen.archive import read_kernel_btf, scan_archive  # only needed with --archive

    kernels, _problems = scan_archive(root, [arch] if arch else [])
    entries: dict[str, int] = {}
    by_content: dict[bytes, int] = {}
    for n, kernel in enumerate(kernels):
        entries[kernel.key] = n
        if kernel.release == release:
            try:
                digest = hashlib.sha256(read_kernel_btf(kernel.path)).digest()
            except InputError:
                continue  # generate would skip this file too; it stays its own blob
            entries[kernel.key] = by_content.setdefault(digest, n)
    return entries


def run(args: argparse.Namespace) -> int:
    info = hostinfo.gather(root=args.host_root, machine=args.machine, release=args.release,
                           native_path=args.native_btf, env_prefix=args.env_prefix)
    result: dict[str, Any] = {
        "host_root": info.root,
        "os_release": info.os_release_path,
        "distro": info.distro_name,
        "id": info.os.id, "version_id": info.os.version_id, "id_like": list(info.os.id_like),
        "machine": info.machine, "arch": info.arch, "goarch": info.goarch,
        "release": info.release,
        "key": info.candidates[0] if info.candidates else None,
        "candidates": info.candidates,
        "native_btf": info.native_btf,
        "override_env": info.override_env, "override_file": info.override_file or None,
    }
    entries: dict[str, int] | None = None
    payload_arch = info.arch or ""
    if args.payload:
        found = _payload_entries(args.payload, info.arch)
        if found is not None:
            payload_arch, entries = found
        elif info.arch is None:
            payload_arch, entries = "", {}  # as a build for a GOARCH without payload
        else:
            names = ", ".join(str(p) for p in args.payload)
            raise InputError(f"none of the --payload files holds {info.arch} kernels ({names}); "
                             f"pass {go.payload_file(info.arch)}")
    elif args.archive:
        entries = _archive_entries(args.archive, info.arch, info.release)

    status = 0
    if info.override_file:
        result["runtime"] = f"override {info.override_file}"
    elif info.native_btf and not args.ignore_native:
        result["runtime"] = "kernel"
    elif entries is None:
        result["runtime"] = "embedded (pass --payload or --archive to run the lookup)"
    else:
        try:
            hit = keys.lookup(entries, arch=payload_arch if args.payload else info.arch or "",
                              os_release=info.os_release_text, machine=info.machine,
                              release=info.release, override_env=info.override_env)
            result.update(runtime=f"embedded {hit.key}", found=hit.key, via=hit.via)
        except keys.LookupFailure as exc:
            result.update(runtime="error", error=str(exc), error_kind=exc.kind)
            status = 1

    if args.json:
        json.dump(result, sys.stdout, indent=1)
        print()
        return status
    _print_human(info, result, args.ignore_native)
    return status


def _print_human(info: hostinfo.HostInfo, r: dict[str, Any], ignore_native: bool) -> None:
    os_line = f"{r['os_release']}" if r["os_release"] else (
        f"none (no {hostinfo.OS_RELEASE_FILES[0]} or {hostinfo.OS_RELEASE_FILES[1]} under "
        f"{info.root})")
    if r["distro"]:
        os_line += f" ({r['distro']})"
    arch = (f"{r['arch']} (GOARCH {r['goarch']})" if r["arch"]
            else "none: gobtfgen embeds BTF for x86_64 and aarch64 only")
    lines = [
        f"os-release:  {os_line}",
        f"distro:      ID={r['id'] or '(none)'} VERSION_ID={r['version_id'] or '(none)'}"
        + (f" ID_LIKE={' '.join(r['id_like'])}" if r["id_like"] else ""),
        f"kernel:      {r['release']} on {r['machine']}, btfhub arch {arch}",
        f"key:         {r['key'] or '(none: the runtime searches by kernel release only)'}",
    ]
    if len(r["candidates"]) > 1:
        lines.append(f"             then {', '.join(r['candidates'][1:])}")
    native = "yes" if r["native_btf"] else "no"
    lines.append(f"native BTF:  {native} ({info.native_path})"
                 + (", ignored" if ignore_native and r["native_btf"] else ""))
    lines.append(f"override:    {info.override_env}="
                 + (r["override_file"] or "(unset)"))
    runtime = r["runtime"]
    if runtime == "kernel":
        runtime = ("the kernel's own BTF (GetBTFSpec returns nil; cilium/ebpf loads "
                   f"{info.native_path})")
    elif runtime == "error":
        runtime = f"error: {r['error']}"
    lines.append(f"runtime:     {runtime}")
    if r.get("via"):
        how = "os-release" if r["via"] == "distro" else "kernel release"
        lines.append(f"             found by {how}")
    print("\n".join(lines))
