"""The command line and the pcap codec."""

from __future__ import annotations

import io
import struct
from pathlib import Path

import pytest
from scapy.all import IP, UDP, Ether, IPv6, Raw, raw, rdpcap, wrpcap

from tests.sample_site import TRANSLATE_FLAGS
from v6mostly.cli import main
from v6mostly.errors import PcapError
from v6mostly.wire.pcap import PcapWriter, read_pcap


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def test_pref64_check_ok(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = run(capsys, "pref64", "check", "64:ff9b::/96", "--ipv4", "8.8.8.8")
    assert rc == 0
    assert "valid" in out and "checksum neutral: yes" in out and "64:ff9b::808:808" in out


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["pref64", "check", "64:ff9b::/96", "--ipv4", "10.0.0.1"], "RFC 6052 §3.1"),
        (["pref64", "check", "2001:db8::/33"], "RFC 6052 §2.2"),
        (["pref64", "check", "bogus"], "not an IPv6 prefix"),
        (["pref64", "check", "64:ff9b::/96", "--ipv4", "nope"], "not an IPv4"),
        (["pref64", "neutral", "zzz"], "not an IPv6 prefix"),
    ],
)
def test_pref64_errors_one_line_exit_2(
    capsys: pytest.CaptureFixture[str], argv: list[str], needle: str
) -> None:
    rc, _, err = run(capsys, *argv)
    assert rc == 2
    assert needle in err and err.count("\n") == 1 and "Traceback" not in err


def test_usage_error_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(["pref64", "frobnicate"])
    assert e.value.code == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_pref64_neutral(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = run(capsys, "pref64", "neutral", "2001:db8:64::/96")
    assert rc == 0 and "2001:db8:64:" in out
    rc, out, _ = run(capsys, "pref64", "neutral", "64:ff9b::/96")
    assert rc == 0 and "already checksum neutral" in out


def test_translate_pcap(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "in.pcap"
    dst = tmp_path / "out.pcap"
    wrpcap(
        str(src),
        [
            Ether()
            / IP(src="198.51.100.10", dst="203.0.113.16")
            / UDP(sport=1, dport=2)
            / Raw(b"a"),
            Ether()
            / IPv6(src="2001:db8:64::10", dst="2001:db8:46::c633:640a")
            / UDP(sport=3, dport=4),
            Ether() / IPv6(src="2001:db8:64::10", dst="2001:db8:dead::1") / UDP(sport=3, dport=4),
        ],
    )
    rc, out, _ = run(
        capsys,
        "translate",
        *TRANSLATE_FLAGS,
        str(src),
        str(dst),
    )
    assert rc == 0
    assert (
        "3 packets in, 2 packets out, 1 dropped" in out and "untranslatable_destination: 1" in out
    )
    pk = rdpcap(str(dst))
    assert pk[0][IPv6].dst == "2001:db8:64::10" and pk[1][IP].dst == "198.51.100.10"


def test_translate_bad_args(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, _, err = run(
        capsys, "translate", "--pool6", "2001:db8::/33", str(tmp_path / "x"), str(tmp_path / "y")
    )
    assert rc == 2 and "RFC 6052" in err
    rc, _, err = run(
        capsys,
        "translate",
        "--pool6",
        "64:ff9b::/96",
        str(tmp_path / "missing.pcap"),
        str(tmp_path / "y"),
    )
    assert rc == 2 and "missing.pcap" in err
    rc, _, err = run(capsys, "translate", "--pool6", "64:ff9b::/96", "--eam", "nonsense", "a", "b")
    assert rc == 2 and "IPV6PREFIX=IPV4PREFIX" in err


def test_demo_runs(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = run(capsys, "demo")
    assert rc == 0
    assert "12 packets in" in out and "BAD" not in out
    assert "drop ttl_expired (answered with an ICMP error)" in out


def test_pcap_round_trip_and_errors() -> None:
    f = io.BytesIO()
    w = PcapWriter(f)
    pkt = raw(IP(src="192.0.2.1", dst="192.0.2.2") / UDP())
    w.write(pkt, 1_500_000_000)
    recs = list(read_pcap(io.BytesIO(f.getvalue())))
    assert len(recs) == 1 and recs[0].packet == pkt and recs[0].ts_ns == 1_500_000_000
    with pytest.raises(PcapError, match="pcapng"):
        list(read_pcap(io.BytesIO(b"\x0a\x0d\x0d\x0a" + bytes(40)), "x.pcapng"))
    with pytest.raises(PcapError, match="not a pcap"):
        list(read_pcap(io.BytesIO(bytes(24))))
    bad = f.getvalue()[:-3]
    with pytest.raises(PcapError, match="truncated"):
        list(read_pcap(io.BytesIO(bad)))


def test_pcap_vlan_ethernet() -> None:
    f = io.BytesIO()
    f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
    ip = raw(IP(src="192.0.2.1", dst="192.0.2.2") / UDP())
    frame = bytes(12) + b"\x81\x00\x00\x05\x08\x00" + ip
    f.write(struct.pack("<IIII", 0, 0, len(frame), len(frame)) + frame)
    assert next(iter(read_pcap(io.BytesIO(f.getvalue())))).packet == ip
