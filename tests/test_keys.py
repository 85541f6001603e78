"""gobtfgen.keys: every shared vector through the Python lookup, plus the pieces on their own.
tests/test_go_runtime.py runs the same vectors through the generated Go code."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gobtfgen import keys
from tests import lookup_vectors

VECTORS = lookup_vectors.load()


@pytest.mark.parametrize("vector", VECTORS["vectors"], ids=lookup_vectors.ids(VECTORS))
def test_vector(vector: dict[str, Any]) -> None:
    arch = keys.btfhub_arch(vector["machine"]) or "x86_64"
    entries = lookup_vectors.blob_ids(VECTORS, arch)
    text = lookup_vectors.osrelease_text(VECTORS, vector)
    expect = vector["expect"]
    if "error" in expect:
        with pytest.raises(keys.LookupFailure) as info:
            keys.lookup(entries, arch=arch, os_release=text, machine=vector["machine"],
                        release=vector["release"])
        assert info.value.kind == expect["error"]
        for part in expect["contains"]:
            assert part in str(info.value)
    else:
        hit = keys.lookup(entries, arch=arch, os_release=text, machine=vector["machine"],
                          release=vector["release"])
        assert (hit.key, hit.via) == (expect["key"], expect["via"])
    if "parsed" in vector:
        osr = keys.OSRelease.parse(text)
        want = vector["parsed"]
        assert (osr.id, osr.version_id, list(osr.id_like)) == (
            want["id"], want["version_id"], want["id_like"])
        if "pretty_name" in want:
            assert osr.pretty_name == want["pretty_name"]


def test_vectors_cover_the_issue() -> None:
    """The distros, versions and broken files issue 3 asks the vectors to hold."""
    names = " ".join(lookup_vectors.ids(VECTORS))
    for needle in ["ubuntu 16.04", "ubuntu 18.04", "ubuntu 20.04", "aws", "azure", "gcp", "gke",
                   "debian 9", "debian 10", "centos 7", "centos 8", "rhel 7.", "rhel 8.",
                   "ol 7.9 rhck", "ol 7.9 uek", "ol 8.5 rhck", "ol 8.5 uek", "amazon linux 1",
                   "amazon linux 2", "sles 12 sp3", "sles 12 sp5", "sles 15", "fedora 29",
                   "fedora 34", "rocky", "almalinux", "centos stream", "pop!_os", "mint",
                   "no os-release", "empty", "without ID", "CRLF", "comments", "unterminated"]:
        assert needle in names, needle
    machines = {v["machine"] for v in VECTORS["vectors"]}
    assert {"x86_64", "aarch64"} <= machines


@pytest.mark.parametrize(("raw", "value"), [
    ('"centos"', "centos"), ("'ol'", "ol"), ("ubuntu", "ubuntu"), ('"7 (Core)"', "7 (Core)"),
    ("ubuntu # comment", "ubuntu"), ("r\\hel", "rhel"),
    ('"a\\"b\\\\c\\$d\\`e\\x"', 'a"b\\c$d`e\\x'),
    ("'a\\b'", "a\\b"), ('"unterminated', "unterminated"), ("'also", "also"), ("", ""),
    ('"x"y\'z\'', "xyz"), ("trailing\\", "trailing"), ('"spaces kept"  ', "spaces kept"),
])
def test_unquote(raw: str, value: str) -> None:
    assert keys.unquote(raw) == value


@pytest.mark.parametrize(("os_id", "version_id", "want"), [
    ("rhel", "8.4", ["8.4", "8"]), ("ol", "7.9", ["7.9", "7"]), ("sles", "15.3", ["15.3", "15"]),
    ("amzn", "2018.03", ["2018.03", "2018", "1"]), ("amzn", "2", ["2"]),
    ("amzn", "2023", ["2023"]), ("ubuntu", "20.04", ["20.04", "20"]), ("debian", "10", ["10"]),
    ("centos", "", []), ("x", "a/b", []), ("alpine", "3.14.2", ["3.14.2", "3"]),
    ("amzn", "2010.09", ["2010.09", "2010"]),
])
def test_version_candidates(os_id: str, version_id: str, want: list[str]) -> None:
    assert keys.version_candidates(os_id, version_id) == want


@pytest.mark.parametrize(("os_id", "version_id", "want"), [
    ("rhel", "8.4", "8"), ("ol", "7.9", "7"), ("amzn", "2018.03", "2018"), ("amzn", "2", "2"),
    ("sles", "15.3", "15.3"), ("ubuntu", "18.04", "18.04"), ("debian", "12", "12"),
    ("fedora", "34", "34"), ("arch", "rolling", "rolling"),
])
def test_archive_version(os_id: str, version_id: str, want: str) -> None:
    assert keys.archive_version(os_id, version_id) == want


@pytest.mark.parametrize(("machine", "arch"), [
    ("x86_64", "x86_64"), ("amd64", "x86_64"), ("aarch64", "arm64"), ("arm64", "arm64"),
    ("armv7l", None), ("s390x", None), ("AARCH64", None), ("", None),
])
def test_btfhub_arch(machine: str, arch: str | None) -> None:
    assert keys.btfhub_arch(machine) == arch


@pytest.mark.parametrize(("release", "ids", "versions"), [
    ("3.10.0-1160.el7.x86_64", (), ("7",)),
    ("4.18.0-348.7.1.el8_5.x86_64", (), ("8",)),
    ("4.14.35-2047.510.5.5.el7uek.x86_64", ("ol",), ("7",)),
    ("4.14.106-79.86.amzn1.x86_64", ("amzn",), ("1", "2018")),
    ("5.10.50-44.132.amzn2.aarch64", ("amzn",), ("2",)),
    ("6.1.21-1.45.amzn2023.x86_64", ("amzn",), ("2023",)),
    ("5.10.0-0.deb10.16-amd64", ("debian",), ("10",)),
    ("6.12.117+deb12-cloud-amd64", ("debian",), ("12",)),
    ("5.8.15-301.fc33.x86_64", ("fedora",), ("33",)),
    ("5.4.0-1029-aws", ("ubuntu",), ()), ("5.4.0-26-generic-64k", ("ubuntu",), ()),
    ("4.19.0-17-cloud-amd64", ("debian",), ()), ("5.3.18-57-default", (), ()),
    ("5.10.0-foo.elephant", (), ()), ("debian10", (), ()), ("", (), ()),
])
def test_release_markers(release: str, ids: tuple[str, ...], versions: tuple[str, ...]) -> None:
    assert keys.release_markers(release) == keys.Markers(ids=ids, versions=versions)


def test_key_round_trip_and_rejects() -> None:
    key = keys.format_key("ubuntu", "20.04", "arm64", "5.4.0-1029-aws")
    assert keys.parse_key(key) == ("ubuntu", "20.04", "arm64", "5.4.0-1029-aws")
    for bad in ["a/b/c", "a/b/c/d/e", "a//c/d", ""]:
        with pytest.raises(ValueError, match="not a key"):
            keys.parse_key(bad)
    for part in ["..", ".hidden", "a/b", "", "a\nb", "a\0"]:
        assert not keys.valid_key_part(part)


def test_lookup_prefers_exact_version_then_major() -> None:
    entries = ["sles/15/x86_64/r", "sles/15.3/x86_64/r"]
    hit = keys.lookup(entries, arch="x86_64", os_release='ID="sles"\nVERSION_ID="15.3"\n',
                      machine="x86_64", release="r")
    assert (hit.key, hit.tried) == ("sles/15.3/x86_64/r", ("sles/15.3/x86_64/r",))
    hit = keys.lookup(entries[:1], arch="x86_64", os_release='ID="sles"\nVERSION_ID="15.3"\n',
                      machine="x86_64", release="r")
    assert hit.key == "sles/15/x86_64/r" and hit.via == "distro"


def test_lookup_without_embedded_arch() -> None:
    with pytest.raises(keys.LookupFailure, match="GOARCH gobtfgen does not embed") as info:
        keys.lookup([], arch="", os_release="", machine="riscv64", release="6.1")
    assert info.value.kind == "arch"


def test_ambiguous_lists_at_most_five() -> None:
    entries = [f"d{i}/1/x86_64/r" for i in range(8)]
    with pytest.raises(keys.LookupFailure, match="and 3 more"):
        keys.lookup(entries, arch="x86_64", os_release="", machine="x86_64", release="r")


@given(st.text(alphabet=st.sampled_from(list("ID=VERSION_\"'\\ \t\r\n#.abc/é")), max_size=200),
       st.text(max_size=40), st.sampled_from(["x86_64", "aarch64", "ppc64le", ""]))
def test_lookup_never_crashes(text: str, release: str, machine: str) -> None:
    osr = keys.OSRelease.parse(text)
    assert osr.id == keys.ascii_lower(osr.id)
    entries = lookup_vectors.blob_ids(VECTORS, "x86_64")
    try:
        hit = keys.lookup(entries, arch="x86_64", os_release=text, machine=machine,
                          release=release)
    except keys.LookupFailure as exc:
        assert exc.kind in ("arch", "miss", "ambiguous")
    else:
        assert keys.parse_key(hit.key)[3] == release
