"""One DHCPv4 server per (network namespace, interface)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from v6mostly.linux.instance_lock import InstanceLocked, claim, lock_path


def test_second_claim_fails_naming_the_holder_and_release_frees_it(tmp_path: Path) -> None:
    fd = claim("dhcp4", "lan0", str(tmp_path))
    with pytest.raises(
        InstanceLocked, match=rf"interface lan0: another dhcp4 server \(pid {os.getpid()}\)"
    ):
        claim("dhcp4", "lan0", str(tmp_path))
    other = claim("dhcp4", "lan1", str(tmp_path))  # another interface: free
    os.close(fd)
    os.close(claim("dhcp4", "lan0", str(tmp_path)))
    os.close(other)
    ns = os.stat("/proc/self/ns/net").st_ino
    assert lock_path("dhcp4", "lan0", str(tmp_path)) == str(tmp_path / f"dhcp4-{ns}-lan0.lock")
