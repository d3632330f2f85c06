"""``make demo``: an IPv6-only client reaches an IPv4-only server through the PLAT.

Brings a lab up, pings and curls the server by its Pref64 address, runs a
traceroute and a short iperf3 each way, prints a summary, tears the lab down
(also on error or Ctrl-C).
"""

from __future__ import annotations

import json
import re
import sys

from .topology import (
    CLIENT_NET,
    OUTER4,
    OUTER6,
    PREF64,
    SERVER4,
    Lab,
    LabConfig,
    running_lab,
    server6,
)


def _iperf(lab: Lab, reverse: bool, seconds: int = 3) -> float:
    argv = ["iperf3", "-J", "-c", server6(), "-t", str(seconds)]
    if reverse:
        argv.append("-R")
    r = lab.exec("client6", argv, timeout=seconds + 20)
    data = json.loads(r.stdout)
    return float(data["end"]["sum_received"]["bits_per_second"])


DHCPCD_CONF = "option ipv6_only_preferred\\nnoipv6rs\\nnoipv6\\n"


def _show_control_plane(lab: Lab) -> None:
    """What the router tells the IPv6-only client, as the client sees it."""
    r = lab.exec(
        "client6",
        [sys.executable, "-m", "v6mostly", "pref64", "discover", "--interface", "eth0"],
        check=False,
    )
    print(f"RA      PREF64 learned by the client (RFC 8781): {r.stdout.strip()}")
    # dhcpcd in a private mount namespace: its lease and run files never touch the host's.
    script = (
        "mount -t tmpfs none /run && mount -t tmpfs none /var/lib/dhcpcd && "
        f"printf '{DHCPCD_CONF}' > /var/lib/dhcpcd/dhcpcd.conf && "
        "exec timeout 8 dhcpcd -B -d -4 -f /var/lib/dhcpcd/dhcpcd.conf -c /bin/true eth0"
    )
    r = lab.exec("client6", ["sh", "-c", script], check=False, timeout=20)
    line = next(
        (x for x in r.stdout.splitlines() + r.stderr.splitlines() if "IPv6-Only Preferred" in x),
        "no option 108 seen",
    )
    print(f"DHCPv4  dhcpcd: {line.split(': ', 1)[-1].strip()}: no IPv4 address configured")
    r = lab.exec("client6", ["dig", "+short", "+time=2", "www.example.net", "AAAA"], check=False)
    print(f"DNS64   www.example.net AAAA from the router's DNS -> {r.stdout.strip()}")


def _m(metrics: dict[str, float], name: str) -> int:
    return int(sum(v for k, v in metrics.items() if k == name or k.startswith(name + "{")))


def run_demo(offload: bool = True, queues: int = 0) -> int:
    print("v6mostly demo: an IPv6-mostly site in network namespaces")
    print(f"  client6 ({CLIENT_NET}, IPv6 only) -> plat (v6mostly plat: NAPT66 to {OUTER6},")
    print(f"  SIIT {OUTER6} = {OUTER4}, Pref64 {PREF64}) -> inet4 ({SERVER4}, IPv4 only)")
    print()
    cfg = LabConfig(offload=offload, queues=queues)
    with running_lab(cfg) as lab:
        print(f"lab {lab.id} up; the server is {server6()} from the client's side")
        if cfg.router:
            _show_control_plane(lab)
        r = lab.exec("client6", ["ping", "-c", "5", "-i", "0.2", server6()])
        rtt = re.search(r"= ([\d.]+)/([\d.]+)/([\d.]+)", r.stdout)
        loss = re.search(r"(\d+)% packet loss", r.stdout)
        print(
            f"ping    {server6()}: {loss.group(1) if loss else '?'}% loss, "
            f"rtt avg {rtt.group(2) if rtt else '?'} ms"
        )
        url = "http://www.example.net/" if cfg.router else f"http://[{server6()}]/"
        r = lab.exec("client6", ["curl", "-sS", "-w", "\n%{http_code} %{time_total}", url])
        body, _, tail = r.stdout.rpartition("\n")
        print(f"curl    {url} -> HTTP {tail.split()[0]}: {body.strip()!r}")
        r = lab.exec(
            "client6",
            ["dig", "+short", "+time=2", f"@{server6()}", "www.example.net", "A"],
            check=False,
        )
        print(f"dig     www.example.net A @{server6()} (DNS over the PLAT) -> {r.stdout.strip()}")
        r = lab.exec("client6", ["traceroute", "-n", "-q", "1", "-w", "1", server6()], timeout=60)
        print("traceroute:")
        for line in r.stdout.splitlines()[1:]:
            print("   ", line.strip())
        up = _iperf(lab, reverse=False)
        down = _iperf(lab, reverse=True)
        print(
            f"iperf3  TCP client6 -> inet4 {up / 1e9:.2f} Gbit/s, inet4 -> client6 {down / 1e9:.2f} Gbit/s"
            " (3 s each, checksums verified by the endpoints)"
        )
        m = lab.metrics()
        print()
        mode = "offload" if m.get('v6mostly_dataplane_mode{mode="offload"}') else "plain"
        print(f"translator ({mode} mode, {_m(m, 'v6mostly_workers')} workers):")
        for d in ("6to4", "4to6"):
            pk = sum(
                v
                for k, v in m.items()
                if k.startswith("v6mostly_translated_packets_total") and f'"{d}"' in k
            )
            print(f"  {d}: {int(pk)} packets (GSO super-packets count once)")
        print(
            f"  GSO super-packets {_m(m, 'v6mostly_gso_superpackets_total')}, "
            f"segments they carried {_m(m, 'v6mostly_gso_segments_total')}"
        )
        print(
            f"  ICMP errors generated {_m(m, 'v6mostly_icmp_errors_generated_total')}, "
            f"drops {_m(m, 'v6mostly_dropped_packets_total')}, "
            f"worker restarts {_m(m, 'v6mostly_worker_restarts_total')}"
        )
        print(f"  NAPT66 sessions now {_m(m, 'v6mostly_napt66_sessions')}")
    print()
    print(f"lab {lab.id} removed")
    return 0


def _curl(lab: Lab, node: str, url: str, *opts: str) -> str:
    r = lab.exec(node, ["curl", "-sS", "-m", "10", *opts, "-w", "\n%{http_code}", url], check=False)
    body, _, code = r.stdout.rpartition("\n")
    if code.strip() != "200":
        return f"FAILED ({r.stderr.strip() or code})"
    return f"HTTP 200 {body.strip()!r}"


def run_site_demo(offload: bool = True, queues: int = 0) -> int:
    """The whole site: legacy (NAT44), mostly (CLAT -> PLAT) and v6only (DNS64) clients."""
    from .site import clat_state, client_report, traffic_split
    from .topology import SERVER6, SERVER6_NAME, SERVER_NAME, SITE_CLIENTS

    print("v6mostly demo: the IPv6-mostly site of the RubyKaigi report, in network namespaces")
    print("  legacy (dhcpcd, no option 108) | mostly (dhcpcd + option 108, v6mostly clat) |")
    print(f"  v6only (no DHCPv4)  --  one LAN  --  plat (v6mostly router, NAT64 Pref64 {PREF64},")
    print(f"  NAT44)  --  inet4 ({SERVER4}, IPv4 only), inet6 ({SERVER6})")
    print()
    cfg = LabConfig(offload=offload, queues=queues, site=True)
    with running_lab(cfg) as lab:
        print(f"lab {lab.id} up")
        print()
        print("what each client got from DHCPv4 and from the router's RAs:")
        for node in SITE_CLIENTS:
            rep = client_report(lab, node)
            print(f"  {node}:")
            print(f"    DHCPv4   {rep.dhcp4}")
            print(f"    IPv4     {', '.join(rep.ipv4) or 'none'}; default {rep.route4 or 'none'}")
            print(f"    IPv6     {', '.join(rep.ipv6)} (SLAAC); default {rep.route6}")
            print(f"    PREF64   {rep.pref64}")
        st = clat_state(lab)
        print(
            f"  mostly's CLAT: {'active' if st.get('active') else 'INACTIVE'}, "
            f"{st.get('clat_ipv6')} = 192.0.0.1, Pref64 {st.get('pref64')} "
            f"({st.get('pref64_source')})"
        )
        print()
        print("the IPv4-only server:")
        u4 = f"http://{SERVER4}/"
        print(f"  mostly  curl {u4} (CLAT -> PLAT)     {_curl(lab, 'mostly', u4)}")
        print(f"  legacy  curl {u4} (NAT44)            {_curl(lab, 'legacy', u4)}")
        un = f"http://{SERVER_NAME}/"
        r = lab.exec("v6only", ["dig", "+short", "+time=2", SERVER_NAME, "AAAA"], check=False)
        print(f"  v6only  {SERVER_NAME} AAAA (DNS64) -> {r.stdout.strip()}")
        print(f"  v6only  curl {un} (DNS64 -> PLAT) {_curl(lab, 'v6only', un)}")
        print("the IPv6 server, natively:")
        for node in SITE_CLIENTS:
            u6 = f"http://{SERVER6_NAME}/"
            print(f"  {node:7} curl {u6}             {_curl(lab, node, u6, '-6')}")
        r = lab.exec("mostly", ["traceroute", "-n", "-q", "1", "-w", "1", SERVER4], timeout=60)
        print(f"traceroute {SERVER4} from mostly (IPv4 literal, through CLAT and PLAT):")
        for line in r.stdout.splitlines()[1:]:
            print("   ", line.strip())
        print("  (192.0.0.2: the CLAT's peer; 192.0.0.8: an IPv6-only hop, RFC 7600)")
        split = traffic_split(lab)
        print()
        print("traffic split (bytes forwarded for the LAN, from the PLAT's and NAT44's counters):")
        for name, b, share in split.rows():
            bar = "#" * round(share * 40)
            print(f"  {name:22} {b:>10} B  {share * 100:5.1f} %  {bar}")
        print(f"  {'total':22} {split.total:>10} B")
    print()
    print(f"lab {lab.id} removed")
    return 0
