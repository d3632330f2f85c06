"""The CLAT's sans-I/O cores (RFC 6877): which Pref64, and which IPv6 address."""

from .address import CLAT_IPV4, ipv4_mtu_for, is_checksum_neutral, neutral_clat_address
from .pref64_state import (
    DnsRetry,
    Pref64Changed,
    Pref64Choice,
    Pref64Event,
    Pref64Refused,
    Pref64Source,
    Pref64Tracker,
)

__all__ = [
    "CLAT_IPV4",
    "DnsRetry",
    "Pref64Changed",
    "Pref64Choice",
    "Pref64Event",
    "Pref64Refused",
    "Pref64Source",
    "Pref64Tracker",
    "ipv4_mtu_for",
    "is_checksum_neutral",
    "neutral_clat_address",
]
