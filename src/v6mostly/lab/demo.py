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
