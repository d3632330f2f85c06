"""The DHCPv4 core under attack (issue 10), on a virtual clock: who is served, option 82
trust, offers that hold the pool, a full pool, per-client rate and DECLINE limits.

Each test sends what the attack sent and asserts what comes back (nothing, for a drop),
what is bound, and the counter that says why.
"""

from __future__ import annotations

import ipaddress

from v6mostly.dhcp4.leases import BOUND, Lease, LeaseTable, MemoryStore
from v6mostly.dhcp4.limits import ClientLimits, DeclineLimiter, RateLimiter
from v6mostly.dhcp4.message import Message, MessageType, Opt, build_suboptions
from v6mostly.dhcp4.policy import ClientClass, TextMatch, V6OnlyPolicy
from v6mostly.dhcp4.pool import FreePool
from v6mostly.dhcp4.server import Dhcp4Server, Subnet

SERVER = ipaddress.IPv4Address("198.51.100.1")
RELAY = ipaddress.IPv4Address("198.51.100.2")
A = ipaddress.IPv4Address


def lan(first: str = "198.51.100.10", last: str = "198.51.100.109", **kw: object) -> Subnet:
    args: dict[str, object] = dict(
        name="lan0",
        network=ipaddress.IPv4Network("198.51.100.0/24"),
        pools=[(int(A(first)), int(A(last)))],
        server_address=SERVER,
        interface="lan0",
        lease_time=600,
        relays=[RELAY],
    )
    args.update(kw)
    return Subnet(**args)  # type: ignore[arg-type]


def branch(relay: str = "192.0.2.1") -> Subnet:
    return Subnet(
        name="branch",
        network=ipaddress.IPv4Network("192.0.2.0/24"),
        pools=[(int(A("192.0.2.10")), int(A("192.0.2.59")))],
        server_address=SERVER,
        relays=[A(relay)],
    )


def server(*subnets: Subnet, policy: V6OnlyPolicy | None = None, **limits: float) -> Dhcp4Server:
    return Dhcp4Server(
        list(subnets) or [lan()],
        LeaseTable(MemoryStore()),
        policy,
        ClientLimits(**limits),  # type: ignore[arg-type]
        served={"lan0"},
    )


def mac(i: int) -> bytes:
    return bytes([2, 0, 0, (i >> 16) & 255, (i >> 8) & 255, i & 255])


def dhcp(
    mtype: MessageType,
    m: bytes = mac(1),
    giaddr: str | None = None,
    prl: bytes = bytes([1, 3, 6]),
    xid: int = 1,
    **opts: bytes,
) -> bytes:
    o: dict[int, bytes] = {Opt.MESSAGE_TYPE: bytes([mtype]), Opt.PARAM_REQUEST: prl}
    for k, v in opts.items():
        o[Opt[k.upper()]] = v
    msg = Message(xid=xid, chaddr=m, options=o)
    if giaddr:
        msg.giaddr = A(giaddr).packed
        msg.hops = 1
    return msg.to_wire()


def bound(srv: Dhcp4Server, subnet: str = "lan0") -> int:
    return srv.pool_usage(0.0)[subnet].bound


# -- forged relays ----------------------------------------------------------------------


def test_forged_relays_from_outside_bind_nothing() -> None:
    """The issue's attack: relayed DISCOVER/REQUESTs from the Internet side and through
    the Pref64 (both arrive on an interface that is not in the site file)."""
    srv = server(lan(), branch())
    for i in range(50):
        for iface, src in (("wan0", "203.0.113.9"), ("siit0", "192.0.2.200")):
            d = dhcp(MessageType.DISCOVER, mac(i), giaddr=str(RELAY))
            assert srv.handle(d, 0.0, iface, src) is None
            r = dhcp(
                MessageType.REQUEST,
                mac(i),
                giaddr="192.0.2.1",
                server_id=SERVER.packed,
                requested_ip=A("192.0.2.10").packed,
            )
            assert srv.handle(r, 0.0, iface, src) is None
    assert srv.stats.dropped == {"interface_not_served": 200}
    assert srv.stats.replies == {}
    assert bound(srv) == 0 and bound(srv, "branch") == 0


def test_relay_trust_giaddr_and_source_must_be_listed() -> None:
    srv = server(lan(), branch())
    # giaddr nobody listed
    assert (
        srv.handle(dhcp(MessageType.DISCOVER, giaddr="198.51.100.77"), 0, "lan0", "198.51.100.77")
        is None
    )
    # a listed relay's giaddr, forged by another host on a served link
    assert (
        srv.handle(dhcp(MessageType.DISCOVER, giaddr="192.0.2.1"), 0, "lan0", "198.51.100.66")
        is None
    )
    assert srv.stats.dropped == {"relay_not_trusted": 1, "relay_source_not_trusted": 1}
    # the real relay
    r = srv.handle(dhcp(MessageType.DISCOVER, giaddr="192.0.2.1"), 0, "lan0", "192.0.2.1")
    assert r is not None and (r.address, r.port) == ("192.0.2.1", 67)
    assert r.message.yiaddr == A("192.0.2.10").packed
    # the relay on the LAN, listed for lan0, relaying into lan0's pool
    r = srv.handle(dhcp(MessageType.DISCOVER, mac(2), giaddr=str(RELAY)), 0, "lan0", str(RELAY))
    assert r is not None and r.message.yiaddr == A("198.51.100.10").packed


def test_junk_never_raises() -> None:
    srv = server()
    for data in (b"", b"\x01" * 10, b"\x01" * 300, bytes(300)):
        assert srv.handle(data, 0.0, "lan0", "0.0.0.0") is None
        assert srv.handle(data, 0.0, None, None) is None
    assert srv.handle(dhcp(MessageType.DISCOVER, giaddr=str(RELAY)), 0, "lan0", "x") is None
    assert srv.stats.dropped["relay_source_not_trusted"] == 1


# -- option 82 from a direct client -----------------------------------------------------

PRINTERS = ClientClass("printers", circuit_id=TextMatch(equals="printer-port"), v6only=False)


def test_option82_from_a_direct_client_is_ignored() -> None:
    srv = server(lan(v6only=True), policy=V6OnlyPolicy([PRINTERS]))
    own82 = build_suboptions({1: b"printer-port"})
    r = srv.handle(dhcp(MessageType.DISCOVER, prl=bytes([1, 3, 108]), relay_agent=own82), 0, "lan0")
    assert r is not None
    assert Opt.V6ONLY_PREFERRED in r.message.options  # the subnet default, not the class
    assert r.message.yiaddr == b"\0\0\0\0"
    assert Opt.RELAY_AGENT not in r.message.options  # not echoed either
    assert srv.stats.option82_ignored == 1
    assert srv.last_decision == "subnet lan0"
    # the same option 82 from the trusted relay does select the class
    r = srv.handle(
        dhcp(
            MessageType.DISCOVER,
            mac(2),
            giaddr=str(RELAY),
            prl=bytes([1, 3, 108]),
            relay_agent=own82,
        ),
        0,
        "lan0",
        str(RELAY),
    )
    assert r is not None and r.message.yiaddr != b"\0\0\0\0"
    assert r.message.options[Opt.RELAY_AGENT] == own82
    assert srv.last_decision == "class printers: v6only off"


# -- offers -----------------------------------------------------------------------------


def test_offers_are_counted_and_short_lived() -> None:
    srv = server(client_rate=1000, client_burst=1000)  # 100 addresses, default hold 10 s
    for i in range(120):
        srv.handle(dhcp(MessageType.DISCOVER, mac(i)), 0.0, "lan0")
    assert srv.stats.offers_v4 == 100 and srv.stats.exhausted["lan0"] == 20
    assert srv.pool_usage(1.0)["lan0"] == (0, 100, 0, 0)  # bound, offered, declined, free
    # the legitimate client, during the hold: nothing; after it: a lease
    assert srv.handle(dhcp(MessageType.DISCOVER, mac(999)), 5.0, "lan0") is None
    r = srv.handle(dhcp(MessageType.DISCOVER, mac(999)), 10.0, "lan0")
    assert r is not None and r.message.yiaddr == A("198.51.100.10").packed
    assert srv.pool_usage(10.0)["lan0"] == (0, 1, 0, 99)


def test_offer_hold_time_is_configurable() -> None:
    srv = server(lan(last="198.51.100.10"), offer_hold_time=2)
    assert srv.handle(dhcp(MessageType.DISCOVER, mac(1)), 0.0, "lan0") is not None
    assert srv.handle(dhcp(MessageType.DISCOVER, mac(2)), 1.9, "lan0") is None
    assert srv.handle(dhcp(MessageType.DISCOVER, mac(2)), 2.0, "lan0") is not None


# -- a full pool ------------------------------------------------------------------------


def test_full_slash16_costs_no_scan() -> None:
    """At a full /16 a DISCOVER looks at no address at all (it used to look at 65 534)."""
    sn = lan(
        "10.0.0.1",
        "10.0.255.254",
        network=ipaddress.IPv4Network("10.0.0.0/16"),
        server_address=A("10.0.0.1"),
    )
    table = LeaseTable(MemoryStore())
    for a in range(sn.pools[0][0], sn.pools[0][1] + 1):
        table.put(Lease(a, b"k%d" % a, "", sn.name, 3600.0, BOUND), persist=False)
    srv = Dhcp4Server([sn], table, None, ClientLimits(), served={"lan0"})
    looked = 0
    is_free = srv.table.is_free

    def counting(a: int, now: float, key: bytes | None = None) -> bool:
        nonlocal looked
        looked += 1
        return is_free(a, now, key)

    srv.table.is_free = counting  # type: ignore[method-assign]
    for i in range(100):
        assert srv.handle(dhcp(MessageType.DISCOVER, mac(i)), 1.0, "lan0") is None
    assert looked == 0
    assert srv.stats.exhausted["lan0"] == 100
    assert srv.pool_usage(1.0)["lan0"] == (65534, 0, 0, 0)
    # one lease ends: the next DISCOVER finds it in one step
    srv.table.put(Lease(int(A("10.0.7.7")), b"x", "", "lan0", 2.0, BOUND), persist=False)
    srv.pools["lan0"].leased(int(A("10.0.7.7")), 2.0)
    looked = 0
    r = srv.handle(dhcp(MessageType.DISCOVER, mac(500)), 3.0, "lan0")
    assert r is not None and r.message.yiaddr == A("10.0.7.7").packed
    assert looked <= 2


def test_pool_gives_least_recently_used_first_and_takes_back_released() -> None:
    taken: dict[int, float] = {}
    pool = FreePool([(1, 5)], {3}, lambda a: taken.get(a))

    def is_free(a: int, now: float) -> bool:
        return a not in taken or taken[a] <= now

    got = []
    for _ in range(4):
        a = pool.take(0.0, is_free)
        assert a is not None
        taken[a] = 10.0
        pool.leased(a, 10.0)
        got.append(a)
    assert got == [1, 2, 4, 5]  # 3 is reserved
    assert pool.take(0.0, is_free) is None
    del taken[2]
    pool.freed(2)
    assert pool.take(0.0, is_free) == 2
    taken[2] = 5.0
    pool.leased(2, 5.0)
    assert pool.take(9.0, is_free) == 2  # its lease ended at 5
    assert pool.take(10.0, is_free) == 1  # the others at 10, in order


def test_pool_compaction_keeps_the_current_expiry() -> None:
    taken: dict[int, float] = {1: 100.0}
    pool = FreePool([(1, 1)], set(), lambda a: taken.get(a))
    for t in range(2000):  # renewals: stale entries pile up, then are compacted
        pool.leased(1, 100.0 + t)
    taken[1] = 5.0  # re-leased for less time than before
    pool.leased(1, 5.0)
    for _ in range(1100):
        pool.leased(1, 5.0)
    assert len(pool.expiries) < 1100
    assert pool.take(6.0, lambda a, now: taken[a] <= now) == 1


# -- per-client limits ------------------------------------------------------------------


def test_client_rate_limit() -> None:
    srv = server()  # 10/s, burst 20
    replies = sum(
        srv.handle(dhcp(MessageType.DISCOVER, xid=i), 0.0, "lan0") is not None for i in range(200)
    )
    assert replies == 20 and srv.stats.dropped["client_rate"] == 180
    assert srv.stats.last_client["client_rate"] == "02:00:00:00:00:01"  # for the log line
    # another client is not affected
    assert srv.handle(dhcp(MessageType.DISCOVER, mac(2)), 0.0, "lan0") is not None
    # one second later: ten more
    replies = sum(
        srv.handle(dhcp(MessageType.DISCOVER, xid=i), 1.0, "lan0") is not None for i in range(50)
    )
    assert replies == 10


def _bind_and_decline(srv: Dhcp4Server, now: float, m: bytes = mac(1)) -> bytes | None:
    o = srv.handle(dhcp(MessageType.DISCOVER, m), now, "lan0")
    if o is None:
        return None
    a = o.message.yiaddr
    ack = srv.handle(
        dhcp(MessageType.REQUEST, m, server_id=SERVER.packed, requested_ip=a), now, "lan0"
    )
    assert ack is not None and ack.message.message_type == MessageType.ACK
    srv.handle(dhcp(MessageType.DECLINE, m, server_id=SERVER.packed, requested_ip=a), now, "lan0")
    return a


def test_decline_loop_burns_at_most_max_declines() -> None:
    srv = server(client_rate=1000, client_burst=1000)  # max 3 DECLINEs per 3600 s
    got = [_bind_and_decline(srv, float(t)) for t in range(0, 200, 2)]
    assert len([a for a in got if a is not None]) == 3
    assert srv.pool_usage(200.0)["lan0"].declined == 3
    assert srv.stats.dropped["client_over_decline_limit"] == 97
    # others still get addresses
    assert srv.handle(dhcp(MessageType.DISCOVER, mac(2)), 200.0, "lan0") is not None
    # after the window the client is served again (and may decline again)
    assert _bind_and_decline(srv, 3601.0) is not None


def test_decline_over_the_limit_is_not_honoured() -> None:
    srv = server(client_rate=1000, client_burst=1000, max_declines=1)
    assert _bind_and_decline(srv, 0.0) is not None
    # a client that got its address before using up its DECLINEs (e.g. a renewal)
    srv.declines.seen.clear()
    srv.declines.allow(b"other", 0.0)
    a = _bind_and_decline(srv, 1.0, mac(5))
    assert a is not None
    a = _bind_and_decline(srv, 2.0, mac(5))
    assert a is None  # blocked after its one DECLINE
    assert srv.pool_usage(3.0)["lan0"].declined == 2


def test_limiters_bounded_memory() -> None:
    rl = RateLimiter(10, 20, max_clients=100)
    for i in range(1000):
        rl.allow(b"%d" % i, 0.0)
    assert len(rl.buckets) <= 100
    dl = DeclineLimiter(3, 3600, max_clients=100)
    for i in range(1000):
        dl.allow(b"%d" % i, float(i))
    assert len(dl.seen) <= 100
    assert DeclineLimiter(0, 3600).allow(b"x", 0.0) is False


def test_reload_keeps_counters_and_client_state() -> None:
    old = server()
    for i in range(30):
        old.handle(dhcp(MessageType.DISCOVER, xid=i), 0.0, "lan0")
    new = Dhcp4Server([lan()], old.table, None, ClientLimits(), served={"lan0"})
    new.adopt(old)
    assert new.stats.dropped["client_rate"] == 10
    assert new.handle(dhcp(MessageType.DISCOVER), 0.0, "lan0") is None
    # the offer made before the reload is still held for that client
    assert new.pool_usage(0.0)["lan0"].offered == 1


def test_reload_applies_new_limits_and_relays() -> None:
    """SIGHUP with changed [dhcp4] limits and [[relayed]] relays: the rebuilt server
    uses the new values (its client state starts again only where the limit changed)."""
    old = server(lan(), branch(), client_rate=10, client_burst=20)
    for i in range(25):
        old.handle(dhcp(MessageType.DISCOVER, xid=i), 0.0, "lan0")
    assert old.stats.dropped["client_rate"] == 5
    new = Dhcp4Server(
        [lan(), branch("192.0.2.2")], old.table, None, ClientLimits(client_rate=100, client_burst=200),
        served={"lan0"},
    )  # fmt: skip
    new.adopt(old)
    # a higher burst: the same client is answered again at once
    assert new.handle(dhcp(MessageType.DISCOVER, xid=99), 0.0, "lan0") is not None
    # the old relay is no longer trusted for the branch, the new one is
    rel = dhcp(MessageType.DISCOVER, mac(7), giaddr="192.0.2.1")
    assert new.handle(rel, 0.0, "lan0", "192.0.2.1") is None
    rel2 = dhcp(MessageType.DISCOVER, mac(8), giaddr="192.0.2.2")
    r = new.handle(rel2, 0.0, "lan0", "192.0.2.2")
    assert r is not None and r.address == "192.0.2.2"
