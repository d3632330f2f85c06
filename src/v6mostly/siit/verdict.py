"""Every packet's fate: a verdict, with a counter.

Following Jool's design, a packet is translated, answered with an ICMP error
(which is itself a packet to send), or dropped with a reason. The core never
raises on packet input. Counters are flat lists of ints indexed by small
constants so that counting costs one list store on the fast path.
"""

from __future__ import annotations

from collections.abc import MutableSequence
from dataclasses import dataclass
from enum import IntEnum


class Drop(IntEnum):
    """Why a packet was not translated. Values index ``Stats.drops``."""

    MALFORMED = 0
    TRUNCATED = 1
    BAD_IPV4_HEADER_CHECKSUM = 2
    NOT_IP = 3
    UNTRANSLATABLE_SOURCE = 4
    UNTRANSLATABLE_DESTINATION = 5
    TTL_EXPIRED = 6
    UNTRANSLATABLE_ICMP_TYPE = 7
    ICMP_ERROR_IN_ICMP_ERROR = 8
    BAD_ICMP_CHECKSUM = 9
    FRAGMENTED_ICMP = 10
    UDP_ZERO_CHECKSUM_FRAGMENT = 11
    UDP_ZERO_CHECKSUM = 12
    PACKET_TOO_BIG = 13
    SOURCE_ROUTE = 14
    SEGMENTS_LEFT = 15
    EXTENSION_AFTER_FRAGMENT = 16
    JUMBOGRAM = 17
    MULTICAST = 18
    NO_TRANSLATOR_ADDRESS = 19
    HOP_BY_HOP_NOT_FIRST = 20
    #: RFC 1812 §5.3.7, RFC 3927 §7, RFC 6890: 0/8, 127/8, 169.254/16, 240/4
    #: (with 255.255.255.255) and, as a source, 224/4 are never forwarded.
    NOT_FORWARDABLE_SOURCE = 21
    NOT_FORWARDABLE_DESTINATION = 22
    #: Addressed to the translator's own address and not an echo request:
    #: answered as a host does (ICMP unreachable), never translated.
    TO_TRANSLATOR = 23
    #: The packet inside an ICMP error could not be translated (RFC 7915 §4.3/§5.3).
    INNER_UNTRANSLATABLE_SOURCE = 24
    INNER_UNTRANSLATABLE_DESTINATION = 25
    INNER_NOT_FORWARDABLE = 26
    INNER_MALFORMED = 27


DROP_NAMES = tuple(d.name.lower() for d in Drop)

#: Directions, index into the per-direction counters.
DIR_4TO6 = 0
DIR_6TO4 = 1
DIR_NAMES = ("4to6", "6to4")

#: Protocol classes for counters.
P_TCP = 0
P_UDP = 1
P_ICMP = 2
P_OTHER = 3
PROTO_NAMES = ("tcp", "udp", "icmp", "other")

#: Fast-path return codes (in place of an output start offset).
SLOW = -1  #: the outputs are in ``Translator.pending``
DROPPED = -2  #: the packet was dropped; the second value is the ``Drop`` reason


class Stats:
    """Counters of one translator. ``merge`` adds another's (multi-worker totals).

    The counters are slices of one flat sequence of ``Stats.SIZE`` integers.
    By default that is a private list; a process-based data plane passes a
    ``memoryview`` over shared memory instead (``backing``), so workers count
    straight into memory the supervisor reads, with no copying or messages.
    """

    N_DROPS = len(Drop)
    #: ``misc``: fragments out, hairpinned, ICMP errors suppressed by the rate
    #: limit, echo replies and errors answered for the translator's own address.
    N_MISC = 4
    SIZE = 8 + 8 + N_DROPS + 2 + N_MISC

    def __init__(self, backing: MutableSequence[int] | None = None) -> None:
        nd = self.N_DROPS
        if backing is None:
            self.packets: MutableSequence[int] = [0] * 8
            self.octets: MutableSequence[int] = [0] * 8
            self.drops: MutableSequence[int] = [0] * nd
            self.icmp_errors: MutableSequence[int] = [0, 0]  # generated, per family 4/6
            self.misc: MutableSequence[int] = [0] * self.N_MISC
            return
        if len(backing) < self.SIZE:
            raise ValueError(f"Stats backing needs {self.SIZE} counters")
        self.packets = backing[0:8]
        self.octets = backing[8:16]
        self.drops = backing[16 : 16 + nd]
        self.icmp_errors = backing[16 + nd : 18 + nd]
        self.misc = backing[18 + nd : 18 + nd + self.N_MISC]

    @property
    def fragments_out(self) -> int:
        return self.misc[0]

    @fragments_out.setter
    def fragments_out(self, value: int) -> None:
        self.misc[0] = value

    @property
    def hairpinned(self) -> int:
        return self.misc[1]

    @hairpinned.setter
    def hairpinned(self, value: int) -> None:
        self.misc[1] = value

    @property
    def icmp_errors_suppressed(self) -> int:
        """ICMP errors the translator would have sent but the rate limit held back."""
        return self.misc[2]

    @icmp_errors_suppressed.setter
    def icmp_errors_suppressed(self, value: int) -> None:
        self.misc[2] = value

    @property
    def local_replies(self) -> int:
        """Packets to the translator's own addresses answered by the translator itself."""
        return self.misc[3]

    @local_replies.setter
    def local_replies(self, value: int) -> None:
        self.misc[3] = value

    def merge(self, other: Stats) -> None:
        for mine, theirs in (
            (self.packets, other.packets),
            (self.octets, other.octets),
            (self.drops, other.drops),
            (self.icmp_errors, other.icmp_errors),
            (self.misc, other.misc),
        ):
            for i, v in enumerate(theirs):
                mine[i] += v

    def as_dict(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for d, dn in enumerate(DIR_NAMES):
            for p, pn in enumerate(PROTO_NAMES):
                out[f"packets_{dn}_{pn}"] = self.packets[d * 4 + p]
                out[f"octets_{dn}_{pn}"] = self.octets[d * 4 + p]
        for i, n in enumerate(DROP_NAMES):
            out[f"drop_{n}"] = self.drops[i]
        out["icmpv4_errors_generated"] = self.icmp_errors[0]
        out["icmpv6_errors_generated"] = self.icmp_errors[1]
        out["fragments_out"] = self.fragments_out
        out["hairpinned"] = self.hairpinned
        out["icmp_errors_suppressed"] = self.icmp_errors_suppressed
        out["local_replies"] = self.local_replies
        return out

    def total_drops(self) -> int:
        return sum(self.drops)


@dataclass
class Verdict:
    """The result of :meth:`Translator.translate` (the convenient, allocating API)."""

    packets: list[bytes]
    drop: Drop | None = None
    icmp_error: bool = False

    @property
    def dropped(self) -> bool:
        return self.drop is not None
