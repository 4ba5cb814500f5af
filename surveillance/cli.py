"""The `surveillance` command line: each command parses options, calls one library function
of the same name, and prints. Errors of the SurveillanceError family, DuckDB errors and OS
errors become one line on stderr with exit status 1; usage errors exit 2 (click's convention).
Set SURVEILLANCE_TRACEBACK=1 to let unexpected errors through with their traceback."""

from __future__ import annotations

import os
import sys
import textwrap
from pathlib import Path
from typing import Any

import click

from . import __version__
from .errors import DatabaseError, SurveillanceError, UsageError
from .output import render, render_json
from .polysubstance import SUBSETS, class_names, drug_classes


class _UsageLine(click.ClickException):
    """Bad usage as one line on stderr, exit status 2."""

    exit_code = 2


def _one_line(text: str) -> str:
    return " ".join(text.split()) or "unknown error"


def _os_error(e: OSError) -> str:
    where = f"{e.filename}: " if e.filename else ""
    return f"{where}{e.strerror or e}"


def _out_of_memory() -> str:
    from .db import memory_limit

    return (
        f"out of memory: this step needs more than the memory limit ({memory_limit()}) even "
        "after spilling to DB.tmp beside the database; raise --memory-limit (or "
        "SURVEILLANCE_MEMORY_LIMIT) or free disk space for the spill"
    )


class _Group(click.Group):
    """The one error seam: library, DuckDB and OS errors become one line on stderr and exit
    status 1 (bad usage: 2), never a traceback; --memory-limit applies to every connection."""

    def make_context(
        self,
        info_name: str | None,
        args: list[str],
        parent: click.Context | None = None,
        **extra: Any,
    ) -> click.Context:
        try:
            return super().make_context(info_name, args, parent, **extra)
        except click.UsageError as e:
            raise _UsageLine(f"{_one_line(e.format_message())} (see 'surveillance --help')") from e

    def invoke(self, ctx: click.Context) -> Any:
        from .db import memory_limit_override

        show_tracebacks = bool(os.environ.get("SURVEILLANCE_TRACEBACK"))
        try:
            with memory_limit_override(ctx.params.get("memory_limit")):
                return super().invoke(ctx)
        except click.exceptions.Exit:
            raise
        except click.UsageError as e:
            command = " ".join(filter(None, ["surveillance", ctx.invoked_subcommand]))
            raise _UsageLine(f"{_one_line(e.format_message())} (see '{command} --help')") from e
        except click.ClickException:
            raise
        except UsageError as e:
            raise _UsageLine(_one_line(str(e))) from e
        except SurveillanceError as e:
            raise click.ClickException(_one_line(str(e))) from e
        except OSError as e:
            if show_tracebacks:
                raise
            raise click.ClickException(_one_line(_os_error(e))) from e
        except Exception as e:
            duckdb = sys.modules.get("duckdb")
            if show_tracebacks or duckdb is None or not isinstance(e, duckdb.Error):
                raise
            if isinstance(e, duckdb.OutOfMemoryException):
                raise click.ClickException(_out_of_memory()) from e
            raise click.ClickException(_one_line(str(e).strip().splitlines()[0])) from e


def _db_option(f: Any) -> Any:
    return click.option(
        "--db",
        "db_path",
        type=click.Path(dir_okay=False, path_type=Path),
        envvar="SURVEILLANCE_DB",
        default=None,
        help="DuckDB database file (env SURVEILLANCE_DB; default data/surveillance.duckdb).",
    )(f)


def _dedup_option(f: Any) -> Any:
    return click.option(
        "--dedup",
        type=click.Choice(["fda", "strict"]),
        default=None,
        help="fda: latest version per case, deleted cases removed (default). strict: also flag "
        "rule-based and literature duplicates (query literature_duplicates lists the latter). "
        "Omitted: keep the mode of the last rebuild.",
    )(f)


def _raw_csv(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if value:
        from .output import raw_csv

        ctx.with_resource(raw_csv())


def _csv_raw_option(f: Any) -> Any:
    return click.option(
        "--csv-raw",
        is_flag=True,
        expose_value=False,
        callback=_raw_csv,
        help="CSV exactly as stored: no quote before text starting with = + - @ (for programs; "
        "env SURVEILLANCE_CSV_RAW=1).",
    )(f)


def _format_option(f: Any) -> Any:
    f = _csv_raw_option(f)
    return click.option(
        "--format",
        "fmt",
        type=click.Choice(["table", "csv", "json"]),
        default=None,
        help="Output format (default: table on a terminal, csv when piped).",
    )(f)


def _quiet_option(f: Any) -> Any:
    return click.option(
        "--quiet",
        is_flag=True,
        help="No progress on stderr (none either when it is not a terminal).",
    )(f)


def _substance_options(f: Any) -> Any:
    f = click.option(
        "--substance-file",
        type=click.Path(dir_okay=False, exists=True, path_type=Path),
        default=None,
        help="A TOML term file of your own substance (same format as the built-in kratom.toml).",
    )(f)
    return click.option(
        "--substance", default="kratom", show_default=True, help="Built-in substance name."
    )(f)


def _source_option(f: Any) -> Any:
    return click.option(
        "--source",
        type=click.Choice(["faers", "caers"]),
        default="faers",
        show_default=True,
        help="faers: FAERS quarterly zips; caers: FDA CAERS CSV exports (foods, supplements, "
        "cosmetics), kept apart from FAERS and never pooled with it.",
    )(f)


def _print_frame(frame: Any, fmt: str | None, wrap: str | None = None) -> None:
    from .output import default_format

    click.echo(render(frame, fmt or default_format(), wrap=wrap), nl=False)


# How each command uses the database, in one place: "create" may create it; "exists" needs it;
# "rebuild" and "refuse" read derived tables, which must be current with the loaded quarters:
# commands that open it read-write rebuild what is behind (and say so), read-only ones refuse.
_DB_USE = {
    "load": "create",
    "update": "create",
    "rebuild": "exists",
    "status": "exists",
    "schema": "exists",
    "sql": "exists",
    "cases": "rebuild",
    "signals": "rebuild",
    "trends": "rebuild",
    "alerts": "rebuild",
    "report": "rebuild",
    "discover": "rebuild",
    "case": "refuse",
    "query": "refuse",
    "export": "refuse",
}


def _db(db_path: Path | None, source: str = "faers") -> Path:
    """The database path of this command, checked as `_DB_USE` says before the command runs
    (for CAERS, whose tables are derived in the load's transaction, only that it exists)."""
    from .db import check_file, default_path

    path = db_path if db_path is not None else default_path()
    ctx = click.get_current_context(silent=True)
    use = _DB_USE.get(ctx.command.name or "", "exists") if ctx is not None else "exists"
    if source == "caers" and use in ("rebuild", "refuse"):
        use = "exists"
    if not path.exists():
        if use == "create":
            return path
        raise DatabaseError(f"no database at {path}; load quarters first or pass --db")
    check_file(path)
    if use in ("rebuild", "refuse"):
        from .api import Database

        with Database(path, read_only=use == "refuse", log=_echo_err) as db:
            db.ensure_current()
    return path


def _echo_err(message: str) -> None:
    click.echo(message, err=True)


def _silent(message: str) -> None:
    """Progress sink when there is no terminal to show it on."""


def _check_memory_limit(_ctx: click.Context, _param: click.Parameter, value: str | None) -> Any:
    from .db import check_memory_limit

    if value is None:
        return None
    try:
        return check_memory_limit(value)
    except UsageError as e:
        raise click.BadParameter(str(e)) from e


@click.group(cls=_Group)
@click.version_option(__version__, prog_name="surveillance")
@click.option(
    "--memory-limit",
    envvar="SURVEILLANCE_MEMORY_LIMIT",
    default=None,
    callback=_check_memory_limit,
    help="DuckDB memory limit of every connection, e.g. 8GB; work beyond it spills to "
    "DB.tmp beside the database (env SURVEILLANCE_MEMORY_LIMIT; default half of RAM, at most "
    "4 GiB; 'sql' alone: 1GiB).",
)
def cli(memory_limit: str | None) -> None:
    """Load FDA FAERS quarterly files into DuckDB and survey a substance (kratom built in).

    Quick start: surveillance demo
    """


@cli.command(name="fetch")
@click.argument("quarters", nargs=-1)
@click.option("--latest", is_flag=True, help="The newest quarter on the FDA's index page.")
@click.option(
    "--dest",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("data/raw"),
    show_default=True,
)
@click.option("--base-url", default=None, help="Where the zips live (default: the FDA's).")
@click.option("--index-url", default=None, help="The index page to read links from.")
@click.option("--list", "list_only", is_flag=True, help="List the quarters published.")
@click.option(
    "--connect-timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Seconds to connect (env SURVEILLANCE_FETCH_CONNECT_TIMEOUT; default 15).",
)
@click.option(
    "--read-timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Seconds to wait for the next bytes (env SURVEILLANCE_FETCH_READ_TIMEOUT; default 60).",
)
@click.option(
    "--deadline",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Seconds per file, retries included; a partial file is kept to resume "
    "(env SURVEILLANCE_FETCH_DEADLINE; default 3600).",
)
@click.option("--quiet", is_flag=True, help="No progress bar or summary.")
def fetch_command(
    quarters: tuple[str, ...],
    latest: bool,
    dest: Path,
    base_url: str | None,
    index_url: str | None,
    list_only: bool,
    connect_timeout: float | None,
    read_timeout: float | None,
    deadline: float | None,
    quiet: bool,
) -> None:
    """Download quarterly ASCII zips from the FDA (resumable, verified), or list them.

    QUARTERS are like 2024Q1 or ranges like 2023Q1-2024Q2.

    Example: surveillance fetch 2023Q1-2024Q2 --dest data/raw
    """
    from .fetch import DEFAULT_BASE_URL, DEFAULT_INDEX_URL, Timeouts, fetch, list_published

    timeouts = Timeouts.from_env(connect=connect_timeout, read=read_timeout, deadline=deadline)
    if list_only:
        import pandas as pd

        published = list_published(index_url or DEFAULT_INDEX_URL, timeouts=timeouts)
        frame = pd.DataFrame([(p.quarter, p.size_text, p.url) for p in published])
        frame.columns = ["quarter", "size", "url"]
        click.echo(render(frame, "table"), nl=False)
        return
    results = fetch(
        list(quarters) or None,
        dest=dest,
        base_url=base_url or DEFAULT_BASE_URL,
        index_url=index_url,
        latest=latest,
        progress=False if quiet else None,
        timeouts=timeouts,
    )
    if not quiet:
        for f in results:
            click.echo(
                f"{f.quarter}: {f.status} {f.path} ({f.bytes:,} bytes, sha256 {f.sha256[:12]})"
            )


@cli.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@_db_option
@_dedup_option
@_source_option
@click.option("--quiet", is_flag=True, help="Print nothing but errors.")
def load(
    paths: tuple[Path, ...], db_path: Path | None, dedup: str | None, source: str, quiet: bool
) -> None:
    """Load quarterly FAERS/LAERS ASCII zips (or folders of zips) into the database.

    One transaction per quarter; loading a quarter again replaces it. The clean layer and the
    built-in substances are rebuilt afterwards. With --source caers, CAERS CSV exports (or
    folders of them) load in one transaction into the caers_* tables.

    Example: surveillance load data/raw/faers_ascii_2024q1.zip --db kratom.duckdb

    CAERS: surveillance load --source caers CAERS_ASCII_2004_2017Q2.csv
    """
    from .api import Database
    from .progress import terminal_progress

    path = _db(db_path)
    if source == "caers":
        from .caers import load as load_caers
        from .db import connect
        from .output import terminal_safe

        if dedup is not None:
            raise UsageError("--dedup applies to FAERS; CAERS counts reports")
        with terminal_progress(quiet) as step, connect(path) as con:
            loaded = load_caers(con, paths, progress=step or _silent)
        if not quiet:
            for c in loaded:
                click.echo(
                    terminal_safe(
                        f"CAERS {c.file}: {c.rows_read} rows read, {c.rows_loaded} loaded, "
                        f"{c.rows_quarantined} quarantined ({c.layout} layout, sha256 "
                        f"{c.sha256[:12]}) -> {path}"
                    )
                )
        return
    with terminal_progress(quiet) as step, Database(path, log=step or _silent) as db:
        results = db.load(*paths, dedup=dedup)
    if not quiet:
        for r in results:
            for warning in r.warnings:
                _echo_err(f"warning: {r.quarter} {warning}")
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
    from .api import Database

    path = _db(db_path)
    with Database(path, read_only=True) as db:
        info = db.status()
    if fmt == "json":
        click.echo(render_json(info), nl=False)
        return
    import pandas as pd

    click.echo(f"database: {info['database']} ({info['database_bytes'] / 1e6:.1f} MB)")
    click.echo(f"quarters loaded: {info['n_quarters']}")
    click.echo(f"derived tables: {info['derived_tables']}")
    click.echo(f"next load's rebuild: {info['next_load_rebuild']}")
    if info["quarters"]:
        frame = pd.DataFrame(info["quarters"]).drop(columns=["zip_sha256", "loaded_at", "zip_name"])
        frame.columns = [c.removeprefix("n_").removesuffix("_rows") for c in frame.columns]
        frame = frame.rename(columns={"deleted_caseids": "deleted", "quarantined": "quarant."})
        click.echo(render(frame, "table"), nl=False)
    if info["dedup_steps"]:
        click.echo(f"\nclean layer (dedup {info['dedup_steps'][0]['dedup_mode']}):")
        steps = pd.DataFrame(info["dedup_steps"]).drop(columns=["dedup_mode"])
        click.echo(render(steps, "table"), nl=False)
    if info["substances"]:
        click.echo("\nsubstances:")
        click.echo(render(pd.DataFrame(info["substances"]), "table"), nl=False)


@cli.command()
@_db_option
@_dedup_option
@click.option(
    "--incremental",
    is_flag=True,
    help="Re-derive only the cases the quarters loaded since the last rebuild affect (a dedup "
    "mode change alone: only the flags), as a load does; full where `status` says the next "
    "load's rebuild is full (another tool version or clean-layer code).",
)
@_quiet_option
def rebuild(db_path: Path | None, dedup: str | None, incremental: bool, quiet: bool) -> None:
    """Rebuild the clean layer (deduplicated cases) and the built-in substances' hits.

    Example: surveillance rebuild --dedup strict --incremental
    """
    from .api import Database
    from .progress import terminal_progress

    with terminal_progress(quiet) as step, Database(_db(db_path), log=step or _silent) as db:
        steps = db.rebuild(dedup=dedup, incremental=incremental)
    click.echo(render(steps[["step", "n_reports", "n_cases"]], "table"), nl=False)


@cli.command(name="cases")
@_db_option
@_substance_options
@click.option("--since", default=None, help="First FDA quarter, e.g. 2019Q1.")
@click.option("--until", default=None, help="Last FDA quarter, e.g. 2024Q4.")
@click.option("--roles", default=None, help="Drug roles that count, e.g. PS,SS (default: any).")
@click.option("--term", default=None, help="Only cases with a reaction term containing TEXT.")
@click.option(
    "--co-suspects",
    is_flag=True,
    help="Instead of the cases: their other suspect drugs (PS/SS) by class "
    f"({', '.join(class_names())}), a case once per class.",
)
@click.option(
    "--onset",
    is_flag=True,
    help="Instead of the cases: time to onset per term (median, IQR, Weibull shape, 95% CI).",
)
@click.option(
    "--dechallenge",
    is_flag=True,
    help="Instead of the cases: dechallenge and rechallenge results per term.",
)
@click.option(
    "--top-terms",
    type=click.IntRange(min=0),
    default=None,
    help="With --onset/--dechallenge: rows for this many most reported terms (default 10).",
)
@click.option(
    "--groups", is_flag=True, help="With --onset/--dechallenge: add the shipped event groups."
)
@click.option(
    "--out",
    "plot_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="With --onset: write the onset figure (PNG and SVG) into this folder.",
)
@_source_option
@_format_option
def cases_command(
    db_path: Path | None,
    substance: str,
    substance_file: Path | None,
    since: str | None,
    until: str | None,
    roles: str | None,
    term: str | None,
    co_suspects: bool,
    source: str,
    onset: bool,
    dechallenge: bool,
    top_terms: int | None,
    groups: bool,
    plot_dir: Path | None,
    fmt: str | None,
) -> None:
    """List the deduplicated cases that involve a substance, one row per case; or, with
    --onset or --dechallenge, summarise them per term.

    --onset: days from the first therapy start of the substance to the event, from full dates
    only (partial dates and events before the start are counted, flagged and left out); the
    Weibull shape < 1 reads as an early hazard, > 1 as a late one. --dechallenge: cases by the
    dechal/rechal codes of the substance's drug rows (Y positive, N negative, U unknown, D does
    not apply). --onset --format json adds the method and each case's onset and status.

    With --source caers: one row per CAERS report with a product matching the substance
    (--since/--until on its CAERS created date; --roles PS,SS = Suspect, C = Concomitant).

    Example: surveillance cases --substance kratom --since 2019Q1 --roles PS,SS --format csv

    Co-suspect profile: surveillance cases --substance kratom --co-suspects

    Example: surveillance cases --onset --groups --out figures/
    """
    from .db import connect
    from .extract import resolve
    from .polysubstance import co_suspect_profile

    if source == "caers":
        if co_suspects or onset or dechallenge or top_terms is not None or groups or plot_dir:
            raise UsageError(
                "--co-suspects, --onset, --dechallenge, --top-terms, --groups and --out: FAERS "
                "only, not with --source caers"
            )
        from .caers import cases as caers_cases

        with connect(_db(db_path, source)) as con:
            frame = caers_cases(con, resolve(substance, substance_file), since, until, roles, term)
        _print_frame(frame, fmt)
        return
    if co_suspects and (since or until or term):
        raise UsageError(
            "--co-suspects profiles all the substance's cases: not with --since, --until or --term"
        )
    if sum((co_suspects, onset, dechallenge)) > 1:
        raise click.UsageError(
            "--co-suspects, --onset and --dechallenge are separate tables; choose one"
        )
    if not (onset or dechallenge) and (groups or top_terms is not None):
        raise click.UsageError("--top-terms and --groups need --onset or --dechallenge")
    if plot_dir is not None and not onset:
        raise click.UsageError("--out needs --onset")
    options = (since, until, roles, term)
    top = 10 if top_terms is None else top_terms
    with connect(_db(db_path)) as con:
        which = resolve(substance, substance_file)
        if co_suspects:
            frame = co_suspect_profile(con, which, roles)
        elif onset:
            from .onset import onset as time_to_onset

            result = time_to_onset(con, which, *options, top_terms=top, groups=groups)
            frame = result.table
        elif dechallenge:
            from .dechallenge import dechallenge as challenges

            frame = challenges(con, which, *options, top_terms=top, groups=groups)
        else:
            from .cases import cases

            frame = cases(con, which, *options)
    from .output import default_format

    fmt = fmt or default_format()
    if fmt == "table" and (onset or dechallenge):
        from . import dechallenge as challenge_module
        from . import onset as onset_module

        frame = (onset_module if onset else challenge_module).compact(frame)
    if fmt == "json" and onset:
        record = {"metadata": result.metadata(), "table": frame, "cases": result.cases}
        click.echo(render_json({k: _plain(v) for k, v in record.items()}), nl=False)
    else:
        _print_frame(frame, fmt)
    if onset and plot_dir is not None:
        from .plots import plot_onset

        written = plot_onset(result, plot_dir)
        _echo_err(f"wrote {len(written)} files to {plot_dir}")


@cli.command(name="case")
@click.argument("caseid")
@_db_option
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "json"]),
    default="table",
    help="table: a summary to read; json: every field of every table.",
)
def case_command(caseid: str, db_path: Path | None, fmt: str) -> None:
    """Show one case: header, patient, versions with what changed, drugs with roles, doses and
    the matched substance marked, reactions, outcomes, indications and therapy dates.

    Example: surveillance case 10014022
    """
    from .cases import case, format_case
    from .db import connect

    with connect(_db(db_path), read_only=True) as con:
        detail = case(con, caseid)
    if fmt == "json":
        click.echo(render_json({k: _plain(v) for k, v in detail.items()}), nl=False)
        return
    click.echo(format_case(detail), nl=False)


def _plain(value: Any) -> Any:
    if hasattr(value, "to_dict"):
        import json

        return json.loads(value.to_json(orient="records", date_format="iso"))
    return value


@cli.command(name="signals")
@_db_option
@_substance_options
@click.option("--through", default=None, help="Last quarter of data (default: the latest).")
@click.option("--roles", default=None, help="Drug roles that count, e.g. PS,SS (default: any).")
@click.option("--min-cases", type=int, default=3, show_default=True, help="Minimum a.")
@click.option("--stratify", default=None, help="Strata, any of sex,age,year.")
@click.option(
    "--sort",
    type=click.Choice(["ebgm", "eb05", "ror", "ror_lower", "prr", "ic", "ic025", "a", "p_adj"]),
    default=None,
    help="Sort column (default: eb05; ic025 when EBGM is unavailable).",
)
@click.option("--show-prior", is_flag=True, help="Print the fitted EBGM prior and its fit.")
@click.option(
    "--background",
    default="all",
    show_default=True,
    help="Comparator: all cases, natural-products, or a term file FILE.toml; c and d count "
    "only its cases (never the substance's).",
)
@click.option("--groups", is_flag=True, help="Add the shipped event groups as rows (term_kind).")
@click.option(
    "--group-file",
    "group_files",
    multiple=True,
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="An event-group file of your own (FILE.toml); repeatable.",
)
@click.option(
    "--meddra",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    default=None,
    help="A MedDRA ASCII folder (mdhier.asc): add HLT, HLGT and SOC groups.",
)
@click.option(
    "--exclude-window",
    type=int,
    default=None,
    metavar="MONTHS",
    help="Leave out the cases initially received within MONTHS months on or after any of the "
    "substance's regulatory events (data/regulatory_events.csv); the usual window is 6.",
)
@click.option(
    "--era",
    default=None,
    metavar="ERA",
    # The values are notoriety.ERAS (checked there, and against this text by a test); reading
    # them here would load the statistics stack for every command's --help.
    help="Only the cases initially received in one era: before-2018 or 2018-on.",
)
@click.option(
    "--remove-maskers",
    type=int,
    default=None,
    metavar="K",
    help="Take off each term's c and d the cases of its K drugs of highest masking ratio "
    "(Maignen 2014), named in a maskers column.",
)
@click.option(
    "--subset",
    type=click.Choice(SUBSETS),
    default=None,
    metavar="only|with-CLASS|without-CLASS",
    help="Only these of the substance's cases (others leave a, b, c and d): only (no other "
    "suspect drug), with-CLASS or without-CLASS (another suspect drug of the class or not); "
    f"CLASS: {', '.join(c.name for c in drug_classes())}.",
)
@click.option(
    "--engine",
    type=click.Choice(["duckdb", "spark"]),
    default="duckdb",
    show_default=True,
    help="What counts: the database, or Apache Spark over a Parquet export (--parquet).",
)
@click.option(
    "--parquet",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    default=None,
    help="The Parquet export Spark reads ('surveillance export DIR'); --engine spark only.",
)
@click.option(
    "--spark-master",
    envvar="SURVEILLANCE_SPARK_MASTER",
    default="local[*]",
    show_default=True,
    help="Spark master URL, e.g. spark://host:7077 (env SURVEILLANCE_SPARK_MASTER).",
)
@click.option(
    "--mh-by",
    default=None,
    metavar="FACTORS",
    help="Also the Mantel-Haenszel ROR beside the crude ROR of each term, with Breslow-Day, "
    "by any of age,sex,year,reporter (csv/json: this table instead of the signals).",
)
@click.option(
    "--sensitivity",
    is_flag=True,
    help="The strongest terms and the event groups under every sensitivity analysis side by "
    "side (suspect-only, comparator, substance alone, notoriety, masking, MH, era), and the "
    "terms whose classification changes (csv/json: one row per analysis and term).",
)
@_source_option
@_format_option
def signals_command(
    db_path: Path | None,
    substance: str,
    substance_file: Path | None,
    through: str | None,
    roles: str | None,
    min_cases: int,
    stratify: str | None,
    sort: str | None,
    show_prior: bool,
    background: str,
    groups: bool,
    group_files: tuple[Path, ...],
    meddra: Path | None,
    exclude_window: int | None,
    era: str | None,
    remove_maskers: int | None,
    subset: str | None,
    engine: str,
    parquet: Path | None,
    spark_master: str,
    mh_by: str | None,
    sensitivity: bool,
    source: str,
    fmt: str | None,
) -> None:
    """Disproportionality of a substance against every reaction term: PRR, ROR, IC, EBGM.

    Example: surveillance signals --substance kratom --through 2024Q4 --roles PS,SS --sort eb05

    Event groups and a comparator: surveillance signals --groups --background natural-products

    Kratom-only cases, or those with an opioid: surveillance signals --subset only

    On Spark, from an export: surveillance signals --engine spark --parquet export/

    Stratified: surveillance signals --mh-by age,sex,year,reporter

    Notoriety and masking: surveillance signals --exclude-window 6 --remove-maskers 1

    Sensitivity analyses: surveillance signals --sensitivity

    Within CAERS (product-level, reports not cases): surveillance signals --source caers
    """
    from .definitions import criteria_legend
    from .extract import resolve
    from .output import default_format, terminal_safe
    from .polysubstance import subset_statement
    from .signals import CAVEATS, background_statement, kind_marked
    from .stratified import compact_mh, legend, parse_factors, signal_mh

    factors = parse_factors(mh_by)
    mh = None
    caers = source == "caers"
    if caers:
        faers_only = {
            "--through": through,
            "--stratify": stratify,
            "--background": background != "all",
            "--groups": groups,
            "--group-file": group_files,
            "--meddra": meddra,
            "--engine spark": engine != "duckdb",
            "--parquet": parquet,
            "--mh-by": mh_by,
            "--exclude-window": exclude_window is not None,
            "--era": era,
            "--remove-maskers": remove_maskers is not None,
            "--subset": subset,
            "--sensitivity": sensitivity,
        }
        given = [name for name, value in faers_only.items() if value]
        if given:
            raise UsageError(f"{', '.join(given)}: FAERS only, not with --source caers")
    if sensitivity:
        designed = background != "all" or groups or group_files or meddra is not None
        excluded = (exclude_window, era, remove_maskers, subset) != (None, None, None, None)
        if designed or excluded or stratify or factors or engine != "duckdb" or sort:
            raise UsageError(
                "--sensitivity runs its own designs: use it without --background, --groups, "
                "--group-file, --meddra, --exclude-window, --era, --remove-maskers, --subset, "
                "--stratify, --mh-by, --sort and --engine spark"
            )
        _sensitivity_command(db_path, substance, substance_file, through, roles, min_cases, fmt)
        return
    if engine == "duckdb" and parquet is not None:
        raise UsageError("--parquet goes with --engine spark")
    if engine == "spark" and factors:
        raise UsageError("--mh-by counts the database: use it with --engine duckdb")
    if engine == "spark":
        from .spark import spark_signals

        if parquet is None:
            raise UsageError("--engine spark needs --parquet DIR (see 'surveillance export')")
        run = spark_signals(
            parquet,
            resolve(substance, substance_file),
            through,
            roles,
            min_cases,
            stratify,
            sort,
            master=spark_master,
            background=background,
            groups=groups,
            group_files=group_files,
            meddra=meddra,
            exclude_window=exclude_window,
            era=era,
            remove_maskers=remove_maskers,
            subset=subset,
        )
    else:
        from .db import connect
        from .signals import signals

        with connect(_db(db_path, source)) as con:
            chosen = resolve(substance, substance_file)
            if caers:
                from .caers import signals as caers_signals

                run = caers_signals(con, chosen, roles, min_cases, sort)
            else:
                run = signals(
                    con,
                    chosen,
                    through,
                    roles,
                    min_cases,
                    stratify,
                    sort,
                    background=background,
                    groups=groups,
                    group_files=group_files,
                    meddra=meddra,
                    exclude_window=exclude_window,
                    era=era,
                    remove_maskers=remove_maskers,
                    subset=subset,
                )
            if factors:
                mh = signal_mh(con, run, chosen, factors)
    fmt = fmt or default_format()
    warning = run.prior_warning
    if show_prior:
        p = run.prior
        _echo_err(
            f"EBGM prior: alpha1={p.alpha1:.4g} beta1={p.beta1:.4g} alpha2={p.alpha2:.4g} "
            f"beta2={p.beta2:.4g} P={p.p:.4g}; log-likelihood {p.loglik:.6g} over "
            f"{p.n_points:,} fitted points, {p.loglik_full:.6g} over all {p.n_pairs:,} "
            f"drug-term pairs; {'converged' if p.converged else 'NOT converged'}; {p.method}"
        )
    if fmt != "table":
        if warning:
            _echo_err(warning)
        if run.engine != "duckdb":
            _echo_err(f"Counted by {run.engine} from the Parquet export.")
        # The comparator (and any exclusion or masking) on stderr: the rows on stdout stay data.
        if caers:
            _echo_err("CAERS reports, product level; never pooled with FAERS.")
        else:
            _echo_err(terminal_safe(background_statement(run.design)))
        click.echo(render(run.table if mh is None else mh, fmt), nl=False)
        return
    if warning:
        click.echo(textwrap.fill(warning, width=78))
    click.echo(
        textwrap.fill(
            f"{'CAERS (never pooled with FAERS): ' if caers else ''}"
            f"{run.substance} {run.substance_version}: {run.n_substance_cases:,} of "
            f"{run.n_cases:,} {'reports' if caers else 'cases'} through {run.through}"
            f"{'; roles ' + run.roles if run.roles else ''}"
            f"{'; stratified by ' + ','.join(run.stratify) if run.stratify else ''}"
            f"{'; counted by Spark from the Parquet export' if run.engine == 'spark' else ''}; "
            f"{len(run.table)} terms with a >= {run.min_cases} (all columns: --format csv)",
            width=78,
        )
    )
    background_line = (
        "Background (c, d): all CAERS reports without a product of the substance."
        if caers
        else background_statement(run.design)
    )
    click.echo(textwrap.fill(terminal_safe(background_line), width=78))
    if run.design.subset is not None:
        click.echo(textwrap.fill(str(subset_statement(run.design.subset)), width=78))
    click.echo(render(compact_signals(kind_marked(run.table)), "table", max_rows=40), nl=False)
    footer = [
        f"Sorted by {run.sort}, largest first."
        if run.sort not in ("p_adj", "term")
        else f"Sorted by {run.sort}."
    ]
    if run.table["zero_corrected"].any():
        footer.append("* PRR and ROR with the zero-cell correction (0.5 added to each cell).")
    if run.table["ebgm_below_eb05"].any():
        footer.append(
            "^ EBGM below EB05: the posterior has two separated modes and the geometric mean "
            "falls between them; read EB05-EB95."
        )
    footer.append("PRIE marks: " + criteria_legend() + ".")
    if warning:
        footer.append(warning)
    if caers:
        from .caers import CAVEATS as CAERS_CAVEATS

        footer.append("Caveat: " + CAERS_CAVEATS)
    else:
        footer.append("Caveat: " + CAVEATS)
    for line in footer:
        click.echo(textwrap.fill(line, width=78))
    if mh is not None:
        click.echo(f"\nCrude and Mantel-Haenszel ROR by {', '.join(factors)}:")
        click.echo(render(compact_mh(mh), "table"), nl=False)
        for line in legend():
            click.echo(textwrap.fill(line, width=78))


def _sensitivity_command(
    db_path: Path | None,
    substance: str,
    substance_file: Path | None,
    through: str | None,
    roles: str | None,
    min_cases: int,
    fmt: str | None,
) -> None:
    """`signals --sensitivity`: run `sensitivity.sensitivity` and print it."""
    from .db import connect
    from .definitions import ROBUSTNESS_RULE
    from .extract import resolve
    from .output import default_format, terminal_safe
    from .sensitivity import ANALYSES, TERMINAL_LEGEND, sensitivity, terminal

    with connect(_db(db_path)) as con:
        result = sensitivity(con, resolve(substance, substance_file), through, roles, min_cases)
    labels = {a.key: a.label for a in ANALYSES}
    skipped = [f"Not run: {labels[k]}: {why}" for k, why in result.skipped.items()]
    fmt = fmt or default_format()
    if fmt != "table":
        for line in skipped:
            _echo_err(terminal_safe(line))
        click.echo(render(result.table, fmt), nl=False)
        return
    main = result.main
    click.echo(
        textwrap.fill(
            f"{main.substance} {main.substance_version}: sensitivity analyses of the "
            f"{sum(k == 'pt' for _, k in result.terms)} strongest terms and the event groups, "
            f"cases through {main.through}{'; roles ' + main.roles if main.roles else ''}",
            width=78,
        )
    )
    click.echo(render(terminal(result), "table"), nl=False)
    for line in (TERMINAL_LEGEND, ROBUSTNESS_RULE, *skipped):
        click.echo(textwrap.fill(terminal_safe(line), width=78))
    changes = result.changes()
    click.echo(f"\nClassifications that differ from the main analysis: {len(changes)}")
    for r in changes.itertuples(index=False):
        state = "a signal" if r.signal else "not a signal"
        click.echo(
            textwrap.fill(
                terminal_safe(f"  {r.term} ({r.term_kind}): {state} in {labels[r.analysis]}"),
                width=78,
                subsequent_indent="    ",
            )
        )
    click.echo("\nVerdicts:")
    for (term, kind), sentence in result.verdicts.items():
        click.echo(
            textwrap.fill(
                terminal_safe(f"  {term} ({kind}): {sentence}"), width=78, subsequent_indent="    "
            )
        )


def compact_signals(table: Any) -> Any:
    """The columns an analyst scans first, to 2-3 significant figures, to fit 80 columns.

    Missing EBGM (prior not converged) shows as n/a; '*' marks a zero-cell corrected PRR,
    '^' an EBGM below its EB05."""
    import pandas as pd

    from .definitions import CRITERIA

    def figure(value: float, mark: str = "") -> str:
        return "n/a" if pd.isna(value) else f"{value:.3g}{mark}"

    flags = table[[c.flag for c in CRITERIA]].to_numpy()
    return pd.DataFrame(
        {
            "term": table["term"].str.slice(0, 26),
            "a": table["a"],
            "E": [figure(v) for v in table["expected"]],
            "PRR": [
                figure(v, "*" if z else "")
                for v, z in zip(table["prr"], table["zero_corrected"], strict=True)
            ],
            "ROR_lo": [figure(v) for v in table["ror_lower"]],
            "IC025": [f"{v:.2f}" for v in table["ic025"]],
            "EBGM": [
                figure(v, "^" if below else "")
                for v, below in zip(table["ebgm"], table["ebgm_below_eb05"], strict=True)
            ],
            "EB05": [figure(v) for v in table["eb05"]],
            "PRIE": [
                "".join(c.mark if f else "." for c, f in zip(CRITERIA, row, strict=True))
                for row in flags
            ],
        }
    )


def _export_options(f: Any) -> Any:
    f = _csv_raw_option(f)
    f = click.option(
        "--force", is_flag=True, help="Replace --output FILE if it exists (never a database)."
    )(f)
    f = click.option(
        "--output",
        "-o",
        type=click.Path(dir_okay=False, path_type=Path),
        default=None,
        help="Write to FILE instead of stdout (needed for parquet; its suffix can set the format).",
    )(f)
    return click.option(
        "--format",
        "fmt",
        type=click.Choice(["table", "csv", "json", "parquet"]),
        default=None,
        help="Output format (default: from --output's suffix, else table on a terminal, csv "
        "when piped).",
    )(f)


@cli.command(name="query")
@click.argument("name", required=False)
@click.option(
    "-p",
    "--param",
    "params",
    nargs=2,
    multiple=True,
    metavar="NAME VALUE",
    help="A parameter of the query; repeat for several (see --list).",
)
@click.option("--list", "list_only", is_flag=True, help="List the named queries and parameters.")
@_db_option
@_export_options
def query_command(
    name: str | None,
    params: tuple[tuple[str, str], ...],
    list_only: bool,
    db_path: Path | None,
    fmt: str | None,
    output: Path | None,
    force: bool,
) -> None:
    """Run a named query from queries/*.sql with bound, type-checked parameters.

    Example: surveillance query top_reactions -p substance 7-oh -p limit_rows 10 --format csv
    """
    from .api import Database
    from .export import write_output
    from .query import describe_queries, params_from_pairs

    if list_only:
        click.echo(describe_queries(), nl=False)
        return
    if name is None:
        raise click.UsageError("give a query NAME, or --list to see them")
    with Database(_db(db_path), read_only=True) as db:
        frame = db.query(name, **params_from_pairs(params))
    write_output(frame, fmt, output, force=force, database=_db(db_path))


@cli.command(name="sql")
@click.argument("text")
@click.option(
    "--limit",
    type=click.IntRange(min=0),
    default=None,
    help="Fetch at most N rows; 0 for all (default: 100 in a table, all otherwise).",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=60.0,
    show_default=True,
    help="Cancel the statement after this many seconds.",
)
@_db_option
@_export_options
def sql_command(
    text: str,
    limit: int | None,
    timeout: float,
    db_path: Path | None,
    fmt: str | None,
    output: Path | None,
    force: bool,
) -> None:
    """Run one SQL statement on a read-only connection; TEXT '-' reads it from stdin.

    Nothing can be changed: the file is opened read-only, other files, DuckDB's temp folder and
    extensions are out of reach and settings are locked; the statement has a time limit and a
    memory cap. Refused while the clean layer is older than the loaded quarters. Tables and
    columns: surveillance schema.

    Example: surveillance sql "SELECT sex, count(*) AS n_cases FROM cases GROUP BY sex"
    """
    from .api import Database
    from .export import output_format, write_output

    if text == "-":
        text = sys.stdin.read()
    fmt = output_format(fmt, output)
    if limit is None:
        limit = 100 if fmt == "table" else 0
    with Database(_db(db_path), read_only=True) as db:
        frame = db.sql(text, limit=limit or None, timeout=timeout)
    write_output(frame, fmt, output, force=force, database=_db(db_path))
    if frame.attrs.get("truncated"):
        _echo_err(f"(first {limit} rows shown; --limit 0 for all)")


@cli.command(name="export")
@click.argument("dest", type=click.Path(path_type=Path))
@_db_option
@click.option(
    "--force",
    is_flag=True,
    help="Replace DEST if it holds an earlier export (never anything else).",
)
@_quiet_option
def export_command(dest: Path, db_path: Path | None, force: bool, quiet: bool) -> None:
    """Write the clean layer and substance matches as Parquet partitioned by quarter, with a
    manifest (row counts, sha256 of every file and of the raw inputs), for any engine to read.

    Refused while the clean layer or a substance's matches are older than the loaded quarters.

    Example: surveillance export exports/faers-parquet
    """
    from .api import Database
    from .output import terminal_safe
    from .parquet import summary
    from .progress import terminal_progress

    with terminal_progress(quiet) as step, Database(_db(db_path), read_only=True) as db:
        manifest = db.export_parquet(dest, force=force, progress=step)
    click.echo(terminal_safe(summary(manifest, dest)))


@cli.command(name="schema")
@click.argument("tables", nargs=-1)
@click.option("--tables", "tables_only", is_flag=True, help="One line per table, no columns.")
@_db_option
@_format_option
def schema_command(
    tables: tuple[str, ...], tables_only: bool, db_path: Path | None, fmt: str | None
) -> None:
    """List the tables and columns of the database with what each holds (for 'sql').

    Example: surveillance schema cases case_drugs
    """
    from .api import Database

    with Database(_db(db_path), read_only=True) as db:
        frame = db.tables() if tables_only else db.schema(*tables)
    _print_frame(frame, fmt, wrap="description")


@cli.command(name="trends")
@_db_option
@_substance_options
@click.option("--roles", default=None, help="Drug roles that count, e.g. PS,SS (default: any).")
@click.option("--top-terms", type=int, default=8, show_default=True)
@click.option(
    "--out",
    "--plot",
    "plot_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Write every figure (PNG and SVG) into this folder (--plot is the older name).",
)
@_format_option
@_quiet_option
def trends_command(
    db_path: Path | None,
    substance: str,
    substance_file: Path | None,
    roles: str | None,
    top_terms: int,
    plot_dir: Path | None,
    fmt: str | None,
    quiet: bool,
) -> None:
    """Per-quarter series for a substance and cumulative signal statistics; optional figures.

    A case counts in the quarter of its initial FDA receipt (new case); by_quarter also shows
    follow-ups received and cases by their latest version's quarter. --format csv writes every
    series as one long table (column 'series' names each); json an object of metadata and series.

    Example: surveillance trends --substance kratom --out figures/
    """
    from .db import connect
    from .extract import resolve
    from .output import default_format
    from .progress import terminal_progress
    from .trends import trends

    with connect(_db(db_path)) as con, terminal_progress(quiet) as step:
        if step:
            step(f"{substance}: series by quarter and cumulative statistics")
        series = trends(con, resolve(substance, substance_file), top_terms, roles)
    fmt = fmt or default_format()
    if fmt == "json":
        tables = {k: _plain(v) for k, v in series.tables().items()}
        click.echo(render_json({"metadata": series.metadata(), "series": tables}), nl=False)
    elif fmt == "csv":
        click.echo(render(series.long_table(), "csv"), nl=False)
    else:
        for name in ("by_quarter", "first_signal"):
            click.echo(f"== {name}")
            click.echo(render(series.tables()[name], "table", max_rows=60), nl=False)
    if plot_dir is not None:
        from .plots import plot_all

        with terminal_progress(quiet) as step:
            if step:
                step(f"drawing figures into {plot_dir}")
            written = plot_all(series, plot_dir)
        if not quiet:
            _echo_err(f"wrote {len(written)} files to {plot_dir}")


@cli.command(name="alerts")
@_db_option
@_substance_options
@click.option("--roles", default=None, help="Drug roles that count, e.g. PS,SS (default: any).")
@click.option(
    "--alpha",
    type=click.FloatRange(min=0, max=0.5, min_open=True),
    default=0.05,
    show_default=True,
    help="Chance of a false alert per term over the loaded quarters (both methods).",
)
@click.option(
    "--min-cases",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="MaxSPRT's M: the fewest cumulative cases that may alert (4: Kulldorff and Silva).",
)
@click.option(
    "--cusum-rr",
    type=click.FloatRange(min=1, min_open=True),
    default=2.0,
    show_default=True,
    help="The relative risk the CUSUM is tuned to detect (k = (RR - 1) / ln RR).",
)
@click.option(
    "--paths",
    is_flag=True,
    help="Print the quarter-by-quarter statistics of the alerting terms (with --term: of the "
    "terms containing TEXT) instead of the alerts.",
)
@click.option("--term", default=None, help="With --paths: terms containing TEXT, alerting or not.")
@_format_option
def alerts_command(
    db_path: Path | None,
    substance: str,
    substance_file: Path | None,
    roles: str | None,
    alpha: float,
    min_cases: int,
    cusum_rr: float,
    paths: bool,
    term: str | None,
    fmt: str | None,
) -> None:
    """Sequential alerts: Poisson MaxSPRT and CUSUM per term and event group over the quarters.

    Each loaded quarter is a look: the substance's new cases with the term against those
    expected at the background rate. Alerts new this quarter come first.

    Example: surveillance alerts --substance kratom --format csv > alerts.csv
    """
    from .db import connect
    from .extract import resolve
    from .output import default_format, terminal_safe
    from .sequential import sequential

    if term is not None and not paths:
        raise UsageError("--term selects the terms of --paths; add --paths")
    with connect(_db(db_path)) as con:
        result = sequential(
            con, resolve(substance, substance_file), roles, alpha, min_cases, cusum_rr
        )
    fmt = fmt or default_format()
    if paths:
        frame = result.paths
        if term is not None:
            frame = frame[frame["term"].str.contains(term, case=False, regex=False)]
        else:
            fired = result.alerts[["term", "term_kind"]].drop_duplicates()
            frame = frame.merge(fired, on=["term", "term_kind"])
        _print_frame(frame.reset_index(drop=True), fmt)
        return
    if fmt != "table":
        _print_frame(result.alerts, fmt)
        return
    alerts = result.alerts
    click.echo(
        textwrap.fill(
            terminal_safe(
                f"{result.substance}{'; roles ' + result.roles if result.roles else ''}: "
                f"{len(alerts)} alerts ({len(result.new_alerts)} new in {result.quarters[-1]}) "
                f"over {len(result.quarters)} loaded quarters, {result.quarters[0]}-"
                f"{result.quarters[-1]}; alpha {alpha:g} per term and method; MaxSPRT M "
                f"{min_cases}; CUSUM RR {cusum_rr:g}"
            ),
            width=78,
        )
    )
    import pandas as pd

    shown = pd.DataFrame(
        {
            "term": [
                (t if k == "pt" else f"[{k}] {t}")[:30]
                for t, k in zip(alerts["term"], alerts["term_kind"], strict=True)
            ],
            "method": alerts["method"],
            "quarter": alerts["alert_quarter"],
            "new": ["new" if n else "" for n in alerts["new_this_quarter"]],
            "cases": alerts["cum_observed"],
            "expected": [f"{v:.3g}" for v in alerts["cum_expected"]],
            "stat": [f"{v:.3g}" for v in alerts["statistic"]],
            "limit": [f"{v:.3g}" for v in alerts["threshold"]],
        }
    )
    click.echo(render(shown, "table", max_rows=60), nl=False)
    for line in (
        "cases, expected: cumulative at the alert quarter. stat/limit: MaxSPRT LLR and its exact "
        "critical value, or CUSUM S and its h. The chance of a false alert is controlled per term "
        "and method, not across terms. Quarter by quarter: --paths.",
    ):
        click.echo(textwrap.fill(line, width=78))


@cli.command(name="report")
@_db_option
@click.option(
    "--quarter",
    default=None,
    help="The quarter to report, e.g. 2025Q2 (default: the latest loaded; must be loaded).",
)
@_substance_options
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Output folder (default reports/QUARTER).",
)
@click.option("--roles", default=None, help="Drug roles that count, e.g. PS,SS (default: any).")
@click.option("--min-cases", type=int, default=3, show_default=True)
@_quiet_option
def report_command(
    db_path: Path | None,
    quarter: str | None,
    substance: str,
    substance_file: Path | None,
    out: Path | None,
    roles: str | None,
    min_cases: int,
    quiet: bool,
) -> None:
    """Write the quarterly report folder: index.html, report.md, tables, figures, metadata.

    Example: surveillance report --quarter 2025Q2 --substance kratom --out reports/2025Q2
    """
    from .db import connect
    from .progress import terminal_progress
    from .report import write_report

    with connect(_db(db_path)) as con, terminal_progress(quiet) as step:
        if step:
            step(f"writing the {quarter} report")
        folder = write_report(con, quarter, substance, substance_file, out, roles, min_cases)
    click.echo(f"report: {folder / 'index.html'}")


@cli.command(name="update")
@_db_option
@_substance_options
@click.option(
    "--out",
    "--report-dir",
    "report_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("reports"),
    show_default=True,
    help="Folder of the quarterly reports, one per quarter (--report-dir is the older name).",
)
@click.option(
    "--dest",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("data/raw"),
    show_default=True,
    help="Where downloaded zips are kept.",
)
@click.option("--since", default=None, help="Also fetch every published quarter from this one.")
@click.option("--base-url", default=None, help="Where the zips live (default: the FDA's).")
@click.option("--index-url", default=None, help="The FDA index page (default: the FDA's).")
@click.option("--quiet", is_flag=True, help="Print only errors (for cron).")
@click.option(
    "--alerts-exit-status/--no-alerts-exit-status",
    default=True,
    show_default=True,
    help="Exit 3 when a sequential alert fires in a quarter this run loaded (OUT/alerts.json).",
)
def update_command(
    db_path: Path | None,
    substance: str,
    substance_file: Path | None,
    report_dir: Path,
    dest: Path,
    since: str | None,
    base_url: str | None,
    index_url: str | None,
    quiet: bool,
    alerts_exit_status: bool,
) -> None:
    """Fetch what is new, load it, rebuild, and write the quarter's report (for a scheduler).

    Prints "nothing new" and exits 0 when there is nothing to do; refuses to run beside itself.
    Writes OUT/alerts.json (sequential alerts); exits 3 when one fired in a quarter it loaded.

    Example: surveillance update --db /srv/faers/kratom.duckdb --out /srv/faers/reports
    """
    from .fetch import DEFAULT_BASE_URL, DEFAULT_INDEX_URL
    from .update import ALERT_EXIT_STATUS, update

    result = update(
        _db(db_path),
        substance,
        substance_file,
        report_dir,
        dest,
        base_url or DEFAULT_BASE_URL,
        index_url or DEFAULT_INDEX_URL,
        since,
        log=(lambda _line: None) if quiet else click.echo,
    )
    if alerts_exit_status and result.new_alerts:
        raise click.exceptions.Exit(ALERT_EXIT_STATUS)


@cli.group(invoke_without_command=True)
@_db_option
@_substance_options
@click.pass_context
def terms(
    ctx: click.Context, db_path: Path | None, substance: str, substance_file: Path | None
) -> None:
    """Print a substance's term dictionary (names, patterns, exclusions, version).

    Example: surveillance terms --substance 7-oh
    """
    from .extract import resolve
    from .output import terminal_safe

    ctx.obj = {"db_path": db_path, "substance": substance, "substance_file": substance_file}
    if ctx.invoked_subcommand is not None:
        return
    s = resolve(substance, substance_file)
    click.echo(f"{s.name} {s.version}: {s.description}")
    click.echo(f"file: {s.source_path}")
    for label, items in (
        ("terms", s.terms),
        ("tokens", s.tokens),
        ("patterns", s.patterns),
        ("exclusions", s.exclusions),
        ("ambiguous (only beside a context word, never beside a blocker)", s.ambiguous),
        ("context words", s.context),
        ("blockers", s.blockers),
        ("sources", s.sources),
    ):
        if not items and label in ("context words", "blockers"):
            continue
        click.echo(f"{label} ({len(items)}):")
        for item in items:
            click.echo(f"  {terminal_safe(item)}")


@terms.command(name="discover")
@_db_option
@click.option("--limit", type=int, default=50, show_default=True)
@_format_option
@click.pass_context
def terms_discover(ctx: click.Context, db_path: Path | None, limit: int, fmt: str | None) -> None:
    """List drug strings in the database that no rule matched but that look like the substance.

    Example: surveillance terms --substance kratom discover --limit 20
    """
    from .db import connect
    from .extract import discover_terms, resolve
    from .output import default_format

    s = resolve(ctx.obj["substance"], ctx.obj["substance_file"])
    with connect(_db(db_path or ctx.obj["db_path"])) as con:
        frame = discover_terms(con, s, limit=limit)
    if frame.empty:
        _echo_err(
            f"looked at {frame.attrs['n_unmatched']:,} distinct unmatched drug strings; none "
            f"within similarity {frame.attrs['threshold']:g} of a {s.name} term"
        )
        if (fmt or default_format()) == "table":
            return
    _print_frame(frame, fmt, wrap="note")


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
    main()
