"""A PLAT with [ha] (issue 12): the file as a whole (the peers' outer pairs become EAM
entries and TUN routes), the nftables table (peers' outer IPv4s, the ct mark, quiet
one-shot flows), ``--dry-run`` (both generated files) and the start-up checks."""

from __future__ import annotations

import ipaddress
import subprocess
import sys
from pathlib import Path

import pytest

from v6mostly import config as config_mod
from v6mostly.errors import ConfigError
from v6mostly.lab.ha import plat_toml
from v6mostly.lab.plan import plan_lab
from v6mostly.lab.topology import LabConfig
from v6mostly.services import ha_runtime, plat_rules


def write_plat(tmp_path: Path, node: str = "plat1", mode: str = "resilient") -> Path:
    p = plan_lab(LabConfig(ha=mode, queues=1), "t1", str(tmp_path))
    path = tmp_path / f"{node}.toml"
    path.write_text(plat_toml(p, node))
    return path


def test_peer_outer_pairs_become_eam_entries_and_routes(tmp_path: Path) -> None:
    s = config_mod.load(str(write_plat(tmp_path)), plat=True)
    assert s.ha is not None and s.ha.node == "plat1"
    assert s.translator.eam == [
        ("2001:db8:46::1/128", "198.51.100.1/32"),
        ("2001:db8:46::2/128", "198.51.100.2/32"),  # plat2's: its bindings may arrive here
    ]
    # the per-destination ICMP error bucket of every outer address is the global one
    assert set(s.translator.icmp_ratelimit_shared) == {"2001:db8:46::1", "2001:db8:46::2"}
    routes = plat_rules.plan(s).routes
    assert ipaddress.IPv4Network("198.51.100.2/32") in routes
    assert ipaddress.IPv4Network("198.51.100.1/32") in routes
    # SNAT only to our own outer address
    table = plat_rules.render_plat_table(s)
    assert "snat ip6 to [2001:db8:46::2]" not in table
    assert "snat ip6 to [2001:db8:46::1]:1024-65535" in table


def test_nft_table_marks_napt66_flows_and_quiets_one_shot_ones(tmp_path: Path) -> None:
    s = config_mod.load(str(write_plat(tmp_path)), plat=True)
    table = plat_rules.render_plat_table(s)
    assert "set outer4 { type ipv4_addr; elements = { 198.51.100.1, 198.51.100.2 }; }" in table
    assert (
        "ip6 saddr @inside6 ip6 daddr 2001:db8:64::/96 ct state new ct mark set 0x6466 accept"
        in table
    )
    assert 'ct timeout set "udp_oneshot" ct event set 0x0 accept' in table
    # without [ha] neither appears
    text = write_plat(tmp_path).read_text().split("[ha]")[0] + '[metrics]\nlisten = ""\n'
    plain = tmp_path / "plain.toml"
    plain.write_text(text)
    t2 = plat_rules.render_plat_table(config_mod.load(str(plain), plat=True))
    assert "ct mark" not in t2 and "ct event" not in t2
    assert "set outer4 { type ipv4_addr; elements = { 198.51.100.1 }; }" in t2


def test_nft_accepts_the_ha_table(tmp_path: Path) -> None:
    """The real nft parses the table (nft --check, no changes made)."""
    from tests.unit.nft_check import nft_check

    s = config_mod.load(str(write_plat(tmp_path)), plat=True)
    nft_check(plat_rules.render_plat_table(s))


def test_ha_needs_a_pref64(tmp_path: Path) -> None:
    path = write_plat(tmp_path)
    path.write_text(path.read_text().replace('pool6 = "2001:db8:64::/96"\n', ""))
    with pytest.raises(ConfigError, match=r"\[ha\]: needs the Pref64"):
        config_mod.load(str(path), plat=True)


def test_siit_has_no_ha_section(tmp_path: Path) -> None:
    path = write_plat(tmp_path)
    text = path.read_text()
    path.write_text(text.split("[napt66]")[0] + "[ha" + text.split("[ha", 1)[1])
    with pytest.raises(ConfigError, match=r"\[ha\]: unknown section"):
        config_mod.load(str(path), plat=False)


def test_dry_run_prints_both_generated_files(tmp_path: Path) -> None:
    path = write_plat(tmp_path)
    r = subprocess.run(
        [sys.executable, "-m", "v6mostly", "plat", "--config", str(path), "--dry-run"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "# [ha] node plat1 (AS 64601), peers plat2 (198.51.100.2)" in out
    assert "protocol bgp downstream1 {" in out and "protocol bgp upstream1 {" in out
    assert "bgp_path.prepend(64601);" in out
    assert "Sync {" in out and "IPv6_Destination_Address 2001:db8:ff::2" in out
    assert "ct mark set 0x6466" in out


def test_plain_mode_runs_no_conntrackd(tmp_path: Path) -> None:
    s = config_mod.load(str(write_plat(tmp_path, mode="plain")), plat=True)
    assert s.ha is not None and s.ha.state_sync is False


def test_missing_engines_name_their_debian_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ha_runtime.shutil, "which", lambda cmd: None)
    monkeypatch.setattr(ha_runtime.os.path, "exists", lambda p: False)
    monkeypatch.setattr(
        ha_runtime.conntrackd,
        "check_installed",
        lambda: "conntrackd: not installed (Debian package conntrackd)",
    )
    assert ha_runtime.missing_tools() == [
        "bird: not installed (Debian package bird2)",
        "birdc: not installed (Debian package bird2)",
        "conntrackd: not installed (Debian package conntrackd)",
    ]


def test_bird_file_is_checked_before_it_replaces_the_old_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = config_mod.load(str(write_plat(tmp_path)), plat=True)
    assert s.ha is not None
    target = Path(s.ha.bird_config)
    target.write_text("# the running file\n")
    monkeypatch.setattr(ha_runtime.bird, "check", lambda path: "syntax error, line 3")
    with pytest.raises(ha_runtime.HaError, match="bird refused the generated configuration"):
        ha_runtime.write_checked_bird(s.ha, "nat64")
    assert target.read_text() == "# the running file\n"  # untouched
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".v6mostly-")] == []
    monkeypatch.setattr(ha_runtime.bird, "check", lambda path: None)
    assert ha_runtime.write_checked_bird(s.ha, "nat64") is True
    assert "protocol bgp downstream1" in target.read_text()
    assert ha_runtime.write_checked_bird(s.ha, "nat64") is False  # unchanged


def test_bird_not_running_is_one_line(tmp_path: Path) -> None:
    s = config_mod.load(str(write_plat(tmp_path)), plat=True)
    assert s.ha is not None
    msg = ha_runtime.bird_configure(s.ha)
    assert msg == (f"bird is not running (no socket {s.ha.bird_socket}); start it to announce")
