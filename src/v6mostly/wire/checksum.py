"""Internet checksum (RFC 1071) and incremental update (RFC 1624).

Theory of operation: the one's-complement sum of a buffer of 16-bit big-endian
words is congruent, modulo 0xffff, to the buffer read as one big integer
(because 2**16 == 1 mod 0xffff). ``int.from_bytes(...) % 0xffff`` therefore
computes the sum in C, which is far faster than a Python loop over words.
The only care needed is the two zeros of one's-complement arithmetic: a
non-empty buffer whose sum is a multiple of 0xffff sums to 0xffff ("-0"),
never to 0x0000, unless every byte is zero.
"""

from __future__ import annotations

_from_bytes = int.from_bytes


def ones_sum(data: bytes | bytearray | memoryview) -> int:
    """One's-complement sum of ``data`` as 16-bit words (RFC 1071 §1), in 0..0xffff."""
    n = _from_bytes(data, "big")
    if len(data) & 1:
        n <<= 8
    s = n % 0xFFFF
    if s == 0 and n:
        return 0xFFFF
    return s


def ones_add(a: int, b: int) -> int:
    """One's-complement addition of two 16-bit sums (end-around carry)."""
    s = a + b
    s = (s & 0xFFFF) + (s >> 16)
    return (s & 0xFFFF) + (s >> 16)


def checksum(data: bytes | bytearray | memoryview, initial: int = 0) -> int:
    """The Internet checksum of ``data`` plus an initial sum (e.g. a pseudo-header)."""
    return ~ones_add(ones_sum(data), initial) & 0xFFFF


def pseudo_sum_v4(src: bytes, dst: bytes, proto: int, length: int) -> int:
    """Sum of the IPv4 pseudo-header (RFC 768 / RFC 793)."""
    return ones_add(ones_add(ones_sum(src + dst), proto), length)


def pseudo_sum_v6(src: bytes, dst: bytes, nh: int, length: int) -> int:
    """Sum of the IPv6 pseudo-header (RFC 8200 §8.1)."""
    s = ones_add(ones_sum(src + dst), length >> 16)
    s = ones_add(s, length & 0xFFFF)
    return ones_add(s, nh)


def update(check: int, delta: int) -> int:
    """RFC 1624 eqn. 3: a checksum after the summed data changed by ``delta``.

    ``delta`` is (sum of new words - sum of old words) modulo 0xffff, as
    :func:`sum_delta` returns. A wrong checksum stays equally wrong. The result
    may be 0x0000 (valid for TCP/ICMP; UDP callers map it to 0xffff).
    """
    s = (0xFFFF - check + delta) % 0xFFFF
    if s == 0:
        s = 0xFFFF
    return 0xFFFF - s


def sum_delta(new: bytes | bytearray | memoryview, old: bytes | bytearray | memoryview) -> int:
    """(sum(new) - sum(old)) mod 0xffff, both read as 16-bit words (even lengths)."""
    return (_from_bytes(new, "big") - _from_bytes(old, "big")) % 0xFFFF


def update_at(buf: bytearray, pos: int, delta: int, udp: bool) -> None:
    """:func:`update` applied to the 16-bit checksum stored at ``buf[pos]``, in place.

    For UDP a result of 0x0000 is written as 0xffff: zero means "no checksum"
    (RFC 768) and IPv6 receivers drop it (RFC 8200 §8.1).
    """
    x = update(buf[pos] << 8 | buf[pos + 1], delta)
    if udp and x == 0:
        x = 0xFFFF
    buf[pos] = x >> 8
    buf[pos + 1] = x & 0xFF
