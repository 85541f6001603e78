"""The Go target's full-BTF trailer (docs/payload-format.md, "The full-BTF trailer"): what
gobtfgen writes after each Go payload for BTFOptions.PreferEmbedded, read back by the strict
Python reader (the Go reader's tests are in tests/gotest/btfgen_prefer_test.go)."""

from __future__ import annotations

import hashlib
import struct
import zlib

import pytest

from gobtfgen import pack
from gobtfgen.targets import go
from tests.tinybtf import tiny_btf

KEYS = ("centos/7/x86_64/3.10.0-1160", "debian/12/x86_64/6.1.0-9-amd64",
        "ubuntu/20.04/x86_64/5.4.0-26-generic", "ubuntu/20.04/x86_64/5.4.0-27-generic")


def payload_of(keys: tuple[str, ...] = KEYS) -> bytes:
    # Two keys share one minimized BTF: entries, not kernel rows, carry the checksums.
    return pack.pack("x86_64", {k: tiny_btf("k_" + k.split("/")[3][:5].replace(".", "_"))
                                 for k in keys})[0]


def sum_of(data: bytes) -> str:
    return f"{len(data)}:{hashlib.sha256(data).hexdigest()}"


def prefix(full_sum: str) -> str:
    size, digest = full_sum.split(":")
    return f"{size}:{digest[:32]}"


def test_round_trip_by_entry_with_sizes_up_and_down() -> None:
    payload = payload_of()
    sums = {KEYS[0]: sum_of(b"a" * 5_000_000), KEYS[1]: sum_of(b"b" * 24),
            KEYS[3]: sum_of(b"c" * 70_000)}
    sums["fedora/39/x86_64/not-in-the-payload"] = sum_of(b"d")
    trailer = go.fullsum_trailer(payload, sums)
    shipped = payload + trailer
    assert go.parse_fullsum_trailer(shipped) == {k: prefix(sums[k]) for k in KEYS if k in sums}
    # The payload itself reads as before: the trailer sits past its last group.
    assert pack.unpack(shipped) == pack.unpack(payload)
    # 16 bytes of hash a kernel (zeros for KEYS[2], which has no checksum), the count, the
    # size deltas (4 + 4 + 1 + 3 bytes) and the 12-byte tail.
    assert len(trailer) == 4 * 16 + 1 + 12 + 12


def test_no_checksum_no_trailer() -> None:
    payload = payload_of()
    assert go.fullsum_trailer(payload, {}) == b""
    assert go.fullsum_trailer(payload, {"debian/12/x86_64/other": sum_of(b"x")}) == b""
    assert go.parse_fullsum_trailer(payload) == {}


def test_size_must_fit_a_u32() -> None:
    with pytest.raises(ValueError, match="below 4 GiB"):
        go.fullsum_trailer(payload_of(), {KEYS[0]: f"{1 << 32}:{'00' * 32}"})


def _with_trailer(payload: bytes, hashes: bytes, sizes: bytes) -> bytes:
    """A trailer written by hand from docs/payload-format.md."""
    return payload + hashes + sizes + struct.pack("<II", len(sizes),
                                                  zlib.crc32(hashes + sizes)) + b"GBS2"


H = bytes(range(16))


@pytest.mark.parametrize(("hashes", "sizes", "error"), [
    # A trailer of another payload: the columns the reader takes for 4 entries hold counts
    # of 5 and 3 (written whole for 5 or 3 entries, the crc32 would fail first).
    (H * 4, b"\x05" + bytes(5), "of 5 entries, the payload has 4"),
    (H * 4, b"\x03" + bytes(3), "of 3 entries, the payload has 4"),
    (H * 5, b"\x05" + bytes(5), "checksum"),
    (H * 4, b"\x80\x80\x80\x80\x10" + bytes(4), "over 32 bits"),
    (H * 4, b"\x04\x00\x00\xff\xff\xff\xff\x7f\x00", "over 32 bits"),
    (H * 4, b"\x04\x00\x00\x00\x80", "truncated"),
    (H * 4, b"\x04\x00\x00\x00", "truncated"),
    (H * 4, b"\x04\x00\x00\x00\x30\x00", "bytes after the sizes"),
    (H * 4, b"", "truncated"),
    (H * 3, b"\x04\x00\x00\x00\x30", "checksum"),  # a hash missing: payload bytes instead
])
def test_damaged_trailer_is_an_error(hashes: bytes, sizes: bytes, error: str) -> None:
    good = _with_trailer(payload_of(), H * 4, b"\x04\x00\x00\x30\x00")
    assert go.parse_fullsum_trailer(good) == {KEYS[2]: f"24:{H.hex()}", KEYS[3]: f"24:{H.hex()}"}
    with pytest.raises(pack.PayloadError, match=error):
        go.parse_fullsum_trailer(_with_trailer(payload_of(), hashes, sizes))


def test_damaged_tail_is_an_error() -> None:
    payload = payload_of()
    shipped = bytearray(payload + go.fullsum_trailer(payload, {KEYS[0]: sum_of(b"x" * 99)}))
    shipped[-8] ^= 1  # the crc32
    with pytest.raises(pack.PayloadError, match="checksum"):
        go.parse_fullsum_trailer(bytes(shipped))
    shipped[-8] ^= 1
    shipped[-12:-8] = struct.pack("<I", len(shipped))  # sizes_len past the payload
    with pytest.raises(pack.PayloadError, match="out of range"):
        go.parse_fullsum_trailer(bytes(shipped))


def test_old_gbs1_trailer_is_no_trailer() -> None:
    """A "GBS1" trailer (gobtfgen before the compact one) is not read: PreferEmbedded then
    falls back to the kernel's own BTF."""
    payload = payload_of()
    key = KEYS[0].encode()
    old = struct.pack("<H", len(key)) + key + struct.pack("<Q", 99) + bytes(32)
    assert go.parse_fullsum_trailer(payload + old + struct.pack("<II", 1, len(old))
                                    + b"GBS1") == {}
