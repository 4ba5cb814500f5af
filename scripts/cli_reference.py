"""Regenerate the README's command reference from the commands' --help, so it cannot drift.

Run: .venv/bin/python scripts/cli_reference.py   (tests/test_readme.py checks it is current)
"""

from __future__ import annotations

import sys
from pathlib import Path

import click
from click.testing import CliRunner

from surveillance.cli import cli

README = Path(__file__).resolve().parent.parent / "README.md"
START = "<!-- cli-reference:start -->"
END = "<!-- cli-reference:end -->"


def _commands(group: click.Group, prefix: list[str]) -> list[list[str]]:
    found = [prefix]
    for name in sorted(group.commands):
        command = group.commands[name]
        if isinstance(command, click.Group):
            found.extend(_commands(command, [*prefix, name]))
        else:
            found.append([*prefix, name])
    return found


def reference() -> str:
    """The reference section: every command's --help in a code block."""
    runner = CliRunner()
    parts = [START, ""]
    for path in _commands(cli, []):
        result = runner.invoke(cli, [*path, "--help"], prog_name="surveillance", terminal_width=100)
        title = " ".join(["surveillance", *path])
        parts += [f"### `{title}`", "", "```", result.output.rstrip(), "```", ""]
    parts.append(END)
    return "\n".join(parts)


def updated(text: str) -> str:
    """README text with its reference section replaced."""
    head, _, rest = text.partition(START)
    _, _, tail = rest.partition(END)
    return head + reference() + tail


if __name__ == "__main__":
    text = README.read_text(encoding="utf-8")
    new = updated(text)
    if "--check" in sys.argv:
        sys.exit(0 if new == text else 1)
    README.write_text(new, encoding="utf-8")
