"""The README's command reference is generated from --help; it must be current.

Regenerate with: .venv/bin/python scripts/cli_reference.py
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _script():
    spec = importlib.util.spec_from_file_location(
        "cli_reference", ROOT / "scripts/cli_reference.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cli_reference_is_current() -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert _script().updated(text) == text, "run: .venv/bin/python scripts/cli_reference.py"


def test_quick_start_is_two_commands_and_ci_runs_the_test_one() -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"## Quick start.*?```sh\n(.*?)```", text, re.S)
    assert block, "README has no quick-start code block"
    commands = [line for line in block.group(1).splitlines() if line and not line.startswith("#")]
    assert commands == ["make demo", "make test"]
    ci = (ROOT / ".ci/run").read_text(encoding="utf-8")
    assert "make test" in ci and "make lint" in ci
