"""conntrackd's configuration for several PLATs (v6mostly.ha.conntrackd): the lines
that matter, the errors, and that the installed conntrackd accepts the files (it runs
for a second in a throwaway network namespace with the sync interface present and
answers ``conntrackd -C FILE -s`` on its socket)."""

from __future__ import annotations

import ipaddress
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from v6mostly.errors import ConfigError
from v6mostly.ha import conntrackd
from v6mostly.ha.config import HaPeer, HaSettings, OuterPair


def settings(tmp: Path, peers: int = 1, v: int = 6) -> HaSettings:
    def sync(i: int) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
        return ipaddress.ip_address(f"2001:db8:ff::{i}" if v == 6 else f"203.0.113.{i}")

    def pair(i: int) -> tuple[OuterPair, ...]:
        return (OuterPair(ipaddress.IPv6Address(f"2001:db8:46::{i}"), ipaddress.IPv4Address(f"198.51.100.{i}")),)  # fmt: skip

    return HaSettings(
        node="plat1",
        asn=64601,
        router_id=ipaddress.IPv4Address("198.51.100.1"),
        own_outer=pair(1),
        peers=tuple(HaPeer(f"plat{i}", pair(i), sync(i)) for i in range(2, peers + 2)),
        bgp=(),
        sync_interface="sync0",
        sync_address=sync(1),
        prepend=3,
        bfd_interval_ms=100,
        bird_config=str(tmp / "bird.conf"),
        bird_socket=str(tmp / "bird.ctl"),
        conntrackd_config=str(tmp / "conntrackd.conf"),
        conntrackd_socket=str(tmp / "conntrackd.ctl"),
        conntrackd_lock=str(tmp / "conntrack.lock"),
        pref64=ipaddress.IPv6Network("2001:db8:64::/96"),
        inside=(ipaddress.IPv6Network("2001:db8:1::/64"), ipaddress.IPv6Network("2001:db8:2::/56")),
        udp_oneshot_ports=(53, 123),
    )


def block(text: str, head: str) -> list[str]:
    """The stripped lines of the ``head {`` block up to its closing brace."""
    lines = [line.strip() for line in text.splitlines()]
    start = lines.index(head + " {")
    return lines[start + 1 : lines.index("}", start)]


def test_one_peer_is_udp_unicast_on_the_sync_link(tmp_path: Path) -> None:
    text = conntrackd.render(settings(tmp_path))
    assert block(text, "UDP") == [
        "IPv6_address 2001:db8:ff::1",
        "IPv6_Destination_Address 2001:db8:ff::2",
        "Port 3780",
        "Interface sync0",
        "SndSocketBuffer 4194304",
        "RcvSocketBuffer 4194304",
        "Checksum on",
    ]
    assert "Multicast" not in text.replace("# ", "")


def test_more_peers_are_multicast_on_the_sync_interface(tmp_path: Path) -> None:
    text = conntrackd.render(settings(tmp_path, peers=2))
    # the group before Interface: conntrackd looks the interface index up only then
    assert block(text, "Multicast") == [
        "IPv6_address ff02::6466",
        "Group 3780",
        "Interface sync0",
        "SndSocketBuffer 4194304",
        "RcvSocketBuffer 4194304",
        "Checksum on",
    ]
    assert "conntrackd has no unicast mesh" in text
    assert "UDP {" not in text


def test_more_peers_use_notrack_because_ftfw_keeps_one_sender(tmp_path: Path) -> None:
    text = conntrackd.render(settings(tmp_path, peers=3))
    assert block(text, "Mode NOTRACK") == [
        "# inject what the peers send into the kernel table at once: there is no",
        "# failover event to commit a user-space cache on (ECMP moves flows silently)",
        "DisableExternalCache On",
        "# after a (re)start, ask the peers for their entries",
        "StartupResync On",
    ]
    assert "Mode FTFW {" not in text and "ResendQueueSize" not in text
    assert "# channel and drops what looks delayed, so of two other senders on the group" in text


def test_ipv4_sync_link(tmp_path: Path) -> None:
    one = conntrackd.render(settings(tmp_path, v=4))
    assert block(one, "UDP")[:2] == ["IPv4_address 203.0.113.1", "IPv4_Destination_Address 203.0.113.2"]  # fmt: skip
    two = conntrackd.render(settings(tmp_path, peers=3, v=4))
    assert block(two, "Multicast")[:4] == [
        "IPv4_address 225.0.0.50",
        "IPv4_interface 203.0.113.1",
        "Group 3780",
        "Interface sync0",
    ]


def test_ftfw_into_the_kernel_table_and_the_napt66_filter(tmp_path: Path) -> None:
    text = conntrackd.render(settings(tmp_path))
    assert block(text, "Mode FTFW") == [
        "# inject what the peers send into the kernel table at once: there is no",
        "# failover event to commit a user-space cache on (ECMP moves flows silently)",
        "DisableExternalCache On",
        "# after a (re)start, ask the peers for their entries",
        "StartupResync On",
        "ResendQueueSize 131072",
        "ACKWindowSize 300",
    ]
    assert "Mode NOTRACK {" not in text
    assert "TCPWindowTracking Off" in block(text, "Options")
    assert block(text, "Protocol Accept") == ["TCP", "UDP"]
    assert block(text, "Address Accept") == [
        "IPv6_address 2001:db8:1::/64",
        "IPv6_address 2001:db8:2::/56",
    ]
    assert "IPv4_address" not in text  # IPv6 only
    assert "    Filter From Userspace {" in text.splitlines()
    # conntrackd 1.4.7 has no mark or port filter: the one-shot flows are kept out by nft
    assert "ports 53, 123" in text and conntrackd.ONESHOT_NFT in text
    assert "Mark" not in text


def test_general_paths_logging_and_netlink(tmp_path: Path) -> None:
    lines = [line.strip() for line in conntrackd.render(settings(tmp_path)).splitlines()]
    for want in (
        "Systemd off",
        "LogFile off",
        "Syslog off",
        f"LockFile {tmp_path / 'conntrack.lock'}",
        f"Path {tmp_path / 'conntrackd.ctl'}",
        "NetlinkBufferSize 4194304",
        "NetlinkBufferSizeMaxGrowth 16777216",
        "NetlinkEventsReliable On",
        "NetlinkOverrunResync Off",
        "HashSize 65536",
        "HashLimit 524288",
    ):
        assert want in lines, want
    assert block("\n".join(lines), "UNIX") == [f"Path {tmp_path / 'conntrackd.ctl'}"]


def test_argv_and_check_installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ha = settings(tmp_path)
    assert conntrackd.argv(ha) == ["conntrackd", "-C", str(tmp_path / "conntrackd.conf")]
    assert conntrackd.bulk_argv(ha) == [*conntrackd.argv(ha), "-B"]
    monkeypatch.setattr(shutil, "which", lambda name: None)
    assert conntrackd.check_installed() == "conntrackd: not installed (Debian package conntrackd)"
    monkeypatch.setattr(shutil, "which", lambda name: f"/usr/sbin/{name}")
    assert conntrackd.check_installed() is None


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"sync_interface": "sync-0"}, "[ha] sync_interface = 'sync-0': conntrackd accepts only"),
        (
            {"conntrackd_socket": "/run/my ctl"},
            "[ha] conntrackd_socket = '/run/my ctl': conntrackd needs an absolute path",
        ),
        ({"conntrackd_socket": "/" + "s" * 120}, "at most 107 characters"),
        ({"conntrackd_lock": "run/lock"}, "[ha] conntrackd_lock = 'run/lock'"),
        ({"peers": ()}, "[ha] peer: conntrackd needs at least one"),
        ({"inside": ()}, "[napt66] inside: empty"),
        (
            {"sync_address": ipaddress.ip_address("203.0.113.1")},
            "must be IPv4 like [ha] sync_address",
        ),
    ],
)
def test_errors_are_one_line(tmp_path: Path, change: dict[str, object], message: str) -> None:
    ha = replace(settings(tmp_path), **change)  # type: ignore[arg-type]
    with pytest.raises(ConfigError) as e:
        conntrackd.render(ha)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_argv_checks_the_config_path(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"\[ha\] conntrackd_config"):
        conntrackd.argv(replace(settings(tmp_path), conntrackd_config="conntrackd.conf"))


RUN = """
set -u
ip link set lo up
ip link add sync0 type veth peer name sync0p || exit 3
ip link set sync0 up && ip link set sync0p up
ip addr add "$1" dev sync0 nodad 2>/dev/null || ip addr add "$1" dev sync0
conntrackd -C "$2" & pid=$!
trap 'kill $pid 2>/dev/null; wait $pid' EXIT
sleep 1
kill -0 $pid || { echo "conntrackd is not running" >&2; exit 4; }
conntrackd -C "$2" -s || { echo "conntrackd -s failed" >&2; exit 5; }
"""


@pytest.mark.parametrize(("peers", "v"), [(1, 6), (2, 6), (1, 4), (2, 4)])
def test_the_installed_conntrackd_accepts_the_file(tmp_path: Path, peers: int, v: int) -> None:
    if (why := conntrackd.check_installed()) is not None:
        pytest.skip(why)
    ha = settings(tmp_path, peers=peers, v=v)
    Path(ha.conntrackd_config).write_text(conntrackd.render(ha))
    plen = 64 if v == 6 else 24
    r = subprocess.run(
        ["unshare", "-n", "sh", "-c", RUN, "sh", f"{ha.sync_address}/{plen}", ha.conntrackd_config],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if r.returncode != 0 and "Operation not permitted" in r.stderr:
        pytest.skip("needs root for unshare -n")  # CI is root: runs there
    # in the foreground conntrackd logs to stdout; a configuration error goes to stderr
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout
    assert "ERROR" not in out + r.stderr and "[warning]" not in out + r.stderr, out + r.stderr
    assert "disabling external cache" in out  # DisableExternalCache On was read
    assert "reliable ctnetlink event delivery is ENABLED" in out
    assert "using user-space event filtering" in out
    channel = "UDP traffic" if peers == 1 else "multicast traffic"
    assert f"{channel} (active device=sync0)" in r.stdout, r.stdout
