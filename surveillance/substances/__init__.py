"""Substance term files and the matcher that finds a substance in FAERS drug strings.

Reads a substance's TOML term file (``kratom`` and ``7-oh`` ship in this folder; users pass their
own with ``--substance-file FILE.toml``) and matches it against normalised ``drugname`` and
``prod_ai`` strings. Writes nothing: callers store the matches; ``discover`` ranks the strings no
rule matched that look like the substance, for an analyst to review and add to the file.

Term-file format (also documented at the top of ``kratom.toml``)::

    [substance]
    name = "kratom"              # id used in tables and on the command line
    version = "1.0.0"            # bump when a rule changes
    description = "..."
    sources = ["..."]            # where the terms came from

    [rules]                      # lists; at least one of terms/tokens/patterns
    terms = ["feel free"]        # the whole normalised field equals the term
    tokens = ["kratom", "maeng da"]   # whole words or phrases anywhere in the field
    patterns = ['\\bkr[aeiou]{1,2}t[aou]{1,2}ms?\\b']  # regexes over the normalised field
    exclusions = ['\\bmitragyna (parvifolia|hirsuta)\\b']  # look-alikes, blanked out first
    fuzzy = ["kratom"]           # words `discover` compares for misspellings (optional)

    [ambiguous]                  # names that also name another product (optional)
    names = ["ketum"]            # match only beside a context word, never beside a blocker
    context = ["kratom", "mitragyn", "leaf", "powder"]   # word beginnings, in the raw string
    blockers = ["gel", "cream"]  # whole words: product forms of the other product

Rules are tried on the field after exclusions have blanked out their look-alike text, in the
order terms, tokens, patterns, ambiguous names; the first that fires gives the ``Match``. Terms,
tokens and ambiguous names are normalised when loaded; patterns and exclusions are written
against normalised text. Context words and blockers are looked for among the words of the
string itself (before dose-form words such as "powder" are dropped): a context word as the
beginning of a word ("mitragyn" in "mitragynine"), a blocker as a whole word.
"""

from __future__ import annotations

import hashlib
import re
import tomllib
import unicodedata
from bisect import bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property
from importlib import resources
from itertools import accumulate
from pathlib import Path
from typing import Any, Literal

from ..errors import InputError, SurveillanceError

__all__ = [
    "Match",
    "Substance",
    "SubstanceError",
    "Suggestion",
    "builtin_substances",
    "discover",
    "load_substance",
    "normalise",
]

Field = Literal["drugname", "prod_ai"]
Rule = Literal["term", "token", "pattern", "context"]


class SubstanceError(InputError):
    """A substance file is missing, malformed, or has a bad rule; the message names the file."""

    def __init__(self, message: str) -> None:
        SurveillanceError.__init__(self, message)


# --- normalisation -------------------------------------------------------------------------
# Normalised text is ASCII, so ASCII-only \b, \w and \d change no result and scan twice as fast.
_FLAGS = re.ASCII
# Dose amounts and dose-form words carry no identity ("KRATOM 500 MG CAPSULES" is kratom), and
# dropping them lets an exact term match the many ways reporters add them. Leaf, extract, tea and
# herbal stay: they distinguish products. Bare numbers stay: "MIT 45", "CLUB 13" are brands.
_DOSE = re.compile(
    r"(?<![a-z0-9])(?:\d+(?:[.,]\d+)?[^a-z0-9\n]*"
    r"(?:mg|mcg|ug|g|gm|gms|gr|grams?|kg|ml|l|oz|lbs?|iu|units?|%)"
    r"|tab(?:let)?s?|caplets?|caps(?:ules?)?|softgels?|gelcaps?|pills?|powder(?:s|ed)?"
    r"|liquid|shots?|oral|solution|doses?)(?![a-z0-9])",
    _FLAGS,
)
# FAERS writes herbal products as HERBALS\NAME; some exports lose the backslash.
_HERBALS_GLUED = re.compile(r"(?<![a-z0-9])herbals(?=[a-z])")
# Upper case to lower, every other byte but letters, digits and newline to a space.
_BYTE_MAP = bytes(
    c + 32 if 65 <= c <= 90 else c if (48 <= c <= 57 or 97 <= c <= 122 or c == 10) else 32
    for c in range(256)
)
# "7-OH", "7 OH", "7OH" -> "7oh" and "7-hydroxy X" -> "7hydroxy X", so one rule covers all.
_NUMBER_HYDROXY = re.compile(r"(\d) +(?=oh|hydroxy)", _FLAGS)
_SPACES = re.compile(r" {2,}")


def _words(text: str) -> list[str]:
    """The words of a raw string: lower-case ASCII letters and digits, everything else a gap."""
    return _to_ascii(text).lower().encode("ascii").translate(_BYTE_MAP).decode("ascii").split()


def _to_ascii(text: str) -> str:
    return unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")


def _normalise_blob(texts: Sequence[str | None]) -> str:
    """Normalise many strings as one newline-joined text: a regex pass over it is far faster
    than a pass per string, and line i is exactly ``normalise(texts[i])``."""
    parts = []
    for text in texts:
        text = (text or "").replace("\n", " ").replace("\r", " ")
        parts.append(text if text.isascii() else _to_ascii(text))
    blob = "\n".join(parts).lower()
    if "herbals" in blob:
        blob = _HERBALS_GLUED.sub("herbals ", blob)
    # Removing a dose word can bring a number next to a unit ("500 capsule mg"): repeat until
    # nothing is removed. No later step can create a dose match (the regex treats punctuation
    # like the spaces it becomes), which is what makes normalise idempotent.
    removed = 1
    while removed:
        blob, removed = _DOSE.subn(" ", blob)
    blob = blob.encode("ascii").translate(_BYTE_MAP).decode("ascii")
    blob = _NUMBER_HYDROXY.sub(r"\1", blob)
    blob = _SPACES.sub(" ", blob).replace(" \n", "\n").replace("\n ", "\n")
    return blob.strip(" ")


def _normalise_many(texts: Sequence[str | None]) -> list[str]:
    return _normalise_blob(texts).split("\n") if texts else []


def normalise(text: str | None) -> str:
    """Return the canonical form of a drug string that every rule is written against.

    Lower-case ASCII without accents; backslashes, slashes and punctuation become spaces; dose
    amounts ("500 MG", "90GM") and dose-form words (tablet, capsule, powder, liquid, shot...) are
    dropped; "7-OH"/"7 OH"/"7OH" become "7oh"; whitespace is collapsed.
    """
    return _normalise_blob([text])


# --- substances and matching ---------------------------------------------------------------
@dataclass(frozen=True)
class Match:
    """One drug string matched by a substance's rule."""

    substance: str
    matched_string: str
    field: Field
    rule: Rule
    term: str


@dataclass(frozen=True)
class Suggestion:
    """An unmatched drug string that looks like the substance, for an analyst to review; `note`
    says why an ambiguous name in it did not count (a collision with another product)."""

    string: str
    n_cases: int
    score: float
    nearest_term: str
    note: str = ""


@dataclass(frozen=True)
class Substance:
    """A substance's term file, loaded and checked; ``match`` finds it in drug strings."""

    name: str
    version: str
    description: str
    terms: tuple[str, ...]
    tokens: tuple[str, ...]
    patterns: tuple[str, ...]
    exclusions: tuple[str, ...]
    source_path: str
    sources: tuple[str, ...] = ()
    fuzzy: tuple[str, ...] = ()
    ambiguous: tuple[str, ...] = ()
    context: tuple[str, ...] = ()
    blockers: tuple[str, ...] = ()

    @property
    def identity(self) -> str:
        """sha256 of the whole definition (name, version, file and every rule): results counted
        from its matches are reused only while it is the same."""
        return hashlib.sha256(repr(self).encode()).hexdigest()

    @cached_property
    def _token_re(self) -> re.Pattern[str] | None:
        if not self.tokens:
            return None
        # Longest first so a phrase wins over a word it starts with.
        alternatives = sorted(self.tokens, key=lambda t: (-len(t), t))
        return re.compile(r"\b(?:" + "|".join(map(re.escape, alternatives)) + r")\b", _FLAGS)

    @cached_property
    def _pattern_re(self) -> re.Pattern[str] | None:
        if not self.patterns:
            return None
        alternatives = (f"(?P<p{i}>{p})" for i, p in enumerate(self.patterns))
        return re.compile("|".join(alternatives), _FLAGS)

    @cached_property
    def _exclusion_re(self) -> re.Pattern[str] | None:
        if not self.exclusions:
            return None
        return re.compile("|".join(f"(?:{p})" for p in self.exclusions), _FLAGS)

    @cached_property
    def _term_set(self) -> frozenset[str]:
        return frozenset(self.terms)

    @cached_property
    def _ambiguous_re(self) -> re.Pattern[str] | None:
        if not self.ambiguous:
            return None
        alternatives = sorted(self.ambiguous, key=lambda t: (-len(t), t))
        return re.compile(r"\b(?:" + "|".join(map(re.escape, alternatives)) + r")\b", _FLAGS)

    def ambiguity(self, normalised: str, raw: str | None = None) -> tuple[str, str] | None:
        """For a string whose only evidence is an ambiguous name: (name, why it does not count),
        e.g. ('ketum', "beside 'gel'") or ('ketum', 'without a context word'); else None."""
        if self._ambiguous_re is None:
            return None
        m = self._ambiguous_re.search(self.mask(normalised))
        if m is None:
            return None
        words = _words(raw) if raw is not None else normalised.split()
        if blocker := next((b for b in self.blockers if b in words), None):
            return m.group(0), f"beside {blocker!r}"
        if not any(w.startswith(c) for c in self.context for w in words):
            return m.group(0), "without a context word"
        return None

    def mask(self, normalised: str) -> str:
        """Blank out the look-alike text the exclusions match in a normalised string."""
        if self._exclusion_re is None or not self._exclusion_re.search(normalised):
            return normalised
        return " ".join(self._exclusion_re.sub(" ", normalised).split())

    def match_normalised(self, normalised: str, raw: str | None = None) -> tuple[Rule, str] | None:
        """Return (rule, term) of the first rule that fires on an already normalised string;
        `raw` (the string before normalising) is where ambiguous names look for context."""
        text = self.mask(normalised)
        if not text:
            return None
        if text in self._term_set:
            return "term", text
        if self._token_re is not None and (m := self._token_re.search(text)):
            return "token", m.group(0)
        if self._pattern_re is not None and (m := self._pattern_re.search(text)):
            index = int(next(k for k, v in m.groupdict().items() if v is not None)[1:])
            return "pattern", self.patterns[index]
        if self._ambiguous_re is not None and (m := self._ambiguous_re.search(text)):
            if self.ambiguity(normalised, raw) is None:
                return "context", m.group(0)
        return None

    def match(self, drugname: str | None, prod_ai: str | None = None) -> Match | None:
        """Match one drug row: ``drugname`` first, then ``prod_ai``; None when neither matches."""
        fields: tuple[tuple[Field, str | None], ...] = (
            ("drugname", drugname),
            ("prod_ai", prod_ai),
        )
        for name, value in fields:
            if value and (hit := self.match_normalised(normalise(value), value)):
                return Match(self.name, value, name, hit[0], hit[1])
        return None

    @cached_property
    def _blob_res(self) -> tuple[re.Pattern[str], ...]:
        # One regex each: over a long text, separate scans beat one big alternation.
        sources = [r.pattern for r in (self._token_re, self._ambiguous_re) if r is not None]
        sources += [*self.patterns, *self.exclusions]
        return tuple(re.compile(source, _FLAGS | re.MULTILINE) for source in sources)

    def match_many(self, strings: Iterable[str], field: Field = "drugname") -> dict[str, Match]:
        """Match many distinct strings (a database's drug names) fast; returns only the hits.

        The rule and exclusion regexes run once over all normalised strings joined by newlines;
        only the lines they touch (and exact terms) are then matched one by one. A regex match
        that runs across a newline marks every line it spans, so no line is missed.
        """
        raw = list(strings)
        lines = _normalise_many(raw)
        blob = "\n".join(lines)
        starts = list(accumulate((len(line) + 1 for line in lines), initial=0))
        candidates = {i for i, line in enumerate(lines) if line in self._term_set}
        for regex in self._blob_res:
            for m in regex.finditer(blob):
                first = bisect_right(starts, m.start()) - 1
                candidates.update(range(first, bisect_right(starts, m.end())))
        hits: dict[str, Match] = {}
        for i in sorted(candidates):
            if lines[i] and (hit := self.match_normalised(lines[i], raw[i])):
                hits[raw[i]] = Match(self.name, raw[i], field, hit[0], hit[1])
        return hits


# --- loading -------------------------------------------------------------------------------
_SUBSTANCE_KEYS = {"name", "version", "description", "sources"}
_RULE_KEYS = ("terms", "tokens", "patterns", "exclusions", "fuzzy")
_AMBIGUOUS_KEYS = ("names", "context", "blockers")
# Patterns are combined into one regex (group numbers shift, our group names could clash) and run
# over many strings joined by newlines (where \A and \Z would mean the whole text).
_UNSUPPORTED = re.compile(r"\\[1-9AZ]|\(\?P[=<]")


def _string_list(doc: dict[str, Any], key: str, where: str) -> list[str]:
    value = doc.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise SubstanceError(f"{where}: {key} must be a list of strings")
    return value


def _parse(doc: dict[str, Any], where: str) -> Substance:
    unknown = set(doc) - {"substance", "rules", "ambiguous"}
    if unknown:
        raise SubstanceError(f"{where}: unknown table or key {sorted(unknown)[0]!r}")
    meta = doc.get("substance")
    if not isinstance(meta, dict):
        raise SubstanceError(f"{where}: missing [substance] table")
    rules = doc.get("rules", {})
    if not isinstance(rules, dict):
        raise SubstanceError(f"{where}: [rules] must be a table")
    ambiguous = doc.get("ambiguous", {})
    if not isinstance(ambiguous, dict):
        raise SubstanceError(f"{where}: [ambiguous] must be a table")
    for table, allowed in (
        ("substance", _SUBSTANCE_KEYS),
        ("rules", set(_RULE_KEYS)),
        ("ambiguous", set(_AMBIGUOUS_KEYS)),
    ):
        extra = set(doc.get(table, {})) - allowed
        if extra:
            raise SubstanceError(f"{where}: unknown key {sorted(extra)[0]!r} in [{table}]")
    for key in ("name", "version", "description"):
        if not isinstance(meta.get(key), str) or not meta[key].strip():
            raise SubstanceError(f"{where}: [substance] needs a non-empty string {key!r}")
    lists = {key: _string_list(rules, key, where) for key in _RULE_KEYS}
    sources = _string_list(meta, "sources", where)
    if not (lists["terms"] or lists["tokens"] or lists["patterns"]):
        raise SubstanceError(f"{where}: [rules] needs at least one of terms, tokens, patterns")

    literal: dict[str, tuple[str, ...]] = {}
    for key in ("terms", "tokens", "fuzzy"):
        normalised = [normalise(v) for v in lists[key]]
        for raw, text in zip(lists[key], normalised, strict=True):
            if not text:
                raise SubstanceError(f"{where}: {key} entry {raw!r} is empty once normalised")
        literal[key] = tuple(dict.fromkeys(normalised))
    for key in ("patterns", "exclusions"):
        for pattern in lists[key]:
            if _UNSUPPORTED.search(pattern):
                raise SubstanceError(
                    f"{where}: {key} entry {pattern!r} uses a backreference, named group, "
                    r"\A or \Z (use ^ and $)"
                )
            try:
                compiled = re.compile(pattern, _FLAGS)
            except re.error as e:
                raise SubstanceError(f"{where}: bad regex in {key}: {pattern!r}: {e}") from e
            if any((m := compiled.search(probe)) and not m.group() for probe in ("", " x ")):
                raise SubstanceError(f"{where}: {key} entry {pattern!r} matches empty text")
    amb = {key: _string_list(ambiguous, key, where) for key in _AMBIGUOUS_KEYS}
    for key in _AMBIGUOUS_KEYS:
        for raw in amb[key]:
            if not (normalise(raw) if key == "names" else _words(raw)):
                raise SubstanceError(f"{where}: ambiguous {key} entry {raw!r} is empty")
    if amb["names"] and not amb["context"]:
        raise SubstanceError(f"{where}: [ambiguous] names need context words")
    fuzzy = literal["fuzzy"] or tuple(t for t in literal["tokens"] if " " not in t)
    return Substance(
        name=meta["name"].strip(),
        version=meta["version"].strip(),
        description=" ".join(meta["description"].split()),
        terms=literal["terms"],
        tokens=literal["tokens"],
        patterns=tuple(lists["patterns"]),
        exclusions=tuple(lists["exclusions"]),
        source_path=where,
        sources=tuple(sources),
        fuzzy=fuzzy,
        ambiguous=tuple(dict.fromkeys(normalise(n) for n in amb["names"])),
        context=tuple(dict.fromkeys(w for c in amb["context"] for w in _words(c))),
        blockers=tuple(dict.fromkeys(w for b in amb["blockers"] for w in _words(b))),
    )


def _parse_text(text: str, where: str) -> Substance:
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise SubstanceError(f"{where}: not valid TOML: {e}") from e
    return _parse(doc, where)


def builtin_substances() -> list[str]:
    """Names of the substances that ship with the package (their TOML files in this folder)."""
    folder = resources.files(__name__)
    return sorted(
        p.name.removesuffix(".toml") for p in folder.iterdir() if p.name.endswith(".toml")
    )


def load_substance(name_or_path: str | Path) -> Substance:
    """Load a built-in substance by name ('kratom', '7-oh') or a user's TOML term file by path."""
    key = str(name_or_path)
    if isinstance(name_or_path, str) and key.lower() in builtin_substances():
        resource = resources.files(__name__) / f"{key.lower()}.toml"
        return _parse_text(resource.read_text(encoding="utf-8"), str(resource))
    path = Path(name_or_path)
    if not path.is_file():
        known = ", ".join(builtin_substances())
        raise SubstanceError(f"{key}: no such substance file (built-in substances: {known})")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise SubstanceError(f"{path}: cannot read: {e}") from e
    return _parse_text(text, str(path))


# --- discovery -----------------------------------------------------------------------------
def discover(
    candidates: Iterable[tuple[str, int]],
    substance: Substance,
    limit: int = 50,
    threshold: float = 80.0,
) -> list[Suggestion]:
    """Rank drug strings that no rule matched but that look like the substance.

    Each candidate is (drug string, n_cases). A string scores the best of: its whole normalised
    text against every term and token (rapidfuzz ratio and token_sort_ratio), and each of its
    words against the substance's fuzzy words (normalised Levenshtein similarity, for
    misspellings like 'kratim' or 'mitragina'). Scores run 0-100; strings scoring at least
    ``threshold`` are returned, best first, then by n_cases. Strings the rules match and text
    the exclusions blank out (the known look-alikes) are never suggested. A string whose only
    evidence is an ambiguous name (a collision such as "KETUM GEL") is listed with score 100
    and a note saying why it did not count.
    """
    from rapidfuzz import fuzz, process
    from rapidfuzz.distance import Levenshtein

    pairs = list(candidates)
    if not pairs:
        return []
    texts = _normalise_many([s for s, _ in pairs])
    rows: list[tuple[str, int, str]] = []
    collisions: list[Suggestion] = []
    for (string, n_cases), text in zip(pairs, texts, strict=True):
        masked = substance.mask(text)
        if not masked or substance.match_normalised(text, string) is not None:
            continue
        if ambiguity := substance.ambiguity(text, string):
            name, why = ambiguity
            note = f"ambiguous name {name!r} {why}: not counted"
            collisions.append(Suggestion(string, n_cases, 100.0, name, note))
        else:
            rows.append((string, n_cases, masked))
    if not rows:
        return sorted(collisions, key=lambda s: (-s.n_cases, s.string))[:limit]

    # token_set_ratio and partial_ratio score 100 whenever one text contains the other, which
    # would suggest every "X speciosa" for "mitragyna speciosa"; ratio/token_sort do not.
    phrases = [p for p in dict.fromkeys(substance.terms + substance.tokens) if len(p) >= 5]
    best: list[tuple[float, str]] = [(0.0, "")] * len(rows)
    if phrases:
        queries = [masked for _, _, masked in rows]
        for scorer in (fuzz.ratio, fuzz.token_sort_ratio):
            scores = process.cdist(queries, phrases, scorer=scorer, workers=-1)
            for i, j in enumerate(scores.argmax(axis=1)):
                if scores[i, j] > best[i][0]:
                    best[i] = (float(scores[i, j]), phrases[j])

    fuzzy = [w for w in substance.fuzzy if len(w) >= 5]
    words = sorted({w for _, _, masked in rows for w in masked.split() if len(w) >= 4})
    if fuzzy and words:
        scores = process.cdist(words, fuzzy, scorer=Levenshtein.normalized_similarity, workers=-1)
        word_best = {
            w: (float(scores[i, j]) * 100, fuzzy[j])
            for i, (w, j) in enumerate(zip(words, scores.argmax(axis=1), strict=True))
        }
        for i, (_, _, masked) in enumerate(rows):
            for w in masked.split():
                if w in word_best and word_best[w][0] > best[i][0]:
                    best[i] = word_best[w]

    found = collisions + [
        Suggestion(string, n_cases, round(score, 1), nearest)
        for (string, n_cases, _), (score, nearest) in zip(rows, best, strict=True)
        if score >= threshold
    ]
    found.sort(key=lambda s: (-s.score, -s.n_cases, s.string))
    return found[:limit]
