"""The run-time estimate: iterations per step from the step's images, hours from a measurement."""
from __future__ import annotations

import torch

from cslearn.__main__ import main
from cslearn.config import make_config
from cslearn.estimate import StepEstimate, estimate_hours, format_estimate, seconds_per_iteration


def tiny_config(**overrides):
    values = {"data.crop_size": 32, "model.width": 8, "train.batch_size": 4, "train.epochs": 3,
              "train.epochs_incremental": 2, **overrides}
    return make_config("fast", "toy", values)


def test_iterations_follow_images_batch_and_epochs():
    estimates = estimate_hours(tiny_config(), [16, 5], [50, 9, 3], torch.device("cpu"), iterations=1)
    assert [entry.iterations for entry in estimates] == [3 * (50 // 4), 2 * (9 // 4), 0]  # drop_last
    assert estimates[0].seconds_per_iteration > 0 and estimates[1].seconds_per_iteration > 0
    assert estimates[1].seconds_per_iteration == estimates[2].seconds_per_iteration  # one incremental measurement
    entry = StepEstimate(step=1, images=100, iterations=7200, seconds_per_iteration=0.5)
    assert entry.hours == 1.0
    text = format_estimate(estimates, torch.device("cpu"))
    assert "step 0: 50 images, 36 iterations" in text and "total" in text


def test_measurement_leaves_no_state_and_supports_the_colab_switches():
    config = tiny_config(**{"train.amp": True, "train.channels_last": True})  # bfloat16 autocast on the CPU
    assert seconds_per_iteration(config, [16, 5], torch.device("cpu"), with_old_model=True, iterations=1) > 0


def test_cli_prints_the_estimate_before_training(capsys):
    code = main(["run", "--task", "15-5", "--estimate", "--dry-run", "--set", "data.toy_train_images=64",
                 "--set", "data.crop_size=32", "--set", "model.width=8"])
    printed = capsys.readouterr().out
    assert code == 0
    assert "estimated training time on cpu" in printed and "step 1:" in printed
    assert printed.index("estimated training time") < printed.index('\n{')  # before the config dump
