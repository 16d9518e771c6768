"""Classification terms: what the current model should predict from the (remapped) labels.

Conventions shared by every term here (methods.md §1, protocol.md §6.3):
- targets hold channel indices of the current step; 0 is background, 255 is ignored;
- the loss math runs in float32 (`.float()`), so the terms work under bf16/fp16 autocast;
- **pixel reduction.** By default a per-pixel loss is averaged over ALL B·H·W pixels, ignored
  pixels contributing 0 but still counting in the denominator. This is what MiB, PLOP, SDR and
  UCD do (`reduction='none'` then `.mean()`), and the published loss weights were tuned with it,
  so it is kept on purpose. `reduction="valid_pixels"` divides by the number of non-ignored
  pixels instead. (LwF-MC's BCE is the one exception in the reference: it averages over valid
  pixels, so `bce` defaults to "valid_pixels".)
"""
from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F

from cslearn.losses.base import IGNORE_INDEX, Batch, LossTerm

REDUCTIONS = ("all_pixels", "valid_pixels")


def reduce_pixel_losses(pixel_losses: torch.Tensor, targets: torch.Tensor,
                        reduction: str) -> torch.Tensor:
    """Average per-pixel losses (B, H, W) that are already 0 at ignored pixels.

    "all_pixels":   sum / (B·H·W), the reference's quirk (ignored pixels count in |Ω|);
    "valid_pixels": sum / #{targets != 255}, and 0 when every pixel is ignored.
    """
    if reduction == "all_pixels":
        return pixel_losses.mean()
    num_valid = (targets != IGNORE_INDEX).sum().clamp(min=1)  # () int64
    return pixel_losses.sum() / num_valid


def _check_reduction(reduction: str) -> str:
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    return reduction


class CrossEntropy(LossTerm):
    """Cross-entropy over all seen channels (fine-tuning, and every method at step 0).

    Formula (methods.md §2, "FT"):
        L_CE = 1/|Ω| · Σ_{i ∈ Ω, y_i ≠ 255} −log p_i(y_i),   p_i = softmax(z_i) over the seen classes.
    Normalisation: |Ω| = B·H·W, ignored pixels counted (the reference's pixel reduction, see the
    module docstring); option `reduction="valid_pixels"` divides by the valid pixels instead.
    Old classes are background in the labels, which is the background shift MiB fixes.

    Taught in notebook 01_segmentation_refresher.
    """

    name: ClassVar[str] = "ce"

    def __init__(self, reduction: str = "all_pixels") -> None:
        super().__init__()
        self.reduction = _check_reduction(reduction)

    def forward(self, batch: Batch) -> torch.Tensor:
        logits = batch.out.logits.float()  # (B, C_seen, H, W)
        pixel_losses = F.cross_entropy(logits, batch.targets, ignore_index=IGNORE_INDEX,
                                       reduction="none")  # (B, H, W), 0 at ignored pixels
        return reduce_pixel_losses(pixel_losses, batch.targets, self.reduction)


class UnbiasedCrossEntropy(LossTerm):
    """MiB's unbiased cross-entropy, UNCE (Cermelli et al., CVPR 2020, "Modeling the Background
    for Incremental Learning in Semantic Segmentation", §3 "Method", its unbiased
    cross-entropy; formula as in methods.md §3).

    A background pixel at step t may really show an old class, so the background target is
    matched by the probability of background OR any old class:
        p̃_i(0) = Σ_{k ∈ O} p_i(k),   p̃_i(c) = p_i(c) for c ∈ N,
        L_UNCE = 1/|Ω| · Σ_{i, y_i ≠ 255} −log p̃_i(y_i).
    Numerically: log p̃_i(0) = LSE_{k ∈ O} z_i(k) − LSE_{k ∈ S} z_i(k) (logsumexp, stable).
    Labels of old classes (possible with pseudo-labels) are treated as background, like MiB.
    Normalisation: the pixel reduction of `ce` (option `reduction`).

    At step 0 (num_old == 0) there are no old classes: the absorbing set is {0} alone, so p̃ = p
    and this term equals `ce` exactly (also whenever num_old == 1, or no pixel is labelled 0).

    Taught in notebook 05_mib_modelling_the_background.
    """

    name: ClassVar[str] = "unbiased_ce"

    def __init__(self, reduction: str = "all_pixels") -> None:
        super().__init__()
        self.reduction = _check_reduction(reduction)

    def forward(self, batch: Batch) -> torch.Tensor:
        logits = batch.out.logits.float()  # (B, C_seen, H, W)
        targets = batch.targets  # (B, H, W)
        num_absorbed = max(batch.num_old, 1)  # channels merged into background: O, or {0} at step 0
        log_normaliser = torch.logsumexp(logits, dim=1)  # (B, H, W) LSE over S
        background_score = torch.logsumexp(logits[:, :num_absorbed], dim=1)  # (B, H, W) LSE over O
        valid = targets != IGNORE_INDEX  # (B, H, W)
        absorbed = targets < num_absorbed  # (B, H, W) background, or an old class (pseudo-labels)
        # z_i(y_i) by a gather, never a (B, C_seen, H, W) log-probability tensor (ADE: 151 channels)
        new_class = torch.where(valid & ~absorbed, targets, torch.zeros_like(targets))  # (B, H, W)
        label_score = logits.gather(1, new_class[:, None]).squeeze(1)  # (B, H, W)
        score = torch.where(absorbed, background_score, label_score)  # (B, H, W)
        pixel_losses = torch.where(valid, log_normaliser - score, 0.0)  # (B, H, W) −log p̃_i(y_i), 0 if ignored
        return reduce_pixel_losses(pixel_losses, targets, self.reduction)


class BinaryCrossEntropy(LossTerm):
    """LwF-MC's classification part (Rebuffi et al., CVPR 2017, "iCaRL", as adapted to
    segmentation by MiB's `icarl` baseline; methods.md §2, "LwF-MC").

    One independent sigmoid per seen class, trained towards the one-hot label:
        L_BCE = 1/|Ω_v| · Σ_{i ∈ Ω_v} Σ_{c ∈ S} BCE(z_i(c), [y_i = c]),
        BCE(x, u) = −u·log σ(x) − (1−u)·log(1−σ(x)).
    Normalisation: a SUM over the seen classes, a mean over the valid (non-ignored) pixels Ω_v,
    as in the reference's `BCEWithLogitsLossWithIgnoreIndex`; option `reduction="all_pixels"`.
    Computed without a one-hot tensor: BCE(x, u) = softplus(x) − u·x, so the per-pixel sum is
    Σ_c softplus(z_i(c)) − z_i(y_i) (stable, and no (B, C, H, W) label tensor on ADE's 151 classes).
    Its distillation partner is the separate term `bce_distillation` (weight 10 in LwF-MC).

    Taught in notebook 04_distillation_baselines.
    """

    name: ClassVar[str] = "bce"

    def __init__(self, reduction: str = "valid_pixels") -> None:
        super().__init__()
        self.reduction = _check_reduction(reduction)

    def forward(self, batch: Batch) -> torch.Tensor:
        logits = batch.out.logits.float()  # (B, C_seen, H, W)
        valid = batch.targets != IGNORE_INDEX  # (B, H, W)
        labels = torch.where(valid, batch.targets, torch.zeros_like(batch.targets))  # (B, H, W)
        label_logits = logits.gather(1, labels.unsqueeze(1)).squeeze(1)  # (B, H, W) = z_i(y_i)
        pixel_losses = F.softplus(logits).sum(dim=1) - label_logits  # (B, H, W)
        pixel_losses = pixel_losses * valid  # (B, H, W), 0 at ignored pixels
        return reduce_pixel_losses(pixel_losses, batch.targets, self.reduction)
