"""One version source, shown by ``v6mostly --version``; the licence file is shipped."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

import v6mostly
from v6mostly.cli import main

ROOT = Path(__file__).resolve().parents[2]


def test_version_flag_prints_the_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out.strip() == f"v6mostly {v6mostly.__version__}"


def test_pyproject_takes_the_version_and_licence_from_one_place() -> None:
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" not in meta["project"] and "version" in meta["project"]["dynamic"]
    assert meta["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "v6mostly.__version__"}
    assert meta["project"]["license"] == {"file": "LICENSE"}
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")


def test_systemd_units_verify_and_find_the_console_script(tmp_path: Path) -> None:
    """``systemd-analyze verify`` finds nothing wrong in the units but the missing
    ``v6mostly`` (not installed system-wide here). ExecStart names no directory:
    systemd searches /usr/local/bin and /usr/bin, where pip and Debian install it."""
    import shutil
    import subprocess

    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze not installed")
    units = []
    for u in sorted((ROOT / "contrib" / "systemd").glob("*.service")):
        dest = tmp_path / u.name.replace("@.service", "@wlan0.service")
        dest.write_text(u.read_text())
        units.append(str(dest))
        for line in u.read_text().splitlines():
            if line.startswith(("ExecStart=", "ExecStartPre=")):
                assert line.split("=", 1)[1].startswith("v6mostly "), (u.name, line)
    r = subprocess.run(
        [tool, "verify", *units], capture_output=True, text=True, timeout=60, check=False
    )
    other = [
        ln
        for ln in (r.stdout + r.stderr).splitlines()
        if ln.strip() and "Command v6mostly is not executable" not in ln
    ]
    assert other == [], other
    clat = (ROOT / "contrib" / "systemd" / "v6mostly-clat@.service").read_text()
    assert "CapabilityBoundingSet=CAP_NET_ADMIN CAP_NET_RAW CAP_BPF" in clat
