"""The CLAT's translator, for its workers and for its in-kernel fast path.

The fast path (``[clat] fastpath``, on by default) puts the PLAT's two programs
(``linux/fastpath.py``, ``linux/fastpath6.py``) on the CLAT's hooks:

* IPv4 TCP and UDP the host sends into the TUN (``clat0``) is translated on the TUN's
  egress (source 192.0.0.1 through its EAM entry to the CLAT address, destination
  through the Pref64) and leaves through the uplink (``bpf_redirect_neigh``, as the
  workers' IPv6 does through the egress TAP);
* IPv6 TCP and UDP for the CLAT address is translated on the uplink's ingress, before
  the redirect filter of ``linux/tc.py``, and enters the TUN as IPv4 for the host.

Everything else (ICMP, fragments, options, errors, Neighbor Discovery) goes the way it
went before: to the workers, or to the kernel. The programs are rebuilt when the Pref64
or the MTU changes; the worker path is the fallback when tc BPF is not available.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
import time
from collections.abc import Callable

from ..linux import fastpath, tc
from ..linux.bpf import CLSACT_EGRESS, CLSACT_INGRESS, BpfError, attach_cls_bpf, detach_cls_bpf
from ..siit.translator import Translator, TranslatorConfig
from ..siit.verdict import Stats
from .dataplane import SharedCounters, apply_link_mtu

log = logging.getLogger("v6mostly.clat")

CLAT_V4 = "192.0.0.1"
CLAT_PEER_V4 = "192.0.0.2"
#: RFC 7600 §4: the IPv4 dummy address, source of errors from IPv6-only hops.
DUMMY_V4 = "192.0.0.8"
#: Per-destination burst of the ICMP errors the CLAT's translator originates. Nearly
#: all of them go to the host itself (192.0.0.1: Time Exceeded for a TTL 1 packet,
#: the CLAT being the host's IPv4 first hop 192.0.0.2; Packet Too Big; unreachable),
#: where the kernel's burst of 6 per second only starves the host's own tools: a
#: traceroute asks 3 times per hop, and a second run (ICMP after UDP, mtr) in the same
#: second lost its first hop. So the per-destination bucket is as large as the global
#: one (1000/s, burst 50), which still bounds errors to any IPv6 peer (RFC 4443
#: §2.4 (f)); refill stays one per second.
ICMP_ERROR_BURST = 50
#: The IPv6 program's preference on the uplink's ingress: before linux/tc's filters.
PREF_UPLINK = tc.PREF_BASE - 1

Factory = Callable[[Stats, int, int, int], Translator]


def translator_factory(
    address: ipaddress.IPv6Address, pref64: ipaddress.IPv6Network, own6: str | None
) -> Factory:
    """The CLAT's translator: 192.0.0.1 is the CLAT address (EAM), the rest the Pref64."""

    def make(stats: Stats, index: int, count: int, generation: int) -> Translator:
        cfg = TranslatorConfig(
            pool6=str(pref64),
            eam=[(f"{address}/128", f"{CLAT_V4}/32")],
            ipv4_address=CLAT_PEER_V4,
            ipv6_address=own6,
            # Errors from IPv6-only hops: from 192.0.0.8 with the hop's IPv6 address
            # in an ICMP extension (RFC 7600, draft-ietf-v6ops-icmpext-xlat-v6only-source).
            icmp_source_dummy=DUMMY_V4,
            icmp_ext_node_id=True,
            hairpinning=False,
            icmp_ratelimit_burst=ICMP_ERROR_BURST,
            # The host is the destination of what comes from IPv6: deliver it even
            # at hop limit 1, as a host does (the CLAT is no router hop that way).
            expire_hop_limit_6to4=False,
        )
        return Translator(cfg, stats, time.monotonic)

    return make


class ClatFast:
    """The fast path on one CLAT's TUN and uplink (``apply`` again after a change)."""

    def __init__(self, tun: str, uplink: str) -> None:
        self.tun, self.uplink = tun, uplink
        self.fast: fastpath.FastPath | None = None
        #: the counter map, kept across rebuilds
        self.counts: int | None = None

    def apply(self, make: Factory, counters: SharedCounters) -> None:
        """(Re)build both programs for the running translator and MTU and put them in
        place of the old ones; on failure the workers do all the work."""
        xl = make(Stats(), 0, 1, 0)
        apply_link_mtu(xl, counters.link_mtu, counters.ipv6_extra)
        old, self.fast = self.fast, None
        try:
            tun_idx = socket.if_nametoindex(self.tun)
            up_idx = socket.if_nametoindex(self.uplink)
            fast = fastpath.build(xl, tun_idx, counters=self.counts, neigh=up_idx, base6=14)
        except OSError as e:
            fast = str(e)
        if not isinstance(fast, str) and fast.prog6 is None:
            fast.close()
            fast = fast.why6
        try:
            if isinstance(fast, str):
                raise BpfError(fast)
            attach_cls_bpf(
                self.tun, fast.prog, CLSACT_EGRESS, fastpath.ETH_P_IP, fastpath.PREF,
                fastpath.PROG_NAME,
            )  # fmt: skip
            assert fast.prog6 is not None
            attach_cls_bpf(
                self.uplink, fast.prog6, CLSACT_INGRESS, fastpath.ETH_P_IPV6, PREF_UPLINK,
                fastpath.PROG6_NAME,
            )  # fmt: skip
        except BpfError as e:
            if not isinstance(fast, str):
                fast.close()
            self._detach()
            log.warning("fast path off (%s): the workers translate every packet", e)
        else:
            self.fast = fast
            if self.counts is None:
                self.counts = os.dup(fast.maps.counters)
            log.info(
                "fast path on: TCP/UDP translated in the kernel (IPv4 on %s's egress, "
                "IPv6 on %s's ingress)",
                self.tun,
                self.uplink,
            )
        if old is not None:
            old.close()

    def counters(self, direction: int | None = None) -> tuple[int, int, int]:
        """Packets, octets and super-packets translated in the kernel since start."""
        if self.counts is None:
            return (0, 0, 0)
        try:
            return fastpath.read_counters(self.counts, direction)
        except BpfError:
            return (0, 0, 0)

    def _detach(self) -> None:
        detach_cls_bpf(self.uplink, CLSACT_INGRESS, fastpath.ETH_P_IPV6, PREF_UPLINK, False)
        detach_cls_bpf(self.tun, CLSACT_EGRESS, fastpath.ETH_P_IP, fastpath.PREF, False)

    def off(self) -> None:
        """Take the filters off (the TUN's go with it anyway) and free the programs; the
        counters stay (for the next ``apply``)."""
        self._detach()
        if self.fast is not None:
            self.fast.close()
            self.fast = None

    def close(self) -> None:
        """``off``, and the counters freed too."""
        self.off()
        if self.counts is not None:
            os.close(self.counts)
            self.counts = None
