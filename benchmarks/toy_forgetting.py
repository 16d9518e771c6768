"""Where the old classes' mIoU goes, and how far their features drift, in finished runs.

    python benchmarks/toy_forgetting.py RUN_DIR [RUN_DIR ...]

For run directories written by `run_protocol` (e.g. kept with `toy_protocol.py --runs DIR`),
evaluates the step-0 model and the last step's model on the last step's test images and prints
one row for each, from the confusion matrix: the old-class mIoU (on these images, so the step-0
row can differ a little from history.json's step 0, scored on the step-0 test images) and
shares of the old-class pixels (classes 1..base-1):

- old-class pixels predicted correctly, as background, as another old class, as a new class:
  forgetting in the papers' sense (recall lost; SDR and UCD act on the features of these pixels);
- background or new-class pixels predicted as an old class: false positives, which lower
  old-class IoU without any old-class pixel being lost (UCD drops background pixels; SDR's terms
  treat background as one class among others: attraction pulls its features to the step-0
  background prototype, repulsion and sparsification include it, and none penalises an old-class
  prediction on a background pixel);
- for the last step, the drift of old-class features, "body" (SDR's) and "pre_logits" (UCD's):
  the mean over old classes of 1 - cos(step-0 class mean, final class mean) and of
  |final mean - step-0 mean| / |step-0 mean|, class means over the test pixels of each class
  (labels brought to feature resolution by nearest, as the losses do), both models on the same images.

With several seeds of a method in one folder, a second table gives their means (runs are
grouped by parent folder, method and step: keep one setting per folder).
Last line: one JSON object with every figure. A diagnostic for BENCHMARKS.md, not a test.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from cslearn.checkpoints import load_checkpoint
from cslearn.config import RunConfig
from cslearn.course import model_for
from cslearn.data.sources import open_step_data
from cslearn.losses.latent import labels_at
from cslearn.metrics import ConfusionMatrix, iou_per_class, old_class_errors, summarize
from cslearn.models.output import predicted_labels
from cslearn.protocol import get_task

FEATURES = ("body", "pre_logits")


def load_model(checkpoint: dict, config: RunConfig) -> torch.nn.Module:
    """`cslearn.course.load_model` on a checkpoint already read (its config and metrics are needed too)."""
    model = model_for(config, checkpoint["classes_per_step"], pretrained=False)
    model.load_state_dict(checkpoint["model"])
    return model.eval()


@torch.no_grad()
def measure(run_dir: Path) -> list[dict]:
    steps = sorted(run_dir.glob("step-*.pt"), key=lambda path: int(path.stem.split("-")[1]))
    if len(steps) < 2 or steps[0].name != "step-0.pt":
        raise SystemExit(f"{run_dir}: needs step-0.pt and a later step-<t>.pt; run the protocol first")
    first, last = load_checkpoint(steps[0]), load_checkpoint(steps[-1])
    config = RunConfig.from_dict(last["config"])
    task = get_task(config.data.dataset, config.data.task, config.data.order)
    final_step = last["metrics"]["step"]
    base = task.classes_per_step[0]  # old classes: 1..base-1
    models = {"step0": load_model(first, config), "final": load_model(last, config)}
    loader = open_step_data(config.data).test_loader(task, final_step, config.train.batch_size)
    matrices = {name: ConfusionMatrix(sum(task.classes_per_step[: final_step + 1])) for name in models}
    sums = {(name, f): None for name in models for f in FEATURES}  # (base, C) per-class feature sums
    counts = {f: torch.zeros(base, dtype=torch.float64) for f in FEATURES}  # (base,) pixels per class
    for images, targets in loader:
        outputs = {name: model(images) for name, model in models.items()}
        for name in models:
            matrices[name].update(predicted_labels(outputs[name].logits), targets)
        for f in FEATURES:
            small = labels_at(targets, outputs["final"].features[f].shape[-2:])  # (B, h, w), nearest
            keep = small < base  # background and old classes (255 and new classes dropped)
            labels = small[keep]  # (n,)
            counts[f] += torch.bincount(labels, minlength=base).double()
            for name in models:
                feature = outputs[name].features[f].permute(0, 2, 3, 1)[keep].double()  # (B, C, h, w) -> (n, C)
                total = torch.zeros(base, feature.shape[1], dtype=torch.float64).index_add_(0, labels, feature)
                sums[name, f] = total if sums[name, f] is None else sums[name, f] + total
    drift = {}
    for f in FEATURES:
        present = torch.arange(1, base)[counts[f][1:] > 0]  # old classes with test pixels
        before = sums["step0", f][present] / counts[f][present, None]  # (K, C) class means
        after = sums["final", f][present] / counts[f][present, None]
        drift[f"{f}_cosine"] = float((1 - F.cosine_similarity(before, after, dim=1)).mean())
        drift[f"{f}_relative"] = float(((after - before).norm(dim=1) / before.norm(dim=1)).mean())
    rows = []
    for name in models:  # the step-0 model, then the last step's, both on the final test images
        matrix = matrices[name].matrix  # (S, S), rows = truth, columns = prediction
        rows.append({"run": f"{run_dir.parent.name}/{run_dir.name}", "group": run_dir.parent.name,
                     "method": config.method, "seed": config.train.seed,
                     "step": 0 if name == "step0" else final_step,
                     "old_miou": summarize(iou_per_class(matrix), task.classes_per_step, final_step)["old"],
                     "old_pixels": int(matrix[1:base].sum()), **old_class_errors(matrix, task.classes_per_step),
                     **(drift if name == "final" else {})})
    return rows


FIGURES = ("old_miou", "correct", "as_background", "as_other_old", "as_new", "background_as_old", "new_as_old",
           "body_cosine", "body_relative", "pre_logits_cosine", "pre_logits_relative")


def print_table(rows: list[dict], first_column: str) -> None:
    print(f"| {first_column} | step | old mIoU | old pixels: correct | as background | as other old | as new "
          "| background as old | new as old | body drift (1-cos / rel.) | pre_logits drift (1-cos / rel.) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        drift = (f"{r['body_cosine']:.3f} / {r['body_relative']:.3f} | "
                 f"{r['pre_logits_cosine']:.3f} / {r['pre_logits_relative']:.3f}") if "body_cosine" in r else " | "
        print(f"| {r[first_column]} | {r['step']} | {r['old_miou']:.3f} | {r['correct']:.3f} | {r['as_background']:.3f} "
              f"| {r['as_other_old']:.3f} | {r['as_new']:.3f} | {r['background_as_old']:.3f} "
              f"| {r['new_as_old']:.3f} | {drift} |")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("runs", nargs="+", type=Path)
    args = parser.parse_args()
    rows = [row for run_dir in args.runs for row in measure(run_dir)]
    print_table(rows, "run")
    groups: dict[tuple[str, str, int], list[dict]] = {}  # runs of one folder (one setting), method and step
    for row in rows:
        groups.setdefault((row["group"], row["method"], row["step"]), []).append(row)
    means = []
    if any(len(group) > 1 for group in groups.values()):  # several seeds: the mean per method and step
        for (folder, method, step), group in groups.items():
            mean = {key: statistics.mean(row[key] for row in group) for key in FIGURES if key in group[0]}
            means.append({"method": f"{folder}/{method} ({len(group)} runs)", "step": step, **mean})
        print()
        print_table(means, "method")
    print(f"Command: `python benchmarks/toy_forgetting.py {' '.join(sys.argv[1:])}`")
    print(json.dumps({"runs": rows, "means": means}))


if __name__ == "__main__":
    main()
