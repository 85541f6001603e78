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

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gobtfgen import pack
from gobtfgen.archive import btf_from_tar, check_btf, inflate_xz
from gobtfgen.errors import InputError
from gobtfgen.objects import core_signature
from tests.btfdata import tiny_btf
from tests.payloadcases import kernel

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


def _payload_entries() -> dict[str, bytes]:
    # Two kernels of one family and an odd one, tiny BTFs in bpftool's layout: every part of
    # version 2 is there (shared nodes, a derived node, a base, fresh nodes, anchors).
    return {"a/1/x86_64/r1": kernel(9000, 1300), "a/1/x86_64/r2": kernel(9064, 1301),
            "a/1/x86_64/r3": kernel(9500, 1300, extra=True), "a/1/x86_64/r4": tiny_btf(("y",))}


PAYLOADS = {version: pack.pack("x86_64", _payload_entries(), version=version)[0]
            for version in pack.VERSIONS}


def _deflate(data: bytes) -> bytes:
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    return comp.compress(data) + comp.flush()


@FUZZ
@given(st.data(), st.sampled_from(pack.VERSIONS))
def test_payload_reader_mutated(data: st.DataObject, version: int) -> None:
    payload = bytearray(PAYLOADS[version])
    for _ in range(data.draw(st.integers(1, 8))):
        payload[data.draw(st.integers(0, len(payload) - 1))] = data.draw(st.integers(0, 255))
    with contextlib.suppress(pack.PayloadError):
        pack.unpack(bytes(payload))


def _v2_parts(payload: bytes) -> tuple[bytearray, list[bytearray]]:
    """The inflated index (without its crc) and groups of a version 2 payload."""
    _, _, _, _, clen, _ = pack.HEADER.unpack_from(payload)
    index = zlib.decompress(payload[16:16 + clen], -15)
    x = pack.Payload2(payload, 16 + clen, index)
    return bytearray(index[:-4]), [bytearray(x.group(g)) for g in range(len(x.groups))]


def _v2_payload(index: bytes, groups: list[bytes]) -> bytes:
    """A version 2 payload of an (edited) inflated index and groups: valid DEFLATE and a valid
    index crc, so the edits reach the decoding behind them. Group rows keep their columns'
    lengths; only offset and clen are rewritten."""
    try:
        x = pack.Payload2(b"\0" * (1 << 24), 0, index + struct.pack("<I", zlib.crc32(index)))
    except pack.PayloadError:
        rows = None  # the edit broke the group rows: keep them as they are
    else:
        rows = x.groups
    data = b"".join(_deflate(g) for g in groups)
    if rows is not None and len(rows) == len(groups):
        c = pack._Cursor(index, "index")
        c.take(c.uvarint())
        for _ in range(c.uvarint()):
            c.take(c.uvarint())
            c.take(c.uvarint())
        c.uvarint()
        start = c.pos
        new_rows, off = bytearray(), 0
        for row, g in zip(rows, groups, strict=True):
            clen = len(_deflate(g))
            new_rows += b"".join(pack._uvarint(v) for v in (off, clen, row.nodes, row.strings,
                                                            *row.lengths))
            off += clen
        end = start
        for _ in rows:
            for _ in range(9):
                while index[end] & 0x80:
                    end += 1
                end += 1
        index = index[:start] + bytes(new_rows) + index[end:]
    index += struct.pack("<I", zlib.crc32(index))
    index_c = _deflate(index)
    return pack.HEADER.pack(pack.MAGIC, 2, 0, 0, len(index_c), len(index)) + index_c + data


@FUZZ
@given(st.data())
def test_payload_v2_mutated_inside(data: st.DataObject) -> None:
    # Mutations of the inflated index and groups, behind valid DEFLATE and checksums: the
    # list programs, node columns and string tables must fail with PayloadError only.
    index, groups = _v2_parts(PAYLOADS[2])
    for _ in range(data.draw(st.integers(1, 6))):
        targets = [index] + groups
        target = targets[data.draw(st.integers(0, len(targets) - 1))]
        if target:
            target[data.draw(st.integers(0, len(target) - 1))] = data.draw(st.integers(0, 255))
    with contextlib.suppress(pack.PayloadError):
        pack.unpack(_v2_payload(bytes(index), [bytes(g) for g in groups]))


@FUZZ
@given(st.binary(max_size=1024), st.booleans())
def test_payload_reader_random_index(index: bytes, with_crc: bool) -> None:
    for version in pack.VERSIONS:
        body = index + struct.pack("<I", zlib.crc32(index)) if with_crc and version == 2 \
            else index
        index_c = _deflate(body)
        payload = pack.HEADER.pack(pack.MAGIC, version, 0, 0, len(index_c), len(body)) + index_c
        with contextlib.suppress(pack.PayloadError):
            pack.unpack(payload)


def test_unmutated_payloads_read_back() -> None:
    # The fuzzers' starting points are good payloads (else they would only test errors).
    for version in pack.VERSIONS:
        assert pack.unpack(PAYLOADS[version])[1] == _payload_entries()
    index, groups = _v2_parts(PAYLOADS[2])
    rebuilt = _v2_payload(bytes(index), [bytes(g) for g in groups])
    assert pack.unpack(rebuilt)[1] == _payload_entries()


@pytest.mark.parametrize("version", pack.VERSIONS)
def test_regression_payload_names_not_utf8(version: int) -> None:
    # Found by test_payload_reader_mutated: a flipped byte in the index turned a key into
    # invalid UTF-8 and unpack raised UnicodeDecodeError instead of PayloadError.
    if version == 1:
        index = struct.pack("<H", 2) + b"\x8f\x80" + struct.pack("<III", 0, 0, 0)
    else:
        index = b"\x02\x8f\x80" + bytes(4)
        index += struct.pack("<I", zlib.crc32(index))
    index_c = _deflate(index)
    payload = pack.HEADER.pack(pack.MAGIC, version, 0, 0, len(index_c), len(index)) + index_c
    with pytest.raises(pack.PayloadError, match="UTF-8"):
        pack.unpack(payload)
