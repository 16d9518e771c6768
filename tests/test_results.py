"""The published tables (transcription and conventions), comparisons with a run, and `report`."""
from __future__ import annotations

import csv
import json
import math
from collections import Counter

import pytest

from cslearn.__main__ import main
from cslearn.config import make_config
from cslearn.methods import METHODS
from cslearn.protocol import get_task
from cslearn.results import PUBLISHED, class_counts, compare, fits_identity, lookup, weighted_all
from cslearn.results.published import SETTINGS, Published

PAPER_NAMED = {"EWC", "PI", "RW", "CIL"}  # methods cslearn does not implement, kept under the paper's name


def only(records: list[Published], **match) -> Published:
    found = [r for r in records if all(getattr(r, key) == value for key, value in match.items())]
    assert len(found) == 1, f"{len(found)} records match {match}"
    return found[0]


# --- the transcription -------------------------------------------------------------------------

def test_record_counts_per_source():
    assert Counter(record.source for record in PUBLISHED) == {"MiB": 72, "PLOP": 35, "SDR": 87, "UCD": 78}


def test_every_record_is_well_formed():
    for record in PUBLISHED:
        assert record.method in METHODS or record.method in PAPER_NAMED, record
        assert record.setting in SETTINGS and record.background in ("excluded", "included"), record
        assert get_task(record.dataset, record.task).name == record.task
        assert record.values(), record
        assert record.status and record.table and record.paper_method, record
    keys = [(r.source, r.paper_method, r.dataset, r.task, r.setting) for r in PUBLISHED]
    assert len(keys) == len(set(keys)), "a table row was transcribed twice"


def test_all_is_the_class_weighted_mean_of_old_and_new():
    """results.md's arithmetic check over every record with all three numbers (or old + groups):
    all = (n_old*old + n_new*new)/(n_old + n_new), channel 0 counted only under "included",
    within the print's rounding. It validates the cells and the background field together."""
    checked, failures = 0, []
    for record in PUBLISHED:
        if record.flag or fits_identity(record) is None:
            continue
        checked += 1
        if not fits_identity(record):
            failures.append(f"{record.source} {record.paper_method} {record.task} {record.setting}: "
                            f"{record.all} vs {weighted_all(record):.3f}")
    assert not failures, failures
    assert checked == 217  # 272 records: 52 give "all" only (SDR charts), 3 are flagged


def test_the_background_field_is_the_convention_that_fits():
    """Where the two conventions give different "all" values, the other one must not fit."""
    decisive = 0
    for record in PUBLISHED:
        if record.flag or fits_identity(record) is None:
            continue
        flipped = Published(**{**record.__dict__, "background": "included" if record.background == "excluded"
                               else "excluded"})
        if abs(weighted_all(flipped) - weighted_all(record)) > 2 * record.rounding + 1e-9:
            decisive += 1
            assert not fits_identity(flipped), record
    assert decisive >= 60


def test_the_flagged_cells_are_exactly_those_that_fail():
    flagged = {(r.source, r.paper_method, r.dataset, r.task, r.setting) for r in PUBLISHED if r.flag}
    assert flagged == {("MiB", "Joint", "ade", "50-50", "partition"), ("PLOP", "PLOP", "voc", "15-5", "overlapped"),
                       ("SDR", "ILT", "voc", "15-1", "sequential")}
    assert all(fits_identity(r) is False for r in PUBLISHED if r.flag)


def test_class_counts_follow_the_convention():
    assert class_counts(only(lookup("mib", "voc", "15-5", "disjoint"), source="MiB")) == {"old": 15, "new": 5}
    assert class_counts(only(lookup("plop", "voc", "15-1"), source="PLOP")) == {"old": 16, "new": 5}
    assert class_counts(only(lookup("plop", "ade", "50-50"), source="PLOP")) == {"old": 51, "new": 100}
    groups = class_counts(only(lookup("mib", "ade", "100-10"), source="MiB"))
    assert groups == {"old": 100, "new": 50, "101-110": 10, "111-120": 10, "121-130": 10, "131-140": 10,
                      "141-150": 10}


@pytest.mark.parametrize("source, method, dataset, task, setting, expected", [
    ("MiB", "mib", "voc", "15-5", "disjoint", (71.8, 43.3, 64.7)),
    ("MiB", "EWC", "voc", "19-1", "overlapped", (26.9, 14.0, 26.3)),
    ("MiB", "PI", "voc", "15-1", "overlapped", (0.0, 1.8, 0.5)),
    ("UCD", "PI", "voc", "15-1", "overlapped", (0.0, 1.8, 0.4)),
    ("MiB", "lwf-mc", "ade", "100-50", "partition", (34.2, 10.5, 26.3)),
    ("PLOP", "plop", "voc", "15-1", "overlapped", (65.12, 21.11, 54.64)),
    ("PLOP", "ilt", "voc", "10-1", "overlapped", (7.15, 3.67, 5.50)),
    ("PLOP", "plop", "ade", "100-5", "overlapped", (39.11, 7.81, 28.75)),
    ("UCD", "mib+sdr", "voc", "15-5", "disjoint", (74.6, 44.1, 67.3)),
    ("UCD", "plop+ucd", "voc", "19-1", "disjoint", (75.7, 31.8, 73.5)),
    ("SDR", "sdr", "voc", "15-1", "sequential", (58.5, 10.1, 47.0)),
    ("SDR", "CIL", "voc", "15-1", "overlapped", (None, None, 5.9)),
    ("SDR", "mib+sdr", "ade", "50-50", "partition", (42.9, 25.5, 31.3)),
    ("SDR", "ft", "voc", "19-1", "disjoint", (None, None, 34.2)),
])
def test_spot_check_cells(source, method, dataset, task, setting, expected):
    record = only(lookup(method, dataset, task, setting), source=source)
    assert (record.old, record.new, record.all) == expected


def test_spot_check_rows_with_more_columns():
    plop_mib = only(lookup("mib", "voc", "15-1", "overlapped"), source="PLOP", paper_method="MiB")
    assert (plop_mib.avg, plop_mib.background, plop_mib.rounding) == (54.19, "included", 0.01)
    copied = only(lookup("mib", "voc", "15-1", "overlapped"), source="PLOP", paper_method="MiB†")
    assert (copied.old, copied.all, copied.avg, copied.background) == (35.1, 29.7, None, "excluded")
    ade = only(lookup("mib", "ade", "100-10", "partition"), source="MiB")
    assert (ade.old, ade.new, ade.all) == (31.8, None, 25.9)
    assert ade.groups == (("101-110", 10.4), ("111-120", 14.8), ("121-130", 12.8), ("131-140", 13.6),
                          ("141-150", 18.7))
    joint = only(lookup("joint", "ade", "50-50"), source="MiB")
    assert (joint.old, dict(joint.groups), joint.all) == (51.1, {"51-100": 38.3, "101-150": 28.2}, 38.9)
    plop_10_1 = only(lookup("plop", "voc", "10-1"), source="PLOP")
    assert [plop_10_1.status_of(c) for c in ("old", "new", "all")] == [
        "C: PLOP#37", "UNVERIFIED", "C: PLOP#37, clovaai/SSUL README"]
    assert only(lookup("sdr", "voc", "15-1", "disjoint"), source="SDR").status_of("all") == "V-chart"
    assert only(lookup("plop", "voc", "15-1", "overlapped"), source="UCD").paper_method == "PLOP*"


def test_lookup_understands_aliases_case_and_wildcards():
    assert lookup("mib", "voc", "15-5s", "disjoint") == lookup("mib", "voc", "15-1", "disjoint")
    assert lookup("ewc", "voc", "19-1", "disjoint") == lookup("EWC", "voc", "19-1", "disjoint") != []
    assert {r.source for r in lookup("mib", "voc", "15-1", "overlapped")} == {"MiB", "PLOP", "SDR", "UCD"}
    assert len(lookup("plop+ucd")) == 6 and lookup("mib", "toy") == []
    assert len(lookup(dataset="ade", task="50")) == len(lookup(dataset="ade", task="50-50")) > 0


# --- comparing a run ---------------------------------------------------------------------------

def fake_history(steps: int, final: dict, num_channels: int = 21, iou: float = 0.5) -> list[dict]:
    """Per-step entries as run_protocol writes them; `final` overrides the last summary."""
    history = []
    for step in range(steps):
        summary = {"old": 0.7, "new": math.nan if step == 0 else 0.2, "all": 0.6, "old_bg": 0.72, "all_bg": 0.62}
        history.append({"step": step, "iou": [iou] * num_channels, "summary": summary, "losses": [], "seconds": 1.0})
    history[-1]["summary"] = dict(final)
    return history


FINAL = {"old": 0.65, "new": 0.25, "all": 0.55, "old_bg": 0.67, "all_bg": 0.5714}


def test_compare_uses_each_rows_background_convention():
    config = make_config("paper", "voc", {"data.task": "15-1", "data.setting": "overlapped"}, method="mib")
    history = fake_history(6, FINAL)
    comparison = compare(history, config)
    rows = {(row["source"], row["paper_method"]): {c["name"]: c for c in row["cells"]} for row in comparison["rows"]}
    assert set(rows) == {("MiB", "MiB"), ("PLOP", "MiB†"), ("PLOP", "MiB"), ("UCD", "MiB"), ("SDR", "MiB")}
    excluded, included = rows[("MiB", "MiB")], rows[("PLOP", "MiB")]
    assert [excluded[c]["run"] for c in ("old", "new", "all")] == pytest.approx([65.0, 25.0, 55.0])
    assert [included[c]["run"] for c in ("old", "new", "all")] == pytest.approx([67.0, 25.0, 57.14])
    assert included["avg"]["run"] == pytest.approx((5 * 62 + 57.14) / 6)  # mean over steps of all_bg
    assert included["all"]["published"] == 29.29 and included["all"]["difference"] == pytest.approx(57.14 - 29.29)
    assert rows[("SDR", "MiB")].keys() == {"all"}  # the chart gives "all" only
    assert comparison["run"]["included"]["all"] == pytest.approx(57.14)
    assert len(comparison["caveats"]) == 1 and "seed" in comparison["caveats"][0]  # paper preset, all steps


def test_compare_ade_groups_partition_and_caveats():
    config = make_config("fast", "ade", {"data.task": "100-10", "data.index_dir": "/idx"}, method="mib").to_dict()
    iou = [math.nan] + [0.4] * 100 + [0.1] * 10 + [0.3] * 40
    history = fake_history(3, FINAL, num_channels=151)
    history[-1]["iou"] = iou
    comparison = compare(history, config)
    assert comparison["setting"] == "partition"
    assert [row["source"] for row in comparison["rows"]] == ["MiB", "SDR"]  # SDR's chart: all only
    cells = {cell["name"]: cell for cell in comparison["rows"][0]["cells"]}
    assert cells["101-110"]["run"] == pytest.approx(10.0) and cells["141-150"]["run"] == pytest.approx(30.0)
    assert cells["101-110"]["published"] == 10.4
    assert any("stopped after 3 of 6 steps" in c for c in comparison["caveats"])
    assert any("preset 'fast'" in c for c in comparison["caveats"])


def test_compare_without_published_numbers_and_files(tmp_path):
    from cslearn.results import write_comparison

    toy = compare(fake_history(2, FINAL), make_config("fast", "toy", {"data.task": "15-5"}, method="mib"))
    assert toy["rows"] == [] and "no published numbers" in toy["caveats"][0]
    config = make_config("paper", "voc", {"data.task": "15-5", "data.setting": "disjoint"}, method="mib")
    comparison = compare(fake_history(2, FINAL), config)
    write_comparison(comparison, tmp_path)
    assert json.loads((tmp_path / "comparison.json").read_text())["rows"][0]["source"] == "MiB"
    lines = list(csv.DictReader((tmp_path / "comparison.csv").open()))
    assert len(lines) == 7  # MiB and UCD rows: old / new / all each; SDR's chart: all
    assert {(line["source"], line["quantity"], line["published"]) for line in lines} >= {("MiB", "all", "64.7")}


def test_run_command_prints_and_writes_the_comparison(tmp_path, capsys, monkeypatch):
    import cslearn.continual

    monkeypatch.setattr(cslearn.continual, "run_protocol", lambda *args, **kwargs: fake_history(2, FINAL))
    run_dir = tmp_path / "run"
    assert main(["run", "--dataset", "voc", "--root", str(tmp_path), "--task", "15-5", "--setting", "disjoint",
                 "--run-dir", str(run_dir), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "published numbers for mib on voc 15-5 (disjoint)" in printed
    assert "old 71.8 / 65.0" in printed and "all 64.7 / 55.0" in printed
    assert (run_dir / "comparison.json").exists() and (run_dir / "comparison.csv").exists()


# --- the report command ------------------------------------------------------------------------

def write_fake_run(directory, seed: int, finals: tuple[float, float, float, float, float], **overrides):
    """config.json (RunConfig.to_dict()) and history.json (as cslearn.reports writes it: NaN as null)."""
    config = make_config("paper", "voc", {"data.task": "15-5", "data.setting": "disjoint", "train.seed": seed,
                                          **overrides}, method="mib")
    directory.mkdir(parents=True)
    (directory / "config.json").write_text(json.dumps(config.to_dict()))
    old, new, all_, old_bg, all_bg = finals
    history = [{"step": 0, "iou": [0.8] * 16 + [None] * 5, "seconds": 1.0, "losses": [],
                "summary": {"old": 0.8, "new": None, "all": 0.8, "old_bg": 0.81, "all_bg": 0.81}},
               {"step": 1, "iou": [0.5] * 21, "seconds": 1.0, "losses": [],
                "summary": {"old": old, "new": new, "all": all_, "old_bg": old_bg, "all_bg": all_bg}}]
    (directory / "history.json").write_text(json.dumps(history))
    return directory


def test_report_groups_seeds_and_shows_the_papers_numbers(tmp_path, capsys):
    first = write_fake_run(tmp_path / "seed1", 1, (0.60, 0.30, 0.525, 0.62, 0.544))
    second = write_fake_run(tmp_path / "seed2", 2, (0.62, 0.34, 0.550, 0.64, 0.570))
    out, plot = tmp_path / "report.csv", tmp_path / "report.png"
    assert main(["report", str(first), str(second), "--out", str(out), "--plot", str(plot)]) == 0
    printed = capsys.readouterr().out
    run_line = next(line for line in printed.splitlines() if line.startswith("mib"))
    assert run_line.split()[:5] == ["mib", "voc", "15-5", "disjoint", "1,2"]
    assert "61.0 ± 1.4" in run_line and "32.0 ± 2.8" in run_line and "53.8 ± 1.8" in run_line
    assert "63.0 ± 1.4" in run_line and "55.7 ± 1.8" in run_line
    paper_lines = [line for line in printed.splitlines() if "paper [" in line]
    assert [line.split()[-3] for line in paper_lines] == ["MiB", "SDR", "UCD"]  # "MiB paper [V-img]"
    assert paper_lines[0].split()[:5] == ["MiB", "paper", "71.8", "43.3", "64.7"]
    assert paper_lines[1].split()[:3] == ["MiB", "paper", "44.3"]  # SDR's re-run, background included
    rows = list(csv.DictReader(out.open()))
    assert [row["kind"] for row in rows] == ["run", "published", "published", "published"]
    assert rows[0]["seeds"] == "1 2" and rows[0]["runs"] == "2"
    assert float(rows[0]["old_mean"]) == pytest.approx(61.0)
    assert float(rows[0]["old_std"]) == pytest.approx(math.sqrt(2.0), abs=1e-3)
    assert (rows[2]["source"], rows[2]["all_mean"], rows[2]["all_bg_mean"]) == ("SDR", "", "44.3")
    assert (rows[1]["source"], rows[1]["old_mean"], rows[1]["all_mean"], rows[1]["all_bg_mean"]) == (
        "MiB", "71.8", "64.7", "")
    assert plot.read_bytes()[:4] == b"\x89PNG"


def test_report_keeps_other_settings_apart(tmp_path, capsys):
    write_fake_run(tmp_path / "a", 1, (0.6, 0.3, 0.5, 0.6, 0.5))
    write_fake_run(tmp_path / "b", 2, (0.6, 0.3, 0.5, 0.6, 0.5), **{"train.lr_incremental": 0.0001})
    (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path / "a"), str(tmp_path / "b"), str(tmp_path / "empty")]) == 0
    captured = capsys.readouterr()
    assert "train.lr_incremental=0.001)" in captured.out and "train.lr_incremental=0.0001)" in captured.out
    assert "skipped" in captured.err and "no config.json" in captured.err
    assert main(["report", str(tmp_path / "empty")]) == 2


def test_report_marks_flagged_published_rows(tmp_path, capsys):
    run = write_fake_run(tmp_path / "plop", 1, (0.7, 0.4, 0.62, 0.71, 0.63),
                         **{"data.setting": "overlapped", "method": "plop"})
    assert main(["report", str(run), "--plot", str(tmp_path / "old.png"), "--plot-metric", "old_bg"]) == 0
    printed = capsys.readouterr().out
    flagged = next(line for line in printed.splitlines() if "flagged [1]" in line)
    assert flagged.split()[:5] == ["PLOP", "paper", "51.71", "75.73", "70.09"]  # new, old+bg, all+bg
    assert "[1] PLOP PLOP voc 15-5 overlapped: (16*75.73 + 5*51.71)/21 = 70.01" in printed
    assert (tmp_path / "old.png").exists()
