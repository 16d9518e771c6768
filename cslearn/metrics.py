"""Confusion-matrix mIoU, old/new/all class groups, history across steps and forgetting.

The metric of the MiB protocol: one confusion matrix accumulated over all test pixels (label
255 dropped); IoU_c = TP / (TP + FP + FN); a mean averages only the classes that have at least
one ground-truth pixel in the test set. Taught in `01_segmentation_refresher`.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch

from cslearn.protocol import IGNORE_INDEX  # noqa: F401 (re-exported; defined once in protocol)


class ConfusionMatrix:
    """Accumulates a (num_classes, num_classes) int64 matrix; rows = truth, columns = prediction."""

    def __init__(self, num_classes: int, device: torch.device | str = "cpu") -> None:
        self.num_classes = num_classes
        self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)

    def update(self, predictions: torch.Tensor, targets: torch.Tensor) -> None:
        """predictions, targets: (B, H, W) int; targets equal to 255 (or >= num_classes) are dropped."""
        keep = targets < self.num_classes  # also drops 255
        flat = targets[keep].long() * self.num_classes + predictions[keep].long()  # (n,) cell ids
        counts = torch.bincount(flat, minlength=self.num_classes ** 2)
        self.matrix += counts.reshape(self.num_classes, self.num_classes)

    def iou(self) -> list[float]:
        return iou_per_class(self.matrix)


def iou_per_class(matrix: torch.Tensor) -> list[float]:
    """IoU of every class; NaN for classes without ground-truth pixels (excluded from means)."""
    matrix = matrix.double()
    true_positive = matrix.diagonal()
    ground_truth = matrix.sum(dim=1)
    union = ground_truth + matrix.sum(dim=0) - true_positive
    iou = true_positive / union.clamp(min=1)
    iou[ground_truth == 0] = float("nan")
    return iou.tolist()


def nanmean(values: Sequence[float]) -> float:
    present = [value for value in values if not math.isnan(value)]
    return sum(present) / len(present) if present else float("nan")


def class_groups(classes_per_step: Sequence[int], step: int) -> dict[str, list[int]]:
    """Channel groups after `step`, as in the papers' tables (e.g. "1-15" and "16-20" for 15-1).

    old: channels learned at step 0 (the base classes); new: channels added at steps 1..step;
    all: every seen channel. Channel 0 (background, or ADE's "other") is in the "_bg" variants only.
    """
    base = classes_per_step[0]
    seen = sum(classes_per_step[: step + 1])
    return {"old": list(range(1, base)), "new": list(range(base, seen)), "all": list(range(1, seen)),
            "old_bg": list(range(0, base)), "all_bg": list(range(0, seen))}


def summarize(iou: Sequence[float], classes_per_step: Sequence[int], step: int) -> dict[str, float]:
    """mIoU of each class group (see `class_groups`), NaN for an empty group (new at step 0)."""
    return {group: nanmean([iou[c] for c in channels])
            for group, channels in class_groups(classes_per_step, step).items()}


def forgetting(per_step_iou: Sequence[Sequence[float]]) -> list[float]:
    """Per class: best IoU at any earlier step minus IoU after the last step (NaN if never seen)."""
    final = per_step_iou[-1]
    result = []
    for channel, last in enumerate(final):
        earlier = [step_iou[channel] for step_iou in per_step_iou[:-1]
                   if channel < len(step_iou) and not math.isnan(step_iou[channel])]
        result.append(max(earlier) - last if earlier and not math.isnan(last) else float("nan"))
    return result


def old_class_errors(matrix: torch.Tensor | ConfusionMatrix, classes_per_step: Sequence[int]) -> dict[str, float]:
    """Where the old classes' IoU goes, from a confusion matrix (rows = truth, columns = prediction).

    Old classes are the step-0 foreground, channels 1..classes_per_step[0]-1 (as in `class_groups`);
    channel 0 is background; every later channel of the matrix is a new class. An old class's IoU
    is TP / (TP + FN + FP), so it falls in two different ways, and the shares below, all fractions
    of the old classes' ground-truth pixel count, tell them apart:
    - old-class pixels `correct`, or lost `as_background`, `as_other_old` (another old class) or
      `as_new`: these four sum to 1 (forgetting in the papers' sense: old objects not recognised);
    - `background_as_old` and `new_as_old`: pixels of background or of a new class that the model
      assigns to an old class (false positives: old classes spreading over other pixels).
    Row 0 holds whatever the test labels call 0: on ADE20K class 0 is "other", and with the
    default `data.ade_class0 = "ignore"` it is not scored, so `background_as_old` is 0 there; with
    `data.test_future = "background"`, pixels of classes still to come count as background.
    Taught in `10_comparing_methods`.
    """
    counts = (matrix.matrix if isinstance(matrix, ConfusionMatrix) else matrix).double()  # (S, S)
    if counts.dim() != 2 or counts.shape[0] != counts.shape[1]:
        raise ValueError(f"expected a square (classes, classes) confusion matrix, got shape {tuple(counts.shape)}")
    base = classes_per_step[0]
    if not 1 < base <= counts.shape[0]:
        raise ValueError(f"the task's step 0 has {base} channel(s), the confusion matrix {counts.shape[0]}: "
                         "pass the task's classes_per_step and a matrix over its seen classes")
    old, new = slice(1, base), slice(base, None)
    old_pixels = counts[old].sum()
    if old_pixels == 0:
        raise ValueError("the confusion matrix has no pixel of an old class: evaluate on images that contain some")
    correct = counts.diagonal()[old].sum()
    shares = {"correct": correct, "as_background": counts[old, 0].sum(),
              "as_other_old": counts[old, old].sum() - correct, "as_new": counts[old, new].sum(),
              "background_as_old": counts[0, old].sum(), "new_as_old": counts[new, old].sum()}
    return {name: float(value / old_pixels) for name, value in shares.items()}


def format_history(history: Sequence[dict], background_in_mean: bool) -> str:
    """A plain-text per-step table of old / new / all mIoU, with and without background."""
    header = f"{'step':>4} {'old':>7} {'new':>7} {'all':>7} | {'old+bg':>7} {'all+bg':>7}"
    lines = [header, "-" * len(header)]
    for entry in history:
        summary = entry["summary"]
        cells = [summary[key] for key in ("old", "new", "all", "old_bg", "all_bg")]
        lines.append(f"{entry['step']:>4} " + " ".join(_percent(value) for value in cells[:3])
                     + " | " + " ".join(_percent(value) for value in cells[3:]))
    headline = "with" if background_in_mean else "without"
    lines.append(f"(mIoU in %; old = step-0 classes, new = classes added later; headline convention: {headline} background)")
    return "\n".join(lines)


def _percent(value: float) -> str:
    return f"{'-':>7}" if math.isnan(value) else f"{100 * value:7.1f}"
