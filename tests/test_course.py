"""The notebook helpers of `cslearn.course`: modes, configs, run folders and the shared step 0."""
from __future__ import annotations

import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from cslearn import course

ROOT = Path(__file__).resolve().parent.parent
# A two-step run in seconds: 15-5 on 48 toy images with a narrow model.
TINY = {"task": "15-5", "toy_train_images": 48, "toy_val_images": 16, "width": 8, "epochs": 1,
        "epochs_incremental": 1, "batch_size": 8, "device": "cpu"}


@pytest.fixture
def runs(tmp_path, monkeypatch):
    monkeypatch.setenv(course.ENV_RUNS, str(tmp_path / "runs"))
    return tmp_path / "runs"


@pytest.mark.parametrize("value, expected", [("1", True), ("true", True), ("0", False), ("no", False)])
def test_fast_mode_follows_the_environment_variable(value, expected):
    assert course.fast_mode({course.ENV_FAST: value}, cuda=True) is expected
    assert course.fast_mode({course.ENV_FAST: value, course.ENV_DATA: "data"}, cuda=False) is expected


def test_per_dataset_folders_also_turn_on_full_mode_with_a_gpu():
    assert course.fast_mode({course.ENV_DATA + "_ADE": "/data/ade"}, cuda=True) is False
    assert course.fast_mode({course.ENV_DATA + "_VOC": "/data/voc"}, cuda=False) is True


def test_fast_mode_default_is_full_only_with_a_gpu_and_a_dataset():
    assert course.fast_mode({}, cuda=False) is True
    assert course.fast_mode({course.ENV_DATA: "data"}, cuda=False) is True
    assert course.fast_mode({}, cuda=True) is True
    assert course.fast_mode({course.ENV_DATA: "data"}, cuda=True) is False
    with pytest.raises(ValueError, match="CSLEARN_FAST"):
        course.fast_mode({course.ENV_FAST: "maybe"})


def test_tests_and_notebooks_run_in_fast_mode():
    assert course.FAST is True  # conftest.py sets CSLEARN_FAST=1 for the whole session


def test_fast_config_is_the_toy_preset_with_the_course_budget():
    config = course.course_config("ft", fast=True)
    assert (config.method, config.preset, config.data.dataset, config.data.task) == ("ft", "fast", "toy", "15-1")
    assert config.model.name == "tiny"
    for dotted, value in course.FAST_OVERRIDES.items():
        section, key = dotted.split(".")
        assert getattr(getattr(config, section), key) == value


def test_overrides_take_field_names_or_dotted_keys_and_win():
    config = course.course_config("mib", "10-1", fast=True, setting="disjoint", epochs=2, width=16,
                                  **{"train.lr_incremental": 0.5})
    assert config.data.task == "10-1" and config.data.setting == "disjoint"
    assert config.train.epochs == 2 and config.model.width == 16 and config.train.lr_incremental == 0.5
    with pytest.raises(KeyError, match="unknown setting 'epoch'"):
        course.course_config("ft", fast=True, epoch=2)
    with pytest.raises(KeyError):
        course.course_config("ft", fast=True, **{"train.epoch": 2})


def test_fast_mode_on_voc_or_ade_uses_a_generated_folder_in_the_real_format(runs):
    from cslearn.data.check import check_dataset

    config = course.course_config("mib", "15-5", dataset="voc", fast=True)
    assert (config.preset, config.data.dataset, config.model.name) == ("fast", "voc", "tiny")
    assert Path(config.data.root) == runs / "generated-voc" and (runs / "generated-voc" / "COMPLETE").exists()
    assert config.train.epochs == course.GENERATED_OVERRIDES["train.epochs"]
    report = check_dataset("voc", config.data.root)
    assert report["problems"] == [] and report["splits"]["train"]["images"] == 240, report
    stamp = (runs / "generated-voc" / "COMPLETE").stat().st_mtime_ns
    assert course.generated_dataset("voc") == runs / "generated-voc"  # written once, then reused
    assert (runs / "generated-voc" / "COMPLETE").stat().st_mtime_ns == stamp
    with pytest.raises(ValueError, match="only 'voc' and 'ade'"):
        course.generated_dataset("cityscapes")


def test_generated_ade_folder_runs_the_protocol_end_to_end(runs):
    history = course.run("mib", "100-50", dataset="ade", fast=True, progress=False, device="cpu", width=8,
                         epochs=1, epochs_incremental=1)
    assert len(history) == 2 and history.config.data.dataset == "ade"
    assert len(history[-1]["iou"]) == 151  # every ADE class has a channel after step 1


def test_full_config_is_the_colab_preset_on_the_dataset_folder(monkeypatch):
    monkeypatch.setenv(course.ENV_DATA, "/data/voc")
    config = course.course_config("mib", fast=False)
    assert (config.preset, config.data.dataset, config.data.root) == ("colab", "voc", "/data/voc")
    assert config.model.name == "deeplabv3_resnet101" and config.train.amp
    ade = course.course_config("mib", "100-50", dataset="ade", fast=False)
    assert (ade.data.dataset, ade.data.task, ade.train.epochs) == ("ade", "100-50", 60)
    monkeypatch.setenv(course.ENV_DATA + "_ADE", "/data/ade")  # one folder per dataset wins
    assert course.course_config("mib", "100-50", dataset="ade", fast=False).data.root == "/data/ade"
    paper = course.course_config("sdr", dataset="voc", fast=False, preset="paper")
    assert (paper.preset, paper.train.amp, paper.train.lr) == ("paper", False, 1e-3)
    monkeypatch.delenv(course.ENV_DATA)
    with pytest.raises(ValueError, match="CSLEARN_DATA"):
        course.course_config("mib", fast=False)


def test_runs_root_environment_colab_and_repository_defaults(monkeypatch, tmp_path):
    monkeypatch.setenv(course.ENV_RUNS, str(tmp_path))
    assert course.runs_root() == tmp_path
    monkeypatch.delenv(course.ENV_RUNS)
    assert course.runs_root() == ROOT / "runs" / "course"  # ignored by git (runs/)
    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    assert course.in_colab()
    assert course.runs_root() == Path("/content/cslearn-runs")


def test_not_in_colab_here():
    assert not course.in_colab()
    assert course.device() == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(RuntimeError, match="Colab"):
        course.use_drive()


def test_run_dir_is_created_inside_the_runs_root(runs):
    path = course.run_dir("demo")
    assert path == runs / "demo" and path.is_dir()
    for bad in ("", "/tmp/elsewhere", "../outside"):
        with pytest.raises(ValueError):
            course.run_dir(bad)


def test_run_name_hashes_what_the_run_computes():
    config = course.course_config("ft", fast=True)
    name = course.run_name(config)
    assert name.startswith("toy-15-1-overlapped-ft-")
    assert course.run_name(course.course_config("ft", fast=True, device="cpu")) == name  # where, not what
    assert course.run_name(course.course_config("ft", fast=True, epochs=1)) != name


def test_runs_share_step_0_and_reload_models(runs, capsys):
    ft = course.run("ft", progress=False, fast=True, **TINY)
    assert isinstance(ft, list) and [entry["step"] for entry in ft] == [0, 1]
    assert ft.run_dir == runs / course.run_name(ft.config)
    (cached,) = (runs / "step0-cache").glob("step0-*.pt")
    capsys.readouterr()
    mib = course.run("mib", fast=True, **TINY)  # FAST default: one progress bar over the steps
    bar = capsys.readouterr().err
    assert "mib 15-5" in bar and "2/2" in bar and "step 1: all-mIoU" in bar and "epoch" not in bar
    np.testing.assert_equal(mib[0]["iou"], ft[0]["iou"])  # step 0 came from the cache
    assert (mib.run_dir / "step-0.pt").read_bytes() == cached.read_bytes()
    stamp = (ft.run_dir / "step-1.pt").stat().st_mtime_ns
    again = course.run("ft", progress=False, fast=True, **TINY)  # a finished run is reloaded
    assert (ft.run_dir / "step-1.pt").stat().st_mtime_ns == stamp
    np.testing.assert_equal([entry["iou"] for entry in again], [entry["iou"] for entry in ft])
    model = ft.model(on="cpu")
    assert model.classes_per_step == [16, 5] and not model.training
    assert ft.model(0, on="cpu").classes_per_step == [16]
    predictions = course.predict(model, torch.randn(2, 3, 64, 64))
    assert predictions.shape == (2, 64, 64) and predictions.dtype == torch.long and predictions.max() < 21


def test_run_name_of_a_method_spec_is_folder_safe_and_distinct():
    spec = course.run_name(course.course_config("mib+sdr:-attraction,prototype_matching=0.1", fast=True))
    assert ":" not in spec and "," not in spec and "mib+sdr_-attraction_prototype_matching=0.1" in spec
    assert spec != course.run_name(course.course_config("mib+sdr:-attraction,prototype_matching=0.2", fast=True))


def test_ablate_reuses_the_course_runs_and_step0(runs):
    single = course.run("mib", progress=False, **TINY)
    stamp = (single.run_dir / "step-1.pt").stat().st_mtime_ns
    table = course.ablate("mib", "15-5", specs=["mib", "mib:-unbiased_kd"], figures=False,
                          **{key: value for key, value in TINY.items() if key != "task"})
    assert (single.run_dir / "step-1.pt").stat().st_mtime_ns == stamp  # the notebook's run was reloaded
    final = table[(table.step == 1) & (table.group == "all")].set_index("variant").miou
    assert final["mib"] == pytest.approx(single[-1]["summary"]["all"])
    assert (runs / course.run_name(course.course_config("mib:-unbiased_kd", **TINY)) / "step-1.pt").exists()
    assert (runs / "ablation" / "ablation.csv").exists()
    assert len(list((runs / "step0-cache").iterdir())) == 1


def test_ablate_keeps_a_seed_override(monkeypatch):
    import cslearn.ablation

    seen = {}
    monkeypatch.setattr(cslearn.ablation, "run_grid", lambda method, task, **options: seen.update(options))
    course.ablate("mib", "15-5", specs=["mib"], fast=True, seed=7)
    assert seen["overrides"]["train.seed"] == 7
    course.ablate("mib", "15-5", specs=["mib"], fast=True)
    assert seen["overrides"]["train.seed"] == course.course_config("mib", fast=True).train.seed
    config = cslearn.ablation.variant_config("mib", 2, "15-5", "toy", "fast", {"train.seed": 7})
    assert config.train.seed == 9  # grid seed k adds k to the configured seed
