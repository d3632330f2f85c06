"""Kernel nexthop objects and resilient groups over rtnetlink (``linux/nexthop.h``).

pyroute2 has no nexthop-object messages (no RTM_NEWNEXTHOP class in 0.7 nor 0.9), and its
route message stops at RTA_EXPIRES (no RTA_NH_ID). The messages are defined here on
pyroute2's own netlink framework (``nlmsg``/``nla`` classes encode and decode them), and
sent on a plain NETLINK_ROUTE socket of our own: the synchronous ``IPRoute.nlm_request`` of
pyroute2 0.9.7 fails before sending (``KeyError: 'nlm_generator'``), so the socket is ours
for both versions, with extended acks (the kernel's own error text) and strict dump checks
(the kernel filters route dumps by table).

Units: the resilient group's timers are clock_t on the wire (USER_HZ = 100 per second);
this module takes and returns seconds. A group member's wire weight is weight - 1.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import itertools
import os
import socket
import struct
from dataclasses import dataclass
from typing import Any

from pyroute2.netlink import NLA_F_NESTED, nla, nlmsg
from pyroute2.netlink.rtnl.rtmsg import rtmsg_base

from ..errors import V6mostlyError

# linux/rtnetlink.h message types
RTM_NEWROUTE = 24
RTM_DELROUTE = 25
RTM_GETROUTE = 26
RTM_NEWNEXTHOP = 104
RTM_DELNEXTHOP = 105
RTM_GETNEXTHOP = 106
RTM_NEWNEXTHOPBUCKET = 116
RTM_GETNEXTHOPBUCKET = 118
RTM_NEWLINK = 16
RTM_DELLINK = 17

# linux/netlink.h
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLM_F_REQUEST = 0x1
NLM_F_MULTI = 0x2
NLM_F_ACK = 0x4
NLM_F_DUMP = 0x300
NLM_F_REPLACE = 0x100
NLM_F_EXCL = 0x200
NLM_F_CREATE = 0x400
NLM_F_CAPPED = 0x100  # in an NLMSG_ERROR: only the request's header is echoed
NLM_F_ACK_TLVS = 0x200  # in an NLMSG_ERROR: extended-ack attributes follow
NLMSGERR_ATTR_MSG = 1
SOL_NETLINK = 270
NETLINK_ADD_MEMBERSHIP = 1
NETLINK_EXT_ACK = 11
NETLINK_GET_STRICT_CHK = 12

# multicast groups (bind mask) and RTNLGRP_NEXTHOP (a group number past 31: setsockopt)
RTMGRP_LINK = 0x1
RTMGRP_IPV6_ROUTE = 0x400
RTNLGRP_NEXTHOP = 32

# linux/nexthop.h
NEXTHOP_GRP_TYPE_MPATH = 0
NEXTHOP_GRP_TYPE_RES = 1
USER_HZ = 100
RTNH_F_DEAD = 0x1
RTNH_F_LINKDOWN = 0x10
RTPROT_STATIC = 4
RT_TABLE_COMPAT = 252
RTN_UNICAST = 1
_GRP = struct.Struct("=IBBH")  # struct nexthop_grp: id, weight - 1, weight_high, resvd2


class NexthopError(V6mostlyError):
    """A nexthop/route request the kernel refused (with its errno and message)."""

    def __init__(self, what: str, code: int, text: str = "") -> None:
        self.code = code
        detail = text or os.strerror(code)
        super().__init__(f"{what}: {detail}")


class nhmsg(nlmsg):  # type: ignore[misc]
    """``struct nhmsg`` and the NHA_* attributes (RTM_{NEW,DEL,GET}NEXTHOP{,BUCKET})."""

    prefix = "NHA_"
    fields = (
        ("family", "B"),
        ("scope", "B"),
        ("protocol", "B"),
        ("resvd", "B"),
        ("flags", "I"),
    )
    nla_map = (
        (0, "NHA_UNSPEC", "none", 0),
        (1, "NHA_ID", "uint32", 0),
        (2, "NHA_GROUP", "cdata", 0),  # array of struct nexthop_grp (group_entries)
        (3, "NHA_GROUP_TYPE", "uint16", 0),
        (4, "NHA_BLACKHOLE", "flag", 0),
        (5, "NHA_OIF", "uint32", 0),
        (6, "NHA_GATEWAY", "cdata", 0),  # 4 or 16 bytes (address_bytes)
        (7, "NHA_ENCAP_TYPE", "uint16", 0),
        (8, "NHA_ENCAP", "cdata", 0),
        (9, "NHA_GROUPS", "flag", 0),
        (10, "NHA_MASTER", "uint32", 0),
        (11, "NHA_FDB", "flag", 0),
        (12, "NHA_RES_GROUP", "res_group", NLA_F_NESTED),
        (13, "NHA_RES_BUCKET", "res_bucket", NLA_F_NESTED),
        (14, "NHA_OP_FLAGS", "uint32", 0),
    )

    class res_group(nla):  # type: ignore[misc]
        prefix = "NHA_RES_GROUP_"
        nla_map = (
            (0, "NHA_RES_GROUP_PAD", "none", 0),
            (1, "NHA_RES_GROUP_BUCKETS", "uint16", 0),
            (2, "NHA_RES_GROUP_IDLE_TIMER", "uint32", 0),
            (3, "NHA_RES_GROUP_UNBALANCED_TIMER", "uint32", 0),
            (4, "NHA_RES_GROUP_UNBALANCED_TIME", "uint64", 0),
        )

    class res_bucket(nla):  # type: ignore[misc]
        prefix = "NHA_RES_BUCKET_"
        nla_map = (
            (0, "NHA_RES_BUCKET_PAD", "none", 0),
            (1, "NHA_RES_BUCKET_INDEX", "uint16", 0),
            (2, "NHA_RES_BUCKET_IDLE_TIME", "uint64", 0),
            (3, "NHA_RES_BUCKET_NH_ID", "uint32", 0),
        )


class rtmsg_nh(rtmsg_base, nlmsg):  # type: ignore[misc]
    """pyroute2's route message with the attributes after RTA_EXPIRES, up to RTA_NH_ID (30).

    Built on ``rtmsg_base`` (not ``rtmsg``): pyroute2 marks a class's attribute table
    compiled on the class itself, and a subclass of a compiled class would inherit the
    mark and never compile its longer table."""

    nla_map = (
        *tuple(rtmsg_base.nla_map),
        ("RTA_PAD", "hex"),
        ("RTA_UID", "uint32"),
        ("RTA_TTL_PROPAGATE", "uint8"),
        ("RTA_IP_PROTO", "uint8"),
        ("RTA_SPORT", "be16"),
        ("RTA_DPORT", "be16"),
        ("RTA_NH_ID", "uint32"),
    )


def group_entries(members: list[int] | tuple[int, ...], weight: int = 1) -> bytes:
    """NHA_GROUP: one ``struct nexthop_grp`` per member id (wire weight = weight - 1)."""
    return b"".join(_GRP.pack(m, weight - 1, 0, 0) for m in members)


def parse_group(data: bytes) -> tuple[int, ...]:
    """Member ids of an NHA_GROUP."""
    return tuple(_GRP.unpack_from(data, i)[0] for i in range(0, len(data) - 7, _GRP.size))


def address_bytes(address: str) -> tuple[int, bytes]:
    a = ipaddress.ip_address(address)
    return (socket.AF_INET6 if a.version == 6 else socket.AF_INET), a.packed


# -- what the kernel holds --------------------------------------------------------------


@dataclass(frozen=True)
class Nexthop:
    """One nexthop object: a gateway (``gateway``, ``oif``) or a group (``group``)."""

    id: int
    gateway: str | None = None
    oif: int = 0
    group: tuple[int, ...] = ()
    group_type: int = NEXTHOP_GRP_TYPE_MPATH
    buckets: int = 0
    idle_timer: float = 0.0
    unbalanced_timer: float = 0.0
    flags: int = 0


@dataclass(frozen=True)
class Bucket:
    index: int
    nh_id: int
    idle_time: float  # seconds since the bucket last carried traffic


def decode_nexthop(m: Any) -> Nexthop:
    gw = m.get_attr("NHA_GATEWAY")
    grp = m.get_attr("NHA_GROUP")
    res = m.get_attr("NHA_RES_GROUP")
    kw: dict[str, Any] = {}
    if res is not None:
        kw = {
            "buckets": res.get_attr("NHA_RES_GROUP_BUCKETS") or 0,
            "idle_timer": (res.get_attr("NHA_RES_GROUP_IDLE_TIMER") or 0) / USER_HZ,
            "unbalanced_timer": (res.get_attr("NHA_RES_GROUP_UNBALANCED_TIMER") or 0) / USER_HZ,
        }
    return Nexthop(
        id=m.get_attr("NHA_ID") or 0,
        gateway=str(ipaddress.ip_address(bytes(gw))) if gw else None,
        oif=m.get_attr("NHA_OIF") or 0,
        group=parse_group(bytes(grp)) if grp else (),
        group_type=m.get_attr("NHA_GROUP_TYPE") or NEXTHOP_GRP_TYPE_MPATH,
        flags=m["flags"],
        **kw,
    )


def decode_bucket(m: Any) -> Bucket:
    b = m.get_attr("NHA_RES_BUCKET")
    return Bucket(
        index=b.get_attr("NHA_RES_BUCKET_INDEX") or 0,
        nh_id=b.get_attr("NHA_RES_BUCKET_NH_ID") or 0,
        idle_time=(b.get_attr("NHA_RES_BUCKET_IDLE_TIME") or 0) / USER_HZ,
    )


# -- message builders (pure: tests compare their bytes) -------------------------------------


def msg_gateway(nh_id: int, gateway: str, oif: int) -> nhmsg:
    family, packed = address_bytes(gateway)
    m = nhmsg()
    m["family"] = family
    m["attrs"] = [("NHA_ID", nh_id), ("NHA_OIF", oif), ("NHA_GATEWAY", packed)]
    return m


def msg_resilient_group(
    group_id: int, members: tuple[int, ...], buckets: int, idle_timer: float, unbalanced: float
) -> nhmsg:
    m = nhmsg()
    m["family"] = socket.AF_UNSPEC
    m["attrs"] = [
        ("NHA_ID", group_id),
        ("NHA_GROUP", group_entries(members)),
        ("NHA_GROUP_TYPE", NEXTHOP_GRP_TYPE_RES),
        (
            "NHA_RES_GROUP",
            {
                "attrs": [
                    ("NHA_RES_GROUP_BUCKETS", buckets),
                    ("NHA_RES_GROUP_IDLE_TIMER", round(idle_timer * USER_HZ)),
                    ("NHA_RES_GROUP_UNBALANCED_TIMER", round(unbalanced * USER_HZ)),
                ]
            },
        ),
    ]
    return m


def msg_id(nh_id: int) -> nhmsg:
    m = nhmsg()
    m["family"] = socket.AF_UNSPEC
    m["attrs"] = [("NHA_ID", nh_id)]
    return m


def msg_route(prefix: ipaddress.IPv6Network, table: int, nh_id: int | None = None) -> rtmsg_nh:
    m = rtmsg_nh()
    m["family"] = socket.AF_INET6
    m["dst_len"] = prefix.prefixlen
    m["table"] = table if table < 256 else RT_TABLE_COMPAT
    m["proto"] = RTPROT_STATIC
    m["scope"] = 0
    m["type"] = RTN_UNICAST
    attrs: list[tuple[str, Any]] = [
        ("RTA_DST", str(prefix.network_address)),
        ("RTA_TABLE", table),
    ]
    if nh_id is not None:
        attrs.append(("RTA_NH_ID", nh_id))
    m["attrs"] = attrs
    return m


def encode(m: Any, msg_type: int, flags: int, seq: int = 0) -> bytes:
    m["header"]["type"] = msg_type
    m["header"]["flags"] = flags
    m["header"]["sequence_number"] = seq
    m["header"]["pid"] = 0
    m.encode()
    return bytes(m.data)


# -- the socket --------------------------------------------------------------------------

_CLASSES: dict[int, type] = {
    RTM_NEWNEXTHOP: nhmsg,
    RTM_DELNEXTHOP: nhmsg,
    RTM_NEWNEXTHOPBUCKET: nhmsg,
    RTM_NEWROUTE: rtmsg_nh,
    RTM_DELROUTE: rtmsg_nh,
}
_HDR = struct.Struct("=IHHII")


def split_messages(data: bytes) -> list[tuple[int, int, int, bytes]]:
    """(type, flags, seq, whole message) for each netlink message in a datagram."""
    out = []
    off = 0
    while off + _HDR.size <= len(data):
        length, mtype, flags, seq, _pid = _HDR.unpack_from(data, off)
        if length < _HDR.size:
            break
        out.append((mtype, flags, seq, data[off : off + length]))
        off += (length + 3) & ~3
    return out


def decode(mtype: int, raw: bytes) -> Any:
    cls = _CLASSES[mtype]
    m = cls(raw)
    m.decode()
    return m


def error_text(flags: int, raw: bytes) -> str:
    """The extended ack's message of an NLMSG_ERROR (``raw`` = the whole message)."""
    if not flags & NLM_F_ACK_TLVS:
        return ""
    off = 16 + 4
    if flags & NLM_F_CAPPED:
        off += 16
    else:
        off += struct.unpack_from("=I", raw, off)[0]
    while off + 4 <= len(raw):
        alen, atype = struct.unpack_from("=HH", raw, off)
        if alen < 4:
            break
        if atype == NLMSGERR_ATTR_MSG:
            return raw[off + 4 : off + alen].split(b"\0", 1)[0].decode(errors="replace")
        off += (alen + 3) & ~3
    return ""


class Netlink:
    """A NETLINK_ROUTE request socket: one request at a time, replies decoded."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        for opt in (NETLINK_EXT_ACK, NETLINK_GET_STRICT_CHK):
            with contextlib.suppress(OSError):
                self.sock.setsockopt(SOL_NETLINK, opt, 1)
        self.sock.bind((0, 0))
        self.seq = itertools.count(int.from_bytes(os.urandom(2), "big") + 1)

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Netlink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(self, what: str, m: Any, msg_type: int, flags: int) -> list[Any]:
        """Send ``m``; the decoded replies (a dump's messages; [] for an ack)."""
        seq = next(self.seq) & 0xFFFFFFFF
        self.sock.send(encode(m, msg_type, flags, seq))
        dump = flags & NLM_F_DUMP == NLM_F_DUMP
        out: list[Any] = []
        while True:
            data = self.sock.recv(1 << 20)
            for mtype, mflags, mseq, raw in split_messages(data):
                if mseq != seq:
                    continue
                if mtype == NLMSG_ERROR:
                    code = -struct.unpack_from("=i", raw, 16)[0]
                    if code:
                        raise NexthopError(what, code, error_text(mflags, raw))
                    return out
                if mtype == NLMSG_DONE:
                    return out
                if mtype in _CLASSES:
                    out.append(decode(mtype, raw))
                if not dump and not mflags & NLM_F_MULTI and not flags & NLM_F_ACK:
                    return out

    # -- the API ---------------------------------------------------------------------

    def replace_gateway(self, nh_id: int, gateway: str, oif: int) -> None:
        """``ip nexthop replace id ID via GATEWAY dev OIF``."""
        self.request(
            f"nexthop {nh_id} via {gateway}",
            msg_gateway(nh_id, gateway, oif),
            RTM_NEWNEXTHOP,
            NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE,
        )

    def replace_resilient_group(
        self,
        group_id: int,
        members: tuple[int, ...],
        buckets: int,
        idle_timer: float,
        unbalanced_timer: float,
    ) -> None:
        """``ip nexthop replace id G group A/B type resilient buckets N idle_timer S
        unbalanced_timer S``: a replace keeps the buckets of the members that stay."""
        self.request(
            f"nexthop group {group_id}",
            msg_resilient_group(group_id, members, buckets, idle_timer, unbalanced_timer),
            RTM_NEWNEXTHOP,
            NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE,
        )

    def delete(self, nh_id: int, missing_ok: bool = True) -> None:
        """``ip nexthop del id ID`` (routes using it go with it)."""
        try:
            self.request(
                f"delete nexthop {nh_id}",
                msg_id(nh_id),
                RTM_DELNEXTHOP,
                NLM_F_REQUEST | NLM_F_ACK,
            )
        except NexthopError as e:
            if not (missing_ok and e.code == errno.ENOENT):
                raise

    def get(self, nh_id: int) -> Nexthop | None:
        try:
            got = self.request(f"nexthop {nh_id}", msg_id(nh_id), RTM_GETNEXTHOP, NLM_F_REQUEST)
        except NexthopError as e:
            if e.code == errno.ENOENT:
                return None
            raise
        return decode_nexthop(got[0]) if got else None

    def dump(self) -> list[Nexthop]:
        """Every nexthop object of the namespace (``ip nexthop show``)."""
        m = nhmsg()
        m["family"] = socket.AF_UNSPEC
        got = self.request("nexthop dump", m, RTM_GETNEXTHOP, NLM_F_REQUEST | NLM_F_DUMP)
        return [decode_nexthop(x) for x in got]

    def buckets(self, group_id: int) -> list[Bucket]:
        """The buckets of a resilient group (``ip nexthop bucket show id G``)."""
        m = msg_id(group_id)
        try:
            got = self.request(
                f"buckets of {group_id}", m, RTM_GETNEXTHOPBUCKET, NLM_F_REQUEST | NLM_F_DUMP
            )
        except NexthopError as e:
            if e.code in (errno.ENOENT, errno.EINVAL):
                return []
            raise
        return sorted((decode_bucket(x) for x in got), key=lambda b: b.index)

    def routes(self, table: int) -> list[Any]:
        """IPv6 routes of one table (the kernel filters: strict dump checks)."""
        m = rtmsg_nh()
        m["family"] = socket.AF_INET6
        m["table"] = table if table < 256 else RT_TABLE_COMPAT
        m["attrs"] = [("RTA_TABLE", table)]
        got = self.request(f"routes of table {table}", m, RTM_GETROUTE, NLM_F_REQUEST | NLM_F_DUMP)
        return [r for r in got if route_table(r) == table]

    def replace_route(self, prefix: ipaddress.IPv6Network, table: int, nh_id: int) -> None:
        """``ip -6 route replace PREFIX nhid ID table T``."""
        self.request(
            f"route {prefix} table {table}",
            msg_route(prefix, table, nh_id),
            RTM_NEWROUTE,
            NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE,
        )

    def delete_route(self, prefix: ipaddress.IPv6Network, table: int) -> None:
        try:
            self.request(
                f"delete route {prefix} table {table}",
                msg_route(prefix, table),
                RTM_DELROUTE,
                NLM_F_REQUEST | NLM_F_ACK,
            )
        except NexthopError as e:
            if e.code not in (errno.ENOENT, errno.ESRCH):
                raise


def learned_gateways(
    n: Netlink, table: int, prefix: ipaddress.IPv6Network
) -> list[tuple[str, int, int]] | None:
    """(gateway, oif, RTNH flags) of ``prefix`` in ``table`` (its lowest metric); None
    when the table has no such route."""
    best = None
    for r in n.routes(table):
        if route_dst(r) == prefix:
            metric = r.get_attr("RTA_PRIORITY") or 0
            if best is None or metric < best[0]:
                best = (metric, r)
    return None if best is None else route_gateways(best[1])


def route_nhid(n: Netlink, table: int, prefix: ipaddress.IPv6Network) -> int | None:
    """The nexthop object ``prefix`` (metric 1024, ours) uses in ``table``: None = no
    route, 0 = a route without one."""
    for r in n.routes(table):
        if route_dst(r) == prefix and (r.get_attr("RTA_PRIORITY") or 1024) == 1024:
            return int(r.get_attr("RTA_NH_ID") or 0)
    return None


def route_table(r: Any) -> int:
    t = r.get_attr("RTA_TABLE")
    return int(t) if t is not None else int(r["table"])


def route_dst(r: Any) -> ipaddress.IPv6Network | None:
    dst = r.get_attr("RTA_DST")
    try:
        return ipaddress.IPv6Network(f"{dst or '::'}/{r['dst_len']}")
    except ValueError:
        return None


def route_gateways(r: Any) -> list[tuple[str, int, int]]:
    """(gateway, oif, RTNH flags) of a route: its RTA_MULTIPATH, or one RTA_GATEWAY + oif."""
    mp = r.get_attr("RTA_MULTIPATH")
    if mp:
        out = []
        for nh in mp:
            gw = nh.get_attr("RTA_GATEWAY")
            if gw:
                out.append((str(ipaddress.ip_address(gw)), int(nh["oif"]), int(nh["flags"])))
        return out
    gw = r.get_attr("RTA_GATEWAY")
    if gw:
        return [(str(ipaddress.ip_address(gw)), int(r.get_attr("RTA_OIF") or 0), int(r["flags"]))]
    return []


class EventSocket:
    """Link, IPv6 route and nexthop notifications; ``drain`` says whether any came."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
        self.sock.bind((0, RTMGRP_LINK | RTMGRP_IPV6_ROUTE))
        # Without nexthop notifications the periodic reconcile still catches flushes.
        with contextlib.suppress(OSError):
            self.sock.setsockopt(SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, RTNLGRP_NEXTHOP)
        self.sock.setblocking(False)

    def fileno(self) -> int:
        return self.sock.fileno()

    def drain(self, relevant: Any = None) -> bool:
        """Read every pending notification; True if one passes ``relevant(type, raw)``
        (or any arrived, without a filter, or some were lost: ENOBUFS)."""
        hit = False
        while True:
            try:
                data = self.sock.recv(1 << 20)
            except BlockingIOError:
                return hit
            except OSError:
                hit = True  # ENOBUFS: notifications lost
                continue
            for mtype, _flags, _seq, raw in split_messages(data):
                if relevant is None or relevant(mtype, raw):
                    hit = True

    def close(self) -> None:
        self.sock.close()
