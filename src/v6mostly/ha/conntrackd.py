"""conntrackd's configuration for several PLATs behind ECMP (issue 12).

Every PLAT source-translates its inside hosts to its OWN outer address
(``snat ip6 to [outer6]:ports``), so the NAPT66 entries of two PLATs never collide. When
ECMP moves a flow to another PLAT (a PLAT fails, a member is added), that PLAT needs the
entry to keep the ``[outer6]:port`` of the flow: conntrackd sends every NAPT66 entry over
the dedicated sync link and the receivers inject it straight into their KERNEL table
(``DisableExternalCache On``: no user-space cache to commit on failover, ECMP gives no
failover signal anyway). With one peer: FTFW (acknowledged, resent on loss) over UDP
unicast; with more: NOTRACK over multicast (conntrackd has no unicast mesh, and its FTFW
receiver drops one of two interleaved senders, see ``_mode``). The peers' outer /32s are
announced with a longer AS path (bird2), so the replies reach the PLAT that now has the
entry.

What is replicated (conntrackd 1.4.7's filters know only Protocol, Address and TCP
State, not ct mark nor ports): TCP and UDP entries whose original source or reply source
is in an inside prefix, i.e. the NAPT66 flows; IPv4 never (the IPv4 side is notrack, the
filter has only IPv6 prefixes). The UDP one-shot flows (DNS, NTP) must not be: the
PLAT's nft rule for them sets ``ct event set 0x0``, so the kernel never reports them to
conntrackd (see ``ONESHOT_NFT``).

v6mostly runs conntrackd as a child in the foreground (``argv``): with ``LogFile off`` it
logs to its stdout; an error in the file goes to stderr (exit status 1).
"""

from __future__ import annotations

import re
import shutil

from v6mostly.errors import ConfigError
from v6mostly.ha.config import HaSettings

SYNC_PORT = 3780  # conntrackd's UDP port / multicast "Group" (its documented default)
MCAST6_GROUP = "ff02::6466"  # link-local scope: the sync link is one segment
MCAST4_GROUP = "225.0.0.50"  # conntrackd's documented default group
SOCKET_BUFFER = 4194304  # sync socket send/receive buffers (bytes)
NETLINK_BUFFER = 4194304  # ctnetlink event socket buffer (bytes) ...
NETLINK_BUFFER_MAX = 16777216  # ... which conntrackd may double up to this
HASH_SIZE = 65536  # buckets of conntrackd's internal cache
HASH_LIMIT = 524288  # entries: at least twice net.netfilter.nf_conntrack_max
RESEND_QUEUE = 131072  # FTFW: messages kept until the peers acknowledge them
ACK_WINDOW = 300  # FTFW: acknowledgement window (conntrackd's default)
BULK_INTERVAL_S = 60  # under nf_conntrack_udp_timeout_stream (120 s): see bulk_argv
CT_MARK = 0x6466  # the ct mark the PLAT sets on NAPT66 flows (replicated with them)
# the nft statements the PLAT adds to its UDP one-shot rule so conntrackd never hears of it
ONESHOT_NFT = "ct event set 0x0"

# conntrackd's lexer: a name is [a-zA-Z][a-zA-Z0-9.]*, a path /[^"\n ]*
_IFNAME = re.compile(r"[A-Za-z][A-Za-z0-9.]{0,14}")
_PATH = re.compile(r'/[^"\n ]*')
_SUN_PATH_MAX = 107  # sockaddr_un.sun_path minus the terminating NUL
_FILENAME_MAX = 255  # conntrackd's FILENAME_MAXLEN minus the NUL


def check_installed() -> str | None:
    """None when conntrackd can be run, else the one-line reason."""
    if shutil.which("conntrackd") is None:
        return "conntrackd: not installed (Debian package conntrackd)"
    return None


def argv(ha: HaSettings) -> list[str]:
    """The command that runs conntrackd in the foreground with ``render(ha)``'s file."""
    _path("conntrackd_config", ha.conntrackd_config, _FILENAME_MAX)
    return ["conntrackd", "-C", ha.conntrackd_config]


def bulk_argv(ha: HaSettings) -> list[str]:
    """The command that re-sends every entry of this PLAT to the peers (``-B``), to run
    every ``BULK_INTERVAL_S``: the kernel reports a flow only when its state changes, not
    when a packet refreshes its timer, so the peers' copy of an active UDP flow would
    expire after the UDP timeout (120 s) without it. The copy gets the timeout of the
    flow's last event again (measured: the peer's timer goes back up)."""
    return [*argv(ha), "-B"]


def _path(key: str, value: str, limit: int) -> str:
    if not _PATH.fullmatch(value) or len(value) > limit:
        raise ConfigError(
            f"[ha] {key} = {value!r}: conntrackd needs an absolute path without spaces "
            f"or quotes, at most {limit} characters"
        )
    return value


def _check(ha: HaSettings) -> None:
    if not _IFNAME.fullmatch(ha.sync_interface):
        raise ConfigError(
            f"[ha] sync_interface = {ha.sync_interface!r}: conntrackd accepts only "
            "interface names of letters, digits and dots starting with a letter"
        )
    if not ha.peers:
        raise ConfigError("[ha] peer: conntrackd needs at least one [[ha.peer]]")
    for peer in ha.peers:
        if peer.sync_address.version != ha.sync_address.version:
            raise ConfigError(
                f"[[ha.peer]] {peer.name} sync_address = {peer.sync_address}: must be "
                f"IPv{ha.sync_address.version} like [ha] sync_address = {ha.sync_address}"
            )
        if peer.sync_address == ha.sync_address:
            raise ConfigError(
                f"[[ha.peer]] {peer.name} sync_address = {peer.sync_address}: is this "
                "PLAT's own [ha] sync_address"
            )
    if not ha.inside:
        raise ConfigError("[napt66] inside: empty, conntrackd would replicate nothing")
    _path("conntrackd_socket", ha.conntrackd_socket, _SUN_PATH_MAX)
    _path("conntrackd_lock", ha.conntrackd_lock, _FILENAME_MAX)


def _channel(ha: HaSettings) -> list[str]:
    v = ha.sync_address.version
    buffers = [
        f"        SndSocketBuffer {SOCKET_BUFFER}",
        f"        RcvSocketBuffer {SOCKET_BUFFER}",
        "        Checksum on",
        "    }",
    ]
    if len(ha.peers) == 1:
        peer = ha.peers[0]
        return [
            f"    # exactly one peer ({peer.name}): UDP unicast on the sync link",
            "    UDP {",
            f"        IPv{v}_address {ha.sync_address}",
            f"        IPv{v}_Destination_Address {peer.sync_address}",
            f"        Port {SYNC_PORT}",
            f"        Interface {ha.sync_interface}",
            *buffers,
        ]
    names = ", ".join(p.name for p in ha.peers)
    lines = [
        f"    # {len(ha.peers)} peers ({names}): multicast on the sync link, because",
        "    # conntrackd has no unicast mesh (a UDP channel has one destination; more",
        "    # channels are fail-over links, only one of them is active at a time)",
        "    Multicast {",
    ]
    if v == 6:
        # the group before Interface: conntrackd takes the interface index only then
        lines.append(f"        IPv6_address {MCAST6_GROUP}")
    else:
        lines += [
            f"        IPv4_address {MCAST4_GROUP}",
            f"        IPv4_interface {ha.sync_address}",
        ]
    return [
        *lines,
        f"        Group {SYNC_PORT}",
        f"        Interface {ha.sync_interface}",
        *buffers,
    ]


def _mode(ha: HaSettings) -> list[str]:
    common = [
        "        # inject what the peers send into the kernel table at once: there is no",
        "        # failover event to commit a user-space cache on (ECMP moves flows silently)",
        "        DisableExternalCache On",
        "        # after a (re)start, ask the peers for their entries",
        "        StartupResync On",
    ]
    if len(ha.peers) == 1:
        return [
            "    # one peer: FTFW, acknowledged and resent on loss",
            "    Mode FTFW {",
            *common,
            f"        ResendQueueSize {RESEND_QUEUE}",
            f"        ACKWindowSize {ACK_WINDOW}",
            "    }",
        ]
    return [
        "    # several peers: NOTRACK. An FTFW receiver keeps ONE sequence number for the",
        "    # channel and drops what looks delayed, so of two other senders on the group",
        "    # it keeps only one (measured with 1.4.7: each of three PLATs got the entries",
        "    # of one other only). NOTRACK takes every message; it does not resend a lost",
        "    # one (the flow is sent again at its next state change).",
        "    Mode NOTRACK {",
        *common,
        "    }",
    ]


def render(ha: HaSettings) -> str:
    """conntrackd.conf for this PLAT (the text of ``ha.conntrackd_config``)."""
    _check(ha)
    ports = ", ".join(str(p) for p in ha.udp_oneshot_ports) or "none"
    inside = [f"            IPv6_address {p}" for p in ha.inside]
    lines = [
        f"# conntrackd configuration of PLAT {ha.node}, written by v6mostly from plat.toml",
        "# [ha]: v6mostly rewrites it, do not edit.",
        "#",
        "# The NAPT66 entries (IPv6 TCP and UDP from the inside prefixes) go to the other",
        "# PLATs over the sync link, which inject them straight into their kernel table, so",
        "# a flow that ECMP moves to another PLAT keeps its [outer6]:port. conntrackd 1.4.7",
        "# cannot filter on the ct mark 0x6466 (its filters: Protocol, Address, State): the",
        f"# UDP one-shot flows (ports {ports}) stay out because the PLAT sets their",
        f"# conntrack event mask to none ({ONESHOT_NFT}); IPv4 is notrack.",
        "Sync {",
        *_mode(ha),
        *_channel(ha),
        "    Options {",
        "        # injected TCP entries are liberal: the window of a flow that moved is unknown",
        "        TCPWindowTracking Off",
        "    }",
        "}",
        "",
        "General {",
        "    # v6mostly runs conntrackd in the foreground: it logs to stdout",
        "    Systemd off",
        "    LogFile off",
        "    Syslog off",
        f"    LockFile {_path('conntrackd_lock', ha.conntrackd_lock, _FILENAME_MAX)}",
        "    UNIX {",
        f"        Path {_path('conntrackd_socket', ha.conntrackd_socket, _SUN_PATH_MAX)}",
        "    }",
        f"    HashSize {HASH_SIZE}",
        f"    HashLimit {HASH_LIMIT}",
        f"    NetlinkBufferSize {NETLINK_BUFFER}",
        f"    NetlinkBufferSizeMaxGrowth {NETLINK_BUFFER_MAX}",
        "    # reliable events: the kernel re-sends an event it could not deliver instead of",
        "    # losing it, so no full resync after a socket overrun",
        "    NetlinkEventsReliable On",
        "    NetlinkOverrunResync Off",
        "    # user space: applies to events and to the dumps of a resync alike",
        "    Filter From Userspace {",
        "        Protocol Accept {",
        "            TCP",
        "            UDP",
        "        }",
        "        # original or reply source in an inside prefix: the NAPT66 flows, IPv6 only",
        "        Address Accept {",
        *inside,
        "        }",
        "    }",
        "}",
    ]
    return "\n".join(lines) + "\n"
