"""tc filters that hand the CLAT's IPv6 traffic to its TUN device.

The CLAT's IPv6 address is a real address of the uplink, so the kernel owns it
as a host owns an address: it runs DAD, answers multicast *and unicast*
Neighbor Solicitations with an NA whose source is the address itself
(Solicited and Override set, target link-layer option) and answers ping6.
Everything else sent to the address is translated traffic: a ``clsact``
ingress filter on the uplink redirects it to the TUN (``mirred egress
redirect``; the TUN takes L3 packets), before the IP stack sees it. Neighbor
Advertisements (136) and echo requests (128) pass to the kernel; a *unicast*
Neighbor Solicitation goes to the TUN too, where the CLAT answers it with
Override set and the target link-layer option, which Linux leaves out for
unicast solicitations (:mod:`v6mostly.clat.nd`). Multicast solicitations
(solicited-node address, DAD) are not addressed to the address: the kernel's.

The filters use preferences of their own (``PREFS``); only those are removed at
exit, and a ``clsact`` qdisc only if this module added it.
"""

from __future__ import annotations

import subprocess

from ..errors import V6mostlyError

#: Filter preferences owned by the CLAT (a range nothing else is expected to use).
PASS_TYPES = (136, 128)
PREF_BASE = 49150
PREFS = tuple(range(PREF_BASE, PREF_BASE + len(PASS_TYPES) + 1))


class TcError(V6mostlyError):
    pass


def _tc(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    try:
        r = subprocess.run(["tc", *args], capture_output=True, text=True, timeout=15, check=False)
    except FileNotFoundError:
        raise TcError("tc not found: install the iproute2 package") from None
    if check and r.returncode != 0:
        raise TcError(f"tc {' '.join(args)}: {r.stderr.strip()}")
    return r


def has_clsact(dev: str) -> bool:
    return "clsact" in _tc("qdisc", "show", "dev", dev, check=False).stdout


def redirect_commands(dev: str, address: str, tun: str) -> list[list[str]]:
    """The tc commands (without ``tc``) that install the redirect for ``address``.

    ``u32`` and ``mirred`` are what small kernels have (no flower, no gact): a
    ``u32`` match with a ``classid`` and no action ends classification and lets
    the packet go up the stack; NA and echo requests carry no extension
    header, so the ICMPv6 type sits at offset 40.
    """
    cmds = []
    for pref, icmp_type in zip(PREFS, PASS_TYPES, strict=False):
        cmds.append(
            ["filter", "add", "dev", dev, "ingress", "pref", str(pref), "protocol", "ipv6",
             "u32", "match", "ip6", "dst", f"{address}/128", "match", "ip6", "protocol", "58",
             "0xff", "match", "u8", str(icmp_type), "0xff", "at", "40", "classid", "1:1"]
        )  # fmt: skip
    cmds.append(
        ["filter", "add", "dev", dev, "ingress", "pref", str(PREFS[-1]), "protocol", "ipv6",
         "u32", "match", "ip6", "dst", f"{address}/128",
         "action", "mirred", "egress", "redirect", "dev", tun]
    )  # fmt: skip
    return cmds


def install_redirect(dev: str, address: str, tun: str) -> bool:
    """Install the filters; True when the ``clsact`` qdisc was added here."""
    added = False
    if not has_clsact(dev):
        _tc("qdisc", "add", "dev", dev, "clsact")
        added = True
    remove_redirect(dev, False)
    for cmd in redirect_commands(dev, address, tun):
        _tc(*cmd)
    return added


def remove_redirect(dev: str, remove_qdisc: bool) -> None:
    """Remove our filters (and the ``clsact`` qdisc, if we added it). Never raises."""
    for pref in PREFS:
        _tc("filter", "del", "dev", dev, "ingress", "pref", str(pref), check=False)
    if remove_qdisc:
        _tc("qdisc", "del", "dev", dev, "clsact", check=False)
