"""Who is told "IPv6-only preferred" (RFC 8925 option 108): client classes and rollout.

Theory of operation
-------------------
RFC 8925 §3.3: a server sends option 108 only to a client that listed 108 in
its Parameter Request List (option 55), and only where the operator wants it.
The operator's wish is a policy evaluated per message:

1. The first *class* (in configuration order) whose every match holds decides,
   if it sets ``v6only`` (``true`` forces 108 on, ``false`` forces it off,
   whatever the subnet says: both directions, which the RubyKaigi seed's server
   could not do).
2. Otherwise the subnet's default decides.
3. An "on" decision can be narrowed by a stable rollout percentage: the
   client's identity (option 61, else chaddr) is hashed, so a given client
   stays in or out as the percentage grows.

Matches: option 82 circuit-id / remote-id (exact, substring, prefix, or a
``split`` match like the seed's ``split(relay4[2].hex, ':', 2) == 'RubyKaigi
2025'``: split the sub-option on a separator and compare one field), MAC
address prefix (OUI), vendor class (option 60, prefix or substring), subnet
name.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from .message import Message, Opt

#: RFC 8925 §3.4: the minimum V6ONLY_WAIT, in seconds.
MIN_V6ONLY_WAIT = 300
#: RFC 8925 §3.3: the default V6ONLY_WAIT.
DEFAULT_V6ONLY_WAIT = 1800

SUB_CIRCUIT_ID = 1
SUB_REMOTE_ID = 2


@dataclass(frozen=True)
class TextMatch:
    """How a text (a sub-option or option value) is matched."""

    equals: str | None = None
    contains: str | None = None
    prefix: str | None = None
    #: (separator, field index, expected value): ``text.split(sep)[index] == value``
    split: tuple[str, int, str] | None = None

    def __call__(self, raw: bytes | None) -> bool:
        if raw is None:
            return False
        text = raw.decode("utf-8", "replace")
        if self.equals is not None and text != self.equals:
            return False
        if self.contains is not None and self.contains not in text:
            return False
        if self.prefix is not None and not text.startswith(self.prefix):
            return False
        if self.split is not None:
            sep, index, value = self.split
            parts = text.split(sep)
            if not -len(parts) <= index < len(parts) or parts[index] != value:
                return False
        return True


@dataclass(frozen=True)
class ClientClass:
    name: str
    circuit_id: TextMatch | None = None
    remote_id: TextMatch | None = None
    vendor_class: TextMatch | None = None
    mac_prefixes: tuple[bytes, ...] = ()
    subnets: tuple[str, ...] = ()
    #: True/False: force option 108 on/off; None: this class decides nothing about 108.
    v6only: bool | None = None
    rollout_percent: int = 100

    def matches(self, msg: Message, subnet: str) -> bool:
        relay = None
        if self.circuit_id or self.remote_id:
            try:
                relay = msg.relay_agent()
            except ValueError:
                return False
            if self.circuit_id and not self.circuit_id(relay.get(SUB_CIRCUIT_ID)):
                return False
            if self.remote_id and not self.remote_id(relay.get(SUB_REMOTE_ID)):
                return False
        if self.vendor_class and not self.vendor_class(msg.options.get(Opt.VENDOR_CLASS)):
            return False
        if self.mac_prefixes and not any(msg.mac.startswith(p) for p in self.mac_prefixes):
            return False
        return not (self.subnets and subnet not in self.subnets)


#: The reason for a client that did not ask (option 55 without 108).
NOT_REQUESTED = "client did not request option 108"


@dataclass
class V6OnlyPolicy:
    classes: list[ClientClass] = field(default_factory=list)

    def decide(
        self, msg: Message, subnet: str, subnet_default: bool, subnet_rollout: int = 100
    ) -> tuple[bool, str]:
        """(send option 108?, why) for a client that asked for it."""
        if Opt.V6ONLY_PREFERRED not in msg.param_requests():
            return False, NOT_REQUESTED
        for c in self.classes:
            if c.v6only is not None and c.matches(msg, subnet):
                if not c.v6only:
                    return False, f"class {c.name}: v6only off"
                if not in_rollout(msg, c.rollout_percent):
                    return False, f"class {c.name}: outside the {c.rollout_percent}% rollout"
                return True, f"class {c.name}"
        if not subnet_default:
            return False, f"subnet {subnet}: v6only off"
        if not in_rollout(msg, subnet_rollout):
            return False, f"subnet {subnet}: outside the {subnet_rollout}% rollout"
        return True, f"subnet {subnet}"

    def classes_of(self, msg: Message, subnet: str) -> list[str]:
        return [c.name for c in self.classes if c.matches(msg, subnet)]


def in_rollout(msg: Message, percent: int) -> bool:
    """Stable: the same client is in or out for a given percentage, and stays in as it grows."""
    if percent >= 100:
        return True
    if percent <= 0:
        return False
    h = int.from_bytes(hashlib.sha256(msg.client_key).digest()[:8], "big") % 100
    return h < percent
