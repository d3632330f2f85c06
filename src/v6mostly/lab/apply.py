"""Execute a ``LabPlan`` (``plan.py``) on the system: pyroute2 for namespaces,
links, addresses and routes, ``ip netns exec`` for sysctls, ethtool, nft and
the processes. The order is fixed: namespaces (and their own sysctls), links,
sysctls, addresses, links up, routes, offloads, files, commands, then the
processes with their readiness checks. ``topology.destroy`` undoes all of it
(``Lab.up`` calls it when applying fails).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from .plan import LabPlan, Process, Wait
from .topology import LabError, alive, tail

if TYPE_CHECKING:
    from .topology import Lab


def apply_plan(lab: Lab, plan: LabPlan) -> None:
    """Build ``plan`` for ``lab`` (whose id and directory it was planned with)."""
    if plan.id != lab.id or plan.dir != lab.dir:
        raise LabError(f"plan for lab {plan.id} ({plan.dir}) applied to lab {lab.id}")
    lab.plan = plan
    create_namespaces(lab, plan)
    lab.save()
    create_links(lab, plan)
    # before the links come up: a client sends its router solicitations then
    for s in plan.sysctls:
        lab.exec(s.node, ["sysctl", "-qw", s.setting])
    configure_links(plan)
    for o in plan.offloads:
        lab.exec(o.node, ["ethtool", "-K", o.ifname, o.feature, o.state])
    write_files(plan)
    for c in plan.commands:
        lab.exec(c.node, list(c.argv))
    start(lab, plan)


def create_namespaces(lab: Lab, plan: LabPlan) -> None:
    from pyroute2 import netns

    for n in plan.namespaces:
        netns.create(n.name)
        for k in n.sysctls:
            lab.exec(n.node, ["sysctl", "-qw", k])


def create_links(lab: Lab, plan: LabPlan) -> None:
    """Links, created from the node that holds them (a veth's peer goes to its node)."""
    from pyroute2 import IPRoute

    for node in dict.fromkeys(x.node for x in plan.links):
        with IPRoute(netns=plan.ns(node)) as ipr:
            for link in plan.links:
                if link.node != node:
                    continue
                if link.kind == "bridge":
                    ipr.link(
                        "add", ifname=link.ifname, kind="bridge", br_stp_state=0, br_forward_delay=0
                    )
                else:
                    peer = {
                        "ifname": link.peer,
                        "net_ns_fd": f"/run/netns/{plan.ns(link.peer_node)}",
                    }
                    ipr.link("add", ifname=link.ifname, kind="veth", peer=peer)
        # No MLD snooping: the CLAT's and the kernel's ND must reach every port at once.
        for link in plan.links:
            if link.node == node and link.kind == "bridge":
                argv = ["ip", "link", "set", link.ifname, "type", "bridge", "mcast_snooping", "0"]
                lab.exec(node, argv)


def configure_links(plan: LabPlan) -> None:
    """Per node: addresses, links up (bridge ports joined), routes."""
    from pyroute2 import IPRoute

    # node by node, in the plan's order (the router's side before its peers')
    order = [x.node for x in plan.states] + [x.node for x in plan.addresses]
    order += [x.node for x in plan.routes]
    for node in dict.fromkeys(order):
        with IPRoute(netns=plan.ns(node)) as ipr:

            def index(ifname: str, ipr: IPRoute = ipr) -> int:
                return int(ipr.link_lookup(ifname=ifname)[0])

            for a in plan.addresses:
                if a.node == node:
                    ipr.addr("add", index=index(a.ifname), address=a.address, prefixlen=a.prefixlen)
            for st in plan.states:
                if st.node != node:
                    continue
                if st.master:
                    ipr.link("set", index=index(st.ifname), master=index(st.master))
                if st.mtu:
                    ipr.link("set", index=index(st.ifname), state="up", mtu=st.mtu)
                else:
                    ipr.link("set", index=index(st.ifname), state="up")
            for r in plan.routes:
                if r.node == node:
                    ipr.route("add", dst=r.dst, gateway=r.gateway, oif=index(r.ifname))


def write_files(plan: LabPlan) -> None:
    for d in plan.dirs:
        os.makedirs(d, exist_ok=True)
    for f in plan.files:
        os.makedirs(os.path.dirname(f.path), exist_ok=True)
        if isinstance(f.content, bytes):
            with open(f.path, "wb") as fb:
                fb.write(f.content)
        else:
            with open(f.path, "w") as ft:
                ft.write(f.content)


def start(lab: Lab, plan: LabPlan) -> None:
    """The processes in order; before each readiness check, the state is saved (so
    ``down`` finds every pid even if the check fails)."""
    from . import site

    inet6_started = False
    for step in plan.start:
        if isinstance(step, Process) and step.node == "inet6":
            if not inet6_started:  # the site's IPv6 server, through its seam
                site._start_inet6(lab)
                inet6_started = True
        elif isinstance(step, Process):
            lab.spawn(step.node, step.name, list(step.argv))
        else:
            lab.save()
            wait(lab, step)
    lab.save()


def wait(lab: Lab, w: Wait) -> None:
    from .ha import pref64_paths
    from .site import _http_ok, _read, clat_state, client_ipv4

    if w.kind == "ready":
        lab.wait_ready(timeout=w.timeout)
        return
    conds: dict[str, Callable[[], bool]] = {
        "dhcp4-lease": lambda: bool(client_ipv4(lab, w.node)),
        "log": lambda: w.arg in _read(lab.path(w.log + ".log")),
        "clat-active": lambda: bool(clat_state(lab).get("active")),
        "http": lambda: _http_ok(lab, w.node, w.arg),
        "ecmp": lambda: pref64_paths(lab) >= int(w.arg),
    }
    if w.kind not in conds:
        raise LabError(f"wait {w.kind!r}: unknown check")
    until(lab, conds[w.kind], w.timeout, w.what, w.log)


def until(lab: Lab, cond: Callable[[], bool], timeout: float, what: str, log: str) -> None:
    """Wait for ``cond``; fail early when a process of the lab has exited."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        for name, pid in lab.pids.items():
            if not alive(pid):
                raise LabError(
                    f"{name} exited; see {lab.path(name + '.log')}: "
                    + tail(lab.path(name + ".log"))
                )
        time.sleep(0.2)
    raise LabError(
        f"lab {lab.id}: {what} after {timeout:.0f} s; {log}.log: " + tail(lab.path(log + ".log"))
    )
