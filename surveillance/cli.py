"""The `surveillance` command line: each command parses options, calls one library function
of the same name, and prints. Errors of the SurveillanceError family become one line on stderr
with exit status 1; usage errors exit 2 (click's convention)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from . import __version__
from .errors import SurveillanceError
from .output import render, render_json


class _Group(click.Group):
    """Turns library errors into one line on stderr and exit status 1, never a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except SurveillanceError as e:
            raise click.ClickException(str(e)) from e


def _db_option(f: Any) -> Any:
    return click.option(
        "--db",
        "db_path",
        type=click.Path(dir_okay=False, path_type=Path),
        envvar="SURVEILLANCE_DB",
        default=None,
        help="DuckDB database file (env SURVEILLANCE_DB; default data/surveillance.duckdb).",
    )(f)


def _db(db_path: Path | None) -> Path:
    from .db import default_path

    return db_path if db_path is not None else default_path()


def _echo_err(message: str) -> None:
    click.echo(message, err=True)


@click.group(cls=_Group)
@click.version_option(__version__, prog_name="surveillance")
def cli() -> None:
    """Load FDA FAERS quarterly files into DuckDB and survey a substance (kratom built in).

    Quick start: surveillance demo
    """


@cli.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@_db_option
@click.option("--quiet", is_flag=True, help="Print nothing but errors.")
def load(paths: tuple[Path, ...], db_path: Path | None, quiet: bool) -> None:
    """Load quarterly FAERS/LAERS ASCII zips (or folders of zips) into the database.

    One transaction per quarter; loading a quarter again replaces it.

    Example: surveillance load data/raw/faers_ascii_2024q1.zip --db kratom.duckdb
    """
    from .db import connect
    from .ingest import load as load_zips

    path = _db(db_path)
    with connect(path) as con:
        results = load_zips(con, paths, progress=None if quiet else _echo_err)
    if not quiet:
        for r in results:
            click.echo(
                f"{r.quarter}: {r.rows_loaded} rows loaded, {r.rows_quarantined} quarantined "
                f"({r.zip_path.name}, sha256 {r.sha256[:12]}) -> {path}"
            )


@cli.command()
@_db_option
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
def status(db_path: Path | None, fmt: str) -> None:
    """Show the quarters loaded, rows per table, quarantined rows and database size.

    Example: surveillance status --format json
    """
    from .db import connect
    from .status import status as db_status

    path = _db(db_path)
    with connect(path, read_only=True) as con:
        info = db_status(con, path)
    if fmt == "json":
        click.echo(render_json(info), nl=False)
        return
    import pandas as pd

    click.echo(f"database: {info['database']} ({info['database_bytes'] / 1e6:.1f} MB)")
    click.echo(f"quarters loaded: {info['n_quarters']}")
    if info["quarters"]:
        frame = pd.DataFrame(info["quarters"]).drop(columns=["zip_sha256", "loaded_at"])
        click.echo(render(frame, "table"), nl=False)


@cli.command()
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("demo-output"),
    show_default=True,
    help="Folder for the generated zips, the database and every output.",
)
@click.option("--seed", type=int, default=7, show_default=True)
def demo(out: Path, seed: int) -> None:
    """Generate a few SYNTHETIC FAERS quarters, load them and run every stage, offline.

    Example: surveillance demo --out /tmp/demo
    """
    from .demo import demo as run_demo

    for line in run_demo(out, seed=seed, progress=_echo_err):
        click.echo(line)


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="surveillance")


if __name__ == "__main__":
    sys.exit(main())
