"""A signal run's design: which cases form the background (the comparator) and which case sets
are the events besides single PTs (event groups).

Reads the shipped event-group files (`surveillance/groups/*.toml`), a user's group files, a
site's MedDRA ASCII hierarchy (`mdhier.asc`, read only when its folder is given; nothing MedDRA
ships) and comparator term files in the substance format (`surveillance/backgrounds/*.toml`,
matched by `extract` like any substance). Writes only temp tables: `signals` builds its case
tables (`_sig_cases`, `_sig_exposed`, `_sig_reac`) and `Design.apply` narrows them to the
background and makes the events table `_sig_events` the cells are counted from. Every design
option goes through that one step; the default design (all cases, PTs only) leaves the case
tables as they are, so its results are those of a run without a design.

A subset of the substance's cases (`surveillance.polysubstance`: only, with-CLASS,
without-CLASS) removes the substance's other cases from all three tables. Options to come fit
the same step: an exclusion window removes cases from all three tables; a removal that differs
by term (masking) changes c and d per event, so it applies to the counted cells instead.

A group's EBGM uses the run's prior unchanged (fitted on drug-by-PT pairs only) with the group's
own n and E: the prior describes single drug-event pairs, and fitting groups into it would count
their cases twice and move every PT's EBGM whenever a group is added.

Event-group file format (the shipped files say the same at their top)::

    [group]
    name = "liver injury"        # the row's `term` in the signal table
    version = "1.0.0"            # bump when a PT is added or removed
    description = "..."
    sources = ["..."]            # where the PT list came from

    [terms]
    pts = ["Hepatotoxicity", "Drug-induced liver injury"]   # MedDRA PTs as FAERS reports them
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd

from .errors import InputError, NoDataError, UsageError
from .extract import ensure_extracted
from .notoriety import Exclusion
from .polysubstance import check_subset, class_file_version, narrow_to_subset
from .substances import Substance, load_substance

TERM_KINDS = ("pt", "group", "hlt", "hlgt", "soc")
"""What a signal-table row is: a single PT, a term group (a group file) or a MedDRA level."""
BACKGROUND_ALL = "all"
MEDDRA_HIERARCHY = "mdhier.asc"
MEDDRA_LLT = "llt.asc"
# mdhier.asc: pt_code, hlt_code, hlgt_code, soc_code, pt_name, hlt_name, hlgt_name, soc_name,
# soc_abbrev, null_field, pt_soc_code, primary_soc_fg, each line ending in '$'.
_MEDDRA_FIELDS = 12
# llt.asc: llt_code, llt_name, pt_code, llt_whoart_code, llt_harts_code, llt_costart_sym,
# llt_icd9_code, llt_icd9cm_code, llt_icd10_code, llt_currency, llt_jart_code.
_LLT_FIELDS = 11
_GROUP_KEYS = {"group": {"name", "version", "description", "sources"}, "terms": {"pts"}}

# "Case involves term file S in roles R" on the case temp tables, one definition for the
# substance (exposed) and the comparator (background). Through the last loaded quarter it is
# clean's involved_cases macro; as of an earlier quarter the raw drug rows of each case's
# version then, matched against the strings the term file's rules matched.
_INVOLVING_LATEST = """SELECT c.caseid FROM _sig_cases c
    JOIN involved_cases($which, $roles) i USING (caseid)"""
_INVOLVING_ASOF = """SELECT DISTINCT c.caseid FROM _sig_cases c
    JOIN (SELECT * FROM raw_drug
          WHERE drugname IN (SELECT string FROM substance_strings
                             WHERE substance = $which AND field = 'drugname')
             OR prod_ai IN (SELECT string FROM substance_strings
                            WHERE substance = $which AND field = 'prod_ai')) g
      ON g.source = c.source AND g.primaryid = c.primaryid AND g.quarter = c.quarter
    WHERE role_counts(g.role_cod, $roles)"""


def involving_sql(latest: bool) -> str:
    """SQL of the caseids of `_sig_cases` with a drug row matching term file `$which` in a
    counted role (`$roles`, NULL = any)."""
    return _INVOLVING_LATEST if latest else _INVOLVING_ASOF


@dataclass(frozen=True)
class EventGroup:
    """A set of PTs analysed as one event: a case has it when it has any PT of the set."""

    name: str
    kind: str  # one of TERM_KINDS but pt
    version: str
    source: str  # the file it was read from
    pts: tuple[str, ...]  # PT names as FAERS reports them

    @property
    def key(self) -> str:
        """The event's key among the PT keys: lower-case kind prefix, so never an upper-cased PT."""
        return f"{self.kind}:{self.name}"


@dataclass(frozen=True)
class Design:
    """Which cases are the background, which event groups are analysed besides single PTs, and
    which of the substance's cases count.

    background None is every case (today's default); otherwise the cases matching a term file
    (substance format) besides the substance's own cases, which always count. subset None is all
    the substance's cases; otherwise only those of the subset (`polysubstance.SUBSETS`)."""

    background: Substance | None = None
    groups: tuple[EventGroup, ...] = ()
    exclusion: Exclusion | None = None  # cases left out by initial receipt (notoriety.py)
    masking: int | None = None  # maskers removed per term from c and d (masking.py)
    subset: str | None = None  # None: all the substance's cases; else one of SUBSETS

    @property
    def is_default(self) -> bool:
        """Whether this design gives the plain run: all cases as background, PTs only."""
        return (
            self.background is None
            and not self.groups
            and self.exclusion is None
            and self.masking is None
            and self.subset is None
        )

    @property
    def background_label(self) -> str:
        """The comparator as outputs state it: 'all', else the term file's name and version."""
        if self.background is None:
            return BACKGROUND_ALL
        return f"{self.background.name} {self.background.version}"

    @property
    def background_name(self) -> str:
        """The comparator's name: 'all' or the term file's name."""
        return BACKGROUND_ALL if self.background is None else self.background.name

    def prior_key(self) -> list[str]:
        """What of the design changes the EBGM prior: the background, the exclusion and the
        subset (the prior is fitted on the drug-by-PT pairs of the analysed cases; groups and
        masking, which change only counted cells, do not enter it)."""
        key: list[Any] = []
        if self.background is not None:
            b = self.background
            key = ["background", b.name, b.version, _digest(b.source_path)]
        if self.exclusion is not None:
            key += self.exclusion.key()
        if self.subset is not None:
            key += ["subset", self.subset, class_file_version()]
        return key

    def key(self) -> list[Any]:
        """The design's identity in a run id: background, exclusion, subset, every group with its
        PTs and the number of maskers removed per term."""
        groups = [[g.kind, g.name, g.version, sorted(g.pts)] for g in self.groups]
        masking = [] if self.masking is None else ["masking", self.masking]
        return [*self.prior_key(), "groups", groups, *masking]

    def groups_json(self) -> str | None:
        """The groups as stored in `signal_runs.groups`: kind, name, version and file of each."""
        if not self.groups:
            return None
        return json.dumps(
            [
                {"kind": g.kind, "name": g.name, "version": g.version, "file": g.source}
                for g in self.groups
            ]
        )

    def prepare(self, con: duckdb.DuckDBPyConnection, substance: Substance) -> None:
        """Refuse a comparator that is the substance itself, or an exclusion made for another
        substance's events; extract the comparator's hits."""
        if self.exclusion is not None and self.exclusion.substance != substance.name:
            raise UsageError(
                f"the exclusion was made for {self.exclusion.substance}'s events, "
                f"not {substance.name}'s"
            )
        if self.background is None:
            return
        if self.background.name == substance.name:
            raise UsageError(
                f"--background: the comparator {self.background.name!r} is the substance itself"
            )
        ensure_extracted(con, self.background)

    def apply(
        self,
        con: duckdb.DuckDBPyConnection,
        latest: bool,
        roles: str | None,
        substance: str,
        through: str | None = None,
    ) -> None:
        """Narrow the case tables to the substance's cases (of the subset) and the background's,
        less the excluded ones (initial receipt as of `through`), and build `_sig_events`
        (caseid, stratum, pt_key): each case's PTs, and each group it has once."""
        if self.exclusion is not None:
            self.exclusion.apply(con, latest, through)
        if self.subset is not None:
            narrow_to_subset(con, self.subset, substance, latest)
        if self.background is not None:
            con.execute(
                f"CREATE OR REPLACE TEMP TABLE _sig_background AS {involving_sql(latest)}",
                {"which": self.background.name, "roles": roles},
            )
            con.execute(
                """DELETE FROM _sig_cases c WHERE NOT EXISTS (
                    SELECT 1 FROM _sig_exposed e WHERE e.caseid = c.caseid)
                AND NOT EXISTS (SELECT 1 FROM _sig_background b WHERE b.caseid = c.caseid)"""
            )
            con.execute(
                """DELETE FROM _sig_reac r WHERE NOT EXISTS (
                    SELECT 1 FROM _sig_cases c WHERE c.caseid = r.caseid)"""
            )
        if not self.groups:
            con.execute(
                "CREATE OR REPLACE TEMP VIEW _sig_events AS "
                "SELECT caseid, stratum, pt_key FROM _sig_reac"
            )
            return
        con.register("_sig_group_frame", group_members(event_groups(self)))
        try:
            con.execute(
                """CREATE OR REPLACE TEMP TABLE _sig_group_events AS
                SELECT DISTINCT r.caseid, r.stratum, g.event_key AS pt_key
                FROM _sig_reac r JOIN _sig_group_frame g USING (pt_key)"""
            )
        finally:
            con.unregister("_sig_group_frame")
        con.execute(
            """CREATE OR REPLACE TEMP VIEW _sig_events AS
            SELECT caseid, stratum, pt_key FROM _sig_reac
            UNION ALL SELECT caseid, stratum, pt_key FROM _sig_group_events"""
        )

    def check_background(self, n_background: int, through: str) -> None:
        """A comparator without a single case besides the substance's is a NoDataError: c and d
        would be empty."""
        if self.background is not None and n_background == 0:
            raise NoDataError(
                f"no {self.background.name} cases besides the substance's through {through}; "
                "choose another --background"
            )

    def names(self) -> dict[str, str]:
        """Each group event's key and its display name (the row's `term`)."""
        return {g.key: g.name for g in self.groups}

    def kinds(self) -> dict[str, str]:
        """Each group event's key and its kind (the row's `term_kind`)."""
        return {g.key: g.kind for g in self.groups}


DEFAULT = Design()


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# --- comparators ---------------------------------------------------------------------------
def _shipped_folder(name: str) -> Any:
    return resources.files("surveillance") / name


def shipped_backgrounds() -> tuple[str, ...]:
    """The shipped comparator names (`--background NAME`), besides 'all'."""
    folder = _shipped_folder("backgrounds")
    return tuple(
        sorted(p.name.removesuffix(".toml") for p in folder.iterdir() if p.name.endswith(".toml"))
    )


def load_background(value: str | Path | None) -> Substance | None:
    """The comparator `--background` names: None for 'all', a shipped one by name, else a term
    file in the substance format."""
    if value is None or str(value) == BACKGROUND_ALL:
        return None
    if str(value) in shipped_backgrounds():
        return load_substance(Path(str(_shipped_folder("backgrounds") / f"{value}.toml")))
    path = Path(value)
    if not path.is_file():
        known = ", ".join((BACKGROUND_ALL, *shipped_backgrounds()))
        raise UsageError(f"--background: {value}: not {known} nor a term file (FILE.toml)")
    return load_substance(path)


# --- event groups --------------------------------------------------------------------------
def shipped_group_files() -> tuple[Path, ...]:
    """The shipped event-group files (`--groups`), by file name."""
    folder = _shipped_folder("groups")
    return tuple(sorted(Path(str(p)) for p in folder.iterdir() if p.name.endswith(".toml")))


def load_group_file(path: str | Path) -> EventGroup:
    """One event-group file, checked; a bad file is an InputError naming the file and problem."""
    path = Path(path)
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise InputError(path, "no such group file") from e
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(path, f"cannot read: {getattr(e, 'strerror', None) or e}") from e
    except tomllib.TOMLDecodeError as e:
        raise InputError(path, f"not valid TOML: {e}") from e
    for table, keys in _GROUP_KEYS.items():
        if not isinstance(doc.get(table), dict):
            raise InputError(path, f"no [{table}] table")
        unknown = sorted(set(doc[table]) - keys)
        if unknown:
            raise InputError(path, f"unknown key {unknown[0]!r} in [{table}]")
    unknown_tables = sorted(set(doc) - set(_GROUP_KEYS))
    if unknown_tables:
        raise InputError(path, f"unknown table [{unknown_tables[0]}]")
    group = doc["group"]
    name = _text(path, group, "name")
    version = _text(path, group, "version")
    if "description" in group:
        _text(path, group, "description")
    sources = group.get("sources", [])
    if not isinstance(sources, list) or not all(isinstance(s, str) for s in sources):
        raise InputError(path, "[group] sources must be a list of strings")
    pts = doc["terms"].get("pts")
    if not isinstance(pts, list) or not pts:
        raise InputError(path, "[terms] pts must be a non-empty list of PT names")
    for pt in pts:
        if not isinstance(pt, str) or not pt.strip() or not pt.isprintable():
            raise InputError(path, f"[terms] pts: {pt!r} is not a PT name")
    return EventGroup(
        name, "group", version, str(path), tuple(dict.fromkeys(p.strip() for p in pts))
    )


def _text(path: Path, table: dict[str, Any], key: str) -> str:
    value = table.get(key)
    if not isinstance(value, str) or not value.strip():
        raise InputError(path, f"[group] {key} must be a non-empty string")
    if key != "description" and not value.isprintable():
        raise InputError(path, f"[group] {key} has control characters")
    return value.strip()


def meddra_groups(folder: str | Path) -> tuple[EventGroup, ...]:
    """HLT, HLGT and SOC groups from a MedDRA ASCII distribution's `mdhier.asc`.

    A PT belongs to every HLT and HLGT that the file links it to (primary and secondary paths),
    and to its primary SOC only, so that a case counts in one SOC per PT as MedDRA's primary
    SOC allocation intends. When `llt.asc` is there too, each group also takes the names of its
    PTs' lowest level terms, which older FAERS quarters sometimes report in place of the PT. The
    version is `meddra_release.asc`'s first field when present."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(folder, "not a folder (--meddra takes a MedDRA ASCII folder)")
    if not (folder / MEDDRA_HIERARCHY).is_file():
        raise InputError(folder, f"no {MEDDRA_HIERARCHY} (the MedDRA ASCII hierarchy file)")
    names: dict[str, list[str]] = {}  # pt_code -> the PT's name, then its LLTs' names
    levels: dict[str, dict[str, list[str]]] = {"hlt": {}, "hlgt": {}, "soc": {}}
    for fields in _asc_rows(folder / MEDDRA_HIERARCHY, _MEDDRA_FIELDS, (0, 4, 5, 6, 7)):
        code, pt, hlt, hlgt, soc = (fields[i] for i in (0, 4, 5, 6, 7))
        names.setdefault(code, [pt])
        levels["hlt"].setdefault(hlt, []).append(code)
        levels["hlgt"].setdefault(hlgt, []).append(code)
        if fields[11].upper() == "Y":
            levels["soc"].setdefault(soc, []).append(code)
    if (folder / MEDDRA_LLT).is_file():
        for fields in _asc_rows(folder / MEDDRA_LLT, _LLT_FIELDS, (1, 2)):
            if fields[2] in names:
                names[fields[2]].append(fields[1])
    version = _meddra_version(folder)
    source = str(folder / MEDDRA_HIERARCHY)
    return tuple(
        EventGroup(
            name, kind, version, source, tuple(dict.fromkeys(n for c in codes for n in names[c]))
        )
        for kind, groups in levels.items()
        for name, codes in sorted(groups.items())
    )


def _asc_rows(path: Path, n_fields: int, named: tuple[int, ...]) -> Iterator[list[str]]:
    """The '$'-separated rows of a MedDRA ASCII file, fields trimmed; a row with another
    number of fields, or an empty or unprintable one among `named`, is an InputError."""
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise InputError(path, f"cannot read: {e.strerror}") from e
    text = raw.decode("ascii") if raw.isascii() else raw.decode("latin-1")
    found = False
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        fields = [f.strip() for f in line.removesuffix("$").split("$")]
        if len(fields) != n_fields or not all(fields[i] and fields[i].isprintable() for i in named):
            raise InputError(path, f"expected {n_fields} '$'-separated fields with names", number)
        found = True
        yield fields
    if not found:
        raise InputError(path, "no rows")


def _meddra_version(folder: Path) -> str:
    release = folder / "meddra_release.asc"
    try:
        first = release.read_text(encoding="latin-1").split("$", 1)[0].strip()
    except OSError:
        return "unknown"
    return first if first.isprintable() and first else "unknown"


def make_design(
    background: str | Path | None = None,
    groups: bool = False,
    group_files: tuple[str | Path, ...] | list[str | Path] = (),
    meddra: str | Path | None = None,
    *,
    exclusion: Exclusion | None = None,
    masking: int | None = None,
    subset: str | None = None,
) -> Design:
    """The design the signals options ask for: the comparator, the shipped groups (groups=True),
    a user's group files and a MedDRA folder's HLT/HLGT/SOC groups (a name once per kind), the
    cases excluded (`notoriety.exclusion`), the maskers removed per term (K >= 0) and the subset
    of the substance's cases (`polysubstance.SUBSETS`)."""
    if masking is not None and masking < 0:
        raise UsageError("--remove-maskers must be 0 or more")
    check_subset(subset)
    found: list[EventGroup] = []
    files = [*(shipped_group_files() if groups else ()), *map(Path, group_files)]
    for file in files:
        found.append(load_group_file(file))
    if meddra is not None:
        found.extend(meddra_groups(meddra))
    seen: dict[str, EventGroup] = {}
    for group in found:
        if group.key in seen:
            raise InputError(
                group.source, f"group {group.name!r} is already defined by {seen[group.key].source}"
            )
        seen[group.key] = group
    return Design(
        load_background(background),
        tuple(found),
        exclusion=exclusion,
        masking=masking,
        subset=subset,
    )


def event_groups(design: Design | None = None) -> dict[str, tuple[str, ...]]:
    """A design's event groups (default: the shipped ones, which the as-of counts and
    sequential alerts carry besides single PTs): event key -> PT names."""
    return {g.key: g.pts for g in (design or make_design(groups=True)).groups}


def group_members(groups: Mapping[str, Iterable[str]]) -> pd.DataFrame:
    """One row per PT of each event group (event_key, pt_key: the PT as case_reactions keys
    it), to register beside a query that counts the groups."""
    return pd.DataFrame(
        [(key, pt.strip().upper()) for key, pts in groups.items() for pt in pts],
        columns=["event_key", "pt_key"],
    )
