"""Option names are a vocabulary: one word for "where to write" across commands.

`--out DIR` is a folder of results, `--output/-o FILE` one file, `--dest DIR` the folder of
downloaded zips; older names (`--plot`, `--report-dir`) stay as aliases, since scripts use them.
"""

from __future__ import annotations

import click

from surveillance.cli import cli

WRITE_WORDS = {"--out", "--output", "--dest"}
OLDER_NAMES = {"--plot", "--report-dir"}


def _commands(group: click.Group, prefix: str = "") -> list[tuple[str, click.Command]]:
    found = []
    for name, command in group.commands.items():
        found.append((prefix + name, command))
        if isinstance(command, click.Group):
            found += _commands(command, prefix + name + " ")
    return found


def test_every_place_to_write_is_named_out_output_or_dest() -> None:
    for name, command in _commands(cli):
        for param in command.params:
            if not isinstance(param, click.Option) or not isinstance(param.type, click.Path):
                continue
            if param.name in ("db_path", "substance_file") or param.type.exists:
                continue
            words = set(param.opts) | set(param.secondary_opts)
            assert words & WRITE_WORDS, f"{name}: {param.opts} should be --out, --output or --dest"
            assert words <= WRITE_WORDS | OLDER_NAMES | {"-o"}, f"{name}: {param.opts}"


def test_older_names_still_parse() -> None:
    trends = cli.commands["trends"].make_context("trends", ["--plot", "figs"])
    update = cli.commands["update"].make_context("update", ["--report-dir", "r"])
    assert str(trends.params["plot_dir"]) == "figs" and str(update.params["report_dir"]) == "r"
    trends = cli.commands["trends"].make_context("trends", ["--out", "figs"])
    assert str(trends.params["plot_dir"]) == "figs"
