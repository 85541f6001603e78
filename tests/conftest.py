"""Shared fixtures. Tests that run real programs (clang, bpftool, go) are marked `tools`; every
other test runs with external commands forbidden, so a unit test cannot shell out by accident."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).resolve().parent / "fixtures"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "tools: runs real external programs (clang, bpftool, go)")


@pytest.fixture(autouse=True)
def _forbid_tools(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    if request.node.get_closest_marker("tools") is None:
        def refuse(*args: object, **kwargs: object) -> None:
            raise AssertionError(f"unit test tried to run an external program: {args!r}; mark "
                                 "it @pytest.mark.tools if it really needs one")

        monkeypatch.setattr("gobtfgen.tools.run", refuse)


@pytest.fixture(autouse=True)
def _own_cache_dir(tmp_path_factory: pytest.TempPathFactory,
                   monkeypatch: pytest.MonkeyPatch) -> None:
    """An empty gobtfgen cache per test: minimize and generate would otherwise write the
    user's (~/.cache/gobtfgen), and a result one test kept would answer another's run. A test
    that sets GOBTFGEN_CACHE_DIR or passes --cache-dir overrides it."""
    monkeypatch.setenv("GOBTFGEN_CACHE_DIR", str(tmp_path_factory.mktemp("gobtfgen-cache")))


def need(tool: str, why: str = "") -> str:
    path = shutil.which(tool) or (f"/usr/sbin/{tool}" if Path(f"/usr/sbin/{tool}").exists()
                                  else None)
    if not path:
        pytest.skip(reason=f"{tool} is not installed{why}; run scripts/setup (apt-get install "
                    "clang llvm bpftool libbpf-dev) to run this test")
    return path


@pytest.fixture(scope="session")
def real_archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A btfhub-layout archive of every real kernel this run has (tests/realkernels.py: the
    sample where present, the Debian kernel corpus always)."""
    from tests import realkernels

    return realkernels.archive(tmp_path_factory.mktemp("real-archive"))


def compile_bpf(source: Path, out: Path, *defines: str) -> Path:
    clang = need("clang")
    multiarch = subprocess.run(["gcc", "-print-multiarch"], capture_output=True, text=True)
    includes = [f"-I/usr/include/{multiarch.stdout.strip()}"] if multiarch.returncode == 0 else []
    subprocess.run([clang, "-g", "-O2", "-target", "bpf", "-D__TARGET_ARCH_x86", *includes,
                    *[f"-D{d}" for d in defines], "-c", str(source), "-o", str(out)], check=True)
    return out


@pytest.fixture(scope="session")
def probe_objects(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """tests/fixtures/probe.bpf.c in three variants: base, code edited with the same
    relocations, relocations changed."""
    if not Path("/usr/include/bpf/bpf_helpers.h").exists():
        pytest.skip(reason="libbpf headers are missing; apt-get install libbpf-dev (scripts/setup)")
    out = tmp_path_factory.mktemp("probe")
    return {name: compile_bpf(FIXTURES / "probe.bpf.c", out / f"probe_{name}.o", f"VARIANT={v}")
            for name, v in (("base", 0), ("code", 1), ("relocs", 2))}


@pytest.fixture
def cache_dir(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path / "cache"
