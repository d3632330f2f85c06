"""The addressing the unit and integration tests share (documentation prefixes only)."""

POOL6 = "2001:db8:46::/96"  # RFC 6052 pool6, deliberately not checksum neutral
EAM = ("2001:db8:64::/120", "203.0.113.0/24")  # the IPv6-only clients (RFC 7757)
C6, C4 = "2001:db8:64::10", "203.0.113.16"  # a client, both faces
S6, S4 = "2001:db8:46::c633:640a", "198.51.100.10"  # an IPv4-only server, both faces

#: `v6mostly translate` flags for this site.
TRANSLATE_FLAGS = ["--pool6", POOL6, "--eam", f"{EAM[0]}={EAM[1]}"]
