"""The generated Rust module in temporary crates from crates.io, used as a user uses it with
each loader: aya 0.13 and 0.14 (`aya_btf!` into `EbpfLoader::btf(Option<&Btf>)`; 0.14 is the
newest that builds with Rust 1.95) and libbpf-rs 0.26 (the first with
`ObjectBuilder::btf_custom_path`) and 0.27 (the newest here), for x86_64 and aarch64, under
`cargo clippy -D warnings`. libbpf-sys builds its vendored libbpf (about 25 s of CPU once; the
shared CARGO_TARGET_DIR keeps it for every later run)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from gobtfgen import targets
from gobtfgen.targets import rust
from tests import cargo, lookup_vectors

pytestmark = pytest.mark.tools

SOURCES = Path(__file__).resolve().parent / "rustloaders"
LOADERS = [("aya", "0.13", "aya.rs"), ("aya", "0.14", "aya.rs"),
           ("libbpf-rs", "0.26", "libbpf.rs"), ("libbpf-rs", "0.27", "libbpf.rs")]
TARGETS = ["x86_64-unknown-linux-gnu", cargo.AARCH64]


def _has_deb(name: str) -> bool:
    proc = subprocess.run(["dpkg-query", "-W", "-f=${Status}", name], capture_output=True,
                          text=True)
    return "install ok installed" in proc.stdout


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize(("crate", "version", "main"), LOADERS)
def test_loader_helpers_compile(crate: str, version: str, main: str, target: str,
                                tmp_path: Path) -> None:
    cargo.find_cargo()
    extra: dict[str, str] = {}
    if target == cargo.AARCH64:
        tools = cargo.aarch64_toolchain()
        if tools is None:
            pytest.skip(reason=cargo.AARCH64_MISSING)
        linker = tools[0]
        # libbpf-sys compiles libbpf with the cross compiler against the arm64 libelf/zlib
        # headers (libelf-dev:arm64, zlib1g-dev:arm64 from scripts/setup).
        extra = {"CC_aarch64_unknown_linux_gnu": linker, "PKG_CONFIG_ALLOW_CROSS": "1",
                 "CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER": linker}
        if crate == "libbpf-rs" and not all(_has_deb(p) for p in ("zlib1g-dev:arm64",
                                                                "libelf-dev:arm64")):
            pytest.skip(reason="arm64 zlib headers are missing; dpkg --add-architecture arm64 "
                               "&& apt-get install zlib1g-dev:arm64 libelf-dev:arm64")
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(SOURCES / main, src / "main.rs")
    inp = targets.packed_input(lookup_vectors.blobs(lookup_vectors.load()),
                               version=rust.TARGET.payload_version)
    for name, data in targets.render_files(rust.TARGET, inp).items():
        (src / name).write_bytes(data)
    (tmp_path / "Cargo.toml").write_text(
        f'[package]\nname = "btfgen-{crate}-{version.replace(".", "-")}"\nversion = "0.0.0"\n'
        f'edition = "2021"\npublish = false\n\n[dependencies]\n{crate} = "~{version}"\n'
        f'miniz_oxide = "{cargo.MINIZ}"\n')
    proc = cargo.cargo(tmp_path, "clippy", "--target", target, "--", "-D", "warnings",
                       extra_env=extra)
    assert "warning:" not in proc.stderr, proc.stderr[-4000:]
