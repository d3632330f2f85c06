"""A one-line, human readable description of an IP packet, with checksum verdicts.

Used by ``make demo`` and ``v6mostly translate --trace``; independent of the
translator (it recomputes every checksum from scratch).
"""

from __future__ import annotations

import ipaddress

from .checksum import checksum, pseudo_sum_v4, pseudo_sum_v6

_PROTO = {
    1: "ICMP",
    6: "TCP",
    17: "UDP",
    58: "ICMPv6",
    47: "GRE",
    50: "ESP",
    132: "SCTP",
    59: "none",
}
_ICMP4 = {
    0: "echo-reply",
    3: "dest-unreach",
    8: "echo-request",
    11: "time-exceeded",
    12: "param-problem",
}
_ICMP6 = {
    1: "dest-unreach",
    2: "packet-too-big",
    3: "time-exceeded",
    4: "param-problem",
    128: "echo-request",
    129: "echo-reply",
}


def _ok(flag: bool) -> str:
    return "ok" if flag else "BAD"


def _l4(proto: int, data: bytes, pseudo: int, v6: bool, first: bool, inner: bool) -> str:
    name = _PROTO.get(proto, f"proto {proto}")
    if not first:
        return f"{name} (non-first fragment)"
    if proto in (6, 17) and len(data) >= 8:
        sport, dport = int.from_bytes(data[0:2], "big"), int.from_bytes(data[2:4], "big")
        desc = f"{name} {sport} > {dport}"
        if inner:
            return desc
        if proto == 17 and data[6:8] == b"\x00\x00":
            return desc + " udp-csum none"
        return desc + f" l4-csum {_ok(checksum(data, pseudo) == 0)}"
    if proto in (1, 58) and len(data) >= 4:
        names = _ICMP6 if v6 else _ICMP4
        t, c = data[0], data[1]
        desc = f"{name} {names.get(t, f'type {t}')} code {c}"
        if t in (2,) and v6 and len(data) >= 8:
            desc += f" mtu {int.from_bytes(data[4:8], 'big')}"
        if t == 3 and c == 4 and not v6 and len(data) >= 8:
            desc += f" mtu {int.from_bytes(data[6:8], 'big')}"
        if not inner:
            desc += f" icmp-csum {_ok(checksum(data, pseudo if v6 else 0) == 0)}"
        is_error = (t < 128) if v6 else (t in (3, 4, 5, 11, 12))
        if is_error and not inner and len(data) > 8:
            desc += " [inner: " + describe(data[8:], inner=True) + "]"
        return desc
    return name


def describe(pkt: bytes, inner: bool = False) -> str:
    """E.g. ``IPv4 192.0.2.1 > 198.51.100.2 ttl 64 len 60 hdr-csum ok | TCP 80 > 443 l4-csum ok``."""
    if not pkt:
        return "(empty)"
    v = pkt[0] >> 4
    if v == 4 and len(pkt) >= 20:
        ihl = (pkt[0] & 15) * 4
        total = int.from_bytes(pkt[2:4], "big")
        frag = int.from_bytes(pkt[6:8], "big")
        src, dst = ipaddress.IPv4Address(pkt[12:16]), ipaddress.IPv4Address(pkt[16:20])
        flags = ("DF " if frag & 0x4000 else "") + ("MF " if frag & 0x2000 else "")
        off = frag & 0x1FFF
        head = f"IPv4 {src} > {dst} ttl {pkt[8]} len {total} id {int.from_bytes(pkt[4:6], 'big')} {flags}"
        if off:
            head += f"off {off * 8} "
        if not inner:
            head += f"hdr-csum {_ok(checksum(pkt[:ihl]) == 0)} "
        data = pkt[ihl:total] if not inner else pkt[ihl:]
        whole = not frag & 0x2000  # a first fragment's checksum covers the whole datagram
        l4 = _l4(
            pkt[9],
            data,
            pseudo_sum_v4(pkt[12:16], pkt[16:20], pkt[9], len(data)),
            False,
            off == 0,
            inner or not whole,
        )
        return head + "| " + l4
    if v == 6 and len(pkt) >= 40:
        plen = int.from_bytes(pkt[4:6], "big")
        src6, dst6 = ipaddress.IPv6Address(pkt[8:24]), ipaddress.IPv6Address(pkt[24:40])
        nh, p, first, fr, whole = pkt[6], 40, True, "", True
        while nh in (0, 43, 60, 44) and p + 8 <= len(pkt):
            if nh == 44:
                fw = int.from_bytes(pkt[p + 2 : p + 4], "big")
                fr = f"frag off {(fw >> 3) * 8}{' M' if fw & 1 else ''} id {int.from_bytes(pkt[p + 4 : p + 8], 'big')} "
                first = (fw >> 3) == 0
                whole = not fw & 1
                nh, p = pkt[p], p + 8
                if not first:
                    break
            else:
                nh, p = pkt[p], p + (pkt[p + 1] + 1) * 8
        head = f"IPv6 {src6} > {dst6} hlim {pkt[7]} plen {plen} {fr}"
        data = pkt[p : 40 + plen] if not inner else pkt[p:]
        l4 = _l4(
            nh,
            data,
            pseudo_sum_v6(pkt[8:24], pkt[24:40], nh, len(data)),
            True,
            first,
            inner or not whole,
        )
        return head + "| " + l4
    return f"not IP ({len(pkt)} bytes)"
