"""PLOP's entropy-based pseudo-labels and the CE weighted by its adaptive factor.

Douillard et al., CVPR 2021, "PLOP: Learning without Forgetting for Continual Semantic
Segmentation", §3.2 "Uncertainty-based pseudo-labelling" (methods.md §4.2-4.3; reference
`train.py`: `Trainer.before`, `find_median`, the "entropy" branch of `Trainer.train`).
Taught in notebook 09_plop_pseudo_labels_and_pod.

At step t >= 1 a background pixel (y_i = 0) may show an old class. The old model's prediction
ĉ_i = argmax_{c ∈ O} q_i(c) (q_i = softmax of the old logits at input resolution) replaces the
label when the old model is certain enough, measured by the normalised entropy
    u_i = H(q_i) / (|O| · ln|O| · ln|S|),   H(q) = −Σ_{c ∈ O} q(c) ln q(c)
(the reference's class-MEAN entropy divided by ln|O|, then by ln|S|; u_i <= 1/(|O| ln|S|)).
With one old channel (|O| = 1) q is one-hot, H = 0 and ln|O| = 0: u_i is defined as 0 (the
reference divides by ln(1 + 1e-8) there and gets a meaningless value).

Thresholds, once per step before training (`begin_step`): one pass over the step's training
loader with the old model; τ_c = max(median{u_i : y_i = 0, ĉ_i = c}, 0.001); classes the old
model never predicts get the floor 0.001.
- Default, the EXACT median (methods.md §4.3, project default), computed from a per-class
  histogram of u with bins of width 1e-6: the k-th smallest value lies in a known bin, so the
  median (mean of the two middle values for an even count) is returned to within 5e-7 (half a
  bin). Memory is bounded and independent of the number of pixels: |O| · u_max / 1e-6 counts
  = 1e6 / ln|S| int64 (under 12 MB), instead of one float per background pixel of the pass.
- `histogram_median=True` replicates the coded walk (methods.md §4.3): a 100-bin histogram over
  [0, 1] whose walk adds bin indices, not counts; it gives τ = +inf (accept all) for large
  classes, 0.005 when every value is in bin 0 (ADE), and may give NaN (reject all) in a tie.

Rewriting (every iteration, t >= 1): for y_i = 0, ỹ_i = ĉ_i if u_i < τ_{ĉ_i}, else 255; labels of
new classes and 255 stay. Adaptive factor per image (reference commit b70fb8f):
    ν_b = #{i ∈ b: y_i = 0, accepted} / (#{i ∈ b: y_i = 0} + 1e-6),
so an image without background pixels gets ν = 0, which zeroes the loss of its new-class
pixels too. That is the reference's behaviour (the 1e-6 was added only to avoid a NaN) and the
default here; option `weight_without_background` sets ν for such images (1.0 reads "all of its
zero background pixels are certain"). Background pixels are y_i = 0 as in methods.md; the
reference's training code tests y_i < |O|, which is the same set once old classes are remapped
to 0 (protocol.md §4).
"""
from __future__ import annotations

import dataclasses
import math
from typing import ClassVar, Iterable, Optional

import torch
import torch.nn.functional as F

from cslearn.losses.base import IGNORE_INDEX, Batch, LossTerm, MissingOldModelError, StepContext, TargetRewriter

MEDIAN_BIN_WIDTH = 1e-6  # exact median to within half of this
CODED_BINS = 100  # the reference's histogram for the entropy mode
BLOCK_ELEMENTS = 2**21  # old_predictions works on bands of about this many logits (8 MB in float32)


@torch.no_grad()  # pseudo-labels: no gradient, and the entropy is computed in place
def old_predictions(old_logits: torch.Tensor, num_seen: int,
                    block_elements: int = BLOCK_ELEMENTS) -> tuple[torch.Tensor, torch.Tensor]:
    """Old logits (B, |O|, H, W) -> (ĉ (B, H, W) int64, u (B, H, W) float32), see the module doc.

    Per pixel, with d_c = z_c − max_c z_c and Z = Σ_c e^{d_c} (so ln q(c) = d_c − ln Z):
        ĉ = argmax_c z_c (the first maximum, as `predicted_labels`),
        H(q) = −Σ_c q(c) ln q(c) = ln Z − Σ_c e^{d_c} d_c / Z.
    Computed one band of rows of one image at a time (about `block_elements` values): the
    temporaries stay small, which on a CPU is three times faster than whole-batch tensors (for
    ADE20K's 101 old channels at 12 x 512 x 512, 1.4 -> 0.5 s: each whole-batch temporary is
    1.3 GB of fresh memory). On a GPU, where bands would only multiply kernel launches, a band is
    a whole image (still no whole-batch temporary); not timed, as there is no GPU here.
    """
    num_images, num_old, height, width = old_logits.shape
    classes = torch.empty(num_images, height, width, dtype=torch.int64, device=old_logits.device)  # ĉ
    entropy = torch.zeros(num_images, height, width, dtype=torch.float32, device=old_logits.device)  # H(q)
    rows = max(1, block_elements // max(1, num_old * width))  # rows per band
    rows = rows if old_logits.device.type == "cpu" else height  # a GPU: one band per image
    for image in range(num_images):
        for top in range(0, height, rows):
            logits = old_logits[image:image + 1, :, top:top + rows].float()  # (1, |O|, rows, W)
            largest, indices = logits.max(dim=1)  # (1, rows, W) each: max(dim=1) is predicted_labels
            classes[image:image + 1, top:top + rows] = indices
            if num_old == 1:
                continue  # one class: certain, H = 0
            shifted = logits - largest[:, None]  # (1, |O|, rows, W) d, <= 0
            exps = shifted.exp()  # (1, |O|, rows, W) e^d in [0, 1]
            normaliser = exps.sum(dim=1)  # (1, rows, W) Z >= 1
            # e^d·d in place (exps is not needed again); a logit of -inf gives e^d = 0 and d = -inf,
            # whose term is 0·log 0 = 0, not the product's 0·(-inf) = NaN
            weighted = exps.mul_(shifted).nan_to_num_(0.0)  # (1, |O|, rows, W)
            entropy[image:image + 1, top:top + rows] = (
                normaliser.log() - weighted.sum(dim=1) / normaliser)  # (1, rows, W)
    if num_old == 1:
        return classes, entropy  # u = 0
    return classes, entropy / (num_old * math.log(num_old) * math.log(num_seen))


def exact_median_bins(num_old: int, num_seen: int) -> int:
    """Bins per class covering [0, u_max], u_max = 1/(|O| ln|S|), plus one for rounding."""
    largest = 0.0 if num_old == 1 else 1.0 / (num_old * math.log(num_seen))
    return int(largest / MEDIAN_BIN_WIDTH) + 2


def histogram_medians(counts: torch.Tensor, bin_width: float = MEDIAN_BIN_WIDTH) -> torch.Tensor:
    """Per-class median from bin counts (|O|, num_bins) int64 -> (|O|,) float64, NaN if empty.

    Bins are monotone in u, so the k-th smallest bin index is the bin of the k-th smallest
    value: the two middle order statistics are located exactly and taken at their bin centres.
    """
    totals = counts.sum(dim=1)  # (|O|,)
    cumulative = counts.cumsum(dim=1)  # (|O|, num_bins), values in bins <= b
    lower = torch.searchsorted(cumulative, ((totals - 1) // 2)[:, None], right=True)[:, 0]  # (|O|,)
    upper = torch.searchsorted(cumulative, (totals // 2)[:, None], right=True)[:, 0]  # (|O|,)
    medians = (lower + upper + 1).double() * (bin_width / 2)  # mean of the two bin centres
    return torch.where(totals > 0, medians, torch.full_like(medians, math.nan))


def coded_histogram_median(counts: torch.Tensor) -> float:
    """The reference's median walk over one class's CODED_BINS counts (int64), bug for bug.

    Kept in float32 tensors like the reference; the running sum grows by the bin index, and
    `int(lower_border * bins)` is the index it reads (29/100*100 rounds down to 28).
    """
    total = counts.sum()
    if total <= 0:
        return 0.0  # the reference leaves 0; the floor applies
    half = total / 2  # float32 tensor
    running_sum, lower_border, bin_index = 0.0, 0.0, 0
    for index in range(CODED_BINS):
        lower_border = index / CODED_BINS
        bin_index = int(lower_border * CODED_BINS)
        if half >= running_sum and half <= running_sum + counts[bin_index]:
            break
        running_sum += lower_border * CODED_BINS
    # After running off the end the last bin is usually empty: +inf, -inf or NaN.
    return float(lower_border + ((half - running_sum) / counts[bin_index]) * (1 / CODED_BINS))


@torch.no_grad()
def entropy_thresholds(old_model: torch.nn.Module, loader: Iterable, num_old: int, num_seen: int,
                       device: torch.device, amp: bool = False, histogram_median: bool = False,
                       min_threshold: float = 0.001) -> torch.Tensor:
    """One pass of the old model over `loader` ((images, targets) batches) -> τ (|O|,) float32."""
    num_bins = CODED_BINS if histogram_median else exact_median_bins(num_old, num_seen)
    counts = torch.zeros(num_old * num_bins, dtype=torch.int64, device=device)  # (|O|·bins,)
    dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
    for images, targets in loader:
        images, targets = images.to(device), targets.to(device)
        with torch.autocast(device.type, dtype=dtype, enabled=amp):
            old_logits = old_model(images).logits  # (B, |O|, H, W)
        if old_logits.shape[1] != num_old:
            raise ValueError(f"old model has {old_logits.shape[1]} channels, expected {num_old}")
        classes, uncertainty = old_predictions(old_logits, num_seen)  # (B, H, W) each
        background = targets == 0  # (B, H, W)
        classes, uncertainty = classes[background], uncertainty[background]  # (P,) each
        if histogram_median:  # the reference: (u·100).long(), clamped to the last bin
            bins = (uncertainty * CODED_BINS).long().clamp(max=CODED_BINS - 1)
        else:
            bins = (uncertainty.double() / MEDIAN_BIN_WIDTH).floor().long().clamp(0, num_bins - 1)
        counts += torch.bincount(classes * num_bins + bins, minlength=num_old * num_bins)
    counts = counts.view(num_old, num_bins).cpu()  # (|O|, bins)
    if histogram_median:
        walked = [coded_histogram_median(row) for row in counts]
        # Python's max(τ, floor) as in the reference: a NaN stays NaN (no pixel accepted).
        return torch.tensor([t if math.isnan(t) else max(t, min_threshold) for t in walked], dtype=torch.float32)
    medians = histogram_medians(counts)  # (|O|,), NaN for classes never predicted
    return torch.where(medians.isnan(), min_threshold, medians.clamp(min=min_threshold)).float()


class EntropyPseudoLabels(TargetRewriter):
    """PLOP's pseudo-labelling of the background with the old model's confident predictions,
    and the adaptive factor ν in `extras["image_weights"]` (methods.md §4.2; see the module doc).

    Options: histogram_median (replicate the coded median walk, off by default),
    min_threshold (the floor 0.001), adaptive_factor (set ν; off: plain CE on pseudo-labels),
    weight_without_background (ν of images without y = 0 pixels; 0.0 as in the reference).
    State: the thresholds τ (|O|,) float32, checkpointed.

    Taught in notebook 09_plop_pseudo_labels_and_pod.
    """

    name: ClassVar[str] = "plop_pseudo_labels"

    def __init__(self, histogram_median: bool = False, min_threshold: float = 0.001,
                 adaptive_factor: bool = True, weight_without_background: float = 0.0) -> None:
        super().__init__()
        self.histogram_median = bool(histogram_median)
        self.min_threshold = float(min_threshold)
        self.adaptive_factor = bool(adaptive_factor)
        self.weight_without_background = float(weight_without_background)
        self.thresholds: Optional[torch.Tensor] = None  # (|O|,) float32, set by begin_step

    def begin_step(self, context: StepContext) -> None:
        if context.old_model is None:
            raise MissingOldModelError(f"'{self.name}' needs the previous step's model (step {context.step})")
        self.thresholds = entropy_thresholds(
            context.old_model, context.train_loader, context.num_old, context.num_old + context.num_new,
            context.device, amp=context.amp, histogram_median=self.histogram_median,
            min_threshold=self.min_threshold)

    def forward(self, batch: Batch) -> Batch:  # type: ignore[override]
        assert batch.old is not None  # checked by LossTerm.__call__
        if self.thresholds is None or self.thresholds.numel() != batch.num_old:
            raise RuntimeError(f"'{self.name}' has no thresholds for {batch.num_old} old classes; "
                               f"call begin_step (or load_state_dict) first")
        with torch.no_grad():
            classes, uncertainty = old_predictions(batch.old.logits, batch.num_seen)  # (B, H, W) each
            if classes.shape != batch.targets.shape:
                raise ValueError(f"old logits give {tuple(classes.shape)}, targets are {tuple(batch.targets.shape)}")
            self.thresholds = self.thresholds.to(classes.device)
            background = batch.targets == 0  # (B, H, W)
            accepted = background & (uncertainty < self.thresholds[classes])  # (B, H, W)
            ignored = torch.full_like(batch.targets, IGNORE_INDEX)
            targets = torch.where(accepted, classes, torch.where(background, ignored, batch.targets))
            extras = dict(batch.extras)
            if self.adaptive_factor:
                num_background = background.sum(dim=(1, 2)).float()  # (B,)
                weights = accepted.sum(dim=(1, 2)).float() / (num_background + 1e-6)  # (B,) ν_b
                extras["image_weights"] = torch.where(num_background > 0, weights,
                                                      torch.full_like(weights, self.weight_without_background))
        return dataclasses.replace(batch, targets=targets, extras=extras)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {} if self.thresholds is None else {"thresholds": self.thresholds.detach().cpu().clone()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        unknown = set(state) - {"thresholds"}
        if unknown:
            raise ValueError(f"'{self.name}' got unknown state {sorted(unknown)}")
        if "thresholds" in state:
            self.thresholds = state["thresholds"].float().clone()


class PseudoLabelCrossEntropy(LossTerm):
    """PLOP's classification loss: CE on the (pseudo-)labels, each image weighted by ν_b
    (Douillard et al., CVPR 2021, "PLOP: Learning without Forgetting for Continual Semantic
    Segmentation", §3.2; methods.md §4.2):

        L_cls = 1/|Ω| · Σ_b Σ_{i ∈ b, ỹ_i ≠ 255} ν_b · (−log p_i(ỹ_i)),   p_i = softmax over S.

    ν_b is `extras["image_weights"]` (B,), set by the rewriter `plop_pseudo_labels`; without it
    ν = 1 and this is `ce` (step 0, or a method without the rewriter). ν is a constant (no
    gradient). Normalisation: |Ω| = B·H·W, ignored pixels counted, as in the reference.

    Taught in notebook 09_plop_pseudo_labels_and_pod.
    """

    name: ClassVar[str] = "pseudo_label_ce"

    def forward(self, batch: Batch) -> torch.Tensor:
        logits = batch.out.logits.float()  # (B, C_seen, H, W)
        pixel_losses = F.cross_entropy(logits, batch.targets, ignore_index=IGNORE_INDEX,
                                       reduction="none")  # (B, H, W), 0 at ignored pixels
        weights = batch.extras.get("image_weights")
        if weights is not None:
            if weights.shape != (logits.shape[0],):
                raise ValueError(f"image_weights must have shape ({logits.shape[0]},), got {tuple(weights.shape)}")
            pixel_losses = pixel_losses * weights.detach().float().view(-1, 1, 1)  # (B, H, W)
        return pixel_losses.mean()
