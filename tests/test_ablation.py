"""The ablation runner: variants as method specs, a tidy table, shared step 0, resume, the CLI."""
from __future__ import annotations

import pytest

from cslearn import ablation
from cslearn.__main__ import main

TINY = {"data.toy_train_images": 48, "data.toy_val_images": 16, "model.width": 8, "train.epochs": 1,
        "train.epochs_incremental": 1, "train.batch_size": 8, "train.device": "cpu"}


def test_variants_are_the_method_then_drops_then_sweeps():
    specs = ablation.variants("mib+sdr", ["attraction", "attraction+repulsion"],
                              {"prototype_matching": [0.1, 0.001], "feature_sparsity": [0.01]})
    assert specs == ["mib+sdr", "mib+sdr:-attraction", "mib+sdr:-attraction,-repulsion",
                     "mib+sdr:prototype_matching=0.1", "mib+sdr:prototype_matching=0.001",
                     "mib+sdr:feature_sparsity=0.01"]
    assert ablation.variants("mib+ucd", sweep={"contrastive_distillation.uncertainty": [False]}) == [
        "mib+ucd", "mib+ucd:contrastive_distillation.uncertainty=false"]
    with pytest.raises(ValueError, match="has no term"):
        ablation.variants("mib", ["attraction"])  # a typo fails before anything trains


def test_tiny_grid_gives_a_tidy_table_shares_step0_and_resumes(tmp_path):
    out = tmp_path / "grid"
    seen = []
    table = ablation.run_grid("mib", "15-5", drop=["unbiased_kd"], overrides=TINY, out=out,
                              on_run_end=lambda spec, seed, history: seen.append((spec, seed, len(history))))
    assert seen == [("mib", 0, 2), ("mib:-unbiased_kd", 0, 2)]
    # one row per variant x seed x step x group; no "new" at step 0
    assert len(table) == 2 * (4 + 5) and set(table.group) == set(ablation.GROUPS)
    assert table.miou.between(0, 1).all()
    assert len(list((out / "step0-cache").iterdir())) == 1  # step 0 trained once for both variants
    for name in ("ablation.csv", "terms.csv", "heatmap.png", "curves.png"):
        assert (out / name).stat().st_size > 0
    import pandas as pd

    terms = pd.read_csv(out / "terms.csv")
    step1 = terms[(terms.variant == "mib") & (terms.step == 1)].set_index("term")
    assert set(step1.index) == {"unbiased_ce", "unbiased_kd"}
    assert step1.loc["unbiased_kd", "weight"] == 10.0  # MiB's weight on 15-5
    assert step1.loc["unbiased_kd", "weighted"] == pytest.approx(10.0 * step1.loc["unbiased_kd", "value"])
    assert set(terms[terms.variant == "mib:-unbiased_kd"].term) == {"ce", "unbiased_ce"}  # step 0: CE
    stamps = {path: path.stat().st_mtime_ns for path in out.glob("*/step-1.pt")}
    again = ablation.run_grid("mib", "15-5", drop=["unbiased_kd"], overrides=TINY, out=out, figures=False)
    assert again.equals(table)  # finished runs are reloaded, not retrained
    assert {path: path.stat().st_mtime_ns for path in out.glob("*/step-1.pt")} == stamps


def test_cli_runs_a_grid_and_reports_bad_terms(tmp_path, capsys):
    settings = [argument for key, value in TINY.items() for argument in ("--set", f"{key}={value}")]
    code = main(["ablate", "--method", "mib", "--task", "15-5", "--sweep", "unbiased_kd=1,100",
                 "--out", str(tmp_path / "cli"), "--no-progress", *settings])
    printed = capsys.readouterr().out
    assert code == 0 and "3 variants x 1 seed(s)" in printed and "mib:unbiased_kd=100" in printed
    assert (tmp_path / "cli" / "ablation.csv").exists()
    with pytest.raises(SystemExit, match="has no term"):
        main(["ablate", "--method", "mib", "--drop", "attraction", "--out", str(tmp_path / "bad")])


def test_a_variant_equal_to_the_method_is_trained_once(tmp_path):
    out = tmp_path / "grid"
    seen = []
    # 10 is MiB's own unbiased_kd weight on 15-5: that variant trains exactly what "mib" trains.
    table = ablation.run_grid("mib", "15-5", sweep={"unbiased_kd": [10, 1]}, overrides=TINY, out=out, figures=False,
                              on_run_end=lambda spec, seed, history: seen.append(spec))
    assert seen == ["mib", "mib:unbiased_kd=10", "mib:unbiased_kd=1"]  # every variant is reported
    assert sorted(path.name for path in out.glob("*-seed0")) == ["mib-seed0", "mib_unbiased_kd=1-seed0"]
    final = table[table.step == 1].pivot_table(index="variant", columns="group", values="miou")
    assert final.loc["mib"].equals(final.loc["mib:unbiased_kd=10"])
    import pandas as pd

    terms = pd.read_csv(out / "terms.csv")
    kd = terms[(terms.step == 1) & (terms.term == "unbiased_kd")].set_index("variant")
    assert kd.loc["mib:unbiased_kd=10", "weight"] == kd.loc["mib", "weight"] == 10.0
    assert kd.loc["mib:unbiased_kd=1", "weight"] == 1.0  # a different variant is a run of its own
