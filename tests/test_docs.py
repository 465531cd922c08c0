"""The documentation: its generated reference pages are the code's, the site builds strictly (no
broken link, no page left out of the navigation), and every `scalesweep ...` command in a shell
block of the README or the docs parses against the CLI."""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import re
import shlex
import subprocess
import sys

import pytest

from conftest import ROOT
from orchestrator.cli import build_parser

PAGES = [ROOT / "README.md"] + sorted((ROOT / "docs").rglob("*.md"))


def test_the_reference_pages_are_generated_from_the_code():
    done = subprocess.run([sys.executable, str(ROOT / "docs" / "gen_reference.py"), "--check"], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_site_builds_strictly(tmp_path):
    pytest.importorskip("material", reason="mkdocs-material is in the dev extra: pip install -e '.[dev]'")
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(tmp_path / "site")],
                          cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, NO_MKDOCS_2_WARNING="1"))
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "site" / "reference" / "spec" / "index.html").exists()


def _commands() -> list[tuple[str, str]]:
    """(page, command) for every `scalesweep ...` in a bash or console block (continuations joined)."""
    out = []
    for page in PAGES:
        for block in re.findall(r"```(?:bash|sh|console)\n(.*?)```", page.read_text(), flags=re.S):
            for line in block.replace("\\\n", " ").splitlines():
                for part in re.split(r"&&|;", line):
                    part = part.strip().removeprefix("$ ").strip()
                    if part.startswith("scalesweep "):
                        out.append((str(page.relative_to(ROOT)), part))
    return out


COMMANDS = _commands()


def test_there_are_commands_to_check():
    assert len(COMMANDS) >= 15


@pytest.mark.parametrize("page, command", COMMANDS, ids=[f"{p}:{c[:60]}" for p, c in COMMANDS])
def test_every_documented_command_parses(page, command):
    argv = shlex.split(command, comments=True)[1:]
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            build_parser().parse_args(argv)
    except SystemExit as e:
        pytest.fail(f"{page}: `{command}` does not parse (exit {e.code}): {err.getvalue().strip()}")
    except argparse.ArgumentError as e:  # pragma: no cover - parse_args exits instead
        pytest.fail(f"{page}: `{command}`: {e}")
