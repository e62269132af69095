"""Regenerate the broken-input corpus in this folder from the sample data.

Run `python tests/corpus/make_corpus.py [FOLDER]` (default: this folder). Each file is the base cohort
(sample subjects S001-S004 and their courses, `base/`) with one thing broken;
`cases.yaml` says what each is and what trdscreen must do with it. Not
collected by pytest.
"""

from __future__ import annotations

import csv
import io
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.compute  # noqa: F401 - pa.compute
import pyarrow.parquet as pq

HERE = Path(__file__).resolve().parent
SAMPLE = HERE.parent.parent / "sample_data"
RULES = HERE.parent.parent / "rules"
SUBJECTS = ("S001", "S002", "S003", "S004")


def rows_of(path: Path) -> list[list[str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.reader(handle))


def as_csv(rows: list[list[str]], delimiter: str = ",") -> str:
    buffer = io.StringIO()
    csv.writer(buffer, delimiter=delimiter, lineterminator="\n").writerows(rows)
    return buffer.getvalue()


def main(folder: Path) -> None:
    FILES = folder / "files"
    BASE = folder / "base"
    FILES.mkdir(parents=True, exist_ok=True)
    BASE.mkdir(exist_ok=True)
    treatments = [
        r for r in rows_of(SAMPLE / "treatments.csv") if r[0] in ("subject_id", *SUBJECTS)
    ]
    subjects = [r for r in rows_of(SAMPLE / "subjects.csv") if r[0] in ("subject_id", *SUBJECTS)]
    (BASE / "treatments.csv").write_text(as_csv(treatments))
    (BASE / "subjects.csv").write_text(as_csv(subjects))
    header = treatments[0]
    col = {name: i for i, name in enumerate(header)}

    def changed(line: int, **cells: str) -> list[list[str]]:
        """The base treatments with cells of one file line (2 = first data row) replaced."""
        rows = [list(r) for r in treatments]
        for name, value in cells.items():
            rows[line - 1][col[name]] = value
        return rows

    def new_course(subject: str, drug: str) -> list[str]:
        """A failed 8-week course (HAM-D 24 -> 22) of a subject the base does not have."""
        values = {"subject_id": subject, "drug": drug, "daily_dose_mg": "100",
                  "start_date": "2023-02-01", "end_date": "2023-03-28", "hamd_start": "24",
                  "hamd_end": "22", "stop_reason": "nonresponse"}  # fmt: skip
        return [values.get(name, "") for name in header]

    def write(name: str, text: str | bytes) -> None:
        path = FILES / name
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(text, encoding="utf-8")

    text = as_csv(treatments)
    lines = text.splitlines(keepends=True)
    write("empty.csv", "")
    write("header_only.csv", lines[0])
    write("semicolon.csv", as_csv(treatments, delimiter=";"))
    write("semicolon_subjects.csv", as_csv(subjects, delimiter=";"))
    write(
        "ragged_row.csv",
        "".join(lines[:4]) + lines[4].rstrip("\n") + ",extra\n" + "".join(lines[5:]),
    )
    write(
        "broken_quote.csv",
        "".join(lines[:5])
        + lines[5].replace("venlafaxine", '"venlafaxine', 1)
        + "".join(lines[6:]),
    )
    write("utf8_bom.csv", b"\xef\xbb\xbf" + text.encode())
    write("utf16.csv", text.encode("utf-16"))
    latin = [
        r + ["comment"] if i == 0 else r + ["réponse partielle" if i == 2 else ""]
        for i, r in enumerate(treatments)
    ]
    write("latin1.csv", as_csv(latin).encode("latin-1"))
    write(
        "missing_column.csv",
        as_csv([[c for j, c in enumerate(r) if j != col["daily_dose_mg"]] for r in treatments]),
    )
    dup = [r + [r[col["drug"]]] for r in treatments]
    dup[0][-1] = "drug"
    write("duplicate_columns.csv", as_csv(dup))
    write("wrong_types.csv", as_csv(changed(3, daily_dose_mg="twenty", hamd_end="19.5")))
    write("negative_dose.csv", as_csv(changed(4, daily_dose_mg="-100")))
    write(
        "hamd_above_52.csv", as_csv(changed(6, hamd_end="60"))
    )  # a HAM-D24 total, no version given
    adherence = [list(r) for r in treatments]
    for r, value in zip(
        adherence[1:], ("95", "80", "100", "90", "85", "70", "100", "60"), strict=True
    ):
        r[col["adherence"]] = value
    write("adherence_percent.csv", as_csv(adherence))
    write("end_before_start.csv", as_csv(changed(7, end_date="2023-01-15")))
    write("future_dates.csv", as_csv(changed(9, start_date="2024-07-01", end_date="2024-09-01")))
    write("ambiguous_dates.csv", as_csv(changed(2, start_date="01/02/2023")))
    mixed = [list(r) for r in treatments]
    mixed[2][col["start_date"]] = "2023/04/10"
    mixed[3][col["start_date"]] = "1 Feb 2023"
    mixed[4][col["end_date"]] = "20230604"
    write("mixed_date_formats.csv", as_csv(mixed))
    write("duplicate_course.csv", as_csv(treatments + [list(treatments[3])]))
    write(
        "orphan_course.csv",
        as_csv(treatments + [new_course("S099", "sertraline")]),
    )
    write("subject_without_courses.csv", as_csv([r for r in treatments if r[0] != "S003"]))
    write("duplicate_subject.csv", as_csv(subjects + [list(subjects[2])]))
    write("long_string.csv", as_csv(changed(5, drug="x" * 5000)))
    write("huge_row.csv", as_csv(changed(5, drug="x" * (2 << 20))))
    write("missing_subject_id.csv", as_csv(changed(8, subject_id="")))
    write(
        "sentinel_everywhere.csv",
        as_csv(changed(3, daily_dose_mg="ZZSENTINEL4711", hamd_end="ZZSENTINEL4711")),
    )
    write(
        "formula_cells.csv",
        as_csv(
            changed(3, drug='=HYPERLINK("http://x","y")') + [new_course("@S005", "+sertraline")]
        ),
    )
    write("not_parquet.parquet", text)
    table = pa.table(
        {name: pa.array([r[i] or None for r in treatments[1:]]) for i, name in enumerate(header)}
    )
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    write("truncated.parquet", buffer.getvalue()[: len(buffer.getvalue()) // 2])
    wrong = table.set_column(
        col["start_date"], "start_date", pa.array(range(19389, 19397), pa.int64())
    )
    wrong = wrong.set_column(
        col["hamd_end"], "hamd_end", pa.array([[1, 2]] * 8, pa.list_(pa.int64()))
    )
    pq.write_table(wrong, FILES / "wrong_types.parquet")
    pq.write_table(
        pa.table(
            [table.column(0), table.column(1), table.column(1)],
            names=["subject_id", "drug", "drug"],
        ),
        FILES / "duplicate_columns.parquet",
    )
    pq.write_table(table, FILES / "good.parquet")

    write("rules_not_yaml.yaml", "id: broken\ncriteria: [unclosed\n  - {id: X\n")
    write("rules_too_large.yaml", "id: big\n# " + "x" * (1 << 20) + "\n")
    laughs = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for level, name in enumerate("bcdefghi"):
        prev = "abcdefghi"[level]
        laughs.append(
            f"{name}: &{name} [*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev}]"
        )
    write("rules_aliases.yaml", "\n".join(laughs) + "\n")
    preset = (RULES / "sforzini-2021.yaml").read_text()
    write(
        "rules_unknown_column.yaml",
        preset.replace("id: sforzini-2021", "id: corpus-unknown-column", 1)
        + "  - id: EX-ECT\n    title: No ECT in the current episode\n"
        '    source: "corpus case: a column the data lacks"\n    evidence: U\n'
        "    kind: exclusion\n    column: prior_ect\n    op: eq\n    value: true\n",
    )
    write("rules_latin1.yaml", "id: caf\xe9\n".encode("latin-1"))

    # Safety cases: files that are something else, values no export can mean, rule files
    # that would crash or hang a naive loader.
    import gzip

    write("gzip_named_csv.csv", gzip.compress(text.encode(), mtime=0))
    write("parquet_named_csv.csv", buffer_of(table))
    write("utf16_no_bom.csv", text.encode("utf-16-le"))
    write("header_missing.csv", as_csv(treatments[1:]))
    blank = [list(r) for r in treatments]
    blank[0][col["improvement"]] = blank[0][col["modality"]] = ""
    write("blank_headers.csv", as_csv(blank))
    write("infinite_dose.csv", as_csv(changed(2, daily_dose_mg="1e309")))
    write("huge_dose.csv", as_csv(changed(2, daily_dose_mg="99999999")))
    write("implausible_dose.csv", as_csv(changed(2, daily_dose_mg="1000")))
    write("date_before_1900.csv", as_csv(changed(3, start_date="1850-01-01")))
    huge = table.set_column(
        col["hamd_end"], "hamd_end", pa.array([2**63 + 5] * table.num_rows, pa.uint64())
    )
    pq.write_table(huge, FILES / "uint64_hamd.parquet")
    starts = pa.array([r[col["start_date"]] for r in treatments[1:]]).cast(pa.date32()).to_pylist()
    starts[0] = None
    lowest = pa.array([-(2**31)] + [d.toordinal() - 719163 for d in starts[1:]], pa.int32())
    pq.write_table(
        table.set_column(col["start_date"], "start_date", lowest.cast(pa.date32())),
        FILES / "min_date32.parquet",
    )
    zoned = table
    for name in ("start_date", "end_date"):
        local = pa.array([r[col[name]] or None for r in treatments[1:]]).cast(pa.timestamp("s"))
        # Midnight in Tokyo is 15:00 the day before in UTC: a shift would move every date.
        tokyo = pa.compute.assume_timezone(local, "Asia/Tokyo")
        zoned = zoned.set_column(col[name], name, tokyo)
    pq.write_table(zoned, FILES / "tokyo_timestamps.parquet")
    write(
        "rules_nan_threshold.yaml",
        preset.replace("    min_weeks: 4 ", "    min_weeks: .nan ", 1),
    )
    write("rules_deeply_nested.yaml", "id: deep\ncriteria: " + "[" * 100000 + "]" * 100000 + "\n")
    many = "".join(
        f"  - {{id: X{i}, title: t, source: s, evidence: U, kind: inclusion, column: age, "
        f"op: ge, value: 0}}\n"
        for i in range(201)
    )
    write(
        "rules_too_many_criteria.yaml",
        preset[: preset.index("criteria:")] + "criteria:\n" + many,
    )


def buffer_of(table: pa.Table) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    return buffer.getvalue()


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE)
