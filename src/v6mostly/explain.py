"""One line per counter: what it counts and what to do about it (``ctl stats --explain``).

Like ``jool stats display --explain``. Every counter the translator, its workers,
the PLAT's nftables table or the CLAT exports has an entry (a unit test checks
that a new counter cannot appear without one). Counters of packets translated
are work, not trouble: their advice is empty.
"""

from __future__ import annotations

#: name -> (what it counts, what to do when it grows). Prefix matches: see ``explain``.
EXPLAIN: dict[str, tuple[str, str]] = {
    "packets_": ("packets translated, by direction and protocol", ""),
    "octets_": ("bytes of translated packets (as written), by direction and protocol", ""),
    "drop_malformed": (
        "packets whose headers contradict themselves (lengths, IHL, options)",
        "a few are background noise; many from one source point at a broken or hostile sender",
    ),
    "drop_truncated": (
        "packets shorter than their headers say",
        "check the MTU and offloads of the links into the TUN",
    ),
    "drop_bad_ipv4_header_checksum": (
        "IPv4 packets with a wrong header checksum (RFC 7915 §4: never translated)",
        "a faulty link or NIC on the IPv4 side; compare with the interfaces' error counters",
    ),
    "drop_not_ip": (
        "frames that are neither IPv4 nor IPv6",
        "something else is routed into the TUN",
    ),
    "drop_untranslatable_source": (
        "sources with no mapping: outside pool6 and every EAM entry",
        "on a PLAT: traffic from outside [napt66] inside, or an EAM missing for an outer address",
    ),
    "drop_untranslatable_destination": (
        "destinations with no mapping (not in pool6, no EAM entry)",
        "a route sends traffic into the TUN that the translator has no mapping for",
    ),
    "drop_ttl_expired": (
        "packets that arrived with TTL/Hop Limit 1 (answered with Time Exceeded)",
        "normal for traceroute; many mean a routing loop through the translator",
    ),
    "drop_untranslatable_icmp_type": (
        "ICMP types RFC 7915 does not translate (MLD, ND, router discovery, ...)",
        "usually harmless; on a CLAT also every unicast NS it answered itself",
    ),
    "drop_icmp_error_in_icmp_error": (
        "ICMP errors about ICMP errors (RFC 7915: not translated)",
        "background noise",
    ),
    "drop_bad_icmp_checksum": ("ICMP messages with a wrong checksum", "a faulty sender or link"),
    "drop_fragmented_icmp": (
        "fragmented ICMP messages (RFC 7915: not translated; the checksum needs the whole packet)",
        "large pings through a PLAT that fragments to 1280: raise its lowest_ipv6_mtu",
    ),
    "drop_udp_zero_checksum_fragment": (
        "fragments of IPv4 UDP without a checksum (cannot be given one for IPv6)",
        "a sender relying on UDP checksum 0 with fragmentation; rare",
    ),
    "drop_udp_zero_checksum": (
        "IPv4 UDP with checksum 0 when computing one is turned off",
        "turn the checksum computation on (the default)",
    ),
    "drop_packet_too_big": (
        "packets larger than the next hop's MTU (answered with Packet Too Big / Frag Needed)",
        "PMTUD at work; if it never stops, ICMP is filtered on the path back to the sender",
    ),
    "drop_source_route": (
        "IPv4 packets with an unexpired source route option (RFC 7915 §4.1)",
        "hostile or broken senders",
    ),
    "drop_segments_left": (
        "IPv6 packets with a routing header not yet done (answered with Parameter Problem)",
        "hostile or broken senders",
    ),
    "drop_extension_after_fragment": (
        "IPv6 fragments with extension headers after the Fragment Header",
        "hostile or broken senders",
    ),
    "drop_jumbogram": ("IPv6 jumbograms (no IPv4 form)", "none"),
    "drop_multicast": (
        "multicast and broadcast packets (never translated)",
        "routing protocols or mDNS reaching the TUN: harmless",
    ),
    "drop_no_translator_address": (
        "ICMP errors the translator should have sent but has no own address for",
        "set ipv4_address / ipv6_address in [translator]",
    ),
    "drop_hop_by_hop_not_first": (
        "IPv6 packets with a Hop-by-Hop header not first (RFC 8200)",
        "hostile or broken senders",
    ),
    "drop_not_forwardable_source": (
        "sources that are never translated (0/8, 127/8, 169.254/16, 240/4, ::1, fe80::/10, ...)",
        "spoofed or misrouted traffic",
    ),
    "drop_not_forwardable_destination": (
        "destinations that are never translated (loopback, link-local, reserved, multicast)",
        "clients trying such addresses through the Pref64: harmless",
    ),
    "drop_to_translator": (
        "packets to the translator's own addresses that it does not answer",
        "normal in small numbers",
    ),
    "drop_inner_untranslatable_source": (
        "ICMP errors whose quoted packet has an unmapped source",
        "errors about traffic that was never translated: harmless",
    ),
    "drop_inner_untranslatable_destination": (
        "ICMP errors whose quoted packet has an unmapped destination",
        "errors about traffic that was never translated: harmless",
    ),
    "drop_inner_not_forwardable": (
        "ICMP errors quoting a packet with a never-translated address",
        "spoofed errors",
    ),
    "drop_inner_malformed": ("ICMP errors quoting a malformed packet", "broken or hostile senders"),
    "icmpv4_errors_generated": ("ICMPv4 errors the translator sent itself", ""),
    "icmpv6_errors_generated": ("ICMPv6 errors the translator sent itself", ""),
    "fragments_out": (
        "fragments written (DF=0 IPv4 over the IPv6 MTU, RFC 7915 §4)",
        "many: senders without PMTUD; lowest_ipv6_mtu sets the size",
    ),
    "hairpinned": ("packets between two translated hosts turned back inside (RFC 7757 §4.3)", ""),
    "icmp_errors_suppressed": (
        "ICMP errors not sent because of the rate limit (per destination and global)",
        "a flood of TTL-1 or oversized packets; raise icmp_msgs_per_sec only if legitimate",
    ),
    "local_replies": (
        "packets to the translator's own addresses it answered (echo, unreachable)",
        "",
    ),
    "gso_superpackets": ("GSO super-packets read from the TUN (offload mode)", ""),
    "fastpath_packets": (
        "TCP/UDP packets translated in the kernel ([tun] fastpath), not by a worker",
        "",
    ),
    "fastpath_octets": ("octets of those packets, as translated", ""),
    "fastpath_superpackets": ('GSO super-packets among them (rps = "auto" follows them)', ""),
    "gso_segments": ("segments those super-packets stood for", ""),
    "gso_software_segmented": (
        "super-packets cut into packets in software (DF=0, ICMP errors, too large)",
        "many: senders without DF on bulk traffic",
    ),
    "checksums_finished": (
        "partial checksums completed in software",
        "expected on links without checksum offload",
    ),
    "tun_write_errors": (
        "writes into the TUN the kernel refused",
        "look at the kernel log; the TUN's queue may be full (txqueuelen)",
    ),
    "tun_read_errors": ("failed reads from the TUN", "the device went away or was reconfigured"),
    "worker_errors": (
        "unexpected exceptions while handling a packet (the packet was dropped)",
        "a bug: report it with the log line and, if possible, the packet",
    ),
    "vnet_errors": (
        "packets whose virtio-net header contradicts them (dropped)",
        "a kernel/TUN offload problem: try offload = false and report it",
    ),
    "neighbor_advertisements": (
        "CLAT: unicast Neighbor Solicitations for its address answered as the owner",
        "",
    ),
    "poll_hits": (
        "packets the adaptive poll found after a packet (no wake-up for them)",
        "",
    ),
    "poll_spin_us": (
        "microseconds the workers spent polling (bounded by [tun] poll_cpu)",
        "too much CPU at light load: lower poll_cpu or poll_us (0 = off)",
    ),
    "denied_to_plat": (
        "PLAT filter: packets to the Pref64 from sources outside [napt66] inside",
        "add the client prefix to inside, or find who sends from elsewhere",
    ),
    "denied_from_plat": (
        "PLAT filter: translated packets for destinations outside inside",
        "unsolicited IPv4 to the outer addresses reaching no binding: scans, harmless",
    ),
    "denied_ipv4_not_outer": (
        "PLAT filter: IPv4 into the TUN not addressed to an outer address",
        "a route sends other IPv4 into the TUN",
    ),
    "denied_to_host": (
        "PLAT filter: translated packets to this host's own addresses",
        "list the address in reachable_host_addresses if clients should reach it",
    ),
    "leaked_clat_source": (
        "CLAT: packets from 192.0.0.0/29 about to leave another interface (dropped)",
        "something routes the CLAT's IPv4 around it: check the host's routes",
    ),
}


def explain(name: str) -> tuple[str, str] | None:
    """(meaning, advice) of a counter; prefixes (``packets_``) cover families."""
    hit = EXPLAIN.get(name)
    if hit is not None:
        return hit
    for key, val in EXPLAIN.items():
        if key.endswith("_") and name.startswith(key):
            return val
    return None
