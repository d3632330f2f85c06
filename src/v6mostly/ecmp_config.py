"""The ``v6mostly ecmp`` file: which Pref64 to balance over the PLATs, from which table.

```toml
# site = "site.toml"        # optional: the Pref64 from the site file
[ecmp]
prefix = "2001:db8:64::/96" # the Pref64 (unless site = ...)
learn_table = 100           # the kernel table bird2 exports the BGP routes into
table = 254                 # where the Pref64 route (nhid GROUP) goes; 254 = main
group_id = 6400             # nexthop id of the group; members get ids group_id+1...
buckets = 128
idle_timer = 30             # s: a returning PLAT takes only buckets idle this long
unbalanced_timer = 0        # s: 0 = never force migration of active buckets
hash = "source"             # or "kernel": leave the multipath hash sysctls alone
[metrics]
listen = "127.0.0.1:9468"
```

Every error is one line naming the file, [section] key, the value and the rule
(docs/architecture.md §4).
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from typing import Any

from .addr.rfc6052 import parse_prefix, validate_pref64
from .config_reader import Reader, parse_metrics, read_toml, section
from .errors import AddressError, ConfigError

#: Members get the ids group_id+1 .. group_id+MAX_MEMBERS.
MAX_MEMBERS = 64
#: The kernel's resilient group: 1..2^16-1 buckets (u16), timers in clock_t (u32, USER_HZ).
MAX_BUCKETS = 65535
MAX_TIMER = 3600
HASHES = ("source", "kernel")
#: hash = "source": fib_multipath_hash_policy 3 (custom fields), fields 0x1 (source address)
HASH_SYSCTLS = {
    "source": {
        "net/ipv6/fib_multipath_hash_policy": "3",
        "net/ipv6/fib_multipath_hash_fields": "0x1",
    },
    "kernel": {},
}
#: Tables no one else's routes should be moved into or out of.
RESERVED_TABLES = (0, 252, 253, 255)


@dataclass(frozen=True)
class EcmpSettings:
    source: str
    prefix: ipaddress.IPv6Network
    learn_table: int = 100
    table: int = 254
    group_id: int = 6400
    buckets: int = 128
    idle_timer: int = 30
    unbalanced_timer: int = 0
    hash: str = "source"
    metrics_listen: str = ""

    @property
    def member_ids(self) -> range:
        return range(self.group_id + 1, self.group_id + 1 + MAX_MEMBERS)

    def sysctls(self) -> dict[str, str]:
        return dict(HASH_SYSCTLS[self.hash])


def _prefix(r: Reader, text: Any) -> ipaddress.IPv6Network:
    if not isinstance(text, str):
        raise r.fail("prefix", text, "expected an IPv6 prefix string (ADDR/LEN)")
    try:
        net = parse_prefix(text)
        validate_pref64(net)
    except AddressError as e:
        raise r.fail("prefix", text, str(e)) from None
    return net


def _table(r: Reader, key: str, default: int) -> int:
    t = r.integer(key, default, 1, 0xFFFFFFFF)
    if t in RESERVED_TABLES:
        raise r.fail(key, t, "a reserved table (0, 252 compat, 253 default, 255 local)")
    return t


def parse_ecmp(
    path: str, data: dict[str, Any], site_prefix: ipaddress.IPv6Network | None
) -> EcmpSettings:
    known = {"ecmp", "metrics"}
    for k in data:
        if k not in known:
            raise ConfigError(f"{path}: [{k}]: unknown section (expected one of {sorted(known)})")
    if "ecmp" not in data:
        raise ConfigError(f"{path}: [ecmp]: missing section")
    r = section(path, data, "ecmp")
    if "prefix" in r.table:
        prefix = _prefix(r, r.get("prefix", str, None))
        if site_prefix is not None and prefix != site_prefix:
            raise r.fail(
                "prefix",
                r.table["prefix"],
                f"differs from the site's pref64 {site_prefix}; write it once, in the site file",
            )
    elif site_prefix is not None:
        prefix = site_prefix
    else:
        raise r.fail("prefix", "", 'missing: the Pref64 to balance (or site = "site.toml")')
    learn = _table(r, "learn_table", 100)
    table = _table(r, "table", 254)
    if learn == table:
        raise r.fail("table", table, "must differ from learn_table (bird2 owns that table)")
    group_id = r.integer("group_id", 6400, 1, 0xFFFFFFFF - MAX_MEMBERS)
    buckets = r.integer("buckets", 128, 2, MAX_BUCKETS)
    idle = r.integer("idle_timer", 30, 0, MAX_TIMER)
    unbal = r.integer("unbalanced_timer", 0, 0, MAX_TIMER)
    if unbal and unbal < idle:
        raise r.fail("unbalanced_timer", unbal, f"0 (never) or at least idle_timer ({idle} s)")
    h: str = r.get("hash", str, "source")
    if h not in HASHES:
        raise r.fail("hash", h, 'expected "source" or "kernel"')
    r.finish()
    return EcmpSettings(
        source=path,
        prefix=prefix,
        learn_table=learn,
        table=table,
        group_id=group_id,
        buckets=buckets,
        idle_timer=idle,
        unbalanced_timer=unbal,
        hash=h,
        metrics_listen=parse_metrics(path, data),
    )


def load_ecmp(path: str) -> EcmpSettings:
    """Read and validate an ``ecmp`` file (its Pref64 may come from ``site = "..."``)."""
    data = read_toml(path)
    site = data.pop("site", None)
    site_prefix = None
    if site is not None:
        if not isinstance(site, str):
            raise ConfigError(f"{path}: site = {site!r}: expected the path of a site.toml")
        from .site_config import load_site

        here = os.path.dirname(os.path.abspath(path))
        spath = site if os.path.isabs(site) else os.path.join(here, site)
        site_prefix = load_site(spath, check_lease_db=False).pref64
    return parse_ecmp(path, data, site_prefix)
