"""Man pages and bash completion, generated from the CLI's own argparse parser.

``v6mostly-docs man DIR`` writes ``v6mostly.8`` plus ``v6mostly-SUB.8`` for each
command (sub-commands of commands too, e.g. ``v6mostly-ctl-status``); ``bash FILE``
writes a completion script for ``v6mostly`` (commands, their sub-commands and
options, ``choices`` values). Both walk the parser, so a new flag shows up without
anyone editing a page. ``make man`` runs both into ``build/``.
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
from collections.abc import Iterator

from . import __version__


def _subparsers(p: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for a in p._actions:
        if isinstance(a, argparse._SubParsersAction):
            return dict(a.choices)
    return {}


def _help_of(p: argparse.ArgumentParser, name: str) -> str:
    for a in p._actions:
        if isinstance(a, argparse._SubParsersAction):
            for ch in a._choices_actions:
                if ch.dest == name:
                    return ch.help or ""
    return ""


def walk(
    p: argparse.ArgumentParser, path: tuple[str, ...] = (), summary: str = ""
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser, str]]:
    """(command words, parser, one-line help) for the parser and every sub-command."""
    yield path, p, summary
    for name, sub in _subparsers(p).items():
        yield from walk(sub, (*path, name), _help_of(p, name))


def _esc(text: str) -> str:
    out = text.replace("\\", "\\\\").replace("-", "\\-")
    return "\n".join(("\\&" + ln) if ln.startswith((".", "'")) else ln for ln in out.split("\n"))


def _metavar(a: argparse.Action) -> str:
    if isinstance(a.metavar, str):
        return a.metavar
    if a.choices:
        return "{" + ",".join(map(str, a.choices)) + "}"
    return a.dest.upper() if a.option_strings else a.dest


def _options(p: argparse.ArgumentParser) -> list[tuple[str, str]]:
    rows = []
    for a in p._actions:
        if isinstance(a, argparse._SubParsersAction) or a.help == argparse.SUPPRESS:
            continue
        if a.option_strings:
            names = ", ".join(a.option_strings)
            if a.nargs != 0:
                names += " " + _metavar(a)
        else:
            names = _metavar(a)
        rows.append((names, a.help or ""))
    return rows


def man_page(words: tuple[str, ...], p: argparse.ArgumentParser, summary: str) -> str:
    name = "-".join(("v6mostly", *words))
    date = datetime.date.today().isoformat()
    lines = [
        f'.TH {name.upper()} 8 "{date}" "v6mostly {__version__}" "v6mostly manual"',
        ".SH NAME",
        f"{_esc(name)} \\- {_esc(summary or p.description or 'tools for an IPv6-mostly network')}",
        ".SH SYNOPSIS",
        ".nf",
        _esc(p.format_usage().removeprefix("usage: ").strip()),
        ".fi",
    ]
    if p.description:
        lines += [".SH DESCRIPTION", _esc(p.description)]
    subs = _subparsers(p)
    if subs:
        lines.append(".SH COMMANDS")
        for sub in subs:
            lines += [".TP", f".B {_esc(sub)}", _esc(_help_of(p, sub) or "") or "\\&"]
    opts = _options(p)
    if opts:
        lines.append(".SH OPTIONS")
        for names, h in opts:
            lines += [".TP", f".B {_esc(names)}", _esc(h) or "\\&"]
    see = ["v6mostly"] + ["-".join(("v6mostly", *words, s)) for s in subs]
    lines += [".SH SEE ALSO", ", ".join(f"\\fB{_esc(s)}\\fR(8)" for s in see if s != name)]
    return "\n".join(lines) + "\n"


def write_man(parser: argparse.ArgumentParser, out_dir: str) -> list[str]:
    os.makedirs(out_dir, exist_ok=True)
    written = []
    for words, p, h in walk(parser):
        path = os.path.join(out_dir, "-".join(("v6mostly", *words)) + ".8")
        with open(path, "w") as f:
            f.write(man_page(words, p, h))
        written.append(path)
    return written


def bash_completion(parser: argparse.ArgumentParser) -> str:
    """A bash completion script: commands, options and option values per command path."""
    subs, opts, vals = [], [], []
    for words, p, _h in walk(parser):
        key = " ".join(words)
        subs.append(f'        "{key}") echo "{" ".join(_subparsers(p))}" ;;')
        names = [o for a in p._actions if a.help != argparse.SUPPRESS for o in a.option_strings]
        opts.append(
            f'        "{key}") echo "{" ".join(n for n in names if n.startswith("--"))}" ;;'
        )
        for a in p._actions:
            if a.choices and a.option_strings:
                for o in a.option_strings:
                    words_o = " ".join((*words, o))
                    vals.append(f'        "{words_o}") echo "{" ".join(map(str, a.choices))}" ;;')
    nl = "\n"
    return f"""# bash completion for v6mostly, generated from its argparse parser (v6mostly.docgen)
_v6mostly_subs() {{
    case "$1" in
{nl.join(subs)}
    esac
}}
_v6mostly_opts() {{
    case "$1" in
{nl.join(opts)}
    esac
}}
_v6mostly_vals() {{
    case "$1" in
{nl.join(vals)}
    esac
}}
_v6mostly() {{
    local cur prev path w i known vals
    cur="${{COMP_WORDS[COMP_CWORD]}}"
    prev="${{COMP_WORDS[COMP_CWORD-1]}}"
    path=""
    for ((i = 1; i < COMP_CWORD; i++)); do
        w="${{COMP_WORDS[i]}}"
        known=" $(_v6mostly_subs "$path") "
        if [[ "$known" == *" $w "* ]]; then
            path="${{path:+$path }}$w"
        fi
    done
    vals="$(_v6mostly_vals "${{path:+$path }}$prev")"
    if [[ -n "$vals" ]]; then
        COMPREPLY=($(compgen -W "$vals" -- "$cur"))
        return
    fi
    COMPREPLY=($(compgen -W "$(_v6mostly_subs "$path") $(_v6mostly_opts "$path")" -- "$cur"))
}}
complete -o default -F _v6mostly v6mostly
"""


def main(argv: list[str] | None = None) -> int:
    from .cli import build_parser

    args = argv if argv is not None else sys.argv[1:]
    if len(args) != 2 or args[0] not in ("man", "bash"):
        print("usage: python -m v6mostly.docgen man DIR | bash FILE", file=sys.stderr)
        return 2
    parser = build_parser()
    if args[0] == "man":
        for path in write_man(parser, args[1]):
            print(path)
    else:
        with open(args[1], "w") as f:
            f.write(bash_completion(parser))
        print(args[1])
    return 0


if __name__ == "__main__":
    sys.exit(main())
