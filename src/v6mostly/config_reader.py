"""The configuration files' shared reader: TOML in, typed values out, and errors that
name the file, the section and key, the value as written and the rule.

Used by :mod:`v6mostly.config` (plat, siit, clat) and :mod:`v6mostly.site_config`
(the router's site file); neither reaches into the other's helpers (the plat file
may read a site file, never the reverse). The design: docs/architecture.md §4.
"""

from __future__ import annotations

import difflib
import ipaddress
import tomllib
from typing import Any

from .errors import ConfigError


class Reader:
    """Typed access to one TOML table, with errors that name file, key and rule."""

    def __init__(self, source: str, section: str, table: dict[str, Any]) -> None:
        self.source = source
        self.section = section
        self.table = table
        self.used: set[str] = set()

    def where(self, key: str) -> str:
        return f"{self.source}: [{self.section}] {key}"

    def fail(self, key: str, value: object, rule: str) -> ConfigError:
        return ConfigError(f"{self.where(key)} = {toml_text(value)}: {rule}")

    def get(self, key: str, kind: type, default: Any) -> Any:
        self.used.add(key)
        if key not in self.table:
            return default
        v = self.table[key]
        if kind is int and (isinstance(v, bool) or not isinstance(v, int)):
            raise self.fail(key, v, "expected an integer")
        if kind is not int and not isinstance(v, kind):
            raise self.fail(key, v, f"expected {kind_name(kind)}")
        return v

    def integer(self, key: str, default: int, low: int, high: int) -> int:
        v: int = self.get(key, int, default)
        if not low <= v <= high:
            raise self.fail(key, v, f"expected an integer from {low} to {high}")
        return v

    def address(self, key: str, version: int, default: str | None = None) -> str | None:
        v = self.get(key, str, default)
        if v is None:
            return None
        return address(self, key, v, version)

    def finish(self) -> None:
        extra = sorted(set(self.table) - self.used)
        if extra:
            k = extra[0]
            close = difflib.get_close_matches(k, sorted(self.used), 1)
            hint = f' (did you mean "{close[0]}"?)' if close else ""
            raise self.fail(k, self.table[k], "unknown key" + hint)


def check_ifname(r: Reader, key: str, name: Any) -> str:
    """One rule for interface names in every file (Linux: 1-15 characters, no / or space)."""
    if not isinstance(name, str) or not name or len(name) > 15 or any(c in name for c in "/ \t"):
        raise r.fail(key, name, "expected an interface name of 1-15 characters")
    return name


def inline_keys(r: Reader, key: str, table: dict[str, Any], allowed: tuple[str, ...]) -> None:
    """An inline table (``key = { ... }``, or one in a list) has only ``allowed`` keys."""
    for k in table:
        if k not in allowed:
            raise r.fail(f"{key}.{k}", table[k], f"unknown key (expected {', '.join(allowed)})")


def toml_text(value: object) -> str:
    """A value as the file wrote it (TOML), for error messages."""
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(toml_text(v) for v in value) + "]"
    if isinstance(value, dict):
        if not value:
            return "{}"
        return "{ " + ", ".join(f"{k} = {toml_text(v)}" for k, v in value.items()) + " }"
    return str(value)


def kind_name(kind: type) -> str:
    return {str: "a string", bool: "true or false", list: "a list", dict: "a table"}.get(
        kind, kind.__name__
    )


def address(r: Reader, key: str, text: Any, version: int) -> str:
    if not isinstance(text, str):
        raise r.fail(key, text, f"expected an IPv{version} address")
    try:
        a = ipaddress.ip_address(text)
    except ValueError:
        raise r.fail(key, text, f"expected an IPv{version} address") from None
    if a.version != version:
        raise r.fail(key, text, f"expected an IPv{version} address")
    return str(a)


def network(r: Reader, key: str, text: Any, version: int) -> str:
    if not isinstance(text, str):
        raise r.fail(key, text, f"expected an IPv{version} prefix string (ADDR/LEN)")
    try:
        n = ipaddress.ip_network(text)
    except ValueError:
        raise r.fail(
            key, text, f"expected an IPv{version} prefix with no host bits set (ADDR/LEN)"
        ) from None
    if n.version != version:
        raise r.fail(key, text, f"expected an IPv{version} prefix")
    return str(n)


def section(source: str, data: dict[str, Any], name: str) -> Reader:
    t = data.get(name, {})
    if not isinstance(t, dict):
        raise ConfigError(f"{source}: [{name}]: expected a table")
    return Reader(source, name, t)


def read_toml(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None


def parse_metrics(path: str, data: dict[str, Any]) -> str:
    """The ``[metrics] listen = "ADDR:PORT"`` of any of our files ("" = no endpoint)."""
    m = section(path, data, "metrics")
    listen: str = m.get("listen", str, "")
    if listen:
        parse_listen(m, listen)
    m.finish()
    return listen


def parse_listen(r: Reader, text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise r.fail("listen", text, 'expected "ADDRESS:PORT" (e.g. "127.0.0.1:9464")')
    host = host.strip("[]")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise r.fail("listen", text, "expected a numeric IPv4 or IPv6 address") from None
    return host, int(port)


def listen_address(text: str) -> tuple[str, int]:
    return parse_listen(Reader("--metrics", "metrics", {}), text)
