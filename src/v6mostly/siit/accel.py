"""The optional C accelerator of the translator (issue 13): loading it and configuring it.

Theory of operation
-------------------
``_accel`` (``_accel.c``, built by ``setup.py`` when a compiler is present) translates the
common case in C: TCP, UDP and ICMP echo both ways, without IPv4 options, IPv6 extension
headers or fragments, within the MTU, with addresses through EAM (RFC 7757, any prefix
lengths, up to ``MAX_EAM`` entries) and the Pref64 (RFC 6052, every length). Everything
else (ICMP errors, fragments, options, Packet Too Big, hop limit 1, the translator's own
addresses, hairpinning, refused addresses, ...) is declined before a byte is written and
goes to the pure-Python core, which stays the reference: the C path must give the same
bytes, verdicts and counters (``tests/unit/test_accel_differential.py``).

:func:`attach` gives a :class:`~v6mostly.siit.translator.Translator` its C fast path, or
``None`` with the reason. The pure-Python data plane is used when the extension is not
built (:data:`MISSING`, for the one log line a service writes), when ``V6MOSTLY_ACCEL=0`` is
set (read by the extension when it is imported: this core module reads no environment), or
for a configuration the C path does not cover.

The Well-Known Prefix embeds only global IPv4 addresses (RFC 6052 §3.1, ``ipaddress``'s
``is_global``); the C path gets a table of the /16 blocks that are global throughout, built
from ``ipaddress``'s own lists and checked against ``is_global``, and declines the others.
"""

from __future__ import annotations

import importlib
import ipaddress
from functools import lru_cache
from types import ModuleType
from typing import TYPE_CHECKING, Any, Protocol

from ..addr.rfc6052 import WKP

if TYPE_CHECKING:
    from .translator import Translator

_ext: ModuleType | None
try:
    _ext = importlib.import_module("._accel", __package__)
except ImportError:  # pragma: no cover - depends on the build
    _ext = None

#: The one log line of a service whose data plane runs without the extension.
MISSING = "v6mostly: C accelerator not built (no compiler?): pure Python data plane"
DISABLED = "v6mostly: C accelerator switched off (V6MOSTLY_ACCEL=0): pure Python data plane"
IN_USE = "v6mostly: C accelerator in use for the common packets"
#: How many EAM entries the C path takes (a linear longest-prefix match).
MAX_EAM: int = _ext.MAX_EAM if _ext is not None else 0


class FastPath(Protocol):
    """The ``_accel.Accel`` object of one translator."""

    def translate_into(self, buf: bytearray, start: int, end: int) -> tuple[int, int]: ...

    def run(
        self,
        fd: int,
        buf: bytearray,
        token: Any,
        w: Any,
        werr: int,
        vnet: bool,
        budget: int,
        out6: int = -1,
        eth: bytes | None = None,
        block: bool = False,
        /,
    ) -> int:
        """The C loop (``_accel.c``). With ``out6`` (the CLAT), IPv6 results leave through
        it: a raw IPv6 socket (``eth`` None) or a TAP, as [vnet header, ``eth``, packet].
        With ``block`` the first read is the worker's blocking read."""
        ...

    def set_mtu(self, ipv6_mtu: int, ipv4_mtu: int, frag_mtu: int) -> None: ...

    def set_poll(self, poll_ns: int, cap_ns: int, hits_index: int, spin_index: int) -> None: ...

    def set_gso_counters(self, gso_index: int, segs_index: int) -> None: ...


def built() -> bool:
    """Whether the extension is importable (compiled)."""
    return _ext is not None


def available() -> bool:
    """Whether translators use the C fast path (built, and not switched off)."""
    return _ext is not None and not _ext.DISABLED_BY_ENV


def status() -> str:
    """One line for the log: in use, missing, or switched off."""
    if _ext is None:
        return MISSING
    return DISABLED if _ext.DISABLED_BY_ENV else IN_USE


@lru_cache(maxsize=1)
def wkp_table() -> bytes:
    """65536 bytes: 1 where every address of the /16 is global (``Pref64.embed`` accepts it).

    Built from the networks ``ipaddress`` decides ``is_global`` by, then checked against
    ``is_global`` itself on addresses spread over the space: on a Python whose rules this
    does not read right, the table is all zero and the C path leaves the WKP to Python.
    """
    consts: Any = getattr(ipaddress.IPv4Address, "_constants", None)
    nets: list[ipaddress.IPv4Network] = [ipaddress.IPv4Network("224.0.0.0/4")]
    try:
        nets += list(consts._private_networks)
        nets.append(consts._public_network)
        nets += list(getattr(consts, "_private_networks_exceptions", ()))
    except (AttributeError, TypeError):
        return bytes(65536)
    table = bytearray(b"\x01") * 65536
    for net in nets:
        first = int(net.network_address) >> 16
        last = int(net.broadcast_address) >> 16
        table[first : last + 1] = bytes(last - first + 1)
    for n in range(0x01000001, 0xFFFFFFFF, 0x00FEDCBB):  # about 250 probes, every /8
        a = ipaddress.IPv4Address(n)
        if table[n >> 16] and not (a.is_global and not a.is_multicast):
            return bytes(65536)
    return bytes(table)


def attach(xl: Translator) -> tuple[FastPath | None, str]:
    """The C fast path for ``xl``, or ``None`` and why the translator stays pure Python."""
    if _ext is None:
        return None, MISSING
    if _ext.DISABLED_BY_ENV:
        return None, DISABLED
    entries = xl.eam.entries
    if len(entries) > MAX_EAM:
        return None, f"{len(entries)} EAM entries (the C path takes {MAX_EAM}): pure Python"
    pool6 = xl.pool6
    eam = [
        (e.v6.network_address.packed, e.v6.prefixlen, e.v4.network_address.packed, e.v4.prefixlen)
        for e in entries
    ]
    try:
        fast: FastPath = _ext.Accel(
            xl,
            xl.translate_python,
            xl.c_packets,
            xl.c_octets,
            pool6.network.network_address.packed if pool6 is not None else None,
            pool6.length if pool6 is not None else 0,
            wkp_table() if pool6 is not None and pool6.network == WKP else None,
            eam,
            xl.ipv4_address,
            xl.ipv6_address,
            xl.amend_udp,
            xl.decrement_ttl,
            xl.expire_6to4,
            xl.reset_tc,
            xl.hairpinning,
            xl.ip_id_base,
            xl.ip_id_end,
        )
    except (ValueError, TypeError) as e:
        return None, f"C accelerator refused the configuration ({e}): pure Python"
    fast.set_mtu(xl.ipv6_mtu, xl.ipv4_mtu, xl.frag_mtu)
    return fast, IN_USE
