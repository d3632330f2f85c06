"""Prometheus metrics of ``v6mostly router``: leases, offers, RAs, DNS, per interface."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from .router import Router


class RouterCollector(Collector):
    def __init__(self, router: Router) -> None:
        self.r = router

    def collect(self) -> Iterator[Metric]:
        r = self.r
        if r.dhcp is not None:
            st = r.dhcp.server.stats
            c = CounterMetricFamily(
                "v6mostly_dhcp4_requests", "DHCPv4 messages received", labels=["type"]
            )
            for k, v in st.requests.items():
                c.add_metric([k], v)
            yield c
            c = CounterMetricFamily(
                "v6mostly_dhcp4_replies", "DHCPv4 replies sent", labels=["type"]
            )
            for k, v in st.replies.items():
                c.add_metric([k], v)
            yield c
            c = CounterMetricFamily("v6mostly_dhcp4_offers", "OFFERs", labels=["v6only"])
            c.add_metric(["yes"], st.offers_v6only)
            c.add_metric(["no"], st.offers_v4)
            yield c
            yield CounterMetricFamily(
                "v6mostly_dhcp4_acks_v6only", "ACKs carrying option 108", value=st.acks_v6only
            )
            yield CounterMetricFamily(
                "v6mostly_dhcp4_malformed", "Malformed DHCPv4 messages", value=st.malformed
            )
            c = CounterMetricFamily(
                "v6mostly_dhcp4_ignored", "Messages not answered", labels=["reason"]
            )
            for k, v in st.ignored.items():
                c.add_metric([k], v)
            yield c
            used = GaugeMetricFamily(
                "v6mostly_dhcp4_leases_in_use", "Leases in use", labels=["subnet"]
            )
            free = GaugeMetricFamily(
                "v6mostly_dhcp4_addresses_free", "Pool addresses free", labels=["subnet"]
            )
            for name, (u, f) in r.dhcp.server.pool_usage(time.time()).items():
                used.add_metric([name], u)
                free.add_metric([name], f)
            yield used
            yield free
        if r.ra is not None and r.ra.ifs:
            s = CounterMetricFamily(
                "v6mostly_ra_sent", "Router Advertisements sent", labels=["interface"]
            )
            q = CounterMetricFamily(
                "v6mostly_ra_solicits", "Router Solicitations received", labels=["interface"]
            )
            for rif in r.ra.ifs.values():
                s.add_metric([rif.name], rif.sent)
                q.add_metric([rif.name], rif.solicits)
            yield s
            yield q
        if r.dns is not None:
            c = CounterMetricFamily(
                "v6mostly_dns_queries", "DNS queries by outcome", labels=["outcome"]
            )
            for k, v in r.dns.responder.counts.items():
                c.add_metric([k], v)
            yield c
