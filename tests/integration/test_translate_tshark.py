"""`v6mostly translate` checked by a real dissector: tshark validates every checksum.

Needs tshark (installed by `make test` via apt when missing). No network traffic:
this runs on files only, so it needs no namespace.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from scapy.all import ICMP, IP, TCP, UDP, ICMPv6EchoRequest, IPv6, Raw, wrpcap

from tests.sample_site import C4, C6, S4, S6, TRANSLATE_FLAGS

pytestmark = pytest.mark.integration


def tshark() -> str:
    path = shutil.which("tshark")
    if path is None:
        pytest.fail("tshark is missing: `make test` installs it (apt-get install tshark)")
    return path


def test_translated_capture_checksums_verified_by_tshark(tmp_path: Path) -> None:
    src, dst = tmp_path / "in.pcap", tmp_path / "out.pcap"
    pkts = []
    for i in range(20):
        pkts.append(
            IPv6(src=C6, dst=S6) / TCP(sport=40000 + i, dport=80, flags="S") / Raw(bytes([i]) * i)
        )
        pkts.append(
            IP(src=S4, dst=C4)
            / TCP(sport=80, dport=40000 + i, flags="SA")
            / Raw(bytes([i]) * (i * 7))
        )
        pkts.append(IPv6(src=C6, dst=S6) / UDP(sport=5000 + i, dport=53) / Raw(b"q" * i))
        pkts.append(IP(src=S4, dst=C4) / UDP(sport=53, dport=5000 + i) / Raw(b"r" * i))
        pkts.append(IPv6(src=C6, dst=S6) / ICMPv6EchoRequest(id=i, seq=i, data=b"p" * i))
        pkts.append(IP(src=S4, dst=C4) / ICMP(type=0, id=i, seq=i) / Raw(b"p" * i))
    wrpcap(str(src), [Raw(bytes(p)) for p in pkts], linktype=101)
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "v6mostly.cli",
            "translate",
            *TRANSLATE_FLAGS,
            str(src),
            str(dst),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert r.returncode == 0, r.stderr
    assert "120 packets in, 120 packets out, 0 dropped" in r.stdout
    out = subprocess.run(
        [
            tshark(),
            "-r",
            str(dst),
            "-o",
            "ip.check_checksum:TRUE",
            "-o",
            "tcp.check_checksum:TRUE",
            "-o",
            "udp.check_checksum:TRUE",
            "-T",
            "fields",
            "-e",
            "ip.checksum.status",
            "-e",
            "tcp.checksum.status",
            "-e",
            "udp.checksum.status",
            "-e",
            "icmp.checksum.status",
            "-e",
            "icmpv6.checksum.status",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    assert len(out) == 120
    for line in out:
        statuses = [s for s in line.split("\t") if s]
        # Wireshark checksum status: 0 Bad, 1 Good, 2 Unverified. Every one must be Good.
        assert statuses and all(s == "1" for s in statuses), line


def test_tshark_catches_a_corrupted_checksum(tmp_path: Path) -> None:
    """The check above can fail: a deliberately broken UDP checksum is reported Bad."""
    f = tmp_path / "bad.pcap"
    p = bytearray(
        bytes(IP(src="198.51.100.10", dst="203.0.113.16") / UDP(sport=1, dport=2) / Raw(b"x"))
    )
    p[26] ^= 0xFF
    wrpcap(str(f), [Raw(bytes(p))], linktype=101)
    out = subprocess.run(
        [
            tshark(),
            "-r",
            str(f),
            "-o",
            "udp.check_checksum:TRUE",
            "-T",
            "fields",
            "-e",
            "udp.checksum.status",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert out == "0"  # 0 = Bad
