"""Neighbour Discovery as a host sees it: RA options from the kernel, Router Solicitations.

RFC 8781 PREF64 reaches userspace the way RDNSS does: the kernel validates a
Router Advertisement (link-local source, hop limit 255, accept_ra on the
interface) and hands the options it does not use itself to the
``RTNLGRP_ND_USEROPT`` netlink group as ``RTM_NEWNDUSEROPT`` messages
(``ndisc_is_useropt``: RDNSS, DNSSL, captive portal, PREF64). Listening there,
rather than on a raw ICMPv6 socket, sees exactly the RAs the kernel accepted.
pyroute2 has no parser for this message, so its fixed layout is read here
(``struct nduseroptmsg``, include/net/ndisc.h); the options go to the
project's RA codec.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from dataclasses import dataclass

from ..ra.options import RaError, RouterAdvert

RTM_NEWNDUSEROPT = 68
RTNLGRP_ND_USEROPT = 20
NDUSEROPT_SRCADDR = 1
ND_ROUTER_ADVERT = 134
_NLMSG = struct.Struct("=IHHII")
_USEROPT = struct.Struct("=BBHiBBHI")  # family, pad, opts_len, ifindex, type, code, pad, pad
ICMP6_FILTER = 1
IPV6_MULTICAST_HOPS = 18


@dataclass
class RaOptions:
    """The user options of one accepted RA."""

    ifindex: int
    router: str
    ra: RouterAdvert


def parse_nduseropt(data: bytes) -> list[RaOptions]:
    """Every ``RTM_NEWNDUSEROPT`` in one netlink datagram (others and malformed ones skipped)."""
    out: list[RaOptions] = []
    pos = 0
    while pos + _NLMSG.size <= len(data):
        length, mtype, _flags, _seq, _pid = _NLMSG.unpack_from(data, pos)
        if length < _NLMSG.size or pos + length > len(data):
            break
        body = data[pos + _NLMSG.size : pos + length]
        pos += (length + 3) & ~3
        if mtype != RTM_NEWNDUSEROPT or len(body) < _USEROPT.size:
            continue
        fam, _p1, olen, ifindex, itype, _code, _p2, _p3 = _USEROPT.unpack_from(body)
        if fam != socket.AF_INET6 or itype != ND_ROUTER_ADVERT:
            continue
        opts = body[_USEROPT.size : _USEROPT.size + olen]
        router = ""
        a = _USEROPT.size + ((olen + 3) & ~3)
        while a + 4 <= len(body):
            alen, atype = struct.unpack_from("=HH", body, a)
            if alen < 4:
                break
            if atype == NDUSEROPT_SRCADDR and alen >= 20:
                router = str(ipaddress.IPv6Address(body[a + 4 : a + 20]))
            a += (alen + 3) & ~3
        try:
            ra = RouterAdvert.from_options(opts)
        except RaError:
            continue
        out.append(RaOptions(ifindex, router, ra))
    return out


class UserOptListener:
    """A non-blocking netlink socket on ``RTNLGRP_ND_USEROPT``."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_NONBLOCK, 0)
        self.sock.bind((0, 1 << (RTNLGRP_ND_USEROPT - 1)))

    def fileno(self) -> int:
        return self.sock.fileno()

    def drain(self) -> list[RaOptions]:
        out: list[RaOptions] = []
        while True:
            try:
                data = self.sock.recv(65536)
            except BlockingIOError:
                return out
            except OSError:  # ENOBUFS after an overflow: what is lost comes again with the next RA
                return out
            out += parse_nduseropt(data)

    def close(self) -> None:
        self.sock.close()


def send_router_solicitation(ifname: str) -> None:
    """RFC 4861 §6.3.7: ask the routers on ``ifname`` for an RA now."""
    idx = socket.if_nametoindex(ifname)
    with socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6) as s:
        s.setsockopt(socket.IPPROTO_IPV6, IPV6_MULTICAST_HOPS, 255)
        s.sendto(bytes([133, 0, 0, 0, 0, 0, 0, 0]), ("ff02::2", 0, 0, idx))
