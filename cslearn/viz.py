"""Pictures of masks, predictions and results: palettes, overlays, prediction grids, history,
per-class IoU, per-term loss and confusion-matrix plots.

Every plotting function returns a matplotlib `Figure` and never calls `plt.show()`. Without an
`ax` argument the figure is created by pyplot and closed at once: a notebook shows it exactly
once when it is the value of the cell (or through `display(fig)`), a script saves it with
`fig.savefig(...)`, and nothing accumulates in pyplot's list of open figures. With `ax=...`
the function draws into that axes and returns its figure, left open. Depends only on
`cslearn.metrics` and `cslearn.palettes` (DESIGN.md). Used from `01_segmentation_refresher` on.
"""
from __future__ import annotations

import math
from typing import Mapping, Optional, Sequence, Union

import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns
import torch
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from cslearn.metrics import ConfusionMatrix, forgetting
from cslearn.palettes import get_palette

from cslearn.protocol import IGNORE_INDEX  # the one definition of the ignore label
# ImageNet statistics, the normalisation of `cslearn.data.transforms` (a test checks they agree).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
GROUP_TITLES = {"old": "old classes", "new": "new classes", "all": "all classes",
                "old_bg": "old classes + background", "all_bg": "all classes + background"}

History = Sequence[dict]
PaletteLike = Union[str, np.ndarray]


def _palette(palette: PaletteLike) -> np.ndarray:
    return get_palette(palette) if isinstance(palette, str) else np.asarray(palette, dtype=np.uint8)


def _numpy(array) -> np.ndarray:
    return array.detach().cpu().numpy() if isinstance(array, torch.Tensor) else np.asarray(array)


def colorize(mask, palette: PaletteLike = "toy") -> np.ndarray:
    """(H, W) integer labels (array or tensor, 255 = ignore) -> (H, W, 3) uint8 colours."""
    labels = _numpy(mask).astype(np.int64)
    colours = _palette(palette)
    if labels.min(initial=0) < 0 or labels.max(initial=0) >= len(colours):
        raise ValueError(f"mask values must lie in 0..{len(colours) - 1}, got {labels.min()}..{labels.max()}")
    return colours[labels]


def to_rgb(image, normalized: Optional[bool] = None) -> np.ndarray:
    """An image as (H, W, 3) float in [0, 1] from a PIL image, an (H, W, 3) uint8 array or a
    (3, H, W) float tensor. `normalized` says whether the tensor carries ImageNet normalisation
    (the training transforms); None guesses it from values outside [0, 1]."""
    array = _numpy(image)
    if array.ndim == 3 and array.shape[0] == 3 and array.shape[-1] != 3:
        array = array.transpose(1, 2, 0)  # (3, H, W) -> (H, W, 3)
    if array.dtype == np.uint8:
        return array.astype(np.float32) / 255
    array = array.astype(np.float32)
    if normalized is None:
        normalized = bool(array.min() < 0 or array.max() > 1)
    if normalized:
        array = array * np.array(IMAGENET_STD, dtype=np.float32) + np.array(IMAGENET_MEAN, dtype=np.float32)
    return np.clip(array, 0, 1)


def overlay(image, mask, palette: PaletteLike = "toy", alpha: float = 0.6) -> np.ndarray:
    """The image with every labelled pixel (not background 0, not ignore 255) tinted by the
    colour of its class; (H, W, 3) float in [0, 1]."""
    rgb = to_rgb(image)
    labels = _numpy(mask)
    colours = colorize(labels, palette).astype(np.float32) / 255
    tinted = (labels != 0) & (labels != IGNORE_INDEX)
    blended = rgb.copy()
    blended[tinted] = (1 - alpha) * rgb[tinted] + alpha * colours[tinted]
    return blended


def _new_figure(ax, figsize) -> tuple[Figure, "plt.Axes", bool]:
    if ax is not None:
        return ax.figure, ax, False
    figure, ax = plt.subplots(figsize=figsize)
    return figure, ax, True


def _finish(figure: Figure, created: bool) -> Figure:
    if created:
        figure.tight_layout()
        plt.close(figure)  # shown once as the cell's value, never again at the end of the cell
    return figure


def show_predictions(images, targets, predictions, class_names: Sequence[str], palette: PaletteLike = "toy",
                     overlay_alpha: Optional[float] = None, size: float = 2.0,
                     target_title: str = "ground truth") -> Figure:
    """A grid: one row per image; columns image, ground truth, then each prediction.

    images: (B, 3, H, W) tensors (normalised or not), or a list of PIL images / arrays.
    targets, predictions: (B, H, W) labels; predictions may be {column title: (B, H, W)} to
    compare models side by side, or {} to show the label maps only. With `overlay_alpha`, masks
    are drawn over the image instead of on their own. The legend lists the classes present.
    """
    columns = dict(predictions) if isinstance(predictions, Mapping) else {"prediction": predictions}
    masks = {target_title: targets, **columns}
    count = len(images)
    figure, axes = plt.subplots(count, 1 + len(masks), figsize=(size * (1 + len(masks)), size * count + 0.6),
                                squeeze=False)
    present: set[int] = set()
    for row in range(count):
        axes[row, 0].imshow(to_rgb(images[row]))
        for column, (title, batch) in enumerate(masks.items(), start=1):
            mask = _numpy(batch[row])
            present.update(int(value) for value in np.unique(mask) if value != IGNORE_INDEX)
            picture = overlay(images[row], mask, palette, overlay_alpha) if overlay_alpha else colorize(mask, palette)
            axes[row, column].imshow(picture, interpolation="nearest")
        for column, title in enumerate(["image", *masks]):
            axes[row, column].set_xticks([])
            axes[row, column].set_yticks([])
            if row == 0:
                axes[row, column].set_title(title, fontsize=9)
    colours = _palette(palette)
    handles = [Patch(color=colours[label] / 255, label=class_names[label]) for label in sorted(present)]
    figure.legend(handles=handles, loc="lower center", ncol=min(len(handles), 5), fontsize=8, frameon=False)
    figure.tight_layout(rect=(0, 0.1 if count < 3 else 0.06, 1, 1))
    plt.close(figure)
    return figure


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
    ax.set_title(title or f"mIoU of the {' / '.join(GROUP_TITLES.get(name, name) for name in groups)}")
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
