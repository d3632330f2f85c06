"""``v6mostly ecmp`` (issue 12): its file, the sans-I/O decision core, the nexthop codec.

The codec is compared byte for byte with vectors written from ``linux/nexthop.h`` and
``linux/rtnetlink.h`` by hand (struct nhmsg, struct nexthop_grp, NHA_RES_GROUP nested), so
the same test run under pyroute2 0.7.3 (``make test-floor``) and 0.9.x proves both
frameworks encode what the kernel expects; the integration test checks the kernel's
reading of them against ``ip nexthop``.
"""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import logging
import socket
import struct
from pathlib import Path

import pytest

from v6mostly.ecmp_config import EcmpSettings, load_ecmp
from v6mostly.errors import ConfigError
from v6mostly.linux import nexthop as nh
from v6mostly.services import ecmp
from v6mostly.services.ecmp import (
    Change,
    Current,
    DeleteNexthop,
    DeleteRoute,
    Gateway,
    Group,
    SetGroup,
    SetNexthop,
    SetRoute,
    explain,
    plan,
)

BASE = """\
[ecmp]
prefix = "2001:db8:64::/96"
learn_table = 100
table = 254
group_id = 6400
buckets = 128
idle_timer = 30
unbalanced_timer = 0
hash = "source"
[metrics]
listen = "127.0.0.1:9468"
"""


def write(tmp_path: Path, text: str, name: str = "ecmp.toml") -> str:
    p = tmp_path / name
    p.write_text(text)
    return str(p)


def error(tmp_path: Path, old: str, new: str) -> str:
    assert old in BASE, old
    path = write(tmp_path, BASE.replace(old, new, 1))
    with pytest.raises(ConfigError) as e:
        load_ecmp(path)
    msg = str(e.value)
    assert msg.startswith(f"{path}: ") and "\n" not in msg
    return msg[len(path) + 2 :]


# -- the file -----------------------------------------------------------------------------


def test_the_base_file_loads(tmp_path: Path) -> None:
    s = load_ecmp(write(tmp_path, BASE))
    assert s.prefix == ipaddress.IPv6Network("2001:db8:64::/96")
    assert (s.learn_table, s.table, s.group_id, s.buckets) == (100, 254, 6400, 128)
    assert (s.idle_timer, s.unbalanced_timer, s.metrics_listen) == (30, 0, "127.0.0.1:9468")
    assert s.member_ids[0] == 6401
    assert s.sysctls() == {
        "net/ipv6/fib_multipath_hash_policy": "3",
        "net/ipv6/fib_multipath_hash_fields": "0x1",
    }


def test_defaults(tmp_path: Path) -> None:
    s = load_ecmp(write(tmp_path, '[ecmp]\nprefix = "2001:db8:64::/96"\n'))
    assert (s.learn_table, s.table, s.group_id, s.buckets, s.idle_timer) == (
        100,
        254,
        6400,
        128,
        30,
    )
    assert s.metrics_listen == ""


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ('prefix = "2001:db8:64::/96"', 'prefix = "2001:db8:64::1/96"', '[ecmp] prefix = "2001:db8:64::1/96": '),
        ("learn_table = 100", "learn_table = 254", "[ecmp] table = 254: must differ from learn_table"),
        ("learn_table = 100", "learn_table = 255", "[ecmp] learn_table = 255: a reserved table"),
        ("learn_table = 100", 'learn_table = "100"', "[ecmp] learn_table = \"100\": expected an integer"),
        ("buckets = 128", "buckets = 70000", "[ecmp] buckets = 70000: expected an integer from 2 to 65535"),
        ("buckets = 128", "buckets = 1", "[ecmp] buckets = 1: expected an integer from 2 to 65535"),
        ("idle_timer = 30", "idle_timer = -1", "[ecmp] idle_timer = -1: expected an integer from 0 to 3600"),
        ("unbalanced_timer = 0", "unbalanced_timer = 10", "[ecmp] unbalanced_timer = 10: 0 (never) or at least idle_timer (30 s)"),
        ('hash = "source"', 'hash = "l4"', '[ecmp] hash = "l4": expected "source" or "kernel"'),
        ("group_id = 6400", "group_id = 0", "[ecmp] group_id = 0: expected an integer from 1 to"),
        ("buckets = 128", "bucket = 128", '[ecmp] bucket = 128: unknown key (did you mean "buckets"?)'),
        ('listen = "127.0.0.1:9468"', 'listen = "localhost:9468"', '[metrics] listen = "localhost:9468": expected a numeric'),
        ("[metrics]", "[metric]", "[metric]: unknown section"),
        ('prefix = "2001:db8:64::/96"\n', "", '[ecmp] prefix = "": missing: the Pref64 to balance'),
    ],
)  # fmt: skip
def test_errors_name_file_section_key_value_rule(
    tmp_path: Path, old: str, new: str, message: str
) -> None:
    assert error(tmp_path, old, new).startswith(message)


def test_pref64_from_the_site_file(tmp_path: Path) -> None:
    write(
        tmp_path, '[site]\npref64 = "2001:db8:64::/96"\n[[interface]]\nname = "lan0"\n', "site.toml"
    )
    no_prefix = BASE.replace('prefix = "2001:db8:64::/96"\n', "")
    s = load_ecmp(write(tmp_path, 'site = "site.toml"\n' + no_prefix))
    assert str(s.prefix) == "2001:db8:64::/96"
    other = BASE.replace("2001:db8:64::/96", "2001:db8:65::/96")
    path = write(tmp_path, 'site = "site.toml"\n' + other)
    with pytest.raises(ConfigError, match=r"prefix = \"2001:db8:65::/96\": differs from the site"):
        load_ecmp(path)


def test_dry_run_with_a_bad_file_exits_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, BASE.replace("buckets = 128", "buckets = 0"))
    args = argparse.Namespace(config=path, dry_run=True, cleanup=False, verbose=False)
    assert ecmp.main(args) == 2
    err = capsys.readouterr().err
    assert (
        err == f"v6mostly: error: {path}: [ecmp] buckets = 0: expected an integer from 2 to 65535\n"
    )


def test_dry_run_prints_the_settings(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_netlink() -> None:
        raise OSError(1, "Operation not permitted")

    monkeypatch.setattr(nh, "Netlink", no_netlink)  # the host's own kernel state stays unread
    args = argparse.Namespace(
        config=write(tmp_path, BASE), dry_run=True, cleanup=False, verbose=False
    )
    assert ecmp.main(args) == 0
    out = capsys.readouterr().out
    assert "follow 2001:db8:64::/96 in table 100" in out
    assert "group 6400 type resilient buckets 128 idle_timer 30 unbalanced_timer 0" in out
    assert "sysctl net.ipv6.fib_multipath_hash_policy=3" in out
    assert "# kernel state not readable here" in out


def test_the_parser(tmp_path: Path) -> None:
    p = argparse.ArgumentParser()
    ecmp.add_parser(p.add_subparsers(dest="cmd"))
    a = p.parse_args(["ecmp", "--config", "x.toml", "--cleanup", "-v"])
    assert (a.config, a.cleanup, a.dry_run, a.verbose, a.func) == (
        "x.toml",
        True,
        False,
        True,
        ecmp.main,
    )


# -- the decision core --------------------------------------------------------------------

S = EcmpSettings(source="t", prefix=ipaddress.IPv6Network("2001:db8:64::/96"), buckets=16)
A = Gateway("2001:db8:a::2", 3)
B = Gateway("2001:db8:b::2", 4)
C = Gateway("fe80::c", 5)


def grp(*members: int, **kw: object) -> Group:
    args: dict[str, object] = {"buckets": 16, "idle_timer": 30, "unbalanced_timer": 0}
    args.update(kw)
    return Group(tuple(members), **args)  # type: ignore[arg-type]


def test_plan_from_nothing() -> None:
    assert plan({A, B}, Current(), S) == [
        SetNexthop(6401, A),
        SetNexthop(6402, B),
        SetGroup((6401, 6402)),
        SetRoute(),
    ]


def test_plan_in_step_does_nothing() -> None:
    cur = Current({6401: A, 6402: B}, grp(6401, 6402), 6400)
    assert plan({A, B}, cur, S) == []


def test_removing_a_member_is_a_group_replace_then_a_delete() -> None:
    cur = Current({6401: A, 6402: B}, grp(6401, 6402), 6400)
    assert plan({A}, cur, S) == [SetGroup((6401,)), DeleteNexthop(6402, "stale")]


def test_members_keep_their_ids_and_a_new_one_takes_a_free_id() -> None:
    cur = Current({6402: B}, grp(6402), 6400)
    assert plan({A, B, C}, cur, S) == [
        SetNexthop(6401, A),
        SetNexthop(6403, C),
        SetGroup((6401, 6402, 6403)),
    ]


def test_no_member_removes_route_group_and_members() -> None:
    cur = Current({6401: A}, grp(6401), 6400)
    assert plan((), cur, S) == [
        DeleteRoute(),
        DeleteNexthop(6400, "no member left"),
        DeleteNexthop(6401, "no member left"),
    ]
    assert plan((), Current(), S) == []
    # Someone else's route (no nhid, or another one) is not ours to remove.
    assert plan((), Current(route_nhid=0), S) == []


def test_the_route_comes_back_alone() -> None:
    cur = Current({6401: A}, grp(6401), None)
    assert plan({A}, cur, S) == [SetRoute()]
    cur = Current({6401: A}, grp(6401), 0)  # a plain route in its place: replaced
    assert plan({A}, cur, S) == [SetRoute()]


def test_timer_change_is_a_replace_bucket_change_a_new_group() -> None:
    cur = Current({6401: A}, grp(6401, idle_timer=5), 6400)
    assert plan({A}, cur, S) == [SetGroup((6401,))]
    cur = Current({6401: A}, grp(6401, buckets=32), 6400)
    assert plan({A}, cur, S) == [
        DeleteNexthop(6400, "type or bucket count changed"),
        SetGroup((6401,)),
        SetRoute(),
    ]
    cur = Current({6401: A}, grp(6401, resilient=False), 6400)
    assert plan({A}, cur, S)[0] == DeleteNexthop(6400, "type or bucket count changed")


def test_a_changed_gateway_object_is_replaced() -> None:
    other = Gateway("2001:db8:a::9", 3)
    cur = Current({6401: other, 6402: B}, grp(6401, 6402), 6400)
    assert plan({A, B}, cur, S) == [
        SetNexthop(6403, A),
        SetGroup((6402, 6403)),
        DeleteNexthop(6401, "stale"),
    ]


def test_current_gateways_are_the_group_members() -> None:
    cur = Current({6401: A, 6402: B, 6403: None}, grp(6401, 6403), 6400)
    assert cur.gateways() == {A}
    assert Current({6401: A}).gateways() == set()


def test_explain() -> None:
    # At start, what the kernel holds is adopted; a missing member is added by BGP.
    assert explain(None, {A}, {A, B}, {A, B}, set()) == [
        Change("added", A, "start"),
        Change("added", B, "bgp"),
    ]
    # The kernel flushed B with its link; B still learned but unusable: no re-add.
    assert explain({A, B}, {A}, {A}, {A, B}, {A, B}) == [Change("removed", B, "flush")]
    # bird2 withdrew B.
    assert explain({A, B}, {A, B}, {A}, {A}, {A, B}) == [Change("removed", B, "bgp")]
    # B learned but marked linkdown: removed for the link.
    assert explain({A, B}, {A, B}, {A}, {A, B}, {A, B}) == [Change("removed", B, "link")]
    # B back while it was learned all along: the link.
    assert explain({A}, {A}, {A, B}, {A, B}, {A, B}) == [Change("added", B, "link")]
    assert explain({A}, {A}, {A}, {A}, {A}) == []


def test_relevant_events() -> None:
    check = ecmp.relevant(96)
    hdr = struct.pack("=IHHII", 36, nh.RTM_NEWROUTE, 0, 0, 0)
    assert check(nh.RTM_NEWROUTE, hdr + bytes([socket.AF_INET6, 96]) + bytes(10))
    assert not check(nh.RTM_NEWROUTE, hdr + bytes([socket.AF_INET6, 64]) + bytes(10))
    assert not check(nh.RTM_NEWROUTE, hdr + bytes([socket.AF_INET, 96]) + bytes(10))
    assert check(nh.RTM_DELNEXTHOP, b"")
    assert check(nh.RTM_NEWLINK, b"")


# -- the codec ------------------------------------------------------------------------------


def nlhdr(length: int, mtype: int, flags: int, seq: int) -> bytes:
    return struct.pack("=IHHII", length, mtype, flags, seq, 0)


def attr(atype: int, payload: bytes) -> bytes:
    raw = struct.pack("=HH", 4 + len(payload), atype) + payload
    return raw + bytes(-len(raw) % 4)


REQ = nh.NLM_F_REQUEST | nh.NLM_F_ACK | nh.NLM_F_CREATE | nh.NLM_F_REPLACE


def test_gateway_nexthop_bytes() -> None:
    m = nh.msg_gateway(6401, "2001:db8:a::2", 3)
    body = struct.pack("=BBBBI", socket.AF_INET6, 0, 0, 0, 0)
    body += attr(1, struct.pack("=I", 6401)) + attr(5, struct.pack("=I", 3))
    body += attr(6, socket.inet_pton(socket.AF_INET6, "2001:db8:a::2"))
    want = nlhdr(16 + len(body), 104, REQ, 7) + body
    assert nh.encode(m, nh.RTM_NEWNEXTHOP, REQ, 7) == want
    assert len(want) == 60


def test_resilient_group_bytes() -> None:
    m = nh.msg_resilient_group(6400, (6401, 6402), 128, 30, 0)
    body = struct.pack("=BBBBI", 0, 0, 0, 0, 0)
    body += attr(1, struct.pack("=I", 6400))
    body += attr(2, struct.pack("=IBBH", 6401, 0, 0, 0) + struct.pack("=IBBH", 6402, 0, 0, 0))
    body += attr(3, struct.pack("=H", 1))
    res = attr(1, struct.pack("=H", 128)) + attr(2, struct.pack("=I", 3000))
    res += attr(3, struct.pack("=I", 0))
    body += attr(12 | 0x8000, res)  # NHA_RES_GROUP, NLA_F_NESTED
    want = nlhdr(16 + len(body), 104, REQ, 9) + body
    assert nh.encode(m, nh.RTM_NEWNEXTHOP, REQ, 9) == want
    assert len(want) == 88


def test_route_with_nhid_bytes() -> None:
    net = ipaddress.IPv6Network("2001:db8:64::/96")
    m = nh.msg_route(net, 254, 6400)
    body = struct.pack("=BBBBBBBBI", socket.AF_INET6, 96, 0, 0, 254, 4, 0, 1, 0)
    body += attr(1, net.network_address.packed) + attr(15, struct.pack("=I", 254))
    body += attr(30, struct.pack("=I", 6400))  # RTA_NH_ID
    want = nlhdr(16 + len(body), 24, REQ, 1) + body
    assert nh.encode(m, nh.RTM_NEWROUTE, REQ, 1) == want
    # A table past 255: RT_TABLE_COMPAT in the header, the number in RTA_TABLE.
    big = nh.encode(nh.msg_route(net, 1000), nh.RTM_DELROUTE, nh.NLM_F_REQUEST, 1)
    assert big[20] == 252 and struct.pack("=HHI", 8, 15, 1000) in big


def test_delete_and_get_bytes() -> None:
    m = nh.msg_id(6402)
    want = nlhdr(32, 105, nh.NLM_F_REQUEST | nh.NLM_F_ACK, 3)
    want += struct.pack("=BBBBI", 0, 0, 0, 0, 0) + attr(1, struct.pack("=I", 6402))
    assert nh.encode(m, nh.RTM_DELNEXTHOP, nh.NLM_F_REQUEST | nh.NLM_F_ACK, 3) == want


def test_decode_what_the_kernel_sends() -> None:
    # RTM_NEWNEXTHOP of a resilient group, then of a gateway, as in a dump.
    body = struct.pack("=BBBBI", 0, 0, 0, 0, 0) + attr(1, struct.pack("=I", 6400))
    body += attr(2, struct.pack("=IBBH", 6401, 0, 0, 0) + struct.pack("=IBBH", 6402, 0, 0, 0))
    body += attr(3, struct.pack("=H", 1))
    res = attr(1, struct.pack("=H", 16)) + attr(2, struct.pack("=I", 200))
    res += attr(3, struct.pack("=I", 0)) + attr(4, struct.pack("=Q", 0))
    body += attr(12 | 0x8000, res)
    raw = nlhdr(16 + len(body), 104, 2, 5) + body
    g = nh.decode_nexthop(nh.decode(104, raw))
    assert (g.id, g.group, g.group_type, g.buckets, g.idle_timer) == (
        6400,
        (6401, 6402),
        1,
        16,
        2.0,
    )
    body = struct.pack("=BBBBI", socket.AF_INET6, 253, 0, 0, 0) + attr(1, struct.pack("=I", 6401))
    body += attr(5, struct.pack("=I", 3)) + attr(6, socket.inet_pton(socket.AF_INET6, "fe80::1"))
    gw = nh.decode_nexthop(nh.decode(104, nlhdr(16 + len(body), 104, 2, 5) + body))
    assert (gw.id, gw.gateway, gw.oif, gw.group) == (6401, "fe80::1", 3, ())
    # RTM_NEWNEXTHOPBUCKET: the bucket's index, idle time (clock_t) and member.
    bk = attr(1, struct.pack("=H", 7)) + attr(2, struct.pack("=Q", 250))
    bk += attr(3, struct.pack("=I", 6402))
    body = struct.pack("=BBBBI", 0, 0, 0, 0, 0) + attr(1, struct.pack("=I", 6400))
    body += attr(13 | 0x8000, bk)
    b = nh.decode_bucket(nh.decode(116, nlhdr(16 + len(body), 116, 2, 5) + body))
    assert b == nh.Bucket(index=7, nh_id=6402, idle_time=2.5)


def test_decode_a_route_with_nhid_and_multipath() -> None:
    net = ipaddress.IPv6Network("2001:db8:64::/96")
    body = struct.pack("=BBBBBBBBI", socket.AF_INET6, 96, 0, 0, 100, 12, 0, 1, 0)
    body += attr(15, struct.pack("=I", 100)) + attr(1, net.network_address.packed)
    hops = b""
    for gw, oif, flags in (("2001:db8:a::2", 3, 0), ("2001:db8:b::2", 4, nh.RTNH_F_LINKDOWN)):
        inner = attr(5, socket.inet_pton(socket.AF_INET6, gw))
        hops += struct.pack("=HBBi", 8 + len(inner), flags, 0, oif) + inner
    body += attr(9, hops) + attr(30, struct.pack("=I", 6400))
    r = nh.decode(24, nlhdr(16 + len(body), 24, 2, 0) + body)
    assert nh.route_table(r) == 100 and nh.route_dst(r) == net
    assert r.get_attr("RTA_NH_ID") == 6400
    assert nh.route_gateways(r) == [("2001:db8:a::2", 3, 0), ("2001:db8:b::2", 4, 16)]


def test_error_text_reads_the_extended_ack() -> None:
    orig = nlhdr(16, 104, 5, 1)
    text = b"Carrier for nexthop device is down\0"
    raw = nlhdr(0, 2, nh.NLM_F_CAPPED | nh.NLM_F_ACK_TLVS, 1)
    raw += struct.pack("=i", -100) + orig + attr(1, text)
    assert nh.error_text(nh.NLM_F_CAPPED | nh.NLM_F_ACK_TLVS, raw) == text[:-1].decode()
    assert nh.error_text(0, raw) == ""
    e = nh.NexthopError("nexthop 6402 via 2001:db8:b::2", 100, "Carrier for nexthop device is down")
    assert str(e) == "nexthop 6402 via 2001:db8:b::2: Carrier for nexthop device is down"


def test_split_messages() -> None:
    one = nlhdr(20, 3, 2, 9) + bytes(4)
    two = nlhdr(18, 16, 0, 0) + bytes(2) + bytes(2)  # padded to 4
    got = nh.split_messages(one + two)
    assert [(t, f, s) for t, f, s, _ in got] == [(3, 2, 9), (16, 0, 0)]


# -- the controller against a fake kernel -------------------------------------------------


def route_msg(table: int, gws: list[tuple[str, int]], nhid: int | None = None) -> object:
    body = struct.pack("=BBBBBBBBI", socket.AF_INET6, 96, 0, 0, table, 12, 0, 1, 0)
    body += attr(15, struct.pack("=I", table)) + attr(1, S.prefix.network_address.packed)
    hops = b""
    for gw, oif in gws:
        inner = attr(5, socket.inet_pton(socket.AF_INET6, gw))
        hops += struct.pack("=HBBi", 8 + len(inner), 0, 0, oif) + inner
    if hops:
        body += attr(9, hops)
    if nhid is not None:
        body += attr(30, struct.pack("=I", nhid))
    return nh.decode(24, nlhdr(16 + len(body), 24, 2, 0) + body)


class FakeKernel:
    """Just enough of ``nexthop.Netlink``: objects, one route, refusals by gateway."""

    def __init__(self, learned: list[Gateway]) -> None:
        self.learned = learned
        self.objs: dict[int, nh.Nexthop] = {}
        self.route: int | None = None
        self.refuse: set[str] = set()

    def routes(self, table: int) -> list[object]:
        if table == S.learn_table:
            return [route_msg(table, [(g.address, g.oif) for g in self.learned])]
        return [] if self.route is None else [route_msg(table, [], self.route)]

    def dump(self) -> list[nh.Nexthop]:
        return list(self.objs.values())

    def replace_gateway(self, i: int, gw: str, oif: int) -> None:
        if gw in self.refuse:
            raise nh.NexthopError(
                f"nexthop {i} via {gw}", 100, "Carrier for nexthop device is down"
            )
        self.objs[i] = nh.Nexthop(i, gw, oif)

    def replace_resilient_group(
        self, g: int, members: tuple[int, ...], buckets: int, idle: float, unbalanced: float
    ) -> None:
        self.objs[g] = nh.Nexthop(
            g, group=members, group_type=1, buckets=buckets, idle_timer=idle,
            unbalanced_timer=unbalanced,
        )  # fmt: skip

    def delete(self, i: int) -> None:
        self.objs.pop(i, None)
        if i == S.group_id:
            self.route = None

    def replace_route(self, prefix: object, table: int, g: int) -> None:
        self.route = g

    def delete_route(self, prefix: object, table: int) -> None:
        self.route = None

    def flush(self, i: int) -> None:
        """What the kernel does when a member's link goes down."""
        del self.objs[i]
        g = self.objs[S.group_id]
        self.objs[S.group_id] = dataclasses.replace(g, group=tuple(m for m in g.group if m != i))

    def close(self) -> None:
        pass


def test_controller_leaves_out_a_refused_gateway_and_retries(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    k = FakeKernel([A, B])
    k.refuse.add(B.address)
    monkeypatch.setattr(nh, "Netlink", lambda: k)
    monkeypatch.setattr(ecmp, "ifname", lambda i: f"if{i}")
    c = ecmp.Controller(S)
    caplog.set_level(logging.INFO, "v6mostly.ecmp")
    c.reconcile()
    assert k.objs[S.group_id].group == (6401,) and k.route == S.group_id
    assert c.members == {A}
    refused = [r.message for r in caplog.records if "left out" in r.message]
    assert refused == [
        f"gateway {B.address} dev if4 left out: nexthop 6402 via {B.address}: "
        "Carrier for nexthop device is down"
    ]
    c.reconcile()  # within the retry delay: not tried, not logged again
    monkeypatch.setattr(ecmp, "RETRY_REFUSED", 0.0)
    c.reconcile()  # tried again, still refused: not logged again
    assert len([r for r in caplog.records if "left out" in r.message]) == 1
    k.refuse.clear()
    caplog.clear()
    c.reconcile()
    assert k.objs[S.group_id].group == (6401, 6402) and c.members == {A, B}
    assert [r.message for r in caplog.records] == [
        f"added gateway {B.address} dev if4; members now: {A.address} dev if3, "
        f"{B.address} dev if4 (link state)"
    ]
    # The kernel flushes A with its link; A is still learned: logged, then put back.
    caplog.clear()
    k.flush(6401)
    c.reconcile()
    msgs = [r.message for r in caplog.records]
    assert msgs[0].startswith(f"removed gateway {A.address} dev if3; members now: ")
    assert msgs[0].endswith("(link flush: the kernel removed the nexthop with its link)")
    assert msgs[1].startswith(f"added gateway {A.address} dev if3")
    assert k.objs[S.group_id].group == (6401, 6402)
    assert c.changes == {("added", "bgp"): 1, ("added", "link"): 2, ("removed", "flush"): 1}
    # bird2 withdraws both: route, group and members go, and it is said.
    caplog.clear()
    k.learned = []
    c.reconcile()
    assert k.objs == {} and k.route is None
    assert "no member left" in caplog.records[-1].message
