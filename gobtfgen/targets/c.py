"""The C runtime for libbpf programs (`--lang c`): btfgen.c and btfgen.h (ensure_core_btf() and
clean_core_btf(), the lookup rules of the Go runtime) and one btfgen_payload_<arch>.h per
btfhub arch holding that arch's payload (docs/payload-format.md) as a C string, so no
`ld -r -b binary` step is needed. Templates: templates/btfgen.c.j2, templates/btfgen.h.j2."""

from __future__ import annotations

from dataclasses import dataclass

from gobtfgen import render
from gobtfgen.targets import Rendered, Target, TargetInput, TargetOptions

C_FILE = "btfgen.c"
H_FILE = "btfgen.h"

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


def _static(options: TargetOptions) -> dict[str, bytes]:
    ctx = c_context(env_prefix=options.env_prefix)
    return {C_FILE: render.render("btfgen.c.j2", ctx=ctx).encode(),
            H_FILE: render.render("btfgen.h.j2", ctx=ctx).encode()}


def _render(inp: TargetInput) -> Rendered:
    files: dict[str, bytes] = {}
    for arch in render.ARCHES:
        s = inp.stats.get(arch)
        files[payload_header(arch)] = payload_c(
            arch, inp.payloads[arch], kernels=s.entries if s else 0,
            blobs=s.blobs if s else 0).encode()
    return Rendered(files=files)


TARGET = Target(name="c", templates=("btfgen.c.j2", "btfgen.h.j2"), static=_static,
                render=_render, payload_file=payload_header)
