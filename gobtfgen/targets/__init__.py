"""Output targets: one module per output (a language's runtime, or an archive format).

Every target gets the same frozen inputs (the packed payloads, their stats, the minimized BTFs
by kernel key and the options) and gives back named files. The pipeline hands them over and
writes what comes back; it never asks which language it is talking to. Adding a language is
adding a module here, its templates in templates/, and a line in TARGETS.

| target  | files                                          | module            |
|---------|------------------------------------------------|-------------------|
| go      | btfgen*.go + btfgen_<arch>.payload             | targets/go.py     |
| c       | btfgen.c, btfgen.h, btfgen_payload_<arch>.h    | targets/c.py      |
| rust    | btfgen.rs + btfgen_<arch>.payload              | targets/rust.py   |
| tar.gz  | min_core_btfs.tar.gz                           | targets/targz.py  |
| ld      | min_core_btfs.tar.gz + min_core_btfs_tar.o     | targets/ld.py     |
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from gobtfgen.errors import Problem, UsageError
from gobtfgen.pack import VERSION, PackStats


@dataclass(frozen=True, kw_only=True)
class TargetOptions:
    package: str = "main"  # Go package (the go target only reads it)
    env_prefix: str = "BTFGEN"  # <prefix>_BTF_FILE overrides the BTF at run time
    ld: str = "ld"  # the linker of the ld target


@dataclass(frozen=True, kw_only=True)
class TargetInput:
    options: TargetOptions
    payloads: Mapping[str, bytes]  # btfhub arch -> packed payload (docs/payload-format.md)
    stats: Mapping[str, PackStats]  # btfhub arch -> what its payload holds
    btfs: Mapping[str, bytes]  # kernel key -> minimized BTF (for the archive formats)
    # kernel key -> "<size>:<sha256>" of its full raw BTF (the Go runtime's PreferEmbedded)
    full_sums: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class Rendered:
    files: dict[str, bytes]
    problems: tuple[Problem, ...] = ()


def _no_static(options: TargetOptions) -> dict[str, bytes]:
    return {}


def _no_payload_file(arch: str) -> str | None:
    return None


@dataclass(frozen=True, kw_only=True)
class Target:
    name: str
    templates: tuple[str, ...]  # under templates/: the wheel must carry each
    # The files that depend on the options only, rendered while the kernels are minimized.
    static: Callable[[TargetOptions], dict[str, bytes]] = field(default=_no_static)
    # The rest, from the packed payloads; together with static, everything this target writes.
    render: Callable[[TargetInput], Rendered]
    # The file holding an arch's payload, for the manifest and the summary (None: no such file).
    payload_file: Callable[[str], str | None] = field(default=_no_payload_file)
    # The payload format version its runtime reads (docs/payload-format.md, "Versions and
    # targets"): the pipeline packs with it.
    payload_version: int = VERSION


def _targets() -> dict[str, Target]:
    from gobtfgen.targets import c, go, ld, rust, targz

    return {t.name: t for t in (go.TARGET, c.TARGET, rust.TARGET, targz.TARGET, ld.TARGET)}


TARGETS: Mapping[str, Target] = _targets()
# Targets that are a runtime in a language (--lang); the others are formats (--format).
LANGS = ("go", "c", "rust")
FORMATS = ("source", "tar.gz", "ld")


def selected(lang: str, formats: tuple[str, ...]) -> tuple[Target, ...]:
    """The targets of --lang and --format: "source" is the --lang runtime; ld writes the tar.gz
    it links, so it stands for tar.gz too."""
    names = [lang] if "source" in formats else []
    if "ld" in formats:
        names.append("ld")
    elif "tar.gz" in formats:
        names.append("tar.gz")
    return tuple(TARGETS[n] for n in names)


def parse_formats(value: str) -> tuple[str, ...]:
    """--format: a comma-separated subset of FORMATS, in FORMATS order."""
    wanted = {item.strip().lower() for item in value.replace(" ", ",").split(",") if item.strip()}
    unknown = sorted(wanted - set(FORMATS))
    if unknown or not wanted:
        raise UsageError(f"--format {value!r}: use a comma-separated list of "
                         f"{', '.join(FORMATS)} (source: the --lang code with the payload)")
    return tuple(f for f in FORMATS if f in wanted)


def payload_version(selected: Sequence[Target]) -> int:
    """The payload version to pack for these targets: that of the one that holds a payload
    (a run writes at most one runtime), else the newest."""
    from gobtfgen.keys import ARCHES

    return next((t.payload_version for t in selected if t.payload_file(ARCHES[0]) is not None),
                VERSION)


def render_files(target: Target, inp: TargetInput) -> dict[str, bytes]:
    """Everything one target writes for these inputs (its static files and the rest)."""
    return {**target.static(inp.options), **target.render(inp).files}


def packed_input(btfs_by_arch: Mapping[str, Mapping[str, bytes]], *,
                 options: TargetOptions | None = None, version: int = VERSION) -> TargetInput:
    """The input of the targets for {arch: {key: minimized BTF}}, packed as the pipeline packs
    it (every btfhub arch gets a payload, empty when it has no kernel) in payload format
    `version` (a target's payload_version)."""
    from gobtfgen.keys import ARCHES
    from gobtfgen.pack import pack

    payloads: dict[str, bytes] = {}
    stats: dict[str, PackStats] = {}
    for arch in ARCHES:
        payloads[arch], stats[arch] = pack(arch, dict(btfs_by_arch.get(arch, {})),
                                           version=version)
    btfs = {k: v for entries in btfs_by_arch.values() for k, v in entries.items()}
    return TargetInput(options=options or TargetOptions(), payloads=payloads, stats=stats,
                       btfs=btfs)
