"""Queue steering (linux/steering.py) and rps = "auto" (services/rps.py).

The steering program is loaded into the running kernel and run on packets with
BPF_PROG_TEST_RUN (root, as CI is): its return value must equal the Python model
``queue_key``, and the model must give a flow's two directions, as the PLAT's TUN
sees them (IPv6 from the client, IPv4 from the server), the same queue.
"""

from __future__ import annotations

import os
import random
import struct
from collections.abc import Iterator

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import (
    ICMPv6EchoReply,
    ICMPv6EchoRequest,
    ICMPv6PacketTooBig,
    IPv6,
    IPv6ExtHdrFragment,
)
from scapy.packet import Packet, raw

from v6mostly.linux import steering
from v6mostly.linux.bpf import BpfError
from v6mostly.services.rps import RpsAuto
from v6mostly.siit.translator import Translator, TranslatorConfig

C6, S6 = "2001:db8:46::1", "2001:db8:64::cb00:710a"
C4, S4 = "198.51.100.1", "203.0.113.10"


@pytest.fixture(scope="module")
def prog() -> Iterator[int]:
    if os.geteuid() != 0:
        pytest.skip("loading an eBPF program needs root")
    fd = steering.load_steering()
    yield fd
    os.close(fd)


def _random_packets(rng: random.Random, n: int) -> Iterator[bytes]:
    for _ in range(n):
        proto = rng.choice([6, 17, 1, 58, 47, 44, 0])
        l4 = bytes(rng.getrandbits(8) for _ in range(rng.choice([0, 2, 4, 6, 8, 20, 40])))
        if rng.random() < 0.5:
            frag = rng.choice([0, 0, 0, 0x2000, 0x4000, 0x0005, 0x4001])
            ihl = rng.choice([5, 5, 6, 15])
            head = struct.pack(
                "!BBHHHBBH4s4s", 0x40 | ihl, 0, 0, 1, frag, 64, proto, 0, bytes(4), bytes(4)
            )
            pkt = head + bytes(ihl * 4 - 20) + l4
        else:
            pkt = (
                struct.pack("!IHBB16s16s", 0x60000000, len(l4), proto, 64, bytes(16), bytes(16))
                + l4
            )
        yield pkt + bytes(max(0, 40 - len(pkt)))  # BPF_PROG_TEST_RUN wants 40 bytes


def test_program_equals_the_model(prog: int) -> None:
    rng = random.Random(8781)
    seen = set()
    for pkt in _random_packets(rng, 2000):
        assert steering.test_run(prog, pkt) == steering.queue_key(pkt), pkt.hex()
        seen.add(steering.queue_key(pkt) % 2)
    assert seen == {0, 1}  # both queues get traffic


@pytest.mark.parametrize(
    "pkt",
    [
        IPv6(src=C6, dst=S6) / TCP(sport=40000, dport=443) / (b"x" * 10),
        IP(src=S4, dst=C4) / UDP(sport=53, dport=5353) / (b"y" * 30),
        IPv6(src=C6, dst=S6) / ICMPv6EchoRequest(id=0x1234) / (b"z" * 20),
        IP(src=S4, dst=C4, flags="MF") / UDP(sport=1, dport=2) / (b"f" * 30),
        IPv6(src=C6, dst=S6) / IPv6ExtHdrFragment() / UDP() / (b"f" * 10),
        IPv6(src=C6, dst=S6) / ICMPv6PacketTooBig() / (b"e" * 48),
    ],
    ids=["tcp6", "udp4", "echo6", "fragment4", "fragment6", "icmp6-error"],
)
def test_program_on_real_packets(prog: int, pkt: Packet) -> None:
    b = raw(pkt)
    assert steering.test_run(prog, b) == steering.queue_key(b)


def test_fragments_and_other_protocols_go_to_queue_zero() -> None:
    assert steering.queue_key(raw(IP(flags="MF") / UDP(sport=1, dport=2))) == 0
    assert steering.queue_key(raw(IPv6() / IPv6ExtHdrFragment() / UDP())) == 0
    assert steering.queue_key(raw(IP(proto=47) / b"gre!")) == 0
    assert steering.queue_key(b"\x45\x00") == 0  # truncated: LD_ABS ends with 0


XL = Translator(TranslatorConfig(pool6="2001:db8:64::/96", eam=[(f"{C6}/128", f"{C4}/32")]))


@pytest.mark.parametrize(
    ("request_", "reply"),
    [
        (
            IPv6(src=C6, dst=S6) / TCP(sport=40000, dport=443, flags="S"),
            IP(src=S4, dst=C4) / TCP(sport=443, dport=40000, flags="SA"),
        ),
        (
            IPv6(src=C6, dst=S6) / UDP(sport=5353, dport=53) / (b"q" * 20),
            IP(src=S4, dst=C4) / UDP(sport=53, dport=5353) / (b"a" * 40),
        ),
        (
            IPv6(src=C6, dst=S6) / ICMPv6EchoRequest(id=77, seq=1) / (b"p" * 56),
            IP(src=S4, dst=C4) / ICMP(type=0, id=77, seq=1) / (b"p" * 56),
        ),
    ],
    ids=["tcp", "udp", "ping"],
)
def test_both_directions_of_a_flow_on_one_queue(request_: Packet, reply: Packet) -> None:
    """What the TUN's readers see: the request as IPv6 and the reply as IPv4; what the
    workers write (the translations) keep the key too."""
    req, rep = raw(request_), raw(reply)
    assert steering.queue_key(req) == steering.queue_key(rep) != 0
    assert steering.queue_key(XL.translate(req).packets[0]) == steering.queue_key(req)
    assert steering.queue_key(XL.translate(rep).packets[0]) == steering.queue_key(rep)
    echo6 = raw(IPv6(src=S6, dst=C6) / ICMPv6EchoReply(id=77, seq=1))
    assert steering.queue_key(echo6) == steering.queue_key(
        raw(IPv6(src=C6, dst=S6) / ICMPv6EchoRequest(id=77))
    )


def test_attach_reports_a_bad_descriptor(prog: int) -> None:
    r, w = os.pipe()
    try:
        err = steering.attach(r)
    finally:
        os.close(r)
        os.close(w)
    assert err is not None and err.startswith("queue steering: TUNSETSTEERINGEBPF")


def test_test_run_errors_are_bpf_errors(prog: int) -> None:
    with pytest.raises(BpfError, match="BPF_PROG_TEST_RUN"):
        steering.test_run(prog, b"\x45")  # shorter than the kernel takes


# -- rps = "auto" ---------------------------------------------------------------------------


def test_rps_auto_on_with_bulk_off_after_quiet() -> None:
    a = RpsAuto()
    assert a.update(0, 100.0) is None  # first sample
    assert a.update(50, 101.0) is None  # 50/s: not bulk
    assert a.update(5050, 102.0) is True and a.on  # 5000/s
    assert a.update(9050, 103.0) is None
    assert a.update(9100, 104.0) is None  # quiet from 103
    assert a.update(9120, 106.0) is None
    assert a.update(9600, 107.0) is None  # 480/s: busy again, the quiet time restarts
    for t in (108.0, 109.0, 110.0, 111.0):
        assert a.update(9600, t) is None
    assert a.update(9600, 112.0) is False and not a.on  # 5 s under OFF_RATE
    assert a.update(9600, 113.0) is None


def test_rps_auto_ignores_restarted_counters_and_clock_steps() -> None:
    a = RpsAuto()
    a.update(100_000, 10.0)
    assert a.update(10, 11.0) is None  # a worker restarted: counters went down
    assert a.update(10, 11.0) is None  # no time passed
    assert a.update(2000, 12.0) is True
