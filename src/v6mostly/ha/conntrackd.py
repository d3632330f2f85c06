"""conntrackd's configuration for several PLATs behind ECMP (issue 12).

Every PLAT source-translates its inside hosts to its OWN outer address
(``snat ip6 to [outer6]:ports``), so the NAPT66 entries of two PLATs never collide. When
ECMP moves a flow to another PLAT (a PLAT fails, a member is added), that PLAT needs the
entry to keep the ``[outer6]:port`` of the flow: conntrackd sends every NAPT66 entry over
the dedicated sync link and the receivers inject it straight into their KERNEL table
(``DisableExternalCache On``: no user-space cache to commit on failover, ECMP gives no
failover signal anyway). The peers' outer /32s are announced with a longer AS path
(bird2), so the replies reach the PLAT that now has the entry.

Mode NOTRACK with ``DisableInternalCache On``, over UDP unicast with one peer and over
multicast with more (see ``_mode``): a PLAT that comes back (restarted, empty table) asks
the peers for a resync, and a peer without an internal cache answers with a dump of its
KERNEL table, i.e. its own entries AND the copies it injected from the returning PLAT
(measured with 1.4.7: 8 of 8 entries; with the internal cache the answer held only the
peer's own 3). The returning PLAT must get those copies back before it announces its
outer /32 plainly again, or the replies of the flows that moved come back to a PLAT
without their entries: ``resync_argv`` asks, ``parse_stats`` + ``ResyncWait`` tell when
the answer has arrived.

The price of no internal cache (measured with 1.4.7): the event messages wait in the
channel's send buffer until the next flush, which NOTRACK does once a second (its alive
message): a new flow reaches the peers 0.3-0.8 s after its SYN instead of ~20 ms, so a
flow younger than that dies with its PLAT. ``-B`` and the resync answer are dumps of the
kernel table: they carry the remaining time of each entry (a copy is as fresh as the
last dump), the peers' copies of this PLAT's flows (received entries REPLACE live ones:
delete and create), and the UDP one-shot entries (the event mask keeps them out of the
events only).

What is replicated (conntrackd 1.4.7's filters know only Protocol, Address and TCP
State, not ct mark nor ports): TCP and UDP entries whose original source or reply source
is in an inside prefix, i.e. the NAPT66 flows; IPv4 never (the IPv4 side is notrack, the
filter has only IPv6 prefixes). The filter applies to the events and to the kernel dumps
(``-B``, the resync answer) alike (measured: an IPv6 entry outside the inside prefixes
and an IPv4 entry stayed out of the resync). The UDP one-shot flows (DNS, NTP) stay out
of the events: the PLAT's nft rule for them sets ``ct event set 0x0``, so the kernel
never reports them to conntrackd (see ``ONESHOT_NFT``); the dumps still carry them.

v6mostly runs conntrackd as a child in the foreground (``argv``): with ``LogFile off`` it
logs to its stdout; an error in the file goes to stderr (exit status 1).
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass

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
# ResyncWait: the answer to a resync request is a burst (measured: 8 entries 0.3 s after
# the start); it is over when a RESYNC_QUIET_S window adds at most RESYNC_SLACK of what
# came since the request (the peers' live events go on meanwhile), or when nothing came at
# all for RESYNC_FIRST_S (no peer, or peers without entries); never longer than the limit
RESYNC_QUIET_S = 1.0
RESYNC_SLACK = 0.05
RESYNC_FIRST_S = 3.0
RESYNC_LIMIT_S = 30.0
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


def resync_argv(ha: HaSettings) -> list[str]:
    """The command that asks the peers for all their entries (``-n``): each answers with a
    dump of its kernel table (no internal cache), the copies of this PLAT's flows
    included. ``StartupResync On`` asks once at start, on a sync link that may not be up
    yet, and NOTRACK does not repeat a lost request: run this once conntrackd answers on
    its socket, then wait with ``ResyncWait`` before announcing the outer /32s plainly."""
    return [*argv(ha), "-n"]


def stats_argv(ha: HaSettings) -> list[str]:
    """The command that prints conntrackd's counters (``-s``), for ``parse_stats``."""
    return [*argv(ha), "-s"]


_STAT = re.compile(r"connections (created|updated|destroyed):\s+(\d+)\s+failed:\s+(\d+)")
_LOST = re.compile(r"(\d+) Malformed msgs\s+(\d+) Lost msgs")


@dataclass(frozen=True)
class SyncStats:
    """What ``conntrackd -s`` says about the entries the peers sent (``external inject``)."""

    created: int = 0
    updated: int = 0
    destroyed: int = 0
    failed: int = 0  # injections the kernel refused (all three kinds)
    lost: int = 0  # messages missing in the sequence (NOTRACK does not resend them)
    malformed: int = 0

    @property
    def injected(self) -> int:
        """Every message from a peer that reached the kernel table, refused ones included."""
        return self.created + self.updated + self.destroyed + self.failed


def parse_stats(text: str) -> SyncStats | None:
    """``conntrackd -s`` output as ``SyncStats``; None when it has no ``external inject``
    block (not a NOTRACK/FTFW daemon with DisableExternalCache On)."""
    found = {k: (int(ok), int(bad)) for k, ok, bad in _STAT.findall(text)}
    if set(found) != {"created", "updated", "destroyed"}:
        return None
    lost = _LOST.search(text)
    return SyncStats(
        created=found["created"][0],
        updated=found["updated"][0],
        destroyed=found["destroyed"][0],
        failed=sum(bad for _, bad in found.values()),
        malformed=int(lost.group(1)) if lost else 0,
        lost=int(lost.group(2)) if lost else 0,
    )


class ResyncWait:
    """Whether the answer to a resync request has arrived, from ``SyncStats`` samples
    taken every ~0.1-0.2 s (there is no end-of-dump message): ``update(now, stats)`` is
    True once the burst is over (see ``RESYNC_QUIET_S``) or the limit has passed;
    ``timed_out`` then says which. ``base`` is the injected count before the request:
    0 for a conntrackd that has just started (its counters start at 0, so the answer to
    ``StartupResync`` counts too)."""

    def __init__(
        self,
        start: float,
        base: int = 0,
        quiet: float = RESYNC_QUIET_S,
        slack: float = RESYNC_SLACK,
        first: float = RESYNC_FIRST_S,
        limit: float = RESYNC_LIMIT_S,
    ) -> None:
        self.start = start
        self.base = base
        self.quiet, self.slack, self.first, self.limit = quiet, slack, first, limit
        self.samples: list[tuple[float, int]] = []
        self.timed_out = False

    @property
    def received(self) -> int:
        """How many messages were injected since the request."""
        return self.samples[-1][1] - self.base if self.samples else 0

    def update(self, now: float, stats: SyncStats | None) -> bool:
        if stats is not None:
            self.samples.append((now, stats.injected))
        if now - self.start >= self.limit:
            self.timed_out = True
            return True
        got = self.received
        if got <= 0:
            return bool(self.samples) and now - self.start >= self.first
        older = [n for t, n in self.samples if t <= now - self.quiet]
        if not older:
            return False  # the samples do not reach back a whole RESYNC_QUIET_S yet
        return self.samples[-1][1] - older[-1] <= self.slack * got


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


def _mode() -> list[str]:
    return [
        "    # NOTRACK: conntrackd 1.4.7 takes DisableInternalCache only in this mode (FTFW:",
        "    # syntax error). An FTFW receiver also keeps ONE sequence number for the",
        "    # channel and drops what looks delayed, so of two senders on a group it keeps",
        "    # only one. NOTRACK does not resend a lost message: the flow is sent again at",
        f"    # its next state change and with every bulk send (-B, every {BULK_INTERVAL_S} s).",
        "    Mode NOTRACK {",
        "        # inject what the peers send into the kernel table at once: there is no",
        "        # failover event to commit a user-space cache on (ECMP moves flows silently)",
        "        DisableExternalCache On",
        "        # no internal cache: a resync request and -B are answered from the KERNEL",
        "        # table, so a PLAT that comes back also gets the copies of its own flows",
        "        # that a peer injected (and carried while it was away)",
        "        DisableInternalCache On",
        "        # after a (re)start, ask the peers for their entries",
        "        StartupResync On",
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
        *_mode(),
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
