"""Literature duplicates: one published patient filed by several senders, found by its reference.

Reads `cases`, `reports.lit_ref` (DEMO; FAERS 2014Q3 on) and
`case_reactions`; under `--dedup strict`, after the AEOLUS-style pass, sets
`cases.literature_duplicate_of` (a flag, like `strict_duplicate_of`, never a deletion).

A reference's key (`parse_reference`, `reference_keys`), exact, no fuzzy matching:
1. Normalise: Unicode compatibility form without diacritics ("Peña" -> "pena", "Østergaard" ->
   "ostergaard"), case-folded, every dash as "-", whitespace collapsed.
2. An identifier when present: a DOI ("doi:10.1007/S13181-019-00701-1", "https://doi.org/10...")
   case-folded and without trailing punctuation, else a PubMed id ("PMID: 31234567").
3. Else a citation key: first author's surname (first word of the author part, without
   initials, "et al." or particles such as van, der, de), year, volume and first page, from
   Vancouver ("Smith J, et al. Title. J Med Toxicol. 2019 Mar;15(2):123-7"), APA ("Smith, J., &
   Jones, K. (2019). Title. Journal of Medical Toxicology, 15(2), 123-127") or labelled forms
   ("vol. 15, no. 2, pp. 123-127"); the journal is left out of the key, so that its
   abbreviations ("J Med Toxicol", "J. Med. Toxicol.", "Journal of Medical Toxicology") agree.
   All three variants above give "cite:smith:2019:15:123".
4. Else, for a text with a year and at least 30 letters, the text's letters and digits alone.
The DOI, PubMed id and citation key found in one reference link across all references: a linked
group with at most one DOI and one PubMed id is one article, keyed by its DOI, else PubMed id,
else citation, so that "PENA R, ET AL. J MED TOXICOL 2019;15:123" takes the DOI that another
sender's copy carries. A group with two DOIs (two articles sharing surname, year, volume and
page) decides nothing: each reference keeps its own identifier, a citation-only one gets no key.
No fuzzy fallback: references of one case series differ by a few characters ("case 1", "case
2"), so a similarity threshold would merge distinct patients; a missed duplicate is a recount,
a merge a lost patient.

Cases are probable duplicates when they share the key and agree on age in years, sex (both
known) and the exact set of reaction terms (cases with no terms never match); of each such
group the latest FDA receipt is kept (fda_dt, then highest primaryid: the rule of the strict
pass), the others point at it.
"""

from __future__ import annotations

import re
import unicodedata
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

import duckdb
import pandas as pd

# Letters that Unicode does not decompose, as senders without them write them.
_LETTERS = str.maketrans({"ø": "o", "æ": "ae", "œ": "oe", "ł": "l", "đ": "d", "ð": "d", "þ": "th"})
_DASHES = re.compile("[\u2010-\u2015\u2212\ufe58\ufe63\uff0d]")
_DOI = re.compile(r"\b10\.\d{4,9}/[^\s\"<>]+")
_PMID = re.compile(r"\b(?:pmid|pubmed(?:\s+id)?)\s*[:#.]?\s*(\d{1,9})\b")
_URL = re.compile(r"https?://\S+")
_YEAR = r"(?:19|20)\d\d"
_MONTH = r"(?:jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)[a-z]*\.?(?:\s*\d{1,2})?"
# Vancouver: 2019;15(2):123-7, 2019 Mar 4;15:123, 2015;MAY;169(3):352-5 (a FAERS habit).
_VANCOUVER = re.compile(
    rf"\b({_YEAR})[a-z]?(?:[\s;,]*{_MONTH})?\s*;\s*(\d{{1,4}})\s*(?:\([^)]*\))?\s*:\s*"
    r"(?:pp?\.?\s*)?([a-z]?\d+)"
)
# APA: (2019) ... 15(2), 123-127.
_APA_YEAR = re.compile(rf"\(({_YEAR})[a-z]?\)")
_APA_VOLUME = re.compile(
    r"(?<![\d.])(\d{1,4})\s*(?:\([^)]*\))?\s*,\s*(?:pp?\.?\s*)?([a-z]?\d+)\s*(?=-|\.|,|;|$)"
)
# Labelled: vol. 15, no. 2, pp. 123-127 (the year: the only one in the text).
_LABEL_VOLUME = re.compile(r"\bvol(?:ume)?\.?\s*(\d{1,4})\b")
_LABEL_PAGE = re.compile(r"\b(?:pp?|pages?)\.?\s*([a-z]?\d+)\b")
_ANY_YEAR = re.compile(rf"(?<!\d)({_YEAR})(?!\d)")
_AUTHOR_END = re.compile(r"[,;(:]|\.\s|\.$")
# Surname particles written or dropped by senders ("van der Berg", "Berg"); not "Le" or "Du",
# which are surnames on their own.
_PARTICLES = frozenset("van von der den de del della dos ten ter".split())
_NOT_WORD = re.compile("[^a-z0-9]")
_NOT_LETTER = re.compile("[^a-z]")
MIN_TEXT_LETTERS = 30


@dataclass(frozen=True)
class Reference:
    """What one `lit_ref` names: its DOI, PubMed id, citation key and plain-text key (or None)."""

    doi: str | None
    pmid: str | None
    citation: str | None
    text: str | None

    @property
    def identifier(self) -> str | None:
        """The reference's own identifier key: its DOI, else its PubMed id."""
        if self.doi:
            return f"doi:{self.doi}"
        return f"pmid:{self.pmid}" if self.pmid else None


def normalise(text: str) -> str:
    """Case-folded, without diacritics, every dash a hyphen, whitespace collapsed."""
    text = text.casefold()
    if not text.isascii():
        decomposed = unicodedata.normalize("NFKD", text.translate(_LETTERS))
        text = _DASHES.sub("-", "".join(c for c in decomposed if not unicodedata.combining(c)))
    return " ".join(text.split())


def _strip_doi(doi: str) -> str:
    doi = doi.rstrip(".,;:'")
    while doi.endswith((")", "]")) and doi.count(doi[-1]) > doi.count(
        "(" if doi[-1] == ")" else "["
    ):
        doi = doi[:-1].rstrip(".,;:'")
    return doi


def _surname(text: str) -> str | None:
    end = _AUTHOR_END.search(text)
    words = re.findall(r"[a-z]+", (text[: end.start()] if end else text).replace("'", ""))
    return next((w for w in words if len(w) > 1 and w not in _PARTICLES), None)


def _citation(text: str) -> str | None:
    surname = _surname(text)
    if surname is None:
        return None
    if m := _VANCOUVER.search(text):
        year, volume, page = m.groups()
    elif (y := _APA_YEAR.search(text)) and (m := _APA_VOLUME.search(text, y.end())):
        year, (volume, page) = y.group(1), m.groups()
    else:
        years = set(_ANY_YEAR.findall(text))
        vol, pages = _LABEL_VOLUME.search(text), _LABEL_PAGE.search(text)
        if len(years) != 1 or vol is None or pages is None:
            return None
        year, volume, page = years.pop(), vol.group(1), pages.group(1)
    first_page = (page.lstrip("0") or "0") if page.isdigit() else page
    return f"cite:{surname}:{year}:{int(volume)}:{first_page}"


def parse_reference(text: str) -> Reference:
    """The identifiers and keys of one `lit_ref` (see the module's rule)."""
    norm = normalise(text)
    rest = _URL.sub(" ", norm) if "http" in norm else norm
    doi = pmid = None
    if "10." in norm and (m := _DOI.search(norm)):
        doi, rest = m.group(0), _DOI.sub(" ", rest)
    if "pmid" in norm or "pubmed" in norm:
        pmid = str(int(m.group(1))) if (m := _PMID.search(norm)) else None
        rest = _PMID.sub(" ", rest)
    citation = _citation(rest.strip())
    plain = None
    if not (doi or pmid or citation) and _ANY_YEAR.search(rest):
        words = _NOT_WORD.sub("", rest)
        if len(_NOT_LETTER.sub("", words)) >= MIN_TEXT_LETTERS:
            plain = f"text:{words}"
    return Reference(_strip_doi(doi) if doi else None, pmid, citation, plain)


def reference_keys(refs: Iterable[str]) -> dict[str, str]:
    """Each reference's key, resolved across all of them; references without one are left out.

    The DOIs, PubMed ids and citation keys found together in a reference are linked; a linked
    group with at most one DOI and one PubMed id is one article, keyed by its DOI, else PubMed
    id, else citation. In a group with several, each reference keeps its own identifier (a
    PubMed id seen beside exactly one DOI takes it) and a citation-only reference gets none."""
    parsed = {ref: parse_reference(ref) for ref in set(refs)}
    parent: dict[str, str] = {}

    def root(key: str) -> str:
        while parent.setdefault(key, key) != key:
            parent[key] = parent[parent[key]]
            key = parent[key]
        return key

    dois_of_pmid: dict[str, set[str]] = defaultdict(set)
    for r in parsed.values():
        found = [k for k in (r.identifier, r.pmid and f"pmid:{r.pmid}", r.citation) if k]
        for linked in found[1:]:
            parent[root(linked)] = root(found[0])
        if r.pmid and r.doi:
            dois_of_pmid[r.pmid].add(f"doi:{r.doi}")
    members: dict[str, set[str]] = defaultdict(set)
    for node in list(parent):
        members[root(node)].add(node)

    def group_key(key: str) -> str | None:
        group = members[root(key)]
        dois = sorted(k for k in group if k.startswith("doi:"))
        pmids = sorted(k for k in group if k.startswith("pmid:"))
        if len(dois) > 1 or len(pmids) > 1:
            return None
        return (dois or pmids or [key])[0]

    keys: dict[str, str] = {}
    for ref, r in parsed.items():
        own = r.identifier or r.citation
        key: str | None = group_key(own) if own else r.text
        if key is None and r.identifier:
            seen = dois_of_pmid[r.pmid] if r.pmid and not r.doi else set()
            key = next(iter(seen)) if len(seen) == 1 else r.identifier
        if key:
            keys[ref] = key
    return keys


# The cases the pass can flag: not flagged by the strict pass, age and sex known, a reference.
_ELIGIBLE = """c.strict_duplicate_of IS NULL AND c.age_years IS NOT NULL AND c.sex <> 'unknown'
      AND nullif(trim(r.lit_ref), '') IS NOT NULL"""
_REFERENCES = f"""SELECT DISTINCT r.lit_ref
    FROM cases c JOIN reports r ON r.source = c.source AND r.primaryid = c.primaryid
    WHERE {_ELIGIBLE}"""  # noqa: S608 (constant fragment)
# Narrow candidates first (key, age and sex shared with another case), then the exact
# reaction sets of those only; groups are split by the set, the latest receipt kept.
FLAG = (
    f"""CREATE OR REPLACE TEMP TABLE _literature_candidates AS
    SELECT c.caseid, c.primaryid, c.fda_dt, c.age_years, c.sex, k.lit_key
    FROM cases c JOIN reports r ON r.source = c.source AND r.primaryid = c.primaryid
    JOIN _literature_keys k ON k.lit_ref = r.lit_ref
    WHERE {_ELIGIBLE}
    QUALIFY count(*) OVER (PARTITION BY k.lit_key, c.age_years, c.sex) > 1""",  # noqa: S608
    """CREATE OR REPLACE TEMP TABLE _literature AS
    WITH reactions AS (
        SELECT caseid, list_sort(list_distinct(list(pt_key))) AS members FROM case_reactions
        WHERE pt_key IS NOT NULL AND caseid IN (SELECT caseid FROM _literature_candidates)
        GROUP BY caseid)
    SELECT c.caseid, first_value(c.caseid) OVER (
        PARTITION BY c.lit_key, c.age_years, c.sex, r.members
        ORDER BY c.fda_dt DESC NULLS LAST, try_cast(c.primaryid AS BIGINT) DESC, c.caseid DESC)
        AS keeper
    FROM _literature_candidates c JOIN reactions r USING (caseid)""",
    """UPDATE cases SET literature_duplicate_of = l.keeper
    FROM _literature l WHERE l.caseid = cases.caseid AND l.keeper <> l.caseid""",
)
# The dedup_log step of this pass: cases flagged by neither strict pass.
STEP = (
    "not flagged as a literature duplicate by the strict pass (same reference, age, sex, terms)",
    "SELECT count(*), count(*) FROM cases "
    "WHERE strict_duplicate_of IS NULL AND literature_duplicate_of IS NULL",
)


def flag_duplicates(con: duckdb.DuckDBPyConnection) -> None:
    """Set `cases.literature_duplicate_of` by the module's rule (inside the caller's rebuild)."""
    refs = [r[0] for r in con.execute(_REFERENCES).fetchall()]
    keys = reference_keys(refs)
    frame = pd.DataFrame({"lit_ref": list(keys), "lit_key": list(keys.values())}, dtype=object)
    con.register("_literature_keys_frame", frame)
    try:
        con.execute(
            "CREATE OR REPLACE TEMP TABLE _literature_keys AS "
            "SELECT lit_ref::VARCHAR AS lit_ref, lit_key::VARCHAR AS lit_key "
            "FROM _literature_keys_frame"
        )
    finally:
        con.unregister("_literature_keys_frame")
    for statement in FLAG:
        con.execute(statement)
