"""The diagnosis vocabulary: each entry is the category its coding system defines."""

from __future__ import annotations

import pandas as pd
import pytest

from trdscreen.diagnoses import classify, derived_columns


@pytest.mark.parametrize(
    ("entry", "category"),
    [
        ("F32.1", "mdd"),  # ICD-10 depressive episode
        ("F33", "mdd"),  # ICD-10 recurrent depressive disorder
        ("f33.2", "mdd"),
        ("F31.4", "bipolar"),
        ("F30.1", "bipolar"),  # manic episode
        ("F25.0", "schizoaffective"),
        ("F20.0", "psychotic_disorder"),
        ("F41.1", "other"),  # anxiety: a known code that is not MDD
        ("6A70", "mdd"),  # ICD-11 single episode depressive disorder
        ("6A71.1", "mdd"),  # ICD-11 recurrent depressive disorder
        ("6A60", "bipolar"),
        ("6A21", "schizoaffective"),
        ("6A20", "psychotic_disorder"),
        ("370143000", "mdd"),  # SNOMED CT major depressive disorder
        ("66344007", "mdd"),
        ("13746004", "bipolar"),
        ("68890003", "schizoaffective"),
        ("MDD, recurrent", "mdd"),
        ("Major depressive disorder, single episode", "mdd"),
        ("recurrent depressive disorder", "mdd"),
        ("Bipolar II disorder", "bipolar"),
        ("schizoaffective disorder, depressive type", "schizoaffective"),
        ("persistent depressive disorder", "other"),  # dysthymia is not MDD
        # Named "depressive disorder" but not MDD (each resolved to MDD before 0.8.6, so an
        # MDD criterion was met): ICD-10 F41.2 and F38.1, DSM-5's other depressive disorders.
        ("mixed anxiety and depressive disorder", "other"),
        ("Recurrent brief depressive disorder", "other"),
        ("Substance/medication-induced depressive disorder", "other"),
        ("Depressive disorder due to another medical condition", "other"),
        ("Other specified depressive disorder", "other"),
        ("Unspecified depressive disorder", None),  # MDD or not: the chart must say
        ("Depression, unspecified", None),
        ("Single episode depressive disorder", "mdd"),  # ICD-11 6A70's title
        ("Anxiety and depression", None),  # not a diagnosis name: not guessed either way
        # ICD-10-CM codes under F32 that are no depressive episode (WHO ICD-10 has no
        # F32.81, F32.89 or F32.A): premenstrual dysphoric disorder, other specified, and
        # "depression, unspecified"; F32.9 is MDD, single episode, unspecified.
        ("F32.81", "other"),
        ("F32.89", "other"),
        ("F32.A", None),
        ("F32.9", "mdd"),
        # Bipolar disorders by other names (each unresolved before 0.8.6, so a subject
        # with MDD among its diagnoses and the bipolar flag false was not excluded):
        ("BPAD", "bipolar"),  # bipolar affective disorder
        ("hypomania", "bipolar"),
        ("manic-depressive illness", "bipolar"),
        ("cyclothymic disorder", "bipolar"),  # DSM-5 bipolar and related; ICD-11 6A62
        ("F34.0", "bipolar"),  # cyclothymia
        ("F34.1", "other"),  # dysthymia
        # Text read with its clause (0.8.8): a negated mention, or one of another person,
        # resolves nothing (of bipolar disorder it makes the exclusion unknown, below);
        # before, "no MDD" met the MDD criterion and "bipolar disorder ruled out" excluded.
        ("MDD, recurrent, bipolar disorder ruled out", "mdd"),
        ("no bipolar disorder, MDD", "mdd"),
        ("MDD, no history of mania", "mdd"),
        ("MDD without psychotic features", "mdd"),
        ("adjustment disorder, no MDD", None),
        ("major depression denied", None),
        ("family history of bipolar disorder", None),
        ("mother has bipolar disorder", None),
        ("non-bipolar depression", None),
        ("no improvement, bipolar II", "bipolar"),  # the cue is in another clause
        ("no response to lithium for bipolar disorder", "bipolar"),  # "no" governs response
        ("Non-compliant bipolar patient", "bipolar"),
        ("Bipolar disorder NOS", "bipolar"),  # "not otherwise specified" is no negation
        # An uncertain mention resolves nothing (of bipolar disorder, see below).
        ("MDD, r/o bipolar", "mdd"),
        ("possible MDD", None),
        ("bipolar?", None),
        # DSM-IV 311 "depressive disorder NOS" is not MDD (DSM-5: unspecified).
        ("Depressive disorder not otherwise specified", None),
        ("depressive disorder NOS", None),
        ("Romania", None),  # a word holding "mania" is not mania
        ("anxiety", None),
        ("", None),
        ("123", None),  # an unknown SNOMED id
    ],
)
def test_classify(entry, category):
    assert classify(entry) == category


def test_derived_columns_are_tri_state():
    subjects = pd.DataFrame(
        {
            "diagnosis": ["F33.1", "F25.0", None, "anxiety", "F33.1", "F32.0"],
            "diagnoses": [None, None, None, None, "F31.1; 6A71", None],
            "bipolar": pd.array([False, False, False, None, False, None], dtype="boolean"),
        }
    )
    derived = derived_columns(subjects)
    assert derived["mdd"].tolist() == [True, False, pd.NA, pd.NA, True, True]
    # bipolar flag OR-ed with a bipolar or schizoaffective diagnosis; unknown only when the
    # flag is missing and no diagnosis says so (row 6: MDD does not stand in for the flag)
    assert derived["bipolar_or_schizoaffective"].tolist() == [
        False,
        True,
        False,
        pd.NA,
        True,
        pd.NA,
    ]


@pytest.mark.parametrize(
    ("entry", "flag", "expected"),
    [
        # An uncertain mention of bipolar disorder makes the exclusion unknown whatever a
        # false flag says (a careless reading of "r/o" would clear the patient) ...
        ("MDD, r/o bipolar", False, None),
        ("MDD; possible hypomania", False, None),
        ("major depression, bipolar not excluded", False, None),
        # ... and so does a negated or a relative's mention: a cue read wrongly must not
        # enrol a patient with bipolar disorder, so no qualified mention clears one ...
        ("MDD, bipolar disorder ruled out", False, None),
        ("MDD, no history of mania", False, None),
        ("family history of bipolar disorder; MDD", False, None),
        # ... a true flag still decides, and a cue that governs another word is no cue.
        ("MDD, r/o bipolar", True, True),
        ("no response to lithium for bipolar disorder", False, True),
        ("MDD", False, False),
    ],
)
def test_uncertain_and_negated_mentions_of_bipolar_disorder(entry, flag, expected):
    subjects = pd.DataFrame({"diagnosis": [entry], "bipolar": pd.array([flag], dtype="boolean")})
    value = derived_columns(subjects)["bipolar_or_schizoaffective"][0]
    assert (None if pd.isna(value) else bool(value)) == expected
