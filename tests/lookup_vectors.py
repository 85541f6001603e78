"""The shared lookup vectors (tests/vectors/lookup.json) and the payloads built from them.

The Go tests (tests/gotest) read the same file; keep osrelease_text and the blob rule in step
with their Go versions (testVectors.osReleaseText, testVectors.label).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

from gobtfgen import keys
from tests.tinybtf import label, tiny_btf

VECTORS = Path(__file__).resolve().parent / "vectors" / "lookup.json"


def load() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(VECTORS.read_text())
    return data


def blobs(vectors: dict[str, Any]) -> dict[str, dict[str, bytes]]:
    """{arch: {key: BTF}}: one tiny BTF per key, shared within a same_btf group."""
    group_of = {k: g[0] for g in vectors["same_btf"] for k in g}
    return {arch: {k: tiny_btf(label(group_of.get(k, k))) for k in ks}
            for arch, ks in vectors["payload"].items()}


def blob_ids(vectors: dict[str, Any], arch: str) -> dict[str, int]:
    """{key: blob number} of one arch, as keys.lookup takes it."""
    ids: dict[bytes, int] = {}
    return {k: ids.setdefault(b, len(ids)) for k, b in blobs(vectors).get(arch, {}).items()}


def osrelease_text(vectors: dict[str, Any], vector: dict[str, Any]) -> str:
    """What the runtime reads: /etc/os-release (every link in the vectors points to
    /usr/lib/os-release), else /usr/lib/os-release, else nothing."""
    files = vector["files"]
    name = files.get("etc/os-release") or files.get("usr/lib/os-release")
    return str(vectors["os_releases"][name]) if name else ""


def make_root(vectors: dict[str, Any], vector: dict[str, Any], root: Path) -> Path:
    """A fake host root holding the vector's files and links."""
    root.mkdir(parents=True, exist_ok=True)
    for rel, name in vector["files"].items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(vectors["os_releases"][name].encode())
    for rel, target in vector.get("links", {}).items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.symlink_to(target)
    return root


def ids(vectors: dict[str, Any]) -> list[str]:
    return [v["name"] for v in vectors["vectors"]]


def vector_arch(vector: dict[str, Any]) -> str:
    """The payload a vector runs against, as in the Go tests: its own arch's; a machine btfhub
    has no arch for runs against the x86_64 payload (and must fail with an arch error)."""
    return keys.btfhub_arch(vector["machine"]) or "x86_64"


def run_find(harness: Path, tmp_path: Path, *, root: Path | None, release: str,
             native: Path | None = None, ignore_native: bool = True,
             env: dict[str, str] | None = None) -> tuple[dict[str, str], str]:
    """`harness find`: the C or Rust test harness's real-host lookup (its release, native BTF
    path and TMPDIR redirected into tmp_path, $HOST_ROOT = root); its key=value lines and stderr."""
    release_file = tmp_path / "osrelease"
    release_file.write_text(release + "\n")
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir(exist_ok=True)
    run_env = {k: v for k, v in os.environ.items() if k not in ("HOST_ROOT", "BTFGEN_BTF_FILE")}
    run_env.update({"HARNESS_RELEASE_FILE": str(release_file), "TMPDIR": str(tmpdir),
                    "HARNESS_NATIVE_PATH": str(native or tmp_path / "no-native-btf")})
    if root is not None:
        run_env["HOST_ROOT"] = str(root)
    run_env.update(env or {})
    args = [str(harness), "find"] + (["ignore-native"] if ignore_native else [])
    proc = subprocess.run(args, capture_output=True, text=True, env=run_env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    out = dict(line.split("=", 1) for line in proc.stdout.splitlines())
    return out, proc.stderr
