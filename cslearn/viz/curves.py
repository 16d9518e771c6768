"""Curves and tables of runs: mIoU after each step (`plot_history`, from
`03_catastrophic_forgetting` on), per-class IoU per step (`iou_table`, `plot_class_iou_heatmap`,
notebooks 03 and 12), forgetting per class (`plot_forgetting`, 03 and 06), every loss term per
epoch (`plot_losses`, 03 to 09), the confusion matrix (`plot_confusion`, 01), and several full
runs' per-class IoU after their last step side by side (`final_iou_table`, `plot_final_class_iou`,
notebooks 12 and 13).
"""
from __future__ import annotations

import math
from typing import Mapping, Optional, Sequence, Union

import numpy as np
import seaborn as sns
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure

from cslearn.metrics import ConfusionMatrix, forgetting
from cslearn.viz.base import GROUP_TITLES, History, _finish, _new_figure, _numpy


def plot_history(histories: Union[History, Mapping[str, History]], group: Union[str, Sequence[str]] = "all",
                 ax=None, title: Optional[str] = None) -> Figure:
    """mIoU (%) after each step: one line per method (and per group when `group` is a list).

    Colour = method, line style = group. A single-step history among multi-step ones (joint
    training, the upper bound) is drawn as a horizontal line across all steps.
    """
    runs = dict(histories) if isinstance(histories, Mapping) else {"": histories}
    groups = [group] if isinstance(group, str) else list(group)
    figure, ax, created = _new_figure(ax, (6, 3.6))
    last_step = max(len(history) for history in runs.values()) - 1
    styles = ["-", "--", ":", "-."]
    for index, (method, history) in enumerate(runs.items()):
        colour = f"C{index}"
        for group_index, name in enumerate(groups):
            label = " ".join(part for part in (method, GROUP_TITLES.get(name, name) if len(groups) > 1 else "") if part)
            values = [100 * entry["summary"][name] for entry in history]
            style = styles[group_index % len(styles)]
            if len(history) == 1 and last_step > 0:
                ax.axhline(values[0], color=colour, linestyle=style, alpha=0.7, label=f"{label} (one step)")
            else:
                ax.plot([entry["step"] for entry in history], values, marker="o", color=colour,
                        linestyle=style, label=label or None)
    ax.set_xlabel("step")
    ax.set_ylabel("mIoU (%)")
    ax.set_ylim(0, 100)
    ax.set_xticks(range(last_step + 1))
    ax.set_title(title or f"mIoU: {' / '.join(GROUP_TITLES.get(name, name) for name in groups)}")
    if any(method for method in runs) or len(groups) > 1:
        ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _finish(figure, created)


def _channel_names(history: History, class_names: Sequence[str], num_channels: int) -> list[str]:
    """Names of the output channels: class_names is indexed by original class id and channels
    follow the task order recorded in the history ("seen_classes")."""
    order = history[-1].get("seen_classes") or list(range(num_channels))
    return [class_names[order[channel]] if channel < len(order) else str(channel) for channel in range(num_channels)]


def iou_table(history: History) -> np.ndarray:
    """(steps, channels) per-class IoU in %, NaN where a class is not yet seen or has no pixels."""
    num_channels = max(len(entry["iou"]) for entry in history)
    table = np.full((len(history), num_channels), np.nan)
    for row, entry in enumerate(history):
        table[row, :len(entry["iou"])] = [100 * value for value in entry["iou"]]
    return table


def plot_class_iou_heatmap(history: History, class_names: Sequence[str], ax=None, annotate: bool = True) -> Figure:
    """Per-class IoU (%) after each step, steps as rows and classes as columns (blank = not
    seen yet). A white line separates the step-0 classes from the classes added later."""
    table = iou_table(history)
    names = _channel_names(history, class_names, table.shape[1])
    figure, ax, created = _new_figure(ax, (max(6.0, 0.42 * table.shape[1]), 0.5 * len(history) + 1.8))
    sns.heatmap(table, ax=ax, vmin=0, vmax=100, cmap="viridis", annot=annotate, fmt=".0f",
                annot_kws={"fontsize": 7}, xticklabels=names, cbar_kws={"label": "IoU (%)"},
                yticklabels=[f"step {entry['step']}" for entry in history])
    if len(history) > 1 and len(history[0]["iou"]) < table.shape[1]:
        ax.axvline(len(history[0]["iou"]), color="white", linewidth=2)
    ax.set_xlabel("class")
    ax.tick_params(axis="x", labelrotation=90, labelsize=8)
    ax.tick_params(axis="y", labelrotation=0)
    return _finish(figure, created)


def plot_forgetting(histories: Union[History, Mapping[str, History]], class_names: Sequence[str],
                    ax=None) -> Figure:
    """Per class: best IoU at an earlier step minus the final IoU (`metrics.forgetting`), in
    points of IoU, one group of bars per method. Classes never seen before the end are skipped."""
    runs = dict(histories) if isinstance(histories, Mapping) else {"": histories}
    runs = {method: history for method, history in runs.items() if len(history) > 1}
    drops = {method: forgetting([entry["iou"] for entry in history]) for method, history in runs.items()}
    width = max(len(values) for values in drops.values())
    channels = [c for c in range(width) if any(c < len(v) and not math.isnan(v[c]) for v in drops.values())]
    names = _channel_names(next(iter(runs.values())), class_names, width)
    figure, ax, created = _new_figure(ax, (max(6.0, 0.35 * len(channels)), 3.6))
    bar_width = 0.8 / len(drops)
    for index, (method, values) in enumerate(drops.items()):
        positions = np.arange(len(channels)) + (index - (len(drops) - 1) / 2) * bar_width
        ax.bar(positions, [100 * values[c] for c in channels], width=bar_width, label=method or None)
    ax.set_xticks(np.arange(len(channels)), [names[c] for c in channels], rotation=90, fontsize=8)
    ax.set_ylabel("forgetting (IoU points)")
    ax.axhline(0, color="black", linewidth=0.8)
    if any(drops):
        ax.legend(fontsize=8)
    return _finish(figure, created)


def plot_losses(history: History, ax=None, log: bool = False) -> Figure:
    """Every loss term (and the weighted total, dashed) per epoch, over all steps in a row;
    shaded bands mark the steps. Term values are unweighted, as the training loop logs them."""
    rows = [(entry["step"], epoch_losses) for entry in history for epoch_losses in entry.get("losses", [])]
    names = list(dict.fromkeys(name for _, losses in rows for name in losses))
    figure, ax, created = _new_figure(ax, (7, 3.6))
    epochs = np.arange(1, len(rows) + 1)
    for name in names:
        values = [losses.get(name, np.nan) for _, losses in rows]
        style = {"color": "black", "linestyle": "--"} if name == "total" else {}
        ax.plot(epochs, values, marker=".", label=name, **style)
    start = 0.5
    for step in dict.fromkeys(step for step, _ in rows):
        length = sum(1 for row_step, _ in rows if row_step == step)
        if step % 2 == 1:
            ax.axvspan(start, start + length, color="grey", alpha=0.12, linewidth=0)
        ax.text(start + length / 2, 1.0, f"step {step}", transform=ax.get_xaxis_transform(), ha="center",
                va="bottom", fontsize=7)
        start += length
    ax.set_xlabel("epoch (all steps in a row)")
    ax.set_ylabel("loss")
    if log:
        ax.set_yscale("log")
    ax.legend(fontsize=8)
    return _finish(figure, created)


def plot_confusion(matrix, class_names: Sequence[str], normalize: bool = True, ax=None,
                   annotate: Optional[bool] = None, log_scale: bool = False) -> Figure:
    """The confusion matrix (rows = true class, columns = prediction). With `normalize`, each
    row is divided by its number of pixels: the diagonal is then each class's recall (%).
    `log_scale` colours on a logarithmic scale and leaves empty cells white, so that rare
    mistakes of a good model become visible."""
    values = _numpy(matrix.matrix if isinstance(matrix, ConfusionMatrix) else matrix).astype(np.float64)
    if normalize:
        totals = values.sum(axis=1, keepdims=True)
        values = np.divide(100 * values, totals, out=np.full_like(values, np.nan), where=totals > 0)
    names = list(class_names)[:len(values)]
    size = max(4.0, 0.38 * len(values) + 1.5)
    figure, ax, created = _new_figure(ax, (size + 1, size))
    annotate = len(values) <= 12 if annotate is None else annotate
    empty, norm = None, None
    if log_scale:
        empty = ~(values > 0)  # zero or NaN: drawn white
        positive = values[~empty]
        norm = LogNorm(vmin=positive.min(), vmax=positive.max()) if positive.size else None
    sns.heatmap(values, ax=ax, cmap="Blues", annot=annotate, fmt=".0f", mask=empty, norm=norm,
                xticklabels=names, yticklabels=names, square=True,
                cbar_kws={"label": "% of the true class" if normalize else "pixels"})
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.tick_params(labelsize=8)
    return _finish(figure, created)


def final_iou_table(histories: Mapping[str, History]) -> np.ndarray:
    """(runs, channels) per-class IoU in % after each run's last step (a joint run: its only
    step); NaN where a run has not seen the channel or the test set has no pixel of it. The runs
    must share a task: channel c means the same class in every row."""
    finals = [history[-1]["iou"] for history in histories.values()]
    table = np.full((len(finals), max(len(iou) for iou in finals)), np.nan)  # (runs, channels)
    for row, iou in enumerate(finals):
        table[row, :len(iou)] = [100 * value for value in iou]
    return table


def plot_final_class_iou(histories: Mapping[str, History], class_names: Sequence[str], ax=None,
                         annotate: Optional[bool] = None, max_labels: int = 40) -> Figure:
    """Per-class IoU (%) after the last step of several runs of one task: one row per run, one
    column per channel (blank = NaN, see `final_iou_table`). A white line separates the step-0
    classes from the later ones (from the first run with several steps). Values are written in
    the cells when `annotate` (default: up to 30 channels); with more than `max_labels` channels
    only every k-th class name is written under the axis (ADE20K has 151)."""
    table = final_iou_table(histories)
    widest = max(histories.values(), key=lambda history: len(history[-1]["iou"]))
    names = _channel_names(widest, class_names, table.shape[1])
    annotate = table.shape[1] <= 30 if annotate is None else annotate
    figure, ax, created = _new_figure(ax, (min(18.0, max(6.0, 0.42 * table.shape[1])), 0.45 * len(table) + 2.0))
    sns.heatmap(table, ax=ax, vmin=0, vmax=100, cmap="viridis", annot=annotate, fmt=".0f",
                annot_kws={"fontsize": 7}, xticklabels=False, yticklabels=list(histories),
                cbar_kws={"label": "IoU (%)"})
    every = max(1, math.ceil(table.shape[1] / max_labels))
    shown = np.arange(0, table.shape[1], every)  # (labels,) channels whose name is written
    ax.set_xticks(shown + 0.5, [names[channel] for channel in shown], rotation=90, fontsize=8 if every == 1 else 7)
    incremental = [history for history in histories.values() if len(history) > 1]
    if incremental and len(incremental[0][0]["iou"]) < table.shape[1]:
        ax.axvline(len(incremental[0][0]["iou"]), color="white", linewidth=2)
    ax.set_xlabel("class" if every == 1 else f"class (one name in {every} written)")
    ax.tick_params(axis="y", labelrotation=0)
    ax.set_title("per-class IoU after the last step")
    return _finish(figure, created)
