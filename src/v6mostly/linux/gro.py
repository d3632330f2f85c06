"""UDP GRO for forwarded traffic on the translator's interfaces (``[tun] udp_gro_forwarding``).

Why: a flood of small UDP datagrams of one flow (``iperf3 -u``, a game, DNS from one
resolver, QUIC without ``UDP_SEGMENT``) costs the box one forwarding, one pass through
nftables and conntrack and one translation per datagram. The kernel's GRO already
merges the datagrams of a flow that one NAPI poll finds into one super-packet
(``SKB_GSO_UDP_L4``, as a ``UDP_SEGMENT`` sender makes), but only for packets it
delivers locally; for forwarded ones only when the receiving interface has
``rx-udp-gro-forwarding`` (NETIF_F_GRO_UDP_FWD, off by default). With it, the
super-packet goes through the routes, NAPT66 and the translator once: the fast
path (``linux/fastpath.py``) and the workers both translate GSO UDP as such, and
the kernel cuts it into the original datagrams where it leaves (or the receiver's
``udp_rcv`` does). A datagram alone in its poll goes as it came: nothing waits
for more.

What: at start the service turns the feature on for every interface of its
namespace that has it and where it is off (not ``lo``, not the TUN), and turns it
back off at stop on those it changed. Through pyroute2's ethtool (the same ioctl
as ``ethtool -K IFNAME rx-udp-gro-forwarding on``).

Measured in the lab (2 CPUs, the PLAT's uplink veth in NAPI mode like a NIC: GRO on,
threaded NAPI), 64-byte ``iperf3 -u -l 64 -b 0``, 3 rounds: 100,224 delivered pkt/s
downstream against TAYGA's 51,300 (docs/profile-small-packets.md §7).
"""

from __future__ import annotations

import contextlib
import logging

log = logging.getLogger("v6mostly.gro")

FEATURE = "rx-udp-gro-forwarding"


def candidates(exclude: str) -> list[str]:
    """The interfaces of this namespace that may get the feature: all but ``lo`` and
    ``exclude`` (the TUN)."""
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        names = [link.get_attr("IFLA_IFNAME") for link in ipr.get_links()]
    return sorted(n for n in names if n and n not in ("lo", exclude))


def enable(names: list[str]) -> tuple[list[str], list[str]]:
    """Turn the feature on where it is off and can be changed. Returns the interfaces
    changed (to give to :func:`disable` at stop) and one note per interface left as it
    was because it failed (no ethtool support, a fixed feature, an error)."""
    from pyroute2.ethtool import Ethtool

    changed: list[str] = []
    notes: list[str] = []
    try:
        eth = Ethtool()
    except Exception as e:
        return [], [f"ethtool unavailable: {e}"]
    try:
        for name in names:
            try:
                feats = eth.get_features(name)
                f = feats.features.get(FEATURE)
                if f is None or not f.available:
                    continue  # not a feature of this interface (or fixed)
                if f.enable:
                    continue  # already on: the operator's, left on at stop
                f.enable = True
                eth.set_features(name, feats)
                if eth.get_features(name).features[FEATURE].enable:
                    changed.append(name)
                else:
                    notes.append(f"{name}: {FEATURE} did not turn on")
            except Exception as e:
                notes.append(f"{name}: {e}")
    finally:
        eth.close()
    return changed, notes


def disable(names: list[str]) -> None:
    """Turn the feature back off on ``names`` (those :func:`enable` changed). Never raises:
    an interface that has gone meanwhile is skipped."""
    if not names:
        return
    from pyroute2.ethtool import Ethtool

    with contextlib.suppress(Exception):
        eth = Ethtool()
        try:
            for name in names:
                try:
                    feats = eth.get_features(name)
                    feats.features[FEATURE].enable = False
                    eth.set_features(name, feats)
                except Exception as e:
                    log.debug("%s: %s not restored: %s", name, FEATURE, e)
        finally:
            eth.close()
