"""``v6mostly ctl``: ask the running daemons over their control sockets.

``ctl [--socket PATH] status|stats [--explain]|sessions [--client ADDR]|leases [--v6only]|
reload [--json]``. Without ``--socket``, every ``*.sock`` in /run/v6mostly is asked (status,
stats, reload), the PLAT's (sessions) or the router's (leases).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
from typing import Any

from .control import RUN_DIR, ControlError, request
from .errors import V6mostlyError


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "ctl",
        help="ask the running daemons (status, stats, sessions, reload)",
        description="v6mostly ctl talks to the daemons' control sockets (root only).",
    )
    p.add_argument("--socket", help=f"one daemon's control socket (default: all in {RUN_DIR})")
    p.add_argument("--json", action="store_true", help="the daemons' answers as JSON")
    cs = p.add_subparsers(dest="ctl", required=True)
    cs.add_parser("status", help="config file and hash, uptime, Pref64 and source, workers, mode")
    st = cs.add_parser("stats", help="every counter")
    st.add_argument("--explain", action="store_true", help="what each counter means, what to do")
    st.add_argument("--all", action="store_true", help="also counters that are zero")
    se = cs.add_parser("sessions", help="NAPT66 bindings (PLAT)")
    se.add_argument("--client", help="only this client's IPv6 address")
    se.add_argument("--limit", type=int, default=1000, help="at most this many rows")
    le = cs.add_parser("leases", help="DHCPv4 leases (router)")
    le.add_argument(
        "--v6only", action="store_true", help="the clients' option-108 decisions and why"
    )
    cs.add_parser("reload", help="re-read the configuration (as SIGHUP) and say what happened")
    p.set_defaults(func=cmd_ctl)


def _sockets(args: argparse.Namespace) -> list[str]:
    if args.socket:
        return [args.socket]
    found = sorted(
        glob.glob(os.path.join(RUN_DIR, "*.sock")) + glob.glob(os.path.join(RUN_DIR, "*", "*.sock"))
    )
    if not found:
        raise V6mostlyError(f"no control socket in {RUN_DIR} (no daemon running?)")
    for cmd, own in (("sessions", "plat.sock"), ("leases", "router.sock")):
        if args.ctl == cmd:
            mine = [p for p in found if os.path.basename(p) == own]
            return mine or found
    return found


def cmd_ctl(args: argparse.Namespace) -> int:
    req: dict[str, Any] = {}
    if args.ctl == "stats":
        req["explain"] = args.explain
    if args.ctl == "leases":
        req["v6only"] = args.v6only
    if args.ctl == "sessions":
        req["limit"] = args.limit
        if args.client:
            req["client"] = args.client
    answers: dict[str, dict[str, Any]] = {}
    failed = False
    for path in _sockets(args):
        try:
            answers[path] = request(path, args.ctl, **req)
        except ControlError as e:
            answers[path] = {"ok": False, "error": str(e)}
        failed |= not answers[path].get("ok")
        if args.ctl == "reload":
            failed |= not answers[path].get("reloaded")
    if args.json:
        print(json.dumps(answers, indent=1, default=str))
    else:
        blocks = [render(args, path, a) for path, a in answers.items()]
        print("\n\n".join(blocks))
    return 1 if failed else 0


def render(args: argparse.Namespace, path: str, a: dict[str, Any]) -> str:
    name = os.path.basename(path).removesuffix(".sock")
    if not a.get("ok"):
        return f"{name}: error: {a.get('error')}"
    if args.ctl == "status":
        lines = [f"{name}:"]
        for k, v in a.items():
            if k == "ok" or (k == "ha" and v is None):
                continue
            if isinstance(v, dict):
                lines.append(f"  {k}:")
                lines += [f"    {k2:<20} {v2}" for k2, v2 in v.items()]
            else:
                lines.append(f"  {k:<16} {v}")
        return "\n".join(lines)
    if args.ctl == "stats":
        rows = a.get("explained")
        lines = [f"{name}:"]
        if rows is not None:
            for r in rows:
                if r["value"] or args.all:
                    lines.append(f"  {r['name']:<36} {r['value']:>14}  {r['meaning']}")
                    if r["advice"] and r["value"]:
                        lines.append(f"  {'':<36} {'':>14}  -> {r['advice']}")
        else:
            for k, v in a["counters"].items():
                if v or args.all:
                    lines.append(f"  {k:<36} {v:>14}")
        return "\n".join(lines)
    if args.ctl == "sessions":
        lines = [f"{name}: {a['total']} NAPT66 session(s), {a['shown']} shown"]
        if a.get("note"):
            lines.append(f"  {a['note']}")
        for s in a["sessions"]:
            dst = s["destination_ipv4"] or s["destination"]
            dport = f":{s['destination_port']}" if s["destination_port"] is not None else ""
            age = f"age {s['age']} s, " if s.get("age") is not None else ""
            lines.append(
                f"  {s['proto']:<6} [{s['client']}]:{s['client_port']} -> {dst}{dport}"
                f"  as [{s['outer']}]:{s['outer_port']}  {age}expires in {s['expires_in']} s"
            )
        return "\n".join(lines)
    if args.ctl == "leases":
        if "clients" in a:
            lines = [f"{name}: {len(a['clients'])} client(s) asked for option 108"]
            for c in a["clients"]:
                told = "IPv6-only" if c["told_ipv6_only"] else "not IPv6-only"
                lines.append(
                    f"  {c['mac']}  {c['subnet']:<10} {told:<14} {c['seconds_ago']:>8} s ago"
                    f"  ({c['why']})"
                )
            return "\n".join(lines)
        lines = [f"{name}: {len(a['leases'])} lease(s)"]
        for x in a["leases"]:
            lines.append(
                f"  {x['address']:<15} {x['mac']}  {x['subnet']:<10} {x['state']:<8}"
                f" expires in {x['expires_in']} s  {x['hostname']}"
            )
        return "\n".join(lines)
    # reload
    verdict = "reloaded" if a.get("reloaded") else "NOT reloaded"
    return f"{name}: {verdict}: {a.get('message')}"
