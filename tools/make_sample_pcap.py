"""Regenerate src/v6mostly/data/sample.pcap, the capture `make demo` replays.

Run with the test extras installed (scapy is a test/tool dependency only):
    .venv/bin/python tools/make_sample_pcap.py
"""

from pathlib import Path

from scapy.all import (
    ICMP,
    IP,
    TCP,
    UDP,
    ICMPv6DestUnreach,
    ICMPv6EchoRequest,
    ICMPv6PacketTooBig,
    IPv6,
    Raw,
    wrpcap,
)
from scapy.layers.dns import DNS, DNSQR

CLIENT = "2001:db8:64::10"  # EAM 2001:db8:64::/120 = 203.0.113.0/24
CLIENT4 = "203.0.113.16"
SERVER = "64:ff9b:1::c633:640a"  # 198.51.100.10 under the RFC 8215 local-use prefix
SERVER4 = "198.51.100.10"

pkts = [
    IPv6(src=CLIENT, dst=SERVER) / TCP(sport=40000, dport=80, flags="S", seq=1000),
    IP(src=SERVER4, dst=CLIENT4) / TCP(sport=80, dport=40000, flags="SA", seq=5000, ack=1001),
    IPv6(src=CLIENT, dst=SERVER)
    / UDP(sport=5353, dport=53)
    / DNS(rd=1, qd=DNSQR(qname="example.org")),
    IPv6(src=CLIENT, dst=SERVER) / ICMPv6EchoRequest(id=7, seq=1, data=b"v6mostly"),
    IP(src=SERVER4, dst=CLIENT4) / ICMP(type=0, id=7, seq=1) / Raw(b"v6mostly"),
    IP(src=SERVER4, dst=CLIENT4)
    / ICMP(type=3, code=3)
    / IP(src=CLIENT4, dst=SERVER4, ttl=63)
    / UDP(sport=5353, dport=9999)
    / Raw(b"probe"),
    IP(src=SERVER4, dst=CLIENT4, flags=0) / UDP(sport=4000, dport=4001) / Raw(bytes(1400)),
    IPv6(src=CLIENT, dst=SERVER, hlim=1) / UDP(sport=33434, dport=33435) / Raw(b"traceroute"),
    IP(src=SERVER4, dst=CLIENT4) / UDP(sport=123, dport=123, chksum=0) / Raw(b"ntp-like"),
    IPv6(src=CLIENT, dst="2001:db8:dead::1") / UDP(sport=1, dport=2) / Raw(b"nowhere"),
    IPv6(src="2001:db8:ffff::1", dst=CLIENT.replace("::10", "::10"))
    / ICMPv6PacketTooBig(mtu=1400)
    / IPv6(src=CLIENT, dst=SERVER, hlim=60)
    / TCP(sport=40000, dport=80, flags="A"),
    IPv6(src=CLIENT, dst=SERVER)
    / ICMPv6DestUnreach(code=4)
    / IPv6(src=SERVER, dst=CLIENT)
    / UDP(sport=53, dport=5353),
]
# The last but one is an error from a router inside the IPv6 network about a packet
# *from* the client, so it is addressed to the client; turn it toward the server side.
pkts[10] = (
    IPv6(src="2001:db8:ffff::1", dst=SERVER)
    / ICMPv6PacketTooBig(mtu=1400)
    / IPv6(src=SERVER, dst=CLIENT, hlim=60)
    / TCP(sport=80, dport=40000, flags="A")
)
out = Path(__file__).resolve().parent.parent / "src" / "v6mostly" / "data" / "sample.pcap"
wrpcap(str(out), [Raw(bytes(p)) for p in pkts], linktype=101)
print(f"wrote {len(pkts)} packets to {out}")
