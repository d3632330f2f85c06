"""What ``v6mostly clat`` says without running: ``--dry-run`` and ``status``."""

from __future__ import annotations

import json
import os

from ..config import ClatSettings
from ..linux import nft, tc
from .clat import ROUTE_METRIC, ClatError
from .clat_egress import egress_name
from .clat_fast import CLAT_PEER_V4, CLAT_V4, DUMMY_V4


def dry_run_text(s: ClatSettings) -> str:
    lines = [
        f"# v6mostly clat --dry-run ({s.source})",
        f"uplink {s.interface}; tun {s.tun}: {CLAT_V4} peer {CLAT_PEER_V4}, "
        f"IPv4 default route metric {ROUTE_METRIC}, MTU = the uplink's IPv6 MTU - 20",
        "pref64: "
        + (
            f"{s.pref64} (pinned)"
            if s.pref64
            else "from RA PREF64 (RFC 8781), else ipv4only.arpa (RFC 7050)"
            + (f" via {s.dns}" if s.dns else "")
        ),
        "CLAT IPv6 address: "
        + (
            str(s.address)
            if s.address
            else "a stable IID in the uplink's /64, checksum-neutral with 192.0.0.1"
        )
        + " (deprecated, DAD, owned by the kernel)",
        "runs only with a Pref64 and no native IPv4 default route",
        f"errors from IPv6-only hops come from {DUMMY_V4} (RFC 7600)",
        f"{s.worker_count} worker(s); "
        + (
            f"offload: IPv6 out through TAP {egress_name(s.tun)} + tc bpf redirect_neigh "
            "(raw socket if the kernel refuses)"
            if s.offload
            else "no offload: IPv6 out through a raw socket"
        ),
        "fast path: TCP/UDP translated in the kernel (tc BPF on "
        f"{s.tun} egress and {s.interface} ingress); the workers do the rest"
        if s.fastpath
        else "no fast path: the workers translate every packet",
        f"state file: {os.path.join(s.state_dir, 'clat-' + s.interface + '.json')}",
        "",
        "# nft -f -",
        nft.render_clat_table(s.tun),
        "# tc (the CLAT address A is chosen at run time)",
        *("tc " + " ".join(c) for c in tc.redirect_commands(s.interface, "A", s.tun)),
    ]
    if s.metrics_listen:
        lines.append(f"metrics: http://{s.metrics_listen}/metrics")
    return "\n".join(lines)


def status_text(state_dir: str, interface: str | None) -> str:
    """``v6mostly clat status [IF]``: what the running CLAT(s) wrote."""
    try:
        names = sorted(n for n in os.listdir(state_dir) if n.startswith("clat-"))
    except OSError:
        names = []
    if interface is not None:
        names = [n for n in names if n == f"clat-{interface}.json"]
    if not names:
        raise ClatError(
            f"no CLAT running{' on ' + interface if interface else ''} (no state in {state_dir})"
        )
    out = []
    for n in names:
        with open(os.path.join(state_dir, n)) as f:
            st = json.load(f)
        alive = _pid_alive(int(st.get("pid", 0)))
        left = st.get("pref64_lifetime_left")
        out += [
            f"{st['interface']}: {'active' if st['active'] else 'idle'}"
            + ("" if st["active"] else f" ({st['reason']})")
            + ("" if alive else " [process gone: state is stale]"),
            f"  pref64     {st['pref64'] or '-'}"
            + (f" from {st['pref64_source']}" if st["pref64_source"] else "")
            + (f", {left:.0f} s left" if left is not None else ""),
            f"  ipv6       {st['clat_ipv6'] or '-'}",
            f"  ipv4       {st['ipv4'] or '-'} peer {st['ipv4_peer'] or '-'} on {st['tun']}",
            f"  mtu        {st['mtu'] or '-'}",
        ]
        if st.get("egress"):
            out.append(f"  ipv6 out   {st['egress']}, {st.get('workers')} worker(s)")
        for k, v in sorted(st.get("counters", {}).items()):
            out.append(f"  {k:<34} {v}")
    return "\n".join(out)


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
