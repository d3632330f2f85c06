"""The one exception family for misuse and configuration errors.

Packet input never raises: a bad packet becomes a verdict (see ``siit.verdict``).
"""


class V6mostlyError(Exception):
    """Base of every error v6mostly raises on purpose."""


class ConfigError(V6mostlyError):
    """A setting is wrong. The message names the file/key, the value and the rule."""


class AddressError(ConfigError):
    """An address or prefix breaks an addressing rule (RFC 6052, RFC 7757, ...)."""


class PcapError(V6mostlyError):
    """A capture file cannot be read or written."""
