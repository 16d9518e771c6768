"""check_dataset finds every injected problem and raises only for an unusable layout."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from cslearn.data.check import check_dataset, format_report
from cslearn.data.errors import DatasetError
from cslearn.data.synthetic import make_ade_folder, make_voc_folder
from cslearn.data.voc import VOC_PALETTE


def _save_palette_mask(mask: np.ndarray, path) -> None:
    png = Image.fromarray(mask)
    png.putpalette(VOC_PALETTE.tobytes())
    png.save(path)


def test_clean_folder_has_no_problems(tmp_path):
    root = make_voc_folder(tmp_path, num_train=6, num_val=3)
    report = check_dataset("voc", root)
    assert report["problems"] == [] and report["layout"] == "mib"
    train = report["splits"]["train"]
    assert train["images"] == 6 and train["masks_checked"] == 6
    assert train["images_per_class"][0] == 6 and sum(train["images_per_class"][1:]) >= 6
    assert any("10582" in note for note in report["notes"])  # a small folder is not the standard split
    json.dumps(report)  # serialisable for the command line
    assert "no problems found" in format_report(report)


def test_each_injected_voc_problem_is_reported(tmp_path):
    root = make_voc_folder(tmp_path, num_train=8, num_val=3)
    base = root / "PascalVOC12"
    (base / "JPEGImages" / "2011_000001.jpg").unlink()                       # missing image
    (base / "SegmentationClassAug" / "2011_000002.png").unlink()             # missing mask
    corrupt = base / "SegmentationClassAug" / "2011_000003.png"
    corrupt.write_bytes(corrupt.read_bytes()[:50])                           # truncated mask
    bad_values = np.zeros((96, 128), np.uint8)
    bad_values[:10, :10] = 30
    bad_values[20:30, 20:30] = 7
    _save_palette_mask(bad_values, base / "SegmentationClassAug" / "2011_000004.png")  # value 30
    _save_palette_mask(np.zeros((50, 60), np.uint8), base / "SegmentationClassAug" / "2011_000005.png")
    with open(base / "splits" / "train_aug.txt", "a") as stream:             # duplicate + val image
        stream.write("/JPEGImages/2011_000006.jpg /SegmentationClassAug/2011_000006.png\n")
        stream.write("/JPEGImages/2007_000000.jpg /SegmentationClassAug/2007_000000.png\n")

    report = check_dataset("voc", root)
    train = report["splits"]["train"]
    assert train["images"] == 10 and train["missing_images"] == 1 and train["missing_masks"] == 1
    assert train["unreadable_masks"] == 1 and train["masks_with_values_out_of_range"] == 1
    assert train["size_mismatches"] == 1 and train["duplicate_entries"] == 1
    text = "\n".join(report["problems"])
    assert "missing image" in text and "2011_000001.jpg" in text
    assert "missing mask" in text and "2011_000002.png" in text
    assert "cannot decode mask" in text and "2011_000003.png" in text
    assert "values [30]" in text and "2011_000004.png" in text
    assert "is 128x96 but mask" in text and "2011_000005.png" in text and "60x50" in text
    assert "appear more than once" in text
    assert "train and val share 1 image" in text
    assert report["splits"]["val"]["missing_images"] == 0
    formatted = format_report(report)
    assert f"{len(report['problems'])} problem(s)" in formatted and "2011_000004.png" in formatted


def test_missing_split_is_a_problem_but_missing_root_raises(tmp_path):
    root = make_voc_folder(tmp_path / "voc", num_train=3, num_val=2, layout="plop")
    (root / "list" / "val.txt").unlink()
    report = check_dataset("voc", root)
    assert report["layout"] == "plop" and list(report["splits"]) == ["train"]
    assert any(problem.startswith("val: cannot open the split") for problem in report["problems"])
    with pytest.raises(DatasetError, match="does not exist"):
        check_dataset("voc", tmp_path / "nowhere")
    with pytest.raises(ValueError, match="dataset"):
        check_dataset("cityscapes", root)


def test_max_masks_limits_decoding_but_not_existence_checks(tmp_path):
    root = make_voc_folder(tmp_path, num_train=10, num_val=2)
    (root / "PascalVOC12" / "JPEGImages" / "2011_000004.jpg").unlink()
    report = check_dataset("voc", root, max_masks=3)
    assert report["splits"]["train"]["masks_checked"] == 3
    assert report["splits"]["train"]["missing_images"] == 1


def test_many_problems_are_summarised(tmp_path):
    root = make_voc_folder(tmp_path, num_train=15, num_val=1)
    for path in (root / "PascalVOC12" / "JPEGImages").glob("2011_*.jpg"):
        path.unlink()
    report = check_dataset("voc", root)
    assert report["splits"]["train"]["missing_images"] == 15
    assert "train: ... and 5 more missing images" in report["problems"]


def test_ade_problems(tmp_path):
    root = make_ade_folder(tmp_path, num_train=5, num_val=2)
    annotations = root / "ADEChallengeData2016" / "annotations" / "training"
    (annotations / "ADE_train_00000002.png").unlink()
    mask = np.zeros((96, 128), np.uint8)
    mask[:5, :5] = 200
    mask[10:20, 10:20] = 150
    Image.fromarray(mask).save(annotations / "ADE_train_00000003.png")
    report = check_dataset("ade", root)
    train = report["splits"]["train"]
    assert report["layout"] == "ade" and train["missing_masks"] == 1
    assert train["masks_with_values_out_of_range"] == 1
    assert train["images_per_class"][150] >= 1
    text = "\n".join(report["problems"])
    assert "ADE_train_00000002.png" in text and "values [200]" in text and "0..150 and 255" in text
