"""Assertions shared by the tests that run the command line in a subprocess."""

from __future__ import annotations

import subprocess


def assert_one_line_error(r: subprocess.CompletedProcess[str], *words: str) -> None:
    """A user error: exit status 2 and one ``error:`` line on stderr that contains every word."""
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), r.stderr
    for w in words:
        assert w in lines[0], r.stderr
