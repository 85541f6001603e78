"""The Rust runtime (`--lang rust`) for aya and libbpf-rs programs: btfgen.rs (find_btf,
lookup_btf, the aya_btf! macro and btf_custom_path for libbpf-rs; the lookup rules of the Go and
C runtimes) and one btfgen_<arch>.payload per btfhub arch, embedded with include_bytes! under
`#[cfg(target_arch = ...)]`: x86_64 carries the x86_64 kernels, aarch64 the arm64 ones, every
other target compiles with no payload. A crate includes it with `mod btfgen;`; it needs the
standard library and miniz_oxide only, and no build script. Template: templates/btfgen.rs.j2."""

from __future__ import annotations

from dataclasses import dataclass

from gobtfgen import render
from gobtfgen.targets import Rendered, Target, TargetInput, TargetOptions

RS_FILE = "btfgen.rs"

# btfhub arch -> (Rust's target_arch, `uname -m` of its machines).
_RUST_ARCH = {"x86_64": ("x86_64", "x86_64"), "arm64": ("aarch64", "aarch64")}


def payload_file(arch: str) -> str:
    return f"btfgen_{arch}.payload"


@dataclass(frozen=True, kw_only=True)
class RustArch:
    arch: str  # btfhub arch
    target_arch: str  # cfg(target_arch) of the builds that carry it
    machine: str  # `uname -m` of the kernels such a build runs on
    payload_file: str


@dataclass(frozen=True, kw_only=True)
class RustContext:
    generated_mark: str
    override_env: str
    arches: tuple[RustArch, ...]
    cfg_any: str  # `target_arch = "x86_64", target_arch = "aarch64"`


def rust_context(*, env_prefix: str) -> RustContext:
    render.validate_env_prefix(env_prefix)
    arches = tuple(RustArch(arch=a, target_arch=_RUST_ARCH[a][0], machine=_RUST_ARCH[a][1],
                            payload_file=payload_file(a)) for a in render.ARCHES)
    return RustContext(generated_mark=render.GENERATED_MARK,
                       override_env=f"{env_prefix}_BTF_FILE", arches=arches,
                       cfg_any=", ".join(f'target_arch = "{a.target_arch}"' for a in arches))


def _static(options: TargetOptions) -> dict[str, bytes]:
    ctx = rust_context(env_prefix=options.env_prefix)
    return {RS_FILE: render.render("btfgen.rs.j2", ctx=ctx).encode()}


def _render(inp: TargetInput) -> Rendered:
    # Every arch gets a payload file, so include_bytes! finds its file on every target.
    return Rendered(files={payload_file(arch): inp.payloads[arch] for arch in render.ARCHES})


TARGET = Target(name="rust", templates=("btfgen.rs.j2",), static=_static, render=_render,
                payload_file=payload_file)
