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


# ---------------------------------------------------------------------------------------------
# Latent space: features per class, PCA, prototype similarity and drift (notebooks 06 and 07).


@torch.no_grad()
def collect_class_features(model: torch.nn.Module, images: torch.Tensor, targets: torch.Tensor,
                           num_classes: Optional[int] = None, feature: str = "body", max_per_class: int = 200,
                           batch_size: int = 16, seed: int = 0) -> dict[str, torch.Tensor]:
    """Run `model` (eval mode, no gradient) on images and gather its `feature` map per class.

    images (N, 3, H, W), targets (N, H, W) channel labels (255 = ignore). Labels are brought to
    the feature resolution h×w by nearest resizing (the top-left pixel of each block), as SDR's
    terms do (`cslearn.losses.latent.labels_at`); ignored positions are dropped. Returns CPU
    float32 tensors:
        "features" (n, C) and "labels" (n,): at most `max_per_class` positions per class, a
                   uniform sample without replacement over all batches (seeded, reproducible);
        "means"    (num_classes, C): the mean over ALL positions of each class (NaN if absent);
        "counts"   (num_classes,) int64: the number of positions of each class.
    num_classes defaults to `model.num_classes` (a `Segmenter`). Memory stays bounded by the
    sample, whatever the number of images (ResNet-101 `body` has 2048 channels).
    """
    num_classes = int(model.num_classes if num_classes is None else num_classes)
    generator = torch.Generator().manual_seed(seed)
    device = next(model.parameters()).device
    model.eval()
    counts = torch.zeros(num_classes, dtype=torch.int64)  # (num_classes,)
    sums = torch.zeros(num_classes, 0, dtype=torch.float64)  # (num_classes, C) once C is known
    kept_features = torch.zeros(0, 0)  # (k, C): the sample so far, grouped by class
    kept_labels, kept_keys = torch.zeros(0, dtype=torch.int64), torch.zeros(0)  # (k,), (k,)
    for start in range(0, len(images), batch_size):
        body = model(images[start:start + batch_size].to(device)).features[feature].float().cpu()  # (b, C, h, w)
        labels = torch.nn.functional.interpolate(targets[start:start + batch_size, None].float(),
                                                 size=body.shape[-2:], mode="nearest")  # (b, 1, h, w)
        labels = labels[:, 0].long().reshape(-1)  # (b·h·w,)
        vectors = body.permute(0, 2, 3, 1).reshape(-1, body.shape[1])  # (b·h·w, C), channels last
        valid = (labels != IGNORE_INDEX) & (labels < num_classes)  # (b·h·w,)
        vectors, labels = vectors[valid], labels[valid]  # (m, C), (m,)
        if sums.shape[1] != vectors.shape[1]:  # the first batch: now C is known
            sums = torch.zeros(num_classes, vectors.shape[1], dtype=torch.float64)  # (num_classes, C)
            kept_features = torch.zeros(0, vectors.shape[1])  # (0, C)
        sums.index_add_(0, labels, vectors.double())
        counts += torch.bincount(labels, minlength=num_classes)
        # Uniform sample per class: keep the `max_per_class` positions of smallest random key.
        keys = torch.cat([kept_keys, torch.rand(len(labels), generator=generator)])  # (k + m,)
        pool_labels = torch.cat([kept_labels, labels])  # (k + m,)
        pool = torch.cat([kept_features, vectors])  # (k + m, C)
        order = torch.argsort(keys)  # (k + m,) by key...
        order = order[torch.argsort(pool_labels[order], stable=True)]  # ...within each class
        per_class = torch.bincount(pool_labels, minlength=num_classes)  # (num_classes,)
        starts = torch.cumsum(per_class, 0) - per_class  # (num_classes,) first slot of each class
        rank = torch.arange(len(order)) - starts[pool_labels[order]]  # (k + m,) rank inside its class
        keep = order[rank < max_per_class]  # (k',) indices into the pool, grouped by class
        kept_features, kept_labels, kept_keys = pool[keep], pool_labels[keep], keys[keep]
    means = (sums / counts[:, None]).float()  # (num_classes, C), NaN rows where a class is absent
    return {"features": kept_features, "labels": kept_labels, "means": means, "counts": counts}


def pca_basis(features: torch.Tensor, num_components: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """The principal axes of features (n, C): their mean (C,) and the top `num_components`
    directions (C, k), from an SVD of the centred matrix. Signs are fixed (the largest loading
    of each direction is positive), so the same data always gives the same picture."""
    features = torch.as_tensor(features).float()
    mean = features.mean(dim=0)  # (C,)
    _, _, right = torch.linalg.svd(features - mean, full_matrices=False)  # right: (min(n, C), C)
    components = right[:num_components].T.clone()  # (C, k)
    largest = components.abs().argmax(dim=0)  # (k,)
    components *= torch.sign(components[largest, torch.arange(components.shape[1])])  # (C, k)
    return mean, components


def pca_project(features: torch.Tensor, basis: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """features (n, C) -> coordinates (n, k) on the axes of `pca_basis`."""
    mean, components = basis
    return (torch.as_tensor(features).float() - mean) @ components  # (n, k)


def _class_colour(label: int, palette: PaletteLike, class_ids: Optional[Sequence[int]]) -> np.ndarray:
    index = class_ids[label] if class_ids is not None else label
    return _palette(palette)[index] / 255


def plot_latent_space(panels: Mapping[str, tuple[torch.Tensor, torch.Tensor]], class_names: Sequence[str],
                      palette: PaletteLike = "toy", class_ids: Optional[Sequence[int]] = None,
                      basis: Optional[tuple[torch.Tensor, torch.Tensor]] = None, columns: int = 2,
                      size: float = 3.6, point_size: float = 4.0) -> Figure:
    """Scatter plots of features projected on two principal axes, one panel per entry.

    panels: {title: (features (n, C), labels (n,))}, e.g. `collect_class_features` of several
    models. All panels share ONE projection (`basis`, or a `pca_basis` fitted on all panels
    together) and the same axis limits, so a class that moves between panels really moved.
    Points are coloured by class (`palette` indexed by `class_ids[label]`, or by the label);
    each class mean is drawn as a large marker. class_names is indexed by label.
    """
    items = list(panels.items())
    if basis is None:
        basis = pca_basis(torch.cat([torch.as_tensor(features) for _, (features, _) in items]))
    points = [pca_project(features, basis)[:, :2].numpy() for _, (features, _) in items]  # each (n, 2)
    every = np.concatenate(points)
    low, high = every.min(axis=0), every.max(axis=0)
    margin = 0.05 * (high - low + 1e-12)
    rows = math.ceil(len(items) / columns)
    figure, axes = plt.subplots(rows, min(columns, len(items)), figsize=(size * min(columns, len(items)), size * rows + 0.8),
                                squeeze=False)
    present: set[int] = set()
    for ax, (title, (_, labels)), coordinates in zip(axes.flat, items, points):
        labels = _numpy(labels)
        for label in np.unique(labels).tolist():
            chosen = coordinates[labels == label]
            colour = _class_colour(label, palette, class_ids)
            ax.scatter(chosen[:, 0], chosen[:, 1], s=point_size, color=colour, alpha=0.35, linewidths=0)
            centre = chosen.mean(axis=0)
            ax.scatter([centre[0]], [centre[1]], s=70, color=colour, edgecolors="black", linewidths=0.8, zorder=3)
            present.add(int(label))
        ax.set_title(title, fontsize=9)
        ax.set_xlim(low[0] - margin[0], high[0] + margin[0])
        ax.set_ylim(low[1] - margin[1], high[1] + margin[1])
        ax.set_xlabel("principal axis 1", fontsize=8)
        ax.set_ylabel("principal axis 2", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(items):]:
        ax.axis("off")
    handles = [Patch(color=_class_colour(label, palette, class_ids), label=class_names[label])
               for label in sorted(present)]
    figure.legend(handles=handles, loc="lower center", ncol=min(len(handles), 6), fontsize=7, frameon=False)
    legend_height = 0.16 * math.ceil(len(handles) / 6) + 0.05  # inches
    figure.tight_layout(rect=(0, min(0.4, legend_height / (size * rows + 0.8)), 1, 1))
    plt.close(figure)
    return figure


def cosine_similarity_matrix(prototypes: torch.Tensor) -> np.ndarray:
    """(S, C) vectors -> (S, S) cosine similarities; NaN in the rows and columns of zero vectors
    (a prototype the bank never observed)."""
    vectors = torch.as_tensor(prototypes).double()
    norms = vectors.norm(dim=1)  # (S,)
    similarity = (vectors @ vectors.T) / (norms[:, None] * norms[None, :])  # (S, S)
    similarity[(norms == 0)[:, None] | (norms == 0)[None, :]] = float("nan")
    return similarity.numpy()


def plot_prototype_similarity(prototypes: torch.Tensor, class_names: Sequence[str], ax=None,
                              annotate: Optional[bool] = None, split: Optional[int] = None) -> Figure:
    """Cosine similarity between class prototypes (S, C) (e.g. SDR's stored running means), as a
    class-by-class heatmap; class_names is indexed by row. `split` draws white lines after the
    first `split` classes (the step-0 classes). Blank: a prototype that is still zero."""
    similarity = cosine_similarity_matrix(prototypes)
    names = list(class_names)[:len(similarity)]
    side = max(4.0, 0.34 * len(similarity) + 1.5)
    figure, ax, created = _new_figure(ax, (side + 1, side))
    annotate = len(similarity) <= 10 if annotate is None else annotate
    low = -1.0 if np.nanmin(similarity, initial=0.0) < 0 else 0.0
    sns.heatmap(similarity, ax=ax, vmin=low, vmax=1, cmap="magma", annot=annotate, fmt=".2f", square=True,
                xticklabels=names, yticklabels=names, cbar_kws={"label": "cosine similarity"})
    if split is not None and 0 < split < len(similarity):
        ax.axvline(split, color="white", linewidth=2)
        ax.axhline(split, color="white", linewidth=2)
    ax.tick_params(labelsize=7)
    return _finish(figure, created)


def prototype_drift(prototypes: Sequence[torch.Tensor], reference: int = 0, relative: bool = False) -> np.ndarray:
    """How far each class's prototype moved: ‖p_c(t) − p_c(reference)‖₂ for every entry t of
    `prototypes` (a list of (S_t, C) class means, e.g. the "means" of `collect_class_features`
    for the model after each step). Returns (steps, S_ref) for the classes of the reference
    entry; NaN where a class is missing (absent, or a NaN mean). `relative` divides by
    ‖p_c(reference)‖₂."""
    base = torch.as_tensor(prototypes[reference]).double()  # (S_ref, C)
    drift = np.full((len(prototypes), len(base)), np.nan)
    for row, current in enumerate(prototypes):
        current = torch.as_tensor(current).double()[:len(base)]  # (min(S_t, S_ref), C)
        distance = (current - base[:len(current)]).norm(dim=1)  # (min(S_t, S_ref),)
        if relative:
            norm = base[:len(current)].norm(dim=1)  # (min(S_t, S_ref),)
            distance = torch.where(norm > 0, distance / norm, float("nan"))
        drift[row, :len(current)] = distance.numpy()
    return drift


def plot_prototype_drift(drifts: Union[np.ndarray, Mapping[str, np.ndarray]], class_names: Sequence[str],
                         classes: Optional[Sequence[int]] = None, ax=None, ylabel: str = "distance from step 0") -> Figure:
    """Prototype drift per step (`prototype_drift` tables, (steps, classes)), one colour per run:
    a thin line per class and a thick line for the mean over the chosen `classes` (default: all
    columns). The class with the largest final drift of each run is named at its line's end."""
    runs = dict(drifts) if isinstance(drifts, Mapping) else {"": drifts}
    figure, ax, created = _new_figure(ax, (6, 3.6))
    for index, (name, table) in enumerate(runs.items()):
        table = np.asarray(table, dtype=float)
        columns = list(range(table.shape[1])) if classes is None else list(classes)
        steps = np.arange(len(table))
        for column in columns:
            ax.plot(steps, table[:, column], color=f"C{index}", alpha=0.25, linewidth=0.8)
        ax.plot(steps, np.nanmean(table[:, columns], axis=1), color=f"C{index}", linewidth=2.2, marker="o",
                label=f"{name} (mean over classes)" if name else "mean over classes")
        final = table[-1, columns]
        if np.isfinite(final).any():
            worst = columns[int(np.nanargmax(final))]
            ax.annotate(class_names[worst], (steps[-1], table[-1, worst]), fontsize=7, color=f"C{index}",
                        xytext=(3, 0), textcoords="offset points", va="center")
    num_steps = max(len(table) for table in runs.values())
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.set_xticks(range(num_steps))
    ax.set_xlim(-0.2, num_steps - 1 + 0.2 + 0.12 * num_steps)  # room for the class names at the end
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _finish(figure, created)


# UCD and PLOP pictures (notebooks 08_ucd_contrastive_distillation, 09_plop_pseudo_labels_and_pod).

def ucd_pixel_weights(old_logits_low: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per feature-map pixel, what UCD's uncertainty weight sees (methods.md §6.2-6.4), as maps.

    old_logits_low: (B, |O|, h, w) the old model's logits at feature resolution (q = softmax).
    labels:         (B, h, w) int ground truth ỹ at the same resolution (nearest-resized, 255 = void).
    Returns (B, h, w) float32 / int64 tensors on the CPU:
      "pseudo_labels": ȳ = ỹ where ỹ > 0, else argmax_c q(c) (0 = background, not an anchor); 255 at void;
      "confidence":    max_c q(c), the old model's confidence;
      "mean_weight":   (1/|P_i|) Σ_{j ∈ P_i} W_ij at every anchor i (ȳ > 0, not void); NaN elsewhere and
                       at anchors without positives.
    The same sets as `cslearn.losses.contrastive.build_contrast_set` over the whole batch (the
    exact loss, no per-class cap), without the N_a × N_c matrix: W_ij = q_i·q_j is linear in q_j,
    so Σ_{j ∈ P_i} W_ij = q_i·(Σ_j q_j) needs only per-label sums of q over the contrast entries.
    A label's entries are the current copies of its anchors plus, for pseudo-labelled pixels
    (ỹ = 0), the old model's key at the same pixel (same q); pairs of two ground-truth entries
    weigh 1 (the new-class override).
    """
    probs = torch.softmax(old_logits_low.detach().double().cpu(), dim=1)  # (B, |O|, h, w)
    probs = probs.permute(0, 2, 3, 1).reshape(-1, probs.shape[1])  # (B·h·w, |O|) q
    truth = labels.detach().cpu().long().reshape(-1)  # (B·h·w,) ỹ
    valid = truth != IGNORE_INDEX
    ground_truth = valid & (truth > 0)  # labelled new-class pixels
    pseudo = torch.where(ground_truth, truth, probs.argmax(dim=1))  # (B·h·w,) ȳ
    anchor = valid & (pseudo > 0)
    pseudo_only = anchor & ~ground_truth  # also an old-model key: two contrast entries
    num_labels = int(pseudo[anchor].max()) + 1 if anchor.any() else 1
    index = torch.where(anchor, pseudo, torch.zeros_like(pseudo))  # (B·h·w,), 0 off anchors (masked below)
    copies = anchor.double() + pseudo_only.double()  # (B·h·w,) contrast entries of each pixel: 0, 1 or 2
    count = torch.zeros(num_labels, dtype=torch.float64).index_add_(0, index, copies)  # (labels,) entries
    truth_count = torch.zeros(num_labels, dtype=torch.float64).index_add_(0, index, ground_truth.double())
    sum_pseudo = torch.zeros(num_labels, probs.shape[1], dtype=torch.float64).index_add_(
        0, index, probs * (2.0 * pseudo_only.double())[:, None])  # (labels, |O|) Σ q over pseudo entries
    sum_truth = torch.zeros(num_labels, probs.shape[1], dtype=torch.float64).index_add_(
        0, index, probs * ground_truth.double()[:, None])  # (labels, |O|) Σ q over ground-truth entries
    own = (probs * probs).sum(dim=1)  # (B·h·w,) W of the anchor with its own copy (left out)
    from_pseudo = (probs * sum_pseudo[index]).sum(dim=1)  # (B·h·w,) Σ q_i·q_j over pseudo entries
    from_truth = (probs * sum_truth[index]).sum(dim=1)  # over ground-truth entries, as q_i·q_j
    total = torch.where(ground_truth, from_pseudo + (truth_count[index] - 1),  # truth-truth pairs weigh 1
                        from_pseudo + from_truth - own)
    num_positives = count[index] - 1  # (B·h·w,) |P_i|: the label's entries minus the own copy
    mean = torch.where(anchor & (num_positives > 0), total / num_positives.clamp(min=1),
                       torch.full_like(total, math.nan))
    shape = labels.shape
    return {"pseudo_labels": torch.where(valid, pseudo, torch.full_like(pseudo, IGNORE_INDEX)).reshape(shape),
            "confidence": probs.max(dim=1).values.float().reshape(shape),
            "mean_weight": mean.float().reshape(shape)}


def plot_contrast_matrix(values, anchor_labels, contrast_labels, names: Optional[Sequence[str]] = None,
                         ax=None, title: str = "similarity $s_{ij}$", cmap: str = "RdBu_r",
                         center: Optional[float] = 0.0, annotate: bool = True, fmt: str = ".1f") -> Figure:
    """A UCD contrast matrix (methods.md §6.3): one row per anchor i, one column per contrast entry j.

    values: (N_a, N_c) e.g. the similarities s_ij or the weights W_ij; anchor_labels (N_a,) and
    contrast_labels (N_c,) are the labels ȳ. As in `build_contrast_set`, the first N_a columns
    are the anchors' own detached copies (current model) and the rest the old model's keys: a
    line separates the two. Positives P_i (same label, not the own copy) are framed in black,
    the own copy is hatched, and the unframed cells are the negatives N_i. Tick labels give each
    entry's label (its name from `names`, indexed by label, when given).
    """
    from matplotlib.patches import Rectangle

    matrix = _numpy(values).astype(np.float64)
    rows, columns = _numpy(anchor_labels).astype(np.int64), _numpy(contrast_labels).astype(np.int64)
    if matrix.shape != (len(rows), len(columns)) or len(columns) < len(rows):
        raise ValueError(f"values must be (N_a, N_c) with N_c >= N_a, got {matrix.shape} for "
                         f"{len(rows)} anchors and {len(columns)} contrast entries")
    num_anchors = len(rows)

    def label(value: int) -> str:
        return names[value] if names is not None else str(value)

    figure, ax, created = _new_figure(ax, (0.5 * len(columns) + 2.5, 0.45 * num_anchors + 1.6))
    sns.heatmap(matrix, ax=ax, cmap=cmap, center=center, annot=annotate, fmt=fmt, annot_kws={"fontsize": 7},
                xticklabels=[f"{j}: {label(value)}" for j, value in enumerate(columns)],
                yticklabels=[f"{i}: {label(value)}" for i, value in enumerate(rows)], cbar_kws={"label": title})
    for i in range(num_anchors):
        for j in range(len(columns)):
            if j == i:
                ax.add_patch(Rectangle((j, i), 1, 1, fill=False, hatch="///", edgecolor="grey", linewidth=0))
            elif rows[i] == columns[j]:
                ax.add_patch(Rectangle((j + 0.04, i + 0.04), 0.92, 0.92, fill=False, edgecolor="black", linewidth=2))
    ax.axvline(num_anchors, color="black", linewidth=2)
    ax.set_xlabel("contrast entries j: current model, detached | old model's keys")
    ax.set_ylabel("anchors i (current model)")
    ax.tick_params(axis="x", labelrotation=90, labelsize=8)
    ax.tick_params(axis="y", labelrotation=0, labelsize=8)
    ax.set_title(f"{title}; framed = positives, hatched = own copy, others = negatives", fontsize=9)
    return _finish(figure, created)


def show_pixel_maps(images=None, masks: Optional[Mapping[str, object]] = None,
                    scalars: Optional[Mapping[str, object]] = None, class_names: Optional[Sequence[str]] = None,
                    palette: PaletteLike = "toy", ranges: Optional[Mapping[str, tuple[float, float]]] = None,
                    cmap: str = "magma", size: float = 2.2) -> Figure:
    """One row per image: the image, then label maps, then scalar maps with a colour bar each.

    images:  (B, 3, H, W) or (3, H, W) tensor (normalised or not), a list of images, or None.
    masks:   {column title: (B, h, w) or (h, w) labels} (255 = ignore), any resolution, colourised.
    scalars: {column title: (B, h, w) or (h, w) float maps}; NaN marks pixels where the quantity is
             not defined (drawn light grey). `ranges` {title: (vmin, vmax)} fixes a colour scale,
             else each column uses its finite min and max over all rows.
    E.g. UCD's uncertainty weight beside the labels (08), PLOP's entropy beside its pseudo-labels
    (09). The legend lists the classes present in the masks when `class_names` is given.
    """
    masks, scalars, ranges = dict(masks or {}), dict(scalars or {}), dict(ranges or {})

    def batched(value, image_like: bool = False) -> list:
        array = value if isinstance(value, (list, tuple)) else _numpy(value)
        if isinstance(array, np.ndarray) and array.ndim == (3 if image_like else 2):
            return [array]  # a single map / image
        return list(array)

    image_rows = batched(images, image_like=True) if images is not None else None
    mask_rows = {title: batched(value) for title, value in masks.items()}
    scalar_rows = {title: [np.asarray(row, dtype=np.float64) for row in batched(value)]
                   for title, value in scalars.items()}
    counts = {len(rows) for rows in [*([image_rows] if image_rows is not None else []), *mask_rows.values(),
                                     *scalar_rows.values()]}
    if len(counts) != 1:
        raise ValueError(f"images, masks and scalar maps must have the same number of rows, got {sorted(counts)}")
    count = counts.pop()
    titles = (["image"] if image_rows is not None else []) + list(mask_rows) + list(scalar_rows)
    figure, axes = plt.subplots(count, len(titles), figsize=(size * len(titles) + 0.4 * len(scalar_rows),
                                                             size * count + 0.7), squeeze=False)
    colours = _palette(palette)
    present: set[int] = set()
    colour_map = plt.get_cmap(cmap).with_extremes(bad="lightgrey")
    limits = {}
    for title, rows in scalar_rows.items():
        finite = np.concatenate([row[np.isfinite(row)] for row in rows])
        limits[title] = ranges.get(title, (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0))
    for row in range(count):
        column = 0
        if image_rows is not None:
            axes[row, 0].imshow(to_rgb(image_rows[row]))
            column = 1
        for title, rows in mask_rows.items():
            mask = _numpy(rows[row]).astype(np.int64)
            present.update(int(value) for value in np.unique(mask) if value != IGNORE_INDEX)
            axes[row, column].imshow(colorize(mask, palette), interpolation="nearest")
            column += 1
        for title, rows in scalar_rows.items():
            vmin, vmax = limits[title]
            picture = axes[row, column].imshow(np.ma.masked_invalid(rows[row]), cmap=colour_map, vmin=vmin,
                                               vmax=vmax, interpolation="nearest")
            figure.colorbar(picture, ax=axes[row, column], fraction=0.046, pad=0.04)
            column += 1
        for column, title in enumerate(titles):
            axes[row, column].set_xticks([])
            axes[row, column].set_yticks([])
            if row == 0:
                axes[row, column].set_title(title, fontsize=9)
    bottom = 0.0
    if class_names is not None and present:
        handles = [Patch(color=colours[label] / 255, label=class_names[label]) for label in sorted(present)]
        figure.legend(handles=handles, loc="lower center", ncol=min(len(handles), 5), fontsize=8, frameon=False)
        bottom = 0.1 if count < 3 else 0.06
    figure.tight_layout(rect=(0, bottom, 1, 1))
    plt.close(figure)
    return figure


# ---------------------------------------------------------------------------------------------
# Full runs: several methods' per-class IoU side by side (notebooks 12 and 13).


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


def make_room_for_legend(figure: Figure, pad: float = 0.15) -> Figure:
    """Grow `figure` downwards so that its figure legend (drawn at the bottom by `show_predictions`
    and `show_pixel_maps`) sits below the axes instead of over them: on ADE20K a few images hold
    dozens of classes, more legend rows than those functions leave room for. The axes keep their
    size; `pad` is the gap in inches. Returns the same figure (a figure without legend unchanged)."""
    if not figure.legends:
        return figure
    legend_height = figure.legends[0].get_window_extent().height / figure.dpi  # inches
    height = figure.get_figheight() + legend_height + pad
    figure.set_figheight(height)
    figure.tight_layout(rect=(0, (legend_height + pad) / height, 1, 1))
    return figure
