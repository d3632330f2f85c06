"""A DHCPv4 subnet as the server works with it: pools, options encoded once."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from .message import domain_search, ips, u32


@dataclass
class Subnet:
    name: str
    network: ipaddress.IPv4Network
    pools: list[tuple[int, int]]  # inclusive address ranges as ints
    server_address: ipaddress.IPv4Address  # option 54 and the reply source
    interface: str | None = None  # directly attached link; None: relayed only
    routers: list[str] = field(default_factory=list)
    dns: list[str] = field(default_factory=list)
    domain: str = ""
    search: list[str] = field(default_factory=list)
    lease_time: int = 3600
    v6only: bool = False
    v6only_wait: int = 1800
    v6only_rollout: int = 100
    decline_hold: int = 3600
    #: reservations: MAC bytes or b"cid:"+client-id -> address int
    reservations: dict[bytes, int] = field(default_factory=dict)
    #: relay agents trusted for this subnet (giaddr and datagram source)
    relays: list[ipaddress.IPv4Address] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.reserved = set(self.reservations.values())
        self.relay_set = {int(r) for r in self.relays}
        self.size = sum(b - a + 1 for a, b in self.pools)
        # Option values, encoded once (the reply path only copies them).
        self.opt_lease = (
            u32(self.lease_time),
            u32(self.lease_time // 2),
            u32(self.lease_time * 7 // 8),
        )
        self.opt_mask = self.network.netmask.packed
        self.opt_routers = ips(self.routers) if self.routers else b""
        self.opt_dns = ips(self.dns) if self.dns else b""
        self.opt_domain = self.domain.encode()
        self.opt_search = domain_search(self.search) if self.search else b""
        self.opt_server = self.server_address.packed

    def in_pool(self, a: int) -> bool:
        return any(lo <= a <= hi for lo, hi in self.pools)

    def contains(self, a: int) -> bool:
        return int(self.network.network_address) < a < int(self.network.broadcast_address)
