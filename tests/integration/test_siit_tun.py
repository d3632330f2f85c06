"""`v6mostly siit` on a real TUN in a namespace: the packets of issue 8, end to end.

Theory of operation. Each test starts its own ``v6mostly siit`` (one worker,
plain TUN, metrics on 127.0.0.1) in a throwaway namespace (the ``netns``
fixture of ``test_services``: per-run name, removed at the end, also on
failure, with every process left in it). Packets are written straight into
the TUN with an ``AF_PACKET`` socket bound to it, so they reach the
translator exactly as crafted (any source, hop limit 1 stays 1); a second
``AF_PACKET`` socket on the TUN sees both directions: ``PACKET_OUTGOING`` is
what went into the translator, anything else is what the translator wrote.
Sockets are opened inside the namespace (``pyroute2.netns.pushns``/``popns``)
and then used from the test process.

Forwarding stays off in the namespace: what the translator writes is
received by the kernel and, unless it is for a local address, dropped there
rather than routed back into the TUN. The capture is therefore exactly the
translator's output, with no kernel loop mixed in. Where a real peer is
useful (ping, a connected UDP socket receiving an ICMP error), local
addresses on ``lo`` and host routes into the TUN stand in for it.

Ordering: with one queue and one worker, packets are handled in order, and
without RPS on the TUN (``--no-rps``) the kernel receives what the worker
writes within the write, so the capture sees it in the same order; after the
packets under test, ``sync`` sends a translatable sentinel and waits for its
translation, so everything before it is done, counted and captured by then.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import socket
import struct
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from pyroute2.netns import popns, pushns
from scapy.all import (
    ICMP,
    IP,
    UDP,
    ICMPv6DestUnreach,
    ICMPv6EchoReply,
    ICMPv6EchoRequest,
    ICMPv6TimeExceeded,
    IPerror6,
    IPv6,
    IPv6ExtHdrDestOpt,
    Packet,
    Raw,
    UDPerror,
)

from tests.integration import test_services as _services
from tests.integration.lab_helpers import wait_for
from v6mostly.metrics import parse_exposition

pytestmark = pytest.mark.integration

#: The per-run namespace (lo up; removed with its processes at the end).
netns = _services.netns
nsrun = _services.nsrun

ETH_P_ALL = 0x0003
ETH_P_IP = 0x0800
ETH_P_IPV6 = 0x86DD
PACKET_OUTGOING = 4
SOL_PACKET = 263
PACKET_IGNORE_OUTGOING = 23
SO_RCVBUFFORCE = 33

WKP = "64:ff9b::/96"
NSP = "2001:db8:64::/96"  # a network-specific prefix: may carry private IPv4 (RFC 6052 §3.1)
EAM6, EAM4 = "2001:db8::2", "172.16.0.2"
OWN4, OWN6 = "172.16.0.3", "2001:db8:ff::1"
#: Local addresses of the namespace (on lo) for the real peers (ping, UDP sockets).
HOST6, HOST4 = "2001:db8:1::100", "192.0.2.100"
#: A global IPv4 address: the Well-Known Prefix carries only those (RFC 6052 §3.1).
GLOBAL4 = "9.9.9.9"
SENTINEL_SPORT = 47999


def embed(pool6: str, v4: str) -> str:
    """RFC 6052 /96: the IPv4 address in the last 32 bits."""
    net = ipaddress.IPv6Network(pool6)
    return str(ipaddress.IPv6Address(int(net.network_address) | int(ipaddress.IPv4Address(v4))))


@contextlib.contextmanager
def inside(ns: str) -> Iterator[None]:
    """Run the block in ``ns`` (this thread only); sockets made here stay in ``ns``."""
    pushns(ns)
    try:
        yield
    finally:
        popns()


def check(ns: str, *argv: str) -> str:
    r = nsrun(ns, *argv)
    if r.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} in {ns}: {r.stderr.strip()}")
    return r.stdout


@dataclass
class Frame:
    outgoing: bool  #: into the translator (True) or written by it (False)
    data: bytes

    @property
    def pkt(self) -> Packet:
        return IP(self.data) if self.data[0] >> 4 == 4 else IPv6(self.data)


class Tap:
    """An AF_PACKET socket on the TUN: what goes into and comes out of the translator."""

    def __init__(self, ns: str, tun: str, outgoing: bool = True) -> None:
        with inside(ns):
            s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        try:
            s.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 1 << 24)
            if not outgoing:
                s.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
            s.bind((tun, ETH_P_ALL))
        except OSError:
            s.close()
            raise
        self.sock = s
        self.frames: list[Frame] = []

    def poll(self, timeout: float) -> Frame | None:
        self.sock.settimeout(timeout)
        try:
            data, addr = self.sock.recvfrom(65535)
        except (TimeoutError, BlockingIOError):
            return None
        f = Frame(addr[2] == PACKET_OUTGOING, data)
        self.frames.append(f)
        return f

    def take(self) -> list[Frame]:
        out, self.frames = self.frames, []
        return out

    def close(self) -> None:
        self.sock.close()


@dataclass
class Siit:
    ns: str
    tun: str
    pool6: str
    metrics_port: int
    proc: subprocess.Popen[bytes]
    log: Path
    inj: socket.socket
    tap: Tap
    _seq: int = 0
    _closers: list[Callable[[], None]] = field(default_factory=list)

    # -- packets in ------------------------------------------------------------------

    def send(self, *pkts: Packet | bytes) -> None:
        for p in pkts:
            b = bytes(p)
            proto = ETH_P_IPV6 if b[0] >> 4 == 6 else ETH_P_IP
            for _ in range(2000):  # the TUN's queue may be full for a moment under load
                try:
                    self.inj.sendto(b, (self.tun, proto))
                    break
                except OSError as e:
                    if e.errno != errno.ENOBUFS:
                        raise
                    time.sleep(0.001)
            else:
                raise AssertionError("TUN queue full for 2 s")

    def sentinel(self, seq: int) -> Packet:
        """A packet that is translated (EAM source, pool6 destination) by the workers: its
        Destination Options header keeps it off the in-kernel fast path (linux/fastpath6),
        which would overtake what the workers still have queued."""
        return (
            IPv6(src=EAM6, dst=embed(self.pool6, GLOBAL4))
            / IPv6ExtHdrDestOpt()
            / UDP(sport=SENTINEL_SPORT, dport=seq)
        )

    @staticmethod
    def is_sentinel(f: Frame, seq: int | None = None, outgoing: bool | None = None) -> bool:
        """The sentinel going in (IPv6) or its translation coming out (IPv4)."""
        if outgoing is not None and f.outgoing != outgoing:
            return False
        ports = udp_ports(f.data)
        if ports is None or ports[0] != SENTINEL_SPORT:
            return False
        return seq is None or ports[1] == seq

    def sync(self, tap: Tap | None = None, timeout: float = 5.0) -> list[Frame]:
        """Wait until everything sent so far is handled; return the frames seen (no sentinel)."""
        tap = tap or self.tap
        self._seq += 1
        seq = self._seq
        self.send(self.sentinel(seq))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            f = tap.poll(deadline - time.monotonic())
            if f is not None and self.is_sentinel(f, seq, outgoing=False):
                break
        else:
            raise AssertionError(f"the sentinel was not translated in {timeout} s: {self.tail()}")
        return [f for f in tap.take() if not self.is_sentinel(f)]

    def exchange(self, *pkts: Packet | bytes) -> list[Packet]:
        """Send, wait until handled, return what the translator wrote (parsed)."""
        self.tap.take()
        self.send(*pkts)
        return [f.pkt for f in self.sync() if not f.outgoing]

    # -- counters ----------------------------------------------------------------------

    def metrics(self) -> dict[str, float]:
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with inside(self.ns), urllib.request.urlopen(url, timeout=5) as r:
            text = r.read().decode()
        return parse_exposition(text)

    def counters(self) -> dict[str, float]:
        """Drop reasons by name, and the other counters without prefix and suffix."""
        out: dict[str, float] = {}
        for k, v in self.metrics().items():
            if k.startswith('v6mostly_dropped_packets_total{reason="'):
                out[k.split('"')[1]] = v
            elif k.startswith("v6mostly_icmp_errors_generated_total{"):
                out["icmp_errors_" + k.split('"')[1]] = v
            elif k.startswith("v6mostly_translated_packets_total{"):
                _, direction, _, proto, _ = k.split('"')
                out[f"translated_{direction}_{proto}"] = v
            elif "{" not in k and k.startswith("v6mostly_") and "_poll_" not in k:
                # the translator's own (not process_*/python_*, nor the adaptive poll's
                # time and hits: they move with the timing, not with the packet)
                out[k.removeprefix("v6mostly_").removesuffix("_total")] = v
        return out

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-1500:]


def delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {k: v - before.get(k, 0.0) for k, v in after.items() if v != before.get(k, 0.0)}


def _free_port(ns: str) -> int:
    with inside(ns):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    with s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def start_siit(netns: str, tmp_path: Path) -> Iterator[Callable[..., Siit]]:
    """Start ``v6mostly siit`` in ``netns`` with host routes for the real peers."""
    # A quiet TUN: no link-local address, so no MLD reports or router solicitations
    # from the kernel feed the translator's counters; forwarding stays off (see above).
    for s in (
        "net.ipv6.conf.default.addr_gen_mode=1",
        "net.ipv6.conf.default.router_solicitations=0",
        "net.ipv6.conf.all.forwarding=0",
        "net.ipv4.ip_forward=0",
    ):
        check(netns, "sysctl", "-qw", s)
    check(netns, "ip", "-6", "addr", "add", HOST6 + "/128", "dev", "lo", "nodad")
    check(netns, "ip", "addr", "add", HOST4 + "/32", "dev", "lo")
    started: list[Siit] = []

    def start(
        pool6: str = WKP,
        eam: tuple[str, ...] = (f"{EAM6}/128={EAM4}/32",),
        own6: str = OWN6,
        own4: str = OWN4,
        extra: tuple[str, ...] = (),
    ) -> Siit:
        tun = f"xl{len(started)}{netns[-6:]}"
        port = _free_port(netns)
        log = tmp_path / f"{tun}.log"
        argv = ["siit", "--tun", tun, "--pool6", pool6]
        for e in eam:
            argv += ["--eam", e]
        argv += ["--ipv4-address", own4, "--ipv6-address", own6, "--queues", "1"]
        # --no-rps: RPS would hand flows to other CPUs' backlogs, so the capture could see
        # the sentinel before an earlier packet of another flow (see ``sync``).
        argv += ["--no-offload", "--no-rps", "--metrics", f"127.0.0.1:{port}", *extra]
        proc = _services.start(netns, *argv, log=log)
        inj: socket.socket | None = None
        tap: Tap | None = None
        try:
            ok = wait_for(
                lambda: proc.poll() is not None or "metrics on" in log.read_text(errors="replace"),
                timeout=20,
            )
            if not ok or proc.poll() is not None:
                raise AssertionError(f"siit did not start: {log.read_text(errors='replace')}")
            with inside(netns):
                inj = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, 0)
            tap = Tap(netns, tun)
            check(netns, "ip", "-6", "route", "add", own6 + "/128", "dev", tun)
            check(netns, "ip", "route", "add", own4 + "/32", "dev", tun, "src", HOST4)
            siit = Siit(netns, tun, pool6, port, proc, log, inj, tap)
        except BaseException:
            if inj is not None:
                inj.close()
            if tap is not None:
                tap.close()
            _services.stop(proc)
            raise
        started.append(siit)
        siit.sync()  # the data plane is up and translating
        return siit

    try:
        yield start
    finally:
        for s in started:
            s.inj.close()
            s.tap.close()
            for c in s._closers:
                c()
            with contextlib.suppress(subprocess.TimeoutExpired):
                _services.stop(s.proc)


@pytest.fixture
def siit(start_siit: Callable[..., Siit]) -> Siit:
    """pool6 64:ff9b::/96, EAM 2001:db8::2/128 = 172.16.0.2/32, own 172.16.0.3 / 2001:db8:ff::1."""
    return start_siit()


def udp6(src: str, dst: str, hlim: int = 64, sport: int = 1234, dport: int = 5678) -> Packet:
    return IPv6(src=src, dst=dst, hlim=hlim) / UDP(sport=sport, dport=dport) / Raw(b"issue-8")


def udp_ports(data: bytes) -> tuple[int, int] | None:
    """(source port, destination port) of an unfragmented UDP packet, read fast."""
    if data[0] >> 4 == 4:
        ihl = (data[0] & 15) * 4
        if data[9] != 17 or int.from_bytes(data[6:8], "big") & 0x3FFF:
            return None
        return struct.unpack_from("!HH", data, ihl)  # type: ignore[return-value]
    if data[0] >> 4 == 6 and data[6] == 17:
        return struct.unpack_from("!HH", data, 40)  # type: ignore[return-value]
    if data[0] >> 4 == 6 and data[6] == 60 and data[40] == 17:  # the sentinel's DestOpt
        return struct.unpack_from("!HH", data, 40 + 8 * (data[41] + 1))  # type: ignore[return-value]
    return None


def udp6_bytes(src: str, dst: str, hlim: int, sport: int, dport: int, payload: bytes) -> bytes:
    """``bytes(udp6(...))`` without scapy's cost (thousands of distinct sources)."""
    a = ipaddress.IPv6Address(src).packed + ipaddress.IPv6Address(dst).packed
    n = 8 + len(payload)
    udp = struct.pack("!HHHH", sport, dport, n, 0) + payload
    data = a + struct.pack("!IxxxB", n, 17) + udp + b"\0" * (n & 1)
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    ck = (~total & 0xFFFF) or 0xFFFF
    udp = udp[:6] + struct.pack("!H", ck) + udp[8:]
    return struct.pack("!IHBB", 6 << 28, n, 17, hlim) + a + udp


def udp4(src: str, dst: str, ttl: int = 64, sport: int = 1234, dport: int = 5678) -> Packet:
    return IP(src=src, dst=dst, ttl=ttl) / UDP(sport=sport, dport=dport) / Raw(b"issue-8")


# -- 1. hairpinning (RFC 7757 §4.3) -------------------------------------------------------


def test_destination_from_the_eam_is_translated_not_hairpinned(siit: Siit) -> None:
    """Issue 8 §1: ``64:ff9b::9ff:ffff -> 2001:db8::2`` is IPv4 ``9.255.255.255 -> 172.16.0.2``.

    RFC 7757 §4.3 hairpinning is for a destination translated through pool6
    whose IPv4 form is an EAM'd address; here the destination is in the EAM
    table itself, so this is an ordinary translation.
    """
    before = siit.counters()
    out = siit.exchange(udp6("64:ff9b::9ff:ffff", EAM6, sport=4444, dport=7))
    assert len(out) == 1, [p.summary() for p in out]
    p = out[0]
    assert p.version == 4, p.summary()
    assert (p.src, p.dst) == ("9.255.255.255", EAM4)
    assert (p[UDP].sport, p[UDP].dport, bytes(p[UDP].payload)) == (4444, 7, b"issue-8")
    d = delta(before, siit.counters())
    assert d.get("hairpinned", 0) == 0, d
    assert not any(k in d for k in ("ttl_expired", "untranslatable_destination")), d


def test_real_hairpin_between_two_eam_nodes(start_siit: Callable[..., Siit]) -> None:
    """RFC 7757 §4.3: IPv6 node -> pool6 form of an EAM'd IPv4 address comes back as IPv6.

    With the Well-Known Prefix the pool6 form of 172.16.0.2 does not exist
    (RFC 6052 §3.1: "The Well-Known Prefix MUST NOT be used to represent
    non-global IPv4 addresses"), so this uses a network-specific prefix.
    In the second pass the source goes through pool6 and the destination
    through the EAM: ``2001:db8::3 -> NSP::172.16.0.2`` becomes
    ``NSP::172.16.0.4 -> 2001:db8::2``.
    """
    s = start_siit(
        pool6=NSP,
        eam=(f"{EAM6}/128={EAM4}/32", "2001:db8::3/128=172.16.0.4/32"),
    )
    before = s.counters()
    out = s.exchange(udp6("2001:db8::3", embed(NSP, EAM4), sport=5555, dport=9999))
    assert len(out) == 1, [p.summary() for p in out]
    p = out[0]
    assert p.version == 6, p.summary()
    assert (p.src, p.dst) == (embed(NSP, "172.16.0.4"), EAM6)
    assert (p[UDP].sport, p[UDP].dport, bytes(p[UDP].payload)) == (5555, 9999, b"issue-8")
    assert delta(before, s.counters()).get("hairpinned") == 1
    # The packet under this prefix: no hairpin, IPv4 out.
    out = s.exchange(udp6(embed(NSP, "9.255.255.255"), EAM6))
    assert [(p.version, p.src, p.dst) for p in out] == [(4, "9.255.255.255", EAM4)]
    assert delta(before, s.counters()).get("hairpinned") == 1


# -- 2. ICMP error rate limit (RFC 4443 §2.4 (f), RFC 1812 §4.3.2.8) ------------------------


def _flood(
    s: Siit, sources: list[str], total: int, chunk: int = 500
) -> tuple[list[Frame], int, float]:
    """``total`` hop-limit-1 UDP packets cycling over ``sources``, each chunk ending in a
    normal (hop limit 64) packet from the EAM'd node; flow control: at most two chunks
    in flight, and every normal packet must come out translated. Returns the frames the
    translator wrote, the number of normal packets and the elapsed time."""
    tap = Tap(s.ns, s.tun, outgoing=False)
    s._closers.append(tap.close)
    dst = embed(s.pool6, "8.8.4.4")
    expired = [udp6_bytes(src, dst, 1, 33000, 33434, b"flood") for src in sources]
    seen: set[int] = set()

    def wait_normal(seq: int, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while seq not in seen:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"normal packet {seq} not translated during the flood")
            f = tap.poll(left)
            if f is not None and s.is_sentinel(f, outgoing=False):
                seen.add(udp_ports(f.data)[1])  # type: ignore[index]

    s._seq += 1
    first = s._seq
    sent = 0
    t0 = time.monotonic()
    while sent < total:
        n = min(chunk - 1, total - sent)
        for i in range(n):
            s.send(expired[(sent + i) % len(expired)])
        sent += n
        s.send(s.sentinel(s._seq))
        if s._seq - first >= 2:
            wait_normal(s._seq - 2)
        s._seq += 1
        assert time.monotonic() - t0 < 90, "flood took too long"
    for seq in range(first, s._seq):
        wait_normal(seq)
    # Errors the translator wrote after the last normal packet (none expected; be sure).
    while tap.poll(0.2) is not None:
        pass
    elapsed = time.monotonic() - t0
    frames = [f for f in tap.take() if not s.is_sentinel(f, outgoing=False)]
    assert seen == set(range(first, s._seq))
    return frames, s._seq - first, elapsed


def _time_exceeded(frames: list[Frame]) -> list[str]:
    """The destinations of the Time Exceeded messages; nothing else may come out."""
    own = ipaddress.IPv6Address(OWN6).packed
    for f in frames[:3]:  # a close look at a few (scapy is slow for thousands)
        p = f.pkt
        assert p.haslayer(ICMPv6TimeExceeded) and p[ICMPv6TimeExceeded].code == 0, p.summary()
        assert p[IPerror6].hlim == 1 and p[UDPerror].dport == 33434, p.summary()
    bad = [
        f.pkt.summary()
        for f in frames
        if f.data[:1] != b"\x60"
        or f.data[6] != 58
        or f.data[40:42] != b"\x03\x00"
        or f.data[8:24] != own
    ]
    assert not bad, bad[:5]
    return [str(ipaddress.IPv6Address(f.data[24:40])) for f in frames]


def test_time_exceeded_flood_from_one_source_is_rate_limited(siit: Siit) -> None:
    """Issue 8 §2: 50,000 hop-limit-1 packets from one source give at most the per-address
    bucket's allowance (burst 6, then 1 per second) of Time Exceeded; the rest is counted
    in ``icmp_errors_suppressed``; normal traffic from the same source keeps flowing."""
    before = siit.counters()
    frames, normal, elapsed = _flood(siit, [EAM6], 50_000)
    errors = _time_exceeded(frames)
    d = delta(before, siit.counters())
    flood = 50_000
    assert d.get("translated_6to4_udp") == normal, d  # every normal packet
    assert set(errors) == {EAM6}
    assert 6 <= len(errors) <= 6 + int(elapsed) + 1, (len(errors), elapsed)
    assert d.get("ttl_expired") == flood, d
    assert d.get("icmp_errors_ipv6") == len(errors), d
    assert d.get("icmp_errors_suppressed") == flood - len(errors), d


def test_time_exceeded_flood_from_many_sources_is_capped_globally(siit: Siit) -> None:
    """Issue 8 §2: spoofed sources (5,000, each with a full per-address bucket) do not
    turn the translator into a reflector: the global bucket (1000/s, burst 50, one
    worker) caps the Time Exceeded messages in all."""
    sources = [f"2001:db8:5::{i:x}" for i in range(1, 5001)]
    before = siit.counters()
    frames, normal, elapsed = _flood(siit, sources, 50_000)
    errors = _time_exceeded(frames)
    d = delta(before, siit.counters())
    flood = 50_000
    assert d.get("translated_6to4_udp") == normal, d  # every normal packet
    assert 50 <= len(errors) <= 50 + int(1000 * elapsed) + 1, (len(errors), elapsed)
    assert len(errors) < flood // 2, (len(errors), elapsed)  # far below 1:1
    assert len(set(errors)) > 40  # spread over the sources, not one bucket
    assert d.get("ttl_expired") == flood, d
    assert d.get("icmp_errors_ipv6") == len(errors), d
    assert d.get("icmp_errors_suppressed") == flood - len(errors), d


# -- 3. addresses never translated (RFC 1812 §5.3.7, RFC 3927 §7, RFC 6890) ---------------


NEVER = [
    # (packet, reason)
    (udp4(EAM4, "169.254.0.42"), "not_forwardable_destination"),
    (udp4(EAM4, "127.0.0.1"), "not_forwardable_destination"),
    (udp4(EAM4, "0.1.2.3"), "not_forwardable_destination"),
    (udp4(EAM4, "240.0.0.1"), "not_forwardable_destination"),
    (udp4(EAM4, "255.255.255.255"), "not_forwardable_destination"),
    (udp4("127.0.0.1", EAM4), "not_forwardable_source"),
    (udp4("169.254.1.1", EAM4), "not_forwardable_source"),
    (udp4("0.0.0.0", EAM4), "not_forwardable_source"),
    (udp6(EAM6, "64:ff9b::a9fe:2a"), "not_forwardable_destination"),
    (udp6(EAM6, "64:ff9b::e000:1"), "multicast"),
    (udp6(EAM6, "64:ff9b::ffff:ffff"), "not_forwardable_destination"),
    (udp6(EAM6, "64:ff9b::f000:1"), "not_forwardable_destination"),
    (udp6("64:ff9b::7f00:1", EAM6), "not_forwardable_source"),
    (udp6("64:ff9b::a9fe:101", EAM6), "not_forwardable_source"),
]


def dropped_silently(s: Siit, pkt: Packet, reason: str) -> str | None:
    """Send ``pkt``; None if nothing came out and exactly ``reason`` was counted, once."""
    before = s.counters()
    out = s.exchange(pkt)
    d = delta(before, s.counters())
    d.pop("translated_6to4_udp", None)  # the sentinel
    if out or d != {reason: 1}:
        return f"{pkt.summary()}: out {[p.summary() for p in out]}, counters {d} (want {reason})"
    return None


def test_never_translated(siit: Siit) -> None:
    """Issue 8 §4: 0/8, 127/8, 169.254/16, 240/4, 255.255.255.255 (and 224/4 through
    pool6) as source or destination: nothing comes out of the TUN (no translation, no
    ICMP error) and the drop is counted under its own reason. Also an ICMPv4 error
    quoting ``172.16.0.2 -> 169.254.0.42``: ``inner_not_forwardable``."""
    inner = IP(src=EAM4, dst="169.254.0.42") / UDP(sport=1, dport=2)
    cases = [
        *NEVER,
        (IP(src=GLOBAL4, dst=EAM4) / ICMP(type=3, code=3) / inner, "inner_not_forwardable"),
    ]
    failures = [f for pkt, reason in cases if (f := dropped_silently(siit, pkt, reason))]
    assert not failures, "\n".join(failures)


# -- 4. the translator's own addresses ------------------------------------------------------

OWN_CONFIGS = {
    # the brief's: own IPv6 outside pool6
    "wkp": {"pool6": WKP, "own6": OWN6},
    # the issue's: own IPv6 inside pool6, so translating it would loop into 172.16.0.3
    "nsp": {"pool6": NSP, "own6": embed(NSP, OWN4)},
}


@pytest.mark.parametrize("config", OWN_CONFIGS, ids=list(OWN_CONFIGS))
def test_own_addresses_answer_as_a_host(start_siit: Callable[..., Siit], config: str) -> None:
    """Issue 8 §5: the translator answers for its own addresses (echo reply; port
    unreachable for UDP), also to a hop-limit-1 request, and never translates them."""
    s = start_siit(**OWN_CONFIGS[config])
    own6 = OWN_CONFIGS[config]["own6"]
    before = s.counters()

    # Real pings: the namespace's kernel sends and accepts them.
    for argv in (
        ["ping", "-6", "-c", "3", "-i", "0.1", "-W", "2", own6],
        ["ping", "-6", "-t", "1", "-c", "2", "-i", "0.1", "-W", "2", own6],
        ["ping", "-4", "-c", "3", "-i", "0.1", "-W", "2", OWN4],
    ):
        r = nsrun(s.ns, *argv)
        assert r.returncode == 0 and " 0% packet loss" in r.stdout, (argv, r.stdout, r.stderr)
    frames = s.sync()
    ins = [f.pkt for f in frames if f.outgoing]
    outs = [f.pkt for f in frames if not f.outgoing]
    # One reply per request, nothing translated, no loop back into the TUN.
    assert len(ins) == 8 and len(outs) == 8, [p.summary() for p in ins + outs]
    req6 = [p for p in ins if p.haslayer(ICMPv6EchoRequest)]
    assert sorted(p.hlim for p in req6) == [1, 1, 64, 64, 64]
    rep6 = [p for p in outs if p.haslayer(ICMPv6EchoReply)]
    assert len(rep6) == 5 and {(p.src, p.dst) for p in rep6} == {(own6, HOST6)}
    rep4 = [p for p in outs if p.version == 4]
    assert len(rep4) == 3 and {(p.src, p.dst, p[ICMP].type) for p in rep4} == {(OWN4, HOST4, 0)}
    assert not any(p.version == 4 and p.dst == OWN4 for p in outs)
    d = delta(before, s.counters())
    assert d.get("local_replies") == 8, d
    assert d.get("ttl_expired", 0) == 0, d

    # UDP to the own addresses: port unreachable from them, nothing translated.
    out = s.exchange(udp6(HOST6, own6, dport=9))
    assert len(out) == 1 and out[0].haslayer(ICMPv6DestUnreach), [p.summary() for p in out]
    assert (out[0].src, out[0].dst, out[0][ICMPv6DestUnreach].code) == (own6, HOST6, 4)
    out = s.exchange(udp4(HOST4, OWN4, dport=9))
    assert len(out) == 1 and out[0].version == 4, [p.summary() for p in out]
    assert (out[0].src, out[0].dst, out[0][ICMP].type, out[0][ICMP].code) == (
        OWN4,
        HOST4,
        3,
        3,
    )
    d = delta(before, s.counters())
    assert d.get("to_translator") == 2, d
    assert not any(k.startswith(("translated_4to6", "translated_6to4_icmp")) for k in d), d


# -- 5. RFC 7915 §5.4 / §4.4 errors ---------------------------------------------------------


def test_untranslatable_ipv6_destination_gets_admin_prohibited(siit: Siit) -> None:
    """RFC 7915 §5.4: "If the IPv6 packet is discarded, then the translator SHOULD send
    back an ICMPv6 error message to the original sender of the packet, unless the
    discarded packet is itself an ICMPv6 message. The ICMPv6 message, if sent, has a
    Type of 1 (Destination Unreachable) and a Code of 1 (Communication with Destination
    Administratively Prohibited)"."""
    check(siit.ns, "ip", "-6", "route", "add", "2001:db8:dead::/64", "dev", siit.tun)
    before = siit.counters()
    # A real sender: its kernel takes the error (EACCES on a connected UDP socket).
    with inside(siit.ns):
        u = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    with u:
        u.bind((HOST6, 0))
        u.connect(("2001:db8:dead::1", 9))
        u.send(b"issue-8")
        frames = siit.sync()
        u.settimeout(2)
        with pytest.raises(PermissionError):
            u.recv(100)
    outs = [f.pkt for f in frames if not f.outgoing]
    assert len(outs) == 1 and outs[0].haslayer(ICMPv6DestUnreach), [p.summary() for p in outs]
    e = outs[0]
    assert (e.src, e.dst, e[ICMPv6DestUnreach].type, e[ICMPv6DestUnreach].code) == (
        OWN6,
        HOST6,
        1,
        1,
    )
    assert not any(p.version == 4 for p in outs)
    # "unless the discarded packet is itself an ICMPv6 message"
    echo = IPv6(src=HOST6, dst="2001:db8:dead::1") / ICMPv6EchoRequest(id=8, seq=1)
    assert siit.exchange(echo) == []
    d = delta(before, siit.counters())
    assert d.get("untranslatable_destination") == 2, d
    assert d.get("icmp_errors_ipv6") == 1, d


def test_untranslatable_ipv4_source_gets_admin_prohibited(siit: Siit) -> None:
    """RFC 7915 §4.4: "If the IPv4 packet is discarded, then the translator SHOULD be able
    to send back an ICMPv4 error message to the original sender of the packet, unless the
    discarded packet is itself an ICMPv4 message. The ICMPv4 message, if sent, has a Type
    of 3 (Destination Unreachable) and a Code of 13 (Communication Administratively
    Prohibited)". With the Well-Known Prefix 10.1.2.3 has no IPv6 form (RFC 6052 §3.1)."""
    check(siit.ns, "ip", "addr", "add", "10.1.2.3/32", "dev", "lo")
    check(siit.ns, "ip", "route", "add", EAM4 + "/32", "dev", siit.tun, "src", "10.1.2.3")
    before = siit.counters()
    with inside(siit.ns):
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with u:
        u.bind(("10.1.2.3", 0))
        u.connect((EAM4, 9))
        u.send(b"issue-8")
        frames = siit.sync()
        u.settimeout(2)
        with pytest.raises(OSError) as exc:
            u.recv(100)
        assert exc.value.errno == errno.EHOSTUNREACH  # the kernel's mapping of code 13
    outs = [f.pkt for f in frames if not f.outgoing]
    assert len(outs) == 1 and outs[0].version == 4, [p.summary() for p in outs]
    e = outs[0]
    assert (e.src, e.dst, e[ICMP].type, e[ICMP].code) == (OWN4, "10.1.2.3", 3, 13)
    # never about an ICMPv4 message, never for multicast
    assert siit.exchange(IP(src="10.1.2.3", dst=EAM4) / ICMP(type=8, id=8, seq=1)) == []
    assert siit.exchange(udp4("10.1.2.3", "224.0.0.5")) == []
    assert siit.exchange(udp4("10.1.2.3", "239.1.2.3")) == []
    d = delta(before, siit.counters())
    assert d.get("untranslatable_source") == 2, d
    assert d.get("multicast") == 2, d
    assert d.get("icmp_errors_ipv4") == 1, d


# -- 6. inner-failure reasons (RFC 7915 §4.3) ------------------------------------------------


def test_icmp_error_with_a_broken_inner_packet(siit: Siit) -> None:
    """Issue 8 §9: a port unreachable (e.g. from 198.51.100.9 to 172.16.0.2) quoting a
    truncated or non-IP packet is counted as ``inner_malformed``, not as
    ``untranslatable_source`` (198.51.100.9 has no form under the Well-Known Prefix);
    nothing comes out, no ICMP error about an ICMP error."""
    quoted = {
        "truncated": b"\x45\x00\x00",
        "not-ip": b"\x00" * 28,
        "cut-header": bytes(udp4(EAM4, GLOBAL4))[:12],
        "ipv6-in-ipv4": bytes(udp6(EAM6, embed(WKP, GLOBAL4))),
    }
    failures = [
        f
        for outer in ("198.51.100.9", GLOBAL4)
        for q in quoted.values()
        if (
            f := dropped_silently(
                siit, IP(src=outer, dst=EAM4) / ICMP(type=3, code=3) / Raw(q), "inner_malformed"
            )
        )
    ]
    assert not failures, "\n".join(failures)


def test_harness_self_check(siit: Siit) -> None:
    """The harness sees a plain translation both ways (so an empty capture means something)."""
    out = siit.exchange(udp6(EAM6, embed(WKP, GLOBAL4)), udp4(GLOBAL4, EAM4))
    # in either order: the IPv4 one may be translated by the fast path, ahead of a worker
    assert sorted((p.version, p.src, p.dst) for p in out) == [
        (4, EAM4, GLOBAL4),
        (6, embed(WKP, GLOBAL4), EAM6),
    ]
