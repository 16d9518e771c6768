"""Contrastive distillation: UCD's uncertainty-aware pixel contrast between the current features
and the frozen old model's features (methods.md §6).

Yang, Li, Wu, Li, Bao, Zhao and Gan, IEEE TPAMI 2022, "Uncertainty-aware Contrastive Distillation
for Incremental Semantic Segmentation" (official code `ygjwd12345/UCD`, commit `51b783a`,
`pre_contrastive_pixel` and `PixelConLossV2`). The paper's equations are unverified; the default
here is the construction of the official code with its defects removed (methods.md §0, rule 1).

Taught in notebook 08_ucd_contrastive_distillation.
"""
from __future__ import annotations

from typing import ClassVar, NamedTuple, Optional

import torch
import torch.nn.functional as F

from cslearn.losses.base import IGNORE_INDEX, Batch, LossTerm


def nearest_labels(targets: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Nearest-neighbour resize of an int64 label map (B, H, W) -> (B, h, w), without any float
    cast: output (i, j) reads source (⌊i·H/h⌋, ⌊j·W/w⌋), the top-left pixel of each block, as
    PyTorch's mode="nearest" and SDR do (methods.md §5.1, §6.2)."""
    height, width = targets.shape[-2:]
    rows = torch.arange(size[0], device=targets.device) * height // size[0]  # (h,)
    cols = torch.arange(size[1], device=targets.device) * width // size[1]  # (w,)
    return targets[:, rows][:, :, cols]  # (B, h, w)


def cap_per_class(labels: torch.Tensor, cap: int) -> torch.Tensor:
    """Indices (sorted) of at most `cap` uniformly random positions per label value; labels (N,)."""
    order = torch.randperm(labels.numel(), device=labels.device)  # (N,) random tie-break
    order = order[torch.argsort(labels[order], stable=True)]  # (N,) grouped by label
    counts = torch.bincount(labels)  # (max label + 1,)
    group_start = torch.cumsum(counts, 0) - counts  # (max label + 1,)
    rank = torch.arange(labels.numel(), device=labels.device) - group_start[labels[order]]  # (N,)
    return torch.sort(order[rank < cap]).values  # (<= cap per label,)


class ContrastSet(NamedTuple):
    """Anchors (rows, with gradient) and the detached contrast set (columns) of methods.md §6.3.
    The first len(anchors) contrast entries are the anchors' own detached copies, in order."""

    anchors: torch.Tensor  # (N_a, C) z_p, p ∈ A, L2-normalised
    contrast: torch.Tensor  # (N_c, C) [sg(z_p), p ∈ A ; ẑ_p, p ∈ K_old], N_c = N_a + |K_old|
    anchor_labels: torch.Tensor  # (N_a,) int64 ȳ
    contrast_labels: torch.Tensor  # (N_c,) int64 ȳ
    anchor_probs: torch.Tensor  # (N_a, |O|) q = old softmax over the old channels
    contrast_probs: torch.Tensor  # (N_c, |O|)
    anchor_ground_truth: torch.Tensor  # (N_a,) bool: ỹ > 0 (labelled new class, not pseudo)
    contrast_ground_truth: torch.Tensor  # (N_c,) bool: ỹ > 0 and a current-model entry


def build_contrast_set(batch: Batch, max_per_class: Optional[int] = None) -> ContrastSet:
    """Pixel selection, pseudo-labels and the contrast set (methods.md §6.1-6.3), in float32.

    ỹ = nearest-resized `batch.original_targets` (labels before any rewriter, §6.6);
    ȳ = ỹ where ỹ > 0, else argmax of the old logits at feature resolution (no threshold);
    anchors A = {ȳ > 0, ỹ ≠ 255}; old keys K_old = {ȳ > 0, ỹ = 0}. With `max_per_class`, at
    most that many random anchors and as many random old keys are kept per class.
    """
    assert batch.old is not None  # checked by LossTerm.__call__
    features = batch.out.features["pre_logits"].float()  # (B, C, h, w)
    old_features = batch.old.features["pre_logits"].detach().float()  # (B, C, h, w)
    old_logits = batch.old.features["logits_low"].detach().float()  # (B, |O|, h, w)
    if old_logits.shape[1] != batch.num_old:
        raise ValueError(f"old logits_low has {old_logits.shape[1]} channels, batch.num_old is {batch.num_old}")
    if old_features.shape != features.shape or old_logits.shape[2:] != features.shape[2:]:
        raise ValueError(f"pre_logits {tuple(features.shape)}, old pre_logits {tuple(old_features.shape)} and "
                         f"old logits_low {tuple(old_logits.shape)} must share (B, h, w)")
    channels = features.shape[1]
    labels = nearest_labels(batch.original_targets, features.shape[2:]).reshape(-1)  # (B·h·w,) ỹ
    old_probs = F.softmax(old_logits, dim=1).permute(0, 2, 3, 1).reshape(-1, batch.num_old)  # (B·h·w, |O|)
    valid = labels != IGNORE_INDEX  # (B·h·w,)
    ground_truth = valid & (labels > 0)  # (B·h·w,) labelled new-class pixels
    pseudo_labels = torch.where(ground_truth, labels, old_probs.argmax(dim=1))  # (B·h·w,) ȳ
    anchor_index = torch.nonzero(valid & (pseudo_labels > 0)).squeeze(1)  # (N_a,)
    key_index = torch.nonzero(valid & (labels == 0) & (pseudo_labels > 0)).squeeze(1)  # (|K_old|,)
    if max_per_class is not None:
        anchor_index = anchor_index[cap_per_class(pseudo_labels[anchor_index], max_per_class)]
        key_index = key_index[cap_per_class(pseudo_labels[key_index], max_per_class)]

    def rows(maps: torch.Tensor, index: torch.Tensor) -> torch.Tensor:  # (B, C, h, w) -> (n, C)
        return maps.permute(0, 2, 3, 1).reshape(-1, channels)[index]

    anchors = F.normalize(rows(features, anchor_index), dim=1)  # (N_a, C)
    old_keys = F.normalize(rows(old_features, key_index), dim=1)  # (|K_old|, C)
    return ContrastSet(
        anchors=anchors,
        contrast=torch.cat([anchors.detach(), old_keys]),  # (N_c, C)
        anchor_labels=pseudo_labels[anchor_index],
        contrast_labels=torch.cat([pseudo_labels[anchor_index], pseudo_labels[key_index]]),  # (N_c,)
        anchor_probs=old_probs[anchor_index],
        contrast_probs=torch.cat([old_probs[anchor_index], old_probs[key_index]]),  # (N_c, |O|)
        anchor_ground_truth=ground_truth[anchor_index],
        contrast_ground_truth=torch.cat([ground_truth[anchor_index],
                                         torch.zeros_like(key_index, dtype=torch.bool)]),  # (N_c,)
    )


# Below this bound on |s_ij|, e^{s_ij} can be summed without subtracting a row maximum: every term
# lies in [e^{-40}, e^{40}], far from float32's underflow (e^{-87}) and overflow (e^{88}) even
# summed over 10^15 entries, and a sum of exponentials is no less exact unshifted. L2-normalised
# features at τ = 0.07 give |s_ij| <= 14.3; the shifted path is for τ < 0.025.
UNSHIFTED_EXP_BOUND = 40.0


def chunk_loss_sum(anchors: torch.Tensor, contrast: torch.Tensor, anchor_probs: torch.Tensor,
                   contrast_probs: torch.Tensor, anchor_ground_truth: torch.Tensor,
                   contrast_ground_truth: torch.Tensor, num_positives: torch.Tensor, own_columns: torch.Tensor,
                   block: tuple[int, int], temperature: float, unshifted_negatives: bool = False,
                   uncertainty: bool = True, gradient: bool = True,
                   max_similarity: Optional[float] = None,
                   buffer: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """(Σ_i ℓ_i, ∂Σ_i ℓ_i/∂anchors or None) over a chunk of R anchors of one label, exactly, with the
    contrast set sorted by label; inputs are plain tensors (no autograd).

    Sorted by label, the entries that share the chunk's label are one block of columns
    [block[0], block[1]) (the positives, and each anchor's own copy at `own_columns`) and the
    negatives are everything left and right of it. Per positive,
    −log(e^{s_ij} / (e^{s_ij} + e^{n_i})) = softplus(n_i − s_ij), n_i = log Σ_{k∈N_i} e^{s_ik}, so
        Σ_i ℓ_i = Σ_{i, j in block} A_ij · softplus(t_ij),  t_ij = n_i − s_ij,
        A_ij = [j ≠ own copy] · W_ij / |P_i|.
    n_i = m_i + log Σ_k e^{s_ik − m_i} with m_i = 0 when `max_similarity` (a bound on |s_ij|) is
    at most UNSHIFTED_EXP_BOUND (and the dtype has float32's range), else the largest negative of
    the row. The gradient, by hand (the
    contrast set is detached, so only the anchors get one):
        ∂/∂s_ij = −A_ij σ(t_ij) on the block,   ∂/∂s_ik = c_i e^{s_ik − n_i} on the negatives,
        c_i = Σ_j A_ij σ(t_ij),   ∂/∂z_i = Σ_k (∂/∂s_ik) x_k / τ  (x_k: the contrast entries),
    where the negatives' part is (c_i / Σ_k e^{s_ik − m_i}) · Σ_k e^{s_ik − m_i} x_k: a row
    scaling after the product. The exponentials overwrite the similarities in place, the block is
    zeroed, and that one (R, N_c) buffer serves the negatives' sums and the gradient's product:
    one exp and one sum over it, none kept. `buffer` (flat, at least R·N_c entries) holds it if
    given: reusing one buffer for every chunk spares the page faults of a fresh large allocation,
    which made the product 1.8 times slower on a CPU.
    """
    shape = (len(anchors), len(contrast))
    similarity = anchors.new_empty(shape) if buffer is None else buffer[:shape[0] * shape[1]].view(shape)  # (R, N_c)
    torch.mm(anchors / temperature, contrast.T, out=similarity)  # (R, N_c) s_ij
    start, end = block
    positives = similarity[:, start:end].clone()  # (R, P) s_ij, same label as the anchor
    quirk_shift = similarity.amax(dim=1) if unshifted_negatives else None  # (R,) M_i, official quirk (§6.7 item 1)
    shift = None  # (R,) m_i
    wide = torch.finfo(similarity.dtype).max > 1e38  # float32, bfloat16, float64 hold e^{±40}; float16 does not
    if max_similarity is None or max_similarity > UNSHIFTED_EXP_BOUND or not wide:
        sides = [side.amax(dim=1) for side in (similarity[:, :start], similarity[:, end:]) if side.shape[1] > 0]
        if sides:
            shift = sides[0] if len(sides) == 1 else torch.maximum(*sides)
            similarity.sub_(shift[:, None])
    exps = similarity.exp_()  # (R, N_c) e^{s_ik − m_i}; the block may overflow, it is zeroed next
    exps[:, start:end] = 0.0  # (R, N_c) the negatives only: other labels
    negative_sums = exps.sum(dim=1)  # (R,) Σ_{k∈N_i} e^{s_ik − m_i}; 0 when there are no negatives
    log_negatives = negative_sums.log()  # (R,) n_i − m_i; −inf without negatives: t = −inf, ℓ = 0
    if shift is not None:
        log_negatives = log_negatives + shift
    if quirk_shift is not None:  # the quirk gives the negatives a factor e^{M_i}: t_ij = n_i + M_i − s_ij
        log_negatives = log_negatives + quirk_shift
    if uncertainty:
        weights = anchor_probs @ contrast_probs[start:end].T  # (R, P) W_ij = q_i·q_j
    else:  # ablation: every positive weighs 1 (plain supervised contrastive distillation)
        weights = positives.new_ones(positives.shape)  # (R, P)
    weights.masked_fill_(anchor_ground_truth[:, None] & contrast_ground_truth[None, start:end], 1.0)  # GT new pairs
    weights[torch.arange(len(anchors), device=anchors.device), own_columns - start] = 0.0  # not the own copy
    weights.div_(num_positives.clamp(min=1)[:, None])  # (R, P) A_ij
    excess = log_negatives[:, None] - positives  # (R, P) t_ij
    total = (weights * F.softplus(excess)).sum()  # () Σ_i ℓ_i
    if not gradient:
        return total, None
    pull = weights.mul_(torch.sigmoid(excess))  # (R, P) A_ij σ(t_ij) = −∂/∂s_ij
    push = pull.sum(dim=1)  # (R,) c_i
    # c_i / Σ_k e^{s_ik − m_i}; without negatives the row of exps is zero and so is its product
    scale = push / negative_sums.clamp(min=torch.finfo(negative_sums.dtype).tiny)  # (R,)
    negatives_part = (exps @ contrast).mul_(scale[:, None])  # (R, C) Σ_{k∈N_i} c_i e^{s_ik − n_i} x_k
    return total, negatives_part.sub_(pull @ contrast[start:end]).div_(temperature)  # (R, C) ∂Σ_i ℓ_i/∂z_i


class _WithGradient(torch.autograd.Function):
    """value, whose gradient with respect to `inputs` is the precomputed `gradient` (times the
    incoming gradient): the loss is differentiated once, in the forward pass."""

    @staticmethod
    def forward(ctx, inputs: torch.Tensor, value: torch.Tensor, gradient: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(gradient)
        return value.clone()

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_output: torch.Tensor):
        (gradient,) = ctx.saved_tensors
        return gradient * grad_output, None, None


class ContrastiveDistillation(LossTerm):
    """UCD's uncertainty-aware contrastive distillation (Yang et al., TPAMI 2022; methods.md §6).

    Over the whole mini-batch at feature resolution (§6.1-6.3): z_p = g_p/‖g_p‖ (current
    `pre_logits`, no projection head), ẑ_p = ĝ_p/‖ĝ_p‖ (old model); anchors z_p, p ∈ A (see
    `build_contrast_set`); contrast set C = [sg(z_p), p ∈ A ; ẑ_p, p ∈ K_old] with labels ȳ.
    Positives P_i: entries with label ȳ_i except the anchor's own copy; negatives N_i: the rest.
        s_ij = ⟨z_i, c_j⟩/τ,
        W_ij = q_i·q_j  (q = softmax of the old logits at feature resolution over the old channels),
               1 when both i and j carry ground-truth new-class labels (ỹ > 0, current-model entries),
        ℓ_i = −(1/|P_i|) Σ_{j∈P_i} W_ij log( e^{s_ij} / (e^{s_ij} + Σ_{k∈N_i} e^{s_ik}) ),
        L = mean of ℓ_i over the anchors with |P_i| > 0;  0 (still in the graph) when there are none.
    Normalisation: the COUNT |P_i| per anchor (not Σ_j W_ij), W on positives only, a mean over
    anchors with positives. Stable: each term is softplus(n_i − s_ij) with the negatives n_i a
    log-sum of exponentials, the same for numerator and denominator (the official code's row-max
    shift cancels); unit vectors keep |s_ij| <= 1/τ, so at τ >= 0.025 the sum needs no shift.

    Memory and time (§6.7 item 7): ℓ_i reads only row i, so the rows are evaluated exactly in chunks
    of at most `chunk_size` anchors of one label, and one (chunk_size, N_c) similarity buffer,
    reused by every chunk, is the only large one. With the contrast set sorted by label, a chunk's
    positives are one block of columns and its negatives the rest, so no mask or weight matrix
    over whole rows is built. The gradient with respect to the anchors is computed by hand in the
    same pass (`chunk_loss_sum`) and handed to autograd, so backward neither keeps nor recomputes
    any chunk: per chunk, two (R, N_c) x C products and one exponential of the similarities (where
    autograd with activation checkpointing needs three products). The price: the term is
    differentiable once (no double backward, which no method here uses).
    `benchmarks/ucd_memory.py` and `benchmarks/loss_cost.py` measure it; the tests compare value and
    gradient with autograd on a loop over pixels in float64, for several chunk sizes.

    Fixes to the official code (methods.md §6.7), all on by default:
      1. consistent shift: no e^{1/τ} factor on the negatives (`unshifted_negatives=True` restores it);
      2. labels resized by nearest neighbour and kept int64 (not bilinear + int8, no wrong ids at
         edges, no overflow for ids ≥ 128);
      3. void (255) pixels excluded from anchors and keys, for any number of classes (no > 20 clip);
      4. the new-new override comes from label provenance (no min() over a possibly empty tensor);
         batches without new-class pixels or positives work;
      5. reads `batch.original_targets`, the labels before PLOP's pseudo-labelling, so the
         uncertainty weight stays active in PLOP + UCD (§6.6);
      7. chunked exact evaluation instead of dense N_a × N_c matrices; boolean masks, no integer matmul.
    The contrast also spans the whole mini-batch, not per-device groups (item 6).

    Options: `temperature` τ (0.07); `chunk_size` at most this many anchor rows per chunk (1024);
    `max_anchors_per_class` (None = exact): keep at most this many random anchors and as many random
    old keys per class, which bounds memory and time but changes the loss; `unshifted_negatives`
    (False): the official e^{1/τ} quirk; `uncertainty` (True): False sets every W_ij to 1, the
    ablation of the uncertainty weight.
    Math runs in float32 with autocast disabled, so it works under bf16/fp16 autocast.

    Taught in notebook 08_ucd_contrastive_distillation.
    """

    name: ClassVar[str] = "contrastive_distillation"
    needs_old: ClassVar[bool] = True

    def __init__(self, temperature: float = 0.07, chunk_size: int = 1024,
                 max_anchors_per_class: Optional[int] = None, unshifted_negatives: bool = False,
                 uncertainty: bool = True) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        if max_anchors_per_class is not None and max_anchors_per_class < 1:
            raise ValueError(f"max_anchors_per_class must be None or >= 1, got {max_anchors_per_class}")
        self.temperature = temperature
        self.chunk_size = chunk_size
        self.max_anchors_per_class = max_anchors_per_class
        self.unshifted_negatives = unshifted_negatives
        self.uncertainty = uncertainty

    def forward(self, batch: Batch) -> torch.Tensor:
        device_type = batch.out.features["pre_logits"].device.type
        with torch.autocast(device_type=device_type, enabled=False):  # matmuls stay float32
            return self._loss(batch)

    def _loss(self, batch: Batch) -> torch.Tensor:
        pixels = build_contrast_set(batch, self.max_anchors_per_class)
        counts = torch.bincount(pixels.contrast_labels)  # (max ȳ + 1,) entries per label
        num_positives = counts[pixels.anchor_labels] - 1  # (N_a,) |P_i|: same label, minus own copy
        rows = torch.nonzero(num_positives > 0).squeeze(1)  # (n,) the anchors that have positives
        if len(rows) == 0:  # no anchor or no positive pair: 0, connected to the graph
            return batch.out.features["pre_logits"].float().sum() * 0.0
        # The contrast set sorted by label: label c owns the columns [first[c], first[c] + counts[c]).
        order = torch.argsort(pixels.contrast_labels, stable=True)  # (N_c,) column -> entry
        column_of = torch.empty_like(order)
        column_of[order] = torch.arange(len(order), device=order.device)  # (N_c,) entry -> column
        first = torch.cumsum(counts, 0) - counts  # (max ȳ + 1,)
        contrast, contrast_probs = pixels.contrast[order], pixels.contrast_probs[order]  # (N_c, C), (N_c, |O|)
        contrast_ground_truth = pixels.contrast_ground_truth[order]  # (N_c,)
        rows = rows[torch.argsort(pixels.anchor_labels[rows], stable=True)]  # (n,) grouped by label
        labels, sizes = torch.unique_consecutive(pixels.anchor_labels[rows], return_counts=True)
        anchors = pixels.anchors[rows]  # (n, C), in label groups
        needs_gradient = anchors.requires_grad and torch.is_grad_enabled()
        plain = anchors.detach()  # (n, C); the gradient is computed by hand, chunk by chunk
        gradient = torch.zeros_like(plain) if needs_gradient else None  # (n, C)
        # A bound on |s_ij| (1/τ for unit vectors): below UNSHIFTED_EXP_BOUND no row maximum is needed.
        max_similarity = float(plain.norm(dim=1).max() * contrast.norm(dim=1).max()) / self.temperature
        # One similarity buffer for every chunk: at most chunk_size rows, and a chunk ends with its label.
        buffer = plain.new_empty(min(self.chunk_size, int(sizes.max())) * len(contrast))  # (R·N_c,)
        total, done = plain.new_zeros(()), 0
        for label, size in zip(labels.tolist(), sizes.tolist()):
            block = (int(first[label]), int(first[label] + counts[label]))
            for start in range(done, done + size, self.chunk_size):
                chunk = slice(start, min(start + self.chunk_size, done + size))
                index = rows[chunk]
                value, chunk_gradient = chunk_loss_sum(
                    plain[chunk], contrast, pixels.anchor_probs[index], contrast_probs,
                    pixels.anchor_ground_truth[index], contrast_ground_truth, num_positives[index],
                    column_of[index], block, self.temperature, self.unshifted_negatives, self.uncertainty,
                    gradient=needs_gradient, max_similarity=max_similarity, buffer=buffer)
                total = total + value
                if gradient is not None:
                    gradient[chunk] = chunk_gradient
            done += size
        if gradient is None:
            return total / len(rows)
        return _WithGradient.apply(anchors, total / len(rows), gradient / len(rows))
