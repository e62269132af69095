"""A canonical cohort rewritten as a European spreadsheet would save it: semicolons, a
UTF-8 byte-order mark, CRLF line ends, German headers, dd/mm/yyyy dates, decimal commas
with thousands dots, `37,5 mg` doses, `95%` adherence, Ja/Nein flags, German stop
reasons, roles and modalities, German drug spellings and two German brand names.

`examples/site-export/` is this rewrite of `sample_data/`, and `examples/site-map.yaml`
declares every convention it uses (a test keeps the two in step). Run as a script to
write the example export again: `python tests/european.py`.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "site-export"

TREATMENT_HEADERS = {
    "subject_id": "Patienten-ID",
    "drug": "Wirkstoff",
    "daily_dose_mg": "Tagesdosis",
    "start_date": "Beginn",
    "end_date": "Ende",
    "adherence": "Adhärenz",
    "hamd_start": "HAMD Beginn",
    "hamd_end": "HAMD Ende",
    "improvement": "Verbesserung",
    "stop_reason": "Absetzgrund",
    "role": "Rolle",
    "modality": "Modalität",
    "sessions": "Sitzungen",
    "dose_unit": "Dosiseinheit",
    "dose_every_days": "Dosisintervall (Tage)",
    "lithium_level": "Lithiumspiegel",
    "hamd_version": "HAMD-Version",
    "madrs_start": "MADRS Beginn",
    "madrs_end": "MADRS Ende",
}
SUBJECT_HEADERS = {
    "subject_id": "Patienten-ID",
    "birth_date": "Geburtsdatum",
    "sex": "Geschlecht",
    "diagnosis": "Diagnose",
    "episode_start": "Episodenbeginn",
    "screening_date": "Screeningdatum",
    "hamd_screening": "HAMD Screening",
    "bipolar": "Bipolar",
    "psychotic_features": "Psychotische Symptome",
    "madrs_screening": "MADRS Screening",
    "substance_use_disorder": "Substanzkonsumstörung",
    "ocd": "Zwangsstörung",
    "intellectual_disability": "Intelligenzminderung",
    "cluster_b_pd": "Cluster-B-Persönlichkeitsstörung",
    "prior_ketamine_nonresponse": "Ketamin ohne Ansprechen",
    "current_vns_or_dbs": "VNS oder DBS aktuell",
    "ect_current_episode": "EKT in dieser Episode",
    "hamd_version": "HAMD-Version",
}
STOP_REASONS = {
    "nonresponse": "Keine Wirkung",
    "partial_response": "Teilweise Wirkung",
    "intolerance": "Nebenwirkungen",
    "remission": "Remission",
    "relapse": "Rückfall",
    "patient_choice": "Wunsch des Patienten",
    "ongoing": "Laufend",
    "other": "Sonstiges",
}
ROLES = {"monotherapy": "Mono", "augmentation": "Add-on", "combination": "Kombination"}
MODALITIES = {
    "pharmacotherapy": "Medikament",
    "ect": "EKT",
    "rtms": "rTMS",
    "psychotherapy": "Psychotherapie",
    "esketamine": "Esketamin",
}
DRUGS = {  # German INN spellings (the formulary reads them) and brands (the map aliases)
    "sertraline": "Sertralin",
    "duloxetine": "Duloxetin",
    "mirtazapine": "Mirtazapin",
    "fluoxetine": "Fluoxetin",
    "quetiapine": "Quetiapin",
    "trazodone": "Trazodon",
    "venlafaxine": "Trevilor",
    "lithium": "Quilonum",
}
BOOLEAN = {"true": "Ja", "false": "Nein"}
DATES = ("start_date", "end_date", "birth_date", "episode_start", "screening_date")
DECIMALS = ("improvement", "lithium_level", "dose_every_days")


def _date(text: str) -> str:
    return f"{text[8:10]}/{text[5:7]}/{text[0:4]}" if text else ""


def _decimal(text: str) -> str:
    """`1234.5` as `1.234,5` (a dot between thousands, a comma before decimals)."""
    if not text:
        return ""
    sign, text = ("-", text[1:]) if text.startswith("-") else ("", text)
    whole, _, fraction = text.partition(".")
    groups = f"{int(whole or 0):,}".replace(",", ".")
    return sign + groups + ("," + fraction if fraction else "")


def european(frame: pd.DataFrame, headers: dict[str, str]) -> pd.DataFrame:
    """A canonical table (all text) as the European export writes it."""
    out = frame.copy()
    for column in out.columns:
        cells = out[column]
        if column in DATES:
            out[column] = cells.map(_date)
        elif column == "daily_dose_mg":  # every dose with its unit, in three spellings
            unit = [" mg", "mg", " mg/Tag"]
            out[column] = [_decimal(v) + unit[i % 3] if v else "" for i, v in enumerate(cells)]
        elif column == "adherence":
            out[column] = [f"{_decimal(f'{float(v) * 100:g}')}%" if v else "" for v in cells]
        elif column in DECIMALS:
            out[column] = cells.map(_decimal)
        elif column == "stop_reason":
            out[column] = cells.map(lambda v: STOP_REASONS.get(v, v))
        elif column == "role":
            out[column] = cells.map(lambda v: ROLES.get(v, v))
        elif column == "modality":
            out[column] = cells.map(lambda v: MODALITIES.get(v, v))
        elif column == "drug":
            out[column] = cells.map(lambda v: DRUGS.get(v, v))
        elif set(cells.unique()) <= {"", "true", "false"} and column != "subject_id":
            out[column] = cells.map(lambda v: BOOLEAN.get(v, v))
    return out.rename(columns=headers)


def read_canonical(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def write_european(frame: pd.DataFrame, headers: dict[str, str], path: Path) -> None:
    text = european(frame, headers).to_csv(sep=";", index=False, lineterminator="\r\n")
    path.write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))


def write_example(source: Path, out: Path) -> None:
    """The European export of the canonical cohort in `source` (treatments, subjects)."""
    out.mkdir(parents=True, exist_ok=True)
    write_european(
        read_canonical(source / "treatments.csv"), TREATMENT_HEADERS, out / "treatments.csv"
    )
    write_european(read_canonical(source / "subjects.csv"), SUBJECT_HEADERS, out / "subjects.csv")


if __name__ == "__main__":
    write_example(ROOT / "sample_data", EXAMPLE)
