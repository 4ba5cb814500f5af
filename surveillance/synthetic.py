"""Seeded generator of FDA-shaped FAERS/LAERS quarterly ASCII zips. ALL OUTPUT IS SYNTHETIC.

Writes `aers_ascii_YYYYqN.zip` (LAERS, 2004Q1-2012Q3) and `faers_ascii_YYYY{q|Q}N.zip` (FAERS,
2012Q4 on) laid out byte for byte as each era publishes them (member names, header spellings,
trailing `$`, CRLF, BOM, latin-1 bytes; see shared/faers-format.md), with planted damage, case
versions, deleted lists and kratom cases. Every zip holds a `README_SYNTHETIC.txt` member saying
the data are generated, not FDA data. Alongside each zip it returns the ground truth that ingest
must reproduce: the rows it must store (canonical columns, text as written, empty -> None), the
deleted list and the damaged physical lines it must quarantine; a series adds case-level truth
(latest version, deletion, kratom status). `generate_series(..., background=N)` adds about N
fast, vectorised FAERS-like reports a quarter around the planned cases (the demo's background);
`write_full_size_quarter` writes a benchmark-sized quarter with the same generator, without truth.

Layout rules chosen where the FDA is not consistent: the data folder is `ascii/` up to 2017Q4 and
`ASCII/` from 2018Q1; the zip name has an upper-case `Q` for 2019Q1-2021Q4, 2022Q3-Q4 and
2023Q3-Q4; a split record's embedded newline is a bare LF (every other line ends in CRLF).
"""

from __future__ import annotations

import copy
import fcntl
import functools
import json
import multiprocessing
import random
import time
import zipfile
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from .faers_format import (
    CANONICAL,
    FAERS,
    HEADERS,
    LAERS,
    TABLES,
    Quarter,
    canonical_name,
    has_trailing_dollar,
)

Row = dict[str, str | int | None]  # table columns are text; source_line is an int

# --- vocabulary (real drug names, MedDRA PTs, codes) -------------------------------------------

# Drug name as commonly reported | active ingredient (prod_ai; FAERS joins several with '\').
_DRUG_TABLE = r"""
HUMIRA|ADALIMUMAB
ENBREL|ETANERCEPT
REVLIMID|LENALIDOMIDE
XARELTO|RIVAROXABAN
ELIQUIS|APIXABAN
LIPITOR|ATORVASTATIN CALCIUM
CRESTOR|ROSUVASTATIN CALCIUM
ZOCOR|SIMVASTATIN
METFORMIN|METFORMIN HYDROCHLORIDE
JANUVIA|SITAGLIPTIN PHOSPHATE
LANTUS|INSULIN GLARGINE
HUMALOG|INSULIN LISPRO
VICTOZA|LIRAGLUTIDE
OZEMPIC|SEMAGLUTIDE
TRULICITY|DULAGLUTIDE
JARDIANCE|EMPAGLIFLOZIN
LISINOPRIL|LISINOPRIL
AMLODIPINE|AMLODIPINE BESYLATE
LOSARTAN|LOSARTAN POTASSIUM
METOPROLOL|METOPROLOL TARTRATE
HYDROCHLOROTHIAZIDE|HYDROCHLOROTHIAZIDE
FUROSEMIDE|FUROSEMIDE
WARFARIN|WARFARIN SODIUM
PLAVIX|CLOPIDOGREL BISULFATE
ASPIRIN|ASPIRIN
"BABY" ASPIRIN|ASPIRIN
TYLENOL|ACETAMINOPHEN
TYLENOL #3|ACETAMINOPHEN\CODEINE PHOSPHATE
IBUPROFEN|IBUPROFEN
NAPROXEN|NAPROXEN
CELEBREX|CELECOXIB
PREDNISONE|PREDNISONE
PREDNISONE.|PREDNISONE
METHOTREXATE|METHOTREXATE
OMEPRAZOLE|OMEPRAZOLE
NEXIUM|ESOMEPRAZOLE MAGNESIUM
PANTOPRAZOLE|PANTOPRAZOLE SODIUM
SYNTHROID|LEVOTHYROXINE SODIUM
ZOLOFT|SERTRALINE HYDROCHLORIDE
LEXAPRO|ESCITALOPRAM OXALATE
CITALOPRAM|CITALOPRAM HYDROBROMIDE
PROZAC|FLUOXETINE HYDROCHLORIDE
PAXIL|PAROXETINE HYDROCHLORIDE
CYMBALTA|DULOXETINE HYDROCHLORIDE
EFFEXOR XR|VENLAFAXINE HYDROCHLORIDE
WELLBUTRIN|BUPROPION HYDROCHLORIDE
TRAZODONE|TRAZODONE HYDROCHLORIDE
SEROQUEL|QUETIAPINE FUMARATE
ABILIFY|ARIPIPRAZOLE
RISPERDAL|RISPERIDONE
ZYPREXA|OLANZAPINE
LAMICTAL|LAMOTRIGINE
DEPAKOTE|DIVALPROEX SODIUM
KEPPRA|LEVETIRACETAM
NEURONTIN|GABAPENTIN
LYRICA|PREGABALIN
XANAX|ALPRAZOLAM
KLONOPIN|CLONAZEPAM
VALIUM|DIAZEPAM
ATIVAN|LORAZEPAM
AMBIEN|ZOLPIDEM TARTRATE
ADDERALL|AMPHETAMINE ASPARTATE\DEXTROAMPHETAMINE SULFATE
CONCERTA|METHYLPHENIDATE HYDROCHLORIDE
OXYCONTIN|OXYCODONE HYDROCHLORIDE
PERCOCET|ACETAMINOPHEN\OXYCODONE HYDROCHLORIDE
VICODIN|ACETAMINOPHEN\HYDROCODONE BITARTRATE
TRAMADOL|TRAMADOL HYDROCHLORIDE
DURAGESIC|FENTANYL
MORPHINE|MORPHINE SULFATE
DILAUDID|HYDROMORPHONE HYDROCHLORIDE
NARCAN|NALOXONE HYDROCHLORIDE
CHANTIX|VARENICLINE TARTRATE
SINGULAIR|MONTELUKAST SODIUM
ADVAIR DISKUS|FLUTICASONE PROPIONATE\SALMETEROL XINAFOATE
SYMBICORT|BUDESONIDE\FORMOTEROL FUMARATE DIHYDRATE
SPIRIVA|TIOTROPIUM BROMIDE
ALBUTEROL|ALBUTEROL SULFATE
XOLAIR|OMALIZUMAB
DUPIXENT|DUPILUMAB
KEYTRUDA|PEMBROLIZUMAB
OPDIVO|NIVOLUMAB
AVASTIN|BEVACIZUMAB
HERCEPTIN|TRASTUZUMAB
RITUXAN|RITUXIMAB
REMICADE|INFLIXIMAB
STELARA|USTEKINUMAB
COSENTYX|SECUKINUMAB
OTEZLA|APREMILAST
XELJANZ|TOFACITINIB CITRATE
GLEEVEC|IMATINIB MESYLATE
IBRANCE|PALBOCICLIB
TAXOL|PACLITAXEL
CISPLATIN|CISPLATIN
CARBOPLATIN|CARBOPLATIN
CYCLOPHOSPHAMIDE|CYCLOPHOSPHAMIDE
DOXORUBICIN|DOXORUBICIN HYDROCHLORIDE
GEMZAR|GEMCITABINE HYDROCHLORIDE
XELODA|CAPECITABINE
VELCADE|BORTEZOMIB
DEXAMETHASONE|DEXAMETHASONE
PROLIA|DENOSUMAB
FOSAMAX|ALENDRONATE SODIUM
FORTEO|TERIPARATIDE
TECFIDERA|DIMETHYL FUMARATE
GILENYA|FINGOLIMOD HYDROCHLORIDE
COPAXONE|GLATIRAMER ACETATE
AVONEX|INTERFERON BETA-1A
TYSABRI|NATALIZUMAB
HARVONI|LEDIPASVIR\SOFOSBUVIR
EPCLUSA|SOFOSBUVIR\VELPATASVIR
TRUVADA|EMTRICITABINE\TENOFOVIR DISOPROXIL FUMARATE
BIKTARVY|BICTEGRAVIR SODIUM\EMTRICITABINE\TENOFOVIR ALAFENAMIDE FUMARATE
CIPRO|CIPROFLOXACIN HYDROCHLORIDE
LEVAQUIN|LEVOFLOXACIN
AUGMENTIN|AMOXICILLIN\CLAVULANATE POTASSIUM
AMOXICILLIN|AMOXICILLIN
AZITHROMYCIN|AZITHROMYCIN
DOXYCYCLINE|DOXYCYCLINE HYCLATE
BACTRIM|SULFAMETHOXAZOLE\TRIMETHOPRIM
VANCOMYCIN|VANCOMYCIN HYDROCHLORIDE
ZOSYN|PIPERACILLIN SODIUM\TAZOBACTAM SODIUM
FLUCONAZOLE|FLUCONAZOLE
VALTREX|VALACYCLOVIR HYDROCHLORIDE
TAMIFLU|OSELTAMIVIR PHOSPHATE
VIAGRA|SILDENAFIL CITRATE
CIALIS|TADALAFIL
FLOMAX|TAMSULOSIN HYDROCHLORIDE
PROSCAR|FINASTERIDE
YAZ|DROSPIRENONE\ETHINYL ESTRADIOL
MIRENA|LEVONORGESTREL
NEXPLANON|ETONOGESTREL
PREMARIN|ESTROGENS, CONJUGATED
ESTRADIOL|ESTRADIOL
ACCUTANE|ISOTRETINOIN
BOTOX|ONABOTULINUMTOXINA
ALLEGRA|FEXOFENADINE HYDROCHLORIDE
ZYRTEC|CETIRIZINE HYDROCHLORIDE
BENADRYL|DIPHENHYDRAMINE HYDROCHLORIDE
IMODIUM|LOPERAMIDE HYDROCHLORIDE
MIRALAX|POLYETHYLENE GLYCOL 3350
ONDANSETRON|ONDANSETRON HYDROCHLORIDE
REGLAN|METOCLOPRAMIDE HYDROCHLORIDE
ALLOPURINOL|ALLOPURINOL
COLCHICINE|COLCHICINE
DIGOXIN|DIGOXIN
AMIODARONE|AMIODARONE HYDROCHLORIDE
ENTRESTO|SACUBITRIL\VALSARTAN
SPIRONOLACTONE|SPIRONOLACTONE
POTASSIUM CHLORIDE|POTASSIUM CHLORIDE
VITAMIN D3|CHOLECALCIFEROL
FISH OIL|FISH OIL
MULTIVITAMIN|VITAMINS
FOLIC ACID|FOLIC ACID
HEPARIN|HEPARIN SODIUM
LOVENOX|ENOXAPARIN SODIUM
CLOZAPINE|CLOZAPINE
LITHIUM CARBONATE|LITHIUM CARBONATE
VYVANSE|LISDEXAMFETAMINE DIMESYLATE
STRATTERA|ATOMOXETINE HYDROCHLORIDE
SUMATRIPTAN|SUMATRIPTAN SUCCINATE
TOPAMAX|TOPIRAMATE
PHENTERMINE|PHENTERMINE HYDROCHLORIDE
"""
DRUGS: tuple[tuple[str, str], ...] = tuple(
    (name, ai) for name, ai in (line.split("|") for line in _DRUG_TABLE.strip().splitlines())
)

# Substances kratom reports typically co-report (drug name | prod_ai).
_CO_SUBSTANCE_TABLE = r"""
ALCOHOL|ALCOHOL
Ethanol|ALCOHOL
HEROIN|DIACETYLMORPHINE
FENTANYL|FENTANYL
Oxycodone|OXYCODONE HYDROCHLORIDE
METHADONE|METHADONE HYDROCHLORIDE
SUBOXONE|BUPRENORPHINE HYDROCHLORIDE\NALOXONE HYDROCHLORIDE
Buprenorphine|BUPRENORPHINE
ALPRAZOLAM|ALPRAZOLAM
Clonazepam|CLONAZEPAM
DIAZEPAM|DIAZEPAM
METHAMPHETAMINE|METHAMPHETAMINE
COCAINE|COCAINE
Amphetamine|AMPHETAMINE
GABAPENTIN|GABAPENTIN
Pregabalin|PREGABALIN
QUETIAPINE|QUETIAPINE FUMARATE
CANNABIS|CANNABIS SATIVA FLOWERING TOP
DIPHENHYDRAMINE|DIPHENHYDRAMINE HYDROCHLORIDE
LOPERAMIDE|LOPERAMIDE HYDROCHLORIDE
Tramadol|TRAMADOL HYDROCHLORIDE
PHENIBUT|PHENIBUT
Sertraline|SERTRALINE HYDROCHLORIDE
"""
CO_SUBSTANCES: tuple[tuple[str, str], ...] = tuple(
    (name, ai)
    for name, ai in (line.split("|") for line in _CO_SUBSTANCE_TABLE.strip().splitlines())
)

# Kratom as reporters and coders spell it. A case is a kratom case when a drug row's drugname or
# prod_ai equals one of these, compared case-insensitively (LAERS writes everything upper case).
KRATOM_DRUGNAMES: tuple[str, ...] = (
    "KRATOM",
    "Kratom",
    "kratom",
    "kratom powder",
    "KRATOM POWDER",
    "Kratom capsules",
    "MITRAGYNA SPECIOSA",
    "Mitragyna speciosa leaf",
    "MITRAGYNA SPECIOSA LEAF",
    "MITRAGYNA SPECIOSA KORTH",
    "MITRAGYNA SPECIOSA WHOLE",
    "HERBALS\\MITRAGYNINE",
    "MITRAGYNINE",
    "mitragynine",
    "KRATUM",
    "KRATOM (MITRAGYNA SPECIOSA)",
    "RED BALI KRATOM",
    "Maeng Da Kratom",
    "GREEN MALAY KRATOM",
    "OPMS KRATOM",
    "kratom extract",
    "KETUM LEAF",
    "BIAK-BIAK",
)
SEVEN_OH_DRUGNAMES: tuple[str, ...] = (
    "7-HYDROXYMITRAGYNINE",
    "7-hydroxymitragynine",
    "7-OH-mitragynine",
    "7-OH MITRAGYNINE",
    "7-OH",
    "7OH TABLETS",
)
# Look-alikes that are not kratom: a matcher must not count them.
DECOY_DRUGNAMES: tuple[str, ...] = (
    "KETOROLAC",
    "Ketorolac tromethamine",
    "KRYSTEXXA",
    "MITOMYCIN",
    "MITOXANTRONE",
    "MITOTANE",
    "LAGERSTROEMIA SPECIOSA (BANABA)",
    "Chaenomeles speciosa",
    "7-HYDROXYCOUMARIN",
    "HYDROXYZINE",
    "HYDROMORPHONE",
    "RATIO-MORPHINE",
    "KETAMINE",
    "KETOCONAZOLE",
)
# prod_ai written beside kratom rows (FB); a few rows name a vague product and carry kratom only
# in prod_ai.
_KRATOM_PROD_AI = ("MITRAGYNA SPECIOSA LEAF", "HERBALS\\MITRAGYNINE", "MITRAGYNINE", "")
_VAGUE_PRODUCTS = ("DIETARY SUPPLEMENT", "Herbal powder")

# Herbal and dietary-supplement products as FAERS codes them (prod_ai HERBALS\<NAME>), the
# natural-product comparator's cases (surveillance/backgrounds/natural-products.toml). Drawn from
# their own random stream, so that adding them moved no other generated value.
HERBAL_PRODUCTS: tuple[tuple[str, str], ...] = (
    ("ASHWAGANDHA", "HERBALS\\WITHANIA SOMNIFERA ROOT"),
    ("TURMERIC", "HERBALS\\TURMERIC"),
    ("GINKGO BILOBA", "HERBALS\\GINKGO"),
    ("ST. JOHN'S WORT", "HERBALS\\HYPERICUM PERFORATUM"),
    ("Kava kava", "HERBALS\\PIPER METHYSTICUM ROOT"),
    ("GREEN TEA EXTRACT", "GREEN TEA LEAF"),
    ("MILK THISTLE", "HERBALS\\MILK THISTLE"),
    ("VALERIAN ROOT", "HERBALS\\VALERIAN"),
    ("BLACK COHOSH", "HERBALS\\BLACK COHOSH"),
)
HERBAL_RATE = 0.03
"""Share of ordinary drug rows replaced by a herbal product (series and demo)."""
KRATOM_ALONE_RATE = 0.5
"""Share of the kratom cases with kratom as primary suspect whose other drugs are all
concomitant: kratom the only suspect (drawn from its own random stream)."""
HERBAL_SHARE = 0.004
"""Share of a full-size quarter's drug rows that name a herbal product."""

# Ordinary drug names carrying latin-1 letters (all have latin-1 upper-case forms).
_LATIN1_DRUGNAMES = (
    "Paracétamol",
    "Ácido acetilsalicílico",
    "Novaminsulfon-ratiopharm®",
    "Lévothyrox",
    "Metamizol sódico",
    "Dafalgan Codéine",
)

_PT_TABLE = """
Nausea|Vomiting|Diarrhoea|Headache|Dizziness|Fatigue|Pyrexia|Rash|Pruritus|Dyspnoea|Cough
Arthralgia|Back pain|Pain in extremity|Abdominal pain|Abdominal pain upper|Constipation
Decreased appetite|Weight decreased|Weight increased|Insomnia|Anxiety|Depression|Somnolence
Confusional state|Tremor|Paraesthesia|Hypoaesthesia|Asthenia|Malaise|Oedema peripheral
Hypertension|Hypotension|Tachycardia|Bradycardia|Palpitations|Chest pain|Myocardial infarction
Cardiac arrest|Cardiac failure|Atrial fibrillation|Cerebrovascular accident|Deep vein thrombosis
Pulmonary embolism|Pneumonia|Sepsis|Urinary tract infection|Cellulitis|Nasopharyngitis|Influenza
Sinusitis|Bronchitis|Herpes zoster|Anaemia|Neutropenia|Thrombocytopenia|Febrile neutropenia
Leukopenia|Pancytopenia|Haemorrhage|Gastrointestinal haemorrhage|Epistaxis|Contusion|Fall
Hip fracture|Alopecia|Dry skin|Erythema|Urticaria|Hyperhidrosis|Drug hypersensitivity
Anaphylactic reaction|Angioedema|Stevens-Johnson syndrome|Toxic epidermal necrolysis
Toxic skin eruption|Hepatic enzyme increased|Alanine aminotransferase increased
Aspartate aminotransferase increased|Blood bilirubin increased|Hepatotoxicity|Hepatitis|Jaundice
Acute kidney injury|Renal failure|Blood creatinine increased|Hyperkalaemia|Hyponatraemia
Hypoglycaemia|Hyperglycaemia|Diabetes mellitus|Dehydration|Blood pressure increased
Heart rate increased|Vision blurred|Visual impairment|Tinnitus|Vertigo|Dysgeusia|Dry mouth
Stomatitis|Dyspepsia|Gastrooesophageal reflux disease|Pancreatitis|Colitis|Crohn's disease
Ill-defined disorder|Drug ineffective|Off label use|Product use issue|Incorrect dose administered
Product dose omission issue|Wrong technique in product usage process
Inappropriate schedule of product administration|Injection site pain|Injection site erythema
Injection site swelling|Injection site reaction|Infusion related reaction|Condition aggravated
Disease progression|Malignant neoplasm progression|Suicidal ideation|Suicide attempt
Completed suicide|Hallucination|Agitation|Aggression|Mood swings|Emotional disorder
Memory impairment|Amnesia|Syncope|Loss of consciousness|Migraine|Muscle spasms|Myalgia
Muscular weakness|Rhabdomyolysis|Osteonecrosis of jaw|Osteoporosis|Gait disturbance
Balance disorder|Feeling abnormal|Hypersensitivity|Chills|Night sweats|Hot flush|Gynaecomastia
Erectile dysfunction|Menstruation irregular|Unintended pregnancy
Foetal exposure during pregnancy|Abortion spontaneous|Tardive dyskinesia|Serotonin syndrome
Neuroleptic malignant syndrome|Electrocardiogram QT prolonged|Interstitial lung disease
Respiratory failure|Hypoxia|Asthma|Chronic obstructive pulmonary disease|Pleural effusion
Lymphoma|Breast cancer|Lung neoplasm malignant|Basal cell carcinoma|Parkinson's disease
Dementia|Nephrolithiasis|Cholelithiasis|Blood glucose increased|Blood pressure decreased
Oxygen saturation decreased|Platelet count decreased|White blood cell count decreased
Haemoglobin decreased|International normalised ratio increased|Cataract|Glaucoma|Dysphagia
Abdominal distension|Flatulence|Haematochezia|Melaena|Product quality issue
Therapeutic product effect decreased|Peripheral swelling|Joint swelling|Musculoskeletal stiffness
Neck pain|Sleep disorder|Nightmare|Restlessness|Irritability|Nervousness|Panic attack
Drug interaction|Intentional product misuse|Accidental exposure to product|Sinus congestion
Rhinorrhoea|Oropharyngeal pain|Wheezing|Dysphonia|Skin lesion|Skin exfoliation|Photosensitivity
Acne|Blister|Swelling face|Eye pain|Ocular hyperaemia|Lacrimation increased|Hearing impairment
Urinary retention|Pollakiuria|Haematuria|Proteinuria|Hot flush|Pain|Inflammation|Infection
"""
PTS: tuple[str, ...] = tuple(
    dict.fromkeys(pt for line in _PT_TABLE.strip().splitlines() for pt in line.split("|"))
)
KRATOM_REACTIONS: tuple[str, ...] = (
    "Toxicity to various agents",
    "Drug abuse",
    "Overdose",
    "Intentional overdose",
    "Accidental overdose",
    "Seizure",
    "Drug withdrawal syndrome",
    "Drug dependence",
    "Death",
    "Liver injury",
    "Cholestatic liver injury",
    "Drug-induced liver injury",
    "Respiratory depression",
    "Respiratory arrest",
    "Cardio-respiratory arrest",
    "Unresponsive to stimuli",
    "Coma",
    "Substance abuse",
    "Vomiting",
    "Tachycardia",
)
_KRATOM_REACTION_WEIGHTS = (9, 6, 6, 3, 2, 4, 0, 3, 4, 0, 0, 2, 2, 1, 2, 2, 1, 2, 3, 2)
# The planted signal: kratom cases report these far above background.
SIGNAL_PTS: tuple[str, ...] = ("Drug withdrawal syndrome", "Liver injury")
_SIGNAL_RATE_KRATOM = {"Drug withdrawal syndrome": 0.35, "Liver injury": 0.22}
_SIGNAL_RATE_BACKGROUND = 0.004
# Time to onset and dechallenge/rechallenge of the kratom (and 7-OH) drug rows, drawn from their
# own random stream ("onset/..."), so that no other generated value depends on them. The onset
# in whole days is floor(T), T ~ Weibull(ONSET_WEIBULL_SHAPE, ONSET_WEIBULL_SCALE_DAYS): the
# therapy start is the event date minus that many days. Only when the event date is a full day;
# of those, shares get a start known to the month or year only (FAERS), a start after the event
# (a planted data error), a second, later therapy row (a restart), or no therapy row at all.
ONSET_WEIBULL_SHAPE = 0.7
ONSET_WEIBULL_SCALE_DAYS = 30.0
ONSET_PARTIAL_START_RATE = 0.1
ONSET_NEGATIVE_RATE = 0.05
ONSET_RESTART_RATE = 0.1
ONSET_NO_THERAPY_RATE = 0.1
DECHAL_RATES = {"Y": 0.35, "N": 0.15, "U": 0.2, "D": 0.1, "": 0.2}
RECHAL_RATES = {"Y": 0.1, "N": 0.05, "U": 0.25, "D": 0.3, "": 0.3}
"""Shares of each DRUG dechal/rechal code on the kratom rows ('' = left blank)."""

_INDICATIONS = (
    "Hypertension|Type 2 diabetes mellitus|Rheumatoid arthritis|Psoriasis|Crohn's disease|"
    "Depression|Anxiety|Pain|Back pain|Schizophrenia|Bipolar disorder|Epilepsy|"
    "Multiple sclerosis|Breast cancer|Non-small cell lung cancer|Plasma cell myeloma|"
    "Atrial fibrillation|Hypercholesterolaemia|Asthma|Chronic obstructive pulmonary disease|"
    "Osteoporosis|HIV infection|Hepatitis C|Insomnia|Attention deficit hyperactivity disorder|"
    "Migraine|Gastrooesophageal reflux disease|Hypothyroidism|Contraception|"
    "Urinary tract infection|Pneumonia|Product used for unknown indication|"
    "Product used for unknown indication|Product used for unknown indication"
).split("|")
_KRATOM_INDICATIONS = (
    "Product used for unknown indication",
    "Pain",
    "Drug withdrawal syndrome",
    "Anxiety",
    "Depression",
    "Fatigue",
    "Drug dependence",
)

_ROUTES = (
    "Oral|Oral|Oral|Oral|Intravenous|Subcutaneous|Intramuscular|Topical|Transdermal|Inhalation|"
    "Nasal|Unknown|Unknown|Other|Intravenous drip"
).split("|")
_DOSE_UNITS = ("MG", "MG", "MG", "UG", "G", "ML", "IU", "MG/KG", "MG/M**2", "DF", "GTT")
_DOSE_FORMS = (
    "Tablet|TABLET, FILM COATED|Film-coated tablet|Capsule|Capsule, hard|Solution for injection|"
    "Injection|Oral solution|Prolonged-release tablet|Transdermal patch|Powder|Unknown"
).split("|")
_DOSE_FREQS = (
    "QD",
    "QD",
    "BID",
    "TID",
    "QID",
    "PRN",
    "QW",
    "/WK",
    "Q12H",
    "Q8H",
    "HS",
    "1X",
    "UNK",
)
_DUR_CODS = ("DAY", "DAY", "DAY", "WK", "MON", "YR", "HR")
_OUTC_BACKGROUND = {"DE": 0.05, "LT": 0.04, "HO": 0.25, "DS": 0.03, "CA": 0.005, "RI": 0.02}
_OUTC_KRATOM = {"DE": 0.25, "LT": 0.15, "HO": 0.45, "DS": 0.02, "CA": 0.0, "RI": 0.05}
_RPSR_CODES = ("FGN", "SDY", "LIT", "CSM", "HP", "UF", "CR", "DT", "OTH")

_COUNTRIES = {  # ISO code -> LAERS full name
    "US": "UNITED STATES",
    "GB": "UNITED KINGDOM",
    "FR": "FRANCE",
    "DE": "GERMANY",
    "JP": "JAPAN",
    "CA": "CANADA",
    "IT": "ITALY",
    "ES": "SPAIN",
    "BR": "BRAZIL",
    "CN": "CHINA",
    "IN": "INDIA",
    "AU": "AUSTRALIA",
    "NL": "NETHERLANDS",
    "CO": "COLOMBIA",
    "MX": "MEXICO",
    "EU": "COUNTRY NOT SPECIFIED",
}
_COUNTRY_CODES = tuple(_COUNTRIES)
_COUNTRY_WEIGHTS = (60, 5, 5, 4, 6, 4, 3, 2, 2, 2, 1, 1, 1, 1, 1, 2)
# (mfr_sndr, code used inside mfr_num)
_MANUFACTURERS = (
    ("PFIZER", "PFIZER INC"),
    ("JOHNSON AND JOHNSON", "JNJFOC"),
    ("JANSSEN", "JNJFOC"),
    ("NOVARTIS", "NOVPHSZ"),
    ("ROCHE", "ROCHE"),
    ("SANOFI AVENTIS", "SANOFI-AVENTIS"),
    ("MERCK", "MERCK"),
    ("ELI LILLY AND COMPANY", "ELI_LILLY_AND_COMPANY"),
    ("ASTRAZENECA", "ASTRAZENECA"),
    ("GLAXOSMITHKLINE", "GLAXOSMITHKLINE"),
    ("BRISTOL MYERS SQUIBB", "BRISTOL-MYERS SQUIBB COMPANY"),
    ("ABBVIE", "ABBVIE"),
    ("AMGEN", "AMGEN"),
    ("TEVA", "TEVA"),
    ("MYLAN", "MYLANLABS"),
    ("SANDOZ", "SANDOZ"),
    ("BAYER", "BAYER"),
    ("TAKEDA", "TAKEDA"),
    ("GILEAD", "GILEAD"),
    ("CELGENE", "CELGENE"),
    ("NOVO NORDISK", "NOVOPROD"),
    ("Kenvue", "KENVUE"),
    ("Grünenthal GmbH", "GRUNENTHAL"),
    ("Laboratório Teuto Brasileiro", "TEUTO"),
)
_LIT_REFS = (
    "SMITH J, JONES K. KRATOM-ASSOCIATED HEPATOTOXICITY: A CASE SERIES. J MED TOXICOL. "
    "2019;15(4):301-6",
    "Müller K, Peña R. Seizure after kratom and tramadol co-ingestion. Clin Toxicol. 2021;59:88",
    "CASTILLO JJ, REAGAN JL. BORTEZOMIB IN PLASMABLASTIC LYMPHOMA. BR J HAEMATOL. "
    "2015;MAY;169(3):352-5",
    "Bérard A, Zhao JP. Antidepressant use in pregnancy. Pharmacoepidemiol Drug Saf. 2017;26:1",
)
_LAERS_DRUG_SEQ_START = 1_004_492_716
# Planted literature duplicates (literature=True): authors (with letters that lose their
# accents in some senders' copies) and journals as (full name, abbreviation).
_LIT_AUTHORS = (  # (name, as an ASCII-only sender spells it, initials)
    ("Peña", "PENA", "R"),
    ("Müller", "MULLER", "K"),
    ("Østergaard", "OSTERGAARD", "L"),
    ("Çelik", "CELIK", "A"),
    ("O'Brien", "OBRIEN", "SM"),
    ("Garcia-Lopez", "GARCIA LOPEZ", "M"),
    ("Nguyen", "NGUYEN", "TH"),
    ("Kowalski", "KOWALSKI", "P"),
)
_LIT_JOURNALS = (
    ("Journal of Medical Toxicology", "J Med Toxicol"),
    ("Clinical Toxicology", "Clin Toxicol"),
    ("Drug and Alcohol Dependence", "Drug Alcohol Depend"),
    ("American Journal of Emergency Medicine", "Am J Emerg Med"),
    ("Journal of Addiction Medicine", "J Addict Med"),
)
_LIT_TOPICS = ("hepatotoxicity", "seizures", "withdrawal", "psychosis", "cardiac arrest")

_PLACEHOLDER_DOC = b"SYNTHETIC placeholder: stands in for the FDA document of this name.\r\n"
_README_SYNTHETIC = (
    "SYNTHETIC DATA. Every file in this zip was generated by surveillance.synthetic (seeded,\r\n"
    "deterministic) in the layout of an FDA FAERS/LAERS quarterly ASCII extract. No record is\r\n"
    "FDA data and none describes a real patient or report. Use only for tests and demos.\r\n"
)


README_CASEID = 10014022  # the README's `surveillance case` example (readme_case=True)
_CASE_COLUMNS = (
    "caseid source_of_latest surviving primaryid_latest quarter_latest quarter_initial "
    "quarter_first_version is_kratom is_7oh has_decoy deleted_in"
).split()

# --- public results ----------------------------------------------------------------------------


@dataclass
class QuarterFiles:
    """One generated quarterly zip and the truth ingest must reproduce from it."""

    quarter: str
    zip_path: Path
    truth: dict[str, list[Row]]  # table -> rows as the loader must store them
    deleted: list[dict]  # {'caseid', 'source_file', 'source_line'}
    quarantine: list[dict]  # {'source_file', 'source_line', 'raw_text', 'kind'}
    background_rows: dict[str, int] = field(default_factory=dict)  # table -> rows not in truth


@dataclass
class Series:
    """Several generated quarters plus the case-level truth after deduplication."""

    quarters: list[QuarterFiles]
    cases: pd.DataFrame
    literature: pd.DataFrame = field(default_factory=pd.DataFrame)  # planted (literature=True)


# --- member naming -----------------------------------------------------------------------------

_UPPER_Q = {(2022, 3), (2022, 4), (2023, 3), (2023, 4)} | {
    (y, n) for y in (2019, 2020, 2021) for n in (1, 2, 3, 4)
}


def _zip_name(q: Quarter) -> str:
    if q.source == LAERS:
        return f"aers_ascii_{q.year}q{q.q}.zip"
    return f"faers_ascii_{q.year}{'Q' if (q.year, q.q) in _UPPER_Q else 'q'}{q.q}.zip"


def _folder(q: Quarter) -> str:
    return "ASCII/" if q.year >= 2018 else "ascii/"


def _member(q: Quarter, table: str) -> str:
    if q.source == LAERS:
        return f"ascii/{table.upper()}{q.yyqn}.TXT"
    if (q.year, q.q) == (2012, 4):
        return f"ascii/{table}{q.yyqn.lower()}.txt"
    suffix = "_new" if (q.year, q.q, table) == (2018, 1, "demo") else ""
    return f"{_folder(q)}{table.upper()}{q.yyqn}{suffix}.txt"


def _deleted_member(q: Quarter) -> str | None:
    return f"Deleted/DELETE{q.yyqn}.txt" if (q.year, q.q) >= (2019, 1) else None


def _header(q: Quarter, table: str) -> str:
    """The header line as the era writes it, including 2012Q4's misspellings (no BOM here)."""
    names = list(HEADERS[q.era][table])
    if (q.year, q.q) == (2012, 4):
        quirks = {"rept_dt": " rept_dt", "lot_num": "lot_nbr", "outc_cod": "outc_code"}
        names = [quirks.get(n, n) for n in names]
    return "$".join(names)


def _header_bytes(q: Quarter, table: str) -> bytes:
    bom = b"\xef\xbb\xbf" if (q.year, q.q, table) == (2012, 4, "drug") else b""
    return bom + _header(q, table).encode("latin-1")


def _doc_members(q: Quarter) -> list[str]:
    if q.source == LAERS:
        return ["README.doc", "ascii/Asc_nts.doc"]
    if (q.year, q.q) == (2012, 4):
        return ["Readme.doc", "FAQs.doc"]
    return ["Readme.pdf", "FAQs.pdf", f"{_folder(q)}ASC_NTS.pdf"]


def _zipinfo(name: str, q: Quarter, level: int) -> zipfile.ZipInfo:
    """A ZipInfo with a fixed time stamp (so equal seeds give equal bytes)."""
    nxt = q.next()
    info = zipfile.ZipInfo(name, date_time=(nxt.year, nxt.q * 3 - 1, 15, 0, 0, 0))
    info.compress_type = zipfile.ZIP_DEFLATED
    info._compresslevel = level  # type: ignore[attr-defined]  # no public setter before 3.13
    info.external_attr = 0o644 << 16
    return info


def _quarter_dates(q: Quarter) -> tuple[date, date]:
    start = date(q.year, q.q * 3 - 2, 1)
    nxt = q.next()
    return start, date(nxt.year, nxt.q * 3 - 2, 1) - timedelta(days=1)


def _ymd(d: date) -> str:
    return d.strftime("%Y%m%d")


def _quarter_index(q: Quarter) -> int:
    return (q.year - 2004) * 4 + q.q - 1


def _caseid_base(q: Quarter) -> int:
    """Roughly where the FDA's case numbers stood in that quarter."""
    k = _quarter_index(q)
    return 4_000_000 + k * 140_000 if k < 35 else 8_900_000 + (k - 35) * 326_000


# --- the case model ----------------------------------------------------------------------------


@dataclass
class _Drug:
    kind: str  # plain, kratom, 7oh, decoy
    fields: dict[str, str]  # canonical DRUG columns except the keys and drug_seq
    ther: list[dict[str, str]]  # start_dt, end_dt, dur, dur_cod
    indi: list[str]
    laers_seq: str = ""


@dataclass
class _Version:
    caseid: int
    source: str
    number: int  # FAERS caseversion; 0 for LAERS
    report_id: str  # LAERS ISR or FAERS primaryid
    demo: dict[str, str]  # canonical DEMO columns (FAERS spelling) except the keys
    drugs: list[_Drug]
    reac: list[tuple[str, str]]  # (pt, drug_rec_act)
    outc: list[str]
    rpsr: list[str]
    quarters: list[Quarter] = field(default_factory=list)

    @property
    def kratom_kinds(self) -> set[str]:
        return {d.kind for d in self.drugs}


class _Planner:
    """Plans every case version of a series, then renders each quarter's zip from the plan."""

    def __init__(
        self,
        quarters: list[Quarter],
        n_cases: int,
        seed: int,
        kratom_rate: float = 0.075,
        readme_case: bool = False,
    ) -> None:
        # str seeds are hashed deterministically; the quarters make each quarter's data differ
        self.rng = random.Random(f"{seed}/{','.join(map(str, quarters))}")
        self.herbal_rng = random.Random(f"herbal/{seed}/{','.join(map(str, quarters))}")
        self.alone_rng = random.Random(f"alone/{seed}/{','.join(map(str, quarters))}")
        self.onset_rng = random.Random(f"onset/{seed}/{','.join(map(str, quarters))}")
        self.quarters = quarters
        self.n_cases = n_cases
        self.kratom_rate = kratom_rate
        self.readme_case = readme_case
        self.versions: list[_Version] = []
        self.by_case: dict[int, list[_Version]] = {}
        self.deleted: dict[Quarter, list[int]] = {}
        self.deleted_in: dict[int, Quarter] = {}
        self.used_caseids: set[int] = set()
        self.used_isrs: set[int] = set()
        self.used_primaryids: set[str] = set()
        # LAERS DRUG_SEQ is global and grew ~350,000 a quarter (DRUG10Q2: 1013798159)
        self.next_drug_seq = _LAERS_DRUG_SEQ_START + _quarter_index(quarters[0]) * 350_000
        self.skipped: list[tuple[int, int]] = []  # (caseid, version number never published)
        self.protected: set[int] = set()  # cases a test looks for: never damaged
        for q in quarters:
            self._plan_quarter(q)

    # -- ids

    def _new_caseid(self, lo: int, hi: int) -> int:
        while True:
            caseid = self.rng.randrange(lo, hi)
            if caseid not in self.used_caseids:
                self.used_caseids.add(caseid)
                return caseid

    def _new_isr(self, q: Quarter) -> str:
        base = _caseid_base(q) + 260_000
        while True:
            isr = self.rng.randrange(base, base + 130_000)
            if isr not in self.used_isrs:
                self.used_isrs.add(isr)
                return str(isr)

    def _primaryid(self, caseid: int, number: int) -> str | None:
        pid = f"{caseid}{number}"
        if pid in self.used_primaryids:
            return None
        self.used_primaryids.add(pid)
        return pid

    # -- planning

    def _plan_quarter(self, q: Quarter) -> None:
        if self.readme_case:
            self._plan_readme_case(q)
        rng = self.rng
        seen_before = [c for c in self.by_case if c not in self.deleted_in and c != README_CASEID]
        busy: set[int] = set()
        if _deleted_member(q):
            self._plan_deletions(q, seen_before, busy)
            seen_before = [c for c in seen_before if c not in self.deleted_in]
        n_done = self._plan_collision(q)
        n_done += self._plan_republications(q, busy)
        targets = [c for c in seen_before if c not in busy]
        rng.shuffle(targets)
        added = dropped = False
        for caseid in targets[: max(1, self.n_cases * 3 // 20)]:
            last = self.by_case[caseid][-1]
            if q.source == LAERS and last.source == FAERS:
                continue
            is_kratom = bool(last.kratom_kinds & {"kratom", "7oh"})
            mode = "normal"
            if not is_kratom and not added:
                mode, added = "add_kratom", True
            elif is_kratom and not dropped:
                mode, dropped = "drop_kratom", True
            if self._plan_followup(q, last, mode):
                busy.add(caseid)
                n_done += 1
        n_done += self._plan_late_version(q, busy)
        while n_done < self.n_cases:
            self._plan_new_case(q)
            n_done += 1

    def _plan_deletions(self, q: Quarter, seen_before: list[int], busy: set[int]) -> None:
        faers_seen = [c for c in seen_before if self.by_case[c][-1].source == FAERS]
        chosen = self.rng.sample(faers_seen, min(len(faers_seen), max(2, self.n_cases // 60)))
        outside = [self._new_caseid(_caseid_base(q) - 900_000, _caseid_base(q)) for _ in range(3)]
        for caseid in chosen:
            self.deleted_in[caseid] = q
            busy.add(caseid)
        self.deleted[q] = sorted(chosen + outside)

    def _plan_republications(self, q: Quarter, busy: set[int]) -> int:
        """Republish some latest versions of the previous quarter unchanged (same primaryid)."""
        k = self.quarters.index(q)
        if k == 0 or self.quarters[k - 1].era != q.era:
            return 0
        prev = self.quarters[k - 1]
        pool = [
            v
            for v in self.versions
            if v.quarters[-1] == prev
            and v is self.by_case[v.caseid][-1]
            and v.caseid not in self.deleted_in
            and v.caseid != README_CASEID
        ]
        chosen = self.rng.sample(pool, min(len(pool), max(1, self.n_cases // 40)))
        for v in chosen:
            v.quarters.append(q)
            busy.add(v.caseid)
        return len(chosen)

    def _plan_followup(
        self, q: Quarter, last: _Version, mode: str, number: int | None = None
    ) -> bool:
        rng = self.rng
        if q.source == LAERS:
            number, report_id = 0, self._new_isr(q)
        else:
            if number is None and last.source == LAERS:  # a legacy case followed up in FAERS
                number = rng.choice((1, 2))
            elif number is None:
                number = last.number + (2 if rng.random() < 0.3 else 1)
                if number == last.number + 2:
                    self.skipped.append((last.caseid, number - 1))
            pid = self._primaryid(last.caseid, number)
            if pid is None:
                return False
            report_id = pid
        v = copy.deepcopy(last)
        v.source, v.number, v.report_id, v.quarters = q.source, number, report_id, [q]
        self._date_version(v, q, initial=False)
        if mode == "add_kratom":
            self._add_kratom(v, q)
        elif mode == "drop_kratom":
            v.drugs = [d for d in v.drugs if d.kind not in ("kratom", "7oh")]
            v.reac.append(("Product substitution issue", ""))
        elif rng.random() < 0.5:
            v.reac.append((rng.choice(PTS), ""))
        v.reac = list(dict.fromkeys(v.reac))
        self._finish(v, q)
        return True

    def _plan_readme_case(self, q: Quarter) -> None:
        """The README's example case: kratom, first received in the series' first FAERS quarter,
        followed up in the next two; planned with its own random stream, outside the quotas."""
        versions = self.by_case.get(README_CASEID, [])
        if q.source != FAERS or len(versions) >= 3:
            return
        main, self.rng = self.rng, random.Random(f"readme/{q}")
        try:
            if versions:
                self._plan_followup(q, versions[-1], "normal", number=versions[-1].number + 1)
                return
            self.used_caseids.add(README_CASEID)
            self.protected.add(README_CASEID)
            pid = self._primaryid(README_CASEID, 1)
            assert pid is not None, "the README case's primaryid is taken"
            self._new_version(q, README_CASEID, 1, pid, kind="kratom")
        finally:
            self.rng = main

    def plant_literature(self, seed: int, caseids: set[int], reports: set[str]) -> pd.DataFrame:
        """Plant published patients filed by several senders with reference variants, in the
        quarters with lit_ref (2014Q3 on), from their own random stream; return their truth.

        Per such quarter: article A's patient 1 filed three times, its patient 2 (other age or
        sex) twice, and patient 1's twin (same age, sex, reactions) in article B (same first
        author, year and volume, another page) twice. Run after all other planning, with ids
        outside `caseids` and `reports` (the background's), so no other value moves."""
        quarters = [q for q in self.quarters if q.era == "FB"]
        main, self.rng = (
            self.rng,
            random.Random(f"literature/{seed}/{','.join(map(str, quarters))}"),
        )
        self.used_caseids |= caseids
        self.used_primaryids |= reports
        rows = []
        try:
            for q in quarters:
                rows += self._plant_articles(q, [x for x in quarters if x >= q])
        finally:
            self.rng = main
        return pd.DataFrame(rows, columns=["caseid", "group", "article", "quarter", "lit_ref"])

    def _plant_articles(self, q: Quarter, filed_in: list[Quarter]) -> list[dict[str, str]]:
        rng = self.rng
        first, *others = rng.sample(_LIT_AUTHORS, 3)
        full, abbr = rng.choice(_LIT_JOURNALS)
        year, volume, page = q.year - rng.randint(0, 1), rng.randint(5, 60), rng.randint(10, 800)
        articles = {}
        for name, kind in (("A", "series"), ("B", "report")):
            topic, prefix = rng.choice(_LIT_TOPICS), f"10.{rng.randint(1000, 9999)}"
            articles[name] = {
                "authors": [first, *(others if name == "A" else others[::-1])],
                "title": f"Kratom-associated {topic}: a case {kind}",
                "full": full,
                "abbr": abbr,
                "year": year,
                "volume": volume,
                "issue": rng.randint(1, 12),
                "page": page,
                "last": page + rng.randint(2, 9),
                "doi": f"{prefix}/{abbr.split()[0].lower()}.{rng.randrange(10**6)}",
                "pmid": str(rng.randint(25_000_000, 39_999_999)),
            }
            page += rng.randint(20, 200)
        age, sex = rng.randint(18, 70), rng.choice("FM")
        other = (age + rng.randint(1, 9), sex) if rng.random() < 0.5 else (age, "FM"[sex == "F"])
        reactions = rng.sample(KRATOM_REACTIONS, 3)
        plans = (
            ("A", "1", (age, sex), ("vancouver", "upper", "apa")),
            ("A", "2", other, ("pmid", "vancouver")),
            ("B", "1", (age, sex), ("apa", "upper")),
        )
        rows = []
        for article, patient, (years, code), styles in plans:
            for style, (mfr_sndr, mfr_code) in zip(
                styles, rng.sample(_MANUFACTURERS, len(styles)), strict=False
            ):
                filed = rng.choice(filed_in)
                base = _caseid_base(filed)
                pid = None
                while pid is None:
                    caseid = self._new_caseid(base, base + 300_000)
                    pid = self._primaryid(caseid, 1)
                self.protected.add(caseid)
                self._new_version(filed, caseid, 1, pid, kind="kratom")
                v = self.versions[-1]
                v.reac = [(pt, "") for pt in reactions]
                ref = _lit_ref(articles[article], style)
                v.demo.update(
                    age=str(years),
                    age_cod="YR",
                    age_grp="A",
                    sex=code,
                    lit_ref=ref,
                    rept_cod="EXP",
                    mfr_sndr=mfr_sndr,
                    occp_cod="MD",
                    mfr_num=f"{v.demo['reporter_country']}-{mfr_code}-{filed.year}{caseid}",
                )
                rows.append(
                    {
                        "caseid": str(caseid),
                        "group": f"{q}/{article}{patient}",
                        "article": f"{q}/{article}",
                        "quarter": str(filed),
                        "lit_ref": ref,
                    }
                )
        return rows

    def _plan_late_version(self, q: Quarter, busy: set[int]) -> int:
        """Publish one skipped version a quarter late, after a newer version (FAQ20)."""
        if q.source != FAERS:
            return 0
        for i, (caseid, number) in enumerate(self.skipped):
            newest = self.by_case[caseid][-1]
            if caseid in busy or caseid in self.deleted_in or newest.source != FAERS:
                continue
            pid = self._primaryid(caseid, number)
            if pid is None:
                continue
            del self.skipped[i]
            v = copy.deepcopy(newest)
            v.number, v.report_id, v.quarters = number, pid, [q]
            self._date_version(v, q, initial=False)
            self._finish(v, q)
            self.by_case[caseid].sort(key=lambda x: x.number)
            busy.add(caseid)
            return 1
        return 0

    def _plan_collision(self, q: Quarter) -> int:
        """A FAERS primaryid equal to a LAERS ISR of an earlier quarter (different sources)."""
        first_faers = next((x for x in self.quarters if x.source == FAERS), None)
        if q != first_faers:
            return 0
        isrs = sorted(v.report_id for v in self.versions if v.source == LAERS)
        for isr in isrs:
            caseid, number = int(isr[:-1]), int(isr[-1])
            if number == 0 or caseid in self.used_caseids or isr in self.used_primaryids:
                continue
            self.used_caseids.add(caseid)
            self.used_primaryids.add(isr)
            self.protected.add(caseid)
            self._new_version(q, caseid, number, isr)
            return 1
        return 0

    def _plan_new_case(self, q: Quarter) -> None:
        rng = self.rng
        base = _caseid_base(q)
        if q.source == LAERS:
            caseid = self._new_caseid(base, base + 200_000)
            self._new_version(q, caseid, 0, self._new_isr(q))
            return
        while True:
            if rng.random() < 0.75:
                caseid, number = self._new_caseid(base, base + 300_000), 1
                number = 2 if rng.random() < 0.1 else 1
            else:  # an older case whose earlier versions predate the series
                caseid = self._new_caseid(base - 2_500_000, base)
                number = rng.choice((2, 2, 3, 4, 5, 7, 12, 35))
            pid = self._primaryid(caseid, number)
            if pid is not None:
                self._new_version(q, caseid, number, pid)
                return

    # -- damage and quirks, chosen after the whole series is planned

    def plant_quirks(self, q: Quarter, damage: bool) -> _Damage:
        """Pick the cases damage may destroy in q and plant loadable oddities in others.

        Only cases with a single version in a single quarter, never deleted, without kratom or
        decoy rows, qualify: destroying their rows cannot change the case-level truth.
        """
        rng = self.rng
        pool = [
            v
            for v in self.versions
            if v.quarters == [q]
            and len(self.by_case[v.caseid]) == 1
            and v.caseid not in self.deleted_in
            and v.caseid not in self.protected
            and v.kratom_kinds == {"plain"}
            and len(v.drugs) >= 2
        ]
        rng.shuffle(pool)
        dmg = _Damage(blank=damage)
        if damage:
            kinds = ["glued", "split", "extra_dollar"] + (["continuation"] * (q.source == LAERS))
            for kind, v in zip(kinds, pool, strict=False):
                setattr(dmg, kind, v.caseid)
            pool = pool[len(kinds) :]
        # Loadable oddities (not damage): control bytes, latin-1 letters, an untrimmed space.
        quirks = [
            ("drugname", lambda s: s + "\x7f"),
            ("dose_vbm", lambda s: "10\x08 MG"),
            ("drugname", lambda s: rng.choice(_LATIN1_DRUGNAMES)),
            ("drugname", lambda s: s + " "),
        ]
        for (column, change), v in zip(quirks, pool, strict=False):
            drug = v.drugs[1]
            drug.fields[column] = change(drug.fields[column])
        return dmg

    def case_truth(self, lost: set[int]) -> pd.DataFrame:
        """One row per case: the version the FDA rule keeps, deletion, kratom status, and the
        quarter of its planned initial receipt (definitions.NEW_CASE) and of its first version.

        Cases whose only DEMO row was destroyed by damage are left out: ingest never sees them.
        """
        rows = []
        for caseid, versions in self.by_case.items():
            if caseid in lost:
                continue
            seen = [(v, q) for v in versions for q in v.quarters]
            faers = [(v, q) for v, q in seen if v.source == FAERS]
            if faers:
                best, q = max(faers, key=lambda vq: (vq[0].number, vq[0].demo["fda_dt"], vq[1]))
            else:
                best, q = max(
                    seen, key=lambda vq: (vq[0].demo["fda_dt"], int(vq[0].report_id), vq[1])
                )
            kinds = best.kratom_kinds
            deleted_in = self.deleted_in.get(caseid)
            first = str(min(q for _, q in seen))
            # The planned initial receipt, as the FAERS versions carry it (LAERS has no field).
            init = min(
                (v.demo["init_fda_dt"] for v, _ in faers if v.demo["init_fda_dt"]), default=""
            )
            initial = f"{init[:4]}Q{(int(init[4:6]) + 2) // 3}" if init else first
            rows.append(
                {
                    "caseid": str(caseid),
                    "source_of_latest": best.source,
                    "surviving": deleted_in is None,
                    "primaryid_latest": best.report_id,
                    "quarter_latest": str(q),
                    "quarter_initial": min(initial, first),
                    "quarter_first_version": first,
                    "is_kratom": bool(kinds & {"kratom", "7oh"}),
                    "is_7oh": "7oh" in kinds,
                    "has_decoy": "decoy" in kinds,
                    "deleted_in": str(deleted_in) if deleted_in else None,
                }
            )
        rows.sort(key=lambda r: int(str(r["caseid"])))
        return pd.DataFrame(rows, columns=_CASE_COLUMNS)

    # -- content

    def _new_version(
        self, q: Quarter, caseid: int, number: int, report_id: str, kind: str | None = None
    ) -> None:
        rng = self.rng
        roll = rng.random()
        if kind is None:
            kind = "kratom" if roll < self.kratom_rate else "plain"
            if kind == "kratom" and q.year >= 2022 and rng.random() < 0.3:
                kind = "7oh"
        v = _Version(caseid, q.source, number, report_id, {}, [], [], [], [], [q])
        v.demo = self._demo(q, number)
        self._date_version(v, q, initial=number <= 1)
        n_plain = min(8, 1 + int(rng.expovariate(1 / 3.2)))
        v.drugs = [self._plain_drug(q, i) for i in range(n_plain)]
        if kind != "plain":
            self._add_kratom(v, q, seven_oh=kind == "7oh")
        else:
            pts = rng.sample(PTS, min(len(PTS), 1 + int(rng.expovariate(1 / 1.6))))
            v.reac = [(pt, "") for pt in pts]
            v.outc = self._outcomes(_OUTC_BACKGROUND)
            for pt in SIGNAL_PTS:
                if rng.random() < _SIGNAL_RATE_BACKGROUND:
                    v.reac.append((pt, ""))
        if rng.random() < 0.05:
            decoy = self._plain_drug(q, 1)
            decoy.kind, decoy.fields["drugname"] = "decoy", rng.choice(DECOY_DRUGNAMES)
            decoy.fields["prod_ai"] = decoy.fields["drugname"].upper()
            v.drugs.insert(rng.randrange(1, len(v.drugs) + 1), decoy)
        if q.era == "FB" and v.reac and rng.random() < 0.03:
            pt = v.reac[0][0]
            v.reac[0] = (pt, pt)
        v.rpsr = (
            rng.sample(_RPSR_CODES, rng.randint(1, 3))
            if rng.random() < (0.4 if q.source == LAERS else 0.08)
            else []
        )
        v.reac = list(dict.fromkeys(v.reac))
        self._finish(v, q)

    def _finish(self, v: _Version, q: Quarter) -> None:
        if q.source == LAERS:
            for d in v.drugs:
                self.next_drug_seq += self.rng.randint(1, 40)
                d.laers_seq = str(self.next_drug_seq)
        self.versions.append(v)
        self.by_case.setdefault(v.caseid, []).append(v)

    def _add_kratom(self, v: _Version, q: Quarter, seven_oh: bool = False) -> None:
        rng = self.rng
        d = self._plain_drug(q, 0)
        d.kind = "7oh" if seven_oh else "kratom"
        name = rng.choice(SEVEN_OH_DRUGNAMES if seven_oh else KRATOM_DRUGNAMES)
        ai = "" if seven_oh else rng.choice(_KRATOM_PROD_AI)
        if not seven_oh and ai and q.era == "FB" and rng.random() < 0.15:
            name = rng.choice(_VAGUE_PRODUCTS)
        d.fields.update(
            drugname=name,
            prod_ai=ai or ("7-HYDROXYMITRAGYNINE" if seven_oh else ""),
            val_vbm="2",
            route=rng.choice(("Oral", "Oral", "Unknown", "")),
            dose_vbm=rng.choice(("UNK", "1 teaspoon", "3 g daily", "several capsules", "")),
            dose_form=rng.choice(("Powder", "Capsule", "Tablet", "Unknown", "")),
            nda_num="",
            dose_amt="",
            dose_unit="",
            dose_freq="",
        )
        self._plant_onset(v, q, d)
        d.indi = [rng.choice(_KRATOM_INDICATIONS)] if rng.random() < 0.6 else []
        d.fields["role_cod"] = rng.choice(("PS", "PS", "SS", "C"))
        v.drugs.insert(0 if d.fields["role_cod"] == "PS" else len(v.drugs), d)
        if d.fields["role_cod"] == "PS":
            for other in v.drugs[1:]:
                if other.fields["role_cod"] == "PS":
                    other.fields["role_cod"] = "SS"
        for name, ai in rng.sample(CO_SUBSTANCES, rng.randint(0, 3)):
            co = self._plain_drug(q, 1)
            co.fields.update(drugname=name, prod_ai=ai, val_vbm="2", nda_num="")
            v.drugs.append(co)
        pts = rng.choices(KRATOM_REACTIONS, _KRATOM_REACTION_WEIGHTS, k=rng.randint(1, 4))
        pts += [pt for pt, rate in _SIGNAL_RATE_KRATOM.items() if rng.random() < rate]
        if rng.random() < 0.3:
            pts.append(rng.choice(PTS))
        v.reac = list(dict.fromkeys([*v.reac, *((pt, "") for pt in pts)]))
        v.outc = sorted(set(v.outc) | set(self._outcomes(_OUTC_KRATOM)))
        if d.fields["role_cod"] == "PS" and self.alone_rng.random() < KRATOM_ALONE_RATE:
            for other in v.drugs:
                if other is not d and other.fields["role_cod"] in ("PS", "SS", "I"):
                    other.fields["role_cod"] = "C"

    def _plant_onset(self, v: _Version, q: Quarter, d: _Drug) -> None:
        """The kratom row's therapy start (ONSET_* constants) and dechal/rechal codes
        (DECHAL_RATES, RECHAL_RATES), from the onset stream only."""
        rng = self.onset_rng
        d.fields["dechal"] = rng.choices(list(DECHAL_RATES), list(DECHAL_RATES.values()))[0]
        d.fields["rechal"] = rng.choices(list(RECHAL_RATES), list(RECHAL_RATES.values()))[0]
        d.ther = []
        event = v.demo["event_dt"]
        if len(event) != 8 or rng.random() < ONSET_NO_THERAPY_RATE:
            return
        event_day = date(int(event[:4]), int(event[4:6]), int(event[6:]))
        days = int(rng.weibullvariate(ONSET_WEIBULL_SCALE_DAYS, ONSET_WEIBULL_SHAPE))
        roll = rng.random()
        if roll < ONSET_NEGATIVE_RATE:
            days = -rng.randint(1, 60)
        start = event_day - timedelta(days=days)
        text = _ymd(start)
        if q.source == FAERS and ONSET_NEGATIVE_RATE <= roll < (
            ONSET_NEGATIVE_RATE + ONSET_PARTIAL_START_RATE
        ):
            text = text[:6] if rng.random() < 0.6 else text[:4]
        d.ther = [{"start_dt": text, "end_dt": "", "dur": "", "dur_cod": ""}]
        if days > 0 and rng.random() < ONSET_RESTART_RATE:
            restart = start + timedelta(days=rng.randint(1, days + 30))
            d.ther.insert(0, {"start_dt": _ymd(restart), "end_dt": "", "dur": "", "dur_cod": ""})

    def _outcomes(self, rates: dict[str, float]) -> list[str]:
        codes = [c for c, p in rates.items() if self.rng.random() < p]
        if not codes and self.rng.random() < 0.35:
            codes = ["OT"]
        elif codes and self.rng.random() < 0.4:
            codes.append("OT")
        return codes

    def _plain_drug(self, q: Quarter, position: int) -> _Drug:
        rng = self.rng
        name, ai = rng.choice(DRUGS)
        if q.source == FAERS:  # FAERS writes reporters' own casing
            roll = rng.random()
            name = name.title() if roll < 0.25 else name.lower() if roll < 0.3 else name
        roles = ("PS",) if position == 0 else ("SS", "C", "C", "C", "I")
        role = rng.choice(roles)
        if q.year >= 2025 and position > 0 and rng.random() < 0.03:
            role = "DN"  # a code outside the documented list
        dose_amt = rng.choice(("", "5", "10", "20", "25", "40", "50", "100", "180", "500", "1.5"))
        unit = rng.choice(_DOSE_UNITS) if dose_amt else ""
        freq = rng.choice(_DOSE_FREQS) if dose_amt else ""
        nda = ""
        if role == "PS" and rng.random() < 0.6:
            number = rng.randrange(10_000, 215_000)
            nda = f"{number:06d}" if q.source == FAERS else str(number)
        fields = {
            "role_cod": role,
            "drugname": name,
            "prod_ai": ai,
            "val_vbm": "1" if rng.random() < 0.85 else "2",
            "route": rng.choice(_ROUTES) if rng.random() < 0.8 else "",
            "dose_vbm": f"{dose_amt} {unit} {freq}".strip() if rng.random() < 0.4 else "",
            "cum_dose_chr": "",
            "cum_dose_unit": "",
            "dechal": rng.choice(("Y", "N", "U", "D", "", "")),
            "rechal": rng.choice(("Y", "N", "U", "D", "", "", "")),
            "lot_num": rng.choice(("", "", "", "", "H12345", "LOT# 4421B", "UNKNOWN")),
            "exp_dt": rng.choice(("",) * 9 + ("202612",)),
            "nda_num": nda,
            "dose_amt": dose_amt,
            "dose_unit": unit,
            "dose_form": rng.choice(_DOSE_FORMS) if rng.random() < 0.5 else "",
            "dose_freq": freq,
        }
        if dose_amt and rng.random() < 0.1:
            fields["cum_dose_chr"] = str(int(float(dose_amt) * rng.randint(2, 60)))
            fields["cum_dose_unit"] = unit
        ther = []
        if rng.random() < 0.3:
            for _ in range(2 if rng.random() < 0.1 else 1):
                start = date(q.year, 1, 1) - timedelta(days=rng.randrange(0, 1500))
                end = start + timedelta(days=rng.randrange(0, 400))
                dur = (end - start).days + 1
                ther.append(
                    {
                        "start_dt": _partial(rng, start, q.source),
                        "end_dt": _partial(rng, end, q.source) if rng.random() < 0.6 else "",
                        "dur": str(dur) if rng.random() < 0.25 else "",
                        "dur_cod": "DAY",
                    }
                )
                if not ther[-1]["dur"]:
                    ther[-1]["dur_cod"] = ""
        indi = []
        if rng.random() < 0.45:
            indi = rng.sample(_INDICATIONS, 2 if rng.random() < 0.08 else 1)
        if self.herbal_rng.random() < HERBAL_RATE:
            fields["drugname"], fields["prod_ai"] = self.herbal_rng.choice(HERBAL_PRODUCTS)
        return _Drug("plain", fields, ther, indi)

    def _demo(self, q: Quarter, number: int) -> dict[str, str]:
        rng = self.rng
        rept = rng.choices(("EXP", "PER", "DIR"), (60, 25, 15))[0]
        if q.source == LAERS and rng.random() < 0.01:
            rept = rng.choice(("5DAY", "30DAY"))
        country = rng.choices(_COUNTRY_CODES, _COUNTRY_WEIGHTS)[0]
        mfr_sndr, mfr_code = rng.choice(_MANUFACTURERS)
        demo = dict.fromkeys(CANONICAL["demo"][2:], "")
        demo.pop("caseversion")
        age_cod = rng.choices(("YR", "DEC", "MON", "WK", "DY", "HR"), (90, 2, 4, 1, 2, 1))[0]
        age = {
            "YR": rng.randint(1, 95),
            "DEC": rng.randint(2, 9),
            "MON": rng.randint(1, 23),
            "WK": rng.randint(1, 20),
            "DY": rng.randint(1, 60),
            "HR": rng.randint(1, 48),
        }[age_cod]
        years = age * {"YR": 1.0, "DEC": 10.0}.get(age_cod, 0.0)
        grp = "E" if years >= 65 else "A" if years >= 18 else "T" if years >= 12 else "C"
        if age_cod != "YR" and age_cod != "DEC":
            grp = "I"
        has_age = rng.random() < 0.8
        sex = rng.choices(("F", "M", "UNK", "", "NS"), (55, 37, 3, 4, 1))[0]
        wt = ""
        if rng.random() < 0.4 and age_cod in ("YR", "DEC"):
            kg = rng.uniform(40, 130)
            wt = f"{kg:.0f}" if rng.random() < 0.7 else f"{kg:.2f}"
            demo["wt_cod"] = "KG" if rng.random() < 0.8 else "LBS"
            if demo["wt_cod"] == "LBS":
                wt = f"{kg * 2.2046:.0f}"
        occp = rng.choices(
            ("MD", "PH", "OT", "LW", "CN", "HP", "RN", ""), (30, 10, 15, 4, 30, 2, 1, 8)
        )
        demo.update(
            i_f_code="I" if number <= 1 else "F",
            rept_cod=rept,
            mfr_num="" if rept == "DIR" else f"{country}-{mfr_code}-{q.year}{rng.randrange(10**6)}",
            mfr_sndr=("FDA-CTU" if q.source == FAERS else "") if rept == "DIR" else mfr_sndr,
            age=str(age) if has_age else "",
            age_cod=age_cod if has_age else "",
            age_grp=grp if has_age and rng.random() < 0.6 else "",
            sex=sex,
            e_sub="Y" if q.source == FAERS or q.year >= 2008 else "N",
            wt=wt,
            to_mfr=rng.choice(("Y", "N")) if rept == "DIR" else "",
            occp_cod=occp[0],
            reporter_country=country,
            occr_country=country if rng.random() < 0.9 else "",
            confid=rng.choice(("N", "Y")) if rept == "DIR" else "",
        )
        if q.year >= 2023 and rng.random() < 0.01:
            demo["occp_cod"] = "SALES"  # junk seen in 23Q1 (DIANA)
        if q.era == "FB" and rng.random() < 0.04:
            demo["lit_ref"] = rng.choice(_LIT_REFS)
        if q.era == "FB" and rng.random() < 0.05:
            demo["auth_num"] = f"{country}-{mfr_code[:6]}-{rng.randrange(10**8)}"
        return demo

    def _date_version(self, v: _Version, q: Quarter, initial: bool) -> None:
        """Set this version's receipt dates inside its quarter; event dates for new cases."""
        rng = self.rng
        start, end = _quarter_dates(q)
        fda = start + timedelta(days=rng.randrange((end - start).days + 1))
        demo = v.demo
        demo["fda_dt"] = _ymd(fda)
        demo["rept_dt"] = _ymd(fda - timedelta(days=rng.randrange(0, 4)))
        if demo["rept_cod"] != "DIR":
            demo["mfr_dt"] = _ymd(fda - timedelta(days=rng.randrange(1, 15)))
        if not demo["event_dt"] and rng.random() < 0.85:
            event = fda - timedelta(days=rng.randrange(1, 500))
            demo["event_dt"] = _partial(rng, event, q.source)
        if initial or not demo["init_fda_dt"]:
            first = fda if initial else fda - timedelta(days=rng.randrange(90, 2000))
            demo["init_fda_dt"] = _ymd(first)
        if not initial:
            demo["i_f_code"] = "F"
            if q.source == LAERS and rng.random() < 0.3:
                demo["foll_seq"] = rng.choice(("1", "2", "3", "A"))


def _partial(rng: random.Random, d: date, source: str) -> str:
    """A date as the FDA writes it: full, or (FAERS) sometimes only YYYYMM or YYYY."""
    roll = rng.random()
    if source == FAERS and roll < 0.12:
        return d.strftime("%Y%m")
    if source == FAERS and roll < 0.2:
        return d.strftime("%Y")
    return _ymd(d)


# --- rendering ---------------------------------------------------------------------------------


@dataclass
class _Line:
    """One physical line to be: a record (fields) or a damaged raw text."""

    fields: list[str] | None
    truth: Row | None = None
    caseid: int | None = None
    raw: str = ""
    kind: str = ""
    ends_lf: bool = False  # ended by a bare LF (the first part of a split record)


@dataclass
class _Damage:
    """Caseids whose records each kind of damage destroys in one quarter (None: not planted)."""

    glued: int | None = None
    split: int | None = None
    extra_dollar: int | None = None
    continuation: int | None = None
    blank: bool = False


def _isr_check_digit(isr: str) -> str:
    return str(sum(int(c) * (i + 2) for i, c in enumerate(reversed(isr))) % 10)


def _demo_values(v: _Version) -> dict[str, str]:
    values = dict(v.demo, primaryid=v.report_id, caseid=str(v.caseid))
    if v.source == LAERS:
        values["image"] = f"{v.report_id}-{_isr_check_digit(v.report_id)}"
        values["reporter_country"] = _COUNTRIES[v.demo["reporter_country"]]
        if "DE" in v.outc and len(v.demo["event_dt"]) == 8:
            values["death_dt"] = v.demo["event_dt"]
    else:
        values["caseversion"] = str(v.number)
    return values


class _QuarterWriter:
    """Turns one quarter's planned versions into physical lines, then member bytes and truth."""

    def __init__(self, q: Quarter, versions: list[_Version]) -> None:
        self.q = q
        self.lines: dict[str, list[_Line]] = {t: [] for t in TABLES}
        self.columns = {t: [canonical_name(t, h) for h in HEADERS[q.era][t]] for t in TABLES}
        for v in sorted(versions, key=lambda v: (v.caseid, v.number, int(v.report_id))):
            self._add_version(v)

    def _add(self, table: str, values: dict[str, str], caseid: int) -> None:
        fields = []
        laers = self.q.source == LAERS
        for col in self.columns[table]:
            value = values.get(col, "")
            if laers:
                value = value.upper()
            if any(c in value for c in "$\r\n"):
                raise ValueError(f"value would break the line format: {value!r}")
            fields.append(value)
        self.lines[table].append(_Line(fields, caseid=caseid))

    def _add_version(self, v: _Version) -> None:
        keys = {"primaryid": v.report_id, "caseid": str(v.caseid)}
        self._add("demo", _demo_values(v), v.caseid)
        for i, d in enumerate(v.drugs, start=1):
            seq = d.laers_seq if self.q.source == LAERS else str(i)
            self._add("drug", dict(d.fields, **keys, drug_seq=seq), v.caseid)
            for ther in d.ther:
                self._add("ther", dict(ther, **keys, dsg_drug_seq=seq), v.caseid)
            for pt in d.indi:
                self._add("indi", dict(keys, indi_drug_seq=seq, indi_pt=pt), v.caseid)
        for pt, act in v.reac:
            self._add("reac", dict(keys, pt=pt, drug_rec_act=act), v.caseid)
        for code in v.outc:
            self._add("outc", dict(keys, outc_cod=code), v.caseid)
        for code in v.rpsr:
            self._add("rpsr", dict(keys, rpsr_cod=code), v.caseid)

    def _text(self, table: str, fields: list[str]) -> str:
        trailing = self.q.source == LAERS and table != "indi"
        return "$".join(fields) + ("$" if trailing else "")

    def _first(self, table: str, caseid: int) -> tuple[int, list[str]]:
        i = next(i for i, ln in enumerate(self.lines[table]) if ln.caseid == caseid)
        return i, list(self.lines[table][i].fields or [])

    def apply_damage(self, dmg: _Damage, rng: random.Random) -> None:
        drug, demo = self.lines["drug"], self.lines["demo"]
        if dmg.glued is not None:  # a missing newline: two records on one line (DRUG11Q3)
            i, first = self._first("drug", dmg.glued)
            raw = self._text("drug", first) + self._text("drug", drug[i + 1].fields or [])
            drug[i : i + 2] = [_Line(None, raw=raw, kind="glued")]
        if dmg.split is not None:  # an embedded newline inside dose_vbm
            i, fields = self._first("drug", dmg.split)
            k = self.columns["drug"].index("dose_vbm")
            fields[k] = "1 TABLET DAILY" if self.q.source == LAERS else "1 tablet daily"
            cut = len("$".join(fields[:k])) + 1 + fields[k].index(" ")
            raw = self._text("drug", fields)
            drug[i : i + 1] = [
                _Line(None, raw=raw[:cut], kind="split", ends_lf=True),
                _Line(None, raw=raw[cut + 1 :], kind="split"),
            ]
        if dmg.extra_dollar is not None:  # a '$' inside mfr_num (DEMO12Q1)
            i, fields = self._first("demo", dmg.extra_dollar)
            fields[self.columns["demo"].index("mfr_num")] = f"JP-CUBIST-$E2B{dmg.extra_dollar:010d}"
            demo[i] = _Line(None, raw=self._text("demo", fields), kind="extra_dollar")
        if dmg.continuation is not None:  # legacy DEMO: the second part starts with '$'
            i, fields = self._first("demo", dmg.continuation)
            raw = self._text("demo", fields)
            cut = [j for j, c in enumerate(raw) if c == "$"][11]
            demo[i : i + 1] = [
                _Line(None, raw=raw[:cut], kind="continuation"),
                _Line(None, raw=raw[cut:], kind="continuation"),
            ]
        if dmg.blank:
            reac = self.lines["reac"]
            reac.insert(rng.randrange(1, len(reac)), _Line(None, raw="", kind="blank"))

    def member_bytes(
        self, table: str, member: str, truth: list[Row], quarantine: list[dict]
    ) -> bytes:
        """Encode one member; append its truth rows and quarantined lines, numbered from 1."""
        parts = [_header_bytes(self.q, table), b"\r\n"]
        for number, ln in enumerate(self.lines[table], start=2):
            if ln.fields is None:
                entry = {"source_file": member, "source_line": number, "raw_text": ln.raw}
                quarantine.append(dict(entry, kind=ln.kind))
                parts += [ln.raw.encode("latin-1"), b"\n" if ln.ends_lf else b"\r\n"]
                continue
            parts += [self._text(table, ln.fields).encode("latin-1"), b"\r\n"]
            row: Row = dict.fromkeys(CANONICAL[table])
            row.update(
                (c, f if f != "" else None)
                for c, f in zip(self.columns[table], ln.fields, strict=True)
            )
            row.update(
                quarter=str(self.q), source=self.q.source, source_file=member, source_line=number
            )
            truth.append(row)
        return b"".join(parts)


def _write_quarter(
    planner: _Planner, q: Quarter, dmg: _Damage, out_dir: Path, background: _Background | None
) -> QuarterFiles:
    writer = _QuarterWriter(q, [v for v in planner.versions if q in v.quarters])
    writer.apply_damage(dmg, planner.rng)
    truth: dict[str, list[Row]] = {t: [] for t in TABLES}
    quarantine: list[dict] = []
    members: dict[str, bytes] = {}
    for table in TABLES:
        member = _member(q, table)
        members[member] = writer.member_bytes(table, member, truth[table], quarantine)
    extra_rows = background.members(q) if background else {}
    for table, rows in extra_rows.items():
        members[_member(q, table)] += rows
    deleted: list[dict] = []
    deleted_member = _deleted_member(q)
    if deleted_member:
        caseids = [str(c) for c in planner.deleted.get(q, [])]
        quarantine.append(
            {"source_file": deleted_member, "source_line": 1, "raw_text": " ", "kind": "blank"}
        )
        deleted = [
            {"caseid": c, "source_file": deleted_member, "source_line": n}
            for n, c in enumerate(caseids, start=2)
        ]
        members[deleted_member] = "".join(f"{line}\r\n" for line in [" ", *caseids]).encode()
    extra: dict[str, bytes] = {"README_SYNTHETIC.txt": _README_SYNTHETIC.encode()}
    extra.update(dict.fromkeys(_doc_members(q), _PLACEHOLDER_DOC))
    if q.source == LAERS:
        tables = [m for m in members if not m.startswith("Deleted/")]
        extra[f"SIZE{q.yyqn}.TXT"] = "".join(
            f"{m.split('/')[-1]} {len(members[m])}\r\n" for m in tables
        ).encode()
        n_lines = {m: members[m].count(b"\n") - 1 for m in tables}
        extra[f"STAT{q.yyqn}.TXT"] = "".join(
            f"{m.split('/')[-1]} {n_lines[m]}\r\n" for m in tables
        ).encode()
    zip_path = out_dir / _zip_name(q)
    level = 1 if background else 6  # the background is large: favour speed over size
    with zipfile.ZipFile(zip_path, "w") as zf:
        for name, data in {**extra, **members}.items():
            zf.writestr(_zipinfo(name, q, level), data)
    counts = {t: rows.count(b"\n") for t, rows in extra_rows.items()}
    return QuarterFiles(str(q), zip_path, truth, deleted, quarantine, counts)


def _lit_ref(a: dict, style: str) -> str:
    """One sender's rendering of an article's reference (see `_Planner.plant_literature`)."""
    authors, (name, plain, initials) = a["authors"], a["authors"][0]
    pages = f"{a['volume']}({a['issue']}):{a['page']}-{a['last']}"
    if style == "vancouver":
        names = ", ".join(f"{n} {i}" for n, _, i in authors)
        return f"{names}. {a['title']}. {a['abbr']}. {a['year']} Mar;{pages}. doi: {a['doi']}"
    if style == "upper":
        journal = " ".join(f"{w}." for w in a["abbr"].split())
        return f"{plain} {initials}, ET AL. {a['title']}. {journal} {a['year']};{pages}".upper()
    if style == "apa":
        names = ", ".join(f"{n}, {i[0]}." for n, _, i in authors[:-1])
        last, _, last_initials = authors[-1]
        return (
            f"{names}, & {last}, {last_initials[0]}. ({a['year']}). {a['title']}. {a['full']}, "
            f"{a['volume']}({a['issue']}), {a['page']}-{a['last']}. "
            f"https://doi.org/{a['doi'].upper()}"
        )
    return (
        f"{name} {initials} et al. {a['title']}. {a['full']} {a['year']}; {a['volume']}: "
        f"{a['page']}-{a['last']}. PMID: {a['pmid']}"
    )


# --- public API --------------------------------------------------------------------------------


def generate_quarter(
    quarter: str, out_dir: Path, n_cases: int = 300, seed: int = 0, damage: bool = True
) -> QuarterFiles:
    """Write one SYNTHETIC quarterly zip of about n_cases reports and return its truth."""
    return generate_series([quarter], out_dir, n_cases, seed, damage).quarters[0]


def generate_series(
    quarters: list[str],
    out_dir: Path,
    n_cases: int = 300,
    seed: int = 0,
    damage: bool = True,
    background: int = 0,
    kratom_rate: float = 0.075,
    readme_case: bool = False,
    literature: bool = False,
) -> Series:
    """Write SYNTHETIC zips for consecutive or scattered quarters sharing one case history.

    Plants follow-up and skipped versions, republished primaryids, legacy cases followed up in
    FAERS, deletions of earlier cases, kratom cases (a share `kratom_rate` of new cases) and
    decoys; returns per-quarter truth and the case-level truth after the FDA's latest-version
    rule and the deleted lists. `background` adds about that many fast FAERS-like reports per
    quarter (thousands of drugs, Zipf-like, drug-term associations, follow-ups across quarters,
    no kratom): they are in `Series.cases` and counted in `background_rows`, not in `truth`.
    `readme_case` plants case 10014022 (kratom, three versions), the README's example.
    `literature` plants literature duplicates (`_Planner.plant_literature`; `Series.literature`).
    """
    qs = [Quarter.parse(q) for q in quarters]
    if not qs or qs != sorted(set(qs)):
        raise ValueError(f"quarters must be distinct and in order: {quarters!r}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    planner = _Planner(qs, n_cases, seed, kratom_rate, readme_case)
    extra = _Background(planner, qs, background, seed) if background > 0 else None
    planted = pd.DataFrame()
    if literature:
        ids = list(extra.ids.values()) if extra else []
        planted = planner.plant_literature(
            seed,
            {int(c) for i in ids for c in i.caseid},
            {str(r) for i in ids for r in i.report_id},
        )
    files, lost = [], set()
    for q in qs:
        dmg = planner.plant_quirks(q, damage)
        lost |= {c for c in (dmg.extra_dollar, dmg.continuation) if c is not None}
        files.append(_write_quarter(planner, q, dmg, out_dir, extra))
    cases = planner.case_truth(lost)
    if extra is not None:
        cases = pd.concat([cases, extra.case_truth()], ignore_index=True)
        order = np.argsort(cases["caseid"].astype("int64").to_numpy(), kind="stable")
        cases = cases.iloc[order].reset_index(drop=True)
        cases["deleted_in"] = (
            cases["deleted_in"].astype(object).where(cases["deleted_in"].notna(), None)
        )
    return Series(files, cases, planted)


# --- fast vectorised reports: the demo's FAERS-like background and the benchmark quarter -------

# Parts of generated active-ingredient and brand names: INN-like stems, so that thousands of
# distinct drug strings look like drugs without naming real products (or any kratom spelling).
_NAME_HEADS = (
    "ab ad al am an ar as av ba be bi bo ca ce ci co da de di do du el em en er es fa fe fi fo "
    "ga ge gi ha he hi ib il im in ir la le li lo lu ma me mo na ne ni no ob ol om on or pa pe "
    "pi po ra re ri ro ru sa se si so ta te ti to tu va ve vi vo za ze zi zo"
).split()
_NAME_MIDS = "b c d f g l m n p r s t v x z br cl dr fl gr pr st tr".split()
_INN_STEMS = (
    "mab zumab ximab tinib ciclib parib pril sartan olol dipine statin prazole oxetine triptan "
    "gliptin gliflozin glutide vir previr cillin floxacin mycin cycline azole conazole dronate "
    "semide thiazide zepam zolam caine setron lukast tidine afil parin xaban gatran lisib "
    "rafenib lutamide relin profen coxib lamide sone olone fenac apine idone peridol triptyline "
    "curium dazole"
).split()
_BRAND_ENDS = "a ex or iq on ys in um al ra ia ene ol is".split()
_SALTS = (
    " HYDROCHLORIDE",
    " SODIUM",
    " CALCIUM",
    " MESYLATE",
    " TARTRATE",
    " MALEATE",
    " ACETATE",
    " SULFATE",
)
_STRENGTHS = ("5 MG", "10 MG", "20MG", "25 mg", "50 MG TABLETS", "100MG", "0.5 MG", "1 G")
# Generated names never contain these letters in a row (kratom spellings and the decoys).
_FORBIDDEN_IN_NAMES = ("KR", "MIT", "KET", "OPM", "MAENG", "BIAK", "THANG", "KAKU", "SPECIO")

_LAB_TERMS = (
    "Alanine aminotransferase|Blood creatinine|Blood urea|Blood potassium|Blood sodium|"
    "Blood calcium|Blood magnesium|Blood phosphorus|Blood uric acid|Blood cholesterol|"
    "Blood triglycerides|Blood lactate dehydrogenase|Blood creatine phosphokinase|"
    "Blood alkaline phosphatase|Gamma-glutamyltransferase|Blood albumin|Blood iron|"
    "Blood folate|Vitamin B12|Blood thyroid stimulating hormone|Blood testosterone|"
    "Blood prolactin|Blood cortisol|Blood insulin|Glycosylated haemoglobin|C-reactive protein|"
    "Red blood cell count|Neutrophil count|Lymphocyte count|Eosinophil count|Monocyte count|"
    "Haematocrit|Prothrombin time|Activated partial thromboplastin time|Fibrin D dimer|"
    "Troponin|Brain natriuretic peptide|Amylase|Lipase|Ammonia|Blood bicarbonate|"
    "Blood chloride|Body temperature|Respiratory rate|Intraocular pressure|Ejection fraction|"
    "Bone density|Blood immunoglobulin G|CD4 lymphocytes|Viral load|Serum ferritin|"
    "Transferrin saturation|Protein urine|Glomerular filtration rate|Mean cell volume|"
    "Reticulocyte count"
).split("|")
_SITE_TERMS = (
    "Injection site|Infusion site|Application site|Administration site|Vaccination site|"
    "Implant site|Catheter site|Stoma site|Instillation site|Incision site"
).split("|")
_SITE_EVENTS = (
    "pain erythema swelling pruritus rash haematoma induration bruising inflammation reaction "
    "haemorrhage infection urticaria warmth nodule discolouration mass oedema papule vesicles"
).split()
_ORGAN_TERMS = (
    "Eye|Ear|Skin|Liver|Kidney|Lung|Heart|Bladder|Breast|Thyroid|Pancreatic|Gastric|"
    "Oesophageal|Rectal|Colon|Bone|Joint|Muscle|Nerve|Brain|Spinal cord|Lymph node|Ovarian|"
    "Uterine|Prostate|Testicular|Tongue|Gingival|Nail|Vaginal"
).split("|")
_ORGAN_EVENTS = "disorder pain infection haemorrhage neoplasm injury swelling inflammation".split()
_MORE_ORGAN_EVENTS = (
    "atrophy cyst fibrosis calcification stenosis obstruction perforation ulcer necrosis oedema "
    "hypertrophy ischaemia infarction abscess fistula polyp rupture dysfunction failure mass "
    "lesion operation transplant congestion discomfort deformity enlargement hyperplasia "
    "carcinoma metastases"
).split()
_PT_QUALIFIERS = ("Acute", "Chronic", "Congenital", "Post procedural", "Drug-induced")
_ORGANISMS = (
    "Bacterial|Fungal|Viral|Staphylococcal|Streptococcal|Pseudomonas|Candida|Herpes|"
    "Clostridium difficile|Escherichia|Cytomegalovirus|COVID-19"
).split("|")

# Share of background cases reporting each term kratom reports often: these set the kratom PRRs
# (kratom cases report them at rates from _add_kratom), so they are fixed, not drawn.
_BACKGROUND_CASE_RATES = {
    "Vomiting": 0.030,
    "Death": 0.025,
    "Toxicity to various agents": 0.012,
    "Tachycardia": 0.012,
    "Drug withdrawal syndrome": 0.012,
    "Overdose": 0.008,
    "Seizure": 0.008,
    "Liver injury": 0.007,
    "Cardio-respiratory arrest": 0.006,
    "Drug abuse": 0.008,
    "Drug dependence": 0.005,
    "Hepatotoxicity": 0.005,
    "Unresponsive to stimuli": 0.005,
    "Drug-induced liver injury": 0.004,
    "Intentional overdose": 0.005,
    "Coma": 0.003,
    "Respiratory depression": 0.0025,
    "Respiratory arrest": 0.002,
    "Substance abuse": 0.003,
    "Accidental overdose": 0.003,
    "Cholestatic liver injury": 0.0008,
}
_MEAN_REACTIONS = 1 + 2.25
# Each ingredient's term rates vary around the background (lognormal, this sigma), and 1 to a
# few terms per ingredient are its adverse reactions, raised by lognormal factors of this median.
_RATE_SPREAD = 0.8
_ASSOCIATION_MEDIAN = 25.0
_VOCABULARY_SEED = 20040101


@dataclass(frozen=True)
class _Vocabulary:
    """Drug strings and reaction terms with Zipf-like frequencies and drug-term associations.

    drug_ingredient maps each drug string to its ingredient; each ingredient has its own term
    distribution, stored as term_key = ingredient + cumulative probability (ingredient-major,
    one row of len(pts) each), so one searchsorted picks a term for every reaction row.
    """

    drugnames: np.ndarray
    prod_ai: np.ndarray
    drug_p: np.ndarray
    drug_ingredient: np.ndarray
    pts: np.ndarray
    term_key: np.ndarray

    def with_extra_drugs(self, groups: list[tuple[tuple[str, ...], str, float]]) -> _Vocabulary:
        """Add (names, prod_ai, total share of drug rows) groups with the background terms."""
        names, ais, p = list(self.drugnames), list(self.prod_ai), list(self.drug_p)
        for extra, ai, share in groups:
            scale = 1.0 - share
            p = [x * scale for x in p] + [share / len(extra)] * len(extra)
            names += extra
            ais += [ai or n.upper() for n in extra]
        plain = len(self.term_key) // len(self.pts) - 1  # the last ingredient: no associations
        ingredient = np.r_[self.drug_ingredient, np.full(len(names) - len(self.drugnames), plain)]
        return _Vocabulary(
            _obj(names), _obj(ais), np.array(p) / sum(p), ingredient, self.pts, self.term_key
        )


def _generated_names(rng: random.Random, n: int, make: Callable[[random.Random], str]) -> list[str]:
    names: dict[str, None] = {}
    while len(names) < n:
        name = make(rng).upper()
        if not any(bad in name for bad in _FORBIDDEN_IN_NAMES):
            names[name] = None
    return list(names)


def _ingredient_name(rng: random.Random) -> str:
    parts = (_NAME_HEADS, _NAME_MIDS, "aeiou", _INN_STEMS)
    return "".join(rng.choice(part) for part in parts)


def _brand_name(rng: random.Random) -> str:
    syllables = "".join(
        rng.choice(_NAME_MIDS) + rng.choice("aeiouy") for _ in range(rng.randint(1, 2))
    )
    return rng.choice(_NAME_HEADS) + syllables + rng.choice(_BRAND_ENDS)


def _pt_vocabulary(n_terms: int | None = None) -> list[str]:
    """Real MedDRA PTs first (most reported first), then MedDRA-like generated ones; n_terms
    extends the list with further generated terms to that many (the archive's vocabulary)."""
    generated = (
        [f"{lab} {how}" for lab in _LAB_TERMS for how in ("increased", "decreased", "abnormal")]
        + [f"{site} {event}" for site in _SITE_TERMS for event in _SITE_EVENTS]
        + [f"{organ} {event}" for organ in _ORGAN_TERMS for event in _ORGAN_EVENTS]
        + [f"{org} {what}" for org in _ORGANISMS for what in ("infection", "sepsis", "pneumonia")]
    )
    pts = list(dict.fromkeys([*PTS, *KRATOM_REACTIONS, "Hepatotoxicity", *generated]))
    if n_terms is None:
        return pts
    events = (*_ORGAN_EVENTS, *_MORE_ORGAN_EVENTS)
    more = [f"{organ} {event}" for organ in _ORGAN_TERMS for event in _MORE_ORGAN_EVENTS] + [
        f"{how} {organ.lower()} {event}"
        for how in _PT_QUALIFIERS
        for organ in _ORGAN_TERMS
        for event in events
    ]
    pts = list(dict.fromkeys([*pts, *more]))
    if n_terms > len(pts):
        raise ValueError(f"at most {len(pts)} generated reaction terms; asked for {n_terms}")
    return pts[:n_terms]


@functools.cache
def _vocabulary(
    n_ingredients: int = 1600, n_profiles: int | None = None, n_terms: int | None = None
) -> _Vocabulary:
    """The background vocabulary: the same for every series (seeded once). For a larger one
    (the archive), n_profiles term distributions are shared round-robin by the ingredients and
    n_terms extends the reaction terms (see `_pt_vocabulary`)."""
    rng = np.random.default_rng(_VOCABULARY_SEED)
    unique = list(dict.fromkeys([*DRUGS, *CO_SUBSTANCES]))
    real = [unique[i] for i in rng.permutation(len(unique))]
    names_rng = random.Random(_VOCABULARY_SEED)
    generated = _generated_names(names_rng, n_ingredients, _ingredient_name)
    brands = iter(_generated_names(names_rng, n_ingredients, _brand_name))
    names: list[str] = []
    ais: list[str] = []
    weights: list[float] = []
    ingredient: list[int] = []
    # Real drugs take the most reported ranks, then the generated ones; weight ~ 1 / rank.
    for rank, item in enumerate([*real, *generated]):
        if isinstance(item, tuple):
            name, ai = item
            variants = [name, name.title(), ai.split("\\")[0]]
        else:
            ai = item + (str(rng.choice(_SALTS)) if rng.random() < 0.3 else "")
            brand = next(brands)
            variants = [brand, item, brand.title(), f"{item} {rng.choice(_STRENGTHS)}", ai]
            variants = variants[: rng.integers(2, len(variants) + 1)]
        variants = list(dict.fromkeys(variants))
        share = 0.55 ** np.arange(len(variants))
        total = 1.0 / (rank + 5) ** 1.05
        for variant, s in zip(variants, share / share.sum(), strict=True):
            names.append(variant)
            ais.append(ai)
            weights.append(total * s)
            ingredient.append(rank if n_profiles is None else rank % n_profiles)
    # one more: an ingredient without associations, for added drug strings
    n_ing = (rank if n_profiles is None else n_profiles - 1) + 2
    pts = _pt_vocabulary(n_terms)
    fixed = {pt: rate / _MEAN_REACTIONS for pt, rate in _BACKGROUND_CASE_RATES.items()}
    free = [i for i, pt in enumerate(pts) if pt not in fixed]
    zipf = 1.0 / (np.arange(len(free)) + 3.0) ** 1.1
    pt_p = np.zeros(len(pts))
    pt_p[free] = zipf / zipf.sum() * (1.0 - sum(fixed.values()))
    for i, pt in enumerate(pts):
        pt_p[i] = fixed.get(pt, pt_p[i])
    # Per ingredient: rates spread around the background (mean 1), and 1 to a few terms of any
    # frequency (not the kratom terms) raised by factors of varying size; the last ingredient
    # keeps the background as it is.
    rate = rng.lognormal(-(_RATE_SPREAD**2) / 2, _RATE_SPREAD, (n_ing, len(pts)))
    rate[-1] = 1.0
    n_assoc = 1 + rng.poisson(1.5, n_ing - 1)
    owner = np.repeat(np.arange(n_ing - 1), n_assoc)
    caused = rng.choice(np.array(free), size=len(owner))
    rate[owner, caused] *= rng.lognormal(np.log(_ASSOCIATION_MEDIAN), 1.0, len(owner))
    weight = rate * pt_p
    cumulative = np.cumsum(weight, axis=1) / weight.sum(axis=1, keepdims=True)
    return _Vocabulary(
        _obj(names),
        _obj(ais),
        np.array(weights) / sum(weights),
        np.array(ingredient),
        _obj(pts),
        (np.arange(n_ing)[:, None] + cumulative).ravel(),
    )


def _pick(rng: np.random.Generator, values: np.ndarray, n: int, p: np.ndarray | None = None):
    return (
        values[rng.choice(len(values), size=n, p=p)]
        if p is not None
        else values[rng.integers(0, len(values), n)]
    )


def _obj(values) -> np.ndarray:
    return np.array(list(values), dtype=object)


def _text(values: np.ndarray) -> np.ndarray:
    return values.astype(str).astype(object)


def _ymd_days(first: date, n_days: int) -> np.ndarray:
    """YYYYMMDD strings of n_days consecutive days from first."""
    days = np.datetime64(first, "D") + np.arange(n_days)
    return np.char.replace(np.datetime_as_string(days), "-", "").astype(object)


def _blank_where(rng: np.random.Generator, values: np.ndarray, p_blank: float) -> np.ndarray:
    out = values.copy()
    out[rng.random(len(out)) < p_blank] = ""
    return out


def _lines(columns: dict[str, np.ndarray], q: Quarter, table: str, n: int) -> bytes:
    """Rows in the era's layout: header order, LAERS upper case and trailing '$', CRLF."""
    if n == 0:
        return b""
    empty = [""] * n
    cols = [columns.get(canonical_name(table, h), empty) for h in HEADERS[q.era][table]]
    end = "$\r\n" if has_trailing_dollar(q.source, table) else "\r\n"
    text = end.join(map("$".join, zip(*cols, strict=True))) + end
    return (text.upper() if q.source == LAERS else text).encode("latin-1")


@dataclass
class _Ids:
    """Who the fast reports are: case, version (0 for LAERS), primaryid or ISR, receipt dates."""

    caseid: np.ndarray  # int64
    version: np.ndarray  # int64
    report_id: np.ndarray  # str objects
    fda_day: np.ndarray  # days after the quarter's first day
    init_fda_dt: np.ndarray  # str objects (YYYYMMDD)


class _FullSize:
    """Vectorised column generators for one quarter of any era, chunk by chunk of reports."""

    def __init__(
        self,
        q: Quarter,
        n_reports: int,
        seed: int,
        vocab: _Vocabulary,
        ids: _Ids | None = None,
        mean_drugs: float = 5.0,
    ) -> None:
        self.q, self.seed, self.vocab = q, seed, vocab
        rng = np.random.default_rng([seed, _quarter_index(q)])
        start, end = _quarter_dates(q)
        if ids is None:
            caseid = _caseid_base(q) - 3_000_000 + np.cumsum(rng.integers(1, 12, n_reports))
            version = rng.choice(np.array([1, 1, 1, 2, 2, 3, 4, 6, 12]), n_reports)
            fda_day = rng.integers(0, (end - start).days + 1, n_reports)
            back = np.where(version == 1, 0, rng.integers(90, 2000, n_reports))
            init = _ymd_days(start - timedelta(days=2000), 2100)[fda_day - back + 2000]
            pid = _obj(f"{c}{v}" for c, v in zip(caseid, version, strict=True))
            ids = _Ids(caseid, version, pid, fda_day, init)
        self.ids = ids
        n_reports = len(ids.caseid)
        self.caseid, self.version = _text(ids.caseid), _text(ids.version)
        self.primaryid = ids.report_id
        self.n_drug = 1 + rng.poisson(mean_drugs - 1.0, n_reports)
        self.n_reac = 1 + rng.poisson(_MEAN_REACTIONS - 1, n_reports)
        self.n_outc = np.minimum(rng.poisson(0.75, n_reports), 3)
        self.n_rpsr = (rng.random(n_reports) < 0.05).astype(int)
        self.drug_offset = np.cumsum(self.n_drug) - self.n_drug
        self.drug_k = rng.choice(len(vocab.drugnames), size=int(self.n_drug.sum()), p=vocab.drug_p)
        self.in_quarter = 3000  # index of the quarter's first day
        self.ymd = _ymd_days(start - timedelta(days=3000), 3000 + (end - start).days + 1)
        self.ym = self.ymd.astype("U6").astype(object)
        self.y = self.ymd.astype("U4").astype(object)
        self.fda = self.in_quarter + ids.fda_day
        self.seq = _obj(str(i) for i in range(int(self.n_drug.max()) + 1))
        self.laers_seq = _LAERS_DRUG_SEQ_START + _quarter_index(q) * 350_000 + 150_000
        self.nda = _obj(f"{k:06d}" for k in rng.integers(10_000, 215_000, 2000))

    def rng(self, table: str, chunk: int) -> np.random.Generator:
        return np.random.default_rng(
            [self.seed, _quarter_index(self.q), TABLES.index(table), chunk]
        )

    def _date(self, rng: np.random.Generator, idx: np.ndarray, p_partial: float) -> np.ndarray:
        out = self.ymd[idx]
        if self.q.source == LAERS:
            return out
        roll = rng.random(len(idx))
        out[roll < p_partial] = self.ym[idx[roll < p_partial]]
        out[roll < p_partial / 2] = self.y[idx[roll < p_partial / 2]]
        return out

    def demo(self, a: int, b: int, chunk: int) -> bytes:
        rng, n = self.rng("demo", chunk), b - a
        fda = self.fda[a:b]
        maker = rng.integers(0, len(_MANUFACTURERS), n)
        codes = _obj(code for _, code in _MANUFACTURERS)[maker]
        where = rng.choice(len(_COUNTRY_CODES), n, p=np.array(_COUNTRY_WEIGHTS) / 100)
        country = _obj(_COUNTRY_CODES)[where]
        serial = rng.integers(0, 10**6, n)
        mfr = _obj(
            f"{c}-{m}-{self.q.year}{k}" for c, m, k in zip(country, codes, serial, strict=True)
        )
        first = self.version[a:b] == "1"
        cols = {
            "primaryid": self.primaryid[a:b],
            "caseid": self.caseid[a:b],
            "caseversion": self.version[a:b],
            "i_f_code": np.where(first, "I", "F").astype(object),
            "event_dt": _blank_where(rng, self._date(rng, fda - rng.integers(1, 700, n), 0.2), 0.2),
            "mfr_dt": self.ymd[fda - rng.integers(1, 15, n)],
            "init_fda_dt": self.ids.init_fda_dt[a:b],
            "fda_dt": self.ymd[fda],
            "rept_cod": _pick(rng, _obj(("EXP", "PER", "DIR")), n, np.array([0.6, 0.25, 0.15])),
            "mfr_num": mfr,
            "mfr_sndr": _obj(name for name, _ in _MANUFACTURERS)[maker],
            "lit_ref": _blank_where(rng, _pick(rng, _obj(_LIT_REFS), n), 0.97),
            "age": _blank_where(rng, _text(rng.integers(1, 95, n)), 0.2),
            "age_cod": _blank_where(rng, np.full(n, "YR", dtype=object), 0.2),
            "age_grp": _blank_where(rng, _pick(rng, _obj("NICTAE"), n), 0.5),
            "sex": _pick(rng, _obj(("F", "M", "UNK", "")), n, np.array([0.55, 0.38, 0.03, 0.04])),
            "e_sub": np.full(n, "Y", dtype=object),
            "wt": _blank_where(rng, _text(rng.integers(40, 130, n)), 0.6),
            "wt_cod": np.full(n, "KG", dtype=object),
            "rept_dt": self.ymd[fda],
            "occp_cod": _pick(rng, _obj(("MD", "PH", "OT", "LW", "CN", "")), n),
            "reporter_country": country,
        }
        cols["occr_country"] = cols["reporter_country"]
        if self.q.source == LAERS:
            cols["image"] = _obj(f"{i}-{_isr_check_digit(i)}" for i in self.primaryid[a:b])
            cols["reporter_country"] = _obj(_COUNTRIES.values())[where]
        return _lines(cols, self.q, "demo", n)

    def _drug_rows(self, a: int, b: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Report index, drug_seq and is-first flag of every drug row of reports a..b."""
        counts = self.n_drug[a:b]
        report = np.repeat(np.arange(a, b), counts)
        starts = np.repeat(np.cumsum(counts) - counts, counts)
        seq = np.arange(len(report)) - starts + 1
        return report, seq, seq == 1

    def _seq_text(self, report: np.ndarray, seq: np.ndarray) -> np.ndarray:
        """drug_seq as written: per report in FAERS, a global running number in LAERS."""
        if self.q.source == LAERS:
            return _text(self.laers_seq + self.drug_offset[report] + seq)
        return self.seq[seq]

    def drug(self, a: int, b: int, chunk: int) -> bytes:
        rng = self.rng("drug", chunk)
        report, seq, first = self._drug_rows(a, b)
        m = len(report)
        k = self.drug_k[self.drug_offset[report] + seq - 1]
        role = _pick(rng, _obj(("SS", "C", "I")), m, np.array([0.25, 0.65, 0.1]))
        role[first] = "PS"
        amt = _pick(rng, _obj(("", "5", "10", "20", "50", "100", "500")), m)
        has = amt != ""
        cols = {
            "primaryid": self.primaryid[report],
            "caseid": self.caseid[report],
            "drug_seq": self._seq_text(report, seq),
            "role_cod": role,
            "drugname": self.vocab.drugnames[k],
            "prod_ai": self.vocab.prod_ai[k],
            "val_vbm": _pick(rng, _obj("1112"), m),
            "route": _blank_where(rng, _pick(rng, _obj(_ROUTES), m), 0.2),
            "dechal": _pick(rng, _obj(("Y", "N", "U", "D", "", "")), m),
            "rechal": _pick(rng, _obj(("Y", "N", "U", "D", "", "", "")), m),
            "nda_num": np.where(first & (rng.random(m) < 0.6), _pick(rng, self.nda, m), ""),
            "dose_amt": amt,
            "dose_unit": np.where(has, _pick(rng, _obj(_DOSE_UNITS), m), ""),
            "dose_form": _blank_where(rng, _pick(rng, _obj(_DOSE_FORMS), m), 0.5),
            "dose_freq": np.where(has, _pick(rng, _obj(_DOSE_FREQS), m), ""),
        }
        return _lines(cols, self.q, "drug", m)

    def ther(self, a: int, b: int, chunk: int) -> bytes:
        rng = self.rng("ther", chunk)
        report, seq, _ = self._drug_rows(a, b)
        keep = rng.random(len(report)) < 0.3
        report, seq = report[keep], seq[keep]
        m = len(report)
        start = rng.integers(0, self.in_quarter - 400, m)
        dur = rng.integers(0, 400, m)
        has_dur = rng.random(m) < 0.25
        cols = {
            "primaryid": self.primaryid[report],
            "caseid": self.caseid[report],
            "dsg_drug_seq": self._seq_text(report, seq),
            "start_dt": self._date(rng, start, 0.2),
            "end_dt": _blank_where(rng, self._date(rng, start + dur, 0.2), 0.4),
            "dur": np.where(has_dur, _text(dur + 1), ""),
            "dur_cod": np.where(has_dur, "DAY", "").astype(object),
        }
        return _lines(cols, self.q, "ther", m)

    def indi(self, a: int, b: int, chunk: int) -> bytes:
        rng = self.rng("indi", chunk)
        report, seq, _ = self._drug_rows(a, b)
        keep = rng.random(len(report)) < 0.45
        report, seq = report[keep], seq[keep]
        m = len(report)
        cols = {
            "primaryid": self.primaryid[report],
            "caseid": self.caseid[report],
            "indi_drug_seq": self._seq_text(report, seq),
            "indi_pt": _pick(rng, _obj(_INDICATIONS), m),
        }
        return _lines(cols, self.q, "indi", m)

    def reac(self, a: int, b: int, chunk: int) -> bytes:
        """Each term drawn from the distribution of one of the report's drugs (often the PS)."""
        rng, vocab = self.rng("reac", chunk), self.vocab
        report = np.repeat(np.arange(a, b), self.n_reac[a:b])
        m = len(report)
        which = np.where(rng.random(m) < 0.5, 0, (rng.random(m) * self.n_drug[report]).astype(int))
        ingredient = vocab.drug_ingredient[self.drug_k[self.drug_offset[report] + which]]
        found = np.searchsorted(vocab.term_key, ingredient + rng.random(m), side="right")
        term = np.minimum(found, len(vocab.term_key) - 1) % len(vocab.pts)
        _, first = np.unique(report * len(vocab.pts) + term, return_index=True)
        keep = np.sort(first)  # one row per term and report, in drawing order
        report, term = report[keep], term[keep]
        cols = {
            "primaryid": self.primaryid[report],
            "caseid": self.caseid[report],
            "pt": vocab.pts[term],
        }
        return _lines(cols, self.q, "reac", len(report))

    def _child(self, table: str, a: int, b: int, chunk: int, values: np.ndarray) -> bytes:
        counts = {"outc": self.n_outc, "rpsr": self.n_rpsr}[table][a:b]
        rng = self.rng(table, chunk)
        report = np.repeat(np.arange(a, b), counts)
        m = len(report)
        column = {"outc": "outc_cod", "rpsr": "rpsr_cod"}[table]
        cols = {
            "primaryid": self.primaryid[report],
            "caseid": self.caseid[report],
            column: _pick(rng, values, m),
        }
        return _lines(cols, self.q, table, m)

    def outc(self, a: int, b: int, chunk: int) -> bytes:
        return self._child(
            "outc", a, b, chunk, _obj(("OT",) * 4 + ("HO",) * 3 + tuple("DE LT DS RI CA".split()))
        )

    def rpsr(self, a: int, b: int, chunk: int) -> bytes:
        return self._child("rpsr", a, b, chunk, _obj(_RPSR_CODES))

    def chunks(self, table: str, size: int = 50_000) -> Iterator[bytes]:
        make = getattr(self, table)
        n = len(self.caseid)
        for chunk, a in enumerate(range(0, n, size)):
            yield make(a, min(n, a + size), chunk)


class _Background:
    """The FAERS-like background of a series: fast reports around the planned cases.

    Each quarter gets about n_reports reports: new cases (some with earlier versions before the
    series) and follow-ups of background cases of earlier quarters. Ids never collide with the
    planner's; no background case involves kratom or is deleted.
    """

    FOLLOW_UP_SHARE = 0.15

    def __init__(self, planner: _Planner, quarters: list[Quarter], n_reports: int, seed: int):
        rng = np.random.default_rng([seed, 20_040_101])
        self.ids: dict[Quarter, _Ids] = {}
        self.seed = seed
        seen = pd.DataFrame(
            {
                "caseid": [],
                "version": [],
                "source": [],
                "init": [],
                "report_id": [],
                "quarter": [],
                "first": [],
            }
        )
        taken_ids = np.array(sorted(planner.used_caseids), dtype=np.int64)
        taken_reports = set(planner.used_primaryids) | {str(i) for i in planner.used_isrs}
        for q in quarters:
            start, end = _quarter_dates(q)
            n_follow = min(len(seen), int(n_reports * self.FOLLOW_UP_SHARE))
            old = seen.iloc[rng.choice(len(seen), n_follow, replace=False)] if n_follow else seen
            n_new = n_reports - n_follow
            base = _caseid_base(q) + 300_000
            caseid = np.r_[
                old["caseid"].to_numpy(np.int64),
                base + np.cumsum(rng.integers(1, 4, n_new)),
            ]
            if q.source == LAERS:
                version = np.zeros(len(caseid), dtype=np.int64)
                isr = _caseid_base(q) + 400_000 + np.cumsum(rng.integers(1, 3, len(caseid)))
                report_id = _text(isr)
            else:
                was_faers = (old["source"] == FAERS).to_numpy()
                prev = old["version"].to_numpy(np.int64)
                version = np.r_[
                    np.where(was_faers, prev + 1, 1),
                    rng.choice(np.array([1] * 6 + [2, 2, 3, 4]), n_new),
                ]
                report_id = _obj(f"{c}{v}" for c, v in zip(caseid, version, strict=True))
            fda_day = rng.integers(0, (end - start).days + 1, len(caseid))
            back = np.where(version <= 1, 0, rng.integers(90, 2000, len(caseid)))
            init = _ymd_days(start - timedelta(days=2000), 2100)[fda_day - back + 2000]
            init[:n_follow] = old["init"].to_numpy(object)
            ok = ~pd.Series(report_id).isin(taken_reports).to_numpy()
            ok[n_follow:] &= ~np.isin(caseid[n_follow:], taken_ids) & ~np.isin(
                caseid[n_follow:], seen["caseid"].to_numpy(np.int64)
            )
            ok &= ~pd.Series(report_id).duplicated().to_numpy()
            ids = _Ids(caseid[ok], version[ok], report_id[ok], fda_day[ok], init[ok])
            self.ids[q] = ids
            taken_reports.update(ids.report_id)
            now = pd.DataFrame(
                {
                    "caseid": ids.caseid,
                    "version": ids.version,
                    "source": q.source,
                    "init": ids.init_fda_dt,
                    "report_id": ids.report_id,
                    "quarter": str(q),
                    "first": np.r_[old["first"].to_numpy(object), [str(q)] * n_new][ok],
                }
            )
            seen = pd.concat([seen[~seen["caseid"].isin(now["caseid"])], now], ignore_index=True)
        self.latest = seen

    def members(self, q: Quarter) -> dict[str, bytes]:
        """Each table's background rows for quarter q (no header), keyed by table."""
        gen = _FullSize(q, 0, self.seed, _vocabulary(), self.ids[q])
        return {table: b"".join(gen.chunks(table)) for table in TABLES}

    def case_truth(self) -> pd.DataFrame:
        """One row per background case, in the columns of `Series.cases`."""
        seen = self.latest
        return pd.DataFrame(
            {
                "caseid": _text(seen["caseid"].to_numpy(np.int64)),
                "source_of_latest": seen["source"],
                "surviving": True,
                "primaryid_latest": seen["report_id"],
                "quarter_latest": seen["quarter"],
                "quarter_initial": np.minimum(
                    _obj(f"{d[:4]}Q{(int(d[4:6]) + 2) // 3}" for d in seen["init"]),
                    seen["first"].to_numpy(object),
                ),
                "quarter_first_version": seen["first"],
                "is_kratom": False,
                "is_7oh": False,
                "has_decoy": False,
                "deleted_in": None,
            }
        )


def write_full_size_quarter(
    quarter: str, out_dir: Path, n_reports: int = 400_000, seed: int = 0
) -> Path:
    """Write a benchmark-sized SYNTHETIC FB-layout (2014Q3+) quarter; no damage, no truth.

    400,000 reports give about 5 million rows: DRUG ~2.0M, REAC ~1.3M, INDI ~0.9M, THER ~0.6M,
    DEMO 0.4M, OUTC ~0.3M, RPSR ~20k. Kratom, 7-OH, look-alike, latin-1 and herbal drug strings
    are mixed into the background vocabulary.
    """
    q = Quarter.parse(quarter)
    if q.era != "FB":
        raise ValueError(f"full-size quarters use the 2014Q3+ layout; got {q}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    vocab = _vocabulary().with_extra_drugs(
        [
            (KRATOM_DRUGNAMES, "MITRAGYNA SPECIOSA LEAF", 0.01),
            (SEVEN_OH_DRUGNAMES, "7-HYDROXYMITRAGYNINE", 0.003),
            (DECOY_DRUGNAMES, "", 0.01),
            (_LATIN1_DRUGNAMES, "", 0.001),
            *[((name,), ai, HERBAL_SHARE / len(HERBAL_PRODUCTS)) for name, ai in HERBAL_PRODUCTS],
        ]
    )
    gen = _FullSize(q, n_reports, seed, vocab)
    path = out_dir / _zip_name(q)
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(_zipinfo("README_SYNTHETIC.txt", q, 1), _README_SYNTHETIC)
        for table in TABLES:
            with zf.open(_zipinfo(_member(q, table), q, 1), "w") as fh:
                fh.write(_header_bytes(q, table) + b"\r\n")
                for data in gen.chunks(table):
                    fh.write(data)
        deleted = _deleted_member(q)
        if deleted:
            rng = gen.rng("demo", 1 << 20)  # a chunk number no table reaches
            ids = sorted(set(_caseid_base(q) - 3_500_000 + rng.integers(0, 500_000, 2000)))
            zf.writestr(_zipinfo(deleted, q, 1), "".join(f"{x}\r\n" for x in [" ", *ids]))
    return path


# --- the whole archive: growth-shaped quarters from 2004Q1, cases persisting across them -------

ARCHIVE_FIRST = "2004Q1"
ARCHIVE_LAST = "2026Q3"
# Reports a quarter grow exponentially from 100,000 (2004Q1) to 400,000 (2024Q1), flat after:
# 17.5 million DEMO rows to 2024Q1, as the published whole-corpus figure (17.6 million).
_ARCHIVE_START_REPORTS = 100_000
_ARCHIVE_GROWTH = 4.0
_ARCHIVE_GROWTH_QUARTERS = 80
_ARCHIVE_FOLLOW_UP_SHARE = 0.17  # of a quarter's reports (about 4 million superseded versions)
_ARCHIVE_RECENT_SHARE = 0.7  # of follow-ups drawn from about the last two quarters' cases
_ARCHIVE_DELETED_SHARE = 0.005  # of a quarter's reports, 2019Q1 on: about 0.3% of all cases
_ARCHIVE_MEAN_DRUGS = 4.0  # 69.8 million DRUG rows for 17.6 million DEMO rows
_ARCHIVE_VOCABULARY = {"n_ingredients": 15_000, "n_profiles": 3_000, "n_terms": 3_000}
_LAERS_FIRST_CASEID = 4_000_000
_LAERS_FIRST_ISR = 4_000_000
# FAERS-era cases get 8-digit caseids and legacy (7-digit) ones at most version 9, so that no
# primaryid (caseid followed by version) can equal another case's.
_FAERS_FIRST_CASEID = 10_000_000
_LEGACY_MAX_VERSION = 9
_DAY_ZERO = np.datetime64("2000-01-01", "D")


def archive_reports(quarter: str | Quarter, scale: float = 1.0) -> int:
    """Reports (DEMO rows) the archive writes for a quarter at a scale."""
    q = Quarter.parse(quarter) if isinstance(quarter, str) else quarter
    k = min(_quarter_index(q), _ARCHIVE_GROWTH_QUARTERS)
    return max(1, round(scale * _ARCHIVE_START_REPORTS * _ARCHIVE_GROWTH ** (k / 80)))


def _archive_mix(q: Quarter) -> list[tuple[tuple[str, ...], str, float]]:
    """Kratom, 7-OH, look-alike, latin-1 and herbal drug strings as shares of a quarter's drug
    rows: kratom rare before 2016 and rising after, 7-OH from 2022 (hundreds to thousands of
    cases); the herbal products give the natural-products comparator its cases."""
    t = q.year + (q.q - 1) / 4
    kratom = 2e-6 + 5e-5 / (1.0 + np.exp(-(t - 2018.5)))
    groups = [
        (KRATOM_DRUGNAMES, "MITRAGYNA SPECIOSA LEAF", kratom),
        (DECOY_DRUGNAMES, "", 0.002),
        (_LATIN1_DRUGNAMES, "", 0.0005),
        *[((name,), ai, HERBAL_SHARE / len(HERBAL_PRODUCTS)) for name, ai in HERBAL_PRODUCTS],
    ]
    if q.year >= 2022:
        groups.append((SEVEN_OH_DRUGNAMES, "7-HYDROXYMITRAGYNINE", 2e-5 / (1.0 + np.exp(2024 - t))))
    return groups


@dataclass
class ArchiveQuarter:
    """One quarter of a generated archive: its zip and what it holds."""

    quarter: str
    zip_path: Path
    rows: dict[str, int]  # table -> data rows written
    n_new_cases: int
    n_follow_ups: int  # reports that are later versions of cases of earlier quarters
    n_deleted: int  # caseids in its deleted list (all of earlier quarters' cases)
    seconds: float  # time to write it (as recorded when it was written)


@dataclass
class _ArchiveQuarterPlan:
    q: Quarter
    ids: _Ids
    deleted: np.ndarray  # caseids (int64), sorted
    n_new_cases: int
    n_follow_ups: int


class _ArchivePlan:
    """Who reports in each quarter of the archive, quarter by quarter: every case seen so far
    in numpy arrays (caseid, latest FAERS version, initial receipt day, not deleted)."""

    def __init__(self, quarters: list[Quarter], scale: float, seed: int) -> None:
        size = sum(archive_reports(q, scale) for q in quarters)
        self.scale, self.seed = scale, seed
        self.caseid = np.zeros(size, np.int64)
        self.version = np.zeros(size, np.int16)  # 0 while a case has only LAERS reports
        self.init_day = np.zeros(size, np.int32)  # days after _DAY_ZERO
        self.alive = np.zeros(size, bool)
        self.n = 0
        self.next_laers_caseid, self.next_isr = _LAERS_FIRST_CASEID, _LAERS_FIRST_ISR
        self.next_faers_caseid = _FAERS_FIRST_CASEID

    def quarter(self, q: Quarter) -> _ArchiveQuarterPlan:
        """Plan quarter q (quarters in order): deletions, follow-ups, then new cases."""
        rng = np.random.default_rng([self.seed, _quarter_index(q), 1 << 20])
        n_reports = archive_reports(q, self.scale)
        deleted = np.zeros(0, np.int64)
        if _deleted_member(q) and self.n:
            n_del = max(1, round(n_reports * _ARCHIVE_DELETED_SHARE))
            pick = self._alive(rng, rng.integers(0, self.n, 2 * n_del + 10))[:n_del]
            self.alive[pick] = False
            deleted = np.sort(self.caseid[pick])
        follow = np.zeros(0, np.int64)
        if self.n:
            want = round(n_reports * _ARCHIVE_FOLLOW_UP_SHARE)
            recent = self.n - 1 - rng.exponential(2 * n_reports, 2 * want).astype(np.int64)
            anywhere = rng.integers(0, self.n, 2 * want)
            pick = np.where(rng.random(2 * want) < _ARCHIVE_RECENT_SHARE, recent, anywhere)
            pick = self._alive(rng, pick[pick >= 0])
            if q.source == FAERS:
                capped = (self.caseid[pick] < _FAERS_FIRST_CASEID) & (
                    self.version[pick] >= _LEGACY_MAX_VERSION
                )
                pick = pick[~capped]
            follow = pick[:want]
        n_new = n_reports - len(follow)
        start, end = _quarter_dates(q)
        first_day = int((np.datetime64(start, "D") - _DAY_ZERO).astype(int))
        fda_day = rng.integers(0, (end - start).days + 1, n_reports)
        if q.source == LAERS:
            caseid = self.next_laers_caseid + np.arange(n_new)
            self.next_laers_caseid += n_new
            if self.next_laers_caseid >= _FAERS_FIRST_CASEID:
                raise ValueError(f"scale {self.scale} is too large for LAERS caseids")
            new_version = np.zeros(n_new, np.int16)
        else:
            caseid = self.next_faers_caseid + np.cumsum(rng.integers(1, 3, n_new))
            self.next_faers_caseid = int(caseid[-1]) if n_new else self.next_faers_caseid
            new_version = rng.choice(np.array([1] * 8 + [2, 3], np.int16), n_new)
        back = np.where(new_version <= 1, 0, rng.integers(90, 2000, n_new))
        new_init = first_day + fda_day[len(follow) :] - back
        if q.source == FAERS:
            self.version[follow] += 1
        init = np.r_[self.init_day[follow], new_init]
        all_caseids = np.r_[self.caseid[follow], caseid]
        if q.source == LAERS:
            version = np.r_[np.full(len(follow), 2), np.ones(n_new, np.int64)]  # F / I only
            report_id = _text(self.next_isr + np.arange(n_reports))
            self.next_isr += n_reports
        else:
            version = np.r_[self.version[follow], new_version].astype(np.int64)
            report_id = _text(all_caseids) + _text(version)
        a, b = self.n, self.n + n_new
        self.caseid[a:b], self.version[a:b] = caseid, new_version
        self.init_day[a:b], self.alive[a:b] = new_init, True
        self.n = b
        init_text = np.char.replace(
            np.datetime_as_string(_DAY_ZERO + init.astype("timedelta64[D]")), "-", ""
        ).astype(object)
        ids = _Ids(all_caseids, version, report_id, fda_day, init_text)
        return _ArchiveQuarterPlan(q, ids, deleted, n_new, len(follow))

    def _alive(self, rng: np.random.Generator, pick: np.ndarray) -> np.ndarray:
        """Distinct, not deleted, in random order."""
        pick = np.unique(pick)
        return rng.permutation(pick[self.alive[pick]])


def _write_archive_quarter(
    plan: _ArchiveQuarterPlan, out_dir: Path, seed: int, scale: float
) -> ArchiveQuarter:
    """Write one archive quarter to `<zip>.partial`, its counts beside it, then rename."""
    t0 = time.perf_counter()
    q = plan.q
    vocab = _vocabulary(**_ARCHIVE_VOCABULARY).with_extra_drugs(_archive_mix(q))
    gen = _FullSize(q, 0, seed, vocab, plan.ids, mean_drugs=_ARCHIVE_MEAN_DRUGS)
    path = out_dir / _zip_name(q)
    partial = path.with_name(path.name + ".partial")
    rows: dict[str, int] = {}
    sizes: dict[str, int] = {}
    with zipfile.ZipFile(partial, "w") as zf:
        zf.writestr(_zipinfo("README_SYNTHETIC.txt", q, 1), _README_SYNTHETIC)
        for doc in _doc_members(q):
            zf.writestr(_zipinfo(doc, q, 1), _PLACEHOLDER_DOC)
        for table in TABLES:
            member = _member(q, table)
            header = _header_bytes(q, table) + b"\r\n"
            rows[table], sizes[member] = 0, len(header)
            with zf.open(_zipinfo(member, q, 1), "w") as fh:
                fh.write(header)
                for data in gen.chunks(table):
                    fh.write(data)
                    rows[table] += data.count(b"\n")
                    sizes[member] += len(data)
        if q.source == LAERS:
            names = {m: m.split("/")[-1] for m in sizes}
            size = "".join(f"{names[m]} {n}\r\n" for m, n in sizes.items())
            stat = "".join(f"{names[_member(q, t)]} {rows[t]}\r\n" for t in TABLES)
            zf.writestr(_zipinfo(f"SIZE{q.yyqn}.TXT", q, 1), size)
            zf.writestr(_zipinfo(f"STAT{q.yyqn}.TXT", q, 1), stat)
        deleted_member = _deleted_member(q)
        if deleted_member:
            lines = "".join(f"{x}\r\n" for x in [" ", *plan.deleted.tolist()])
            zf.writestr(_zipinfo(deleted_member, q, 1), lines)
    result = ArchiveQuarter(
        str(q),
        path,
        rows,
        plan.n_new_cases,
        plan.n_follow_ups,
        len(plan.deleted),
        time.perf_counter() - t0,
    )
    record = {**asdict(result), "zip_path": path.name, "seed": seed, "scale": scale}
    _archive_record(path).write_text(json.dumps(record, indent=1))
    partial.replace(path)
    return result


def _archive_record(zip_path: Path) -> Path:
    return zip_path.with_name(zip_path.name + ".json")


def _finished(path: Path, seed: int, scale: float) -> ArchiveQuarter | None:
    """The counts of an archive zip written earlier, or None when it is not there."""
    record = _archive_record(path)
    if not (path.exists() and record.exists()):
        return None
    data = json.loads(record.read_text())
    if data.get("seed") != seed or data.get("scale") != scale:
        raise ValueError(
            f"{path} was generated with seed {data.get('seed')} and scale {data.get('scale')}, "
            f"not {seed} and {scale}: use another folder"
        )
    data.pop("seed")
    data.pop("scale")
    return ArchiveQuarter(**{**data, "zip_path": path})


def archive_quarters(first: str = ARCHIVE_FIRST, last: str = ARCHIVE_LAST) -> list[Quarter]:
    """The quarters from first to last, in order."""
    q, end = Quarter.parse(first), Quarter.parse(last)
    if end < q:
        raise ValueError(f"{last} is before {first}")
    out = [q]
    while out[-1] < end:
        out.append(out[-1].next())
    return out


def write_archive(
    out_dir: Path,
    first: str = ARCHIVE_FIRST,
    last: str = ARCHIVE_LAST,
    scale: float = 1.0,
    seed: int = 0,
    workers: int = 1,
    progress: Callable[[ArchiveQuarter], None] | None = None,
) -> list[ArchiveQuarter]:
    """Write one SYNTHETIC zip per quarter from first to last, growing as the real archive.

    Each era's layout (LAERS to 2012Q3, FAERS after); about 100,000 reports in 2004Q1 rising to
    400,000 in 2024Q1, times `scale`; 17% of each quarter's reports are follow-up versions of
    earlier cases (LAERS cases continue with FAERS versions from 2012Q4); deleted lists from
    2019Q1 name earlier cases; a vocabulary of about 50,000 drug strings and 3,000 terms with
    kratom rising after 2016. Resumable: a zip already in out_dir (with its `.json` counts) is
    kept, so a killed run goes on where it stopped; a second run on the same folder waits for
    the first. The bytes depend on seed and scale only, not on `workers` (processes writing
    quarters in parallel). `progress` gets each quarter.
    """
    quarters = archive_quarters(first, last)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with (out_dir / ".write_archive.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _write_archive(out_dir, quarters, scale, seed, workers, progress)


def _write_archive(
    out_dir: Path,
    quarters: list[Quarter],
    scale: float,
    seed: int,
    workers: int,
    progress: Callable[[ArchiveQuarter], None] | None,
) -> list[ArchiveQuarter]:
    """`write_archive` under its lock: plan every quarter in order, write the missing ones."""
    plan = _ArchivePlan(quarters, scale, seed)
    done: dict[str, ArchiveQuarter] = {}

    def finish(result: ArchiveQuarter) -> None:
        done[result.quarter] = result
        if progress:
            progress(result)

    def to_write() -> Iterator[_ArchiveQuarterPlan]:
        for q in quarters:
            planned = plan.quarter(q)
            found = _finished(out_dir / _zip_name(q), seed, scale)
            if found is None:
                yield planned
            else:
                finish(found)

    if workers <= 1:
        for planned in to_write():
            finish(_write_archive_quarter(planned, out_dir, seed, scale))
    else:
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(workers, mp_context=context) as pool:
            running: set[Future[ArchiveQuarter]] = set()
            for planned in to_write():
                if len(running) >= 2 * workers:  # bound the plans held in memory
                    finished, running = wait(running, return_when=FIRST_COMPLETED)
                    for future in finished:
                        finish(future.result())
                running.add(pool.submit(_write_archive_quarter, planned, out_dir, seed, scale))
            for future in running:
                finish(future.result())
    return [done[str(q)] for q in quarters]
