"""The CLAT's pieces around the core: NA answers, RA user options, tc, nft, config, status."""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import struct
from pathlib import Path

import pytest
from scapy.all import (
    ICMPv6ND_NA,
    ICMPv6ND_NS,
    ICMPv6NDOptDstLLAddr,
    ICMPv6NDOptSrcLLAddr,
    IPv6,
    raw,
)

from tests.unit.nft_check import nft_check
from v6mostly.clat.nd import answer_ns
from v6mostly.config import clat_from_flags, load_clat
from v6mostly.errors import ConfigError, V6mostlyError
from v6mostly.linux import bpf, nft, tc
from v6mostly.linux.ndisc import RTM_NEWNDUSEROPT, parse_nduseropt
from v6mostly.services import clat_text as clat
from v6mostly.services.clat_egress import egress_name
from v6mostly.services.clat_loops import ETH_IPV6, _tap_parts
from v6mostly.wire import vnet

OWN = "2001:db8:1::c1a7"
PEER = "2001:db8:1::1"
MAC = "02:00:00:00:c1:a7"


def ns(**kw: object) -> bytes:
    ip = {"src": PEER, "dst": OWN, "hlim": 255}
    ip.update({k: v for k, v in kw.items() if k in ("src", "dst", "hlim")})
    tgt = kw.get("tgt", OWN)
    return raw(IPv6(**ip) / ICMPv6ND_NS(tgt=tgt) / ICMPv6NDOptSrcLLAddr(lladdr="02:00:00:00:00:01"))


def test_unicast_ns_gets_na_as_the_owner() -> None:
    """RFC 4861 §7.2.4: S and O set, target link-layer option, source = the target."""
    na = answer_ns(ns(), ipaddress.IPv6Address(OWN).packed, bytes.fromhex(MAC.replace(":", "")))
    want = raw(
        IPv6(src=OWN, dst=PEER, hlim=255)
        / ICMPv6ND_NA(tgt=OWN, R=0, S=1, O=1)
        / ICMPv6NDOptDstLLAddr(lladdr=MAC)
    )
    assert na == want


@pytest.mark.parametrize(
    "bad",
    [
        {"hlim": 64},  # RFC 4861 §7.1.1: hop limit 255 only
        {"tgt": "2001:db8:1::99"},  # not ours
        {"dst": "ff02::1:ffc1:a7"},  # multicast: the kernel answers those
        {"src": "::"},  # DAD
    ],
)
def test_invalid_or_foreign_ns_is_not_answered(bad: dict[str, object]) -> None:
    assert answer_ns(ns(**bad), ipaddress.IPv6Address(OWN).packed, bytes(6)) is None


def test_ns_with_a_bad_checksum_is_not_answered() -> None:
    pkt = bytearray(ns())
    pkt[42] ^= 0xFF
    assert answer_ns(bytes(pkt), ipaddress.IPv6Address(OWN).packed, bytes(6)) is None


def _nduseropt(options: bytes, ifindex: int, router: str) -> bytes:
    """An RTM_NEWNDUSEROPT message as the kernel builds it (include/net/ndisc.h)."""
    body = struct.pack("=BBHiBBHI", socket.AF_INET6, 0, len(options), ifindex, 134, 0, 0, 0)
    body += options + bytes((-len(options)) % 4)
    body += struct.pack("=HH", 20, 1) + ipaddress.IPv6Address(router).packed
    return struct.pack("=IHHII", 16 + len(body), RTM_NEWNDUSEROPT, 0, 0, 0) + body


def test_pref64_from_kernel_user_options() -> None:
    # RFC 8781 §4: scaled lifetime 600/8 = 75, PLC 0 (/96), 2001:db8:64::/96.
    word = (75 << 3) | 0
    opt = bytes((38, 2)) + word.to_bytes(2, "big") + bytes.fromhex("20010db8006400000000" + "0000")
    msg = _nduseropt(opt, 3, "fe80::1") + _nduseropt(opt, 7, "fe80::2")
    got = parse_nduseropt(msg)
    assert [(o.ifindex, o.router) for o in got] == [(3, "fe80::1"), (7, "fe80::2")]
    p = got[0].ra.pref64[0]
    assert (str(p.prefix), p.lifetime) == ("2001:db8:64::/96", 600)
    assert parse_nduseropt(msg[:10]) == []  # truncated: nothing, no exception


def test_tc_redirect_passes_na_and_echo_to_the_kernel() -> None:
    cmds = tc.redirect_commands("eth0", OWN, "clat0")
    assert [c[c.index("u8") + 1] for c in cmds[:-1]] == ["136", "128"]
    assert cmds[-1][-5:] == ["mirred", "egress", "redirect", "dev", "clat0"]
    assert all(f"{OWN}/128" in c for c in cmds)


def test_clat_table_drops_leaking_sources_and_nft_accepts_it() -> None:
    text = nft.render_clat_table("clat0")
    assert 'ip saddr 192.0.0.0/29 oifname != "clat0" counter name leaked_clat_source drop' in text
    nft_check(text)


def test_config_file_and_flags(tmp_path: Path) -> None:
    f = tmp_path / "clat.toml"
    f.write_text('[clat]\ninterface = "wlan0"\npref64 = "64:ff9b::/96"\n')
    s = load_clat(str(f))
    assert (s.interface, s.tun, str(s.pref64)) == ("wlan0", "clat0", "64:ff9b::/96")
    f.write_text('[clat]\ninterface = "wlan0"\nprefix64 = "64:ff9b::/96"\n')
    with pytest.raises(
        ConfigError,
        match=r"clat.toml: \[clat\] prefix64 = \"64:ff9b::/96\": unknown key \(did you mean \"pref64\"\?\)",
    ):
        load_clat(str(f))
    f.write_text('[clat]\ninterface = "wlan0"\npref64 = "64:ff9b::/64"\n')
    with pytest.raises(ConfigError, match=r"\[clat\] pref64 = \"64:ff9b::/64\": .*RFC 6052"):
        load_clat(str(f))
    with pytest.raises(ConfigError, match=r"interface = \"a/b\": expected an interface name"):
        clat_from_flags("a/b", "clat0", None, None, None, None)
    with pytest.raises(ConfigError, match=r"dns = \"resolver\": expected the IPv4 or IPv6"):
        clat_from_flags("eth0", "clat0", None, None, "resolver", None)


def test_dry_run_names_what_it_would_do() -> None:
    s = clat_from_flags("eth0", "clat0", "64:ff9b::/96", None, None, None)
    text = clat.dry_run_text(s)
    assert "64:ff9b::/96 (pinned)" in text
    assert "192.0.0.1 peer 192.0.0.2" in text
    assert "tc filter add dev eth0 ingress" in text and "table inet v6mostly_clat0" in text


def test_status_reads_the_state_file(tmp_path: Path) -> None:
    state = {
        "interface": "eth0",
        "tun": "clat0",
        "pid": os.getpid(),
        "active": False,
        "reason": "native IPv4: default route via eth0",
        "pref64": "64:ff9b::/96",
        "pref64_source": "RA from fe80::1",
        "pref64_lifetime_left": 1200.4,
        "clat_ipv6": None,
        "ipv4": None,
        "ipv4_peer": None,
        "mtu": None,
        "counters": {"packets_4to6_udp": 3},
    }
    (tmp_path / "clat-eth0.json").write_text(json.dumps(state))
    text = clat.status_text(str(tmp_path), "eth0")
    assert "eth0: idle (native IPv4: default route via eth0)" in text
    assert "64:ff9b::/96 from RA from fe80::1, 1200 s left" in text
    assert "packets_4to6_udp" in text
    with pytest.raises(V6mostlyError, match="no CLAT running on wlan0"):
        clat.status_text(str(tmp_path), "wlan0")


def test_redirect_neigh_program_bytes() -> None:
    """``return bpf_redirect_neigh(7, NULL, 0, 0);`` as the kernel's eBPF encoding:
    r1..r4 = 7, 0, 0, 0 (BPF_ALU64|BPF_MOV|BPF_K), call helper 152, exit."""
    prog = bpf.redirect_neigh_program(7)
    assert prog.hex() == (
        "b701000007000000"
        "b702000000000000"
        "b703000000000000"
        "b704000000000000"
        "8500000098000000"
        "9500000000000000"
    )
    with pytest.raises(V6mostlyError, match="ifindex 0: out of range"):
        bpf.redirect_neigh_program(0)


def test_tap_frames_count_the_ethernet_header() -> None:
    """On a TAP, csum_start and hdr_len count from the Ethernet header (virtio-net)."""
    ip6 = bytes([0x60]) + bytes(39) + bytes(20)
    plain = _tap_parts(bytes(10) + ip6)
    assert plain[0] == bytes(10) and plain[1] == ETH_IPV6 and bytes(plain[2]) == ip6
    hdr = vnet.HDR.pack(vnet.F_NEEDS_CSUM, vnet.GSO_TCPV6, 40 + 32, 1428, 40, 16)
    parts = _tap_parts(hdr + ip6)
    assert vnet.HDR.unpack(parts[0]) == (vnet.F_NEEDS_CSUM, vnet.GSO_TCPV6, 86, 1428, 54, 16)
    assert ETH_IPV6[12:] == b"\x86\xdd" and not ETH_IPV6[0] & 1  # unicast destination


def test_clat_queues_and_offload_keys(tmp_path: Path) -> None:
    f = tmp_path / "clat.toml"
    f.write_text('[clat]\ninterface = "wlan0"\nqueues = 2\noffload = false\n')
    s = load_clat(str(f))
    assert (s.queues, s.worker_count, s.offload) == (2, 2, False)
    assert "no offload: IPv6 out through a raw socket" in clat.dry_run_text(s)
    f.write_text('[clat]\ninterface = "wlan0"\noffload = "yes"\n')
    with pytest.raises(ConfigError, match=r"\[clat\] offload = \"yes\": expected"):
        load_clat(str(f))
    f.write_text('[clat]\ninterface = "wlan0"\nqueues = 100\n')
    with pytest.raises(ConfigError, match=r"queues = 100: expected an integer from 0 to 64"):
        load_clat(str(f))
    assert egress_name("clat0") == "clat0out" and len(egress_name("a" * 15)) == 15
