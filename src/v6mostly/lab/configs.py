"""The lab's configuration files, as text: the router's site file and the PLAT's file."""

from __future__ import annotations

from .topology import (
    CLIENT_NET,
    LAN4_ROUTER,
    LAN_BRIDGE,
    METRICS,
    OUTER4,
    OUTER6,
    PLAT_V6,
    PREF64,
    ROUTER_METRICS,
    SERVER4,
    XLAT4,
    XLAT6,
    LabConfig,
)


def site_toml(lab_id: str, site: bool, lease_db: str) -> str:
    """The router's site file: what the network tells its clients."""
    lan = LAN_BRIDGE if site else "c6"
    listen = f'"{PLAT_V6}", "{LAN4_ROUTER}"' if site else f'"{PLAT_V6}"'
    return f"""# v6mostly lab {lab_id}: the router (what the network tells its clients)
[site]
pref64 = "{PREF64}"

[[interface]]
name = "{lan}"
prefixes = ["{CLIENT_NET}"]
rdnss = ["{PLAT_V6}"]
dnssl = ["example.net"]
max_interval = 10

[interface.dhcp4]
subnet = "192.0.2.0/24"
pool = ["192.0.2.100-192.0.2.199"]
routers = ["{LAN4_ROUTER}"]
dns = ["{LAN4_ROUTER}"]
v6only = true
v6only_wait = 300

[dhcp4]
lease_db = "{lease_db}"

[dns]
listen = [{listen}]
allow = ["{CLIENT_NET}", "192.0.2.0/24"]
upstream = "{SERVER4}"
dns64 = true

[metrics]
listen = "{ROUTER_METRICS}"
"""


def plat_toml(lab_id: str, cfg: LabConfig, site: str | None = None) -> str:
    """The PLAT's file; with ``site`` the Pref64 comes from the site file (written once)."""
    head = f'site = "{site}"\n' if site else ""
    pool6 = "" if site else f'pool6 = "{PREF64}"\n'
    return f"""# v6mostly lab {lab_id}: the PLAT
{head}[tun]
name = "nat64"
queues = {cfg.queues}
offload = {str(cfg.offload).lower()}
mtu = 1500
txqueuelen = 10000
rps = {'"auto"' if cfg.rps == "auto" else str(bool(cfg.rps)).lower()}
poll_us = {cfg.poll_us}
fastpath = {str(cfg.fastpath).lower()}
udp_gro_forwarding = {str(cfg.udp_gro_forwarding).lower()}

[translator]
{pool6}ipv4_address = "{XLAT4}"
ipv6_address = "{XLAT6}"
eam = [{{ ipv6 = "{OUTER6}/128", ipv4 = "{OUTER4}/32" }}]

[napt66]
inside = ["{CLIENT_NET}"]
outer = [{{ ipv6 = "{OUTER6}", ipv4 = "{OUTER4}" }}]
udp_oneshot_ports = [53, 123]

[metrics]
listen = "{METRICS if cfg.metrics else ""}"
"""
