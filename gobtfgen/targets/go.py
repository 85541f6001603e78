"""The Go runtime (`--lang go`, the default): btfgen.go (GetBTFSpec, LoadBTFSpec, LookupBTF),
one build-tagged btfgen_<goarch>.go per arch embedding btfgen_<arch>.payload with go:embed, and
btfgen_others.go for every other GOARCH (no payload). Templates: templates/btfgen.go.j2 (where
the user's layout keeps it), btfgen_arch.go.j2, btfgen_others.go.j2."""

from __future__ import annotations

import re
import struct
import zlib
from collections.abc import Mapping
from dataclasses import dataclass

from gobtfgen import pack, render
from gobtfgen.errors import UsageError
from gobtfgen.keys import ARCHES, GOARCH_OF_ARCH
from gobtfgen.targets import Rendered, Target, TargetInput, TargetOptions

# btfhub arch -> GOARCH whose binaries carry that arch's payload (keys.py is the one table).
GOARCH_OF = GOARCH_OF_ARCH

_GO_KEYWORDS = {
    "break", "case", "chan", "const", "continue", "default", "defer", "else", "fallthrough",
    "for", "func", "go", "goto", "if", "import", "interface", "map", "package", "range",
    "return", "select", "struct", "switch", "type", "var",
}
_GO_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def payload_file(arch: str) -> str:
    return f"btfgen_{arch}.payload"


def go_file_for(goarch: str | None) -> str:
    return f"btfgen_{goarch}.go" if goarch else "btfgen_others.go"


def validate_package(name: str) -> str:
    if not _GO_IDENT.match(name) or name in _GO_KEYWORDS or name == "_":
        raise UsageError(f"--pkg {name!r} is not a Go package name; use an identifier such as "
                         "main or btfgen (go generate sets it from $GOPACKAGE)")
    return name


@dataclass(frozen=True, kw_only=True)
class ArchFile:
    goarch: str  # "amd64"
    arch: str  # btfhub arch, "x86_64"
    go_file: str  # "btfgen_amd64.go"
    payload_file: str  # "btfgen_x86_64.payload"


@dataclass(frozen=True, kw_only=True)
class GoContext:
    package: str
    generated_mark: str
    override_env: str  # e.g. BTFGEN_BTF_FILE: a BTF file that wins over everything
    arch_files: tuple[ArchFile, ...]
    others_go_file: str  # build-tagged file for every other GOARCH (empty payload)
    others_build_tag: str  # "!amd64 && !arm64"


def go_context(*, package: str, env_prefix: str) -> GoContext:
    validate_package(package)
    render.validate_env_prefix(env_prefix)
    arch_files = tuple(ArchFile(goarch=GOARCH_OF[a], arch=a, go_file=go_file_for(GOARCH_OF[a]),
                                payload_file=payload_file(a)) for a in ARCHES)
    return GoContext(
        package=package, generated_mark=render.GENERATED_MARK,
        override_env=f"{env_prefix}_BTF_FILE", arch_files=arch_files,
        others_go_file=go_file_for(None),
        others_build_tag=" && ".join(f"!{f.goarch}" for f in arch_files))


def render_go_files(ctx: GoContext) -> dict[str, str]:
    """Every generated Go file, by file name."""
    files = {"btfgen.go": render.render("btfgen.go.j2", ctx=ctx)}
    for arch_file in ctx.arch_files:
        files[arch_file.go_file] = render.render("btfgen_arch.go.j2", ctx=ctx,
                                                 arch_file=arch_file)
    files[ctx.others_go_file] = render.render("btfgen_others.go.j2", ctx=ctx)
    return files


def _static(options: TargetOptions) -> dict[str, bytes]:
    ctx = go_context(package=options.package, env_prefix=options.env_prefix)
    return {name: text.encode() for name, text in render_go_files(ctx).items()}


FULLSUM_MAGIC = b"GBS2"
# The trailer's fixed end: u32 sizes_len, u32 crc32 of the hash and size columns, the magic.
FULLSUM_TAIL = struct.Struct("<II4s")
# Bytes of each full BTF's sha256 kept: the check tells one build of a kernel from another
# under the same release, it is no defence against whoever writes the vmlinux file
# (docs/payload-format.md, "The full-BTF trailer").
FULLSUM_HASH_LEN = 16


def fullsum_trailer(payload: bytes, full_sums: Mapping[str, str]) -> bytes:
    """The checksums of the full BTF of the payload's kernels ({key: "<size>:<sha256>"}, keys
    the payload lacks ignored), appended to the Go payload for BTFOptions.PreferEmbedded
    (docs/payload-format.md, "The full-BTF trailer"): one record per payload entry, in entry
    order, the first 16 bytes of each sha256 and each size as a varint delta (size 0 for an
    entry without checksum). Readers of the payload itself never look past its last group.
    Empty when no kernel has a checksum."""
    keys = pack.entry_keys(payload)
    if not any(k in full_sums for k in keys):
        return b""
    hashes, sizes = bytearray(), bytearray(pack._uvarint(len(keys)))
    prev = 0
    for key in keys:
        size, digest = 0, bytes(FULLSUM_HASH_LEN)
        if key in full_sums:
            size_text, hex_digest = full_sums[key].split(":")
            size, digest = int(size_text), bytes.fromhex(hex_digest)
            if not 0 < size < 1 << 32 or len(digest) != 32:
                raise ValueError(f"full-BTF checksum of {key}: {full_sums[key]!r} is not "
                                 "<size below 4 GiB>:<sha256 hex>")
        hashes += digest[:FULLSUM_HASH_LEN]
        sizes += pack._uvarint(pack._delta32(size, prev))  # the payload's varints
        prev = size
    return bytes(hashes + sizes) + FULLSUM_TAIL.pack(len(sizes), zlib.crc32(hashes + sizes),
                                                     FULLSUM_MAGIC)


def parse_fullsum_trailer(payload: bytes) -> dict[str, str]:
    """fullsum_trailer read back, strictly (a damaged trailer raises pack.PayloadError where
    the Go runtime ignores it): {key: "<size>:<first 16 bytes of its sha256, hex>"} for the
    entries that have a checksum, empty when the payload does not end in the magic."""
    if len(payload) < FULLSUM_TAIL.size or payload[-4:] != FULLSUM_MAGIC:
        return {}
    sizes_len, crc, _ = FULLSUM_TAIL.unpack_from(payload, len(payload) - FULLSUM_TAIL.size)
    keys = pack.entry_keys(payload)
    sizes_at = len(payload) - FULLSUM_TAIL.size - sizes_len
    hashes_at = sizes_at - FULLSUM_HASH_LEN * len(keys)
    if hashes_at < pack.HEADER.size:
        raise pack.PayloadError("full-BTF trailer: lengths out of range")
    column = payload[sizes_at:sizes_at + sizes_len]
    if zlib.crc32(payload[hashes_at:sizes_at + sizes_len]) != crc:
        raise pack.PayloadError("full-BTF trailer fails its checksum")
    pos = 0

    def varint() -> int:
        nonlocal pos
        value = shift = 0
        while True:
            if pos >= len(column):
                raise pack.PayloadError("full-BTF trailer truncated")
            byte = column[pos]
            pos += 1
            if shift == 28 and byte > 0x0F:
                raise pack.PayloadError("full-BTF trailer: varint over 32 bits")
            value |= (byte & 0x7F) << shift
            if byte < 0x80:
                return value
            shift += 7

    if (n := varint()) != len(keys):
        raise pack.PayloadError(f"full-BTF trailer of {n} entries, the payload has {len(keys)}")
    sums, size = {}, 0
    for i, key in enumerate(keys):
        v = varint()
        size = (size + ((v >> 1) ^ -(v & 1))) & 0xFFFFFFFF
        if size:
            at = hashes_at + i * FULLSUM_HASH_LEN
            sums[key] = f"{size}:{payload[at:at + FULLSUM_HASH_LEN].hex()}"
    if pos != len(column):
        raise pack.PayloadError("full-BTF trailer: bytes after the sizes")
    return sums


def _render(inp: TargetInput) -> Rendered:
    # Every arch gets a payload file, so every GOARCH's go:embed pattern finds its file.
    return Rendered(files={payload_file(arch): inp.payloads[arch]
                           + fullsum_trailer(inp.payloads[arch], inp.full_sums)
                           for arch in ARCHES})


TARGET = Target(name="go", templates=("btfgen.go.j2", "btfgen_arch.go.j2", "btfgen_others.go.j2"),
                static=_static, render=_render, payload_file=payload_file)
