"""Router Solicitations the router must discard (RFC 4861 §6.1.1), sent with scapy
from the client namespace of the test_router site: none is counted as a
solicitation (so none brings an RA forward), each is counted by reason and
logged, and a valid one still is answered."""

from __future__ import annotations

import sys

import pytest

from tests.integration.lab_helpers import wait_for
from tests.integration.test_router import Site
from tests.integration.test_router import site as site

pytestmark = pytest.mark.integration


SEND = """
import sys
from scapy.all import Ether, IPv6, sendp, get_if_hwaddr
from scapy.layers.inet6 import ICMPv6ND_RS, ICMPv6NDOptSrcLLAddr
me = get_if_hwaddr("eth0")
ll = sys.argv[2]
kind = sys.argv[1]
dst = dict(dst="33:33:00:00:00:02", src=me)
if kind == "hop_limit":
    p = Ether(**dst) / IPv6(src=ll, dst="ff02::2", hlim=64) / ICMPv6ND_RS()
elif kind == "slla_from_unspecified":
    p = (Ether(**dst) / IPv6(src="::", dst="ff02::2", hlim=255) / ICMPv6ND_RS()
         / ICMPv6NDOptSrcLLAddr(lladdr=me))
elif kind == "code":
    p = Ether(**dst) / IPv6(src=ll, dst="ff02::2", hlim=255) / ICMPv6ND_RS(code=1)
elif kind == "options":
    p = Ether(**dst) / IPv6(src=ll, dst="ff02::2", hlim=255) / ICMPv6ND_RS() / bytes([1, 0]) / bytes(6)
else:
    p = (Ether(**dst) / IPv6(src=ll, dst="ff02::2", hlim=255) / ICMPv6ND_RS()
         / ICMPv6NDOptSrcLLAddr(lladdr=me))
sendp(p, iface="eth0", count=int(sys.argv[3]), inter=0.01, verbose=0)
"""


def _lladdr(s: Site) -> str:
    out = s.run(s.cl, "ip", "-6", "-o", "addr", "show", "dev", "eth0", "scope", "link")
    return out.stdout.split("inet6 ")[1].split("/")[0]


def _send(s: Site, kind: str, ll: str, count: int) -> None:
    s.run(s.cl, sys.executable, "-c", SEND, kind, ll, str(count), timeout=60)


def test_invalid_router_solicitations_are_discarded_and_counted(site: Site) -> None:
    assert wait_for(lambda: "v6mostly_ra_solicits" in str(site.metrics()), 10)
    ll = _lladdr(site)
    before = site.metrics().get('v6mostly_ra_solicits_total{interface="lan0"}', 0.0)
    for kind in ("hop_limit", "slla_from_unspecified", "code", "options"):
        _send(site, kind, ll, 5)
    assert wait_for(lambda: "invalid Router Solicitation" in site.log(), 5), site.log()
    m = site.metrics()
    assert m.get('v6mostly_ra_solicits_total{interface="lan0"}', 0.0) == before, m
    for kind in ("hop_limit", "slla_from_unspecified", "code", "options"):
        key = f'v6mostly_ra_solicits_invalid_total{{interface="lan0",reason="{kind}"}}'
        assert m.get(key) == 5.0, (key, {k: v for k, v in m.items() if "ra_" in k})
    assert "(hop_limit, RFC 4861 §6.1.1)" in site.log()
    # The log is rate limited: 20 invalid solicitations, at most 3 lines (1st, 10th, ...).
    assert site.log().count("invalid Router Solicitation") <= 3
    # A valid one (hop limit 255, SLLA from a link-local source) is still taken.
    _send(site, "valid", ll, 1)
    assert wait_for(
        lambda: (
            site.metrics().get('v6mostly_ra_solicits_total{interface="lan0"}', 0.0) == before + 1
        ),
        5,
    ), site.metrics()
