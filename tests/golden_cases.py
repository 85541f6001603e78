"""The golden cases: fixed inputs rendered to whole files. `python -m tests.update_golden`
rewrites tests/golden/ from them; tests/test_golden.py compares. Golden files change only
through that command, so every change to generated output shows up in review as a diff."""

from __future__ import annotations

from pathlib import Path

from gobtfgen import pipeline, render, targets
from gobtfgen.objects import BpfObject
from gobtfgen.targets import c, go
from tests.btfdata import tiny_btf

GOLDEN = Path(__file__).resolve().parent / "golden"


def _options(**kw: object) -> pipeline.GenerateOptions:
    base: dict[str, object] = dict(objects=(), archive=Path("/srv/btfhub-archive"),
                                   archive_arg="/srv/btfhub-archive", arches=("x86_64", "arm64"),
                                   package="main", output_dir=Path("/src/app"))
    base.update(kw)
    return pipeline.GenerateOptions(**base)  # type: ignore[arg-type]


def _plan(objects: tuple[str, ...]) -> pipeline.Plan:
    objs = tuple(BpfObject(path=Path(o), little_endian=True, target="x86", arches=("x86_64",),
                           core_relocations=3, signature="0" * 64, kernel_btf_programs=())
                 for o in objects)
    return pipeline.Plan(kernels=(), objects=objs, objects_by_arch={}, signature_by_arch={},
                         problems=())


def cases() -> dict[str, dict[str, str]]:
    """case name -> {file name: text}."""
    out: dict[str, dict[str, str]] = {}
    ctx = go.go_context(package="main", env_prefix="BTFGEN")
    files = go.render_go_files(ctx)
    files["Makefile.btfgen"] = pipeline.render_makefile(
        _options(), _plan(("/src/app/execsnoop_x86_bpfel.o",)))
    out["default"] = files
    ctx = go.go_context(package="tracer", env_prefix="MYTRACER")
    files = go.render_go_files(ctx)
    files["Makefile.btfgen"] = pipeline.render_makefile(
        _options(objects=(Path("bpf/a_bpfel.o"),), archive_arg="../btfhub-archive",
                 archive=Path("../btfhub-archive"), arches=("x86_64",), package="tracer",
                 output_dir=Path("."), minimizer="python", env_prefix="MYTRACER",
                 include=("ubuntu", "centos/7"),
                 exclude=("*-rt-*",)),
        _plan(("bpf/a_bpfel.o",)))
    out["custom"] = files
    # The C runtime (--lang c), with one tiny kernel per arch so the payload headers are short.
    inp = targets.packed_input({arch: {f"debian/12/{arch}/6.1.0-1-{arch}": tiny_btf((arch,))}
                                for arch in render.ARCHES}, version=c.TARGET.payload_version)
    out["c"] = {name: data.decode() for name, data in targets.render_files(c.TARGET, inp).items()}
    return out
