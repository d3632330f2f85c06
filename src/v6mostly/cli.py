"""Command line: ``v6mostly pref64 check|neutral``, ``v6mostly translate``, ``v6mostly demo``.

Errors in input or configuration print one line and exit with status 2.
"""

from __future__ import annotations

import argparse
import ipaddress
import sys
from collections import Counter
from collections.abc import Iterable, Sequence
from importlib import resources
from typing import NoReturn

from . import __version__
from .addr.pref64 import is_neutral, neutrality_reason, propose_neutral
from .addr.rfc6052 import Pref64, parse_prefix, validate_pref64
from .errors import V6mostlyError
from .siit.translator import Translator, TranslatorConfig
from .wire.decode import describe
from .wire.pcap import PcapWriter, read_pcap


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def _ipv4(text: str) -> ipaddress.IPv4Network:
    try:
        return ipaddress.IPv4Network(text, strict=False)
    except ValueError:
        raise V6mostlyError(f"--ipv4 {text!r} is not an IPv4 address or prefix") from None


def cmd_pref64_check(args: argparse.Namespace) -> int:
    net = parse_prefix(args.prefix)
    v4 = _ipv4(args.ipv4) if args.ipv4 else None
    notes = validate_pref64(net, v4)
    print(f"{net}: valid Pref64::/{net.prefixlen} (RFC 6052 §2.2)")
    for n in notes:
        print(f"  note: {n}")
    print(f"  checksum neutral: {'yes' if is_neutral(net) else 'no'} ({neutrality_reason(net)})")
    if v4 is not None:
        p = Pref64(net)
        first = v4.network_address
        out = p.embed(first.packed)
        if out is not None:
            print(f"  {first} -> {ipaddress.IPv6Address(out)}")
    return 0


def cmd_pref64_neutral(args: argparse.Namespace) -> int:
    net = parse_prefix(args.prefix)
    if net.prefixlen > 96:
        raise V6mostlyError(f"{net}: a base for a Pref64 must be /96 or shorter")
    if net.prefixlen in (32, 96) and is_neutral(net):
        print(f"{net} is already checksum neutral (RFC 6052 §4.1)")
        return 0
    props = propose_neutral(net, args.length)
    if not props:
        print(f"{net}: no checksum-neutral Pref64 can be derived ({neutrality_reason(net)})")
        return 1
    print(f"checksum-neutral Pref64s derived from {net} (RFC 6052 §4.1):")
    for p in props:
        how = "as is" if p.group < 0 else f"group {p.group} = 0x{p.value:04x}"
        print(f"  {p.prefix}    ({how})")
    return 0


def cmd_pref64_discover(args: argparse.Namespace) -> int:
    from .services.discover import from_ipv4only_arpa, from_router_advertisements

    found = []
    if not args.dns_only:
        try:
            found = from_router_advertisements(args.interface, args.timeout)
        except OSError as e:
            raise V6mostlyError(f"interface {args.interface}: {e.strerror}") from None
    if not found:
        found = from_ipv4only_arpa(args.dns, args.timeout)
    if not found:
        print(f"no Pref64 found on {args.interface} (no PREF64 in RAs, no ipv4only.arpa answer)")
        return 1
    for f in found:
        life = f" lifetime {f.lifetime} s" if f.lifetime is not None else ""
        print(f"{f.prefix}{life} ({f.source})")
    return 0


def _config_from_args(args: argparse.Namespace) -> TranslatorConfig:
    eam: list[tuple[str, str]] = []
    for item in args.eam or []:
        if "=" not in item:
            raise V6mostlyError(f"--eam {item!r}: expected IPV6PREFIX=IPV4PREFIX")
        a, b = item.split("=", 1)
        eam.append((a, b))
    if args.pool6:
        validate_pref64(parse_prefix(args.pool6))
    cfg = TranslatorConfig(
        pool6=args.pool6,
        eam=eam,
        pool6791_v4=list(args.pool6791 or []),
        ipv4_address=args.ipv4_address,
        ipv6_address=args.ipv6_address,
        lowest_ipv6_mtu=args.lowest_ipv6_mtu,
        decrement_ttl=args.decrement_ttl,
    )
    for flag, attr, low, high in _RATELIMIT_FLAGS:
        v = getattr(args, attr, None)
        if v is None:
            continue
        if not low <= v <= high:
            raise V6mostlyError(f"--{flag} {v}: expected an integer from {low} to {high}")
        setattr(cfg, attr, v)
    return cfg


#: ``siit`` flags of the ICMP-error rate limit: (flag, TranslatorConfig field, range).
_RATELIMIT_FLAGS = (
    ("icmp-ratelimit-ms", "icmp_ratelimit_ms", 0, 3_600_000),
    ("icmp-ratelimit-burst", "icmp_ratelimit_burst", 1, 1_000_000),
    ("icmp-msgs-per-sec", "icmp_msgs_per_sec", 0, 10_000_000),
    ("icmp-msgs-burst", "icmp_msgs_burst", 1, 10_000_000),
)


def _run(
    xl: Translator, packets: Iterable[tuple[int, bytes]], writer: PcapWriter | None, trace: bool
) -> tuple[int, int, Counter[str]]:
    n_in = n_out = 0
    drops: Counter[str] = Counter()
    for ts, pkt in packets:
        n_in += 1
        # The capture's clock drives the ICMP error rate limit, as time would on a TUN.
        v = xl.translate(pkt, now=ts / 1e9)
        if trace:
            print(f"#{n_in:<3} in   {describe(pkt)}")
        for out in v.packets:
            n_out += 1
            if writer is not None:
                writer.write(out, ts)
            if trace:
                tag = "icmp" if v.icmp_error else "out "
                print(f"     {tag} {describe(out)}")
        if v.drop is not None:
            drops[v.drop.name.lower()] += 1
            if trace:
                extra = " (answered with an ICMP error)" if v.icmp_error else ""
                print(f"     drop {v.drop.name.lower()}{extra}")
    return n_in, n_out, drops


def cmd_translate(args: argparse.Namespace) -> int:
    xl = Translator(_config_from_args(args))
    try:
        fin = open(args.input, "rb")  # noqa: SIM115
    except OSError as e:
        raise V6mostlyError(f"{args.input}: {e.strerror}") from None
    with fin:
        records = [(r.ts_ns, r.packet) for r in read_pcap(fin, args.input) if r.packet]
    try:
        fout = open(args.output, "wb")  # noqa: SIM115
    except OSError as e:
        raise V6mostlyError(f"{args.output}: {e.strerror}") from None
    with fout:
        n_in, n_out, drops = _run(xl, records, PcapWriter(fout), args.trace)
    print(f"{n_in} packets in, {n_out} packets out, {sum(drops.values())} dropped")
    for reason, n in drops.most_common():
        print(f"  drop {reason}: {n}")
    return 0


DEMO_CONFIG = TranslatorConfig(
    pool6="64:ff9b:1::/96",
    eam=[("2001:db8:64::/120", "203.0.113.0/24")],
    pool6791_v4=["192.0.2.250"],
    ipv4_address="192.0.2.1",
    ipv6_address="2001:db8:ff::1",
)


def cmd_demo(args: argparse.Namespace) -> int:
    cfg = DEMO_CONFIG
    print("v6mostly demo: the SIIT core on a built-in sample capture")
    print(f"  pool6 {cfg.pool6} (RFC 8215 local-use), EAM {cfg.eam[0][0]} = {cfg.eam[0][1]},")
    print(
        f"  RFC 6791 pool {cfg.pool6791_v4[0]}, translator {cfg.ipv4_address} / {cfg.ipv6_address}"
    )
    print()
    xl = Translator(cfg)
    data = resources.files("v6mostly").joinpath("data/sample.pcap").read_bytes()
    import io

    records = [(r.ts_ns, r.packet) for r in read_pcap(io.BytesIO(data), "sample.pcap")]
    n_in, n_out, drops = _run(xl, records, None, True)
    print()
    print(f"{n_in} packets in, {n_out} packets out, {sum(drops.values())} dropped")
    for k, v in xl.stats.as_dict().items():
        if v:
            print(f"  {k} {v}")
    return 0


def add_translator_flags(t: argparse.ArgumentParser) -> None:
    t.add_argument("--pool6", help="Pref64::/n for RFC 6052 mapping")
    t.add_argument("--eam", action="append", metavar="IPV6PFX=IPV4PFX", help="an RFC 7757 entry")
    t.add_argument(
        "--pool6791", action="append", metavar="ADDR", help="RFC 6791 pool address or prefix"
    )
    t.add_argument("--ipv4-address", help="the translator's own IPv4 address")
    t.add_argument("--ipv6-address", help="the translator's own IPv6 address")
    t.add_argument("--lowest-ipv6-mtu", type=int, default=1280)


def _setup_logging(verbose: bool, log_format: str = "text") -> None:
    """Logs on stderr: plain lines (under systemd without our timestamp, with the
    syslog priority prefix journald reads), or one JSON object per line. ``-v``: debug
    lines and one line per DHCP decision (``v6mostly.dhcp4.decisions``)."""
    import logging

    from .logfmt import formatter

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter(log_format))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    logging.getLogger("v6mostly.dhcp4.decisions").setLevel(
        logging.INFO if verbose else logging.WARNING
    )


def _siit_settings(args: argparse.Namespace) -> object:
    from .config import Settings, load, parse_tun
    from .config_reader import Reader

    if args.config:
        return load(args.config, plat=False)
    if not args.pool6 and not args.eam:
        raise V6mostlyError("siit: give --config FILE, or --pool6 and/or --eam")
    cfg = _config_from_args(args)
    from .siit.translator import Translator as _T

    _T(cfg)  # validate now, with the flag names in the message
    if args.metrics:
        from .config_reader import listen_address

        listen_address(args.metrics)
    # The flags go through the file's validators (one TUN-name rule, one MTU range, ...).
    tun_table = {
        "name": args.tun,
        "mtu": args.mtu,
        "queues": args.queues,
        "offload": not args.no_offload,
        "txqueuelen": args.txqueuelen,
        "rps": False if args.no_rps else "auto",
        "fastpath": not args.no_fastpath,
    }
    return Settings(
        source="<command line>",
        tun=parse_tun(Reader("command line", "tun", tun_table)),
        translator=cfg,
        napt66=None,
        metrics_listen=args.metrics or "",
        manage_routes=args.routes,
    )


def _serve(args: argparse.Namespace, plat: bool) -> int:
    from .config import Settings, load
    from .services.translator import dry_run_text, serve_forever

    s = load(args.config, plat=True) if plat else _siit_settings(args)
    assert isinstance(s, Settings)
    if args.dry_run:
        print(dry_run_text(s, plat=plat))
        return 0
    _setup_logging(args.verbose, args.log_format)
    return serve_forever(s, plat=plat, replace=args.replace, control_path=args.control_socket)


def cmd_siit(args: argparse.Namespace) -> int:
    return _serve(args, plat=False)


def cmd_ecmp(args: argparse.Namespace) -> int:
    """``v6mostly ecmp``: the resilient next-hop group over the PLATs (services/ecmp.py)."""
    from .services import ecmp

    if not args.dry_run:
        _setup_logging(args.verbose, args.log_format)
    return ecmp.main(args)


def cmd_plat(args: argparse.Namespace) -> int:
    return _serve(args, plat=True)


def cmd_router(args: argparse.Namespace) -> int:
    from .services import router, router_text
    from .site_config import load_site

    # Only a DHCPv4 server opens the lease database: its directory must exist then.
    cfg = load_site(args.config, check_lease_db=args.cmd in ("router", "dhcp4"))
    only = router.SERVICES if args.cmd == "router" else (args.cmd,)
    if args.dry_run:
        print(router_text.dry_run_text(cfg))
        return 0
    _setup_logging(args.verbose, args.log_format)
    return router.serve_forever(cfg, only, args.control_socket)


def cmd_clat(args: argparse.Namespace) -> int:
    from .config import clat_from_flags, load_clat
    from .services import clat, clat_text

    if args.action == "status":
        print(clat_text.status_text(args.state_dir, args.target))
        return 0
    if args.target is not None:
        raise V6mostlyError(
            f"clat {args.target!r}: unexpected argument (did you mean --interface?)"
        )
    if args.config:
        s = load_clat(args.config)
        if args.interface:
            s.interface = args.interface
    elif args.interface:
        s = clat_from_flags(
            args.interface, args.tun, args.pref64, args.address, args.dns, args.metrics
        )
    else:
        raise V6mostlyError("clat: give --interface IF (or --config FILE)")
    s.state_dir = args.state_dir
    if args.dry_run:
        print(clat_text.dry_run_text(s))
        return 0
    _setup_logging(args.verbose, args.log_format)
    return clat.serve_forever(s)


def _service_flags(p: argparse.ArgumentParser, daemon: str) -> None:
    from .control import default_path

    p.add_argument("--dry-run", action="store_true", help="print what would be applied, exit")
    p.add_argument(
        "--control-socket",
        default=default_path(daemon),
        metavar="PATH",
        help=f"for v6mostly ctl (default {default_path(daemon)}; '' = none)",
    )
    p.add_argument(
        "--replace", action="store_true", help="take over an existing device, table or route"
    )
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="v6mostly", description="Tools for an IPv6-mostly network.")
    p.add_argument("--version", action="version", version=f"v6mostly {__version__}")
    p.add_argument(
        "--log-format",
        choices=("text", "json"),
        default="text",
        help="text (default; no timestamp of its own under systemd) or one JSON object a line",
    )
    sub = p.add_subparsers(dest="cmd", required=True, parser_class=_Parser)

    pf = sub.add_parser("pref64", help="check or derive a Pref64::/n")
    pfs = pf.add_subparsers(dest="pcmd", required=True, parser_class=_Parser)
    c = pfs.add_parser("check", help="validate a Pref64::/n (RFC 6052 §2.2, §3.1)")
    c.add_argument("prefix")
    c.add_argument("--ipv4", help="an IPv4 address or prefix to be embedded in it")
    c.set_defaults(func=cmd_pref64_check)
    n = pfs.add_parser("neutral", help="propose checksum-neutral Pref64s (RFC 6052 §4.1)")
    n.add_argument("prefix")
    n.add_argument("--length", type=int, choices=(32, 96), help="target prefix length")
    n.set_defaults(func=cmd_pref64_neutral)

    dv = pfs.add_parser("discover", help="learn the network's Pref64 (RFC 8781 RA, RFC 7050)")
    dv.add_argument("--interface", required=True, help="send an RS and read PREF64 from RAs here")
    dv.add_argument("--timeout", type=float, default=3.0)
    dv.add_argument("--dns", help="resolver for the ipv4only.arpa fallback (default: system)")
    dv.add_argument("--dns-only", action="store_true", help="skip RAs; ask ipv4only.arpa only")
    dv.set_defaults(func=cmd_pref64_discover)

    t = sub.add_parser("translate", help="translate the packets of a pcap file")
    t.add_argument("input")
    t.add_argument("output")
    add_translator_flags(t)
    t.add_argument(
        "--decrement-ttl", action="store_true", help="decrement TTL/Hop Limit (Jool style)"
    )
    t.add_argument("--trace", action="store_true", help="print every packet in and out")
    t.set_defaults(func=cmd_translate)

    d = sub.add_parser("demo", help="translate the built-in sample capture and print a trace")
    d.set_defaults(func=cmd_demo)

    si = sub.add_parser("siit", help="run the stateless translator on a TUN device")
    si.add_argument("--config", help="TOML configuration file")
    si.add_argument("--tun", default="siit0", help="TUN device name (default siit0)")
    add_translator_flags(si)
    si.add_argument("--queues", type=int, default=0, help="worker processes (0 = one per CPU)")
    si.add_argument("--no-offload", action="store_true", help="no vnet header / TSO")
    si.add_argument("--mtu", type=int, default=1500)
    si.add_argument("--txqueuelen", type=int, default=10000)
    si.add_argument("--no-rps", action="store_true", help="no receive packet steering on the TUN")
    si.add_argument(
        "--no-fastpath", action="store_true", help="no in-kernel fast path: workers translate all"
    )
    si.add_argument(
        "--routes", action="store_true", help="also route pool6 and EAM prefixes into the TUN"
    )
    si.add_argument("--metrics", metavar="ADDR:PORT", help="serve Prometheus metrics")
    si.add_argument(
        "--decrement-ttl",
        action="store_true",
        help="decrement TTL/Hop Limit here too (TAYGA/Jool: two hops in traceroute); "
        "default: copy it, the kernel decrements on the way into and out of the TUN",
    )
    si.add_argument(
        "--icmp-ratelimit-ms",
        type=int,
        metavar="MS",
        help="own ICMP errors per source: one per MS after a burst (default 1000; 0 = off)",
    )
    si.add_argument("--icmp-ratelimit-burst", type=int, metavar="N", help="(default 6)")
    si.add_argument(
        "--icmp-msgs-per-sec",
        type=int,
        metavar="N",
        help="own ICMP errors in all, shared out among the workers (default 1000; 0 = off)",
    )
    si.add_argument("--icmp-msgs-burst", type=int, metavar="N", help="(default 50)")
    _service_flags(si, "siit")
    si.set_defaults(func=cmd_siit)

    pl = sub.add_parser("plat", help="run a stateful NAT64 (SIIT + nftables NAPT66)")
    pl.add_argument("--config", required=True, help="TOML configuration file")
    _service_flags(pl, "plat")
    pl.set_defaults(func=cmd_plat)

    cl = sub.add_parser(
        "clat",
        help="the client side of 464XLAT (RFC 6877): IPv4 for an IPv6-only host",
        description="v6mostly clat --interface IF [...] runs the CLAT; "
        "v6mostly clat status [IF] shows what a running one does",
    )
    cl.add_argument("action", nargs="?", choices=["status"], help="show the running CLAT(s)")
    cl.add_argument("target", nargs="?", help="with status: the uplink interface")
    cl.add_argument("--interface", help="the uplink (IPv6) interface")
    cl.add_argument("--config", help="clat.toml")
    cl.add_argument("--pref64", help="pin the Pref64 (default: RA PREF64, else ipv4only.arpa)")
    cl.add_argument("--tun", default="clat0", help="TUN device name (default clat0)")
    cl.add_argument("--address", help="the CLAT's IPv6 address (default: derived, see docs)")
    cl.add_argument("--dns", help="resolver for ipv4only.arpa (default: the system's)")
    cl.add_argument("--metrics", metavar="ADDR:PORT", help="serve Prometheus metrics")
    cl.add_argument("--state-dir", default="/run/v6mostly", help=argparse.SUPPRESS)
    cl.add_argument("--dry-run", action="store_true", help="print what would be set up, exit")
    cl.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    cl.set_defaults(func=cmd_clat)

    from .control import default_path

    for name, text in (
        ("router", "DHCPv4 (option 108), RAs (PREF64) and ipv4only.arpa DNS, from one site config"),
        ("dhcp4", "only the DHCPv4 server of the site config"),
        ("ra", "only the Router Advertisements of the site config"),
        ("dns", "only the ipv4only.arpa / DNS64 responder of the site config"),
    ):
        rp = sub.add_parser(name, help=text)
        rp.add_argument("--config", required=True, help="site TOML file")
        rp.add_argument("--dry-run", action="store_true", help="print what would be served, exit")
        rp.add_argument("-v", "--verbose", action="store_true", help="debug logging")
        rp.add_argument(
            "--control-socket",
            default=default_path(name),
            metavar="PATH",
            help=f"for v6mostly ctl (default {default_path(name)}; '' = none)",
        )
        rp.set_defaults(func=cmd_router)

    from .ctl import add_parser as add_ctl_parser

    add_ctl_parser(sub)
    from .services.ecmp import add_parser as add_ecmp_parser

    add_ecmp_parser(sub).set_defaults(func=cmd_ecmp)
    from .lab.cli import add_lab_parser

    add_lab_parser(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        rc: int = args.func(args)
    except V6mostlyError as e:
        print(f"v6mostly: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        return 0
    return rc


if __name__ == "__main__":
    sys.exit(main())
