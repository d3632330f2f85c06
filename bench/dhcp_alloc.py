"""DHCPv4 allocation time: a DISCOVER against an empty /16 pool and a full one (issue 10).

Run: ``python bench/dhcp_alloc.py [--repeat N]`` (no root, no network: the sans-I/O
core only, on a virtual clock, in-memory lease table).

Cases, each the time ``Dhcp4Server.handle`` takes for one DISCOVER of a new client
(parse, decide, build the reply), median over ``--repeat`` messages:

* ``empty``: a /16 pool (65 534 addresses) with no lease: an address is offered;
* ``one free``: all leased but one (the last address of the pool): it is offered
  (each DISCOVER after the previous offer's hold time, so it comes back each time);
* ``full``: all 65 534 leased: nothing to offer (the DISCOVER is counted as
  exhausted and unanswered);
* ``scan (before)``: the allocator this replaced (walk the pool from a cursor,
  asking the lease table about each address) at the same full /16, for comparison.

Also printed: the one-off cost of building the free list of a full /16 (at
start-up and on SIGHUP).
"""

from __future__ import annotations

import argparse
import ipaddress
import statistics
import time

from v6mostly.dhcp4.leases import BOUND, Lease, LeaseTable, MemoryStore
from v6mostly.dhcp4.limits import ClientLimits
from v6mostly.dhcp4.message import Message, MessageType, Opt
from v6mostly.dhcp4.server import Dhcp4Server, Subnet

NET = ipaddress.IPv4Network("10.0.0.0/16")
LO, HI = int(NET.network_address) + 1, int(NET.broadcast_address) - 1
LIMITS = ClientLimits(client_rate=1e9, client_burst=1e9)


def subnet() -> Subnet:
    return Subnet(
        name="big",
        network=NET,
        pools=[(LO, HI)],
        server_address=ipaddress.IPv4Address("10.0.0.1"),
        interface="lan0",
        routers=["10.0.0.1"],
        dns=["10.0.0.1"],
    )


def table(leased: int) -> LeaseTable:
    t = LeaseTable(MemoryStore())
    for a in range(LO, LO + leased):
        t.put(Lease(a, b"k%d" % a, "", "big", 1e9, BOUND), persist=False)
    return t


def discover(i: int) -> bytes:
    mac = bytes([2, 0xBE, 0, (i >> 16) & 255, (i >> 8) & 255, i & 255])
    opts = {Opt.MESSAGE_TYPE: bytes([MessageType.DISCOVER]), Opt.PARAM_REQUEST: b"\x01\x03\x06"}
    return Message(xid=i, chaddr=mac, options=opts).to_wire()


def per_discover(srv: Dhcp4Server, n: int, expect_offer: bool, step: float = 1e-6) -> float:
    msgs = [discover(i) for i in range(n)]
    times = []
    for i, m in enumerate(msgs):
        t0 = time.perf_counter()
        r = srv.handle(m, 1.0 + i * step, "lan0")
        times.append(time.perf_counter() - t0)
        assert (r is not None) == expect_offer, (i, r)
    return statistics.median(times)


def legacy_scan(t: LeaseTable, now: float, cursor: int = 0) -> int | None:
    """The allocator before issue 10: next free address after the cursor, by walking."""
    size = HI - LO + 1
    for step in range(size):
        a = LO + (cursor + step) % size
        if t.is_free(a, now):
            return a
    return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=2000)
    args = ap.parse_args()
    n = args.repeat
    size = HI - LO + 1
    rows: list[tuple[str, float]] = []

    rows.append(("empty", per_discover(Dhcp4Server([subnet()], table(0), limits=LIMITS), n, True)))

    t = table(size - 1)
    t0 = time.perf_counter()
    srv = Dhcp4Server([subnet()], t, limits=LIMITS)
    build = time.perf_counter() - t0
    # one address free: each DISCOVER comes after the previous offer's hold ran out,
    # so it is offered that address again (the expiry heap gives it back)
    hold = LIMITS.offer_hold_time + 1
    rows.append(("one free", per_discover(srv, n, True, hold)))

    t = table(size)
    srv = Dhcp4Server([subnet()], t, limits=LIMITS)
    rows.append(("full", per_discover(srv, n, False)))
    assert srv.stats.exhausted["big"] == n

    times = []
    for _ in range(max(3, min(n, 20))):
        t0 = time.perf_counter()
        assert legacy_scan(t, 1.0) is None
        times.append(time.perf_counter() - t0)
    rows.append(("scan (before), full", statistics.median(times)))

    print(f"DHCPv4 DISCOVER handling, /16 pool ({size} addresses), median of {n}:")
    for name, sec in rows:
        print(f"  {name:22s} {sec * 1e6:10.1f} us")
    print(f"  building the free list of a full /16 (start-up, SIGHUP): {build * 1e3:.1f} ms")


if __name__ == "__main__":
    main()
