"""Property fuzzing (hypothesis) of every reader that takes untrusted bytes: the xz/tar reader,
the BTF header check, the object CO-RE reader and the payload reader. The only acceptable
outcome besides success is the reader's own one-line error; any other exception is a bug.
Crashes the fuzzer found are kept below as @example regression cases."""

from __future__ import annotations

import contextlib
import io
import lzma
import os
import struct
import tarfile
import zlib
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gobtfgen import pack
from gobtfgen.archive import btf_from_tar, check_btf, inflate_xz
from gobtfgen.errors import InputError
from gobtfgen.objects import core_signature
from tests.btfdata import tiny_btf

# CI runs a short budget; GOBTFGEN_FUZZ_EXAMPLES=20000 runs a long search locally.
FUZZ = settings(max_examples=int(os.environ.get("GOBTFGEN_FUZZ_EXAMPLES", "300")), deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
WHAT = Path("fuzz.btf.tar.xz")


def _tar(name: str, data: bytes) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


VALID_TAR = _tar("r.btf", tiny_btf(("int", "long", "char")))


@FUZZ
@given(st.binary(max_size=4096))
def test_inflate_xz_random_bytes(data: bytes) -> None:
    with contextlib.suppress(InputError):
        inflate_xz(data, what=WHAT, limit=1 << 20)


@FUZZ
@given(st.data())
def test_inflate_xz_mutated_stream(data: st.DataObject) -> None:
    blob = bytearray(lzma.compress(VALID_TAR))
    for _ in range(data.draw(st.integers(1, 8))):
        blob[data.draw(st.integers(0, len(blob) - 1))] = data.draw(st.integers(0, 255))
    with contextlib.suppress(InputError):
        inflate_xz(bytes(blob), what=WHAT, limit=1 << 20)


@FUZZ
@given(st.data())
def test_tar_reader_mutated(data: st.DataObject) -> None:
    blob = bytearray(VALID_TAR)
    for _ in range(data.draw(st.integers(1, 16))):
        blob[data.draw(st.integers(0, len(blob) - 1))] = data.draw(st.integers(0, 255))
    with contextlib.suppress(InputError):
        btf_from_tar(bytes(blob), what=WHAT)


@FUZZ
@given(st.binary(max_size=2048))
def test_tar_reader_random(data: bytes) -> None:
    with contextlib.suppress(InputError):
        btf_from_tar(data, what=WHAT)


@FUZZ
@given(st.binary(min_size=0, max_size=256))
def test_check_btf_random(data: bytes) -> None:
    with contextlib.suppress(InputError):
        check_btf(data, what=WHAT)


def _ext(records: list[tuple[int, int, int, int]], rec_size: int = 16) -> bytes:
    sub = struct.pack("<I", rec_size) + struct.pack("<II", 0, len(records))
    for rec in records:
        sub += struct.pack("<IIII", *rec) + bytes(rec_size - 16)
    return struct.pack("<HBBIIIIIII", 0xEB9F, 1, 0, 32, 0, 0, 0, 0, 0, len(sub)) + sub


@FUZZ
@given(st.binary(max_size=512), st.binary(max_size=512))
def test_core_signature_random(btf: bytes, ext: bytes) -> None:
    with contextlib.suppress(InputError):
        core_signature(btf, ext, little=True, what=WHAT)


@FUZZ
@given(st.lists(st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1),
                          st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1)), max_size=8),
       st.integers(0, 64))
def test_core_signature_wild_records(records: list[tuple[int, int, int, int]],
                                     rec_size: int) -> None:
    btf = tiny_btf(("int", "long"))
    with contextlib.suppress(InputError):
        core_signature(btf, _ext(records, max(rec_size, 16)), little=True, what=WHAT)


@FUZZ
@given(st.data())
def test_payload_reader_mutated(data: st.DataObject) -> None:
    payload = bytearray(pack.pack("x86_64", {"a/1/x86_64/r1": tiny_btf(("x",)),
                                             "a/1/x86_64/r2": tiny_btf(("y", "z"))})[0])
    for _ in range(data.draw(st.integers(1, 8))):
        payload[data.draw(st.integers(0, len(payload) - 1))] = data.draw(st.integers(0, 255))
    with contextlib.suppress(pack.PayloadError):
        pack.unpack(bytes(payload))


@FUZZ
@given(st.binary(max_size=1024))
def test_payload_reader_random_index(index: bytes) -> None:
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    index_c = comp.compress(index) + comp.flush()
    payload = pack.HEADER.pack(pack.MAGIC, pack.VERSION, 0, 0, len(index_c), len(index)) + index_c
    with contextlib.suppress(pack.PayloadError):
        pack.unpack(payload)


def test_regression_payload_names_not_utf8() -> None:
    # Found by test_payload_reader_mutated: a flipped byte in the index turned a key into
    # invalid UTF-8 and unpack raised UnicodeDecodeError instead of PayloadError.
    index = struct.pack("<H", 2) + b"\x8f\x80" + struct.pack("<III", 0, 0, 0)
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    index_c = comp.compress(index) + comp.flush()
    payload = pack.HEADER.pack(pack.MAGIC, pack.VERSION, 0, 0, len(index_c), len(index)) + index_c
    try:
        pack.unpack(payload)
    except pack.PayloadError as exc:
        assert "UTF-8" in str(exc)
    else:
        raise AssertionError("accepted a non-UTF-8 arch name")
