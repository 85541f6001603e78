"""The shared lookup vectors (tests/vectors/lookup.json) and the payloads built from them.

The Go tests (tests/gotest) read the same file; keep osrelease_text and the blob rule in step
with their Go versions (testVectors.osReleaseText, testVectors.label).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

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
