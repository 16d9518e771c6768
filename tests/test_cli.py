"""The command line: clear errors for bad input, dry runs, dataset checks, a run on VOC-format data."""
from __future__ import annotations

import json

import numpy as np
import pytest

from cslearn.__main__ import main
from cslearn.data.synthetic import make_ade_folder, make_voc_folder


def test_unknown_task_lists_the_known_ones(capsys):
    with pytest.raises(SystemExit, match=r"unknown task '7-x'.*Known voc tasks: .*15-1"):
        main(["run", "--dataset", "voc", "--root", "/nowhere", "--task", "7-x", "--dry-run"])


def test_unknown_config_key_is_refused():
    with pytest.raises(SystemExit, match=r"unknown config key 'train\.learning_rate'.*valid keys here: .*lr"):
        main(["run", "--set", "train.learning_rate=0.1", "--dry-run"])


def test_dry_run_prints_the_resolved_config(capsys):
    assert main(["run", "--method", "mib", "--task", "15-1", "--set", "train.lr=0.02", "--dry-run"]) == 0
    printed = capsys.readouterr().out
    assert "1*unbiased_ce + 100*unbiased_kd" in printed  # MiB's lambda = 100 on 15-1
    config = json.loads(printed[printed.index("\n{") + 1:])
    assert config["train"]["lr"] == 0.02 and config["data"]["task"] == "15-1"


def test_paper_preset_on_voc_by_default(capsys):
    main(["run", "--dataset", "voc", "--root", "/data", "--dry-run"])
    printed = capsys.readouterr().out
    config = json.loads(printed[printed.index("\n{") + 1:])
    assert config["preset"] == "paper" and config["model"]["name"] == "deeplabv3_resnet101"
    assert "train.batch_size = 24  (batch 24 = 12 per GPU x 2 GPUs (protocol.md §6.2))" in printed


def test_bad_dataset_root_gives_a_clear_error(tmp_path, capsys):
    code = main(["run", "--dataset", "voc", "--root", str(tmp_path), "--run-dir", str(tmp_path / "run"),
                 "--no-progress"])
    assert code == 2
    message = capsys.readouterr().err
    assert "train_aug.txt" in message and "download" in message


def test_data_check_reports_counts_and_problems(tmp_path, capsys):
    root = make_voc_folder(tmp_path / "voc", num_train=6, num_val=4)
    assert main(["data", "check", "--dataset", "voc", "--root", str(root)]) == 0
    assert "train" in capsys.readouterr().out
    masks = sorted((root / "PascalVOC12" / "SegmentationClassAug").glob("*.png"))
    masks[0].write_bytes(masks[0].read_bytes()[:40])  # a truncated PNG
    assert main(["data", "check", "--dataset", "voc", "--root", str(root)]) == 1
    assert masks[0].stem in capsys.readouterr().out


def test_corrupt_mask_during_a_run_names_the_file(tmp_path, capsys):
    root = make_voc_folder(tmp_path / "voc", num_train=6, num_val=4)
    masks = sorted((root / "PascalVOC12" / "SegmentationClassAug").glob("*.png"))
    masks[2].write_bytes(b"\x89PNG garbage")
    code = main(["run", "--dataset", "voc", "--root", str(root), "--preset", "fast",
                 "--run-dir", str(tmp_path / "run"), "--no-progress"])
    assert code == 2
    assert masks[2].name in capsys.readouterr().err


@pytest.mark.parametrize("dataset", ["voc", "ade"])
def test_a_run_on_generated_real_format_data(tmp_path, capsys, dataset):
    """The full pipeline on files in the exact VOC / ADE20K layouts, through the command line."""
    if dataset == "voc":
        root = make_voc_folder(tmp_path / "data", num_train=24, num_val=8, size=(48, 64))
        task = "15-5"
    else:
        root = make_ade_folder(tmp_path / "data", num_train=24, num_val=8, size=(48, 64))
        task = "100-50"
    run_dir = tmp_path / "run"
    code = main(["run", "--dataset", dataset, "--root", str(root), "--task", task, "--preset", "fast",
                 "--method", "mib", "--run-dir", str(run_dir), "--epochs", "1", "--no-progress",
                 "--set", "model.width=4", "--set", "train.batch_size=4", "--set", "data.crop_size=32"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "step 1 done" in printed and "old+bg" in printed
    history = json.loads((run_dir / "history.json").read_text())
    expected_channels = 21 if dataset == "voc" else 151
    assert len(history[-1]["iou"]) == expected_channels
    assert len(list((root / ".cslearn-cache").glob("labelsets-*.npy"))) == 2  # train and val, indexed once
    if dataset == "ade":  # MiB's convention: class 0 "other" is not scored at test time
        assert history[-1]["iou"][0] is None or np.isnan(history[-1]["iou"][0])


def test_mib_index_files_select_the_training_images(tmp_path):
    """With --index-dir the step's images are exactly the positions in MiB's .npy file."""
    from cslearn.config import make_config
    from cslearn.data.errors import DatasetError
    from cslearn.data.sources import StepData
    from cslearn.protocol import get_task

    root = make_voc_folder(tmp_path / "voc", num_train=12, num_val=4, size=(32, 32))
    index_dir = tmp_path / "index"
    (index_dir / "15-5s-ov").mkdir(parents=True)
    np.save(index_dir / "15-5s-ov" / "train-1.npy", np.array([7, 2, 5], dtype=np.int32))
    config = make_config("fast", "voc", {"data.root": str(root), "data.index_dir": str(index_dir)})
    data = StepData(config.data)
    task = get_task("voc", "15-1")
    assert data.train_dataset(task, 1).indices.tolist() == [7, 2, 5]
    with pytest.raises(DatasetError, match="train-2.npy does not exist"):
        data.train_dataset(task, 2)
