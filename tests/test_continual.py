"""The whole protocol on a tiny toy configuration: end to end, resume, guards, checkpoints."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from cslearn.checkpoints import RunDirectoryError, load_checkpoint, save_checkpoint
from cslearn.config import make_config
from cslearn.continual import run_protocol


def tiny_config(method: str = "mib", **overrides):
    values = {"data.task": "15-5", "data.toy_train_images": 96, "data.toy_val_images": 32,
              "model.width": 8, "train.epochs": 2, "train.epochs_incremental": 2, "train.batch_size": 8,
              "train.device": "cpu"}
    values.update(overrides)
    return make_config("fast", "toy", values, method=method)


def test_two_step_run_end_to_end(tmp_path):
    history = run_protocol(tiny_config(), tmp_path, progress=False)
    assert [entry["step"] for entry in history] == [0, 1]
    assert len(history[0]["iou"]) == 16 and len(history[1]["iou"]) == 21
    assert math.isnan(history[0]["summary"]["new"])  # nothing is new at step 0
    assert all(0.0 <= history[1]["summary"][key] <= 1.0 for key in ("old", "new", "all", "all_bg"))
    assert set(history[1]["losses"][0]) == {"total", "unbiased_ce", "unbiased_kd"}
    assert set(history[0]["losses"][0]) == {"total", "ce"}  # step 0 is plain CE for every method
    for name in ("config.json", "step-0.pt", "step-1.pt", "history.json", "metrics.csv", "per_class_iou.csv",
                 "forgetting.csv"):
        assert (tmp_path / name).exists(), name
    assert not (tmp_path / "progress.pt").exists()
    checkpoint = load_checkpoint(tmp_path / "step-1.pt")  # weights_only=True inside
    assert checkpoint["classes_per_step"] == [16, 5]
    assert len((tmp_path / "metrics.csv").read_text().strip().splitlines()) == 3


def test_resume_after_crash_equals_uninterrupted_run(tmp_path):
    config = tiny_config()
    reference = run_protocol(config, tmp_path / "uninterrupted", progress=False)
    crashed_dir = tmp_path / "crashed"
    partial = run_protocol(config, crashed_dir, progress=False, stop_after_epochs=3)  # inside step 1
    assert [entry["step"] for entry in partial] == [0]
    assert load_checkpoint(crashed_dir / "progress.pt")["epoch"] == 0
    resumed = run_protocol(config, crashed_dir, progress=False)
    np.testing.assert_equal([entry["iou"] for entry in resumed], [entry["iou"] for entry in reference])
    final_reference = load_checkpoint(tmp_path / "uninterrupted" / "step-1.pt")["model"]
    final_resumed = load_checkpoint(crashed_dir / "step-1.pt")["model"]
    assert all(torch.equal(final_reference[key], final_resumed[key]) for key in final_reference)


def test_finished_run_is_not_retrained(tmp_path):
    config = tiny_config(**{"train.epochs_incremental": 1})
    first = run_protocol(config, tmp_path, progress=False)
    stamp = (tmp_path / "step-1.pt").stat().st_mtime_ns
    again = run_protocol(config, tmp_path, progress=False)
    assert (tmp_path / "step-1.pt").stat().st_mtime_ns == stamp
    np.testing.assert_equal([entry["iou"] for entry in again], [entry["iou"] for entry in first])


def test_resume_with_other_settings_is_refused(tmp_path):
    run_protocol(tiny_config(**{"train.epochs_incremental": 1}), tmp_path, progress=False, stop_after_epochs=1)
    with pytest.raises(RunDirectoryError, match=r"train\.lr_incremental: saved 0\.001, now 0\.5"):
        run_protocol(tiny_config(**{"train.epochs_incremental": 1, "train.lr_incremental": 0.5}), tmp_path,
                     progress=False)
    # the device may change between sessions (a CPU laptop, then a GPU)
    run_protocol(tiny_config(**{"train.epochs_incremental": 1, "train.device": "cpu:0"}), tmp_path,
                 progress=False, stop_after_epochs=1)


def test_joint_trains_one_step_and_reports_the_task_groups(tmp_path):
    history = run_protocol(tiny_config("joint", **{"train.epochs": 1}), tmp_path, progress=False)
    assert len(history) == 1
    assert len(history[0]["iou"]) == 21
    assert not math.isnan(history[0]["summary"]["new"])  # 16-20 are reported as "new", as in the papers


def test_mib_initialises_the_new_classifier_from_background(tmp_path):
    """After MiB's init (before any training) the step-1 model leaves old probabilities unchanged."""
    from cslearn.continual import _models_for_step
    from cslearn.protocol import get_task

    config = tiny_config(**{"train.epochs": 1})
    run_protocol(config, tmp_path, progress=False, stop_after_epochs=1)  # step 0 only
    task = get_task("toy", "15-5")
    previous = load_checkpoint(tmp_path / "step-0.pt")
    model, old_model = _models_for_step(config, task, 1, previous, torch.device("cpu"))
    images = torch.randn(2, 3, 64, 64)
    model.eval()
    with torch.no_grad():
        new_probabilities = model(images).logits.softmax(dim=1)  # (B, 21, H, W)
        old_probabilities = old_model(images).logits.softmax(dim=1)  # (B, 16, H, W)
    torch.testing.assert_close(new_probabilities[:, 1:16], old_probabilities[:, 1:], atol=1e-5, rtol=1e-4)
    expected_background = old_probabilities[:, :1] / 6  # split evenly over background + 5 new classes
    torch.testing.assert_close(new_probabilities[:, :1], expected_background, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(new_probabilities[:, 16:], expected_background.expand(-1, 5, -1, -1),
                               atol=1e-5, rtol=1e-4)


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "step-0.pt"
    save_checkpoint({"weights": torch.ones(3)}, path)

    def failing_save(state, stream):
        stream.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint({"weights": torch.zeros(3)}, path)
    monkeypatch.undo()
    assert torch.equal(load_checkpoint(path)["weights"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["step-0.pt"]  # no temporary left behind


def test_checkpoints_never_execute_code(tmp_path):
    class Payload:
        def __reduce__(self):
            return (print, ("this must never run",))

    path = tmp_path / "evil.pt"
    torch.save({"model": Payload()}, path)
    with pytest.raises(RunDirectoryError, match="cannot read checkpoint"):
        load_checkpoint(path)


def test_corrupt_step_checkpoint_gives_a_clear_error(tmp_path):
    config = tiny_config(**{"train.epochs_incremental": 1})
    run_protocol(config, tmp_path, progress=False, stop_after_epochs=2)
    (tmp_path / "step-0.pt").write_bytes(b"not a checkpoint")
    (tmp_path / "progress.pt").unlink(missing_ok=True)
    with pytest.raises(RunDirectoryError, match="Delete it"):
        run_protocol(config, tmp_path, progress=False)
    assert json.loads((tmp_path / "config.json").read_text())["method"] == "mib"


@pytest.mark.parametrize("overrides", [{"train.amp": True}, {"train.channels_last": True},
                                       {"train.grad_accum": 2, "train.batch_size": 4}])
def test_mixed_precision_channels_last_and_accumulation_paths_train(tmp_path, overrides):
    """The GPU recipe's switches run on CPU too (bfloat16 autocast there)."""
    history = run_protocol(tiny_config(**{"train.epochs": 1, "train.epochs_incremental": 1, **overrides}),
                           tmp_path, progress=False)
    assert len(history) == 2
    assert all(math.isfinite(epoch["total"]) for entry in history for epoch in entry["losses"])


def test_step0_cache_is_shared_between_methods(tmp_path):
    cache = tmp_path / "cache"
    ft = run_protocol(tiny_config("ft"), tmp_path / "ft", progress=False, step0_cache=cache)
    assert len(list(cache.glob("step0-*.pt"))) == 1
    lwf = run_protocol(tiny_config("lwf"), tmp_path / "lwf", progress=False, step0_cache=cache)
    np.testing.assert_equal(lwf[0]["iou"], ft[0]["iou"])
    first = load_checkpoint(tmp_path / "ft" / "step-0.pt")["model"]
    second = load_checkpoint(tmp_path / "lwf" / "step-0.pt")["model"]
    assert all(torch.equal(first[key], second[key]) for key in first)
    assert set(lwf[1]["losses"][0]) == {"total", "ce", "kd"}
    run_protocol(tiny_config("ft", **{"train.lr": 0.05}), tmp_path / "other-lr", progress=False, step0_cache=cache)
    assert len(list(cache.glob("step0-*.pt"))) == 2  # a step-0 setting changed: not reused


def test_step0_is_shared_between_tasks_with_the_same_first_step(tmp_path):
    from cslearn.continual import _step0_cache_file
    from cslearn.methods import get_method

    cache = tmp_path / "cache"
    key = lambda task: _step0_cache_file(cache, tiny_config(**{"data.task": task}), get_method("mib")).name
    assert key("15-1") == key("15-5")  # classes 0-15 first, 16-20 later: one step 0
    assert key("15-5") != key("10-1") and key("19-1") != key("15-5")
    # the claim behind the key: trained without the cache, the two step-0 models are identical
    for task in ("15-1", "15-5"):
        run_protocol(tiny_config(**{"data.task": task}), tmp_path / task, progress=False, stop_after_epochs=2)
    first = load_checkpoint(tmp_path / "15-1" / "step-0.pt")["model"]
    second = load_checkpoint(tmp_path / "15-5" / "step-0.pt")["model"]
    assert all(torch.equal(first[key_], second[key_]) for key_ in first)
