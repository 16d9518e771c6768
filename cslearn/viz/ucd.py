"""UCD pictures (notebook 08_ucd_contrastive_distillation): per feature-map pixel, what UCD's
uncertainty weight sees (`ucd_pixel_weights`, drawn with `images.show_pixel_maps`, which notebook
09_plop_pseudo_labels_and_pod also uses for PLOP's entropy), and a contrast matrix of anchors
against contrast entries with its positives, negatives and own copies marked
(`plot_contrast_matrix`).
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np
import seaborn as sns
import torch
from matplotlib.figure import Figure

from cslearn.protocol import IGNORE_INDEX  # the one definition of the ignore label
from cslearn.viz.base import _finish, _new_figure, _numpy


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
