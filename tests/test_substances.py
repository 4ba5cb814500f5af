"""Substance term files and matching: labelled precision/recall, normalisation, errors, speed."""

from __future__ import annotations

import csv
import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from surveillance.substances import (
    Match,
    SubstanceError,
    builtin_substances,
    discover,
    load_substance,
    normalise,
)

LABELLED = Path(__file__).parent / "data" / "kratom_labelled.tsv"


def _labelled_rows() -> list[dict[str, str]]:
    with LABELLED.open(encoding="utf-8") as f:
        lines = [line for line in f if not line.startswith("#")]
    return list(csv.DictReader(lines, delimiter="\t"))


def _precision_recall(substance_name: str, column: str) -> tuple[float, float, list[str]]:
    substance = load_substance(substance_name)
    tp = fp = fn = 0
    wrong = []
    for row in _labelled_rows():
        found = substance.match(row["drugname"], row["prod_ai"] or None) is not None
        expected = row[column] == "1"
        tp += found and expected
        fp += found and not expected
        fn += expected and not found
        if found != expected:
            wrong.append(f"{row['drugname']!r} / {row['prod_ai']!r}: expected {int(expected)}")
    return tp / (tp + fp), tp / (tp + fn), wrong


def test_labelled_list_is_large_and_balanced() -> None:
    rows = _labelled_rows()
    positives = sum(row["expected_kratom"] == "1" for row in rows)
    assert len(rows) >= 150
    assert 0.35 <= positives / len(rows) <= 0.65
    assert all(row["expected_kratom"] == "1" for row in rows if row["expected_7oh"] == "1")


@pytest.mark.parametrize(
    ("name", "column"), [("kratom", "expected_kratom"), ("7-oh", "expected_7oh")]
)
def test_precision_and_recall_on_labelled_list(name: str, column: str) -> None:
    precision, recall, wrong = _precision_recall(name, column)
    print(f"{name}: precision {precision:.3f}, recall {recall:.3f} on {len(_labelled_rows())}")
    assert wrong == []
    assert (precision, recall) == (1.0, 1.0)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("HERBALS\\MITRAGYNINE", "herbals mitragynine"),
        ("HERBALSMITRAGYNINE", "herbals mitragynine"),
        ("Kratom 500 mg Capsules", "kratom"),
        ("KRATOM 3 OZ.", "kratom"),
        ("CLUB 13 KRATOM MAENG DA RED 90GM", "club 13 kratom maeng da red"),
        ("MIT 45", "mit 45"),
        ("Krátom  (Mitragyna   speciosa)", "kratom mitragyna speciosa"),
        ("7-OH", "7oh"),
        ("7 OH", "7oh"),
        ("7OH", "7oh"),
        ("7 - oh 15mg tablet", "7oh"),
        ("7-Hydroxy-Mitragynine", "7hydroxy mitragynine"),
        ("17-OH PROGESTERONE", "17oh progesterone"),
        ("KRATOM;ALCOHOL", "kratom alcohol"),
        ("KAVA/KRATOM", "kava kratom"),
        ("0.5 capsule mg", ""),
        ("", ""),
        (None, ""),
    ],
)
def test_normalise(raw: str | None, expected: str) -> None:
    assert normalise(raw) == expected


@settings(max_examples=500, deadline=None)
@given(st.text())
def test_normalise_is_idempotent(text: str) -> None:
    once = normalise(text)
    assert normalise(once) == once


@settings(max_examples=300, deadline=None)
@given(
    st.text(
        alphabet="kratomKRATOM7hydroxyOH ;\\/-.0123456789mgMGparvifoliaspeciosacbd", max_size=40
    )
)
def test_normalise_idempotent_on_drug_like_text(text: str) -> None:
    once = normalise(text)
    assert normalise(once) == once


def test_exclusions_veto_look_alikes_but_not_mixtures() -> None:
    kratom = load_substance("kratom")
    assert kratom.match("MITRAGYNA PARVIFOLIA") is None
    assert kratom.match("LAGERSTROEMIA SPECIOSA") is None
    assert kratom.match("7-OH-CBD") is None
    hit = kratom.match("MITRAGYNA PARVIFOLIA; KRATOM")
    assert hit is not None and hit.term == "kratom"
    assert load_substance("7-oh").match("7-OH-CBD AND 7-OH TABLETS") is not None


def test_match_reports_field_rule_and_term() -> None:
    kratom = load_substance("kratom")
    assert kratom.match("UNKNOWN", "HERBALS\\MITRAGYNINE") == Match(
        "kratom", "HERBALS\\MITRAGYNINE", "prod_ai", "token", "mitragynine"
    )
    assert kratom.match("FEEL FREE") == Match(
        "kratom", "FEEL FREE", "drugname", "term", "feel free"
    )
    hit = kratom.match("KRATAM TEA")
    assert hit is not None and hit.rule == "pattern" and hit.term.startswith("\\bkr")
    assert kratom.match(None, None) is None


def test_builtin_substances() -> None:
    assert {"7-oh", "kratom"} <= set(builtin_substances())
    for name in builtin_substances():
        substance = load_substance(name)
        assert substance.name == name and substance.version and substance.sources


def test_unknown_substance_names_the_builtins(tmp_path: Path) -> None:
    with pytest.raises(SubstanceError, match=r"built-in substances: .*kratom"):
        load_substance(str(tmp_path / "nothing.toml"))


USER_TOML = """
[substance]
name = "kava"
version = "0.1"
description = "Kava (Piper methysticum)"
sources = ["test"]

[rules]
terms = ["AWA"]
tokens = ["Kava", "Piper Methysticum"]
patterns = ['\\bkawa\\b']
exclusions = ['\\bkava kava shampoo\\b']
"""


def test_user_substance_file_loads_and_matches(tmp_path: Path) -> None:
    path = tmp_path / "kava.toml"
    path.write_text(USER_TOML, encoding="utf-8")
    kava = load_substance(path)
    assert kava.source_path == str(path)
    assert kava.tokens == ("kava", "piper methysticum")
    assert kava.match("HERBALS\\PIPER METHYSTICUM ROOT") is not None
    assert kava.match("awa") is not None
    assert kava.match("KAWA TEA") is not None
    assert kava.match("KAVA KAVA SHAMPOO") is None
    assert kava.match("KRATOM") is None
    assert load_substance(str(path)).name == "kava"


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("[substance\nname = 'x'", "not valid TOML"),
        (USER_TOML.replace("'\\bkawa\\b'", "'kawa('"), "bad regex in patterns"),
        (USER_TOML.replace("'\\bkava kava", "'[kava"), "bad regex in exclusions"),
        (USER_TOML.replace("'\\bkawa\\b'", "'(k)awa\\1'"), "backreference"),
        (USER_TOML.replace("'\\bkawa\\b'", "'x*'"), "matches empty text"),
        (USER_TOML.replace("'\\bkawa\\b'", "'\\b'"), "matches empty text"),
        (USER_TOML.replace("'\\bkawa\\b'", "'\\Akawa'"), "use ^ and $"),
        (USER_TOML.replace('version = "0.1"', ""), "'version'"),
        (USER_TOML.replace("[substance]", "[substanse]"), "unknown table or key 'substanse'"),
        (USER_TOML.replace("tokens =", "token ="), "unknown key 'token' in [rules]"),
        (USER_TOML.replace('["AWA"]', '"AWA"'), "terms must be a list of strings"),
        (USER_TOML.replace('["AWA"]', '["500 mg"]'), "empty once normalised"),
        ("[substance]\nname='x'\nversion='1'\ndescription='d'\n", "at least one of terms"),
    ],
)
def test_malformed_files_name_the_file_and_problem(tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(SubstanceError) as info:
        load_substance(path)
    assert str(path) in str(info.value)
    assert problem in str(info.value)


def test_match_many_agrees_with_match_on_labelled_list() -> None:
    rows = _labelled_rows()
    strings = [row["drugname"] for row in rows] + [row["prod_ai"] for row in rows]
    for name in builtin_substances():
        substance = load_substance(name)
        expected = {s: m for s in strings if (m := substance.match(s))}
        assert substance.match_many(strings) == expected


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(alphabet="kratom7OH mitragynparvifolcbd;\\-\n\r0123456789", max_size=30)))
def test_match_many_agrees_with_match(strings: list[str]) -> None:
    kratom = load_substance("kratom")
    expected = {s: m for s in strings if (m := kratom.match(s))}
    assert kratom.match_many(strings) == expected


def test_match_many_finds_planted_strings_among_many() -> None:
    # Its speed on 300,000 strings is a line of `make bench` (bench/bench.py), not a test.
    rng = random.Random(20240101)
    drugs = ["ACETAMINOPHEN", "HUMIRA", "METFORMIN HYDROCHLORIDE", "HERBALS\\KAVA", "KETOROLAC"]
    strings = [
        f"{rng.choice(drugs)} {rng.randint(1, 1000)} MG "
        f"{''.join(rng.choices('ABCDEFGHIJKLMNOPQRSTUVWXYZ', k=rng.randint(3, 12)))} TABLETS"
        for _ in range(20_000)
    ]
    for i in range(0, len(strings), 1000):
        strings[i] = f"RED BALI KRATOM {i}"
    strings[1] = "KETUM GEL 2.5%"
    strings[2] = "KETUM POWDER"
    kratom = load_substance("kratom")
    hits = kratom.match_many(strings)
    planted = {s for i, s in enumerate(strings) if i % 1000 == 0} | {"KETUM POWDER"}
    assert set(hits) == planted
    assert hits["KETUM POWDER"].rule == "context" and hits["KETUM POWDER"].term == "ketum"


DECOYS = [
    ("KETOROLAC", 900),
    ("KRYSTEXXA", 50),
    ("MITOMYCIN", 80),
    ("MITOXANTRONE", 20),
    ("MITOTANE", 10),
    ("MIRTAZAPINE", 200),
    ("KETAMINE", 300),
    ("KRAKEN RUM", 2),
    ("HUMIRA", 10_000),
    ("LAGERSTROEMIA SPECIOSA", 4),
    ("MITRAGYNA PARVIFOLIA", 2),
    ("7-OH-CBD", 3),
]


def test_discover_finds_planted_misspellings_not_decoys() -> None:
    planted = [("KRATIM", 3), ("KRAT0M CAPSULES", 5), ("MITRAGYNIE", 1), ("KRAT OM", 2)]
    suggestions = discover(planted + DECOYS + [("KRATOM", 100)], load_substance("kratom"))
    assert {s.string for s in suggestions} == {s for s, _ in planted}
    best = {s.string: s for s in suggestions}
    assert best["KRATIM"].nearest_term == "kratom" and best["KRATIM"].n_cases == 3
    assert all(s.score >= 80 for s in suggestions)
    assert [s.score for s in suggestions] == sorted((s.score for s in suggestions), reverse=True)


def test_discover_with_a_small_term_file(tmp_path: Path) -> None:
    path = tmp_path / "k.toml"
    path.write_text(
        "[substance]\nname='k'\nversion='1'\ndescription='d'\n"
        "[rules]\ntokens=['kratom', 'mitragyna speciosa', 'mitragynine']\n"
        "exclusions=['lagerstroemia speciosa']\n",
        encoding="utf-8",
    )
    planted = [("KRATIM", 3), ("MITRAGINA SPECIOSA", 2), ("KRAT0M", 7)]
    suggestions = discover(planted + DECOYS, load_substance(path))
    assert [s.string for s in suggestions] == ["MITRAGINA SPECIOSA", "KRAT0M", "KRATIM"]
    assert suggestions[0].nearest_term == "mitragyna speciosa"


def test_discover_limit_and_threshold() -> None:
    kratom = load_substance("kratom")
    planted = [("KRATIM", 3), ("KRAT0M", 5), ("KRATUMM", 1)]
    assert len(discover(planted, kratom, limit=1)) == 1
    assert discover(planted, kratom, threshold=99.0) == []
    assert discover([], kratom) == []


def test_ambiguous_name_needs_context_and_never_a_blocker() -> None:
    kratom = load_substance("kratom")
    assert kratom.version == "1.1.0"
    for string in ("KETUM", "KETUM GEL", "Ketum 2,5% gel", "KETUM LEAF GEL", "KETUM CREAM"):
        assert kratom.match(string) is None, string
    hit = kratom.match("KETUM POWDER 50 G")
    assert hit is not None and (hit.rule, hit.term) == ("context", "ketum")
    assert kratom.match("DAUN KETUM") is not None and kratom.match("HERBALS\\KETUM") is not None
    # another rule still finds kratom beside the gel
    assert kratom.match("KETUM GEL; KRATOM") is not None
    assert kratom.ambiguity(normalise("KETUM GEL"), "KETUM GEL") == ("ketum", "beside 'gel'")
    assert kratom.ambiguity(normalise("KETUM"), "KETUM") == ("ketum", "without a context word")
    assert kratom.ambiguity(normalise("KETUM LEAF"), "KETUM LEAF") is None


def test_discover_lists_collisions_for_review() -> None:
    found = discover(
        [("KETUM GEL", 4), ("KETUM", 2), ("KRATIM", 3), ("KETUM POWDER", 1)],
        load_substance("kratom"),
    )
    by_string = {s.string: s for s in found}
    assert set(by_string) == {"KETUM GEL", "KETUM", "KRATIM"}
    assert by_string["KETUM GEL"].note == "ambiguous name 'ketum' beside 'gel': not counted"
    assert by_string["KETUM"].note == "ambiguous name 'ketum' without a context word: not counted"
    assert by_string["KRATIM"].note == ""
    assert [s.string for s in discover([("KETUM GEL", 4)], load_substance("kratom"))] == [
        "KETUM GEL"
    ]


@pytest.mark.parametrize(
    ("ambiguous", "problem"),
    [
        ("[ambiguous]\nnames = ['awa']\n", "names need context words"),
        ("[ambiguous]\nnames = ['awa']\ncontext = ['...']\n", "ambiguous context entry"),
        (
            "[ambiguous]\nnames = ['awa']\ncontext = ['root']\nblocker = ['gel']\n",
            "unknown key 'blocker' in [ambiguous]",
        ),
        ("ambiguous = 'awa'\n", "[ambiguous] must be a table"),
    ],
)
def test_malformed_ambiguous_table(tmp_path: Path, ambiguous: str, problem: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(USER_TOML.replace("[substance]", ambiguous + "[substance]"), encoding="utf-8")
    with pytest.raises(SubstanceError) as info:
        load_substance(path)
    assert str(path) in str(info.value) and problem in str(info.value)


def test_user_file_with_ambiguous_names(tmp_path: Path) -> None:
    path = tmp_path / "kava.toml"
    path.write_text(
        USER_TOML + "\n[ambiguous]\nnames = ['Awa Awa']\ncontext = ['root']\nblockers = ['soap']\n",
        encoding="utf-8",
    )
    kava = load_substance(path)
    assert kava.match("AWA AWA ROOT") is not None and kava.match("AWA AWA SOAP ROOT") is None
    assert kava.match_many(["AWA AWA ROOT", "AWA AWA SOAP ROOT", "AWA AWA"]).keys() == {
        "AWA AWA ROOT"
    }
