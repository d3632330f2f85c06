"""``v6mostly lab up|plan|down|status|exec`` and the end-to-end demo."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from .topology import ALL_NODES, Lab, LabConfig, LabError, destroy, lab_ids, load_lab, new_id


def _pick(lab_id: str | None) -> Lab:
    if lab_id:
        return load_lab(lab_id)
    ids = lab_ids()
    if len(ids) == 1:
        return load_lab(ids[0])
    if not ids:
        raise LabError("no lab is up (v6mostly lab up)")
    raise LabError(f"several labs are up ({', '.join(ids)}): pass --lab ID")


def _config(args: argparse.Namespace) -> LabConfig:
    return LabConfig(
        translator=args.translator,
        queues=args.queues,
        offload=not args.no_offload,
        ipv4_mtu=args.ipv4_mtu,
        site=args.site,
        ha="resilient" if args.ha else ("plain" if args.ha_plain else ""),
    )


def cmd_up(args: argparse.Namespace) -> int:
    lab = Lab(args.lab or new_id(), _config(args))
    lab.up()
    print(lab.status())
    print(f"lab {lab.id} is up; remove it with: v6mostly lab down {lab.id}")
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    """What ``lab up`` with the same options would build (nothing is touched)."""
    from .plan import plan_lab

    lab = Lab(args.lab or new_id(), _config(args))
    plan = plan_lab(lab.config, lab.id, lab.dir)
    print("\n".join(plan.describe()))
    if args.contents:
        for f in plan.files:
            if isinstance(f.content, str) and f.path.endswith((".toml", ".conf")):
                print(f"\n# --- {f.path}\n{f.content}", end="")
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    ids = lab_ids() if args.all else [args.lab_id or _pick(None).id]
    for i in ids:
        removed = destroy(i)
        print(f"lab {i}: removed {', '.join(removed) or 'nothing (already gone)'}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    ids = [args.lab] if args.lab else lab_ids()
    if not ids:
        print("no lab is up")
    for i in ids:
        print(load_lab(i).status())
    return 0


def cmd_exec(args: argparse.Namespace) -> int:
    lab = _pick(args.lab)
    argv = list(args.argv)
    if argv and argv[0] == "--":
        argv = argv[1:]
    if not argv:
        raise LabError("lab exec NODE -- COMMAND: no command given")
    sys.stdout.flush()
    os.execvp("ip", lab.cmd(args.node, argv))


def cmd_demo(args: argparse.Namespace) -> int:
    if args.site:
        from .demo import run_site_demo

        return run_site_demo(offload=not args.no_offload, queues=args.queues)
    from .demo import run_demo

    return run_demo(offload=not args.no_offload, queues=args.queues)


def add_lab_parser(sub: Any) -> None:
    lab = sub.add_parser("lab", help="an IPv6-mostly site in network namespaces")
    ls = lab.add_subparsers(dest="lcmd", required=True, parser_class=type(lab))
    up = ls.add_parser("up", help="build the lab and start its daemons")
    pl = ls.add_parser("plan", help="print what `lab up` would build (no root needed)")
    for p in (up, pl):
        p.add_argument("--lab", help="lab id (default: random)")
        p.add_argument("--translator", choices=("v6mostly", "tayga", "none"), default="v6mostly")
        p.add_argument("--queues", type=int, default=0)
        p.add_argument("--no-offload", action="store_true")
        p.add_argument("--ipv4-mtu", type=int, default=1500, help="MTU of the IPv4 side")
        p.add_argument(
            "--site",
            action="store_true",
            help="the whole site: legacy, mostly (CLAT) and v6only clients, NAT44, inet6",
        )
        p.add_argument(
            "--ha",
            action="store_true",
            help="two PLATs behind ECMP: bird2, a resilient next-hop group, conntrackd",
        )
        p.add_argument(
            "--ha-plain",
            action="store_true",
            help="the same, as the report ran it: plain ECMP route, no state sync",
        )
    up.set_defaults(func=cmd_up)
    pl.add_argument("--contents", action="store_true", help="also print the config files")
    pl.set_defaults(func=cmd_plan)
    dn = ls.add_parser("down", help="remove a lab (also after a crash)")
    dn.add_argument("lab_id", nargs="?")
    dn.add_argument("--all", action="store_true", help="remove every lab")
    dn.set_defaults(func=cmd_down)
    st = ls.add_parser("status", help="show labs")
    st.add_argument("--lab")
    st.set_defaults(func=cmd_status)
    ex = ls.add_parser("exec", help="run a command in a node: lab exec NODE -- CMD")
    ex.add_argument("--lab")
    ex.add_argument("node", choices=ALL_NODES)
    ex.add_argument("argv", nargs=argparse.REMAINDER)
    ex.set_defaults(func=cmd_exec)
    de = ls.add_parser("demo", help="up, ping/curl/traceroute/iperf3 through the PLAT, down")
    de.add_argument("--queues", type=int, default=0)
    de.add_argument("--no-offload", action="store_true")
    de.add_argument("--site", action="store_true", help="the site lab (three clients)")
    de.set_defaults(func=cmd_demo)
