"""`trdscreen synth`: deterministic, shaped as documented, and a valid input to `screen`."""

from __future__ import annotations

import json

import pyarrow.compute as pc
from typer.testing import CliRunner

from trdscreen.cli import app
from trdscreen.errors import ExitCode
from trdscreen.formulary import load_formulary
from trdscreen.synth import synthesize

runner = CliRunner()


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    for name, seed in (("a", 4), ("b", 4), ("c", 5)):
        result = runner.invoke(
            app,
            ["synth", "--n-subjects", "500", "--out", str(tmp_path / name), "--seed", str(seed)],
        )
        assert result.exit_code == ExitCode.OK, result.output
    for table in ("treatments.parquet", "subjects.parquet"):
        a, b, c = ((tmp_path / n / table).read_bytes() for n in "abc")
        assert a == b
        assert a != c


def test_shape_as_documented():
    cohort = synthesize(20_000, seed=1)
    t, s = (
        cohort.treatments.to_pandas(date_as_object=False),
        cohort.subjects.to_pandas(date_as_object=False),
    )
    per_subject = t.groupby("subject_id").size()
    # 3 to 6 courses each, every subject has a subjects row, mean near 4.25 (0.3/0.3/0.25/0.15).
    assert per_subject.between(3, 6).all()
    assert set(per_subject.index) == set(s["subject_id"])
    assert abs(per_subject.mean() - 4.25) < 0.05
    # Courses follow one another: each starts on or after the previous one ends.
    t = t.sort_values(["subject_id", "start_date"])
    same = t["subject_id"].eq(t["subject_id"].shift())
    gap = (t["start_date"] - t["end_date"].shift()).dt.days
    assert (gap[same & gap.notna()] >= 0).all()
    # Missing rates near the documented ones (dose 4 %, adherence 70 %, HAM-D start 35 %).
    assert abs(t["daily_dose_mg"].isna().mean() - 0.04) < 0.01
    assert abs(t["adherence"].isna().mean() - 0.70) < 0.02
    assert abs(t["hamd_start"].isna().mean() - 0.35) < 0.02


def test_names_resolve_except_the_misspelt_share_and_doses_sit_on_the_minimum():
    cohort = synthesize(20_000, seed=2)
    formulary = load_formulary()
    names = cohort.treatments["drug"]
    distinct = pc.value_counts(names).to_pylist()
    unknown_rows = sum(
        d["counts"] for d in distinct if formulary.match(d["values"]).generic is None
    )
    # About 0.4 % of names have a letter dropped; nothing else is unknown.
    assert 0.002 < unknown_rows / len(names) < 0.007
    # Sertraline's minimum is 50 mg/day: the most common dose is exactly the minimum.
    frame = cohort.treatments.to_pandas(date_as_object=False)
    sertraline = frame[frame["drug"].str.lower().str.startswith("sertraline")]
    assert sertraline["daily_dose_mg"].mode().iloc[0] == 50.0
    # Course lengths cluster one day either side of 4, 6 and 8 weeks.
    days = (frame["end_date"] - frame["start_date"]).dt.days
    for edge in (28, 42, 56):
        assert (days == edge - 1).any() and (days == edge).any() and (days == edge + 1).any()


def test_a_synthetic_cohort_screens_without_errors(tmp_path):
    cohort = tmp_path / "cohort"
    assert runner.invoke(app, ["synth", "--n-subjects", "300", "--out", str(cohort)]).exit_code == 0
    result = runner.invoke(app, ["screen", str(cohort), "--out", str(tmp_path / "run"), "--json"])
    assert result.exit_code == ExitCode.OK, result.output
    counts = json.loads(result.output)["counts"]
    assert counts["subjects"]["total"] == 300
    assert "error" not in counts["issues"]
    assert set(counts["decision"]) == {"eligible", "excluded", "needs_review"}


def test_a_non_empty_folder_is_refused(tmp_path):
    (tmp_path / "keep.txt").write_text("x")
    result = runner.invoke(app, ["synth", "--n-subjects", "10", "--out", str(tmp_path)])
    assert result.exit_code == ExitCode.OUTPUT_EXISTS
    assert (tmp_path / "keep.txt").read_text() == "x"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]
