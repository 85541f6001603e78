"""The generated Go runtime, for real: render it, pack payloads from the shared vectors, build
a temporary module against cilium/ebpf and run gofmt, go vet, the Go tests (every vector),
short fuzz runs, and the same tests for arm64 and for a GOARCH without payload under qemu.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from gobtfgen import hostinfo, keys, render
from gobtfgen.pack import pack, unpack
from gobtfgen.targets import go
from tests.gomod import NEWEST_EBPF, OLDEST_EBPF, find_go, make_module, run_go
from tests.lookup_vectors import VECTORS, blobs, load
from tests.payloadcases import hardening_cases, mixed
from tests.tinybtf import label, tiny_btf

GOTEST = Path(__file__).resolve().parent / "gotest"
PACKAGE = "btfgen"
ENV_PREFIX = "GOBTFGENTEST"  # not the default: proves --env-prefix reaches the Go code

pytestmark = [
    pytest.mark.tools,
    pytest.mark.skipif(find_go() is None,
                       reason="go not found: install Go (go.dev) or put it on PATH"),
]


def render_package(dest: Path, *, package: str = PACKAGE, env_prefix: str = ENV_PREFIX) -> None:
    for name, text in go.render_go_files(
            go.go_context(package=package, env_prefix=env_prefix)).items():
        (dest / name).write_text(text)


def copy_go_tests(dest: Path, package: str = PACKAGE) -> None:
    for src in sorted(GOTEST.glob("*_test.go")):
        text = src.read_text().replace("package btfgen\n", f"package {package}\n", 1)
        (dest / src.name).write_text(text)
    corpus = GOTEST / "testdata" / "fuzz"
    if corpus.is_dir():
        shutil.copytree(corpus, dest / "testdata" / "fuzz", dirs_exist_ok=True)


def make_vmlinux_elf(dest: Path) -> None:
    """A vmlinux-like ELF holding this host's BTF in .BTF, for the override test."""
    btf = Path("/sys/kernel/btf/vmlinux")
    objcopy, clang = shutil.which("objcopy"), shutil.which("clang")
    if not (btf.exists() and objcopy and clang):
        return  # TestOverride skips its ELF part and says why
    empty = dest / "empty.o"
    subprocess.run([clang, "-c", "-x", "c", "/dev/null", "-o", str(empty)], check=True)
    raw = dest / "vmlinux.btf"
    raw.write_bytes(btf.read_bytes())
    subprocess.run([objcopy, "--add-section", f".BTF={raw}", "--set-section-flags",
                    ".BTF=alloc,readonly", str(empty), str(dest / "vmlinux.elf")], check=True)
    empty.unlink()
    raw.unlink()


def real_host_key() -> str | None:
    """This machine's distro key as gobtfgen host computes it (None when it has none)."""
    info = hostinfo.gather()
    return info.candidates[0] if info.candidates else None


def gbs1_trailer(full_sums: dict[str, str]) -> bytes:
    """The full-BTF trailer gobtfgen wrote before "GBS2": per key sorted, u16 key_len, key,
    u64 size, the whole sha256; then u32 n, u32 body_len, "GBS1"."""
    body = b"".join(struct.pack("<H", len(k.encode())) + k.encode()
                    + struct.pack("<Q", int(full_sums[k].split(":")[0]))
                    + bytes.fromhex(full_sums[k].split(":")[1]) for k in sorted(full_sums))
    return body + struct.pack("<II", len(full_sums), len(body)) + b"GBS1"


def build_module(dest: Path, ebpf_version: str) -> Path:
    vectors = load()
    arch_blobs = blobs(vectors)
    host_key = real_host_key()
    if host_key:
        # The Go runtime must find on this real host the key the Python side computes.
        arch_blobs[keys.parse_key(host_key)[2]][host_key] = tiny_btf(label(host_key))
    files: dict[str, str | bytes] = {}
    # The "full BTF" every key's trailer checksum names (TestPreferEmbedded compares files
    # with it): real BTF bytes, not parsed by the runtime, only streamed.
    full = b"".join(tiny_btf(label(k)) for by_key in arch_blobs.values() for k in by_key)
    files["testdata/full.btf"] = full
    for arch in render.ARCHES:
        payload, _ = pack(arch, arch_blobs.get(arch, {}))
        sums = {k: f"{len(full)}:{hashlib.sha256(full).hexdigest()}"
                for k in arch_blobs.get(arch, {})}
        files[go.payload_file(arch)] = payload + go.fullsum_trailer(payload, sums)
        # The same payload with the trailer an older gobtfgen wrote: ignored by this code
        # (TestFullSumTrailerDamage).
        files[f"testdata/gbs1_{arch}.payload"] = payload + gbs1_trailer(sums)
    files["testdata/lookup.json"] = VECTORS.read_text()
    # A payload of the old format (what gobtfgen wrote before payload version 2), for the
    # regenerate error (TestOldPayloadFormat).
    files["testdata/v1.payload"] = pack("x86_64", arch_blobs.get("x86_64", {}), version=1)[0]
    # Every way version 2 stores a kernel, for TestMixedPayload: shared, derived and fresh
    # nodes over several groups and chains of bases, and kernels stored whole.
    mixed_entries = mixed("arm64")
    mixed_payload, mixed_stats = pack("arm64", mixed_entries, group_target=200)
    assert mixed_stats.raw_kernels == 3
    files["testdata/mixed.payload"] = mixed_payload
    files["testdata/mixed.json"] = json.dumps(
        {k: hashlib.sha256(b).hexdigest() for k, b in mixed_entries.items()}, indent=1,
        sort_keys=True)
    # Payloads that each break one hardening rule, for TestHardening (the C and Rust readers
    # read the same ones: tests/test_c_runtime.py, tests/test_rust_runtime.py).
    cases = hardening_cases()
    for name, (payload, _) in cases.items():
        files[f"testdata/hardening/{name}.payload"] = payload
    files["testdata/hardening.json"] = json.dumps(
        {name: error or "" for name, (_, error) in cases.items()}, indent=1, sort_keys=True)
    files["testdata/blobs.json"] = json.dumps(
        {k: hashlib.sha256(b).hexdigest() for by_key in arch_blobs.values()
         for k, b in by_key.items()}, indent=1, sort_keys=True)
    make_module(dest, ebpf_version=ebpf_version, files=files)
    render_package(dest)
    copy_go_tests(dest)
    make_vmlinux_elf(dest / "testdata")
    return dest


@pytest.fixture(scope="module")
def module(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_module(tmp_path_factory.mktemp("gomod"), NEWEST_EBPF)


def test_generated_code_is_gofmt_clean_and_deterministic(module: Path) -> None:
    gofmt = Path(find_go() or "go").with_name("gofmt")
    out = subprocess.run([str(gofmt) if gofmt.exists() else "gofmt", "-l", "."], cwd=module,
                         capture_output=True, text=True, check=True).stdout
    assert out == "", f"not gofmt-clean: {out}"
    ctx = go.go_context(package=PACKAGE, env_prefix=ENV_PREFIX)
    first, second = go.render_go_files(ctx), go.render_go_files(ctx)
    assert first == second
    for name, text in first.items():
        assert text.startswith(f"// {render.GENERATED_MARK}\n"), name
        assert str(module) not in text and "/work/" not in text and "/tmp/" not in text
        lines = text.splitlines()
        if name != "btfgen.go":
            assert lines[1].startswith("//go:build "), name
        # Every unexported top-level identifier carries the btfgen prefix: the code lands in
        # the user's package, often main.
        idents = re.findall(r"^(?:func|type|var|const) ([a-z]\w*)", text, re.M)
        for block in re.findall(r"^(?:var|const) \(\n(.*?)^\)", text, re.M | re.S):
            idents += re.findall(r"^\t([a-z]\w*)", block, re.M)
        assert idents
        for ident in idents:
            assert ident.startswith("btfgen"), (name, ident)
    assert f'"{ENV_PREFIX}_BTF_FILE"' in first["btfgen.go"]


def test_go_vet(module: Path) -> None:
    run_go(["vet", "./..."], cwd=module)
    run_go(["vet", "./..."], cwd=module, env={"GOARCH": "arm64"})
    run_go(["vet", "./..."], cwd=module, env={"GOARCH": "riscv64"})


def test_go_tests_native_arch(module: Path) -> None:
    proc = run_go(["test", "-count=1", "-v", "./..."], cwd=module,
                  env={"BTFGEN_REAL_HOST_KEY": real_host_key() or ""})
    assert "--- PASS: TestVectors " in proc.stdout
    assert "--- PASS: TestPreferEmbedded " in proc.stdout
    assert "--- PASS: TestFullSumOfRejectsDamage " in proc.stdout
    assert "--- PASS: TestFullSumTrailerDamage " in proc.stdout
    assert "--- PASS: TestFileMatchesComparesTheHashPrefix " in proc.stdout
    assert "--- PASS: TestOldPayloadFormat " in proc.stdout
    assert "--- PASS: TestMixedPayload " in proc.stdout
    assert "--- PASS: TestHardening " in proc.stdout
    assert "--- PASS: TestCorruptPayloads " in proc.stdout
    assert "--- FAIL" not in proc.stdout
    if real_host_key():
        assert "--- PASS: TestRealHost " in proc.stdout
    # Every vector ran through the lookup (subtests are named after vectors).
    names = {v["name"] for v in load()["vectors"]}
    passed = proc.stdout.count("    --- PASS: TestVectors/")
    assert passed == len(names), f"{passed} vectors passed of {len(names)}"


def test_go_tests_oldest_ebpf(tmp_path: Path) -> None:
    """The generated code uses only btf.LoadSpecFromReader and *btf.Spec, so the oldest
    cilium/ebpf we support runs the same tests."""
    mod = build_module(tmp_path, OLDEST_EBPF)
    run_go(["vet", "./..."], cwd=mod)
    proc = run_go(["test", "-count=1", "./..."], cwd=mod)
    assert proc.stdout.startswith("ok"), proc.stdout


@pytest.mark.skipif(shutil.which("qemu-aarch64") is None,
                    reason="qemu-aarch64 not found: install qemu-user to run the arm64 build")
def test_go_tests_arm64_under_qemu(module: Path) -> None:
    exe = shutil.which("qemu-aarch64")
    proc = run_go(["test", "-count=1", "-v", "-exec", str(exe), "./..."], cwd=module,
                  env={"GOARCH": "arm64"})
    assert "--- PASS: TestVectorsFindBTF " in proc.stdout
    assert "--- FAIL" not in proc.stdout


@pytest.mark.skipif(shutil.which("qemu-riscv64") is None,
                    reason="qemu-riscv64 not found: install qemu-user to run a GOARCH gobtfgen "
                           "does not embed")
def test_go_tests_unembedded_arch_under_qemu(module: Path) -> None:
    exe = shutil.which("qemu-riscv64")
    proc = run_go(["test", "-count=1", "-v", "-exec", str(exe), "./..."], cwd=module,
                  env={"GOARCH": "riscv64"})
    assert "--- PASS: TestVectorsLookupBTF " in proc.stdout
    assert "--- FAIL" not in proc.stdout


# Inputs per fuzz target: a few seconds each on this project's 2-core machines, where under
# load FuzzPayload runs 20,000-90,000 inputs a second and FuzzOSRelease 15,000-30,000. A count
# rather than a duration: with -fuzztime=10s, Go before 1.27 can report a worker stopped at the
# deadline as a failure ("context deadline exceeded", golang/go#75804), which FuzzOSRelease met
# on a loaded machine.
FUZZ_INPUTS = {"FuzzPayload": 100_000, "FuzzOSRelease": 60_000}


@pytest.mark.parametrize("target", sorted(FUZZ_INPUTS))
def test_go_fuzz_short(module: Path, target: str) -> None:
    run_go(["test", "-run=^$", f"-fuzz=^{target}$", f"-fuzztime={FUZZ_INPUTS[target]}x",
            "-parallel=2", "."], cwd=module, timeout=300)


def _random_cases(n: int) -> list[dict[str, str]]:
    """os-release texts and releases built from the pieces that make parsers disagree, and
    lookups of this arch's embedded releases from random os-release texts."""
    rng = random.Random(20260101)
    vectors = load()
    arch = keys.btfhub_arch(os.uname().machine) or "x86_64"
    releases = sorted({keys.parse_key(k)[3] for k in vectors["payload"].get(arch, [])})
    texts = list(vectors["os_releases"].values())
    names = ["ID", "VERSION_ID", "ID_LIKE", "PRETTY_NAME", "id", "_X", "9ID", "ID-X", ""]
    pieces = ['"', "'", "\\", " ", "\t", "#", "=", "\r", "\n", "ubuntu", "RHEL", "8.4", "2018.03",
              "amzn", ".", "/", "é", "\x00", "\x1c", "\u00a0", "fedora centos", "$", "`"]
    rel_pieces = [".el", "7", "8_5", "uek", ".amzn", "1", "2", "deb", "+", "~", "10", ".fc", "33",
                  "-", "4.19.0", "generic", "aws", "amd64", "cloud-", "64k", "x86_64", "."]
    cases = []
    for _ in range(n):
        lines = []
        for _ in range(rng.randint(0, 6)):
            value = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 5)))
            lines.append(rng.choice(["", " ", "\t", "#"]) + rng.choice(names) + "=" + value)
        text = rng.choice(["\n", "\r\n"]).join(lines)
        release = "".join(rng.choice(rel_pieces) for _ in range(rng.randint(0, 7)))
        machine = rng.choice(["x86_64", "aarch64", "arm64", "amd64", "s390x", "AARCH64", ""])
        cases.append({"os_release": text, "release": release, "machine": machine})
        # A real distro's os-release with a release this arch embeds: hits, misses and
        # ambiguities of rule 4 with their full error messages.
        cases.append({"os_release": rng.choice(texts + [text]), "release": rng.choice(releases),
                      "machine": rng.choice(["x86_64", "amd64"] if arch == "x86_64"
                                            else ["aarch64", "arm64"])})
    cases += [{"os_release": t, "release": v["release"], "machine": v["machine"]}
              for t in vectors["os_releases"].values() for v in vectors["vectors"][:3]]
    return cases


def test_go_and_python_parse_the_same(module: Path, tmp_path: Path) -> None:
    """Differential test: the Go runtime and gobtfgen/keys.py agree on random inputs."""
    cases = _random_cases(3000)
    path = tmp_path / "cases.json"
    path.write_text(json.dumps(cases))
    run_go(["test", "-count=1", "-run=^TestParseDifferential$", "."], cwd=module,
           env={"BTFGEN_PARSE_CASES": str(path)})
    go_results = json.loads((tmp_path / "cases.json.go.json").read_text())
    assert len(go_results) == len(cases)
    arch = keys.btfhub_arch(os.uname().machine) or "x86_64"
    # The very payload the Go side reads (it also holds this host's key).
    _, by_key = unpack((module / go.payload_file(arch)).read_bytes())
    ids: dict[bytes, int] = {}
    entries = {k: ids.setdefault(b, len(ids)) for k, b in by_key.items()}
    outcomes = {"hit": 0, "miss": 0, "ambiguous": 0, "arch": 0}
    for case, got in zip(cases, go_results, strict=True):
        osr = keys.OSRelease.parse(case["os_release"])
        markers = keys.release_markers(case["release"])
        want = {
            "fields": keys.parse_os_release(case["os_release"]),
            "id": osr.id, "version_id": osr.version_id, "id_like": list(osr.id_like),
            "versions": keys.version_candidates(osr.id, osr.version_id),
            "marker_ids": list(markers.ids), "marker_versions": list(markers.versions),
            "arch": keys.btfhub_arch(case["machine"]) or "",
            "key": "", "via": "", "error": "", "kind": "",
        }
        try:
            hit = keys.lookup(entries, arch=arch, os_release=case["os_release"],
                              machine=case["machine"], release=case["release"],
                              override_env=f"{ENV_PREFIX}_BTF_FILE")
            want.update(key=hit.key, via=hit.via)
            outcomes["hit"] += 1
        except keys.LookupFailure as exc:
            want.update(error=str(exc), kind=exc.kind)
            outcomes[exc.kind] += 1
        got = {k: (v if v is not None else ([] if k != "fields" else {}))
               for k, v in got.items()}
        assert got == want, case
    assert all(outcomes.values()), outcomes  # every outcome was compared, messages included
    print(f"compared {len(cases)} cases with Go: {outcomes}")
