"""Lookup keys: os-release parsing, arch names, and the runtime lookup rules.

This module is the Python twin of the lookup code in templates/btfgen.go.j2. Both are run over
the same vectors (tests/vectors/lookup.json), so every function here mirrors a Go function
byte for byte: change one, change the other, and add a vector.

A key is `<id>/<version>/<arch>/<release>`: the btfhub-archive path of a kernel without
`.btf.tar.xz`. `id` is os-release ID, `version` the archive's version folder, `arch` the btfhub
arch (`x86_64` or `arm64`, never `aarch64`), `release` the kernel's `uname -r`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

# uname -m (and a few spellings other tools print) -> btfhub arch folder. btfhub never uses
# `aarch64`: every tool that builds the path from raw `uname -m` misses on arm64.
_BTFHUB_ARCH_OF_MACHINE = {
    "x86_64": "x86_64",
    "amd64": "x86_64",
    "aarch64": "arm64",
    "arm64": "arm64",
}
# btfhub arch -> GOARCH of the binaries that carry its payload, and back to uname -m.
GOARCH_OF_ARCH = {"x86_64": "amd64", "arm64": "arm64"}
MACHINE_OF_GOARCH = {"amd64": "x86_64", "arm64": "aarch64"}
ARCHES = tuple(GOARCH_OF_ARCH)

# Amazon Linux 1 names its releases after dates (VERSION_ID="2018.03"); btfhub files them under
# amzn/2018 and, in older archive commits, amzn/1.
_AMZN1_YEARS = frozenset(str(y) for y in range(2011, 2019))

# Ubuntu kernel flavours (`5.4.0-1029-aws`, `4.15.0-20-generic`, `5.4.0-26-generic-64k`).
_UBUNTU_FLAVOURS = frozenset({
    "generic", "lowlatency", "aws", "azure", "gcp", "gke", "gkeop", "oracle", "kvm", "ibm",
    "raspi", "raspi2", "snapdragon", "oem", "nvidia", "intel", "realtime",
})
# Debian kernel flavours (`4.19.0-17-amd64`, `5.10.0-32-cloud-arm64`).
_DEBIAN_FLAVOURS = frozenset({
    "amd64", "arm64", "cloud-amd64", "cloud-arm64", "rt-amd64", "rt-arm64", "686", "686-pae",
    "armmp", "armmp-lpae",
})


def btfhub_arch(machine: str) -> str | None:
    """btfhub arch folder for a `uname -m` value, or None when btfhub has no such arch."""
    return _BTFHUB_ARCH_OF_MACHINE.get(machine)


def ascii_lower(text: str) -> str:
    # ASCII only, as the Go side does: Unicode case rules must not make the two disagree.
    return "".join(chr(ord(c) + 32) if "A" <= c <= "Z" else c for c in text)


def _is_name(key: str) -> bool:
    if not key or not (key[0] == "_" or key[0].isascii() and key[0].isalpha()):
        return False
    return all(c == "_" or c.isascii() and c.isalnum() for c in key)


def unquote(raw: str) -> str:
    """Shell-style value of an os-release assignment, as os-release(5) specifies it.

    Double quotes allow backslash escapes of `"`, `\\`, `$` and backtick; single quotes none;
    outside quotes a backslash escapes any character and unquoted whitespace ends the value
    (the rest of the line is a comment to a shell). An unterminated quote keeps what it read:
    a broken file's value up to the end of the line is the best guess there is.
    """
    out: list[str] = []
    quote = ""
    i, n = 0, len(raw)
    while i < n:
        c = raw[i]
        if quote == "":
            if c in " \t":
                break
            if c in "\"'":
                quote = c
            elif c == "\\":
                if i + 1 < n:
                    out.append(raw[i + 1])
                    i += 1
            else:
                out.append(c)
        elif quote == '"':
            if c == '"':
                quote = ""
            elif c == "\\" and i + 1 < n and raw[i + 1] in '"\\$`':
                out.append(raw[i + 1])
                i += 1
            else:
                out.append(c)
        elif c == "'":
            quote = ""
        else:
            out.append(c)
        i += 1
    return "".join(out)


def parse_os_release(text: str) -> dict[str, str]:
    """All assignments of an os-release file; the last one of a name wins, as in a shell."""
    fields: dict[str, str] = {}
    for line in text.split("\n"):
        if line.endswith("\r"):  # files edited on Windows, seen in container images
            line = line[:-1]
        line = line.lstrip(" \t")
        if not line or line.startswith("#"):
            continue
        eq = line.find("=")
        if eq <= 0 or not _is_name(line[:eq]):
            continue
        fields[line[:eq]] = unquote(line[eq + 1:])
    return fields


@dataclass(frozen=True, kw_only=True)
class OSRelease:
    """The os-release fields the lookup uses, normalized."""

    id: str = ""  # lower-cased ID; "" when absent
    version_id: str = ""
    id_like: tuple[str, ...] = ()
    pretty_name: str = ""

    @classmethod
    def parse(cls, text: str) -> OSRelease:
        fields = parse_os_release(text)
        return cls(id=ascii_lower(fields.get("ID", "")), version_id=fields.get("VERSION_ID", ""),
                   id_like=_words(ascii_lower(fields.get("ID_LIKE", ""))),
                   pretty_name=fields.get("PRETTY_NAME", ""))


def _words(text: str) -> tuple[str, ...]:
    # Spaces and tabs only: str.split() knows more whitespace than Go's parser does.
    return tuple(w for w in text.replace("\t", " ").split(" ") if w)


def version_candidates(os_id: str, version_id: str) -> list[str]:
    """The archive version folders to try for VERSION_ID, best first.

    btfhub cuts VERSION_ID to its major number (rhel 8.4 -> 8, ol 7.9 -> 7) except where it
    keeps the minor (sles 15.3), so the exact value goes first. Amazon Linux 1 (2018.03) lives
    under amzn/2018 and, in older archive commits, amzn/1.
    """
    if not version_id or "/" in version_id:
        return []
    out = [version_id]
    major = version_id.split(".", 1)[0]
    if major and major != version_id:
        out.append(major)
    if os_id == "amzn" and major in _AMZN1_YEARS and major != version_id:
        out.append("1")
    return out


# Distros whose archive folder is VERSION_ID cut to its major number (btfhub's layout:
# rhel/8, ol/7, centos/7, amzn/2 and amzn/2018 for 2018.03). Every other distro keeps its
# VERSION_ID whole (ubuntu/20.04, sles/15.3), which rule 3 tries first anyway.
_MAJOR_ONLY = frozenset({"rhel", "centos", "ol", "amzn", "fedora", "debian", "rocky",
                         "almalinux"})


def archive_version(os_id: str, version_id: str) -> str:
    """The version folder a kernel of this host belongs in, following btfhub's layout."""
    if os_id in _MAJOR_ONLY:
        return version_id.split(".", 1)[0]
    return version_id


def format_key(os_id: str, version: str, arch: str, release: str) -> str:
    return f"{os_id}/{version}/{arch}/{release}"


def parse_key(key: str) -> tuple[str, str, str, str]:
    """(id, version, arch, release) of a key; ValueError when it is not four non-empty parts."""
    parts = key.split("/")
    if len(parts) != 4 or not all(parts):
        raise ValueError(f"{key!r} is not a key <id>/<version>/<arch>/<release>")
    return parts[0], parts[1], parts[2], parts[3]


def valid_key_part(part: str) -> bool:
    """Whether a key part can be a path component of an archive (no traversal, no separators)."""
    return bool(part) and not part.startswith(".") and not any(c in part for c in "/\0\n")


def _number_after(text: str, prefix: str, before: str = "") -> str:
    """Digits right after the first `prefix` that is followed by a digit (and, when `before`
    is given, preceded by one of its characters); "" when there is none."""
    start = 0
    while True:
        at = text.find(prefix, start)
        if at < 0:
            return ""
        start = at + 1
        if before and (at == 0 or text[at - 1] not in before):
            continue
        end = at + len(prefix)
        digits_end = end
        while digits_end < len(text) and "0" <= text[digits_end] <= "9":
            digits_end += 1
        if digits_end > end:
            return text[end:digits_end]


def _flavour(release: str) -> str:
    """The flavour of a Debian/Ubuntu style release `X.Y.Z-ABI-flavour` with a numeric ABI."""
    dash = release.find("-")
    if dash < 0:
        return ""
    rest = release[dash + 1:]
    abi_end = rest.find("-")
    if abi_end <= 0 or not all("0" <= c <= "9" for c in rest[:abi_end]):
        return ""
    return rest[abi_end + 1:]


@dataclass(frozen=True, kw_only=True)
class Markers:
    """What a kernel release string says about the distro that built it."""

    ids: tuple[str, ...] = ()  # empty: any id
    versions: tuple[str, ...] = ()  # major version numbers; empty: any


def release_markers(release: str) -> Markers:
    """Distro hints in a kernel release: `.el7`, `uek`, `.amzn2`, `+deb12`, `.fc33`, flavours.

    Several distros often carry the very same release (CentOS, RHEL and OL RHCK share
    `3.10.0-1160.el7.x86_64`), so these only narrow the candidates; they never pick alone.
    """
    ids: tuple[str, ...] = ()
    versions: tuple[str, ...] = ()
    el = _number_after(release, ".el")
    if el:
        versions = (el,)
    if "uek" in release:  # Unbreakable Enterprise Kernel: Oracle Linux only
        ids = ("ol",)
    if not el and not ids:
        if amzn := _number_after(release, ".amzn"):
            ids, versions = ("amzn",), (("1", "2018") if amzn == "1" else (amzn,))
        elif deb := _number_after(release, "deb", ".+~"):
            ids, versions = ("debian",), (deb,)
        elif fc := _number_after(release, ".fc"):
            ids, versions = ("fedora",), (fc,)
        else:
            flavour = _flavour(release)
            base = flavour
            for suffix in ("-64k", "-lpae", "-fde"):
                base = base.removesuffix(suffix)
            if base in _UBUNTU_FLAVOURS:
                ids = ("ubuntu",)
            elif flavour in _DEBIAN_FLAVOURS:
                ids = ("debian",)
    return Markers(ids=ids, versions=versions)


class LookupFailure(Exception):
    """No unique embedded kernel: kind is "arch", "miss" or "ambiguous"."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True, kw_only=True)
class Lookup:
    """A successful lookup: the payload key and which rule found it."""

    key: str
    via: str  # "distro" (rule 3) or "release" (rule 4)
    tried: tuple[str, ...] = field(default=())  # distro keys tried before the hit


def _major(version: str) -> str:
    return version.split(".", 1)[0]


def _part(key: str, n: int) -> str:
    # A corrupt payload may hold keys with fewer parts: they must not crash the lookup.
    parts = key.split("/")
    return parts[n] if n < len(parts) else ""


def lookup(entries: Mapping[str, int] | Sequence[str], *, arch: str, os_release: str,
           machine: str, release: str, override_env: str = "BTFGEN_BTF_FILE") -> Lookup:
    """Rules 3 to 5 of the runtime lookup, over the keys of one arch's payload.

    `entries` maps key -> blob number (entries sharing a blob have identical BTF); a plain
    sequence of keys counts every key as its own blob. `arch` is the payload's btfhub arch.
    Raises LookupFailure with the same kind and message as the generated Go code.
    """
    blob_of: dict[str, int] = (dict(entries) if isinstance(entries, Mapping)
                               else {k: i for i, k in enumerate(entries)})
    keys = sorted(blob_of, key=lambda k: k.encode())
    want_arch = btfhub_arch(machine)
    if want_arch is None or want_arch != arch:
        if not arch:
            raise LookupFailure("arch", f"no embedded BTF for machine {machine}: this binary "
                               "was built for a GOARCH gobtfgen does not embed (amd64, arm64); "
                               f"set {override_env} to a BTF file")
        shown = f"{machine} ({want_arch})" if want_arch and want_arch != machine else machine
        raise LookupFailure("arch", f"no embedded BTF for machine {shown}: this binary carries "
                           f"{arch} kernels only; build it for that machine's GOARCH or set "
                           f"{override_env} to a BTF file")
    osr = OSRelease.parse(os_release)
    versions = version_candidates(osr.id, osr.version_id)
    tried: list[str] = []
    if osr.id and valid_key_part(osr.id) and valid_key_part(release):
        for version in versions:
            key = format_key(osr.id, version, arch, release)
            tried.append(key)
            if key in blob_of:
                return Lookup(key=key, via="distro", tried=tuple(tried))

    cands = [k for k in keys if k.rsplit("/", 1)[-1] == release]
    if cands:
        cands = _narrow(cands, release, osr, versions)
        if len({blob_of[k] for k in cands}) == 1:
            return Lookup(key=cands[0], via="release", tried=tuple(tried))
        shown = ", ".join(cands[:5]) + (f" and {len(cands) - 5} more" if len(cands) > 5 else "")
        raise LookupFailure("ambiguous", f"kernel {release} ({arch}) matches {len(cands)} "
                           f"embedded kernels with different BTF ({shown}) and neither "
                           f"os-release ({_describe(osr)}) nor the release string picks one; "
                           f"set {override_env} to the right BTF file")
    raise LookupFailure("miss", f"no embedded BTF for {_describe(osr)} {arch} kernel {release}: "
                       f"tried {', '.join(tried) if tried else 'no distro key'} and the release "
                       f"across all {len(keys)} {arch} kernels this binary carries; for a custom "
                       "kernel add its BTF with `gobtfgen archive add` and regenerate, or set "
                       f"{override_env} to a BTF file")


def _describe(osr: OSRelease) -> str:
    if not osr.id:
        return "unknown distro (no ID in os-release)"
    return f"{osr.id} {osr.version_id}" if osr.version_id else f"{osr.id} (no VERSION_ID)"


def _keep(cands: list[str], pred: Callable[[str], bool]) -> list[str]:
    # A narrowing step that would leave nothing does not apply to this kernel: skip it.
    kept = [k for k in cands if pred(k)]
    return kept or cands


def _narrow(cands: list[str], release: str, osr: OSRelease, versions: list[str]) -> list[str]:
    """Rule 4's tie-breakers, in order: release markers, same ID, ID_LIKE, VERSION_ID."""
    markers = release_markers(release)
    if markers.ids:
        cands = _keep(cands, lambda k: _part(k, 0) in markers.ids)
    if markers.versions:
        cands = _keep(cands, lambda k: _major(_part(k, 1)) in markers.versions)
    if osr.id:
        cands = _keep(cands, lambda k: _part(k, 0) == osr.id)
    for like in osr.id_like:
        kept = [k for k in cands if _part(k, 0) == like]
        if kept:
            cands = kept
            break
    if versions:
        cands = _keep(cands, lambda k: _part(k, 1) in versions)
    return cands
