"""Prometheus metrics of the data plane (prometheus-client, custom collector).

The collector reads the workers' shared counters at scrape time and adds them
up, so every scrape sees the sum of all workers, including workers that were
restarted (a slot keeps its counts across restarts).
"""

from __future__ import annotations

import logging
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
    ) -> None:
        self.dp = dp
        self.mode = mode
        self.napt66 = napt66
        self.nft_counters = nft_counters

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
            "v6mostly_worker_restarts", "Workers restarted after dying", value=self.dp.restarts
        )
        yield GaugeMetricFamily("v6mostly_workers", "Workers running", value=self.dp.alive())
        m = GaugeMetricFamily("v6mostly_dataplane_mode", "1 for the mode in use", labels=["mode"])
        for mode in ("offload", "plain"):
            m.add_metric([mode], 1 if mode == self.mode else 0)
        yield m
        if self.napt66:
            yield from conntrack_families()
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


class ClatCollector(Collector):
    """``v6mostly clat``: the translator's counters, whether it is active, and leaks caught."""

    def __init__(
        self,
        counters: SharedCounters,
        active: Callable[[], bool],
        nft_counters: Callable[[], dict[str, int]],
    ) -> None:
        self.counters = counters
        self.active = active
        self.nft_counters = nft_counters

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
    from .config import listen_address
    from .errors import V6mostlyError

    host, port = listen_address(listen)
    try:
        server = serve(registry, host, port)
    except OSError as e:
        raise V6mostlyError(f"metrics listen {listen}: {e.strerror}") from None
    log.info("metrics on http://%s/metrics", listen)
    return server
