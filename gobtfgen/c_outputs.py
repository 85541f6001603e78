"""Outputs for C programs on libbpf: the C runtime (`--lang c`), and the archives bcc's
libbpf-tools and eunomia's bpf-compatible load (`--format tar.gz`, `--format ld`).

`--lang c` writes btfgen.c and btfgen.h (ensure_core_btf() and clean_core_btf(), the lookup
rules of the Go runtime) and one btfgen_payload_<arch>.h per btfhub arch holding that arch's
payload (docs/payload-format.md) as a C string, so no `ld -r -b binary` step is needed.

`--format tar.gz` writes min_core_btfs.tar.gz with `./<id>/<version>/<arch>/<release>.btf`
members: the exact paths bcc's and bpf-compatible's loaders build, so they work unchanged.
`--format ld` adds min_core_btfs_tar.o, made by `ld -r -b binary`, whose
`_binary_min_core_btfs_tar_gz_start`/`_end` symbols are the ones bcc's btf_helpers.c declares.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from gobtfgen import render, tools
from gobtfgen.errors import Level, Problem

LANGS = ("go", "c")
FORMATS = ("source", "tar.gz", "ld")
C_FILE = "btfgen.c"
H_FILE = "btfgen.h"
TARGZ_FILE = "min_core_btfs.tar.gz"
LD_FILE = "min_core_btfs_tar.o"
# ustar keeps 100 bytes of name in the field bcc's loader compares; longer names would go to
# the prefix field, which those loaders never read.
_USTAR_NAME = 100

# btfhub arch -> (the compiler's macro for it, `uname -m` of its machines).
_C_ARCH = {"x86_64": ("__x86_64__", "x86_64"), "arm64": ("__aarch64__", "aarch64")}


@dataclass(frozen=True, kw_only=True)
class CArch:
    arch: str  # btfhub arch
    cc_macro: str  # defined by gcc and clang when compiling for it
    machine: str  # `uname -m` of the kernels a build for it runs on
    payload_header: str  # btfgen_payload_<arch>.h


@dataclass(frozen=True, kw_only=True)
class CContext:
    generated_mark: str
    header: str
    guard: str
    override_env: str
    arches: tuple[CArch, ...]


def payload_header(arch: str) -> str:
    return f"btfgen_payload_{arch}.h"


def c_context(*, env_prefix: str) -> CContext:
    render.validate_env_prefix(env_prefix)
    return CContext(
        generated_mark=render.GENERATED_MARK, header=H_FILE, guard="BTFGEN_H",
        override_env=f"{env_prefix}_BTF_FILE",
        arches=tuple(CArch(arch=a, cc_macro=_C_ARCH[a][0], machine=_C_ARCH[a][1],
                           payload_header=payload_header(a)) for a in render.ARCHES))


# Every byte as itself when that is safe in a C string, else a three-digit octal escape (three
# digits always end the escape, so a digit after one stays a digit). '?' is escaped against
# trigraphs (-std=c11 enables them), and '"' and '\' for obvious reasons.
_ESCAPES = [chr(b) if 0x20 <= b < 0x7F and chr(b) not in '"\\?' else f"\\{b:03o}"
            for b in range(256)]
_LINE_BYTES = 32


def payload_c(arch: str, payload: bytes, *, kernels: int, blobs: int) -> str:
    """btfgen_payload_<arch>.h: the payload as a string literal (compilers read a long string
    far faster than an initializer of millions of integers)."""
    esc = _ESCAPES
    lines = ["\t\"" + "".join(esc[b] for b in payload[i:i + _LINE_BYTES]) + "\""
             for i in range(0, len(payload), _LINE_BYTES)] or ['\t""']
    return (f"/* {render.GENERATED_MARK} */\n\n"
            f"/* The {arch} kernels of btfgen.c: {kernels} kernels, {blobs} unique minimized "
            "BTFs,\n * in gobtfgen's payload format (docs/payload-format.md). */\n"
            f"#define BTFGEN_PAYLOAD_ARCH \"{arch}\"\n"
            f"#define BTFGEN_PAYLOAD_LEN {len(payload)}u\n\n"
            "#if defined(__GNUC__)\n#pragma GCC diagnostic push\n"
            "/* -pedantic: C only promises 4095-byte strings; gcc and clang take any length. */\n"
            "#pragma GCC diagnostic ignored \"-Woverlength-strings\"\n#endif\n"
            "/* One byte more than the payload: the string's terminating NUL. */\n"
            "static const unsigned char btfgen_payload[BTFGEN_PAYLOAD_LEN + 1] =\n"
            + "\n".join(lines) + ";\n"
            "#if defined(__GNUC__)\n#pragma GCC diagnostic pop\n#endif\n")


def render_c_files(*, env_prefix: str, payloads: Mapping[str, bytes],
                   counts: Mapping[str, tuple[int, int]]) -> dict[str, str]:
    """btfgen.c, btfgen.h and a payload header per arch; counts: arch -> (kernels, blobs)."""
    ctx = c_context(env_prefix=env_prefix)
    files = {C_FILE: render.render("btfgen.c.j2", ctx=ctx),
             H_FILE: render.render("btfgen.h.j2", ctx=ctx)}
    for a in ctx.arches:
        kernels, blobs = counts.get(a.arch, (0, 0))
        files[a.payload_header] = payload_c(a.arch, payloads[a.arch], kernels=kernels,
                                            blobs=blobs)
    return files


def targz(entries: Mapping[str, bytes]) -> tuple[bytes, list[Problem]]:
    """min_core_btfs.tar.gz of {key: minimized BTF}: `./<key>.btf` members, sorted, with no
    time, owner or host in them (same input, same bytes)."""
    import tarfile  # here: `generate` without --format tar.gz never pays for it

    problems: list[Problem] = []
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for key in sorted(entries, key=lambda k: k.encode()):
            name = f"./{key}.btf"
            if len(name.encode()) > _USTAR_NAME:
                problems.append(Problem(
                    level=Level.WARNING, subject=key,
                    message=f"tar member name is {len(name.encode())} bytes: bcc's and "
                            f"bpf-compatible's loaders only read {_USTAR_NAME}, left out of "
                            f"{TARGZ_FILE}"))
                continue
            info = tarfile.TarInfo(name)
            info.size = len(entries[key])
            info.mode = 0o644
            info.mtime = 0
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(entries[key]))
    return gzip_with_mark(raw.getvalue()), problems


def gzip_with_mark(data: bytes) -> bytes:
    """gzip (RFC 1952) with mtime 0 and gobtfgen's mark as the header comment, so the file says
    who made it and gobtfgen's ownership check recognizes it (its first line holds the mark)."""
    comp = zlib.compressobj(9, zlib.DEFLATED, -15, 9)
    body = comp.compress(data) + comp.flush()
    flg_fcomment = 0x10
    header = struct.pack("<BBBBIBB", 0x1F, 0x8B, 8, flg_fcomment, 0, 2, 3)
    comment = f"{render.GENERATED_MARK}\0".encode("latin-1")
    return header + comment + body + struct.pack("<II", zlib.crc32(data), len(data) & 0xFFFFFFFF)


def ld_object(tar_gz: bytes, *, ld: str = "ld") -> bytes:
    """min_core_btfs_tar.o: the tar.gz as a relocatable object, as bcc's Makefile links it."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="gobtfgen-ld-") as tmp:
        source = Path(tmp) / TARGZ_FILE
        source.write_bytes(tar_gz)
        output = Path(tmp) / LD_FILE
        tools.ld_binary(ld, source, output)
        return output.read_bytes()


def parse_formats(value: str) -> tuple[str, ...]:
    """--format: a comma-separated subset of FORMATS, in FORMATS order."""
    from gobtfgen.errors import UsageError

    wanted = {item.strip().lower() for item in value.replace(" ", ",").split(",") if item.strip()}
    unknown = sorted(wanted - set(FORMATS))
    if unknown or not wanted:
        raise UsageError(f"--format {value!r}: use a comma-separated list of "
                         f"{', '.join(FORMATS)} (source: the Go or C code with the payload)")
    return tuple(f for f in FORMATS if f in wanted)
