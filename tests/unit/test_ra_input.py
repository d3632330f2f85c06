"""RFC 4861 §6.1.1 validation of Router Solicitations (exact bytes)."""

from __future__ import annotations

import pytest

from v6mostly.ra.options import router_solicit_invalid, router_solicit_ok

RS = bytes([133, 0, 0x7B, 0x9A, 0, 0, 0, 0])
SLLA = bytes([1, 1, 0x02, 0, 0, 0, 0, 0x01])


@pytest.mark.parametrize(
    ("data", "hops", "src", "why"),
    [
        (RS, 255, "fe80::1", None),
        (RS + SLLA, 255, "fe80::1%lan0", None),
        (RS, 255, "::", None),  # DAD-time solicitation without SLLA: fine
        (RS + SLLA, 255, "::", "slla_from_unspecified"),
        (RS, 64, "fe80::1", "hop_limit"),
        (RS, 254, "fe80::1", "hop_limit"),
        (bytes([133, 1]) + RS[2:], 255, "fe80::1", "code"),
        (RS[:7], 255, "fe80::1", "short"),
        (bytes([134]) + RS[1:], 255, "fe80::1", "not_solicitation"),
        (RS + bytes([1, 0, 0, 0, 0, 0, 0, 0]), 255, "fe80::1", "options"),  # length 0
        (RS + bytes([1, 2]) + bytes(6), 255, "fe80::1", "options"),  # runs past the end
        (RS + SLLA, None, "fe80::1", None),  # hop limit unknown: not checked
    ],
)
def test_router_solicitation_checks(data: bytes, hops: int | None, src: str, why: str) -> None:
    assert router_solicit_invalid(data, hops, src) == why


def test_router_solicit_ok_keeps_its_message_only_checks() -> None:
    assert router_solicit_ok(RS + SLLA)
    assert not router_solicit_ok(bytes([133, 1]) + RS[2:])
