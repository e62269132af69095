"""The `build:` section of a rule set: every decision `trdscreen build` makes when it
turns drug events and ratings into treatment courses, with its evidence tag.

Each value is written into the build's manifest with its tag and source, so a
reviewer sees which of them are sourced and which are project defaults.
Evidence: trd-reference F (Fife 2018 eras [V]; CMS128 [S]) and the conventions
of OMOP drug eras and OHDSI TreatmentPatterns as issue 23 cites them [S];
[U] marks a project default to review.
"""

from __future__ import annotations

from datetime import date

from pydantic import Field

from trdscreen.criterion import RuleModel


class RatingWindows(RuleModel):
    """Which ratings judge a course: the same instrument at both ends."""

    start_before_days: int = Field(30, ge=0, le=365)
    start_after_days: int = Field(7, ge=0, le=90)
    end_within_days: int = Field(14, ge=0, le=90)
    min_days_between: int = Field(14, ge=1, le=365)
    screening_within_days: int = Field(28, ge=0, le=365)
    ADDED_LATER = {"screening_within_days": (28, ())}  # 0.8.7


class BuildRules(RuleModel):
    """How `trdscreen build` makes courses (defaults tagged in BUILD_TAGS)."""

    gap_days: int = Field(30, ge=0, le=365)
    next_issue_cap_days: int = Field(90, ge=1, le=366)
    combination_window_days: int = Field(30, ge=1, le=365)
    max_days_supply: int = Field(183, ge=1, le=3660)
    placeholder_dates: tuple[date, ...] = (date(1900, 1, 1), date(2037, 7, 7))
    procedure_gap_days: int = Field(30, ge=1, le=365)
    episode_gap_days: int = Field(182, ge=1, le=3660)
    washout_days: int = Field(365, ge=0, le=3660)
    diagnosis_before_days: int = Field(30, ge=0, le=365)
    diagnosis_after_days: int = Field(180, ge=0, le=730)
    ratings: RatingWindows = RatingWindows()


BUILD_TAGS: dict[str, tuple[str, str]] = {
    "gap_days": (
        "S",
        "events of one generic whose supply gap is at most this many days are one course "
        "(OMOP drug era persistence window; Fife 2018 AD eras, trd-reference F [V])",
    ),
    "next_issue_cap_days": (
        "U",
        "an event with no end date, days' supply or quantity lasts until the next issue of "
        "the drug, at most this many days",
    ),
    "combination_window_days": (
        "S",
        "a different drug that overlaps a course by at least this many days is an add-on "
        "(augmentation or combination), otherwise a switch (TreatmentPatterns)",
    ),
    "max_days_supply": (
        "U",
        "an event supplying more days than this is implausible and set aside",
    ),
    "placeholder_dates": (
        "U",
        "dates exports use for 'unknown': an event dated on one is set aside",
    ),
    "procedure_gap_days": (
        "U",
        "sessions of one procedure (ECT, rTMS, esketamine) at most this many days apart are "
        "one course, its session count the number of session days",
    ),
    "episode_gap_days": (
        "S",
        "a gap of more than this many days without any treatment course ends an episode: "
        "what follows is a new one (claims definitions of TRD allow gaps of up to 180 days "
        "between consecutive courses, psychiatrist.com TRD prevalence guide [S]; trd-reference "
        "F.4 '6 months' [U])",
    ),
    "washout_days": (
        "U",
        "an episode whose first treatment follows fewer days of observation than this may "
        "have begun before the records: left_censored (CMS128 uses 105 days [S])",
    ),
    "diagnosis_before_days": (
        "U",
        "the current episode needs a depression diagnosis from this many days before its "
        "first treatment ...",
    ),
    "diagnosis_after_days": (
        "U",
        "... to this many days after it; a diagnosis before the treatment starts the episode",
    ),
    "ratings.start_before_days": (
        "S",
        "a course's baseline is the rating nearest its start from this many days before",
    ),
    "ratings.start_after_days": ("S", "... to this many days after (the earlier wins a tie)"),
    "ratings.end_within_days": (
        "U",
        "a course's end rating is the one nearest its last day within this many days",
    ),
    "ratings.min_days_between": (
        "U",
        "... at least this many days after the baseline, on the same instrument",
    ),
    "ratings.screening_within_days": (
        "U",
        "a subject whose subjects row has a screening_date and no hamd_screening (or "
        "madrs_screening) gets the latest HAM-D17 (or MADRS) total rated from this many days "
        "before that date to it, never after the reference date",
    ),
}
"""Evidence tag and meaning of each build parameter (dotted key)."""


def parameters(rules: BuildRules, profile: str = "events") -> list[dict[str, object]]:
    """Every build parameter with its value, tag and meaning (the manifest's record); for
    `--profile courses`, which attaches ratings to given courses, the `ratings.` ones."""
    out = []
    for key, (tag, meaning) in BUILD_TAGS.items():
        if profile == "courses" and not key.startswith("ratings."):
            continue
        value: object = rules
        for part in key.split("."):  # attributes: a default the hash leaves out is here too
            value = getattr(value, part)
        if isinstance(value, tuple):
            value = [v.isoformat() if isinstance(v, date) else v for v in value]
        out.append({"key": key, "value": value, "tag": tag, "meaning": meaning})
    return out
