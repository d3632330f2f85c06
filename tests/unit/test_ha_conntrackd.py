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


MODE = [
    "# inject what the peers send into the kernel table at once: there is no",
    "# failover event to commit a user-space cache on (ECMP moves flows silently)",
    "DisableExternalCache On",
    "# no internal cache: a resync request and -B are answered from the KERNEL",
    "# table, so a PLAT that comes back also gets the copies of its own flows",
    "# that a peer injected (and carried while it was away)",
    "DisableInternalCache On",
    "# after a (re)start, ask the peers for their entries",
    "StartupResync On",
]


@pytest.mark.parametrize("peers", [1, 3])
def test_notrack_without_internal_cache_for_any_number_of_peers(tmp_path: Path, peers: int) -> None:
    # 1.4.7 refuses DisableInternalCache in FTFW; without the internal cache a resync is
    # answered from the kernel table, the copies of the returning PLAT's flows included
    text = conntrackd.render(settings(tmp_path, peers=peers))
    assert block(text, "Mode NOTRACK") == MODE
    assert "Mode FTFW {" not in text and "ResendQueueSize" not in text
    assert "ACKWindowSize" not in text
    assert "# channel and drops what looks delayed, so of two senders on a group it keeps" in text


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


def test_the_napt66_filter(tmp_path: Path) -> None:
    text = conntrackd.render(settings(tmp_path))
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
    assert conntrackd.resync_argv(ha) == [*conntrackd.argv(ha), "-n"]
    assert conntrackd.stats_argv(ha) == [*conntrackd.argv(ha), "-s"]
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
    assert "disabling internal cache" in out  # DisableInternalCache On was read
    assert "reliable ctnetlink event delivery is ENABLED" in out
    assert "using user-space event filtering" in out
    channel = "UDP traffic" if peers == 1 else "multicast traffic"
    assert f"{channel} (active device=sync0)" in r.stdout, r.stdout
    stats = conntrackd.parse_stats(r.stdout)
    assert stats == conntrackd.SyncStats(), r.stdout  # the -s output parses, all zero


# conntrackd 1.4.7 -s with DisableInternalCache On and DisableExternalCache On (measured)
STATS = """internal bypass:
connections new:		           3
connections updated:		           0
connections destroyed:		           0

external inject:
connections created:		           8	failed:	           1
connections updated:		           2	failed:	           0
connections destroyed:		           1	failed:	           2

traffic processed:
                   0 Bytes                         0 Pckts

UDP traffic (active device=sync0):
                  40 Bytes sent                  896 Bytes recv
                   4 Pckts sent                    4 Pckts recv
                   0 Error send                    0 Error recv

message tracking:
                   5 Malformed msgs                    7 Lost msgs

"""


def test_parse_stats() -> None:
    s = conntrackd.parse_stats(STATS)
    assert s == conntrackd.SyncStats(created=8, updated=2, destroyed=1, failed=3, lost=7, malformed=5)  # fmt: skip
    assert s.injected == 14
    assert conntrackd.parse_stats("internal cache:\ncurrent active connections: 0\n") is None
    assert conntrackd.parse_stats("") is None


def stats(n: int) -> conntrackd.SyncStats:
    return conntrackd.SyncStats(created=n)


def test_resync_wait_settles_after_the_burst() -> None:
    w = conntrackd.ResyncWait(start=100.0)
    assert not w.update(100.1, stats(0))
    assert not w.update(100.3, stats(500))  # the answer is arriving
    assert not w.update(100.5, stats(1000))
    assert not w.update(101.2, stats(1000))  # quiet, but the window reaches only 100.2
    assert not w.update(101.45, stats(1010))  # 100.45 and before: 500 -> 510 in the window
    assert w.update(101.6, stats(1020))  # since 100.6: 1000 -> 1020, 2 % of 1020 received
    assert w.received == 1020 and not w.timed_out


def test_resync_wait_live_events_do_not_hold_it_up() -> None:
    w = conntrackd.ResyncWait(start=0.0, base=40)  # a running conntrackd had 40 already
    n = 40
    for i in range(1, 40):
        n += 1000 if i <= 3 else 3  # the burst, then 3 live events per sample
        if w.update(i * 0.1, stats(n)):
            break
    assert 1.0 <= i * 0.1 <= 1.5 and w.received == n - 40 and not w.timed_out


def test_resync_wait_without_an_answer_and_the_limit() -> None:
    w = conntrackd.ResyncWait(start=0.0)
    assert not w.update(0.5, None)  # conntrackd does not answer yet
    assert not w.update(2.9, stats(0))
    assert w.update(3.0, stats(0)) and w.received == 0 and not w.timed_out
    busy = conntrackd.ResyncWait(start=0.0)
    assert not busy.update(1.0, stats(10))
    assert not busy.update(2.0, stats(100))  # keeps growing: more than 5 % per second
    assert busy.update(30.0, stats(100000)) and busy.timed_out
    silent = conntrackd.ResyncWait(start=0.0)
    assert silent.update(30.0, None) and silent.timed_out
