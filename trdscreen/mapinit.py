"""`trdscreen map init`: a commented site-map template proposed from an export.

It reads the export's headers and cells and proposes, for a person to check and edit:
the canonical column of each header (fuzzy, with the score), the CSV dialect, the date,
decimal, thousands, unit, percent and yes/no conventions the cells show, and the distinct
values of coded columns with a vocabulary value where one matches closely. Nothing it
proposes is applied until the file is passed to `--map`, and what it cannot decide (a
date that fits both day/month and month/day) it leaves commented out with the reason.
"""

from __future__ import annotations

import codecs
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from rapidfuzz import fuzz

from trdscreen.conventions import fitting_date_formats
from trdscreen.csvfile import BOMS, CsvOptions, checked_header, read_csv
from trdscreen.errors import InputError
from trdscreen.printable import printable
from trdscreen.resolve import CODED_COLUMNS
from trdscreen.rulefile import preset_dir, read_rule_file, resolve_rules
from trdscreen.schemas import SUBJECT_COLUMNS, TREATMENT_COLUMNS
from trdscreen.sources import find_inputs
from trdscreen.subjectcolumns import criteria_subject_columns

MIN_SCORE = 70
"""A header is proposed for a canonical column at this similarity (0-100) or above."""
SAMPLE_ROWS = 200_000
"""Rows read to detect conventions and distinct values (a template, not a screening)."""

SYNONYMS: dict[str, tuple[str, ...]] = {
    # English, German, French, Spanish names exports give the contract's columns
    "subject_id": ("subject", "subject id", "patient", "patient id", "pid", "mrn", "person id",
                   "patienten id", "patientennummer", "fallnummer", "id patient", "paciente"),
    "drug": ("drug", "drug name", "medication", "medicine", "substance", "agent", "wirkstoff",
             "medikament", "arzneimittel", "praeparat", "medicament", "farmaco", "medicamento"),
    "daily_dose_mg": ("dose", "daily dose", "dose mg", "mg per day", "tagesdosis", "dosis",
                      "dosierung", "dose journaliere", "dosis diaria"),
    "start_date": ("start", "start date", "begin", "started", "from", "beginn", "startdatum",
                   "anfang", "von", "debut", "date debut", "inicio", "fecha inicio"),
    "end_date": ("end", "end date", "stop", "stop date", "stopped", "to", "ende", "enddatum",
                 "bis", "fin", "date fin", "fecha fin"),
    "adherence": ("adherence", "compliance", "adhaerenz", "adharenz", "compliance rate",
                  "observance", "adherencia", "therapietreue"),
    "hamd_start": ("hamd start", "hamd baseline", "hamd before", "ham d start", "hamd beginn",
                   "hamd vorher", "hamd debut", "hamd inicio", "hdrs baseline"),
    "hamd_end": ("hamd end", "hamd final", "hamd after", "ham d end", "hamd ende",
                 "hamd nachher", "hamd fin", "hdrs end"),
    "improvement": ("improvement", "pct improvement", "verbesserung", "besserung",
                    "amelioration", "mejoria"),
    "stop_reason": ("stop reason", "reason stopped", "reason", "discontinuation reason",
                    "absetzgrund", "grund", "abbruchgrund", "motif arret", "motivo"),
    "role": ("role", "therapy role", "rolle", "augmentation", "add on", "rol"),
    "modality": ("modality", "treatment type", "modalitaet", "modalitat", "behandlungsart",
                 "therapieform", "modalite", "modalidad"),
    "sessions": ("sessions", "session count", "sitzungen", "anzahl sitzungen", "seances",
                 "sesiones"),
    "dose_unit": ("dose unit", "unit", "dosiseinheit", "einheit", "unite", "unidad"),
    "dose_every_days": ("dose every days", "dosing interval", "interval days",
                        "dosisintervall tage", "dosisintervall", "intervalle"),
    "lithium_level": ("lithium level", "serum lithium", "lithiumspiegel", "lithium serum",
                      "lithiemie", "litemia"),
    "hamd_version": ("hamd version", "hamd items", "ham d version", "hamd-version"),
    "madrs_start": ("madrs start", "madrs baseline", "madrs beginn", "madrs debut"),
    "madrs_end": ("madrs end", "madrs final", "madrs ende", "madrs fin"),
    "hamd_lowest": ("hamd lowest", "hamd nadir", "hamd minimum", "hamd best", "hdrs lowest"),
    "madrs_lowest": ("madrs lowest", "madrs nadir", "madrs minimum", "madrs best"),
    "atc_code": ("atc", "atc code", "atc-code"),
    "birth_date": ("birth date", "date of birth", "dob", "born", "geburtsdatum", "geburtstag",
                   "date naissance", "fecha nacimiento"),
    "age": ("age", "age years", "alter", "edad"),
    "sex": ("sex", "gender", "geschlecht", "sexe", "sexo"),
    "diagnosis": ("diagnosis", "diagnose", "diagnostic", "diagnostico", "icd", "icd10"),
    "diagnoses": ("diagnoses", "diagnosen", "all diagnoses", "comorbidities"),
    "episode_start": ("episode start", "current episode start", "episode onset",
                      "episodenbeginn", "beginn episode", "debut episode", "inicio episodio"),
    "screening_date": ("screening date", "screening", "visit date", "screeningdatum",
                       "screening datum", "date screening", "fecha cribado"),
    "hamd_screening": ("hamd screening", "hamd at screening", "screening hamd",
                       "hamd aktuell", "hamd inclusion"),
    "madrs_screening": ("madrs screening", "madrs at screening", "madrs aktuell"),
    "bipolar": ("bipolar", "bipolar disorder", "bipolare stoerung", "bipolaire"),
    "psychotic_features": ("psychotic features", "psychosis", "psychotic",
                           "psychotische symptome", "psychotische merkmale", "psychotique"),
    "substance_use_disorder": ("substance use disorder", "sud", "substance use",
                               "substanzkonsumstoerung", "sucht", "abhaengigkeit"),
    "prior_ketamine_nonresponse": ("prior ketamine nonresponse", "ketamine nonresponse",
                                   "ketamin ohne ansprechen", "ketamin nonresponse"),
    "ect_current_episode": ("ect current episode", "ect this episode", "ect in episode",
                            "ekt in dieser episode", "ekt episode", "ect"),
    "ocd": ("ocd", "obsessive compulsive disorder", "zwangsstoerung", "toc"),
    "intellectual_disability": ("intellectual disability", "intelligenzminderung",
                                "geistige behinderung", "deficience intellectuelle"),
    "cluster_b_pd": ("cluster b pd", "cluster b personality disorder",
                     "cluster b persoenlichkeitsstoerung", "persoenlichkeitsstoerung cluster b"),
    "current_vns_or_dbs": ("current vns or dbs", "vns or dbs", "vns dbs", "vns oder dbs aktuell",
                           "vns dbs aktuell"),
}  # fmt: skip
"""Header spellings per canonical column, matched after lower-casing, folding umlauts
and accents and turning punctuation into spaces."""

YES_WORDS = ("yes", "y", "true", "t", "1", "ja", "j", "wahr", "oui", "o", "si", "sí", "x")
NO_WORDS = ("no", "n", "false", "f", "0", "nein", "falsch", "non")
STANDARD_WORDS = ("true", "t", "yes", "y", "1", "false", "f", "no", "n", "0")


def _folded(text: str) -> str:
    text = text.strip().lower()
    for umlaut, plain in (("ä", "ae"), ("ö", "oe"), ("ü", "ue"), ("ß", "ss")):
        text = text.replace(umlaut, plain)
    text = "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))
    return re.sub(r"[^a-z0-9]+", " ", text).strip()


def header_score(header: str, column: str) -> int:
    """How closely an export's header names a canonical column (0-100)."""
    spelled = _folded(header)
    names = (column.replace("_", " "), *SYNONYMS.get(column, ()))
    return int(max(fuzz.ratio(spelled, _folded(name)) for name in names))


def propose_columns(headers: list[str], canonical: list[str]) -> dict[str, tuple[str, int]]:
    """Each header's canonical column and score, one header per column, best pairs first;
    a header with no column at MIN_SCORE or above is left out."""
    pairs = sorted(
        ((header_score(h, c), i, c) for i, h in enumerate(headers) for c in canonical),
        key=lambda p: (-p[0], p[1], canonical.index(p[2])),
    )
    taken: dict[str, tuple[str, int]] = {}
    used: set[str] = set()
    for score, index, column in pairs:
        header = headers[index]
        if score < MIN_SCORE or header in taken or column in used:
            continue
        taken[header] = (column, score)
        used.add(column)
    return taken


@dataclass
class Table:
    """One export table as read for the template: its headers and cells as text."""

    name: str
    path: Path
    headers: list[str]
    cells: pa.Table
    options: CsvOptions | None  # CSV only
    bom: bool = False
    columns: dict[str, tuple[str, int]] = field(default_factory=dict)

    def proposed(self, column: str) -> list[str]:
        return [h for h, (c, _) in self.columns.items() if c == column]


def _sniffed(path: Path) -> tuple[CsvOptions, bool]:
    with open(path, "rb") as handle:
        head = handle.read(1 << 16)
    for mark, encoding in BOMS.items():
        if head.startswith(mark):
            return CsvOptions(encoding=encoding), True
    bom = head.startswith(codecs.BOM_UTF8)
    try:
        text = head.decode("utf-8-sig")
        encoding = "utf-8"
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 4:  # not just a character cut by the read
            text, encoding = head.decode("cp1252", errors="replace"), "cp1252"
        else:
            text, encoding = head[: exc.start].decode("utf-8-sig"), "utf-8"
    lines = [line for line in text.splitlines()[:20] if line.strip()]
    best, delimiter = -1, ","
    for candidate in (";", ",", "\t", "|"):
        counts = [line.count(candidate) for line in lines]
        if counts and counts[0] > 0 and len(set(counts[: len(counts) - 1 or 1])) == 1:
            if counts[0] > best:
                best, delimiter = counts[0], candidate
    return CsvOptions(encoding=encoding, delimiter=delimiter), bom


def read_table(path: Path, name: str) -> Table:
    """An export's headers and (the first SAMPLE_ROWS of its) cells, all as text."""
    if path.suffix.lower() in (".parquet", ".pq"):
        try:
            parquet = pq.ParquetFile(path)
            batch = next(parquet.iter_batches(batch_size=SAMPLE_ROWS), None)
        except (pa.ArrowInvalid, OSError) as exc:
            raise InputError(
                f"{path}: not a readable Parquet file ({type(exc).__name__})"
            ) from None
        table = (
            pa.Table.from_batches([batch])
            if batch is not None
            else parquet.schema_arrow.empty_table()
        )
        text = pa.table({n: _as_text(table[n]) for n in table.column_names})
        return Table(name, path, list(table.column_names), text, None)
    options, bom = _sniffed(path)
    header = checked_header(path, options)
    table = read_csv(path, header, options).slice(0, SAMPLE_ROWS)
    return Table(name, path, header, table, options, bom)


def _as_text(column: pa.ChunkedArray) -> pa.ChunkedArray:
    if pa.types.is_dictionary(column.type):
        column = column.cast(column.type.value_type)
    try:
        return column.cast(pa.string())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return pa.chunked_array([pa.nulls(len(column), pa.string())])


def _distinct(table: Table, header: str) -> list[str]:
    text = pc.utf8_trim_whitespace(table.cells[header].cast(pa.string()))
    values = pc.unique(pc.drop_null(text)).to_pylist()
    return sorted(v for v in values if v != "")


# --------------------------------------------------------------------------- conventions


_UNIT = re.compile(r"^[+-]?[\d.,' \u00a0]*\d\s*([^\d\s%][^\d%]*?)\s*$")
_NUMBERISH = re.compile(r"^[+-]?[\d.,' \u00a0]*\d[^\d]*$")


@dataclass
class Found:
    """Conventions seen in the cells, with where they were seen."""

    dates: dict[str, list[str]] = field(default_factory=dict)  # header -> fitting formats
    date_values: list[str] = field(default_factory=list)
    comma_decimal: list[str] = field(default_factory=list)
    dot_decimal: list[str] = field(default_factory=list)
    thousands_dot: list[str] = field(default_factory=list)
    units: dict[str, Counter] = field(default_factory=dict)  # canonical column -> units
    percent: list[str] = field(default_factory=list)  # canonical columns
    yes: set[str] = field(default_factory=set)
    no: set[str] = field(default_factory=set)
    boolean_headers: list[str] = field(default_factory=list)


_DATE_KINDS = {n for specs in (TREATMENT_COLUMNS, SUBJECT_COLUMNS)
               for n, s in specs.items() if s.kind == "date"}  # fmt: skip
_NUMBER_KINDS = {n for specs in (TREATMENT_COLUMNS, SUBJECT_COLUMNS)
                 for n, s in specs.items() if s.kind in ("float", "int")}  # fmt: skip
_BOOL_KINDS = {n for specs in (TREATMENT_COLUMNS, SUBJECT_COLUMNS)
               for n, s in specs.items() if s.kind == "bool"}  # fmt: skip


def detect(tables: list[Table], criteria_columns: set[str]) -> Found:
    found = Found()
    for table in tables:
        for header, (column, _) in table.columns.items():
            values = _distinct(table, header)
            if not values:
                continue
            if column in _DATE_KINDS:
                dated = [v for v in values if not re.match(r"^\d{4}-\d{2}-\d{2}$", v)]
                if dated:
                    found.dates[header] = fitting_date_formats(pa.array(dated, pa.string()))
                    found.date_values += dated
            elif column in _NUMBER_KINDS:
                _numbers(found, column, header, values)
            elif column in _BOOL_KINDS or column in criteria_columns:
                lower = {v.lower() for v in values}
                if lower <= set(YES_WORDS) | set(NO_WORDS):
                    found.yes |= {v for v in values if v.lower() in YES_WORDS}
                    found.no |= {v for v in values if v.lower() in NO_WORDS}
                    found.boolean_headers.append(header)
    return found


def _numbers(found: Found, column: str, header: str, values: list[str]) -> None:
    for value in values:
        bare = value
        if bare.endswith("%"):
            if column not in found.percent:
                found.percent.append(column)
            bare = bare[:-1].strip()
        unit = _UNIT.match(bare)
        if unit and not bare.replace(".", "").replace(",", "").strip("+-").isdigit():
            found.units.setdefault(column, Counter())[unit.group(1).strip()] += 1
            bare = bare[: unit.start(1)].strip()
        if re.match(r"^[+-]?\d{1,3}(\.\d{3})+(,\d+)?$", bare):
            found.thousands_dot.append(header)
            if "," in bare:
                found.comma_decimal.append(header)
        elif re.match(r"^[+-]?\d*,\d+$", bare):
            found.comma_decimal.append(header)
        elif re.match(r"^[+-]?\d*\.\d+$", bare):
            found.dot_decimal.append(header)


# --------------------------------------------------------------------------- template


def _q(text: str) -> str:
    """A YAML scalar, quoted where plain would not read back as this text; control
    characters as YAML escapes (printable, and read back as the same text)."""
    if re.match(r"^[A-Za-z][A-Za-z0-9 _()\-/äöüÄÖÜß.]*$", text) and text.lower() not in (
        "yes", "no", "true", "false", "on", "off", "y", "n", "null",
    ):  # fmt: skip
        return text
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{printable(escaped)}"'


def _names(headers: list[str]) -> str:
    """Headers for a comment: printable, on one line."""
    return ", ".join(printable(h) for h in headers)


def _columns_section(table: Table, canonical: list[str]) -> list[str]:
    lines = [f"{table.name}:  # {table.path.name}: header -> canonical column (score 0-100)"]
    for header in table.headers:
        if header in table.columns:
            column, score = table.columns[header]
            note = "" if score == 100 else f"  # score {score}: check"
            lines.append(f"  {_q(header)}: {column}{note}")
        else:
            best = max(canonical, key=lambda c: header_score(header, c))
            lines.append(
                f"  # {_q(header)}: ?  # no match (closest: {best}, score "
                f"{header_score(header, best)}); map it or leave it out"
            )
    return lines


def _active(lines: list[str]) -> bool:
    return any(not line.lstrip().startswith("#") for line in lines)


def _block(indent: str, key: str, entries: list[str]) -> list[str]:
    """`key:` over its entries; commented out when every entry is, so the YAML never
    holds an empty key (which a map would refuse)."""
    return [f"{indent}{'' if _active(entries) else '# '}{key}:", *entries] if entries else []


def _date_lines(found: Found) -> list[str]:
    fits = [set(f) for f in found.dates.values()]
    if not fits:
        return []
    common = set.intersection(*fits)
    ordered = [f for f in next(iter(found.dates.values())) if f in common]
    columns = _names(list(found.dates))
    if len(ordered) == 1:
        return [f'    dates: ["{ordered[0]}"]  # the only format every date of {columns} fits']
    if ordered:
        return [
            f'    # dates: ["{ordered[0]}"]  # CHOOSE: {" and ".join(ordered)} all fit '
            f"every date of {columns}; only you know which the export uses"
        ]
    return [f"    # dates: ?  # no one format fits every date of {columns}"]


def _formats_section(found: Found) -> list[str]:
    every = _date_lines(found)
    if found.comma_decimal and found.dot_decimal:
        every.append(
            "    # decimal: ?  # both 1,5 and 1.5 appear "
            f"({_names(sorted(set(found.comma_decimal + found.dot_decimal)))}): check"
        )
    elif found.comma_decimal:
        every.append(f'    decimal: ","  # seen in {_names(sorted(set(found.comma_decimal)))}')
    if found.thousands_dot and not found.dot_decimal:
        every.append(f'    thousands: "."  # seen in {_names(sorted(set(found.thousands_dot)))}')
    if any(w.lower() not in STANDARD_WORDS for w in found.yes | found.no):
        yes = ", ".join(_q(w) for w in sorted(found.yes))
        no = ", ".join(_q(w) for w in sorted(found.no))
        every.append(
            f'    booleans: {{"yes": [{yes}], "no": [{no}]}}  # seen in '
            f"{_names(found.boolean_headers)}"
        )
    lines = _block("  ", "all", every)
    for column in sorted(set(found.units) | set(found.percent)):
        entries = []
        if column in found.units:
            entries.append(f"    units: [{', '.join(_q(u) for u in sorted(found.units[column]))}]")
        if column in found.percent:
            entries.append("    percent: true  # cells end in %: 60% is 0.6")
        lines += _block("  ", column, entries)
    return _block("", "formats", lines) or ["# formats: none seen beyond the defaults"]


def _values_section(tables: list[Table]) -> list[str]:
    lines: list[str] = []
    for table in tables:
        for header, (column, _) in table.columns.items():
            vocabulary = CODED_COLUMNS.get(column)
            if vocabulary is None or column == "hamd_version":
                continue
            values = [v for v in _distinct(table, header) if v.lower() not in vocabulary]
            if not values:
                continue
            entries = []
            for value in values:
                best = max(vocabulary, key=lambda w: fuzz.ratio(_folded(value), w))
                score = int(fuzz.ratio(_folded(value), best.replace("_", " ")))
                if score >= MIN_SCORE:
                    entries.append(f"    {_q(value)}: {best}  # score {score}: check")
                else:
                    entries.append(f"    # {_q(value)}: ?  # no close vocabulary word")
            lines += _block("  ", column, entries)
            lines[-len(entries) - 1] += (
                f"  # values of {printable(header)}; the vocabulary: {', '.join(vocabulary)}"
            )
    return _block("", "values", lines)


def template(export: Path, subjects: Path | None = None, rules: str | None = None) -> str:
    """The commented site map proposed for an export (and its subjects table)."""
    treatments_path, subjects_path = find_inputs(export, subjects)
    if rules is not None:
        criteria = set(criteria_subject_columns(read_rule_file(resolve_rules(rules))[0]))
    else:  # any shipped preset's criteria columns
        criteria = {
            c for p in sorted(preset_dir().glob("*.yaml"))
            for c in criteria_subject_columns(read_rule_file(p)[0])
        }  # fmt: skip
    tables = [read_table(treatments_path, "treatments")]
    canonical = {"treatments": list(TREATMENT_COLUMNS)}
    if subjects_path is not None:
        tables.append(read_table(subjects_path, "subjects"))
        canonical["subjects"] = list(SUBJECT_COLUMNS) + sorted(criteria - set(SUBJECT_COLUMNS))
    for table in tables:
        table.columns = propose_columns(table.headers, canonical[table.name])
    found = detect(tables, criteria)
    lines = [
        "# Site map proposed by `trdscreen map init` from "
        f"{_names([t.path.name for t in tables])}.",
        "# Check every line, then screen with --map THIS_FILE. Nothing here is applied until",
        "# then, and anything an export does not match is an error, never a guess.",
        "# Lines starting with # are proposals that need your decision.",
        "",
    ]
    csv = [t for t in tables if t.options is not None]
    if csv:
        first = csv[0]
        assert first.options is not None
        shown = "\\t" if first.options.delimiter == "\t" else first.options.delimiter
        bom = " with a byte-order mark (read without declaring it)" if first.bom else ""
        lines += [
            "csv:",
            f'  delimiter: "{shown}"  # splits the header into {len(first.headers)} columns',
            f"  encoding: {first.options.encoding}  # decodes the file{bom}",
            "",
        ]
    for table in tables:
        lines += _columns_section(table, canonical[table.name]) + [""]
    lines += _formats_section(found) + [""]
    lines += _values_section(tables)
    lines += [
        "",
        "# drug_aliases:  # names the formulary does not know (`trdscreen validate` lists them)",
        "#   Site name: generic",
    ]
    return "\n".join(lines).rstrip() + "\n"
