"""Address mapping: RFC 6052 algorithm, RFC 7757 EAM table, RFC 6791 pool, Pref64 tools."""

from .eam import EamEntry, EamTable
from .pool6791 import Pool6791
from .rfc6052 import WKP, Pref64, embed_ipv4, extract_ipv4, validate_pref64

__all__ = [
    "WKP",
    "EamEntry",
    "EamTable",
    "Pool6791",
    "Pref64",
    "embed_ipv4",
    "extract_ipv4",
    "validate_pref64",
]
