"""One DHCPv4 server per (network namespace, interface)."""

from __future__ import annotations

import os

import pytest

from v6mostly.linux.instance_lock import InstanceLocked, claim


def test_second_claim_fails_naming_the_holder_and_release_frees_it() -> None:
    tag = f"test{os.getpid()}"
    held = claim("dhcp4", tag)
    with pytest.raises(
        InstanceLocked, match=rf"interface {tag}: another dhcp4 server \(pid {os.getpid()}\)"
    ):
        claim("dhcp4", tag)
    other = claim("dhcp4", tag + "b")  # another interface: free
    held.close()
    claim("dhcp4", tag).close()  # released with the socket
    other.close()
