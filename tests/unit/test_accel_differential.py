"""The C fast path (siit/_accel.c) against the pure-Python core, its reference.

Every input goes to both: ``FastPath.translate_into`` of one translator and
``Translator.translate_python`` of a twin with the same configuration; the returned
offsets, the whole buffer, the pending packets, the IPv4 Identification and every
counter must be identical. Inputs: Jool's corpus (sent and expected packets), the
hypothesis generators of ``test_properties`` (as generated and mutated) and the fuzz
mutator of ``tests/fuzz/harness.py``, through configurations that cover every RFC 6052
prefix length, the Well-Known Prefix, EAM entries of several lengths, the translator's
own addresses, hairpinning, TTL decrement, traffic-class reset and the zero UDP checksum.
Then the C loop (``FastPath.run``) on a datagram socket pair standing in for a TUN
queue, and a worker (``run_plain``) stopped by SIGTERM as the data plane stops it.
"""

from __future__ import annotations

import ipaddress
import os
import random
import signal
import socket
import time
from typing import Any

import pytest

from v6mostly.siit import accel

if not accel.available():
    pytest.skip(accel.status(), allow_module_level=True)

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.all import ICMP, IP, TCP, UDP, ICMPv6EchoRequest, IPv6, raw

from tests.unit.test_properties import v4_packets, v6_packets
from tests.unit.xlat_cases import C4, C6, CONFIGS, S4, S6, edge_packets, mutated
from v6mostly.services.dataplane import SharedCounters, _wait_pid, _worker_entry
from v6mostly.services.worker_loops import (
    BUFSIZE,
    W_EXC,
    W_GSO,
    W_SEGS,
    W_WERR,
    WORKER_COUNTERS,
    handle_vnet_packet,
)
from v6mostly.siit.translator import HEADROOM, Translator, TranslatorConfig
from v6mostly.siit.verdict import Stats
from v6mostly.wire import vnet


class Pair:
    """A translator with the C fast path (fallback calls counted) and its pure twin."""

    def __init__(self, kw: dict[str, Any], shared: bool) -> None:
        def stats() -> Stats:
            return Stats(memoryview(bytearray(8 * Stats.SIZE)).cast("Q")) if shared else Stats()

        self.c = Translator(TranslatorConfig(**kw), stats=stats())
        self.py = Translator(TranslatorConfig(**kw), stats=stats())
        self.fallbacks = 0
        self.inputs = 0
        reference = self.c.translate_python

        def counted(buf: bytearray, start: int, end: int) -> tuple[int, int]:
            self.fallbacks += 1
            return reference(buf, start, end)

        self.c.translate_python = counted  # type: ignore[method-assign]
        fast, why = accel.attach(self.c)
        assert fast is not None, why
        self.fast = fast

    def check(self, pkt: bytes, gso: bool = False) -> None:
        self.inputs += 1
        self.c.gso = self.py.gso = gso
        b1 = bytearray(HEADROOM) + pkt + bytes(24)
        b2 = bytearray(b1)
        end = HEADROOM + len(pkt)
        r1 = self.fast.translate_into(b1, HEADROOM, end)
        r2 = self.py.translate_python(b2, HEADROOM, end)
        assert r1 == r2, pkt.hex()
        assert b1 == b2, pkt.hex()
        assert self.c.pending == self.py.pending, pkt.hex()
        assert self.c.ip_id == self.py.ip_id
        self.c.pending.clear()
        self.py.pending.clear()

    def check_counters(self) -> None:
        assert self.c.stats.as_dict() == self.py.stats.as_dict()


_PAIRS: dict[tuple[str, bool], Pair] = {}


def pair(name: str, shared: bool = True) -> Pair:
    if (name, shared) not in _PAIRS:
        _PAIRS[(name, shared)] = Pair(CONFIGS[name], shared)
    return _PAIRS[(name, shared)]


def every_pair(pkt: bytes) -> None:
    for name in CONFIGS:
        for shared in (True, False):
            p = pair(name, shared)
            p.check(pkt)
    for name in CONFIGS:
        pair(name).check_counters()


# -- the hypothesis generators of test_properties ------------------------------------------


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.one_of(v4_packets(), v6_packets()))
def test_generated_packets(pkt: bytes) -> None:
    every_pair(pkt)


@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    st.one_of(v4_packets(), v6_packets()),
    st.lists(st.tuples(st.integers(0, 80), st.integers(0, 255)), min_size=1, max_size=4),
    st.booleans(),
    st.integers(-8, 8),
)
def test_mutated_packets(pkt: bytes, pokes: list[tuple[int, int]], fix: bool, cut: int) -> None:
    every_pair(mutated(pkt, pokes, fix, cut))


# -- the fuzz mutator and Jool's corpus ------------------------------------------------------


def test_fuzz_mutator() -> None:
    from harness import mutate, seeds, translators  # tests/fuzz (tests/conftest.py)

    rng = random.Random(13)
    pool = [*seeds(), raw(IP(src="8.8.8.8", dst="1.0.0.5") / UDP(sport=1, dport=2) / (b"x" * 30))]
    c_side, py_side = translators(), translators()
    pairs = []
    for xc, xp in zip(c_side, py_side, strict=True):
        fast, why = accel.attach(xc)
        assert fast is not None, why
        pairs.append((xc, fast, xp))
    for i in range(20000):
        data = mutate(rng, rng.choice(pool), pool)[:65000]
        xc, fast, xp = pairs[i & 1]
        b1 = bytearray(HEADROOM) + data + bytes(8)
        b2 = bytearray(b1)
        r = fast.translate_into(b1, HEADROOM, HEADROOM + len(data))
        assert r == xp.translate_python(b2, HEADROOM, HEADROOM + len(data)), data.hex()
        assert b1 == b2 and xc.pending == xp.pending and xc.ip_id == xp.ip_id, data.hex()
        xc.pending.clear()
        xp.pending.clear()
    for xc, _, xp in pairs:
        assert xc.stats.as_dict() == xp.stats.as_dict()


def test_jool_corpus() -> None:
    from corpus import load_manifest, translator_for  # tests/conformance

    try:
        base, manifest = load_manifest()
    except FileNotFoundError:
        pytest.skip("Jool's SIIT corpus not found (V6MOSTLY_CONFORMANCE)")
    handled = 0
    for case in manifest["cases"]:
        xc = translator_for(case, manifest["topology"])
        xp = translator_for(case, manifest["topology"])
        assert xc.accel is not None
        for name in [case["send"], *case["expect"]]:
            data = (base / name).read_bytes()
            b1 = bytearray(HEADROOM) + data
            b2 = bytearray(b1)
            r = xc.accel.translate_into(b1, HEADROOM, len(b1))
            assert r == xp.translate_python(b2, HEADROOM, len(b2)), (case["id"], name)
            assert b1 == b2 and xc.pending == xp.pending, (case["id"], name)
            handled += r[0] >= 0
            xc.pending.clear()
            xp.pending.clear()
        assert xc.stats.as_dict() == xp.stats.as_dict(), case["id"]
    assert handled > 20


# -- edge cases, and the C path really taking the common packets ----------------------------


def test_edge_cases() -> None:
    for pkt in edge_packets():
        every_pair(pkt)
        for shared in (True, False):
            pair("properties", shared).check(pkt, gso=True)


def test_the_c_path_takes_the_common_packets() -> None:
    p = Pair(CONFIGS["properties"], shared=True)
    pkts = [
        raw(IP(src=S4, dst=C4) / UDP(sport=53, dport=5353) / bytes(36)),
        raw(IPv6(src=C6, dst=S6) / UDP(sport=5353, dport=53) / bytes(16)),
        raw(IP(src=S4, dst=C4, flags="DF") / TCP(flags="A") / bytes(1400)),
        raw(IPv6(src=C6, dst=S6) / TCP(flags="A") / bytes(1200)),
        raw(IP(src=S4, dst=C4) / ICMP(type=0, id=1, seq=1) / bytes(56)),
        raw(IPv6(src=C6, dst=S6) / ICMPv6EchoRequest(id=1, seq=1, data=bytes(56))),
    ]
    for pkt in pkts:
        p.check(pkt)
    assert (p.inputs, p.fallbacks) == (6, 0)
    p.check_counters()
    p.check(raw(IP(src=S4, dst=C4, ttl=1) / UDP()))  # Time Exceeded: Python's
    assert p.fallbacks == 1


def test_wkp_table_marks_only_global_blocks() -> None:
    table = accel.wkp_table()
    assert sum(table) > 50000
    rng = random.Random(6052)
    for _ in range(3000):
        a = ipaddress.IPv4Address(rng.getrandbits(32))
        if table[int(a) >> 16]:
            assert a.is_global and not a.is_multicast, a


def test_refused_configuration_stays_python() -> None:
    eam = [(f"2001:db8:64::{i:x}/128", f"203.0.113.{i}/32") for i in range(1, accel.MAX_EAM + 2)]
    xl = Translator(TranslatorConfig(pool6="64:ff9b::/96", eam=eam))
    assert xl.accel is None and "EAM" in xl.accel_status
    assert xl.translate_into == xl.translate_python


# -- the C loop on a datagram socket pair (one packet per read and write, like a TUN) -------


def loop_setup(vnet: bool = False) -> tuple[Any, ...]:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    shared = Stats(memoryview(bytearray(8 * Stats.SIZE)).cast("Q"))
    xl = Translator(TranslatorConfig(**CONFIGS["properties"]), stats=shared)
    ref = Translator(TranslatorConfig(**CONFIGS["properties"]))
    w = memoryview(bytearray(8 * len(WORKER_COUNTERS))).cast("Q")
    buf = bytearray(BUFSIZE)
    return a, b, xl, ref, w, buf, memoryview(buf)[HEADROOM:]


def test_run_translates_a_burst_and_stops_when_empty() -> None:
    a, b, xl, ref, w, buf, token = loop_setup()
    pkts = [raw(IP(src=S4, dst=C4) / UDP(sport=53, dport=i) / bytes(36)) for i in range(1, 40)] + [
        raw(IPv6(src=C6, dst=S6) / UDP(sport=i, dport=53) / bytes(16)) for i in range(1, 40)
    ]
    for pkt in pkts:
        b.send(pkt)
    assert xl.accel is not None
    assert xl.accel.run(a.fileno(), buf, token, w, W_WERR, False, 256) == -1
    for pkt in pkts:
        assert b.recv(70000) == ref.translate(pkt).packets[0]
    assert xl.stats.as_dict() == ref.stats.as_dict() and xl.ip_id == ref.ip_id
    # budget, a packet for Python, the stop buffer, a closed descriptor
    for pkt in pkts[:3]:
        b.send(pkt)
    assert xl.accel.run(a.fileno(), buf, token, w, W_WERR, False, 2) == -2
    err = raw(IP(src=S4, dst=C4) / ICMP(type=3, code=3) / IP(src=C4, dst=S4) / UDP())
    b.send(err)
    assert xl.accel.run(a.fileno(), buf, token, w, W_WERR, False, 256) == len(err)
    assert bytes(buf[HEADROOM : HEADROOM + len(err)]) == err
    assert [b.recv(70000) for _ in range(3)] == [ref.translate(p).packets[0] for p in pkts[:3]]
    with pytest.raises(BufferError):
        xl.accel.run(a.fileno(), buf, b"\0", w, W_WERR, False, 256)
    b.close()
    fd = a.fileno()
    a.close()
    with pytest.raises(OSError):
        xl.accel.run(fd, buf, token, w, W_WERR, False, 256)


def test_run_vnet_zero_header() -> None:
    a, b, xl, ref, w, buf, token = loop_setup()
    pkt = raw(IP(src=S4, dst=C4) / UDP(sport=53, dport=99) / bytes(36))
    b.send(bytes(10) + pkt)
    assert xl.accel is not None
    assert xl.accel.run(a.fileno(), buf, token, w, W_WERR, True, 256) == -1
    assert b.recv(70000) == bytes(10) + ref.translate(pkt).packets[0]
    b.send(b"\x01" + bytes(9) + pkt)  # NEEDS_CSUM: Python's (handle_vnet_packet)
    assert xl.accel.run(a.fileno(), buf, token, w, W_WERR, True, 256) == 10 + len(pkt)
    a.close()
    b.close()


def vnet_frames() -> list[bytes]:
    """Frames as a TUN in offload mode hands them over: no offload, DATA_VALID, partial
    checksums (NEEDS_CSUM) right and wrong, GSO (Python's), around the edge cases."""
    from tests.unit.test_vnet import partial

    out = []
    for pkt in edge_packets():
        out.append(bytes(10) + pkt)
        out.append(b"\x02" + bytes(9) + pkt)
        if (pkt[0] >> 4 == 4 and (pkt[0] & 15) != 5) or pkt[9 if pkt[0] >> 4 == 4 else 6] not in (
            6,
            17,
        ):
            continue
        body, l4, off = partial(pkt)
        for hdr_len in (0, 10, l4 + 8, l4 + 20):
            for cs, co in ((l4, off), (l4, 6 if off == 16 else 16), (l4 + 4, off)):
                h = vnet.VnetHeader(vnet.F_NEEDS_CSUM, 0, hdr_len, 0, cs, co)
                out.append(h.to_wire() + body)
        gso = vnet.VnetHeader(vnet.F_NEEDS_CSUM, vnet.GSO_UDP_L4, l4 + 8, 100, l4, off)
        out.append(gso.to_wire() + body)
    for pkt in gso_packets():  # super-packets over the MTU, as TSO/USO hands them over
        body, l4, off = partial(pkt)
        tcp = pkt[9 if pkt[0] >> 4 == 4 else 6] == 6
        kind = (vnet.GSO_TCPV4 if pkt[0] >> 4 == 4 else vnet.GSO_TCPV6) if tcp else vnet.GSO_UDP_L4
        hl = l4 + (20 if tcp else 8)
        for gtype, size in ((kind, 1000), (kind | vnet.GSO_ECN, 1448), (kind, 0), (kind, 1400)):
            h = vnet.VnetHeader(vnet.F_NEEDS_CSUM, gtype, hl, size, l4, off)
            out.append(h.to_wire() + body)
    zero_sum = bytearray(partial(raw(IP(src=S4, dst=C4) / UDP(sport=1, dport=2) / b"ab"))[0])
    zero_sum[26:28] = b"\xff\xff"  # the partial sum that complements to "no checksum"
    out.append(vnet.VnetHeader(vnet.F_NEEDS_CSUM, 0, 0, 0, 20, 6).to_wire() + bytes(zero_sum))
    rng = random.Random(7915)
    for _ in range(1500):  # and mutated: header fields, then a byte anywhere
        f = bytearray(rng.choice(out))
        f[rng.randrange(2, 10)] = rng.choice((0, 1, 6, 16, 20, 40, 255, rng.randrange(256)))
        f[rng.randrange(len(f))] = rng.randrange(256)
        out.append(bytes(f))
    return out


def gso_packets() -> list[bytes]:
    """TCP and UDP super-packets both ways, DF set and not, up to 64 KB."""
    out = []
    for size in (3000, 4000, 20000, 65000):
        for df in (2, 0):
            out.append(raw(IP(src=S4, dst=C4, flags=df) / TCP(sport=80, dport=9) / bytes(size)))
            out.append(raw(IP(src=S4, dst=C4, flags=df) / UDP(sport=53, dport=9) / bytes(size)))
        out.append(raw(IPv6(src=C6, dst=S6) / TCP(sport=9, dport=80) / bytes(size)))
        out.append(raw(IPv6(src=C6, dst=S6) / UDP(sport=9, dport=443) / bytes(size)))
    return out


def worker_handle(xl: Translator, buf: bytearray, n: int, w: Any) -> list[bytes]:
    """``handle_vnet_packet`` as ``run_vnet`` calls it (an exception is a counted drop)."""
    try:
        return [bytes(f) for f in handle_vnet_packet(xl, buf, n, w)]
    except Exception:
        w[W_EXC] += 1
        return []


@pytest.mark.parametrize("cfg", ["properties", "wkp_dec_reset", "p40"])
def test_run_vnet_against_handle_vnet_packet(cfg: str) -> None:
    """The offload loop: C's ``run(vnet=True)`` and, for what it returns, the worker's
    ``handle_vnet_packet`` give the frames and counters the pure core gives."""
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    xl = Translator(
        TranslatorConfig(**CONFIGS[cfg]),
        stats=Stats(memoryview(bytearray(8 * Stats.SIZE)).cast("Q")),
    )
    py = Translator(TranslatorConfig(**CONFIGS[cfg]))
    py.translate_into = py.translate_python  # type: ignore[method-assign]
    assert xl.accel is not None
    w_c = memoryview(bytearray(8 * len(WORKER_COUNTERS))).cast("Q")
    w_py = [0] * len(WORKER_COUNTERS)
    buf = bytearray(BUFSIZE)
    token = memoryview(buf)[HEADROOM:]
    taken = gso_taken = 0
    xl.accel.set_gso_counters(W_GSO, W_SEGS)
    for frame in vnet_frames():
        b.send(frame)
        n = xl.accel.run(a.fileno(), buf, token, w_c, W_WERR, True, 1)
        if n >= 0:
            got = worker_handle(xl, buf, n, w_c)
        else:
            taken += 1
            gso_taken += frame[1] != 0
            got = [b.recv(70000)]
        ref = bytearray(HEADROOM) + frame + bytes(64)
        want = worker_handle(py, ref, len(frame), w_py)
        assert got == want, frame.hex()
        assert xl.ip_id == py.ip_id
    assert xl.stats.as_dict() == py.stats.as_dict()
    assert list(w_c) == w_py
    assert taken > 50 or cfg != "properties"
    assert gso_taken > 20 or cfg != "properties"  # super-packets went through C
    a.close()
    b.close()


@pytest.mark.parametrize("vnet", [False, True])
def test_worker_with_the_c_loop_stops_on_sigterm(vnet: bool) -> None:
    """``run_plain``/``run_vnet`` through ``_worker_entry`` in a child: a burst (with ICMP
    errors for Python among the packets) is translated, then SIGTERM ends the worker
    cleanly both while idle and with packets still arriving."""
    hdr = bytes(10) if vnet else b""
    err = raw(IP(src=S4, dst=C4) / ICMP(type=3, code=3) / IP(src=C4, dst=S4) / UDP())
    for when in ("idle", "busy"):
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        counters = SharedCounters(1)
        xl = Translator(TranslatorConfig(**CONFIGS["properties"]), stats=counters.stats(0))
        ref = Translator(TranslatorConfig(**CONFIGS["properties"]))
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            code = 0
            try:
                b.close()
                _worker_entry(a.fileno(), vnet, xl, counters.worker(0), counters)
            except SystemExit:
                pass
            except BaseException:
                code = 1
            os._exit(code)
        a.close()
        b.settimeout(5)
        try:
            pkts = [
                err if i % 50 == 7 else raw(IP(src=S4, dst=C4) / UDP(dport=i) / bytes(36))
                for i in range(500)
            ]
            got = []
            for i in range(0, len(pkts), 5):  # a datagram socket queues only a few
                for pkt in pkts[i : i + 5]:
                    b.send(hdr + pkt)
                got += [b.recv(70000) for _ in range(5)]
            assert got == [hdr + ref.translate(p).packets[0] for p in pkts]
            if when == "idle":
                time.sleep(0.2)
            else:
                for pkt in pkts[:5]:
                    b.send(hdr + pkt)
            # As the supervisor stops it (Dataplane.stop): SIGTERM, repeated until it exits
            # (_wait_pid), SIGKILL after the timeout, which is the failure here.
            os.kill(pid, signal.SIGTERM)
            status = _wait_pid(pid, 5)
            pid = 0
            assert status is not None, f"worker did not stop on SIGTERM ({when})"
        finally:
            if pid:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
        total, extra = counters.total()
        assert total.packets[1] >= 490 and extra["worker_errors"] == 0
        b.close()
