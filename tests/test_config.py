"""Run settings: presets hold the reference recipe (protocol.md §6.2), unknown keys fail loudly."""
from __future__ import annotations

import json

import pytest

from cslearn.config import PRESETS, RunConfig, differences, make_config


def test_preset_names():
    assert set(PRESETS) == {"fast", "paper", "colab"}


@pytest.mark.parametrize("dataset, epochs", [("voc", 30), ("ade", 60)])
def test_paper_preset_is_the_reference_recipe(dataset, epochs):
    config = make_config("paper", dataset)
    assert config.preset == "paper"
    assert config.data.dataset == dataset
    assert config.data.crop_size == 512
    assert config.data.eval_mode == "center_crop"
    assert config.model.name == "deeplabv3_resnet101"
    assert config.model.output_stride == 16
    assert config.model.weights == "imagenet"
    assert config.train.batch_size == 24 and config.train.grad_accum == 1
    assert config.train.epochs == epochs and config.train.epochs_incremental == epochs
    assert config.train.lr == 0.01 and config.train.lr_incremental == 0.001
    assert config.train.momentum == 0.9
    assert config.train.nesterov is True
    assert config.train.weight_decay == 1e-4
    assert config.train.poly_power == 0.9
    assert config.train.amp is False


@pytest.mark.parametrize("dataset, epochs", [("voc", 30), ("ade", 60)])
def test_colab_preset_keeps_the_effective_batch(dataset, epochs):
    config = make_config("colab", dataset)
    assert config.train.batch_size * config.train.grad_accum == 24
    assert config.train.grad_accum > 1  # it is the accumulation that makes it fit
    assert config.train.amp is True
    assert config.data.crop_size == 512
    assert config.model.name == "deeplabv3_resnet101" and config.model.output_stride == 16
    assert config.model.weights == "imagenet"
    assert config.train.epochs == epochs and config.train.epochs_incremental == epochs
    assert config.train.lr == 0.01 and config.train.lr_incremental == 0.001
    assert config.train.nesterov is True and config.train.weight_decay == 1e-4


def test_fast_preset_is_small():
    config = make_config("fast")
    assert config.data.dataset == "toy"
    assert config.model.name == "tiny"
    assert config.data.crop_size == 64
    assert config.train.amp is False


def test_overrides_win_over_the_preset():
    config = make_config("paper", "voc", overrides={"train.epochs": 3, "train.batch_size": 8},
                         method="lwf", task="15-5", setting="disjoint")
    assert config.train.epochs == 3 and config.train.batch_size == 8
    assert config.train.epochs_incremental == 30  # untouched fields keep the preset
    assert config.method == "lwf"
    assert config.data.task == "15-5" and config.data.setting == "disjoint"


def test_unknown_preset_raises():
    with pytest.raises(ValueError, match="fast"):
        make_config("turbo")


@pytest.mark.parametrize("key", ["train.epoch", "data.taks", "model.depth"])
def test_unknown_key_raises_with_valid_keys(key):
    config = RunConfig()
    with pytest.raises(KeyError) as error:
        config.set(key, 1)
    message = str(error.value)
    assert key in message
    section = key.split(".")[0]
    expected = {"train": "epochs", "data": "task", "model": "output_stride"}[section]
    assert expected in message


def test_unknown_section_and_top_level_key_raise():
    config = RunConfig()
    with pytest.raises(KeyError, match="sections"):
        config.set("optimizer.lr", 0.1)
    with pytest.raises(KeyError, match="method"):
        config.set("methd", "mib")
    with pytest.raises(KeyError):
        config.set("data", {})  # a whole section cannot be replaced by a value
    with pytest.raises(KeyError):
        make_config("fast", overrides={"train.learning_rate": 0.1})
    with pytest.raises(KeyError):
        make_config("fast", not_a_field=1)


def test_from_dict_rejects_unknown_keys():
    with pytest.raises(KeyError, match="crop"):
        RunConfig.from_dict({"data": {"crop": 32}})


def test_to_dict_from_dict_round_trip():
    config = make_config("colab", "ade", overrides={"data.order": [3, 1, 2], "train.seed": 7},
                         method="ilt", task="100-10")
    values = config.to_dict()
    restored = RunConfig.from_dict(json.loads(json.dumps(values)))
    assert restored == config
    assert restored.to_dict() == values
    assert restored.train.seed == 7 and restored.data.order == [3, 1, 2] and restored.method == "ilt"
    assert json.loads(config.dumps()) == values


def test_differences_ignores_where_the_run_executes():
    saved = make_config("paper", "voc").to_dict()
    current = make_config("paper", "voc", overrides={"train.device": "cpu", "data.num_workers": 0,
                                                     "data.root": "/elsewhere"}).to_dict()
    assert differences(saved, current) == []


def test_differences_reports_what_changes_the_result():
    saved = make_config("paper", "voc").to_dict()
    current = make_config("paper", "voc", overrides={"train.lr": 0.02, "data.task": "15-5"}).to_dict()
    found = differences(saved, current)
    assert len(found) == 2
    assert any(line.startswith("train.lr:") and "0.01" in line and "0.02" in line for line in found)
    assert any(line.startswith("data.task:") for line in found)


# ---- per-method recipes and their sources ----

@pytest.mark.parametrize("preset", ["paper", "colab"])
@pytest.mark.parametrize("method", ["sdr", "mib+sdr", "mib+sdr:-attraction"])
def test_sdr_trains_with_its_own_recipe_on_voc(preset, method):
    config = make_config(preset, "voc", method=method)
    assert (config.train.lr, config.train.lr_incremental) == (1e-3, 1e-4)  # LTTM/SDR#1, protocol.md §6.2
    assert config.train.batch_size * config.train.grad_accum == 8
    ade = make_config(preset, "ade", method=method)
    assert (ade.train.lr, ade.train.lr_incremental) == (0.01, 0.001)
    assert ade.train.batch_size * ade.train.grad_accum == 4


@pytest.mark.parametrize("method, amp", [("mib", False), ("sdr", False), ("plop", True), ("plop+ucd", True),
                                         ("mib+ucd", True), ("lwf", False)])
def test_paper_precision_follows_each_reference(method, amp):
    assert make_config("paper", "voc", method=method).train.amp is amp  # apex O0 (MiB, SDR) / O1 (PLOP, UCD)
    assert make_config("colab", "voc", method=method).train.amp is True


def test_plop_10_1_trains_ten_epochs_per_incremental_step_on_voc_only():
    assert make_config("paper", "voc", method="plop", task="10-1").train.epochs_incremental == 10
    assert make_config("paper", "voc", method="plop", overrides={"data.task": "10-1"}).train.epochs_incremental == 10
    assert make_config("paper", "voc", method="plop", task="15-1").train.epochs_incremental == 30
    assert make_config("paper", "voc", method="mib", task="10-1").train.epochs_incremental == 30
    assert make_config("fast", "toy", method="sdr").train.lr == 0.01  # recipes are for paper and colab


def test_describe_gives_every_setting_a_source():
    from cslearn.config import describe, recipe

    config = make_config("paper", "voc", {"train.epochs": 3}, method="sdr")
    lines = describe(config)
    fields = [name for section in ("data", "model", "train") for name in config.to_dict()[section]]
    assert len(lines) == 1 + len(fields)
    text = "\n".join(lines)
    assert "train.lr = 0.001  (SDR on VOC: lr 1e-3 at step 0 (LTTM/SDR README" in text
    assert "train.epochs = 3  (set for this run (the paper recipe says 30" in text
    assert "train.nesterov = True  (Nesterov SGD (protocol.md §6.2))" in text
    assert "train.grad_accum = 2  (colab: keeps the effective batch of 24" in "\n".join(describe(make_config("colab", "voc")))
    assert all(source for _, source in recipe("paper", "ade", "plop").values())
