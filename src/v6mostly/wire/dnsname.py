"""Domain names in wire form without compression (RFC 1035 §3.1), as DHCPv4 option
119 (RFC 3397) and the RA DNSSL option (RFC 8106 §5.2) carry them. A pair:
``encode_names`` / ``decode_names``; malformed input raises ``ValueError``."""

from __future__ import annotations


def encode_names(names: list[str]) -> bytes:
    out = bytearray()
    for name in names:
        for label in name.strip(".").split("."):
            try:
                b = label.encode("idna")
            except UnicodeError:
                raise ValueError(f"domain {name!r}: label {label!r} is not valid IDNA") from None
            if not 0 < len(b) < 64:
                raise ValueError(f"domain {name!r}: labels must be 1-63 bytes")
            out.append(len(b))
            out += b
        out.append(0)
    return bytes(out)


def decode_names(raw: bytes) -> list[str]:
    """Names in a run of wire-form names; zero padding between/after names is skipped."""
    names: list[str] = []
    labels: list[str] = []
    i = 0
    while i < len(raw):
        n = raw[i]
        if n == 0:
            if labels:
                names.append(".".join(labels))
                labels = []
            i += 1
            continue
        if n > 63 or i + 1 + n > len(raw):
            raise ValueError("malformed name (compression is not allowed here)")
        labels.append(raw[i + 1 : i + 1 + n].decode("ascii", "replace"))
        i += 1 + n
    if labels:
        raise ValueError("name without its terminating zero label")
    return names
