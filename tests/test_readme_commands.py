"""The README's Commands table documents every option each command takes (as ``--help`` lists them)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import typer.main

from pipeline.cli import app

README = Path(__file__).resolve().parent.parent / "README.md"
GENERAL = {"--help", "--db", "--bootstrap"}  # documented once, above the table


def _leaves(cmd: Any, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any]]:
    subs = getattr(cmd, "commands", None)
    if not subs:
        return [(path, cmd)]
    return [leaf for name, sub in sorted(subs.items()) for leaf in _leaves(sub, (*path, name))]


def _rows() -> list[tuple[list[list[str]], str]]:
    """(the words of the command cell, each a list of alternatives ``a\\|b``; the whole row) per table row."""
    section = README.read_text(encoding="utf-8").split("## Commands", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        m = re.match(r"\| `infersentry ([^`]*)` \|", line)
        if m:
            rows.append(([w.split("\\|") for w in m.group(1).split()], line))
    return rows


def test_every_command_and_option_is_in_the_readme_commands_table() -> None:
    rows = _rows()
    missing = []
    for path, cmd in _leaves(typer.main.get_command(app)):
        text = " ".join(line for words, line in rows
                        if len(words) >= len(path) and all(p in w for p, w in zip(path, words, strict=False)))
        if not text:
            missing.append(" ".join(path))
            continue
        for param in cmd.params:
            for opt in param.opts:
                if opt.startswith("--") and opt not in GENERAL and not re.search(re.escape(opt) + r"(?![\w-])", text):
                    missing.append(f"{' '.join(path)} {opt}")
    assert not missing, f"not in README's Commands table: {missing}"


def test_the_version_option_is_documented() -> None:
    section = README.read_text(encoding="utf-8").split("## Commands", 1)[1].split("\n## ", 1)[0]
    assert "infersentry --version" in section
