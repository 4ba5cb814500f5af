"""FAERS/LAERS quarterly ASCII layout: eras, member names and column maps.

Facts from ../shared/faers-format.md (sections 1-3). Ingest reads this to map every era's header
onto one canonical column set per table; the synthetic generator reads it to write each era's
exact header, and load and fetch the limits on how far a member may inflate. Nothing here
touches a database.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass

from .errors import QuarterError, SurveillanceError

TABLES = ("demo", "drug", "reac", "outc", "rpsr", "ther", "indi")

# Header column lists per era, exactly as the files spell them (legacy upper case).
# L0 = LAERS 2004Q1-2005Q2, L1 = LAERS 2005Q3-2012Q3, FA = FAERS 2012Q4-2014Q2, FB = 2014Q3 on.
_LAERS_DEMO_L0 = (
    "ISR CASE I_F_COD FOLL_SEQ IMAGE EVENT_DT MFR_DT FDA_DT REPT_COD MFR_NUM MFR_SNDR AGE AGE_COD "
    "GNDR_COD E_SUB WT WT_COD REPT_DT OCCP_COD DEATH_DT TO_MFR CONFID"
).split()
HEADERS: dict[str, dict[str, tuple[str, ...]]] = {
    "L0": {
        "demo": tuple(_LAERS_DEMO_L0),
        "drug": tuple(
            "ISR DRUG_SEQ ROLE_COD DRUGNAME VAL_VBM ROUTE DOSE_VBM DECHAL RECHAL LOT_NUM EXP_DT "
            "NDA_NUM".split()
        ),
        "reac": ("ISR", "PT"),
        "outc": ("ISR", "OUTC_COD"),
        "rpsr": ("ISR", "RPSR_COD"),
        "ther": ("ISR", "DRUG_SEQ", "START_DT", "END_DT", "DUR", "DUR_COD"),
        "indi": ("ISR", "DRUG_SEQ", "INDI_PT"),
    },
    "FA": {
        "demo": tuple(
            "primaryid caseid caseversion i_f_code event_dt mfr_dt init_fda_dt fda_dt rept_cod "
            "mfr_num mfr_sndr age age_cod gndr_cod e_sub wt wt_cod rept_dt to_mfr occp_cod "
            "reporter_country occr_country".split()
        ),
        "drug": tuple(
            "primaryid caseid drug_seq role_cod drugname val_vbm route dose_vbm cum_dose_chr "
            "cum_dose_unit dechal rechal lot_num exp_dt nda_num dose_amt dose_unit dose_form "
            "dose_freq".split()
        ),
        "reac": ("primaryid", "caseid", "pt"),
        "outc": ("primaryid", "caseid", "outc_cod"),
        "rpsr": ("primaryid", "caseid", "rpsr_cod"),
        "ther": ("primaryid", "caseid", "dsg_drug_seq", "start_dt", "end_dt", "dur", "dur_cod"),
        "indi": ("primaryid", "caseid", "indi_drug_seq", "indi_pt"),
    },
    "FB": {
        "demo": tuple(
            "primaryid caseid caseversion i_f_code event_dt mfr_dt init_fda_dt fda_dt rept_cod "
            "auth_num mfr_num mfr_sndr lit_ref age age_cod age_grp sex e_sub wt wt_cod rept_dt "
            "to_mfr occp_cod reporter_country occr_country".split()
        ),
        "drug": tuple(
            "primaryid caseid drug_seq role_cod drugname prod_ai val_vbm route dose_vbm "
            "cum_dose_chr cum_dose_unit dechal rechal lot_num exp_dt nda_num dose_amt dose_unit "
            "dose_form dose_freq".split()
        ),
        "reac": ("primaryid", "caseid", "pt", "drug_rec_act"),
        "outc": ("primaryid", "caseid", "outc_cod"),
        "rpsr": ("primaryid", "caseid", "rpsr_cod"),
        "ther": ("primaryid", "caseid", "dsg_drug_seq", "start_dt", "end_dt", "dur", "dur_cod"),
        "indi": ("primaryid", "caseid", "indi_drug_seq", "indi_pt"),
    },
}
HEADERS["L1"] = dict(HEADERS["L0"], demo=(*_LAERS_DEMO_L0, "REPORTER_COUNTRY"))

# Header name (lower-cased, trimmed) -> canonical column, per table where it differs.
_RENAMES_ALL = {
    "isr": "primaryid",
    "case": "caseid",
    "i_f_cod": "i_f_code",
    "gndr_cod": "sex",
    "outc_code": "outc_cod",
    "lot_nbr": "lot_num",
}
_RENAMES_TABLE = {"ther": {"drug_seq": "dsg_drug_seq"}, "indi": {"drug_seq": "indi_drug_seq"}}

# Canonical column sets: the union of every era's columns, after renaming.
CANONICAL: dict[str, tuple[str, ...]] = {
    "demo": tuple(
        "primaryid caseid caseversion i_f_code foll_seq image event_dt mfr_dt init_fda_dt fda_dt "
        "rept_cod auth_num mfr_num mfr_sndr lit_ref age age_cod age_grp sex e_sub wt wt_cod "
        "rept_dt to_mfr occp_cod death_dt confid reporter_country occr_country".split()
    ),
    "drug": tuple(HEADERS["FB"]["drug"]),
    "reac": ("primaryid", "caseid", "pt", "drug_rec_act"),
    "outc": ("primaryid", "caseid", "outc_cod"),
    "rpsr": ("primaryid", "caseid", "rpsr_cod"),
    "ther": HEADERS["FB"]["ther"],
    "indi": HEADERS["FB"]["indi"],
}

TABLE_MEMBER = re.compile(
    r"(?i)(?:^|/)(demo|drug|reac|outc|rpsr|ther|indi)(\d{2})q([1-4])(?:_new)?\.txt$"
)
DELETED_MEMBER = re.compile(r"(?i)(?:^|/)delete\w*?(\d{2})q([1-4])\.txt$")
QUARTER = re.compile(r"^(\d{4})[qQ]([1-4])$")

LAERS = "LAERS"
FAERS = "FAERS"
MAX_MEMBER_BYTES_ENV = "SURVEILLANCE_MAX_MEMBER_BYTES"


@dataclass(frozen=True, order=True)
class Quarter:
    """A FAERS publication quarter such as 2014Q3."""

    year: int
    q: int

    @classmethod
    def parse(cls, text: str) -> Quarter:
        """Parse '2014Q3' or '2014q3'; raise QuarterError (a ValueError) otherwise."""
        m = QUARTER.match(text.strip())
        if not m or int(m.group(1)) < 2004:
            raise QuarterError(f"not a FAERS quarter (expected like 2014Q3): {text!r}")
        return cls(int(m.group(1)), int(m.group(2)))

    def __str__(self) -> str:
        return f"{self.year}Q{self.q}"

    @property
    def era(self) -> str:
        """Column-layout era: L0, L1, FA or FB."""
        if (self.year, self.q) <= (2005, 2):
            return "L0"
        if (self.year, self.q) <= (2012, 3):
            return "L1"
        if (self.year, self.q) <= (2014, 2):
            return "FA"
        return "FB"

    @property
    def source(self) -> str:
        """LAERS for the legacy system (to 2012Q3), FAERS after."""
        return LAERS if self.era in ("L0", "L1") else FAERS

    @property
    def yyqn(self) -> str:
        """The short form used inside member names: 14Q3."""
        return f"{self.year % 100:02d}Q{self.q}"

    def next(self) -> Quarter:
        return Quarter(self.year + self.q // 4, self.q % 4 + 1)


def quarter_option(text: str | None, option: str) -> str | None:
    """A command option's quarter ('2014q3' -> '2014Q3'; None stays None); a bad one is a usage
    error that names the option."""
    if text is None:
        return None
    try:
        return str(Quarter.parse(text))
    except QuarterError as e:
        raise QuarterError(f"{option}: {e}") from e


def quarter_gaps(first: str, last: str, loaded: Iterable[str]) -> list[str]:
    """The quarters strictly between `first` and `last` that are not in `loaded`, oldest first."""
    have, gaps, q = set(loaded), [], Quarter.parse(first).next()
    while str(q) < last:
        if str(q) not in have:
            gaps.append(str(q))
        q = q.next()
    return gaps


def canonical_name(table: str, header_name: str) -> str:
    """Map one header name of any era to its canonical column (lower-cased, trimmed, BOM gone)."""
    name = header_name.replace("\ufeff", "").replace("ï»¿", "").strip().lower()
    name = _RENAMES_TABLE.get(table, {}).get(name, name)
    return _RENAMES_ALL.get(name, name)


def has_trailing_dollar(source: str, table: str) -> bool:
    """LAERS data rows end with one extra "$" (an empty last field), except INDI (format §2)."""
    return source == LAERS and table != "indi"


@dataclass(frozen=True)
class ZipLimits:
    """How far one member may inflate: refuses a zip bomb before reading and while streaming.

    Real FAERS members reach about 1.5 GB at a compression ratio of 8-10."""

    max_member_bytes: int = 8 << 30
    max_ratio: float = 200.0
    ratio_floor_bytes: int = 64 << 20  # smaller members may have any ratio

    @classmethod
    def from_env(cls) -> ZipLimits:
        """Defaults, with max_member_bytes from $SURVEILLANCE_MAX_MEMBER_BYTES when set."""
        value = os.environ.get(MAX_MEMBER_BYTES_ENV)
        if not value:
            return cls()
        try:
            return cls(max_member_bytes=int(value))
        except ValueError as e:
            raise SurveillanceError(
                f"{MAX_MEMBER_BYTES_ENV}={value!r}: expected a number of bytes"
            ) from e

    def problem(self, inflated: int, compressed: int) -> str | None:
        """Why a member of this inflated and compressed size is refused, or None."""
        if inflated > self.max_member_bytes:
            return (
                f"inflates to more than {self.max_member_bytes:,} bytes "
                f"(set {MAX_MEMBER_BYTES_ENV} to allow more)"
            )
        if inflated > self.ratio_floor_bytes and inflated > self.max_ratio * max(compressed, 1):
            return (
                f"inflates {compressed:,} compressed bytes to more than {inflated:,} "
                f"(ratio over {self.max_ratio:g}): a zip bomb?"
            )
        return None
