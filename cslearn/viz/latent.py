"""The latent space and class prototypes (notebooks 06_sdr_prototypes_and_matching and
07_sdr_sparsity_attraction_repulsion): features gathered per class from a model
(`collect_class_features`), a shared PCA projection (`pca_basis`, `pca_project`) and its scatter
plots (`plot_latent_space`), the cosine similarity between prototypes
(`cosine_similarity_matrix`, `plot_prototype_similarity`), and how far each class's prototype
moves from step to step (`prototype_drift`, `plot_prototype_drift`).
"""
from __future__ import annotations

import math
from typing import Mapping, Optional, Sequence, Union

import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns
import torch
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from cslearn.protocol import IGNORE_INDEX  # the one definition of the ignore label
from cslearn.viz.base import PaletteLike, _finish, _new_figure, _numpy, _palette


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
