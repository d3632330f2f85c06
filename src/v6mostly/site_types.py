"""The typed values a site file becomes (:mod:`v6mostly.site_config` reads them)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from .dhcp4.policy import ClientClass


@dataclass
class Dhcp4Subnet:
    name: str
    subnet: ipaddress.IPv4Network
    pools: list[tuple[ipaddress.IPv4Address, ipaddress.IPv4Address]]
    routers: list[str]
    dns: list[str]
    domain: str
    search: list[str]
    lease_time: int
    v6only: bool
    v6only_wait: int
    v6only_rollout: int
    server_address: str | None
    reservations: dict[bytes, ipaddress.IPv4Address]
    interface: str | None
    #: Relay agents (giaddr / source address) trusted to relay for this subnet
    #: (RFC 3046 §2.1, RFC 6607); relayed messages from anyone else are dropped.
    relays: list[ipaddress.IPv4Address] = field(default_factory=list)


@dataclass
class InterfaceConfig:
    name: str
    ra: bool = True
    max_interval: int = 600
    min_interval: float | None = None
    router_lifetime: int = 1800
    preference: str = "medium"
    managed: bool = False
    other: bool = False
    mtu: int = 0
    prefixes: list[ipaddress.IPv6Network] = field(default_factory=list)
    routes: list[ipaddress.IPv6Network] = field(default_factory=list)
    rdnss: list[ipaddress.IPv6Address] = field(default_factory=list)
    dnssl: list[str] = field(default_factory=list)
    pref64_lifetime: int = 0
    #: False: RAs carry no PREF64 (one advertised before is withdrawn, lifetime 0).
    advertise_pref64: bool = True
    dhcp4: Dhcp4Subnet | None = None


@dataclass
class DnsConfig:
    listen: list[str]
    port: int
    allow: list[ipaddress.IPv4Network | ipaddress.IPv6Network]
    upstream: str | None
    dns64: bool
    #: Per client address (unbound's ip-ratelimit): queries per second, burst.
    rate: float
    burst: float
    #: Per client prefix (/64 for IPv6, /24 for IPv4): a higher ceiling.
    prefix_rate: float = 500.0
    prefix_burst: float = 1000.0
    #: UDP answers: 512 bytes without EDNS, else the client's size capped by this
    #: (RFC 6891 §6.2.5); larger answers are truncated with TC set.
    max_udp_size: int = 1232
    #: TCP (unbound's incoming-num-tcp, tcp-idle-timeout): connections in total,
    #: per client address, and seconds an idle connection is kept.
    tcp_max_connections: int = 100
    tcp_max_per_client: int = 10
    tcp_idle_timeout: float = 10.0
    #: CHAOS-class answers (version.bind / id.server); "" = REFUSED. Never forwarded.
    chaos_version: str = ""
    chaos_id: str = ""


@dataclass
class SiteConfig:
    source: str
    pref64: ipaddress.IPv6Network
    interfaces: list[InterfaceConfig]
    relayed: list[Dhcp4Subnet]
    classes: list[ClientClass]
    lease_db: str
    lease_sync: str
    dns: DnsConfig | None
    metrics_listen: str
    dhcp4_limits: Dhcp4Limits = field(default_factory=lambda: Dhcp4Limits())
    #: Count the site's traffic split on the served interfaces (nftables counters;
    #: needs CAP_NET_ADMIN): native IPv6, IPv4 via NAT64, native IPv4.
    traffic_split: bool = True


@dataclass
class Dhcp4Limits:
    """``[dhcp4]`` protections (Kea's model): how long an offered address is held
    for the client's REQUEST, and per-client limits (Kea's ``limits`` hook)."""

    offer_hold_time: float = 10.0
    #: Messages per second per client (chaddr/client-id), with a burst.
    client_rate: float = 10.0
    client_burst: float = 20.0
    #: DECLINEs per client accepted per ``decline_window`` seconds.
    max_declines: int = 3
    decline_window: float = 3600.0
