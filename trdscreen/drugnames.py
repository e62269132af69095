"""Drug names as pharmacies and EHRs print them, normalized once per distinct name: case,
accents, strengths and units, dose forms, salts, brands in brackets, release and route
markers (kept as the formulation), the INN in German, French, Spanish and Italian, and WHO
ATC codes. Pure text functions; the formulary (`trdscreen.formulary`) looks the result up."""

from __future__ import annotations

import re
import unicodedata

# Release-formulation and route markers kept as an attribute of the course.
_FORMULATIONS = {
    "xr": "xr",
    "xl": "xl",
    "cr": "cr",
    "sr": "sr",
    "er": "er",
    "la": "la",
    "mr": "mr",
    "m/r": "mr",
    "odt": "odt",
    "extended release": "er",
    "modified release": "mr",
    "prolonged release": "er",
    "controlled release": "cr",
    "sustained release": "sr",
    "orally disintegrating": "odt",
    "orodispersible": "odt",
    "transdermal": "transdermal",
    "patch": "transdermal",
    "patches": "transdermal",
    "tts": "transdermal",
    "weekly": "weekly",
    "once weekly": "weekly",
    "once a week": "weekly",
    "retard": "er",
}


# Salt and hydrate names: dropped, the course is recorded against the base generic.
_SALTS = (
    "hydrochloride|hcl|hydrobromide|hbr|oxalate|succinate|maleate|mesylate|mesilate|sulfate|"
    "sulphate|besylate|besilate|fumarate|citrate|carbonate|sodium|tartrate|hemifumarate|"
    "hemihydrate|monohydrate|dihydrate|anhydrous|hydrogen|as"
)


# Salts whose dose differs from the base salt's for some drug (bupropion hydrobromide: 348 mg
# is about 300 mg of the hydrochloride): kept as a formulation word, so a formulary row's
# `formulation_minimums` can name it ("hydrobromide=348"); other salts are dropped.
DOSE_SALTS = {"hydrobromide": "hydrobromide", "hbr": "hydrobromide"}


_DOSE_SALT_RE = re.compile(r"\b(hydrobromide|hbr)\b")


# Dose forms and packaging words as pharmacies and EHRs print them: dropped.
_FORMS = (
    "tablets?|tabs?|capsules?|caps?|film[- ]coated|coated|gastro[- ]resistant|dispersible|"
    "effervescent|chewable|oral|solution|liquid|suspension|syrup|drops|sachets?|granules|"
    "injection|ampoules?|vials?|nasal|spray|hard|soft|generic|once daily|daily|pack|"
    # the same in German, French, Spanish and Italian exports
    "filmtabletten|tabletten|tablette|hartkapseln|kapseln|kapsel|comprimes?|comprimidos?|"
    "compresse|compressa|capsulas?|capsule|gelules?|solucion|soluzione|gotas|gocce|tropfen"
)


_UNIT = r"(?:mg|mcg|µg|ug|micrograms?|milligrams?|g|ml|%)"


_STRENGTH = re.compile(
    r"\b\d+(?:[.,]\d+)?\s*" + _UNIT + r"(?:\s*(?:/|per)\s*(?:\d+(?:[.,]\d+)?\s*)?"
    r"(?:ml|hrs?|hours?|h|day|d|dose|actuation|spray|24\s*h(?:rs?|ours?)?))?"
    r"|\b\d+(?:[.,]\d+)?\s*(?:/|per)\s*24\s*h(?:rs?|ours?)?\b"
)


_BARE_NUMBER = re.compile(r"(?<![\w.,-])\d+(?:[.,]\d+)?(?![\w.,-])")
_RELEASE_HOURS = re.compile(r"\b\d+\s*(?:hr|hrs|hour|hours)\b")
"""How long a release lasts, as RxNorm writes it ("24 HR Extended Release"): the
release marker that follows is the formulation; the hours are not part of the name."""


_SALT_RE = re.compile(rf"\b(?:{_SALTS})\b")


_FORMS_RE = re.compile(rf"(?<![\w-])(?:{_FORMS})(?![\w-])")


_FORM_RE = re.compile(
    r"(?<![\w-])("
    + "|".join(sorted((re.escape(k) for k in _FORMULATIONS), key=len, reverse=True))
    + r")(?![\w-])"
)


_BRACKETS = re.compile(r"\(([^()]*)\)|\[([^\[\]]*)\]")


_COMBINERS = re.compile(r"\s*(?:/|\+|\band\b|\bwith\b)\s*")


_SPACE = re.compile(r"\s+")


_TRIM = re.compile(r"^[\s.,;:()\-]+|[\s.,;:()\-]+$")


def _fold(text: str) -> str:
    """Lower case without accents (duloxétine -> duloxetine), one space between words."""
    decomposed = unicodedata.normalize("NFKD", str(text).strip().lower())
    plain = "".join(c for c in decomposed if not unicodedata.combining(c))
    return _SPACE.sub(" ", plain.replace("_", " "))


def normalize_name(raw: str) -> tuple[str, str]:
    """Return (normalized name, formulation) for one exported drug name.

    Lower-cases and drops accents, drops text in brackets ("(as hydrochloride)",
    a brand: "Escitalopram (Cipralex)"; `Formulary.match` tries a bracketed
    brand when the rest is unknown), strengths and units ("100mg",
    "37.5 mg/5 ml", "6 mg/24 hr"), salt and hydrate names, and dose forms
    ("tablets", "film-coated", "oral solution", ...), and takes release and
    route markers (XR, XL, CR, SR, ER, LA, MR, modified- or prolonged-release,
    ODT, orodispersible, transdermal, patch) off as the formulation. A salt whose
    dose differs for some drug (hydrobromide) is a formulation word too, after the
    release marker ("xl hydrobromide"). Combination separators ("+", "and", "with", "/") become "/".
    """
    text = _fold(raw)
    salt = _DOSE_SALT_RE.search(text)  # also "(as hydrobromide)", before brackets go
    text = _BRACKETS.sub(" ", text)
    text = _STRENGTH.sub(" ", text)
    text = _RELEASE_HOURS.sub(" ", text)
    text = _BARE_NUMBER.sub(" ", text)  # a strength printed without its unit ("Zoloft 100")
    text = re.sub(r"\b(modified|prolonged|extended|controlled|sustained)[- ]release\b",
                  r"\1 release", text)  # fmt: skip
    formulation = ""
    match = _FORM_RE.search(text)
    if match:
        formulation = _FORMULATIONS[match.group(1)]
        text = _FORM_RE.sub(" ", text)
    text = _FORMS_RE.sub(" ", text)
    text = _SALT_RE.sub(" ", text)
    text = _COMBINERS.sub("/", _SPACE.sub(" ", text))
    text = _TRIM.sub("", _SPACE.sub(" ", text))
    text = "/".join(part for part in (p.strip() for p in text.split("/")) if part)
    if salt is not None:
        formulation = f"{formulation} {DOSE_SALTS[salt.group(1)]}".strip()
    return text, formulation


def joined_formulations(*formulations: str) -> str:
    """Formulation words of several sources, each once, in order ("xl" + "hydrobromide")."""
    words = dict.fromkeys(w for f in formulations for w in f.split())
    return " ".join(words)


def bracketed(raw: str) -> list[str]:
    """The texts in brackets of an exported name (a brand: "Escitalopram (Cipralex)")."""
    return [a or b for a, b in _BRACKETS.findall(_fold(raw))]


ATC_PREFIX = "ATC "
"""The generic of a drug known by its ATC code only (e.g. "ATC C10AA05")."""


DEPRESSION_ATC = ("N06A", "N05A", "H03AA02")
"""ATC groups of depression treatments (antidepressants, antipsychotics and lithium,
liothyronine): a code there that the table lacks is an unknown drug, never "not counted"."""


_ATC = re.compile(r"^[A-Z](\d\d([A-Z]([A-Z](\d\d)?)?)?)?$")


def normalize_atc(value: object) -> str | None:
    """An ATC code in upper case without spaces, or None when empty or not an ATC code."""
    if value is None or (isinstance(value, float) and value != value):
        return None
    code = str(value).strip().upper().replace(" ", "")
    return code if code and _ATC.match(code) and len(code) >= 4 else None


_LATIN = (("ph", "f"), ("th", "t"), ("y", "i"))


def inn_variants(generic: str) -> set[str]:
    """Spellings of an English INN in German, Spanish and Italian (French is the English
    spelling once accents are dropped): sertraline -> sertralin, sertralina;
    amitriptyline -> amitriptylin, amitriptilina; phenelzine -> fenelzina;
    aripiprazole -> aripiprazol, aripiprazolo; lithium -> litio. Combination products
    get none. A rule, not a dictionary: names it does not cover are for
    `formulary.aliases`."""
    if "/" in generic or " " in generic:
        return set()
    variants: set[str] = set()
    if generic.endswith("e"):
        variants.add(generic[:-1])  # German: Sertralin, Duloxetin, Aripiprazol
        romance = generic[:-1] + "a"  # Spanish and Italian: sertralina
    elif generic.endswith("ium"):
        romance = generic[:-3] + "io"  # lithium -> litio
    elif generic[-1] in "nm":
        romance = generic + "a"  # mianserin -> mianserina, citalopram stays below
        variants.add(generic + "e")  # Italian: bupropione
    else:
        romance = generic
    if generic.endswith("ole"):
        romance = generic[:-1]  # Spanish aripiprazol
        variants.add(generic[:-1] + "o")  # Italian aripiprazolo
    for old, new in _LATIN:
        romance = romance.replace(old, new)
    variants.add(romance)
    if generic.endswith("am"):  # citalopram, escitalopram: the same in every language
        variants.discard(generic + "a")
        variants.discard(generic + "e")
    variants.discard(generic)
    return variants
