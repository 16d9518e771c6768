"""Distillation terms: keep the current model close to the frozen previous-step model.

Every term here reads `batch.old` (needs_old = True), which the training loop computes once per
batch under no_grad, so no gradient ever flows into the old model. Conventions (methods.md §1):
- channels 0..num_old-1 of the current logits are the old classes (0 = background), the rest new;
- q_i = softmax(ẑ_i) over the old channels, temperature 1;
- the math runs in float32 (`.float()`), so the terms work under bf16/fp16 autocast;
- distillation reads no labels: every pixel is distilled, ignored (255) pixels included, and the
  result is a plain mean over all B·H·W pixels (protocol.md §6.3), as in the reference code.
"""
from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F

from cslearn.losses.base import Batch, LossTerm


def _old_logits(batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    """Current logits on the old channels and the old model's logits, both float32."""
    assert batch.old is not None  # checked by LossTerm.__call__
    old_logits = batch.old.logits.detach().float()  # (B, |O|, H, W)
    if old_logits.shape[1] != batch.num_old:
        raise ValueError(f"old model has {old_logits.shape[1]} channels, batch.num_old is "
                         f"{batch.num_old}")
    current_logits = batch.out.logits.float()  # (B, |O| + |N|, H, W)
    return current_logits, old_logits


class KnowledgeDistillation(LossTerm):
    """LwF's knowledge distillation on the output (Li & Hoiem, ECCV 2016, "Learning without
    Forgetting", its distillation loss with T = 1; segmentation form of MiB's code;
    methods.md §2, "LwF").

    The current logits are restricted to the old channels and re-normalised over them:
        p̃_i = softmax(z_i[O]),   q_i = softmax(ẑ_i),
        L_KD = 1/|Ω| · Σ_i −(1/|O|) · Σ_{c ∈ O} q_i(c) log p̃_i(c).
    Normalisation: a MEAN over the old classes (the code's 1/|O|, which LwF's weight 100 is tuned
    to) and a mean over all pixels. Its minimum is H(q_i)/|O| (not 0), reached with zero gradient
    whenever z_i[O] = ẑ_i + const.

    Taught in notebook 04_distillation_baselines.
    """

    name: ClassVar[str] = "kd"
    needs_old: ClassVar[bool] = True

    def forward(self, batch: Batch) -> torch.Tensor:
        current_logits, old_logits = _old_logits(batch)
        log_probs = F.log_softmax(current_logits[:, :batch.num_old], dim=1)  # (B, |O|, H, W)
        old_probs = F.softmax(old_logits, dim=1)  # (B, |O|, H, W)
        pixel_losses = -(old_probs * log_probs).mean(dim=1)  # (B, H, W)
        return pixel_losses.mean()


class UnbiasedKnowledgeDistillation(LossTerm):
    """MiB's unbiased knowledge distillation, UNKD (Cermelli et al., CVPR 2020, "Modeling the
    Background for Incremental Learning in Semantic Segmentation", §3 "Method", its unbiased
    distillation loss; formula as in methods.md §3).

    The old model's background may be a class that is new now, so the old background is matched
    by the current background PLUS every new class; old classes under the full softmax:
        p̄_i(0) = p_i(0) + Σ_{k ∈ N} p_i(k),   p̄_i(c) = p_i(c) for c ∈ O \\ {0},
        L_UNKD = 1/|Ω| · Σ_i −(1/|O|) · Σ_{c ∈ O} q_i(c) log p̄_i(c).
    Numerically: log p̄_i(0) = LSE_{k ∈ {0} ∪ N} z_i(k) − LSE_{k ∈ S} z_i(k).
    Normalisation: the code's 1/|O| (MiB's λ = 10 is calibrated to it), a mean over all pixels.
    The value is the cross-entropy H(q_i, p̄_i)/|O|, not 0 when the models agree: its minimum
    H(q_i)/|O| is reached, with zero gradient, whenever p̄_i = q_i, for example right after MiB's
    background initialisation (cslearn.losses.init) or when the new logits are very negative.

    Taught in notebook 05_mib_modelling_the_background.
    """

    name: ClassVar[str] = "unbiased_kd"
    needs_old: ClassVar[bool] = True

    def forward(self, batch: Batch) -> torch.Tensor:
        current_logits, old_logits = _old_logits(batch)
        num_old = batch.num_old
        log_normaliser = torch.logsumexp(current_logits, dim=1)  # (B, H, W) L = LSE over S
        background_score = torch.logaddexp(current_logits[:, 0], torch.logsumexp(
            current_logits[:, num_old:], dim=1))  # (B, H, W) LSE over {0} ∪ N
        old_probs = F.softmax(old_logits, dim=1)  # (B, |O|, H, W) q
        # Σ_c q(c) log p̄(c) = q(0)·LSE_{0∪N} + Σ_{c=1}^{|O|-1} q(c)·z(c) − L·Σ_c q(c), without
        # building the (B, |O|, H, W) tensor of log p̄ (ADE: 101 to 150 old channels at 512x512)
        expected_log_prob = (old_probs[:, 0] * background_score
                             + (old_probs[:, 1:] * current_logits[:, 1:num_old]).sum(dim=1)
                             - log_normaliser * old_probs.sum(dim=1))  # (B, H, W)
        pixel_losses = -expected_log_prob / num_old  # (B, H, W) the mean over the |O| old channels
        return pixel_losses.mean()


class BinaryCrossEntropyDistillation(LossTerm):
    """LwF-MC's distillation part (Rebuffi et al., CVPR 2017, "iCaRL", as MiB's `icarl` baseline
    adapts it; methods.md §2, "LwF-MC").

    Each old channel's sigmoid is trained towards the old model's sigmoid:
        L = 1/|Ω| · Σ_i Σ_{c ∈ O} BCE(z_i(c), σ(ẑ_i(c))).
    Normalisation: a SUM over the old classes per pixel, a mean over all pixels (the code writes
    |O| × an element mean, which is the same). Its minimum is the Bernoulli entropy of σ(ẑ), not 0.
    The weight 10 of LwF-MC belongs to this term, so it is kept apart from `bce`.

    Taught in notebook 04_distillation_baselines.
    """

    name: ClassVar[str] = "bce_distillation"
    needs_old: ClassVar[bool] = True

    def forward(self, batch: Batch) -> torch.Tensor:
        current_logits, old_logits = _old_logits(batch)
        element_losses = F.binary_cross_entropy_with_logits(
            current_logits[:, :batch.num_old], torch.sigmoid(old_logits),
            reduction="none")  # (B, |O|, H, W)
        return element_losses.sum(dim=1).mean()


class FeatureDistillation(LossTerm):
    """ILT's feature distillation (Michieli & Zanuttigh, ICCVW 2019, "Incremental Learning
    Techniques for Semantic Segmentation", the L2 loss on the encoder output; methods.md §2, "ILT").

    A mean squared difference between current and old features, unmasked:
        L = 1/(B·C·h·w) · ‖f − f̂‖²_F,   f = out.features[feature], f̂ = old.features[feature].
    Normalisation: a mean over every element (batch, channel, position). 0 when f = f̂.
    Option `feature` names the feature map (default "body", the backbone output).

    Taught in notebook 04_distillation_baselines.
    """

    name: ClassVar[str] = "feature_distillation"
    needs_old: ClassVar[bool] = True

    def __init__(self, feature: str = "body") -> None:
        super().__init__()
        self.feature = feature

    def forward(self, batch: Batch) -> torch.Tensor:
        assert batch.old is not None  # checked by LossTerm.__call__
        features = batch.out.features[self.feature].float()  # (B, C, h, w)
        old_features = batch.old.features[self.feature].detach().float()  # (B, C, h, w)
        if features.shape != old_features.shape:
            raise ValueError(f"feature '{self.feature}' has shape {tuple(features.shape)} now and "
                             f"{tuple(old_features.shape)} in the old model")
        return F.mse_loss(features, old_features, reduction="mean")
