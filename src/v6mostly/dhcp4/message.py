"""DHCPv4 messages (RFC 2131 §2) and their options (RFC 2132), both ways.

Theory of operation
-------------------
``Message.from_wire`` parses strictly: a message that is too short, has no
magic cookie, an option running past the end, or a bad length for an option
whose length is fixed raises :class:`DhcpError` (the one exception family);
nothing else escapes (the fuzz test holds it to that). Options are kept in
order in a dict ``code -> bytes``; long options split in pieces are joined
(RFC 3396) and option overload (52) is honoured. ``to_wire`` splits long
values again, puts the Relay Agent Information option (82) last as RFC 3046
§2.1 asks, and pads to the 300-byte BOOTP minimum.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass, field
from enum import IntEnum
from functools import cached_property

from ..errors import V6mostlyError
from ..wire.dnsname import encode_names


class DhcpError(V6mostlyError):
    """A malformed DHCPv4 message."""


class MessageType(IntEnum):
    """Option 53 (RFC 2132 §9.6); unknown values are kept as plain ints."""

    DISCOVER = 1
    OFFER = 2
    REQUEST = 3
    DECLINE = 4
    ACK = 5
    NAK = 6
    RELEASE = 7
    INFORM = 8


class Opt(IntEnum):
    PAD = 0
    SUBNET_MASK = 1
    ROUTER = 3
    DNS = 6
    HOSTNAME = 12
    DOMAIN_NAME = 15
    BROADCAST = 28
    REQUESTED_IP = 50
    LEASE_TIME = 51
    OVERLOAD = 52
    MESSAGE_TYPE = 53
    SERVER_ID = 54
    PARAM_REQUEST = 55
    MESSAGE = 56
    MAX_SIZE = 57
    RENEWAL_TIME = 58
    REBINDING_TIME = 59
    VENDOR_CLASS = 60
    CLIENT_ID = 61
    RELAY_AGENT = 82
    AUTO_CONFIGURE = 116  # RFC 2563
    V6ONLY_PREFERRED = 108  # RFC 8925
    DOMAIN_SEARCH = 119
    END = 255


#: Options whose length is fixed (RFC 2132); anything else is rejected.
_FIXED_LEN: dict[int, int] = {
    Opt.SUBNET_MASK: 4,
    Opt.REQUESTED_IP: 4,
    Opt.LEASE_TIME: 4,
    Opt.OVERLOAD: 1,
    Opt.MESSAGE_TYPE: 1,
    Opt.SERVER_ID: 4,
    Opt.MAX_SIZE: 2,
    Opt.RENEWAL_TIME: 4,
    Opt.REBINDING_TIME: 4,
    Opt.AUTO_CONFIGURE: 1,
    Opt.V6ONLY_PREFERRED: 4,
}

MAGIC = b"\x63\x82\x53\x63"
BOOTREQUEST = 1
BOOTREPLY = 2
FLAG_BROADCAST = 0x8000
_FIXED = struct.Struct("!BBBBIHH4s4s4s4s16s")  # then sname[64], file[128]
HEADER_LEN = _FIXED.size + 192  # 236
_EMPTY_SNAME_FILE_MAGIC = bytes(192) + b"\x63\x82\x53\x63"
MIN_LEN = HEADER_LEN + 4
ZERO4 = b"\0\0\0\0"
_ZERO64 = bytes(64)
_ZERO128 = bytes(128)
_ZERO192 = bytes(192)


@dataclass
class Message:
    op: int = BOOTREQUEST
    htype: int = 1
    hlen: int = 6
    hops: int = 0
    xid: int = 0
    secs: int = 0
    flags: int = 0
    ciaddr: bytes = ZERO4
    yiaddr: bytes = ZERO4
    siaddr: bytes = ZERO4
    giaddr: bytes = ZERO4
    chaddr: bytes = bytes(16)
    sname: bytes = bytes(64)
    file: bytes = bytes(128)
    options: dict[int, bytes] = field(default_factory=dict)

    # -- convenience --------------------------------------------------------------

    @property
    def mac(self) -> bytes:
        return self.chaddr[: min(self.hlen, 16)]

    @property
    def mac_text(self) -> str:
        return self.mac.hex(":")

    @property
    def message_type(self) -> int | None:
        v = self.options.get(Opt.MESSAGE_TYPE)
        return v[0] if v else None

    def param_requests(self) -> bytes:
        return self.options.get(Opt.PARAM_REQUEST, b"")

    def ip_option(self, code: int) -> bytes | None:
        v = self.options.get(code)
        return v if v is not None and len(v) == 4 else None

    @cached_property
    def client_key(self) -> bytes:
        """Identity of the client: option 61 when present, else htype + chaddr (RFC 2131 §4.2).
        Derived once per message (the server asks for it at several steps)."""
        cid = self.options.get(Opt.CLIENT_ID)
        if cid:
            return b"\x01cid:" + cid
        return b"\x00hw:" + bytes([self.htype]) + self.mac

    def relay_agent(self) -> dict[int, bytes]:
        raw = self.options.get(Opt.RELAY_AGENT)
        return parse_suboptions(raw) if raw else {}

    # -- wire ---------------------------------------------------------------------

    @classmethod
    def from_wire(cls, data: bytes | bytearray | memoryview) -> Message:
        if not isinstance(data, bytes):
            data = bytes(data)
        if len(data) < MIN_LEN:
            raise DhcpError(f"message of {len(data)} bytes is shorter than {MIN_LEN}")
        f = _FIXED.unpack_from(data)
        if data[HEADER_LEN:MIN_LEN] != MAGIC:
            raise DhcpError("no DHCP magic cookie (RFC 2131 §3)")
        m = cls(*f)
        if data[44:236] != _ZERO192:
            m.sname = data[44:108]
            m.file = data[108:236]
        if m.op not in (BOOTREQUEST, BOOTREPLY):
            raise DhcpError(f"op {m.op}: expected 1 (BOOTREQUEST) or 2 (BOOTREPLY)")
        if m.hlen > 16:
            raise DhcpError(f"hlen {m.hlen} exceeds the 16-byte chaddr field")
        opts: dict[int, bytes] = {}
        _parse_options(data, MIN_LEN, len(data), opts)
        ov = opts.get(Opt.OVERLOAD)
        if ov is not None:
            if len(ov) != 1 or ov[0] not in (1, 2, 3):
                raise DhcpError("option 52 (overload): bad value")
            if ov[0] & 1:
                _parse_options(m.file, 0, len(m.file), opts)
            if ov[0] & 2:
                _parse_options(m.sname, 0, len(m.sname), opts)
        for code, v in opts.items():
            need = _FIXED_LEN.get(code)
            if need is not None and len(v) != need:
                raise DhcpError(f"option {code}: length {len(v)}, expected {need}")
        m.options = opts
        return m

    def to_wire(self) -> bytes:
        chaddr = self.chaddr if len(self.chaddr) == 16 else self.chaddr.ljust(16, b"\0")[:16]
        head = _FIXED.pack(
            self.op,
            self.htype,
            self.hlen,
            self.hops,
            self.xid,
            self.secs,
            self.flags,
            self.ciaddr,
            self.yiaddr,
            self.siaddr,
            self.giaddr,
            chaddr,
        )
        if self.sname == _ZERO64 and self.file == _ZERO128:
            parts = [head, _EMPTY_SNAME_FILE_MAGIC]
        else:
            parts = [
                head,
                self.sname.ljust(64, b"\0")[:64],
                self.file.ljust(128, b"\0")[:128],
                MAGIC,
            ]
        relay = None
        for code, value in self.options.items():
            n = len(value)
            if code == 82:
                relay = value
            elif n <= 255 and 0 < code < 255:
                parts.append(bytes((code, n)))
                parts.append(value)
            elif 0 < code < 255:
                _put(parts, code, value)
        if relay is not None:
            _put(parts, Opt.RELAY_AGENT, relay)  # RFC 3046 §2.1: last
        parts.append(b"\xff")
        out = b"".join(parts)
        if len(out) < 300:
            out += bytes(300 - len(out))
        return out


def _put(parts: list[bytes], code: int, value: bytes) -> None:
    n = len(value)
    if n <= 255:
        parts.append(bytes((code, n)))
        parts.append(value)
        return
    for i in range(0, n, 255):  # RFC 3396: split long options
        chunk = value[i : i + 255]
        parts.append(bytes((code, len(chunk))))
        parts.append(chunk)


def _parse_options(data: bytes, pos: int, end: int, opts: dict[int, bytes]) -> None:
    while pos < end:
        code = data[pos]
        if code == 0:  # PAD
            pos += 1
            continue
        if code == 255:  # END
            return
        if pos + 1 >= end:
            raise DhcpError(f"option {code} has no length byte")
        n = data[pos + 1]
        nxt = pos + 2 + n
        if nxt > end:
            raise DhcpError(f"option {code} (length {n}) runs past the end of the message")
        value = data[pos + 2 : nxt]
        old = opts.get(code)
        opts[code] = value if old is None else old + value  # RFC 3396: concatenate
        pos = nxt


def parse_suboptions(raw: bytes) -> dict[int, bytes]:
    """Sub-options of option 82 (RFC 3046 §2.0); malformed ones raise DhcpError."""
    out: dict[int, bytes] = {}
    pos = 0
    while pos < len(raw):
        if pos + 2 > len(raw):
            raise DhcpError("option 82: truncated sub-option")
        code, n = raw[pos], raw[pos + 1]
        if pos + 2 + n > len(raw):
            raise DhcpError(f"option 82: sub-option {code} runs past the option")
        out[code] = raw[pos + 2 : pos + 2 + n]
        pos += 2 + n
    return out


def build_suboptions(subs: dict[int, bytes]) -> bytes:
    return b"".join(bytes([k, len(v)]) + v for k, v in subs.items())


# -- option value helpers (pairs: encode/decode) ----------------------------------


def u32(value: int) -> bytes:
    return struct.pack("!I", value & 0xFFFFFFFF)


def from_u32(value: bytes) -> int:
    return int(struct.unpack("!I", value)[0])


def ips(addresses: list[str] | list[ipaddress.IPv4Address]) -> bytes:
    return b"".join(ipaddress.IPv4Address(a).packed for a in addresses)


def from_ips(value: bytes) -> list[ipaddress.IPv4Address]:
    if len(value) % 4:
        raise DhcpError("address list length is not a multiple of 4")
    return [ipaddress.IPv4Address(value[i : i + 4]) for i in range(0, len(value), 4)]


def domain_search(names: list[str]) -> bytes:
    """RFC 3397 option 119 (no compression)."""
    try:
        return encode_names(names)
    except ValueError as e:
        raise DhcpError(f"option 119: {e}") from None
