"""gobtfgen host: every shared vector on a fake host root, plus native BTF, the override
variable and this real machine."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from gobtfgen import cli, hostinfo, keys
from gobtfgen.pack import pack
from gobtfgen.targets import go
from tests import lookup_vectors

VECTORS = lookup_vectors.load()


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HOST_ROOT", "GOBTFGEN_ENV_PREFIX", "BTFGEN_BTF_FILE", "MYTOOL_BTF_FILE"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def payloads(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    out = tmp_path_factory.mktemp("payloads")
    paths = []
    for arch, by_key in lookup_vectors.blobs(VECTORS).items():
        path = out / go.payload_file(arch)
        path.write_bytes(pack(arch, by_key)[0])
        paths.append(path)
    return paths


def host_json(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, Any]]:
    code = cli.main(["host", "--json", *args])
    out = capsys.readouterr().out
    result: dict[str, Any] = json.loads(out)
    return code, result


@pytest.mark.parametrize("vector", VECTORS["vectors"], ids=lookup_vectors.ids(VECTORS))
def test_vector_on_fake_root(vector: dict[str, Any], payloads: list[Path], tmp_path: Path,
                             capsys: pytest.CaptureFixture[str]) -> None:
    root = lookup_vectors.make_root(VECTORS, vector, tmp_path / "root")
    args = ["--host-root", str(root), "--machine", vector["machine"], "--release",
            vector["release"], "--native-btf", str(tmp_path / "absent")]
    for path in payloads:
        args += ["--payload", str(path)]
    code, result = host_json(args, capsys)
    expect = vector["expect"]
    if "error" in expect:
        assert code == 1 and result["runtime"] == "error"
        assert result["error_kind"] == expect["error"]
        for part in expect["contains"]:
            assert part in result["error"]
    else:
        assert code == 0, result
        assert (result["found"], result["via"]) == (expect["key"], expect["via"])
        assert result["runtime"] == f"embedded {expect['key']}"
    if "parsed" in vector:
        assert (result["id"], result["version_id"], result["id_like"]) == (
            vector["parsed"]["id"], vector["parsed"]["version_id"], vector["parsed"]["id_like"])
    # The os-release file the command read is the one the runtime reads.
    text = lookup_vectors.osrelease_text(VECTORS, vector)
    if text or vector["files"]:
        assert result["os_release"] is not None
        assert Path(result["os_release"]).read_bytes().decode() == text
        assert Path(result["os_release"]).resolve().is_relative_to(root.resolve())
    else:
        assert result["os_release"] is None


def test_key_from_fake_root(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    vector = {"files": {"etc/os-release": "rhel-8.4"}}
    root = lookup_vectors.make_root(VECTORS, vector, tmp_path)
    code, r = host_json(["--host-root", str(root), "--machine", "aarch64", "--release",
                         "4.18.0-305.el8.aarch64", "--native-btf", str(tmp_path / "none")],
                        capsys)
    assert code == 0
    assert r["key"] == "rhel/8.4/arm64/4.18.0-305.el8.aarch64"
    assert r["candidates"] == [r["key"], "rhel/8/arm64/4.18.0-305.el8.aarch64"]
    assert (r["arch"], r["goarch"], r["native_btf"]) == ("arm64", "arm64", False)
    assert r["runtime"].startswith("embedded")
    assert r["distro"] == "Red Hat Enterprise Linux 8.4 (Ootpa)"


def test_host_root_from_env(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                            monkeypatch: pytest.MonkeyPatch) -> None:
    root = lookup_vectors.make_root(VECTORS, {"files": {"usr/lib/os-release": "sles-15.3"}},
                                    tmp_path)
    monkeypatch.setenv("HOST_ROOT", str(root))
    _, r = host_json(["--machine", "x86_64", "--release", "5.3.18-57-default"], capsys)
    assert r["key"] == "sles/15.3/x86_64/5.3.18-57-default"


def test_native_override_and_ignore(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                    monkeypatch: pytest.MonkeyPatch, payloads: list[Path]) -> None:
    root = lookup_vectors.make_root(VECTORS, {"files": {"etc/os-release": "amzn-2"}}, tmp_path)
    native = tmp_path / "vmlinux"
    native.write_bytes(b"")
    base = ["--host-root", str(root), "--machine", "x86_64", "--release",
            "5.10.50-44.132.amzn2.x86_64", "--native-btf", str(native)]
    _, r = host_json(base, capsys)
    assert (r["native_btf"], r["runtime"]) == (True, "kernel")
    _, r = host_json([*base, "--ignore-native", "--payload", str(payloads[0]),
                      "--payload", str(payloads[1])], capsys)
    assert r["runtime"] == "embedded amzn/2/x86_64/5.10.50-44.132.amzn2.x86_64"
    monkeypatch.setenv("MYTOOL_BTF_FILE", "/opt/custom.btf")
    _, r = host_json([*base, "--env-prefix", "MYTOOL"], capsys)
    assert (r["override_env"], r["runtime"]) == ("MYTOOL_BTF_FILE", "override /opt/custom.btf")


def test_payload_of_other_arch_only(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                    payloads: list[Path]) -> None:
    arm = [p for p in payloads if "arm64" in p.name]
    code = cli.main(["host", "--host-root", str(tmp_path), "--machine", "x86_64", "--release",
                     "x", "--native-btf", str(tmp_path / "no"), "--payload", str(arm[0])])
    assert code == 1
    assert "none of the --payload files holds x86_64 kernels" in capsys.readouterr().err


def test_bad_payload_is_an_input_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "btfgen_x86_64.payload"
    bad.write_bytes(b"GBTF\x01garbage")
    code = cli.main(["host", "--machine", "x86_64", "--release", "x", "--payload", str(bad)])
    assert code == 1
    assert "not a valid payload" in capsys.readouterr().err


def test_human_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = lookup_vectors.make_root(VECTORS, {"files": {"etc/os-release": "ol-7.9"}}, tmp_path)
    assert cli.main(["host", "--host-root", str(root), "--machine", "x86_64", "--release",
                     "4.14.35-2047.510.5.5.el7uek.x86_64", "--native-btf",
                     str(tmp_path / "no")]) == 0
    out = capsys.readouterr().out
    assert "key:         ol/7.9/x86_64/4.14.35-2047.510.5.5.el7uek.x86_64" in out
    assert "then ol/7/x86_64/4.14.35-2047.510.5.5.el7uek.x86_64" in out
    assert "native BTF:  no" in out
    assert "BTFGEN_BTF_FILE=(unset)" in out


def test_this_machine(capsys: pytest.CaptureFixture[str]) -> None:
    """The real host: whatever it runs, the command answers and agrees with uname."""
    code, r = host_json([], capsys)
    assert code == 0
    uname = os.uname()
    assert (r["machine"], r["release"]) == (uname.machine, uname.release)
    assert r["native_btf"] == Path(hostinfo.NATIVE_BTF).exists()
    if r["arch"] and r["id"] and r["version_id"]:
        assert r["key"] == keys.format_key(r["id"], r["version_id"], r["arch"], uname.release)
    assert r["runtime"] == ("kernel" if r["native_btf"] else
                            "embedded (pass --payload or --archive to run the lookup)")


def test_archive_lookup_dedups_identical_kernels(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """One HWE kernel filed under two Ubuntu versions is one answer; different BTF under the
    same release is ambiguous."""
    from gobtfgen.commands.archive import tar_xz
    from tests.tinybtf import tiny_btf

    archive = tmp_path / "archive"
    for key, name in [("ubuntu/18.04/x86_64/5.4.0-91-generic", "hwe"),
                      ("ubuntu/20.04/x86_64/5.4.0-91-generic", "hwe"),
                      ("centos/7/x86_64/3.10.0-1160.el7.x86_64", "centos"),
                      ("rhel/7/x86_64/3.10.0-1160.el7.x86_64", "rhel")]:
        os_id, version, arch, release = keys.parse_key(key)
        path = archive / os_id / version / arch / f"{release}.btf.tar.xz"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(tar_xz(release, tiny_btf(name)))
    base = ["--host-root", str(tmp_path / "empty"), "--machine", "x86_64",
            "--native-btf", str(tmp_path / "no"), "--archive", str(archive)]
    code, r = host_json([*base, "--release", "5.4.0-91-generic"], capsys)
    assert (code, r["found"], r["via"]) == (0, "ubuntu/18.04/x86_64/5.4.0-91-generic", "release")
    code, r = host_json([*base, "--release", "3.10.0-1160.el7.x86_64"], capsys)
    assert (code, r["error_kind"]) == (1, "ambiguous")
