"""The package as a user gets it: `python -m build` makes the sdist and, from it, the wheel; the
wheel carries the top-level templates/ and passes `twine check`; installed into a clean venv
with its dependencies resolved from PyPI (as `pip install gobtfgen` would, no site packages
from anywhere else), it reports the one version the source has and runs a real `generate`.

The venv deliberately does not see the base interpreter's site packages: one that did let a
dependency missing from pyproject.toml go unnoticed on a machine where someone had installed it
by hand (issue 11)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

import gobtfgen
from gobtfgen.targets import TARGETS
from tests.conftest import FIXTURES, REPO, compile_bpf

pytestmark = pytest.mark.tools

VMLINUX = Path("/sys/kernel/btf/vmlinux")


def run(cmd: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, capture_output=True, text=True, **kwargs)  # type: ignore[call-overload]
    assert proc.returncode == 0, f"{' '.join(cmd)} exited {proc.returncode}:\n" \
                                 f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    for module in ("build", "twine"):
        try:
            __import__(module)
        except ImportError:
            pytest.skip(reason=f"the '{module}' package is missing; pip install -e '.[test]' "
                               "(scripts/setup)")
    out = tmp_path_factory.mktemp("dist")
    # No --sdist/--wheel: build makes the sdist, then the wheel *from the sdist*, which proves
    # the sdist holds everything a wheel needs (the templates above all).
    run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(REPO)])
    return out


def only(directory: Path, pattern: str) -> Path:
    found = sorted(directory.glob(pattern))
    assert len(found) == 1, f"expected one {pattern} in {directory}, found {found}"
    return found[0]


def test_sdist_and_wheel_carry_the_templates_and_one_version(dist: Path) -> None:
    version = gobtfgen.__version__
    sdist = only(dist, f"gobtfgen-{version}.tar.gz")
    # The compiled module (gobtfgen/_native.c, built by hatch_build.py) makes the wheel this
    # interpreter's and platform's; without it, the wheel is py3-none-any.
    tag = f"-cp{sys.version_info.major}{sys.version_info.minor}-"
    wheel = only(dist, f"gobtfgen-{version}-*.whl")
    templates = sorted(p.name for p in (REPO / "templates").glob("*.j2"))
    assert templates
    with tarfile.open(sdist) as tar:
        in_sdist = {Path(n).name for n in tar.getnames() if "/templates/" in n}
        sdist_files = {Path(n).name for n in tar.getnames()}
    assert set(templates) <= in_sdist
    assert {"_native.c", "hatch_build.py"} <= sdist_files
    assert not [n for n in sdist_files if n.endswith(".so")]  # a checkout's build stays out
    names = zipfile.ZipFile(wheel).namelist()
    native = [n for n in names if n.startswith("gobtfgen/_native") and n.endswith(".so")]
    if gobtfgen_native_built():
        assert len(native) == 1 and tag in wheel.name, (wheel, native)
    else:
        assert not native and wheel.name.endswith("-py3-none-any.whl")
    for template in templates:
        assert f"gobtfgen/templates/{template}" in names
    # Every output target's templates, as the target names them (gobtfgen/targets/).
    for target in TARGETS.values():
        for name in target.templates:
            assert f"gobtfgen/templates/{name}" in names, (target.name, name)
    metadata = zipfile.ZipFile(wheel).read(f"gobtfgen-{version}.dist-info/METADATA").decode()
    assert f"\nVersion: {version}\n" in metadata
    # The metadata a package index would show must be valid (README renders, fields complete).
    out = run([sys.executable, "-m", "twine", "check", "--strict", str(sdist), str(wheel)])
    assert out.stdout.count("PASSED") == 2, out.stdout


def test_wheel_installs_from_pypi_and_generates(dist: Path, tmp_path: Path) -> None:
    wheel = only(dist, "gobtfgen-*.whl")
    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", str(venv)])
    py = venv / "bin" / "python"
    # Dependencies from the index, as a user's `pip install` gets them; gobtfgen from the wheel.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PIP_NO_INDEX")}
    run([str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check", str(wheel)],
        env=env, timeout=600)
    listed = run([str(py), "-m", "pip", "list", "--format=json"], env=env).stdout
    assert "gobtfgen" in {p["name"] for p in json.loads(listed)}

    gobtfgen_bin = str(venv / "bin" / "gobtfgen")
    version = run([gobtfgen_bin, "--version"], env=env, cwd=tmp_path)
    loaded = run([str(py), "-c", "from gobtfgen.btf.native import native; print(native)"],
                 env=env, cwd=tmp_path).stdout
    assert ("site-packages/gobtfgen/_native" in loaded) == gobtfgen_native_built(), loaded
    assert version.stdout.strip() == f"gobtfgen {gobtfgen.__version__}"

    # A real generate from the installed package, run outside the checkout (so nothing can be
    # imported from it): a clang-built object against a real kernel BTF.
    if not Path("/usr/include/bpf/bpf_helpers.h").exists():
        pytest.skip(reason="libbpf headers are missing; apt-get install libbpf-dev (scripts/setup)")
    work = tmp_path / "work"
    work.mkdir()
    obj = compile_bpf(FIXTURES / "probe.bpf.c", work / "probe.o", "VARIANT=0")
    archive = tmp_path / "archive"
    kernel = kernel_btf_source()
    run([gobtfgen_bin, "archive", "add", str(archive), "--from", str(kernel), "--id", "debian",
         "--version", "12", "--arch", "x86_64", "--release", "6.0.0-wheel-test"],
        env=env, cwd=work)
    out = tmp_path / "out"
    gen = run([gobtfgen_bin, "generate", "--archive", str(archive), "--object", str(obj),
               "--pkg", "main", "--arch", "x86_64", "--output-dir", str(out),
               "--cache-dir", str(tmp_path / "cache")], env=env, cwd=work)
    assert "1 minimized" in gen.stderr, gen.stderr
    assert (out / "btfgen.go").read_text().startswith("// Code generated by gobtfgen; DO NOT EDIT.")
    manifest = json.loads((out / "btfgen_manifest.json").read_text())
    assert [k["key"] for k in manifest["kernels"]] == ["debian/12/x86_64/6.0.0-wheel-test"]


def gobtfgen_native_built() -> bool:
    """Whether this checkout's install built the compiled module (then a wheel built here has
    it too: same compiler, same headers)."""
    return bool(list((REPO / "gobtfgen").glob("_native*.so")))


def test_a_wheel_built_without_the_compiled_module_is_pure_python(
        dist: Path, tmp_path: Path) -> None:
    """GOBTFGEN_BUILD_NATIVE=0 (or no compiler) gives a py3-none-any wheel without the module:
    gobtfgen runs the same code in Python (tests/test_strip.py checks the results agree)."""
    sdist = only(dist, "gobtfgen-*.tar.gz")
    env = {**os.environ, "GOBTFGEN_BUILD_NATIVE": "0"}
    run([sys.executable, "-m", "build", "--no-isolation", "--wheel", "--outdir", str(tmp_path),
         str(sdist)], env=env)
    wheel = only(tmp_path, "gobtfgen-*.whl")
    assert wheel.name.endswith("-py3-none-any.whl")
    assert not [n for n in zipfile.ZipFile(wheel).namelist() if n.endswith(".so")]


def kernel_btf_source() -> Path:
    """A real x86_64 kernel BTF: this host's when it has one, else a corpus kernel's."""
    import platform

    if VMLINUX.is_file() and platform.machine() == "x86_64":
        return VMLINUX
    from tests import corpus

    pkg = next((p for p in corpus.packages() if p.arch == "x86_64"), None)
    if pkg is None:
        pytest.skip(reason="no x86_64 kernel BTF: this host has no /sys/kernel/btf/vmlinux and "
                           "the kernel corpus lists none; run scripts/setup")
    return corpus.deb(pkg)
