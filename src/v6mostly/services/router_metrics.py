"""Prometheus metrics of ``v6mostly router``: leases, offers, RAs, DNS, per interface."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ..dhcp4.policy import NOT_REQUESTED

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
            c = CounterMetricFamily(
                "v6mostly_dhcp4_dropped",
                "Messages dropped before being decided (interface not served, relay not "
                "trusted, per-client rate, DECLINE limit)",
                labels=["reason"],
            )
            for k, v in st.dropped.items():
                c.add_metric([k], v)
            yield c
            yield CounterMetricFamily(
                "v6mostly_dhcp4_option82_ignored",
                "Option 82 sent by a client itself (giaddr 0): removed, not honoured",
                value=st.option82_ignored,
            )
            c = CounterMetricFamily(
                "v6mostly_dhcp4_pool_exhausted",
                "DISCOVERs unanswered for want of a free address",
                labels=["subnet"],
            )
            for sub in r.dhcp.server.subnets:
                c.add_metric([sub.name], st.exhausted.get(sub.name, 0))
            yield c
            used = GaugeMetricFamily(
                "v6mostly_dhcp4_leases_in_use", "Leases bound", labels=["subnet"]
            )
            offered = GaugeMetricFamily(
                "v6mostly_dhcp4_addresses_offered",
                "Addresses offered and held for a REQUEST",
                labels=["subnet"],
            )
            declined = GaugeMetricFamily(
                "v6mostly_dhcp4_addresses_declined",
                "Addresses declined by clients and held back",
                labels=["subnet"],
            )
            free = GaugeMetricFamily(
                "v6mostly_dhcp4_addresses_free",
                "Pool addresses neither bound, offered nor declined",
                labels=["subnet"],
            )
            now = time.time()
            told = sum(
                1
                for d in list(r.dhcp.server.decisions.values())
                if d.v6only and now - d.time < 86400
            )
            bound = sum(
                1 for x in list(r.dhcp.server.table.by_addr.values())
                if x.state == "bound" and x.expires > now
            )  # fmt: skip
            cl = GaugeMetricFamily(
                "v6mostly_dhcp4_clients",
                "Distinct clients by path: told IPv6-only (RFC 8925) in the last 24 h, or "
                "holding an IPv4 lease (dual stack)",
                labels=["path"],
            )
            cl.add_metric(["ipv6_only"], told)
            cl.add_metric(["dual_stack"], bound)
            yield cl
            recent = [d for d in list(r.dhcp.server.decisions.values()) if now - d.time < 86400]
            asked = sum(1 for d in recent if d.why != NOT_REQUESTED)
            seen = GaugeMetricFamily(
                "v6mostly_dhcp4_clients_seen",
                "Distinct clients in the last 24 h, by whether they ask for option 108 (RFC 8925)",
                labels=["asks_108"],
            )
            seen.add_metric(["yes"], asked)
            seen.add_metric(["no"], len(recent) - asked)
            yield seen
            size = GaugeMetricFamily(
                "v6mostly_dhcp4_pool_size", "Addresses in the pools", labels=["subnet"]
            )
            for sn in r.dhcp.server.subnets:
                size.add_metric([sn.name], sn.size)
            yield size
            dec = CounterMetricFamily(
                "v6mostly_dhcp4_v6only_decisions",
                "Option 108 decisions (per DISCOVER/REQUEST) by outcome and the policy's reason",
                labels=["told_ipv6_only", "reason"],
            )
            for (answer, why), n in list(st.v6only_decisions.items()):
                dec.add_metric([answer, why], n)
            yield dec
            for name, u in r.dhcp.server.pool_usage(time.time()).items():
                used.add_metric([name], u.bound)
                offered.add_metric([name], u.offered)
                declined.add_metric([name], u.declined)
                free.add_metric([name], u.free)
            yield used
            yield offered
            yield declined
            yield free
        if r.ra is not None and r.ra.ifs:
            s = CounterMetricFamily(
                "v6mostly_ra_sent", "Router Advertisements sent", labels=["interface"]
            )
            q = CounterMetricFamily(
                "v6mostly_ra_solicits", "Router Solicitations received", labels=["interface"]
            )
            err = CounterMetricFamily(
                "v6mostly_ra_send_errors", "Router Advertisements not sent", labels=["interface"]
            )
            bad = CounterMetricFamily(
                "v6mostly_ra_solicits_invalid",
                "Router Solicitations discarded (RFC 4861 §6.1.1)",
                labels=["interface", "reason"],
            )
            for rif in r.ra.ifs.values():
                s.add_metric([rif.name], rif.sent)
                q.add_metric([rif.name], rif.solicits)
                err.add_metric([rif.name], rif.errors)
                for why, n in list(rif.invalid.items()):
                    bad.add_metric([rif.name, why], n)
            yield s
            yield q
            yield err
            yield bad
        split = r.split.read()
        if split:
            from .router_split import PATHS

            by = CounterMetricFamily(
                "v6mostly_site_traffic_bytes",
                "Bytes the router forwarded for its LAN, by path (native IPv6, IPv4 via NAT64 "
                "as IPv6 on the LAN, native IPv4) and direction",
                labels=["path", "direction"],
            )
            pk = CounterMetricFamily(
                "v6mostly_site_traffic_packets",
                "Packets the router forwarded for its LAN, by path and direction",
                labels=["path", "direction"],
            )
            for name, (path, direction) in PATHS.items():
                p, b = split.get(name, (0, 0))
                by.add_metric([path, direction], b)
                pk.add_metric([path, direction], p)
            yield by
            yield pk
        if r.dns is not None:
            c = CounterMetricFamily(
                "v6mostly_dns_queries", "DNS queries by outcome", labels=["outcome"]
            )
            for k, v in r.dns.responder.counts.items():
                c.add_metric([k], v)
            yield c
