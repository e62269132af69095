"""Diagnoses as exports record them, resolved to the categories criteria need.

The subjects table's `diagnosis` column (and an optional `diagnoses` column of
`;`-separated entries) may hold ICD-10 codes (F32.1, F33), ICD-11 codes (6A70,
6A71), SNOMED CT concept ids, DSM-5 names or common free text ("MDD,
recurrent", "major depression"). Each distinct entry is resolved once by a
bundled vocabulary to `mdd`, `bipolar`, `schizoaffective`,
`psychotic_disorder` or `other`, or stays unresolved. Two derived subject
columns follow, for criteria:

- `mdd`: true when an entry is major depressive disorder; false when every
  entry resolves and none is; unknown when there is no entry or one does not
  resolve;
- `bipolar_or_schizoaffective`: true when the `bipolar` flag is true or an
  entry is bipolar or schizoaffective disorder; false when the flag is false
  and no entry is or may be; unknown otherwise (a recorded MDD diagnosis does
  not stand in for a missing bipolar flag).

Text is read with its clause: a negated mention ("no MDD"), one of another person
or an uncertain one ("possible MDD") resolves nothing; of bipolar or
schizoaffective disorder ("r/o bipolar", "bipolar disorder ruled out", "no history
of mania", "family history of bipolar disorder") it makes
`bipolar_or_schizoaffective` unknown, whatever a false flag says: never false on
a cue that may have been read wrongly.

The vocabulary is a project table [U]: ICD-10 F32/F33, F31, F25, F20-F29 and
ICD-11 6A70/6A71, 6A60-6A62, 6A21, 6A20-6A2Z as their chapters define them,
and the SNOMED CT concepts named below.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from trdscreen.tristate import or_flag

CATEGORIES = ("mdd", "bipolar", "schizoaffective", "psychotic_disorder", "other")
DERIVED_COLUMNS = ("mdd", "bipolar_or_schizoaffective")
"""Subject columns derived here that criteria may name."""
SOURCE_COLUMNS = ("diagnosis", "diagnoses")

_ICD10 = [  # (code prefix, category), longest prefix first
    ("F32", "mdd"),
    ("F33", "mdd"),
    ("F31", "bipolar"),
    ("F30", "bipolar"),
    ("F340", "bipolar"),  # cyclothymia: a bipolar disorder in DSM-5 and ICD-11 (6A62)
    ("F25", "schizoaffective"),
    ("F2", "psychotic_disorder"),
    ("F", "other"),
]
_ICD11 = [
    ("6A70", "mdd"),
    ("6A71", "mdd"),
    ("6A60", "bipolar"),
    ("6A61", "bipolar"),
    ("6A62", "bipolar"),
    ("6A21", "schizoaffective"),
    ("6A2", "psychotic_disorder"),
    ("6", "other"),
]
_SNOMED = {
    "370143000": "mdd",  # major depressive disorder
    "36923009": "mdd",  # major depression, single episode
    "66344007": "mdd",  # recurrent major depression
    "13746004": "bipolar",  # bipolar disorder
    "68890003": "schizoaffective",  # schizoaffective disorder
    "58214004": "psychotic_disorder",  # schizophrenia
}
_ICD10_CM: dict[str, str | None] = {  # US codes under F32 that are no depressive episode
    "F3281": "other",  # premenstrual dysphoric disorder (replaced F32.8 in FY2018)
    "F3289": "other",  # other specified depressive episodes (DSM-5 other specified)
    "F32A": None,  # depression, unspecified: MDD or not, the chart must say
}
_TEXT: list[tuple[str, str | None]] = [  # (pattern, category), first match wins
    (r"schizo ?affective", "schizoaffective"),
    (
        r"bipolar|\bbpad\b|manic[- ]?depress|\b(hypo)?mani[ac]\b|hypomanic|cyclothymi|"
        r"\bbp ?-?(i|ii|1|2)\b",
        "bipolar",
    ),
    (r"schizophren|psychotic disorder|\bpsychosis\b|delusional disorder", "psychotic_disorder"),
    (r"persistent depressive|dysthymi", "other"),
    # DSM-5 and ICD-10 depressive disorders that are not MDD, though their names hold
    # "depressive disorder": mixed anxiety and depressive disorder (F41.2), recurrent
    # brief depressive disorder (F38.1), substance- or medication-induced, due to another
    # medical condition, other specified; premenstrual dysphoric, disruptive mood
    # dysregulation. Unspecified depressive disorder is left unresolved.
    (
        r"mixed anxiety and depress|brief depress|induced (depress|mood)|due to (another|a general) "
        r"medical|other specified depress|premenstrual dysphori|disruptive mood",
        "other",
    ),
    (
        r"unspecified depress|depression,? unspecified|depression nos\b|"
        r"depressive disorder,? (nos\b|not otherwise specified)",  # DSM-IV 311: not MDD
        None,
    ),
    (
        r"\bmdd\b|major depress|recurrent depress|depressive episode|unipolar depress|"
        r"single episode depress|depressive disorder|\bmde\b",
        "mdd",
    ),
]
# Free text states what a patient does not have, or may have, as often as what they have:
# "no history of mania", "bipolar disorder ruled out", "r/o bipolar", "family history of
# bipolar disorder". A mention is read only where nothing in its clause (up to the nearest
# comma, semicolon, colon, full stop or bracket) qualifies it; a negated, uncertain or
# another person's mention is passed over (the next pattern may still match: "MDD, no
# mania" is MDD, "no MDD" is no diagnosis). Of bipolar or schizoaffective disorder such a
# mention makes the exclusion unknown (needs review), never not met: the cues are a
# project list [U], not a validated NegEx, and a cue read wrongly must not enrol a
# patient who has the disorder.
_CLAUSE = re.compile(r"[,;:.()\[\]\n]|\bbut\b")
_NEGATED_BEFORE = re.compile(  # the cue right before the mention, or before a few fillers
    r"\b(no|not|non|without|denies|denied|negative for|free of|absence of|never|nor)"
    r"(?:[\s-]+(?:any|known|prior|past|previous|personal|h/o|hx|history|evidence|signs?|"
    r"symptoms?|episodes?|diagnosis|dx|of|for|a|an))*[\s-]*$"
)
_RELATIVE = re.compile(
    r"\b(family history|family hx|fhx?|mother|father|sibling|brother|sister|parent|"
    r"relative|aunt|uncle|cousin|grand\w*)\b"
)
_UNCERTAIN_BEFORE = re.compile(
    r"(\br/o\b|\brule[- ]?out\b|\bpossible\b|\bpossibly\b|\bprobable\b|\bprobably\b|"
    r"\bsuspected\b|\bsuspect\b|\bquery\b|\bquestionable\b|\blikely\b|\bprovisional\b|"
    r"\bdifferential\b|\?)"
)
_UNCERTAIN_AFTER = re.compile(
    r"(\?|\bto be (ruled out|excluded)\b|\bnot (yet )?(ruled out|excluded)\b|\bsuspected\b|"
    r"\bprovisional\b|\bpossible\b|\bquery\b)"
)
_NEGATED_AFTER = re.compile(r"\b(ruled out|excluded|not confirmed|denied|negative)\b")
_WORDS_BEFORE = 5
"""A cue counts when it is among the last few words before the mention."""


def _qualified(text: str, match: re.Match) -> bool:
    """Whether the mention's clause makes it uncertain, negated or another person's."""
    before = _CLAUSE.split(text[: match.start()])[-1]
    before = " ".join(before.split()[-_WORDS_BEFORE:])
    after = _CLAUSE.split(text[match.end() :])[0]
    return bool(
        _UNCERTAIN_BEFORE.search(before) or _UNCERTAIN_AFTER.search(after)
        or _NEGATED_BEFORE.search(before) or _NEGATED_AFTER.search(after)
        or _RELATIVE.search(before)
    )  # fmt: skip


_ICD10_RE = re.compile(r"^([A-Z])(\d\d)(?:\.?\w*)?$")
_ICD11_RE = re.compile(r"^(\d[A-Z]\w\d)(?:\.?\w*)?$")


def classify(entry: str) -> str | None:
    """The category of one diagnosis entry (a code or text), or None when unresolved."""
    return resolve(entry)[0]


EXCLUDING = ("bipolar", "schizoaffective")
"""The categories the `bipolar_or_schizoaffective` column stands for."""


def resolve(entry: str) -> tuple[str | None, bool]:
    """(the category of one diagnosis entry or None when unresolved, whether its text
    mentions bipolar or schizoaffective disorder with a qualifier: "r/o bipolar", "no
    history of mania", "family history of bipolar disorder")."""
    text = " ".join(str(entry).split())
    if not text:
        return None, False
    code = text.upper().replace(" ", "")
    if _ICD10_RE.match(code):
        bare = code.replace(".", "")
        if bare in _ICD10_CM:
            return _ICD10_CM[bare], False
        for prefix, category in _ICD10:
            if bare.startswith(prefix):
                return category, False
        return "other", False
    if _ICD11_RE.match(code):
        for prefix, category in _ICD11:
            if code.startswith(prefix):
                return category, False
    if code.isdigit():
        return _SNOMED.get(code), False
    lowered = text.lower()
    possible = False
    for pattern, named in _TEXT:
        for match in re.finditer(pattern, lowered):
            if not _qualified(lowered, match):
                return named, possible
            # A qualified mention of an excluding disorder (negated, a relative's, or
            # uncertain) never clears the patient: a cue read wrongly ("non-compliant
            # bipolar patient") would enrol one with bipolar disorder. It is unknown.
            possible |= named in EXCLUDING
    return None, possible


def derived_columns(subjects: pd.DataFrame) -> pd.DataFrame:
    """`mdd` and `bipolar_or_schizoaffective` per subject row (nullable booleans), from the
    diagnosis columns present (entries resolved once per distinct text)."""
    n = len(subjects)
    has = {c: np.zeros(n, dtype=bool) for c in CATEGORIES}
    possible = np.zeros(n, dtype=bool)  # a qualified mention of an excluding category
    entries = np.zeros(n, dtype=np.int64)
    unresolved = np.zeros(n, dtype=bool)
    for column in SOURCE_COLUMNS:
        if column not in subjects.columns:
            continue
        codes, uniques = pd.factorize(subjects[column])
        for index, value in enumerate(uniques):
            parts = [p for p in str(value).split(";") if p.strip()]
            rows = codes == index
            entries[rows] += len(parts)
            for part in parts:
                category, uncertain = resolve(part)
                possible[rows] |= uncertain
                if category is None:
                    unresolved[rows] = True
                else:
                    has[category][rows] = True
    mdd = pd.array(np.where(has["mdd"], True, False), dtype="boolean")
    mdd[~has["mdd"] & ((entries == 0) | unresolved)] = pd.NA
    excluding = has["bipolar"] | has["schizoaffective"]
    either = or_flag(excluding, possible, subjects.get("bipolar"))
    return pd.DataFrame(
        {"mdd": mdd, "bipolar_or_schizoaffective": either, UNCERTAIN_EXCLUSION: possible}
    )


UNCERTAIN_EXCLUSION = "bipolar_or_schizoaffective_uncertain"
"""A derived column beside the criteria's (none may name it): whether a diagnosis entry
mentions bipolar or schizoaffective disorder with a qualifier, so `to_resolve` can say so."""
