"""RFC 1071 / RFC 1624 checksum vectors."""

import random

from v6mostly.wire.checksum import checksum, ones_sum, sum_delta, update


def slow_sum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\x00"
    s = 0
    for i in range(0, len(data), 2):
        s += data[i] << 8 | data[i + 1]
        s = (s & 0xFFFF) + (s >> 16)
    return s


def test_rfc1071_section3_example() -> None:
    # RFC 1071 §3: bytes 00 01 f2 03 f4 f5 f6 f7 sum to ddf2 (one's complement, big-endian).
    assert ones_sum(bytes.fromhex("0001f203f4f5f6f7")) == 0xDDF2
    assert checksum(bytes.fromhex("0001f203f4f5f6f7")) == 0x220D


def test_ipv4_header_checksum_vector() -> None:
    # A real IPv4 header (checksum b861), from the classic Wikipedia/RFC 1071 walk-through.
    hdr = bytes.fromhex("450000730000400040110000c0a80001c0a800c7")
    assert checksum(hdr) == 0xB861


def test_negative_zero_and_odd_length() -> None:
    assert ones_sum(b"") == 0
    assert ones_sum(b"\x00\x00") == 0
    assert ones_sum(b"\xff\xff") == 0xFFFF
    assert ones_sum(b"\x12\x34\x56") == slow_sum(b"\x12\x34\x56")


def test_matches_slow_sum_random() -> None:
    rng = random.Random(1)
    for n in range(0, 200):
        data = bytes(rng.getrandbits(8) for _ in range(n))
        assert ones_sum(data) == slow_sum(data) or (
            slow_sum(data) in (0, 0xFFFF) and ones_sum(data) in (0, 0xFFFF)
        )


def test_rfc1624_incremental_equals_recompute() -> None:
    # RFC 1624 §4: HC' = ~(~HC + ~m + m'); a changed word updates the checksum exactly.
    rng = random.Random(2)
    for _ in range(500):
        data = bytearray(rng.getrandbits(8) for _ in range(40))
        c = checksum(data)
        old = bytes(data[8:24])
        data[8:24] = bytes(rng.getrandbits(8) for _ in range(16))
        new_c = update(c, sum_delta(data[8:24], old))
        full = checksum(data)
        # One's complement has two zeros: 0x0000 and 0xffff are the same checksum.
        assert new_c == full or {new_c, full} == {0, 0xFFFF}


def test_wrong_checksum_stays_equally_wrong() -> None:
    data = bytearray(range(32))
    good = checksum(data)
    bad = (good + 1) & 0xFFFF
    old = bytes(data[0:4])
    data[0:4] = b"\xc0\x00\x02\x01"
    d = sum_delta(data[0:4], old)
    # RFC 1624 keeps the error: the updated bad checksum is off by the same amount.
    assert (update(bad, d) - update(good, d)) % 0xFFFF == 1
