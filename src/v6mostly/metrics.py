"""Prometheus metrics of the data plane (prometheus-client, custom collector).

The collector reads the workers' shared counters at scrape time and adds them
up, so every scrape sees the sum of all workers, including workers that were
restarted (a slot keeps its counts across restarts).
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry

from .siit.verdict import DIR_NAMES, DROP_NAMES, PROTO_NAMES

if TYPE_CHECKING:
    from .services.dataplane import Dataplane, SharedCounters
    from .siit.verdict import Stats

log = logging.getLogger("v6mostly.metrics")


class DataplaneCollector(Collector):
    def __init__(
        self,
        dp: Dataplane,
        mode: str,
        napt66: bool = False,
        nft_counters: Callable[[], dict[str, int]] | None = None,
        fastpath: Callable[[int], tuple[int, int, int]] | None = None,
    ) -> None:
        self.dp = dp
        self.fastpath = fastpath
        self.mode = mode
        self.napt66 = napt66
        self.nft_counters = nft_counters
        self.port_use = PortUse() if napt66 else None

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        st, extra = self.dp.counters.total()
        yield from translator_families(st, extra)
        wp = CounterMetricFamily(
            "v6mostly_worker_translated_packets",
            "Packets translated by each worker (queue balance)",
            labels=["worker"],
        )
        for i in range(self.dp.counters.slots):
            wp.add_metric([str(i)], sum(self.dp.counters.stats(i).packets))
        yield wp
        yield CounterMetricFamily(
            "v6mostly_fragments_out", "Fragments written", value=st.fragments_out
        )
        yield CounterMetricFamily(
            "v6mostly_gso_superpackets", "GSO super-packets read", value=extra["gso_superpackets"]
        )
        yield CounterMetricFamily(
            "v6mostly_gso_segments",
            "Segments the GSO super-packets stand for",
            value=extra["gso_segments"],
        )
        yield CounterMetricFamily(
            "v6mostly_gso_software_segmented",
            "Super-packets cut into packets in software",
            value=extra["gso_software_segmented"],
        )
        yield CounterMetricFamily(
            "v6mostly_poll_hits",
            "Packets the adaptive poll took without a wake-up",
            value=extra["poll_hits"],
        )
        yield CounterMetricFamily(
            "v6mostly_poll_seconds",
            "CPU seconds the workers spent in the adaptive poll",
            value=extra["poll_spin_us"] / 1e6,
        )
        if self.fastpath is not None:
            yield from fastpath_families(self.fastpath)
        yield CounterMetricFamily(
            "v6mostly_worker_restarts", "Workers restarted after dying", value=self.dp.restarts
        )
        yield GaugeMetricFamily("v6mostly_workers", "Workers running", value=self.dp.alive())
        m = GaugeMetricFamily("v6mostly_dataplane_mode", "1 for the mode in use", labels=["mode"])
        for mode in ("offload", "plain"):
            m.add_metric([mode], 1 if mode == self.mode else 0)
        yield m
        if self.napt66:
            yield from conntrack_families()
        if self.port_use is not None:
            yield from self.port_use.families()
        if self.nft_counters is not None:
            f = CounterMetricFamily(
                "v6mostly_filter_denied_packets", "Packets the PLAT filter dropped", labels=["rule"]
            )
            for k, v in self.nft_counters().items():
                f.add_metric([k], v)
            yield f


def conntrack_families() -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
    """The PLAT's NAPT66 state from the kernel's own counters: O(1), no table dump."""
    from .linux import conntrack

    count = conntrack.entries()
    if count is None:
        return
    yield GaugeMetricFamily(
        "v6mostly_napt66_sessions",
        "Conntrack entries in the PLAT's namespace (NAPT66 sessions; the IPv4 side is notrack)",
        value=count,
    )
    cap = conntrack.limit()
    if cap is not None:
        yield GaugeMetricFamily(
            "v6mostly_conntrack_max", "The conntrack table's limit (nf_conntrack_max)", value=cap
        )
    st = conntrack.stats()
    for key, name, doc in (
        (
            "insert_failed",
            "v6mostly_conntrack_insert_failed",
            "New bindings that found no free port",
        ),
        ("drop", "v6mostly_conntrack_dropped", "New connections dropped: the table was full"),
        ("early_drop", "v6mostly_conntrack_early_dropped", "Entries evicted to make room"),
    ):
        if key in st:
            yield CounterMetricFamily(name, doc, value=st[key])


#: One source-NATed entry of ``conntrack -L -o extended``: its protocol, then the reply
#: tuple (the second ``src=``): destination = the outer address, dport (ICMP: id) = port.
_CT_REPLY = re.compile(
    r"^ipv\d +\d+ +(\S+) +\d+ +\d+ +(?:[A-Z_]+ +)?src=\S+ dst=\S+ "
    r"(?:sport=\d+ dport=\d+|type=\d+ code=\d+ id=\d+) +(?:\[\w+\] +)?"
    r"src=\S+ dst=(\S+) (?:sport=\d+ dport=(\d+)|type=\d+ code=\d+ id=(\d+))",
    re.M,
)


def parse_port_use(text: str) -> dict[tuple[str, str], int]:
    """Distinct outer ports in use per (outer address, protocol), from ``conntrack -L -o
    extended`` lines of source-NATed connections: the reply tuple's destination is the
    outer address and its destination port (ICMP: its id) the port the binding took."""
    ports: dict[tuple[str, str], set[str]] = {}
    for m in _CT_REPLY.finditer(text):
        proto, outer, port, ident = m.groups()
        ports.setdefault((outer, proto), set()).add(port or ident)
    return {k: len(v) for k, v in ports.items()}


class PortUse:
    """NAPT66 port use per outer address, from a conntrack listing taken in the background.

    Unlike the table's size (``conntrack_families``, O(1)) this needs the entries
    themselves, so it is never taken on a scrape: a thread runs ``conntrack -L`` (C,
    in its own process) at most every ``every`` seconds, and a scrape reports the
    last listing. Nothing is exported before the first one, nor without ``conntrack``.
    """

    ARGV = ("conntrack", "-L", "-f", "ipv6", "--src-nat", "-o", "extended")

    def __init__(self, every: float = 15.0) -> None:
        self.every = every
        self.last: dict[tuple[str, str], int] | None = None
        self.thread: threading.Thread | None = None

    def refresh(self) -> None:
        import subprocess

        try:
            r = subprocess.run(
                list(self.ARGV), capture_output=True, text=True, timeout=60, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as e:
            log.debug("conntrack listing: %s", e)
            return
        if r.returncode == 0:
            self.last = parse_port_use(r.stdout)

    def _run(self) -> None:
        import time

        while True:
            t0 = time.monotonic()
            self.refresh()
            time.sleep(max(self.every, 4 * (time.monotonic() - t0)))

    def families(self) -> Iterator[GaugeMetricFamily]:
        if self.thread is None:
            self.thread = threading.Thread(target=self._run, name="port-use", daemon=True)
            self.thread.start()
        last = self.last
        if last is None:
            return
        g = GaugeMetricFamily(
            "v6mostly_napt66_ports_in_use",
            "Outer ports (ICMP: ids) NAPT66 bindings hold, per outer address and protocol "
            "(from a conntrack listing at most a few seconds old)",
            labels=["outer", "protocol"],
        )
        for (outer, proto), n in sorted(last.items()):
            g.add_metric([outer, proto], n)
        yield g


def translator_families(st: Stats, extra: dict[str, int]) -> Iterator[CounterMetricFamily]:
    """The SIIT core's counters (all workers added up) as metric families."""
    pk = CounterMetricFamily(
        "v6mostly_translated_packets", "Packets translated", labels=["direction", "protocol"]
    )
    by = CounterMetricFamily(
        "v6mostly_translated_bytes",
        "Bytes of translated packets (as written)",
        labels=["direction", "protocol"],
    )
    for d, dn in enumerate(DIR_NAMES):
        for p, pn in enumerate(PROTO_NAMES):
            pk.add_metric([dn, pn], st.packets[d * 4 + p])
            by.add_metric([dn, pn], st.octets[d * 4 + p])
    yield pk
    yield by
    dr = CounterMetricFamily("v6mostly_dropped_packets", "Packets dropped", labels=["reason"])
    for i, n in enumerate(DROP_NAMES):
        dr.add_metric([n], st.drops[i])
    for n in ("tun_write_errors", "worker_errors", "vnet_errors"):
        dr.add_metric([n], extra[n])
    yield dr
    ie = CounterMetricFamily(
        "v6mostly_icmp_errors_generated",
        "ICMP errors the translator originated",
        labels=["family"],
    )
    ie.add_metric(["ipv4"], st.icmp_errors[0])
    ie.add_metric(["ipv6"], st.icmp_errors[1])
    yield ie
    yield CounterMetricFamily(
        "v6mostly_icmp_errors_suppressed",
        "ICMP errors the translator would have originated but its rate limit held back",
        value=st.icmp_errors_suppressed,
    )
    yield CounterMetricFamily(
        "v6mostly_local_replies",
        "Packets to the translator's own addresses it answered itself",
        value=st.local_replies,
    )
    yield CounterMetricFamily(
        "v6mostly_hairpinned", "Packets hairpinned (RFC 7757 §4.3)", value=st.hairpinned
    )


def fastpath_families(
    read: Callable[[int], tuple[int, int, int]],
) -> Iterator[CounterMetricFamily]:
    """The in-kernel fast path's counters (PLAT or CLAT), by direction."""
    fams = (
        CounterMetricFamily(
            "v6mostly_fastpath_packets",
            "Packets translated in the kernel by the fast path (not by a worker)",
            labels=["direction"],
        ),
        CounterMetricFamily(
            "v6mostly_fastpath_octets",
            "Octets of those packets, as translated",
            labels=["direction"],
        ),
        CounterMetricFamily(
            "v6mostly_fastpath_superpackets", "GSO super-packets among them", labels=["direction"]
        ),
    )
    for i, direction in enumerate(DIR_NAMES):
        for fam, value in zip(fams, read(i), strict=True):
            fam.add_metric([direction], value)
    yield from fams


class ClatCollector(Collector):
    """``v6mostly clat``: the translator's counters, whether it is active, and leaks caught."""

    def __init__(
        self,
        counters: SharedCounters,
        active: Callable[[], bool],
        nft_counters: Callable[[], dict[str, int]],
        fastpath: Callable[[int], tuple[int, int, int]] | None = None,
    ) -> None:
        self.counters = counters
        self.active = active
        self.nft_counters = nft_counters
        self.fastpath = fastpath

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        st, extra = self.counters.total()
        yield from translator_families(st, extra)
        yield GaugeMetricFamily(
            "v6mostly_clat_active", "1 while the CLAT translates", value=int(self.active())
        )
        yield CounterMetricFamily(
            "v6mostly_clat_leaked_packets",
            "Packets with a 192.0.0.0/29 source dropped on a non-CLAT interface",
            value=self.nft_counters().get("leaked_clat_source", 0),
        )
        if self.fastpath is not None:
            yield from fastpath_families(self.fastpath)


class NftCountersCollector(Collector):
    """Named counters of one nftables table, packets and bytes, labelled by name.

    For counters a host keeps beside the translator: the lab's site table counts
    what the router forwards for the LAN per family (native IPv6, native IPv4 through
    NAT44), the rest of the traffic split next to ``v6mostly_translated_bytes``.
    ``read`` returns ``{name: (packets, bytes)}`` (``{}`` when the table is gone).
    """

    def __init__(self, table: str, read: Callable[[], dict[str, tuple[int, int]]]) -> None:
        self.table = table
        self.read = read

    def collect(self) -> Iterator[CounterMetricFamily]:
        pk = CounterMetricFamily(
            "v6mostly_nft_counter_packets",
            "Packets of an nftables named counter",
            labels=["table", "counter"],
        )
        by = CounterMetricFamily(
            "v6mostly_nft_counter_bytes",
            "Bytes of an nftables named counter",
            labels=["table", "counter"],
        )
        for name, (packets, octets) in sorted(self.read().items()):
            pk.add_metric([self.table, name], packets)
            by.add_metric([self.table, name], octets)
        yield pk
        yield by


def parse_exposition(text: str) -> dict[str, float]:
    """Samples of a Prometheus text exposition as ``{'name{labels}': value}`` (lab, tests)."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        key, _, value = line.rpartition(" ")
        try:
            out[key] = float(value)
        except ValueError:
            continue
    return out


class BuildInfo(Collector):
    """``v6mostly_build_info{version, python}`` = 1, as Prometheus exporters do."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        import platform

        from . import __version__

        g = GaugeMetricFamily(
            "v6mostly_build_info", "The running v6mostly", labels=["version", "python"]
        )
        g.add_metric([__version__, platform.python_version()], 1)
        yield g


def standard_registry() -> CollectorRegistry:
    """A registry with what every exporter has: ``process_*`` (CPU, memory, open file
    descriptors, start time), ``python_info`` and ``v6mostly_build_info``."""
    from prometheus_client import PlatformCollector, ProcessCollector

    reg = CollectorRegistry()
    ProcessCollector(registry=reg)
    PlatformCollector(registry=reg)
    reg.register(BuildInfo())
    return reg


def serve(registry: CollectorRegistry, host: str, port: int) -> object:
    """The exposition on a daemon thread; returns the server (``.shutdown()``).

    Built from ``make_wsgi_app`` and the standard library rather than
    ``start_http_server``, whose return value changed across prometheus-client
    releases (None before 0.20): the same code for every version we accept.
    """
    import socket
    import threading
    from socketserver import ThreadingMixIn
    from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

    from prometheus_client import make_wsgi_app

    class Server(ThreadingMixIn, WSGIServer):
        daemon_threads = True
        address_family = socket.AF_INET6 if ":" in host else socket.AF_INET

    class Quiet(WSGIRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

    httpd = make_server(host, port, make_wsgi_app(registry), Server, handler_class=Quiet)
    threading.Thread(target=httpd.serve_forever, name="metrics", daemon=True).start()
    return httpd


def serve_endpoint(registry: CollectorRegistry, listen: str) -> object:
    """Serve ``registry`` on ``listen`` ("ADDR:PORT"); a one-line error when it cannot."""
    from .config_reader import listen_address
    from .errors import V6mostlyError

    host, port = listen_address(listen)
    try:
        server = serve(registry, host, port)
    except OSError as e:
        raise V6mostlyError(f"metrics listen {listen}: {e.strerror}") from None
    log.info("metrics on http://%s/metrics", listen)
    return server
