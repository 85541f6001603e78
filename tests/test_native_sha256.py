"""The compiled SHA-256 (gobtfgen/_native.c, sha256) against hashlib, and the kernel digest the
kept results of `gobtfgen minimize` are named by (replay.file_sha256) with and without it."""

from __future__ import annotations

import hashlib
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gobtfgen.archive import read_kernel_btf
from gobtfgen.btf import native as native_mod
from gobtfgen.minimize import replay
from tests import realkernels

native = native_mod.native
sha_native = pytest.mark.skipif(
    native is None or native.sha256(b"") is None,
    reason="gobtfgen._native is not built, or this CPU has no SHA extensions (then hashlib "
    "hashes; the digest is the same)")


@sha_native
def test_sha256_matches_hashlib_around_block_boundaries() -> None:
    assert native is not None
    data = os.urandom(4096 + 64)
    # 55/56 and 119/120 bytes: where the padding and length take a second block
    for n in [*range(0, 200), 4095, 4096, 4097, 65536 + 55]:
        chunk = data[:n] if n <= len(data) else os.urandom(n)
        assert native.sha256(chunk) == hashlib.sha256(chunk).digest(), n
        # a view at an odd address, as the reader passes parts of a blob
        view = memoryview(b"x" + chunk)[1:]
        assert native.sha256(view) == hashlib.sha256(chunk).digest(), n


@sha_native
@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=1000))
def test_sha256_matches_hashlib_on_random_data(data: bytes) -> None:
    assert native is not None
    assert native.sha256(data) == hashlib.sha256(data).digest()


@pytest.mark.parametrize("kernel", realkernels.params()[:3])
def test_file_sha256_is_hashlibs_with_and_without_the_module(
        kernel: realkernels.RealKernel, monkeypatch: pytest.MonkeyPatch) -> None:
    raw = read_kernel_btf(kernel.path)
    want = hashlib.sha256(raw).hexdigest()
    assert replay.file_sha256(raw) == want
    monkeypatch.setattr(native_mod, "native", None)  # GOBTFGEN_NO_NATIVE=1, or not built
    assert replay.file_sha256(raw) == want
