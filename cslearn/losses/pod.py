"""PLOP's Local POD: distil the spatial statistics of intermediate maps at several scales.

Douillard et al., CVPR 2021, "PLOP: Learning without Forgetting for Continual Semantic
Segmentation", §3.1 "Local POD" (methods.md §4.1; reference `train.py`: `features_distillation`,
`_local_pod`). Taught in notebook 09_plop_pseudo_labels_and_pod.

Embedding Φ of one map h (C, H, W): square it element-wise, a = h ⊙ h; for each scale s split
a into s×s cells; in cell (u, v) with rows R_u and columns K_v pool along each direction,
    Φ^W_{s,u,v}[c, r] = (s/W) Σ_{x ∈ K_v} a[c, r, x]   (r ∈ R_u)   "width pooling",
    Φ^H_{s,u,v}[c, x] = (s/H) Σ_{r ∈ R_u} a[c, r, x]   (x ∈ K_v)   "height pooling",
and concatenate every scale, cell and direction (no L2 normalisation).

Sizes not divisible by s, as in the reference: cells are ⌊H/s⌋ rows by ⌊W/s⌋ columns, laid
from the top-left corner; the last H mod s rows and W mod s columns are left out at that scale,
and each pooling is a mean over the cell (factor 1/⌊W/s⌋, which is s/W when s divides W). The
reference computes one cell size ⌊W/s⌋ for both directions (its maps are square, 512×512
crops); here rows use ⌊H/s⌋ so non-square maps are covered too. Identical on square maps.
"""
from __future__ import annotations

import math
import re
from typing import ClassVar, Sequence

import torch

from cslearn.losses.base import Batch, LossTerm

_STAGE_MAP = re.compile(r"stage\d+_preact")


def pod_embedding(maps: torch.Tensor, scales: Sequence[int] = (1, 2, 4)) -> torch.Tensor:
    """Φ of a batch of maps (B, C, H, W) -> (B, D), computed in float32 without loops over cells.

    D = Σ_s C·s·(s·⌊H/s⌋ + s·⌊W/s⌋) (= Σ_s C·s·(H + W) when s divides H and W). The order of the
    entries (scale, direction, channel, cell, position) differs from the reference's
    (scale, cell, direction, ...), which does not change the Euclidean distance between two
    embeddings.

    When the finest scale divides H and W and every scale divides the finest (the usual 1, 2, 4 on
    32x32 or 128x128 maps), each cell of a coarser scale is a union of equal finest cells, so the
    map is pooled once per direction at the finest scale and the coarser poolings are means of
    neighbouring strips (`_pod_embedding_by_cells` pools every scale from the map; same values up
    to float rounding, three times fewer passes over the largest maps).
    """
    maps = maps.float()
    batch_size, channels, height, width = maps.shape
    finest = max(scales)
    if height % finest or width % finest or any(finest % scale for scale in scales):
        return _pod_embedding_by_cells(maps.pow(2), scales)  # a = h ⊙ h
    column_strips, row_strips = SquaredStripMeans.apply(maps, finest)  # (B, C, H, f), (B, C, f, W)
    parts = []
    for scale in scales:
        group = finest // scale  # finest strips per cell of this scale
        width_pooled = column_strips.reshape(batch_size, channels, height, scale, group).mean(dim=4)  # (B, C, u·r, v)
        height_pooled = row_strips.reshape(batch_size, channels, scale, group, width).mean(dim=3)  # (B, C, u, v·x)
        parts.append(width_pooled.reshape(batch_size, -1))  # (B, C·s·s·rows), as Φ^W below
        parts.append(height_pooled.reshape(batch_size, -1))  # (B, C·s·s·columns), as Φ^H below
    return torch.cat(parts, dim=1)  # (B, D)


class SquaredStripMeans(torch.autograd.Function):
    """(maps (B, C, H, W), f) -> the means of a = maps ⊙ maps over each of f column strips of every
    row (B, C, H, f) and over each of f row strips of every column (B, C, f, W).

    The same as `a.reshape(B, C, H, f, W/f).mean(4)` and `a.reshape(B, C, f, H/f, W).mean(3)` under
    autograd, with a hand-written backward: ∂/∂h = 2h ⊙ (g_columns / (W/f) + g_rows / (H/f)), each
    gradient broadcast over its strip, in three passes over the map instead of autograd's mean and
    pow backward (twice as many, on the largest maps of the step: 128x128 stage-1 features).
    """

    @staticmethod
    def forward(ctx, maps: torch.Tensor, strips: int) -> tuple[torch.Tensor, torch.Tensor]:
        batch_size, channels, height, width = maps.shape
        squared = maps.square()  # (B, C, H, W)
        columns = squared.reshape(batch_size, channels, height, strips, width // strips).mean(dim=4)  # (B, C, H, f)
        rows = squared.reshape(batch_size, channels, strips, height // strips, width).mean(dim=3)  # (B, C, f, W)
        ctx.save_for_backward(maps)
        ctx.strips = strips
        return columns, rows

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_columns: torch.Tensor, grad_rows: torch.Tensor):
        (maps,) = ctx.saved_tensors
        batch_size, channels, height, width = maps.shape
        strips = ctx.strips
        grad = torch.empty(maps.shape, dtype=maps.dtype, device=maps.device)  # (B, C, H, W), contiguous
        grad.view(batch_size, channels, height, strips, width // strips).copy_(
            (grad_columns * (2 * strips / width))[..., None])  # the column strips' share, broadcast
        grad.view(batch_size, channels, strips, height // strips, width).add_(
            (grad_rows * (2 * strips / height))[:, :, :, None, :])  # + the row strips' share
        return grad.mul_(maps), None  # 2h ⊙ (...)


def _pod_embedding_by_cells(squared: torch.Tensor, scales: Sequence[int]) -> torch.Tensor:
    """Φ from the squared maps a (B, C, H, W), pooling every scale's cells directly (any size)."""
    batch_size, channels, height, width = squared.shape
    parts = []
    for scale in scales:
        rows, columns = height // scale, width // scale  # cell size |R_u| × |K_v|
        if rows == 0 or columns == 0:
            raise ValueError(f"a {height}x{width} map cannot be split into {scale}x{scale} cells")
        cells = squared[:, :, :scale * rows, :scale * columns].reshape(
            batch_size, channels, scale, rows, scale, columns)  # (B, C, u, r, v, x)
        width_pooled = cells.mean(dim=5)  # (B, C, u, r, v): Φ^W, the s/W mean over x ∈ K_v
        height_pooled = cells.mean(dim=3)  # (B, C, u, v, x): Φ^H, the s/H mean over r ∈ R_u
        parts.append(width_pooled.reshape(batch_size, -1))  # (B, C·s·s·rows)
        parts.append(height_pooled.reshape(batch_size, -1))  # (B, C·s·s·columns)
    return torch.cat(parts, dim=1)  # (B, D)


def pod_distance(maps: torch.Tensor, old_maps: torch.Tensor,
                 scales: Sequence[int] = (1, 2, 4)) -> torch.Tensor:
    """Batch mean of the per-sample Euclidean norm ‖Φ(h^b) − Φ(ĥ^b)‖₂ (a float32 scalar).

    The norm's gradient at a zero difference is 0 (PyTorch's subgradient), so the term is safe at
    the start of a step, when the new model still equals the old one.
    """
    if maps.shape != old_maps.shape:
        raise ValueError(f"Local POD needs maps of equal shape, got {tuple(maps.shape)} now and "
                         f"{tuple(old_maps.shape)} in the old model")
    difference = pod_embedding(maps, scales) - pod_embedding(old_maps.detach(), scales)  # (B, D)
    return torch.linalg.vector_norm(difference, dim=1).mean()


def collapse_new_logits(logits: torch.Tensor, num_old: int) -> torch.Tensor:
    """Map the current low-resolution logits (B, |S|, h, w) onto the old model's |O| channels.

    The old background may be any class that is new now, so (reference option
    `extra_channels = "sum"`): channel 0 becomes z_0 + Σ_{k ∈ N} z_k, channels 1..|O|−1 stay,
    the new channels are dropped. Applied to the logits before squaring, as in the reference.
    """
    background = logits[:, :1] + logits[:, num_old:].sum(dim=1, keepdim=True)  # (B, 1, h, w)
    return torch.cat([background, logits[:, 1:num_old]], dim=1)  # (B, |O|, h, w)


class LocalPOD(LossTerm):
    """PLOP's Local POD distillation (Douillard et al., CVPR 2021, "PLOP: Learning without
    Forgetting for Continual Semantic Segmentation", §3.1; methods.md §4.1).

        L_POD = (1/L) Σ_l λ_l · sqrt(|S|/|N|) · (1/B) Σ_b ‖Φ(h_l^b) − Φ(ĥ_l^b)‖₂

    over the L maps present in both outputs: every "stage*_preact" (the pre-activation output of
    each backbone stage; sorted by name), "pre_logits" (the head output), and "logits_low" (the
    logits before upsampling, the current ones collapsed to |O| channels by
    `collapse_new_logits`). Φ is `pod_embedding`.
    Normalisation: per-sample Euclidean norm (not squared, not divided by the embedding size),
    mean over the batch, mean over the L maps; ignored pixels take part (no labels are read).
    sqrt(|S|/|N|) is the reference's "pod schedule" (option `pod_schedule`, on by default).

    Options (VOC defaults; the reference's ADE scripts use feature_weight=1e-3,
    logits_weight=1e-5): feature_weight = λ of every feature map, logits_weight = λ of the
    logits, scales = the cell grids s. With DeepLab L = 6 (4 stages), with the tiny model L = 5.

    Taught in notebook 09_plop_pseudo_labels_and_pod.
    """

    name: ClassVar[str] = "local_pod"
    needs_old: ClassVar[bool] = True

    def __init__(self, feature_weight: float = 0.01, logits_weight: float = 5e-4,
                 scales: Sequence[int] = (1, 2, 4), pod_schedule: bool = True) -> None:
        super().__init__()
        if not scales or any(int(scale) < 1 for scale in scales):
            raise ValueError(f"scales must be positive integers, got {scales!r}")
        self.feature_weight = float(feature_weight)
        self.logits_weight = float(logits_weight)
        self.scales = tuple(int(scale) for scale in scales)
        self.pod_schedule = bool(pod_schedule)

    def maps(self, batch: Batch) -> list[tuple[str, float, torch.Tensor, torch.Tensor]]:
        """(name, λ, current map, old map) for every distilled map, in the order of the sum."""
        assert batch.old is not None  # checked by LossTerm.__call__
        features, old_features = batch.out.features, batch.old.features
        stages = sorted(name for name in features if _STAGE_MAP.fullmatch(name) and name in old_features)
        maps = [(name, self.feature_weight, features[name], old_features[name])
                for name in [*stages, "pre_logits"]]
        old_logits = old_features["logits_low"]  # (B, |O|, h, w)
        if old_logits.shape[1] != batch.num_old:
            raise ValueError(f"old model has {old_logits.shape[1]} logit channels, batch.num_old is "
                             f"{batch.num_old}")
        logits = collapse_new_logits(features["logits_low"].float(), batch.num_old)  # (B, |O|, h, w)
        maps.append(("logits_low", self.logits_weight, logits, old_logits))
        return maps

    def forward(self, batch: Batch) -> torch.Tensor:
        maps = self.maps(batch)
        schedule = math.sqrt(batch.num_seen / batch.num_new) if self.pod_schedule else 1.0
        total = sum(weight * pod_distance(current, old, self.scales) for _, weight, current, old in maps)
        return total * schedule / len(maps)
