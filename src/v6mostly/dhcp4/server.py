"""The DHCPv4 server core (RFC 2131 §4.3), with RFC 8925 option 108 (sans-I/O).

``Dhcp4Server.handle(data, now, interface)`` takes one received datagram and
the time, and returns the reply to send (message plus where to send it) or
``None``. It never raises on packet input: a malformed message is counted and
ignored. Time is a parameter, so lease expiry is tested on a virtual clock.

Replies go where RFC 2131 §4.1 says: to the relay (giaddr) on port 67; to
``ciaddr`` for a RENEWING client or an INFORM; broadcast otherwise (the
server does not write ARP entries, so "unicast to chaddr/yiaddr" becomes the
broadcast RFC 2131 §4.1 allows when unicast is not possible). A NAK to a
client on the link is always broadcast.

Who is served (issue 10, "the router under attack"); every message turned away
is counted in ``Stats.dropped`` by reason, and none is answered:

* only messages received on a served interface (the site file's interfaces);
  the adapter says where a datagram arrived (``IP_PKTINFO``);
* a relayed message (giaddr set) only when giaddr *and* the datagram's source
  are relay agents listed for a subnet (``relays``; RFC 3046 §2.1 and
  RFC 6607: option 82 is only as trustworthy as the relay that added it);
* option 82 in a message a client sent itself (giaddr 0) is removed before
  anything looks at it (client classes, the echo in the reply) and counted;
* per client: a message rate, and a limit on honoured DECLINEs
  (``limits.py``); offers are held ``offer_hold_time`` seconds;
* a free address is found in O(log n) (``pool.py``), so a full pool costs no
  more per DISCOVER than an empty one; each DISCOVER turned away for want of
  an address is counted per subnet (``Stats.exhausted``).
"""

from __future__ import annotations

import ipaddress
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from typing import NamedTuple

from .leases import BOUND, DECLINED, OFFERED, Lease, LeaseTable
from .limits import ClientLimits, DeclineLimiter, RateLimiter
from .message import (
    BOOTREPLY,
    BOOTREQUEST,
    FLAG_BROADCAST,
    ZERO4,
    DhcpError,
    Message,
    MessageType,
    Opt,
    u32,
)
from .policy import MIN_V6ONLY_WAIT, V6OnlyPolicy
from .pool import FreePool
from .subnet import Subnet as Subnet

BROADCAST = "255.255.255.255"
SERVER_PORT = 67
CLIENT_PORT = 68


@dataclass
class Reply:
    message: Message
    address: str
    port: int
    interface: str | None
    #: True when the reply is a broadcast on the receiving link
    broadcast: bool


@dataclass
class Stats:
    requests: Counter[str] = field(default_factory=Counter)
    replies: Counter[str] = field(default_factory=Counter)
    offers_v6only: int = 0
    offers_v4: int = 0
    acks_v6only: int = 0
    malformed: int = 0
    ignored: Counter[str] = field(default_factory=Counter)
    #: messages turned away before being decided, by reason (label-safe names)
    dropped: Counter[str] = field(default_factory=Counter)
    #: option 82 sent by a client itself (giaddr 0): removed, not honoured
    option82_ignored: int = 0
    #: DISCOVERs left unanswered because the subnet's pool was full, per subnet
    exhausted: Counter[str] = field(default_factory=Counter)
    #: per-client drop reason -> the MAC of the last client dropped for it (for the log)
    last_client: dict[str, str] = field(default_factory=dict)
    #: option-108 decisions (per DISCOVER/REQUEST): (told IPv6-only "yes"/"no", reason)
    v6only_decisions: Counter[tuple[str, str]] = field(default_factory=Counter)


class PoolUsage(NamedTuple):
    """One subnet's addresses now: bound, offered (held for a REQUEST), declined, free."""

    bound: int
    offered: int
    declined: int
    free: int


#: Stats.dropped reasons
DROP_INTERFACE = "interface_not_served"
DROP_RELAY = "relay_not_trusted"
DROP_RELAY_SOURCE = "relay_source_not_trusted"
DROP_RATE = "client_rate"
DROP_DECLINE = "decline_limit"
DROP_DECLINED_CLIENT = "client_over_decline_limit"


#: Option-108 decisions remembered (one per client, the oldest forgotten first).
MAX_DECISIONS = 65536


class V6onlyDecision(NamedTuple):
    """Whether a client was told IPv6-only (RFC 8925), when, and the policy's reason."""

    time: float
    mac: str
    subnet: str
    v6only: bool
    why: str


class Dhcp4Server:
    def __init__(
        self,
        subnets: list[Subnet],
        table: LeaseTable,
        policy: V6OnlyPolicy | None = None,
        limits: ClientLimits | None = None,
        served: set[str] | None = None,
    ) -> None:
        """``served``: the interfaces messages are accepted on (default: the
        subnets' own interfaces); relayed messages must arrive on one too."""
        self.subnets = subnets
        self.table = table
        self.policy = policy or V6OnlyPolicy()
        self.limits = limits or ClientLimits()
        self.stats = Stats()
        self.by_interface = {s.interface: s for s in subnets if s.interface}
        self.served = set(served) if served is not None else set(self.by_interface)
        self.by_relay: dict[int, Subnet] = {}
        for s in subnets:
            for r in s.relay_set:
                if r not in self.by_relay or s.contains(r):
                    self.by_relay[r] = s
        self.pools = {s.name: FreePool(s.pools, s.reserved, self._held) for s in subnets}
        lim = self.limits
        self.rate = RateLimiter(lim.client_rate, lim.client_burst, lim.max_clients)
        self.declines = DeclineLimiter(lim.max_declines, lim.decline_window, lim.max_clients)
        self.last_decision = ""
        #: The last option-108 decision per client (``ctl leases --v6only``), bounded.
        self.decisions: OrderedDict[bytes, V6onlyDecision] = OrderedDict()
        self._now = 0.0
        #: What the last ``handle`` decided, in words, for the adapter's log ("" = nothing
        #: to tell: an OFFER, an ignored message). Reset by every ``handle``.
        self.event = ""

    def adopt(self, old: Dhcp4Server) -> None:
        """Take over the counters and per-client state of the server this one replaces
        (a configuration reload: the lease table is shared already)."""
        self.stats = old.stats
        self.decisions = old.decisions
        if (old.limits.client_rate, old.limits.client_burst) == (
            self.limits.client_rate,
            self.limits.client_burst,
        ):
            self.rate = old.rate
        if (old.limits.max_declines, old.limits.decline_window) == (
            self.limits.max_declines,
            self.limits.decline_window,
        ):
            self.declines = old.declines

    def _held(self, a: int) -> float | None:
        lease = self.table.at(a)
        return lease.expires if lease is not None else None

    # -- entry point -------------------------------------------------------------------

    def handle(
        self, data: bytes, now: float, interface: str | None, source: str | None = None
    ) -> Reply | None:
        """One datagram received on ``interface`` from IPv4 address ``source``."""
        self._now = now
        self.event = ""
        if interface is None or interface not in self.served:
            return self._drop(DROP_INTERFACE)
        try:
            msg = Message.from_wire(data)
            if msg.op != BOOTREQUEST:
                return self._ignore("not a BOOTREQUEST")
            mtype = msg.message_type
            if mtype is None:
                return self._ignore("BOOTP without DHCP message type")
            name = _MTYPE_NAMES.get(mtype)
            if name is None:
                return self._ignore(f"message type {mtype}")
            if msg.giaddr != ZERO4:
                sn = self.by_relay.get(int.from_bytes(msg.giaddr, "big"))
                if sn is None:
                    return self._drop(DROP_RELAY)
                if _aton(source) not in sn.relay_set:
                    return self._drop(DROP_RELAY_SOURCE)
                if Opt.RELAY_AGENT in msg.options:
                    msg.relay_agent()  # validates option 82 (raises DhcpError)
            else:
                if msg.options.pop(Opt.RELAY_AGENT, None) is not None:
                    # RFC 3046 §2.1: option 82 is the relay agent's; a client's own is
                    # not trusted (no class match, no echo).
                    self.stats.option82_ignored += 1
                sn = self.by_interface.get(interface)
                if sn is None:
                    return self._ignore("no subnet for the link")
            if not self.rate.allow(msg.client_key, now):
                return self._drop(DROP_RATE, msg)
            self.stats.requests[name] += 1
            return self._dispatch(msg, MessageType(mtype), sn, now, interface)
        except DhcpError:
            self.stats.malformed += 1
            return None

    def _ignore(self, why: str) -> Reply | None:
        self.stats.ignored[why] += 1
        return None

    def _drop(self, reason: str, msg: Message | None = None) -> Reply | None:
        self.stats.dropped[reason] += 1
        if msg is not None:
            self.stats.last_client[reason] = msg.mac_text
        return None

    # -- the lease table and the free pools change together ---------------------------

    def _put(self, sn: Subnet, lease: Lease, persist: bool) -> None:
        self.table.put(lease, persist=persist)
        self.pools[sn.name].leased(lease.address, lease.expires)

    def _remove(self, sn: Subnet, a: int, persist: bool = True) -> None:
        self.table.remove(a, persist=persist)
        self.pools[sn.name].freed(a)

    def _dispatch(
        self, msg: Message, mtype: MessageType, sn: Subnet, now: float, iface: str | None
    ) -> Reply | None:
        if mtype == MessageType.DISCOVER:
            return self._discover(msg, sn, now, iface)
        if mtype == MessageType.REQUEST:
            return self._request(msg, sn, now, iface)
        if mtype == MessageType.DECLINE:
            return self._decline(msg, sn, now)
        if mtype == MessageType.RELEASE:
            return self._release(msg, sn)
        if mtype == MessageType.INFORM:
            return self._inform(msg, sn, iface)
        return self._ignore(f"{mtype.name} from a client")

    # -- RFC 8925 ----------------------------------------------------------------------

    def _v6only(self, msg: Message, sn: Subnet) -> bool:
        on, why = self.policy.decide(msg, sn.name, sn.v6only, sn.v6only_rollout)
        self.last_decision = why
        self.stats.v6only_decisions["yes" if on else "no", why] += 1
        d = self.decisions
        d.pop(msg.client_key, None)
        d[msg.client_key] = V6onlyDecision(self._now, msg.mac_text, sn.name, on, why)
        if len(d) > MAX_DECISIONS:
            d.popitem(last=False)
        return on

    def _v6only_reply(
        self, msg: Message, sn: Subnet, mtype: MessageType, iface: str | None
    ) -> Reply:
        """RFC 8925 §3.3: option 108 with V6ONLY_WAIT, yiaddr 0.0.0.0, no lease."""
        r = self._base(msg, sn, mtype)
        wait = max(sn.v6only_wait, MIN_V6ONLY_WAIT)
        r.options[Opt.V6ONLY_PREFERRED] = u32(wait)
        self.event = (
            f"{mtype.name}: {msg.mac_text} told IPv6-only for {wait} s on {sn.name} "
            f"(option 108, RFC 8925; {self.last_decision})"
        )
        if Opt.AUTO_CONFIGURE in msg.options:
            # RFC 2563: DoNotAutoConfigure, or dhcpcd falls back to IPv4 link-local.
            r.options[Opt.AUTO_CONFIGURE] = b"\x00"
        self._echo_relay(msg, r)
        # The client gives up IPv4 here: an address it held is free again.
        old = self.table.of_client(sn.name, msg.client_key)
        if old is not None:
            self._remove(sn, old.address)
        return self._send(msg, r, iface, nak=False)

    # -- message types -----------------------------------------------------------------

    def _discover(self, msg: Message, sn: Subnet, now: float, iface: str | None) -> Reply | None:
        if self._v6only(msg, sn):
            self.stats.offers_v6only += 1
            self.stats.replies["OFFER"] += 1
            return self._v6only_reply(msg, sn, MessageType.OFFER, iface)
        key = msg.client_key
        if self.declines.blocked(key, now):
            return self._drop(DROP_DECLINED_CLIENT, msg)
        a = self._allocate(msg, sn, key, now)
        if a is None:
            self.stats.exhausted[sn.name] += 1
            return self._ignore("pool exhausted")
        held = self.table.at(a)
        if held is None or held.client_key != key or held.state != BOUND:
            hold = now + self.limits.offer_hold_time
            self._put(
                sn, Lease(a, key, msg.mac_text, sn.name, hold, OFFERED, _hostname(msg)), False
            )
        r = self._base(msg, sn, MessageType.OFFER)
        r.yiaddr = a.to_bytes(4, "big")
        self._config_options(msg, sn, r, lease=True)
        self.stats.offers_v4 += 1
        self.stats.replies["OFFER"] += 1
        return self._send(msg, r, iface, nak=False)

    def _request(self, msg: Message, sn: Subnet, now: float, iface: str | None) -> Reply | None:
        key = msg.client_key
        sid = msg.ip_option(Opt.SERVER_ID)
        req = msg.ip_option(Opt.REQUESTED_IP)
        ciaddr = int.from_bytes(msg.ciaddr, "big")
        if sid is not None:
            # SELECTING: the client answers an OFFER.
            if sid != sn.server_address.packed:
                lease = self.table.of_client(sn.name, key)
                if lease is not None and lease.state == OFFERED:
                    self._remove(sn, lease.address, persist=False)
                return self._ignore("client chose another server")
            if self._v6only(msg, sn):
                return self._v6only_ack(msg, sn, iface)
            if self.declines.blocked(key, now):
                return self._drop(DROP_DECLINED_CLIENT, msg)
            if req is None:
                return self._nak(msg, sn, iface, "no requested address")
            a = int.from_bytes(req, "big")
            if not self._may_have(msg, sn, a, now):
                return self._nak(msg, sn, iface, "requested address not available")
            return self._ack(msg, sn, a, now, iface)
        if req is not None and ciaddr == 0:
            # INIT-REBOOT (RFC 2131 §4.3.2)
            if self._v6only(msg, sn):
                return self._v6only_ack(msg, sn, iface)
            a = int.from_bytes(req, "big")
            if not sn.contains(a):
                return self._nak(msg, sn, iface, "requested address on the wrong network")
            lease = self.table.at(a)
            if lease is not None and lease.expires > now and lease.client_key != key:
                return self._nak(msg, sn, iface, "address leased to another client")
            if lease is None or lease.client_key != key:
                return self._ignore("INIT-REBOOT without a record (RFC 2131 §4.3.2)")
            return self._ack(msg, sn, a, now, iface)
        if ciaddr:
            # RENEWING (unicast) or REBINDING (broadcast): option 108 is not sent here.
            if not sn.contains(ciaddr):
                return self._nak(msg, sn, iface, "ciaddr on the wrong network")
            if not self._may_have(msg, sn, ciaddr, now):
                return self._nak(msg, sn, iface, "lease belongs to another client")
            return self._ack(msg, sn, ciaddr, now, iface)
        return self._ignore("REQUEST in no known state")

    def _may_have(self, msg: Message, sn: Subnet, a: int, now: float) -> bool:
        key = msg.client_key
        if not sn.contains(a):
            return False
        lease = self.table.at(a)
        if lease is not None and lease.state == DECLINED and lease.expires > now:
            return False
        if not self.table.is_free(a, now, key):
            return False
        owner = self._reserved_for(msg, sn)
        if a in sn.reserved and owner != a:
            return False
        return sn.in_pool(a) or owner == a

    def _v6only_ack(self, msg: Message, sn: Subnet, iface: str | None) -> Reply:
        self.stats.acks_v6only += 1
        self.stats.replies["ACK"] += 1
        return self._v6only_reply(msg, sn, MessageType.ACK, iface)

    def _ack(self, msg: Message, sn: Subnet, a: int, now: float, iface: str | None) -> Reply:
        old = self.table.of_client(sn.name, msg.client_key)
        if old is not None and old.address != a:
            # the client moved to another address: its old one is free again
            self._remove(sn, old.address, persist=old.state != OFFERED)
        lease = Lease(
            a, msg.client_key, msg.mac_text, sn.name, now + sn.lease_time, BOUND, _hostname(msg)
        )
        self._put(sn, lease, persist=True)  # on disk before the client hears of it
        verb = "renewed" if old is not None and old.address == a and old.state == BOUND else "given"
        self.event = (
            f"lease {verb}: {_ntoa(a.to_bytes(4, 'big'))} to {msg.mac_text} on {sn.name} for "
            f"{sn.lease_time} s (no option 108: {self.last_decision or 'not decided'})"
        )
        r = self._base(msg, sn, MessageType.ACK)
        r.yiaddr = a.to_bytes(4, "big")
        r.ciaddr = msg.ciaddr
        self._config_options(msg, sn, r, lease=True)
        self.stats.replies["ACK"] += 1
        return self._send(msg, r, iface, nak=False)

    def _nak(self, msg: Message, sn: Subnet, iface: str | None, why: str) -> Reply:
        r = self._base(msg, sn, MessageType.NAK)
        r.options[Opt.MESSAGE] = why.encode()
        self._echo_relay(msg, r)
        self.stats.replies["NAK"] += 1
        self.last_decision = why
        self.event = f"NAK to {msg.mac_text} on {sn.name}: {why}"
        return self._send(msg, r, iface, nak=True)

    def _decline(self, msg: Message, sn: Subnet, now: float) -> Reply | None:
        req = msg.ip_option(Opt.REQUESTED_IP)
        if req is None:
            return self._ignore("DECLINE without address")
        a = int.from_bytes(req, "big")
        lease = self.table.at(a)
        if lease is None or lease.client_key != msg.client_key:
            return self._ignore("DECLINE of an address not leased to the client")
        if not self.declines.allow(msg.client_key, now):
            # not honoured: the address stays the client's, no other is burned
            return self._drop(DROP_DECLINE, msg)
        # RFC 2131 §4.3.3: mark the address as not available (an address conflict).
        self._put(
            sn, Lease(a, b"declined", lease.mac, sn.name, now + sn.decline_hold, DECLINED), True
        )
        self.event = f"DECLINE of {_ntoa(req)} by {msg.mac_text}: unusable for {sn.decline_hold} s"
        return None

    def _release(self, msg: Message, sn: Subnet) -> Reply | None:
        a = int.from_bytes(msg.ciaddr, "big")
        lease = self.table.at(a)
        if lease is None or lease.client_key != msg.client_key:
            return self._ignore("RELEASE of an address not leased to the client")
        self._remove(sn, a)
        self.event = f"lease released: {_ntoa(msg.ciaddr)} by {msg.mac_text} on {sn.name}"
        return None

    def _inform(self, msg: Message, sn: Subnet, iface: str | None) -> Reply:
        r = self._base(msg, sn, MessageType.ACK)
        r.ciaddr = msg.ciaddr
        self._config_options(msg, sn, r, lease=False)  # RFC 2131 §3.4: no lease time
        self.stats.replies["ACK"] += 1
        return self._send(msg, r, iface, nak=False)

    # -- building replies ----------------------------------------------------------

    def _base(self, msg: Message, sn: Subnet, mtype: MessageType) -> Message:
        return Message(
            op=BOOTREPLY,
            htype=msg.htype,
            hlen=msg.hlen,
            xid=msg.xid,
            flags=msg.flags,
            giaddr=msg.giaddr,
            chaddr=msg.chaddr,
            options={Opt.MESSAGE_TYPE: _MTYPE_BYTES[mtype], Opt.SERVER_ID: sn.opt_server},
        )

    def _config_options(self, msg: Message, sn: Subnet, r: Message, lease: bool) -> None:
        o = r.options
        if lease:
            o[Opt.LEASE_TIME], o[Opt.RENEWAL_TIME], o[Opt.REBINDING_TIME] = sn.opt_lease
        o[Opt.SUBNET_MASK] = sn.opt_mask
        if sn.opt_routers:
            o[Opt.ROUTER] = sn.opt_routers
        if sn.opt_dns:
            o[Opt.DNS] = sn.opt_dns
        if sn.opt_domain:
            o[Opt.DOMAIN_NAME] = sn.opt_domain
        if sn.opt_search and Opt.DOMAIN_SEARCH in msg.param_requests():
            o[Opt.DOMAIN_SEARCH] = sn.opt_search
        self._echo_relay(msg, r)

    def _echo_relay(self, msg: Message, r: Message) -> None:
        # RFC 3046 §2.2: the server copies option 82 into its reply.
        if Opt.RELAY_AGENT in msg.options:
            r.options[Opt.RELAY_AGENT] = msg.options[Opt.RELAY_AGENT]

    def _send(self, msg: Message, r: Message, iface: str | None, nak: bool) -> Reply:
        if msg.giaddr != ZERO4:
            if nak:
                r.flags |= FLAG_BROADCAST  # RFC 2131 §4.3.2: relay broadcasts a NAK
            return Reply(r, _ntoa(msg.giaddr), SERVER_PORT, None, False)
        if not nak and msg.ciaddr != ZERO4:
            return Reply(r, _ntoa(msg.ciaddr), CLIENT_PORT, iface, False)
        return Reply(r, BROADCAST, CLIENT_PORT, iface, True)

    # -- allocation -------------------------------------------------------------------

    def _reserved_for(self, msg: Message, sn: Subnet) -> int | None:
        """The address reserved for this client (by client id, else by MAC), if any."""
        if not sn.reservations:
            return None
        cid = msg.options.get(Opt.CLIENT_ID)
        if cid:
            r = sn.reservations.get(b"cid:" + cid)
            if r is not None:
                return r
        return sn.reservations.get(msg.mac)

    def _allocate(self, msg: Message, sn: Subnet, key: bytes, now: float) -> int | None:
        table = self.table
        r = self._reserved_for(msg, sn)
        if r is not None:
            return r if table.is_free(r, now, key) else None
        lease = table.of_client(sn.name, key)
        if lease is not None and lease.state != DECLINED:
            return lease.address
        req = msg.ip_option(Opt.REQUESTED_IP)
        if req is not None:
            a = int.from_bytes(req, "big")
            if sn.in_pool(a) and a not in sn.reserved and table.is_free(a, now, key):
                return a
        # The least recently used free address: O(log n), full pool or not (pool.py).
        return self.pools[sn.name].take(now, table.is_free)

    def pool_usage(self, now: float) -> dict[str, PoolUsage]:
        """Per subnet: addresses bound, offered, declined and free (one pass over the table)."""
        counts = {s.name: [0, 0, 0] for s in self.subnets}
        slot = {BOUND: 0, OFFERED: 1, DECLINED: 2}
        for lease in self.table.by_addr.values():
            c = counts.get(lease.subnet)
            if c is not None and lease.expires > now:
                c[slot.get(lease.state, 0)] += 1
        return {
            s.name: PoolUsage(b, o, d, max(0, s.size - b - o - d))
            for s in self.subnets
            for b, o, d in (counts[s.name],)
        }


_MTYPE_BYTES = {t: bytes([t]) for t in MessageType}
_MTYPE_NAMES = {int(t): t.name for t in MessageType}


def _ntoa(b: bytes) -> str:
    return f"{b[0]}.{b[1]}.{b[2]}.{b[3]}"


def _aton(text: str | None) -> int | None:
    """A dotted-quad source address as an int (``None`` if it is not one); cached, since
    relayed messages come from a few relay agents."""
    if text is None:
        return None
    v = _SOURCES.get(text, -1)
    if v != -1:
        return v
    try:
        v = int(ipaddress.IPv4Address(text))
    except ValueError:
        v = None
    if len(_SOURCES) >= 4096:
        _SOURCES.clear()
    _SOURCES[text] = v
    return v


_SOURCES: dict[str, int | None] = {}


def _hostname(msg: Message) -> str:
    return msg.options.get(Opt.HOSTNAME, b"").decode("utf-8", "replace")[:64]
