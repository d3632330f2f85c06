"""bird2 configurations for several PLATs behind ECMP (issue 12): v6mostly never
speaks BGP itself, it writes bird's configuration and bird does the sessions.

* :func:`render_plat` — a PLAT: announces the Pref64 downstream (to the ECMP
  router) and the outer IPv4 /32s upstream, its own plainly and its peers'
  prepended, so every PLAT can take over any peer's return traffic.
* :func:`render_core` — the ECMP router (lab and docs): learns the Pref64 from
  every PLAT into a kernel table that ``v6mostly ecmp`` watches.
* :func:`render_edge` — the IPv4 side (lab): learns the /32s into the main table.

The renderers are pure and deterministic (same input, same text); :func:`check`
asks ``bird -p`` whether a written file parses.

The announced routes are static device routes ``via "TUN"``: bird withdraws them
when the TUN goes away with the PLAT. They are tagged with the PREVENT_KERNEL
community so the kernel protocols never install them (v6mostly routes into the TUN
itself), and the tag is stripped before any BGP export.
"""

from __future__ import annotations

import ipaddress
import shutil
import subprocess
from collections.abc import Iterable, Sequence

from .config import HaSettings

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
#: A BGP neighbour of the core/edge: (address, its AS number, interface or None).
Neighbor = tuple[Address | str, int, str | None]

#: Our own standard community (private AS range) on the routes bird must not
#: install into the kernel.
PREVENT_KERNEL = (64512, 666)

BFD_MULTIPLIER = 3
NOT_INSTALLED = "bird: not installed (Debian package bird2)"


def render_plat(ha: HaSettings, tun: str, own_plain: bool = True) -> str:
    """bird.conf of a PLAT whose translator's TUN is ``tun``.

    ``own_plain=False`` (a PLAT coming back, until conntrackd has brought back the
    bindings its peers hold for it): the Pref64 is not announced downstream yet, and our
    own /32s are announced with one prepend more than a peer's, so the upstream keeps
    sending their replies to the peer meanwhile."""
    own = [f"{o.ipv4}/32" for o in ha.own_outer]
    peers = [f"{o.ipv4}/32" for o in ha.peer_outer()]
    out = _head("this PLAT", "plat.toml", ha.router_id)
    out += [
        f"# Routes bird must not install into the kernel: v6mostly routes into {tun} itself.",
        f"define PREVENT_KERNEL = ({PREVENT_KERNEL[0]}, {PREVENT_KERNEL[1]});",
        "",
    ]
    out += _device()
    out += _bfd_protocol(ha.bfd_interval_ms, any(s.bfd for s in ha.bgp))
    out += [
        "# Withdrawn by bird when the TUN goes away (a device route lives while its link is up).",
        "protocol static plat6 {",
        "\tipv6 { import filter { bgp_community.add(PREVENT_KERNEL); accept; }; };",
        f'\troute {ha.pref64} via "{tun}";',
        "}",
        "",
        "protocol static plat4 {",
        "\tipv4 { import filter { bgp_community.add(PREVENT_KERNEL); accept; }; };",
    ]
    out += [f'\troute {n} via "{tun}";' for n in own + peers]
    out += ["}", ""]
    out += _kernel("kernel6", "ipv6", None, merge=False)
    out += _kernel("kernel4", "ipv4", None, merge=False)
    out += [
        "# Downstream (toward the ECMP router): the Pref64, nothing else.",
        "filter downstream_export {",
    ]
    if own_plain:
        out += [
            f'\tif proto = "plat6" && net = {ha.pref64} then {{',
            "\t\tbgp_community.delete(PREVENT_KERNEL);",
            "\t\taccept;",
            "\t}",
        ]
    else:
        out.append("\t# coming back: not before the peers' bindings are here (conntrackd)")
    out += [
        "\treject;",
        "}",
        "",
        "# Upstream (toward the IPv4 side): our outer /32s plainly, the peers'",
        f"# prepended {ha.prepend} times: their owner is preferred while it is up.",
        "filter upstream_export {",
        '\tif proto != "plat4" then reject;',
        "\tbgp_community.delete(PREVENT_KERNEL);",
    ]
    if own_plain:
        out.append(f"\tif net ~ {_set(own)} then accept;")
    else:
        out.append(f"\tif net ~ {_set(own)} then {{")
        out += [f"\t\tbgp_path.prepend({ha.asn});"] * (ha.prepend + 1)
        out += ["\t\taccept;", "\t}"]
    if peers:
        out.append(f"\tif net ~ {_set(peers)} then {{")
        out += [f"\t\tbgp_path.prepend({ha.asn});"] * ha.prepend
        out += ["\t\taccept;", "\t}"]
    out += ["\treject;", "}", ""]
    inside = _set([f"{n}+" for n in ha.inside])
    counter = {"downstream": 0, "upstream": 0}
    for s in ha.bgp:
        counter[s.role] += 1
        name = f"{s.role}{counter[s.role]}"
        channel = "ipv6" if s.role == "downstream" else "ipv4"
        # downstream: only routes to the clients (the inside prefixes); upstream: all
        imp = f"import where net ~ {inside};" if s.role == "downstream" else "import all;"
        out += _bgp(
            name,
            f"{s.role} {s.neighbor}",
            ha.asn,
            (s.neighbor, s.asn, s.interface),
            s.bfd,
            f"{channel} {{ {imp} export filter {s.role}_export; }};",
        )
    return _text(out)


def render_core(
    router_id: Address | str,
    asn: int,
    neighbors: Sequence[Neighbor],
    learn_table: int,
    bfd: bool,
    bfd_interval_ms: int,
) -> str:
    """bird.conf of the ECMP router: the PLATs' Pref64 routes, merged into one
    multipath route, go to kernel table ``learn_table`` (``v6mostly ecmp`` reads it)."""
    return _router("the ECMP router", ("learn6", 6, learn_table), router_id, asn, neighbors,
                   bfd, bfd_interval_ms)  # fmt: skip


def render_edge(
    router_id: Address | str,
    asn: int,
    neighbors: Sequence[Neighbor],
    bfd: bool,
    bfd_interval_ms: int,
) -> str:
    """bird.conf of the IPv4 side: the PLATs' outer /32s into the main table."""
    return _router("the IPv4 edge router", ("kernel4", 4, None), router_id, asn, neighbors,
                   bfd, bfd_interval_ms)  # fmt: skip


def _router(
    what: str,
    kernel: tuple[str, int, int | None],
    router_id: Address | str,
    asn: int,
    neighbors: Sequence[Neighbor],
    bfd: bool,
    bfd_interval_ms: int,
) -> str:
    """A router that learns from the PLATs: BGP to each, the routes into a kernel table."""
    name, version, table = kernel
    out = _head(what, "the PLATs' settings", router_id)
    out += _device()
    out += _bfd_protocol(bfd_interval_ms, bfd and bool(neighbors))
    out += _kernel(name, f"ipv{version}", table, merge=True)
    channel = f"ipv{version} {{ import all; export none; }};"
    for i, n in enumerate(_checked(neighbors, version), 1):
        out += _bgp(f"plat{i}", f"PLAT {n[0]}", asn, n, bfd, channel)
    return _text(out)


def check(path: str) -> str | None:
    """``bird -p -c PATH``: None if bird accepts the file, else its one-line error."""
    exe = shutil.which("bird") or shutil.which("bird", path="/usr/sbin:/sbin")
    if exe is None:
        return NOT_INSTALLED
    try:
        done = subprocess.run(
            [exe, "-p", "-c", path], capture_output=True, text=True, timeout=30, check=False
        )
    except OSError as e:
        return f"bird: cannot run {exe}: {e.strerror}"
    except subprocess.TimeoutExpired:
        return f"bird: {exe} -p -c {path} did not finish in 30 s"
    if done.returncode == 0:
        return None
    lines = [x.strip() for x in (done.stderr + "\n" + done.stdout).splitlines() if x.strip()]
    return lines[0] if lines else f"bird: {path}: rejected (exit status {done.returncode})"


# -- the pieces ---------------------------------------------------------------------


def _head(what: str, source: str, router_id: Address | str) -> list[str]:
    return [
        f"# bird2 configuration of {what}: generated by v6mostly from {source}.",
        f"# Do not edit: v6mostly will overwrite this file (change {source} instead).",
        "",
        "log stderr { info, remote, warning, error, auth, fatal, bug };",
        f"router id {ipaddress.IPv4Address(str(router_id))};",
        "",
    ]


def _device() -> list[str]:
    return [
        "# Interface state: the static device routes follow their link.",
        "protocol device {",
        "}",
        "",
    ]


def _bfd_protocol(interval_ms: int, wanted: bool) -> list[str]:
    if not wanted:
        return []
    return [
        f"# BFD for the sessions with bfd on: down after {BFD_MULTIPLIER} x {interval_ms} ms.",
        "protocol bfd {",
        '\tinterface "*" {',
        f"\t\tmin rx interval {interval_ms} ms;",
        f"\t\tmin tx interval {interval_ms} ms;",
        f"\t\tmultiplier {BFD_MULTIPLIER};",
        "\t};",
        "}",
        "",
    ]


def _kernel(name: str, channel: str, table: int | None, *, merge: bool) -> list[str]:
    out = [f"protocol kernel {name} {{"]
    if table is not None:
        out.append(f"\tkernel table {table};")
    if merge:
        out.append("\tmerge paths on;")
    out += [
        f"\t{channel} {{",
        "\t\timport none;",
        "\t\texport filter {",
    ]
    if merge:  # the core and the edge: the routes learned from the PLATs
        out.append("\t\t\tif source != RTS_BGP then reject;")
    else:  # the PLAT: v6mostly routes its announced prefixes into the TUN itself
        out.append("\t\t\tif PREVENT_KERNEL ~ bgp_community then reject;")
    out += ["\t\t\taccept;", "\t\t};", "\t};", "}", ""]
    return out


def _bgp(name: str, description: str, asn: int, n: Neighbor, bfd: bool, channel: str) -> list[str]:
    address, peer_asn, interface = n
    out = [
        f"protocol bgp {name} {{",
        f'\tdescription "{description}";',
        f"\tlocal as {asn};",
        f"\tneighbor {ipaddress.ip_address(str(address))} as {peer_asn};",
    ]
    if interface:
        out.append(f'\tinterface "{interface}";')
    if bfd:
        out.append("\tbfd on;")
    # bird waits 120 s (connect retry) and 60-300 s (after an error) by default before it
    # tries again: a PLAT that comes back would sit out minutes. Seconds here.
    out += [
        "\tconnect delay time 1;",
        "\tconnect retry time 5;",
        "\terror wait time 1, 10;",
        "\terror forget time 30;",
    ]
    out += [f"\t{channel}", "}", ""]
    return out


def _checked(neighbors: Iterable[Neighbor], version: int) -> list[Neighbor]:
    out: list[Neighbor] = []
    for address, asn, interface in neighbors:
        a = ipaddress.ip_address(str(address))
        if a.version != version:
            raise ValueError(f"neighbor {a}: expected an IPv{version} address")
        if a.is_link_local and not interface:
            raise ValueError(f"neighbor {a}: a link-local neighbor needs an interface")
        out.append((a, asn, interface))
    return out


def _set(nets: Sequence[str]) -> str:
    return "[ " + ", ".join(nets) + " ]"


def _text(lines: list[str]) -> str:
    while lines and lines[-1] == "":
        lines.pop()
    return "\n".join(lines) + "\n"
