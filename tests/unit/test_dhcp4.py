"""DHCPv4 codec and server core: exact bytes, RFC 2131 states, RFC 8925, relays, leases.

Time is a parameter (a virtual clock); the lease store is in memory or a
temporary SQLite file. scapy decodes our bytes as an independent oracle.
"""

from __future__ import annotations

import contextlib
import ipaddress
import random
from pathlib import Path

import pytest
from harness import mutate
from scapy.all import BOOTP, DHCP

from v6mostly.dhcp4.leases import LeaseTable, MemoryStore
from v6mostly.dhcp4.message import (
    FLAG_BROADCAST,
    DhcpError,
    Message,
    MessageType,
    Opt,
    build_suboptions,
    from_u32,
)
from v6mostly.dhcp4.policy import ClientClass, TextMatch, V6OnlyPolicy, in_rollout
from v6mostly.dhcp4.server import Dhcp4Server, Subnet
from v6mostly.storage.sqlite_leases import SqliteStore

MAC = bytes.fromhex("020000000001")
MAC2 = bytes.fromhex("020000000002")
SERVER = ipaddress.IPv4Address("198.51.100.1")


def subnet(**kw: object) -> Subnet:
    args: dict[str, object] = dict(
        name="lan0",
        network=ipaddress.IPv4Network("198.51.100.0/24"),
        pools=[
            (
                int(ipaddress.IPv4Address("198.51.100.10")),
                int(ipaddress.IPv4Address("198.51.100.12")),
            )
        ],
        server_address=SERVER,
        interface="lan0",
        routers=["198.51.100.1"],
        dns=["198.51.100.1"],
        domain="example.net",
        lease_time=600,
    )
    args.update(kw)
    return Subnet(**args)  # type: ignore[arg-type]


def server(
    store: object | None = None, policy: V6OnlyPolicy | None = None, **kw: object
) -> Dhcp4Server:
    return Dhcp4Server([subnet(**kw)], LeaseTable(store or MemoryStore()), policy)  # type: ignore[arg-type]


def msg(
    mtype: MessageType, mac: bytes = MAC, xid: int = 1, prl: bytes = bytes([1, 3, 6]), **opts: bytes
) -> bytes:
    o: dict[int, bytes] = {Opt.MESSAGE_TYPE: bytes([mtype]), Opt.PARAM_REQUEST: prl}
    for k, v in opts.items():
        o[Opt[k.upper()]] = v
    m = Message(xid=xid, chaddr=mac, options=o)
    return m.to_wire()


def ip(a: str) -> bytes:
    return ipaddress.IPv4Address(a).packed


# -- codec -----------------------------------------------------------------------------


def test_discover_bytes_exact_and_scapy_agrees() -> None:
    w = msg(MessageType.DISCOVER, xid=0x01020304)
    assert len(w) == 300
    assert w[:12] == bytes.fromhex("010106000102030400000000")
    assert w[28:34] == MAC
    assert w[236:240] == bytes.fromhex("63825363")
    assert w[240:249] == bytes.fromhex("3501013703010306ff")
    p = BOOTP(w)
    assert p[BOOTP].xid == 0x01020304
    assert ("message-type", 1) in p[DHCP].options


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"\x01" * 100, "shorter"),
        (bytes(236) + b"\x00\x00\x00\x00", "magic"),
        (
            bytes([1, 1, 6, 0]) + bytes(232) + bytes.fromhex("63825363") + b"\x35\x05\x01",
            "past the end",
        ),
        (
            bytes([1, 1, 6, 0]) + bytes(232) + bytes.fromhex("63825363") + b"\x35\x02\x01\x01\xff",
            "length 2",
        ),
        (bytes([1, 1, 17, 0]) + bytes(232) + bytes.fromhex("63825363") + b"\xff", "hlen"),
    ],
)
def test_malformed_messages_raise_dhcperror(data: bytes, why: str) -> None:
    with pytest.raises(DhcpError, match=why):
        Message.from_wire(data)


def test_long_options_split_and_joined_rfc3396() -> None:
    m = Message(options={Opt.MESSAGE_TYPE: b"\x01", 250: bytes(range(256)) * 2})
    w = m.to_wire()
    assert Message.from_wire(w).options[250] == bytes(range(256)) * 2


def test_option82_goes_last_and_round_trips() -> None:
    ra = build_suboptions({1: b"sw1:ge0/1:RubyKaigi 2025", 2: b"ap-7"})
    m = Message(options={Opt.RELAY_AGENT: ra, Opt.MESSAGE_TYPE: b"\x01"})
    w = m.to_wire()
    i = w.index(bytes([82, len(ra)]))
    assert w[i + 2 + len(ra)] == 255  # right before END
    assert Message.from_wire(w).relay_agent() == {1: b"sw1:ge0/1:RubyKaigi 2025", 2: b"ap-7"}


def test_fuzz_never_raises_anything_but_dhcperror() -> None:
    rng = random.Random(5)
    base = msg(
        MessageType.DISCOVER, prl=bytes([1, 3, 108]), relay_agent=build_suboptions({1: b"x"})
    )
    srv = server()
    for _ in range(5000):
        b = mutate(rng, base, [base])
        with contextlib.suppress(DhcpError):
            Message.from_wire(b)
        srv.handle(b, 0.0, "lan0")  # the server never raises


def bind(srv: Dhcp4Server, mac: bytes = MAC, addr: str = "198.51.100.10") -> None:
    """DISCOVER then REQUEST of ``addr``: the client holds a bound lease."""
    srv.handle(msg(MessageType.DISCOVER, mac=mac), 0.0, "lan0")
    r = srv.handle(
        msg(MessageType.REQUEST, mac=mac, server_id=SERVER.packed, requested_ip=ip(addr)),
        0.0,
        "lan0",
    )
    assert r is not None and r.message.message_type == MessageType.ACK


# -- the four-way exchange ------------------------------------------------------------------


def test_discover_offer_request_ack() -> None:
    srv = server()
    r = srv.handle(msg(MessageType.DISCOVER), 100.0, "lan0")
    assert r is not None and r.broadcast and (r.address, r.port) == ("255.255.255.255", 68)
    offer = r.message
    assert offer.message_type == MessageType.OFFER
    assert offer.yiaddr == ip("198.51.100.10")
    assert offer.options[Opt.SERVER_ID] == SERVER.packed
    assert from_u32(offer.options[Opt.LEASE_TIME]) == 600
    assert offer.options[Opt.SUBNET_MASK] == ip("255.255.255.0")
    assert BOOTP(offer.to_wire())[BOOTP].yiaddr == "198.51.100.10"
    r = srv.handle(
        msg(MessageType.REQUEST, server_id=SERVER.packed, requested_ip=ip("198.51.100.10")),
        101.0,
        "lan0",
    )
    assert r is not None and r.message.message_type == MessageType.ACK
    assert r.message.yiaddr == ip("198.51.100.10")
    # a second client gets the next address, not the first one again
    r2 = srv.handle(msg(MessageType.DISCOVER, mac=MAC2), 102.0, "lan0")
    assert r2 is not None and r2.message.yiaddr == ip("198.51.100.11")


def test_offer_reserved_then_released_when_client_chose_another_server() -> None:
    srv = server()
    srv.handle(msg(MessageType.DISCOVER), 0.0, "lan0")
    r = srv.handle(
        msg(MessageType.REQUEST, server_id=ip("198.51.100.99"), requested_ip=ip("198.51.100.10")),
        1.0,
        "lan0",
    )
    assert r is None
    assert srv.table.at(int(ipaddress.IPv4Address("198.51.100.10"))) is None  # free again
    r2 = srv.handle(
        msg(MessageType.DISCOVER, mac=MAC2, requested_ip=ip("198.51.100.10")), 2.0, "lan0"
    )
    assert r2 is not None and r2.message.yiaddr == ip("198.51.100.10")


def test_request_for_someone_elses_address_is_naked() -> None:
    srv = server()
    bind(srv)
    r = srv.handle(
        msg(
            MessageType.REQUEST, mac=MAC2, server_id=SERVER.packed, requested_ip=ip("198.51.100.10")
        ),
        1.0,
        "lan0",
    )
    assert r is not None and r.message.message_type == MessageType.NAK and r.broadcast


def test_pool_exhaustion_and_expiry_on_virtual_clock() -> None:
    srv = server()
    for i in range(3):
        mac = bytes([2, 0, 0, 0, 0, 10 + i])
        srv.handle(msg(MessageType.DISCOVER, mac=mac), 0.0, "lan0")
        r = srv.handle(
            msg(
                MessageType.REQUEST,
                mac=mac,
                server_id=SERVER.packed,
                requested_ip=ip(f"198.51.100.{10 + i}"),
            ),
            0.0,
            "lan0",
        )
        assert r is not None and r.message.message_type == MessageType.ACK
    assert srv.handle(msg(MessageType.DISCOVER, mac=MAC2), 10.0, "lan0") is None
    assert srv.stats.ignored["pool exhausted"] == 1
    assert srv.pool_usage(10.0)["lan0"] == (3, 0, 0, 0)
    r = srv.handle(msg(MessageType.DISCOVER, mac=MAC2), 601.0, "lan0")  # leases expired
    assert r is not None and r.message.yiaddr != b"\0\0\0\0"


def test_init_reboot_renew_rebind_release() -> None:
    srv = server()
    bind(srv)
    # INIT-REBOOT with the right address: ACK; with an address of another network: NAK
    r = srv.handle(msg(MessageType.REQUEST, requested_ip=ip("198.51.100.10")), 50.0, "lan0")
    assert r is not None and r.message.message_type == MessageType.ACK
    r = srv.handle(msg(MessageType.REQUEST, requested_ip=ip("203.0.113.5")), 50.0, "lan0")
    assert r is not None and r.message.message_type == MessageType.NAK
    # INIT-REBOOT of an unknown client: silent (RFC 2131 §4.3.2)
    assert (
        srv.handle(
            msg(MessageType.REQUEST, mac=MAC2, requested_ip=ip("198.51.100.12")), 50.0, "lan0"
        )
        is None
    )
    # RENEWING: unicast to ciaddr, lease extended
    m = Message.from_wire(msg(MessageType.REQUEST))
    m.ciaddr = ip("198.51.100.10")
    r = srv.handle(m.to_wire(), 300.0, "lan0")
    assert r is not None and r.message.message_type == MessageType.ACK
    assert (r.address, r.port, r.broadcast) == ("198.51.100.10", 68, False)
    lease = srv.table.at(int(ipaddress.IPv4Address("198.51.100.10")))
    assert lease is not None and lease.expires == 900.0
    # REBINDING (broadcast flag): same answer
    m.flags = FLAG_BROADCAST
    r = srv.handle(m.to_wire(), 500.0, "lan0")
    assert r is not None and r.message.message_type == MessageType.ACK
    # RELEASE frees it
    rel = Message.from_wire(msg(MessageType.RELEASE))
    rel.ciaddr = ip("198.51.100.10")
    assert srv.handle(rel.to_wire(), 501.0, "lan0") is None
    assert srv.table.at(int(ipaddress.IPv4Address("198.51.100.10"))) is None


def test_decline_marks_the_address_unusable() -> None:
    srv = server()
    bind(srv)
    srv.handle(
        msg(MessageType.DECLINE, server_id=SERVER.packed, requested_ip=ip("198.51.100.10")),
        1.0,
        "lan0",
    )
    r = srv.handle(msg(MessageType.DISCOVER), 2.0, "lan0")
    assert r is not None and r.message.yiaddr == ip("198.51.100.11")
    r = srv.handle(
        msg(MessageType.DISCOVER, mac=MAC2, requested_ip=ip("198.51.100.10")), 3.0, "lan0"
    )
    assert r is not None and r.message.yiaddr != ip("198.51.100.10")


def test_inform_has_no_lease_time() -> None:
    srv = server()
    m = Message.from_wire(msg(MessageType.INFORM))
    m.ciaddr = ip("198.51.100.50")
    r = srv.handle(m.to_wire(), 0.0, "lan0")
    assert r is not None and r.message.message_type == MessageType.ACK
    assert Opt.LEASE_TIME not in r.message.options and r.message.yiaddr == b"\0\0\0\0"
    assert r.address == "198.51.100.50"


def test_reservation_by_mac() -> None:
    srv = server(reservations={MAC2: int(ipaddress.IPv4Address("198.51.100.200"))})
    r = srv.handle(msg(MessageType.DISCOVER, mac=MAC2), 0.0, "lan0")
    assert r is not None and r.message.yiaddr == ip("198.51.100.200")
    r = srv.handle(
        msg(
            MessageType.REQUEST,
            mac=MAC2,
            server_id=SERVER.packed,
            requested_ip=ip("198.51.100.200"),
        ),
        0.0,
        "lan0",
    )
    assert r is not None and r.message.message_type == MessageType.ACK
    r = srv.handle(
        msg(MessageType.REQUEST, server_id=SERVER.packed, requested_ip=ip("198.51.100.200")),
        0.0,
        "lan0",
    )
    assert r is not None and r.message.message_type == MessageType.NAK


# -- relays -----------------------------------------------------------------------------


def test_relayed_request_goes_back_to_the_relay_with_option82_echoed() -> None:
    relayed = subnet(
        name="hall",
        network=ipaddress.IPv4Network("203.0.113.0/24"),
        pools=[
            (int(ipaddress.IPv4Address("203.0.113.10")), int(ipaddress.IPv4Address("203.0.113.20")))
        ],
        interface=None,
        relays=[ipaddress.IPv4Address("203.0.113.1")],
    )
    srv = Dhcp4Server([subnet(), relayed], LeaseTable(MemoryStore()), served={"lan0", "uplink"})
    ra = build_suboptions({1: b"sw3:ge0/7", 2: b"RubyKaigi 2025"})
    m = Message.from_wire(msg(MessageType.DISCOVER, relay_agent=ra))
    m.giaddr = ip("203.0.113.1")
    m.hops = 1
    r = srv.handle(m.to_wire(), 0.0, "uplink", "203.0.113.1")
    assert r is not None
    assert (r.address, r.port, r.broadcast) == ("203.0.113.1", 67, False)
    assert r.message.yiaddr == ip("203.0.113.10")
    assert r.message.giaddr == ip("203.0.113.1")
    assert r.message.options[Opt.RELAY_AGENT] == ra
    w = r.message.to_wire().rstrip(b"\0")
    assert w[-1] == 255 and w[-1 - len(ra) - 2] == 82  # option 82 last, before END


# -- RFC 8925 ---------------------------------------------------------------------------


def test_option108_only_to_clients_that_ask() -> None:
    srv = server(v6only=True, v6only_wait=1800)
    r = srv.handle(msg(MessageType.DISCOVER, prl=bytes([1, 3, 6])), 0.0, "lan0")
    assert r is not None and Opt.V6ONLY_PREFERRED not in r.message.options
    assert r.message.yiaddr != b"\0\0\0\0"


def test_option108_offer_has_no_address_and_no_lease() -> None:
    srv = server(v6only=True, v6only_wait=1800)
    r = srv.handle(
        msg(MessageType.DISCOVER, prl=bytes([1, 3, 6, 108]), auto_configure=b"\x01"), 0.0, "lan0"
    )
    assert r is not None
    o = r.message
    assert o.message_type == MessageType.OFFER
    assert o.yiaddr == b"\0\0\0\0"
    assert from_u32(o.options[Opt.V6ONLY_PREFERRED]) == 1800
    assert o.options[Opt.AUTO_CONFIGURE] == b"\x00"  # RFC 2563 DoNotAutoConfigure
    assert Opt.LEASE_TIME not in o.options
    assert srv.table.by_addr == {}
    assert srv.stats.offers_v6only == 1
    # without option 116 from the client, no 116 in the reply
    r = srv.handle(msg(MessageType.DISCOVER, prl=bytes([108])), 0.0, "lan0")
    assert r is not None and Opt.AUTO_CONFIGURE not in r.message.options


def test_option108_decisions_are_remembered_per_client_with_the_reason() -> None:
    """For `ctl leases --v6only`: the last decision per client, when and why, bounded."""
    srv = server(v6only=True, v6only_wait=1800)
    srv.handle(msg(MessageType.DISCOVER, prl=bytes([1, 3, 6])), 5.0, "lan0")
    srv.handle(msg(MessageType.DISCOVER, prl=bytes([108]), mac=MAC2), 7.0, "lan0")
    d = list(srv.decisions.values())
    assert [(x.time, x.v6only, x.why) for x in d] == [
        (5.0, False, "client did not request option 108"),
        (7.0, True, "subnet lan0"),
    ]
    assert d[1].mac == "02:00:00:00:00:02" and d[1].subnet == "lan0"
    srv.handle(msg(MessageType.DISCOVER, prl=bytes([108])), 9.0, "lan0")  # MAC again
    assert [x.mac for x in srv.decisions.values()] == ["02:00:00:00:00:02", "02:00:00:00:00:01"]


def test_each_decision_is_told_in_words_for_the_log() -> None:
    """``server.event`` (logged at -v by the router): lease given, renewed, released,
    IPv6-only with the policy's reason; nothing for an OFFER of an address."""
    srv = server(v6only=True, v6only_wait=1800)
    r = srv.handle(msg(MessageType.DISCOVER), 0.0, "lan0")
    assert r is not None and srv.event == ""
    a = r.message.yiaddr
    srv.handle(
        msg(MessageType.REQUEST, requested_ip=a, server_id=r.message.options[Opt.SERVER_ID]),
        1.0,
        "lan0",
    )
    ip = ".".join(str(b) for b in a)
    assert srv.event == (
        f"lease given: {ip} to 02:00:00:00:00:01 on lan0 for 600 s "
        "(no option 108: client did not request option 108)"
    )
    renew = Message(
        xid=2, chaddr=MAC, ciaddr=a, options={Opt.MESSAGE_TYPE: bytes([MessageType.REQUEST])}
    )
    srv.handle(renew.to_wire(), 2.0, "lan0")
    assert srv.event.startswith(f"lease renewed: {ip} to 02:00:00:00:00:01")
    rel = Message(
        xid=3, chaddr=MAC, ciaddr=a, options={Opt.MESSAGE_TYPE: bytes([MessageType.RELEASE])}
    )
    srv.handle(rel.to_wire(), 3.0, "lan0")
    assert srv.event == f"lease released: {ip} by 02:00:00:00:00:01 on lan0"
    srv.handle(msg(MessageType.DISCOVER, prl=bytes([108]), mac=MAC2), 4.0, "lan0")
    assert srv.event == (
        "OFFER: 02:00:00:00:00:02 told IPv6-only for 1800 s on lan0 "
        "(option 108, RFC 8925; subnet lan0)"
    )


def test_v6only_wait_never_below_min() -> None:
    srv = server(v6only=True, v6only_wait=60)
    r = srv.handle(msg(MessageType.DISCOVER, prl=bytes([108])), 0.0, "lan0")
    assert r is not None and from_u32(r.message.options[Opt.V6ONLY_PREFERRED]) == 300


def test_init_reboot_of_a_v6only_client_gets_ack_with_108_and_loses_its_lease() -> None:
    srv = server(v6only=False)
    srv.handle(msg(MessageType.DISCOVER, prl=bytes([108])), 0.0, "lan0")
    srv.handle(
        msg(
            MessageType.REQUEST,
            prl=bytes([108]),
            server_id=SERVER.packed,
            requested_ip=ip("198.51.100.10"),
        ),
        0.0,
        "lan0",
    )
    srv.subnets[0].v6only = True  # the operator turned it on
    r = srv.handle(
        msg(MessageType.REQUEST, prl=bytes([108]), requested_ip=ip("198.51.100.10")), 10.0, "lan0"
    )
    assert r is not None and r.message.message_type == MessageType.ACK
    assert r.message.yiaddr == b"\0\0\0\0" and Opt.V6ONLY_PREFERRED in r.message.options
    assert srv.table.at(int(ipaddress.IPv4Address("198.51.100.10"))) is None


SEED_SSID = ClientClass(
    "venue", circuit_id=TextMatch(split=(":", 2, "RubyKaigi 2025")), v6only=True
)


def _relayed(circuit: bytes, prl: bytes = bytes([108]), mac: bytes = MAC) -> bytes:
    m = Message.from_wire(
        msg(MessageType.DISCOVER, prl=prl, mac=mac, relay_agent=build_suboptions({1: circuit}))
    )
    m.giaddr = RELAY.packed
    return m.to_wire()


RELAY = ipaddress.IPv4Address("198.51.100.2")


def test_class_on_option82_split_forces_108_on_where_subnet_is_off() -> None:
    srv = server(policy=V6OnlyPolicy([SEED_SSID]), v6only=False, relays=[RELAY])
    r = srv.handle(_relayed(b"sw1:ge0/1:RubyKaigi 2025"), 0.0, "lan0", str(RELAY))
    assert r is not None and Opt.V6ONLY_PREFERRED in r.message.options
    assert srv.last_decision == "class venue"
    r = srv.handle(_relayed(b"sw1:ge0/1:RubyKaigi 2025-legacy", mac=MAC2), 0.0, "lan0", str(RELAY))
    assert r is not None and Opt.V6ONLY_PREFERRED not in r.message.options


def test_class_forces_108_off_where_subnet_is_on() -> None:
    printers = ClientClass("printers", mac_prefixes=(MAC2[:3],), v6only=False)
    srv = server(policy=V6OnlyPolicy([printers]), v6only=True)
    r = srv.handle(msg(MessageType.DISCOVER, mac=MAC2, prl=bytes([108])), 0.0, "lan0")
    assert r is not None and Opt.V6ONLY_PREFERRED not in r.message.options
    assert r.message.yiaddr != b"\0\0\0\0"
    assert srv.last_decision == "class printers: v6only off"


def test_vendor_class_and_substring_matches() -> None:
    android = ClientClass("android", vendor_class=TextMatch(prefix="android-dhcp"), v6only=True)
    m = Message.from_wire(
        msg(MessageType.DISCOVER, prl=bytes([108]), vendor_class=b"android-dhcp-14")
    )
    assert android.matches(m, "lan0")
    assert TextMatch(contains="Kaigi")(b"RubyKaigi 2025")
    assert not TextMatch(split=(":", 5, "x"))(b"a:b")


def test_rollout_is_stable_and_grows() -> None:
    clients = [
        Message.from_wire(msg(MessageType.DISCOVER, mac=bytes([2, 0, 0, 0, i // 256, i % 256])))
        for i in range(1000)
    ]
    in10 = {i for i, c in enumerate(clients) if in_rollout(c, 10)}
    in50 = {i for i, c in enumerate(clients) if in_rollout(c, 50)}
    assert 50 < len(in10) < 150 and 400 < len(in50) < 600
    assert in10 <= in50  # growing the rollout never drops a client
    assert in10 == {i for i, c in enumerate(clients) if in_rollout(c, 10)}


# -- persistence -------------------------------------------------------------------------


def test_sqlite_leases_survive_a_restart(tmp_path: Path) -> None:
    db = str(tmp_path / "leases.sqlite")
    srv = server(SqliteStore(db))
    bind(srv)
    # no close(): as after kill -9
    again = server(SqliteStore(db))
    lease = again.table.at(int(ipaddress.IPv4Address("198.51.100.10")))
    assert lease is not None and lease.mac == "02:00:00:00:00:01"
    r = again.handle(msg(MessageType.DISCOVER, mac=MAC2), 1.0, "lan0")
    assert r is not None and r.message.yiaddr == ip("198.51.100.11")  # never handed out twice
    r = again.handle(msg(MessageType.DISCOVER), 1.0, "lan0")
    assert r is not None and r.message.yiaddr == ip("198.51.100.10")  # the owner gets it back
