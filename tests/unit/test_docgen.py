"""Man pages and bash completion come from the parser itself: every command has a
page that `man` renders, and bash completes commands, options and choices."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from v6mostly.cli import build_parser
from v6mostly.docgen import bash_completion, walk, write_man


def test_a_page_per_command_that_man_renders(tmp_path: Path) -> None:
    paths = write_man(build_parser(), str(tmp_path))
    names = {Path(p).name for p in paths}
    for cmd in ("plat", "router", "clat", "ctl", "ctl-status", "pref64-check", "lab"):
        assert f"v6mostly-{cmd}.8" in names
    assert len(names) == len(list(walk(build_parser())))
    text = (tmp_path / "v6mostly-ctl-stats.8").read_text()
    assert ".SH OPTIONS" in text and "\\-\\-explain" in text
    if shutil.which("man") is None:
        pytest.skip("man not installed")
    r = subprocess.run(
        ["man", "-l", str(tmp_path / "v6mostly-plat.8")],
        capture_output=True, text=True, timeout=30, check=False, env={"MANWIDTH": "100", "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert r.returncode == 0 and "--control-socket PATH" in r.stdout, r.stderr


def _complete(script: Path, *words: str) -> list[str]:
    w = " ".join(f"'{x}'" for x in words)
    cmd = f"source {script}; COMP_WORDS=({w}); COMP_CWORD={len(words) - 1}; _v6mostly; "
    cmd += 'printf "%s\\n" "${COMPREPLY[@]}"'
    r = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=30, check=True)
    return r.stdout.split()


def test_bash_completes_commands_options_and_choices(tmp_path: Path) -> None:
    script = tmp_path / "v6mostly.bash"
    script.write_text(bash_completion(build_parser()))
    assert _complete(script, "v6mostly", "p") == ["pref64", "plat"]
    assert _complete(script, "v6mostly", "ctl", "st") == ["status", "stats"]
    assert _complete(script, "v6mostly", "ctl", "stats", "--") == ["--help", "--explain", "--all"]
    assert _complete(script, "v6mostly", "--log-format", "") == ["text", "json"]
    assert "--control-socket" in _complete(script, "v6mostly", "plat", "--")
