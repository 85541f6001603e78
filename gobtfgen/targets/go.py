"""The Go runtime (`--lang go`, the default): btfgen.go (GetBTFSpec, LoadBTFSpec, LookupBTF),
one build-tagged btfgen_<goarch>.go per arch embedding btfgen_<arch>.payload with go:embed, and
btfgen_others.go for every other GOARCH (no payload). Templates: templates/btfgen.go.j2 (where
the user's layout keeps it), btfgen_arch.go.j2, btfgen_others.go.j2."""

from __future__ import annotations

import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass

from gobtfgen import render
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


FULLSUM_MAGIC = b"GBS1"


def fullsum_trailer(arch: str, full_sums: Mapping[str, str]) -> bytes:
    """The checksums of the full BTF of arch's kernels, appended to the Go payload for
    BTFOptions.PreferEmbedded (docs/payload-format.md, "full-BTF trailer"). Readers of the
    payload itself never look past its last chunk, so the payload stays version 1."""
    body = bytearray()
    n = 0
    for key in sorted(full_sums):
        if key.split("/")[2:3] != [arch]:
            continue
        size, digest = full_sums[key].split(":")
        encoded = key.encode()
        body += struct.pack("<H", len(encoded)) + encoded
        body += struct.pack("<Q", int(size)) + bytes.fromhex(digest)
        n += 1
    if not n:
        return b""
    return bytes(body) + struct.pack("<II", n, len(body)) + FULLSUM_MAGIC


def parse_fullsum_trailer(payload: bytes) -> dict[str, str]:
    """fullsum_trailer read back: {key: "<size>:<sha256>"}, empty when there is none."""
    if len(payload) < 12 or payload[-4:] != FULLSUM_MAGIC:
        return {}
    n, body_len = struct.unpack_from("<II", payload, len(payload) - 12)
    pos, sums = len(payload) - 12 - body_len, {}
    for _ in range(n):
        (key_len,) = struct.unpack_from("<H", payload, pos)
        key = payload[pos + 2:pos + 2 + key_len].decode()
        pos += 2 + key_len
        (size,) = struct.unpack_from("<Q", payload, pos)
        sums[key] = f"{size}:{payload[pos + 8:pos + 40].hex()}"
        pos += 40
    return sums


def _render(inp: TargetInput) -> Rendered:
    # Every arch gets a payload file, so every GOARCH's go:embed pattern finds its file.
    return Rendered(files={payload_file(arch): inp.payloads[arch]
                           + fullsum_trailer(arch, inp.full_sums) for arch in ARCHES})


TARGET = Target(name="go", templates=("btfgen.go.j2", "btfgen_arch.go.j2", "btfgen_others.go.j2"),
                static=_static, render=_render, payload_file=payload_file)
