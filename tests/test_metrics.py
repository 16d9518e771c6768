"""Metrics against hand-computed values (protocol.md §5)."""
from __future__ import annotations

import math

import pytest
import torch

from cslearn.metrics import (ConfusionMatrix, class_groups, forgetting, format_history, iou_per_class,
                             nanmean, old_class_errors, summarize)

NAN = float("nan")

# (truth, prediction) -> number of pixels. As a matrix (rows = truth, columns = prediction):
#     [[3, 1, 0],
#      [1, 2, 1],
#      [0, 2, 4]]
# IoU_0 = 3 / (4 + 4 - 3) = 3/5;  IoU_1 = 2 / (4 + 5 - 2) = 2/7;  IoU_2 = 4 / (6 + 5 - 4) = 4/7.
PAIRS = {(0, 0): 3, (0, 1): 1, (1, 0): 1, (1, 1): 2, (1, 2): 1, (2, 1): 2, (2, 2): 4}
EXPECTED_MATRIX = [[3, 1, 0], [1, 2, 1], [0, 2, 4]]
EXPECTED_IOU = [3 / 5, 2 / 7, 4 / 7]


def pixels(pairs: dict, ignored: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(predictions, targets) of shape (1, 1, N); `ignored` extra pixels with target 255."""
    truth, prediction = [], []
    for (t, p), count in pairs.items():
        truth += [t] * count
        prediction += [p] * count
    truth += [255] * ignored
    prediction += [(2 * k) % 3 for k in range(ignored)]  # any prediction: must not count
    return torch.tensor(prediction)[None, None], torch.tensor(truth)[None, None]


def test_hand_computed_confusion_matrix_and_iou():
    predictions, targets = pixels(PAIRS, ignored=5)
    matrix = ConfusionMatrix(3)
    matrix.update(predictions, targets)
    assert matrix.matrix.tolist() == EXPECTED_MATRIX
    assert matrix.iou() == pytest.approx(EXPECTED_IOU)
    assert nanmean(matrix.iou()) == pytest.approx((3 / 5 + 2 / 7 + 4 / 7) / 3)


def test_updates_accumulate_and_void_is_dropped():
    predictions, targets = pixels(PAIRS, ignored=4)
    matrix = ConfusionMatrix(3)
    half = predictions.shape[-1] // 2
    matrix.update(predictions[..., :half], targets[..., :half])
    matrix.update(predictions[..., half:], targets[..., half:])
    assert matrix.matrix.tolist() == EXPECTED_MATRIX
    assert int(matrix.matrix.sum()) == 14  # the 4 void pixels are not counted


def test_batched_2d_inputs():
    predictions = torch.tensor([[[0, 1], [2, 2]], [[1, 1], [0, 2]]])  # (2, 2, 2)
    targets = torch.tensor([[[0, 1], [1, 255]], [[1, 1], [0, 2]]])
    matrix = ConfusionMatrix(3)
    matrix.update(predictions, targets)
    assert matrix.matrix.tolist() == [[2, 0, 0], [0, 3, 1], [0, 0, 1]]


def test_class_without_ground_truth_is_nan_and_not_in_the_mean():
    # Four classes; class 3 never appears in the truth but is predicted once for a class-2 pixel.
    pairs = dict(PAIRS)
    pairs[(2, 3)] = 1
    predictions, targets = pixels(pairs)
    matrix = ConfusionMatrix(4)
    matrix.update(predictions, targets)
    iou = matrix.iou()
    assert iou[:3] == pytest.approx([3 / 5, 2 / 7, 4 / 8])  # the extra FN lowers class 2
    assert math.isnan(iou[3])
    assert nanmean(iou) == pytest.approx((3 / 5 + 2 / 7 + 1 / 2) / 3)


def test_iou_of_a_literal_matrix():
    iou = iou_per_class(torch.tensor([[5, 0, 0], [0, 0, 0], [5, 0, 10]]))
    assert iou[0] == pytest.approx(5 / 10)
    assert math.isnan(iou[1])
    assert iou[2] == pytest.approx(10 / 15)


def test_class_groups_15_1():
    classes_per_step = [16, 1, 1, 1, 1, 1]
    assert class_groups(classes_per_step, 0) == {
        "old": [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15],
        "new": [],
        "all": [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15],
        "old_bg": [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15],
        "all_bg": [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15],
    }
    assert class_groups(classes_per_step, 5) == {
        "old": [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15],
        "new": [16, 17, 18, 19, 20],
        "all": [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20],
        "old_bg": [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15],
        "all_bg": [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20],
    }


def test_class_groups_15_1_intermediate_step():
    groups = class_groups([16, 1, 1, 1, 1, 1], 2)
    assert groups["new"] == [16, 17]
    assert groups["all"][-1] == 17 and len(groups["all"]) == 17


# Channel 0 = 0.9; channels 1..15 = 0.52, 0.54, ..., 0.80 (sum 9.9); channels 16..20 = 0.2, 0.3,
# NaN (no ground truth), 0.5, 0.0 (sum 1.0 over 4 present classes).
IOU_15_1 = [0.9, 0.52, 0.54, 0.56, 0.58, 0.60, 0.62, 0.64, 0.66, 0.68, 0.70, 0.72, 0.74, 0.76, 0.78, 0.80,
            0.2, 0.3, NAN, 0.5, 0.0]


def test_summarize_with_and_without_background():
    summary = summarize(IOU_15_1, [16, 1, 1, 1, 1, 1], 5)
    assert summary == pytest.approx({
        "old": 9.9 / 15,
        "new": 1.0 / 4,
        "all": (9.9 + 1.0) / 19,
        "old_bg": (0.9 + 9.9) / 16,
        "all_bg": (0.9 + 9.9 + 1.0) / 20,
    })


def test_summarize_at_step_0_has_no_new_classes():
    summary = summarize(IOU_15_1[:16], [16, 1, 1, 1, 1, 1], 0)
    assert math.isnan(summary["new"])
    assert summary["old"] == pytest.approx(0.66) and summary["all"] == pytest.approx(0.66)
    assert summary["old_bg"] == pytest.approx(10.8 / 16) and summary["all_bg"] == pytest.approx(10.8 / 16)


def test_summarize_ade_class0_ignored_drops_out_of_the_bg_means():
    # MiB's ADE convention: channel 0 has no ground truth at test, so its IoU is NaN.
    iou = [NAN, 0.4, 0.6, 0.2]
    summary = summarize(iou, [3, 1], 1)
    assert summary["old"] == pytest.approx(0.5) and summary["old_bg"] == pytest.approx(0.5)
    assert summary["all"] == pytest.approx(0.4) and summary["all_bg"] == pytest.approx(0.4)


def test_forgetting_on_a_hand_history():
    history = [
        [0.9, 0.5, 0.6],
        [0.85, 0.8, NAN, 0.4],
        [0.8, 0.6, 0.3, 0.35, 0.9],
    ]
    result = forgetting(history)
    assert result[:4] == pytest.approx([0.1, 0.2, 0.3, 0.05])
    assert math.isnan(result[4])  # first seen at the last step


def test_forgetting_can_be_negative_and_nan_when_last_is_nan():
    result = forgetting([[0.5, 0.2], [0.4, 0.6], [0.7, NAN]])
    assert result[0] == pytest.approx(0.5 - 0.7)
    assert math.isnan(result[1])


def test_format_history():
    history = [{"step": 0, "summary": summarize(IOU_15_1[:16], [16, 1, 1, 1, 1, 1], 0)},
               {"step": 5, "summary": summarize(IOU_15_1, [16, 1, 1, 1, 1, 1], 5)}]
    text = format_history(history, background_in_mean=False)
    lines = text.splitlines()
    assert lines[0].split() == ["step", "old", "new", "all", "|", "old+bg", "all+bg"]
    step0 = lines[2].split()
    assert step0 == ["0", "66.0", "-", "66.0", "|", "67.5", "67.5"]
    step5 = lines[3].split()
    assert step5 == ["5", "66.0", "25.0", "57.4", "|", "67.5", "59.0"]
    assert "without background" in text
    assert "with background" in format_history(history, background_in_mean=True)


def test_old_class_errors_by_hand():
    # channels: 0 background, 1 and 2 old (step 0: 3 channels), 3 new. Rows = truth, columns = prediction.
    matrix = torch.tensor([[50, 3, 1, 6],   # background: 4 pixels predicted as an old class
                           [2, 10, 1, 1],   # old class 1: 14 pixels, 10 correct
                           [1, 0, 4, 1],    # old class 2: 6 pixels, 4 correct
                           [0, 2, 0, 8]])   # new class: 2 pixels predicted as old class 1
    errors = old_class_errors(matrix, classes_per_step=[3, 1])  # 20 old-class pixels
    expected = {"correct": 14 / 20, "as_background": 3 / 20, "as_other_old": 1 / 20, "as_new": 2 / 20,
                "background_as_old": 4 / 20, "new_as_old": 2 / 20}
    assert errors == pytest.approx(expected)
    assert sum(errors[k] for k in ("correct", "as_background", "as_other_old", "as_new")) == pytest.approx(1)


def test_old_class_errors_against_a_loop_over_pixels():
    generator = torch.Generator().manual_seed(0)
    truth = torch.randint(0, 7, (3, 9, 11), generator=generator)  # (B, H, W) 7 seen classes
    truth[0, :2] = 255  # void pixels are not counted
    prediction = torch.randint(0, 7, (3, 9, 11), generator=generator)
    matrix = ConfusionMatrix(7)
    matrix.update(prediction, truth)
    num_old = 4  # old classes 1..3, new classes 4..6: a task of steps [4, 1, 1, 1]
    counts = dict.fromkeys(["correct", "as_background", "as_other_old", "as_new", "background_as_old", "new_as_old"], 0)
    old_pixels = 0
    for t, q in zip(truth.flatten().tolist(), prediction.flatten().tolist()):
        if t == 255:
            continue
        if 1 <= t < num_old:
            old_pixels += 1
            kind = ("correct" if q == t else "as_background" if q == 0 else
                    "as_other_old" if q < num_old else "as_new")
            counts[kind] += 1
        elif 1 <= q < num_old:
            counts["background_as_old" if t == 0 else "new_as_old"] += 1
    expected = {kind: count / old_pixels for kind, count in counts.items()}
    assert old_class_errors(matrix.matrix, [4, 1, 1, 1]) == pytest.approx(expected)
    assert old_class_errors(matrix, [4, 1, 1, 1]) == pytest.approx(expected)  # the ConfusionMatrix itself


def test_old_class_errors_refuses_bad_input():
    with pytest.raises(ValueError, match=r"step 0 has 1 channel\(s\)"):
        old_class_errors(torch.eye(3, dtype=torch.int64), [1, 2])
    with pytest.raises(ValueError, match=r"step 0 has 4 channel\(s\), the confusion matrix 3"):
        old_class_errors(torch.eye(3, dtype=torch.int64), [4, 1])
    with pytest.raises(ValueError, match="square"):
        old_class_errors(torch.ones(2, 3, dtype=torch.int64), [2, 1])
    with pytest.raises(ValueError, match="square"):
        old_class_errors(torch.ones(3, dtype=torch.int64), [2, 1])
    with pytest.raises(ValueError, match="no pixel of an old class"):
        old_class_errors(torch.tensor([[5, 0, 0], [0, 0, 0], [0, 0, 3]]), [2, 1])
