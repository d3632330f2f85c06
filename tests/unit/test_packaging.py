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
