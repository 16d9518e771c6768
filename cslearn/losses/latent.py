"""SDR's latent-space terms (Michieli & Zanuttigh, CVPR 2021, "Continual Semantic Segmentation via
Repulsion-Attraction of Sparse and Disentangled Latent Representations"; methods.md §5).

All terms read f = out.features["body"] (B, C, h, w) and the labels brought to feature resolution
by NEAREST resizing (`F.interpolate(mode="nearest")` on float labels, then long: with a factor of
16 it keeps the top-left pixel of each block, as the reference; §5.1). Positions labelled 255 are
excluded everywhere (MiB-style training never has them). Pixel vectors are gathered
channel-correctly, (B, C, h, w) -> (B, h, w, C) -> (B·h·w, C), and class sums are ONE index_add
over that matrix. This fixes the official code's masked-select + `.view(C, -1)` gather, which mixes
channels as soon as a class spans several images (§5.8 item 1). The math runs in float32.
Steps are not checked here: methods apply these terms at t >= 1 (step 0 trains with CE only),
while the prototype bank observes every step. Taught in notebooks 06_sdr_prototypes_and_matching
(bank, PM) and 07_sdr_sparsity_attraction_repulsion (attraction, repulsion, FS).
"""
from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F

from cslearn.losses.base import IGNORE_INDEX, Batch, LossTerm, SharedState, StepContext
from cslearn.models.output import predicted_labels

BANK = "sdr_prototypes"


def labels_at(targets: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(B, H, W) int64 labels -> (B, h, w) int64, nearest neighbour (top-left pixel of a block)."""
    return F.interpolate(targets[:, None].float(), size=size, mode="nearest")[:, 0].long()


def pixel_vectors(batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    """Feature vectors (B·h·w, C) float32 and their labels (B·h·w,) at feature resolution."""
    body = batch.out.features["body"]  # (B, C, h, w)
    labels = labels_at(batch.targets, body.shape[-2:])  # (B, h, w)
    features = body.float().permute(0, 2, 3, 1).reshape(-1, body.shape[1])  # (B·h·w, C), channels last
    return features, labels.reshape(-1)  # (B·h·w,)


def class_sums(features: torch.Tensor, labels: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Classes present (K,), each position's class slot (n,), per-class sums (K, C), counts (K,)."""
    classes, slot = torch.unique(labels, return_inverse=True)  # (K,), (n,)
    sums = features.new_zeros(len(classes), features.shape[1]).index_add(0, slot, features)  # (K, C)
    return classes, slot, sums, torch.bincount(slot, minlength=len(classes))  # counts (K,)


def safe_sqrt(values: torch.Tensor) -> torch.Tensor:
    """sqrt with gradient 0 (not NaN) at 0: a class whose only pixel IS its prototype (p_c was just
    updated with it) must not break the step."""
    positive = values > 0
    return torch.where(positive, torch.where(positive, values, 1.0).sqrt(), 0.0)


def zero_loss(batch: Batch) -> torch.Tensor:
    """A float32 0 that is still connected to the graph (nothing to compare in this batch)."""
    return batch.out.features["body"].float().sum() * 0


class PrototypeBank(SharedState):
    """Class prototypes p (S, C) float32 and counts N (S,) int64, zero-initialised (SDR §5.2).

    Every iteration, before the losses, on detached features, for each class c of the update set
    U present in the batch (n_c positions):  p_c <- (Σ_{y↓_i = c} f_i + N_c p_c) / (N_c + n_c),
    N_c <- N_c + n_c: a cumulative mean over every visit of the step (all epochs weigh equally).
    U = every class >= num_old: at step 0 all step-0 classes INCLUDING background, at t >= 1 the new
    classes only, so old prototypes and p_0 stay frozen. This gives an explicit step-0 background
    prototype (the code drops the first label of each batch, so p_0 stays 0 in overlapped runs,
    §5.8 item 3). `begin_step` grows the bank to num_old + num_new rows, keeping old rows; the
    channel count is fixed by the first batch. The update is computed in float64.
    """

    def __init__(self) -> None:
        self.prototypes = torch.zeros(0, 0)  # (S, C) float32, C = 0 until the first batch
        self.counts = torch.zeros(0, dtype=torch.int64)  # (S,)

    def _check(self, num_channels: int) -> tuple[int, int]:
        rows, channels = self.prototypes.shape
        if channels not in (0, num_channels):
            raise ValueError(f"prototype bank holds {channels}-channel prototypes, features have {num_channels}")
        return rows, channels

    def _resize(self, num_classes: int, num_channels: int, device: torch.device) -> None:
        rows, channels = self._check(num_channels)
        if rows >= num_classes and channels == num_channels:  # nothing to grow: at most a device move
            self.prototypes, self.counts = self.prototypes.to(device), self.counts.to(device)
            return
        prototypes = torch.zeros(max(rows, num_classes), num_channels, device=device)  # (S, C)
        prototypes[:rows, :channels] = self.prototypes.to(device)
        counts = torch.zeros(max(rows, num_classes), dtype=torch.int64, device=device)  # (S,)
        counts[:rows] = self.counts.to(device)
        self.prototypes, self.counts = prototypes, counts

    def begin_step(self, context: StepContext) -> None:
        num_seen = context.num_old + context.num_new
        if len(self.counts) > num_seen:
            raise ValueError(f"prototype bank holds {len(self.counts)} classes, step {context.step} has {num_seen}")
        self._resize(num_seen, self.prototypes.shape[1], context.device)

    def observe(self, batch: Batch) -> None:
        features, labels = pixel_vectors(batch)  # (N, C), (N,)
        features = features.detach()
        self._resize(batch.num_seen, features.shape[1], features.device)
        update = (labels != IGNORE_INDEX) & (labels >= batch.num_old)  # (N,) positions of U
        if not update.any():
            return
        classes, _, sums, counts = class_sums(features[update], labels[update])  # (K,), _, (K, C), (K,)
        seen = self.counts[classes].double()  # (K,) N_c
        means = (sums.double() + seen[:, None] * self.prototypes[classes].double()) / (seen + counts)[:, None]
        self.prototypes[classes] = means.float()  # (K, C)
        self.counts[classes] += counts

    def lookup(self, classes: torch.Tensor, num_channels: int, device: torch.device) -> torch.Tensor:
        """sg(p_c) for the given classes, (K, C). A class the bank never observed has the zero
        prototype (the initial value), also for a bank used without `begin_step` (a lone term)."""
        rows, channels = self._check(num_channels)
        found = torch.zeros(len(classes), num_channels, device=device)  # (K, C)
        if channels:
            known = classes < rows  # (K,)
            found[known] = self.prototypes.to(device)[classes[known]]
        return found

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"prototypes": self.prototypes.clone(), "counts": self.counts.clone()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        if set(state) != {"prototypes", "counts"} or len(state["prototypes"]) != len(state["counts"]):
            raise ValueError(f"a prototype bank state has 'prototypes' (S, C) and 'counts' (S,), got {sorted(state)}")
        self.prototypes = state["prototypes"].detach().float().clone()
        self.counts = state["counts"].detach().long().clone()


class _UsesPrototypes(LossTerm):
    """A term that reads the shared bank; alone (no objective) it gets a private, empty one."""

    shared_state: ClassVar[dict[str, type[SharedState]]] = {BANK: PrototypeBank}

    def __init__(self) -> None:
        super().__init__()
        self.shared = {BANK: PrototypeBank()}  # replaced by the objective's shared dict

    def prototypes(self, classes: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        bank: PrototypeBank = self.shared[BANK]  # type: ignore[assignment]
        return bank.lookup(classes, features.shape[1], features.device)  # (K, C), no gradient


class PrototypeMatching(_UsesPrototypes):
    """Prototypes matching, PM (SDR §5.3): keep old-class features where the old prototypes are.

    Old classes are pseudo-labelled by the OLD model: the argmax of its full-resolution logits,
    nearest-resized to h×w, kept only where y↓ = 0 (pseudo-label 0 is ignored). With K_pm the old
    foreground classes present and p̂_c the on-batch mean of CURRENT features (with gradient):
        L_PM = 1/|K_pm| · Σ_{c ∈ K_pm} ‖p̂_c − sg(p_c)‖₂,   0 if K_pm is empty.
    Normalisation: the poster's unsquared norm, averaged over the old classes present (absent
    ones cannot be evaluated). The code uses (1/C)‖·‖² (nn.MSELoss) and a `.view(-1, C)` gather
    that is wrong even for B = 1 (§5.8 items 5 and 1); the weight 1e-2 was tuned on that form.
    """

    name: ClassVar[str] = "prototype_matching"
    needs_old: ClassVar[bool] = True

    def forward(self, batch: Batch) -> torch.Tensor:
        assert batch.old is not None  # checked by LossTerm.__call__
        old_logits = batch.old.logits.detach().float()  # (B, |O|, H, W)
        if old_logits.shape[1] != batch.num_old:
            raise ValueError(f"old model has {old_logits.shape[1]} channels, batch.num_old is {batch.num_old}")
        features, labels = pixel_vectors(batch)  # (N, C), (N,)
        size = batch.out.features["body"].shape[-2:]
        pseudo = labels_at(predicted_labels(old_logits), size).reshape(-1)  # (N,) old argmax, at h×w
        pseudo = torch.where(labels == 0, pseudo, 0)  # (N,) only on current background
        matched = pseudo > 0
        if not matched.any():
            return zero_loss(batch)
        classes, _, sums, counts = class_sums(features[matched], pseudo[matched])  # (K,), _, (K, C), (K,)
        batch_prototypes = sums / counts[:, None]  # (K, C) p̂_c, with gradient
        differences = batch_prototypes - self.prototypes(classes, features)  # (K, C)
        return safe_sqrt(differences.pow(2).sum(dim=1)).mean()


class Attraction(_UsesPrototypes):
    """Attraction, the intra-class term (SDR §5.4): pull features towards their class prototype.

    K = classes present in the ground truth y↓ (background included; at t >= 1 background plus
    the new classes present), p_c the stored running means (no gradient):
        L_ATT = 1/|K| · Σ_{c ∈ K} ( Σ_{i: y↓_i = c} ‖f_i − sg(p_c)‖₂² )^{1/2}.
    Normalisation: one 1/|K| outside the class sum (the code divides its running sum by |K|
    inside the loop, so background got weight ~1/|K|^|K|, §5.8 item 2), the poster's unsquared
    Frobenius norm per class. The background target is p_0, the step-0 background mean (item 3).
    `include_background=False` is the code's `--lfc_nobgr` (methods.md: sdr_attraction_no_background).
    """

    name: ClassVar[str] = "attraction"

    def __init__(self, include_background: bool = True) -> None:
        super().__init__()
        self.include_background = include_background

    def forward(self, batch: Batch) -> torch.Tensor:
        features, labels = pixel_vectors(batch)  # (N, C), (N,)
        keep = (labels != IGNORE_INDEX) & ((labels != 0) | self.include_background)  # (N,)
        if not keep.any():
            return zero_loss(batch)
        features, labels = features[keep], labels[keep]  # (n, C), (n,)
        classes, slot = torch.unique(labels, return_inverse=True)  # (K,), (n,)
        targets = self.prototypes(classes, features)[slot]  # (n, C) sg(p_{y_i})
        squared = (features - targets).pow(2).sum(dim=1)  # (n,)
        per_class = squared.new_zeros(len(classes)).index_add(0, slot, squared)  # (K,)
        return safe_sqrt(per_class).mean()


class Repulsion(LossTerm):
    """Repulsion, the inter-class term (SDR §5.5): push on-batch class means apart.

    μ_c = mean of f_i over {y↓_i = c} with gradient, c ∈ K (as attraction, background included):
        L_REP = 1/|K| · Σ_{c ∈ K} Σ_{c' ∈ K \\ {c}} 1 / (‖μ_c − μ_c'‖₂ + ε),   ε = 1e-6;  0 if |K| < 2.
    Normalisation: the poster's 1/|K| (the code averages over |K|(|K|−1) ordered pairs, i.e.
    divides by |K| − 1 more, §5.8 item 6). Distances are computed directly on the off-diagonal
    pairs, selected by index: the code's `torch.cdist` switches to a matmul formula above 25
    classes, and its inf test then lets the diagonal through. Its μ_c used `.view(C, -1)` (item 1).
    Reads no prototypes, so it needs no bank.
    """

    name: ClassVar[str] = "repulsion"
    epsilon: ClassVar[float] = 1e-6

    def forward(self, batch: Batch) -> torch.Tensor:
        features, labels = pixel_vectors(batch)  # (N, C), (N,)
        keep = labels != IGNORE_INDEX  # (N,)
        classes, _, sums, counts = class_sums(features[keep], labels[keep])  # (K,), _, (K, C), (K,)
        if len(classes) < 2:
            return zero_loss(batch)
        means = sums / counts[:, None]  # (K, C) μ_c
        off_diagonal = ~torch.eye(len(classes), dtype=torch.bool, device=means.device)  # (K, K)
        first, second = off_diagonal.nonzero(as_tuple=True)  # (K(K−1),) each: the ordered pairs c ≠ c'
        distances = safe_sqrt((means[first] - means[second]).pow(2).sum(dim=1))  # (K(K−1),)
        return (1 / (distances + self.epsilon)).sum() / len(classes)


class FeatureSparsity(LossTerm):
    """Feature sparsification, FS (SDR §5.6; the code's max_maskedforclass / exponential / ratio).

    m_c = max of f over all class-c positions of the batch and all channels (not detached),
    f̄_i = f_i / (m_{y↓_i} + ε₁), and over the positions i with a valid label (255 excluded):
        L_FS = mean_i Σ_d exp(f̄_{i,d}) / (Σ_d f̄_{i,d} + ε₂),   ε₁ = 1e-15 (code), ε₂ = 1e-6.
    ε₂ is larger than the code's 1e-15 as §5.6 advises: an all-zero pixel gives C/ε₂, not C·1e15.
    Background is a class like any other (the code returns 0 for a background-only batch, §5.8
    item 8). Note §5.8 item 7: at face value this pushes normalised activations up and towards
    uniform; measure sparsity rather than assume it.
    """

    name: ClassVar[str] = "feature_sparsity"
    epsilon_max: ClassVar[float] = 1e-15
    epsilon_ratio: ClassVar[float] = 1e-6

    def forward(self, batch: Batch) -> torch.Tensor:
        features, labels = pixel_vectors(batch)  # (N, C), (N,)
        keep = labels != IGNORE_INDEX  # (N,)
        if not keep.any():
            return zero_loss(batch)
        features, labels = features[keep], labels[keep]  # (n, C), (n,)
        classes, slot = torch.unique(labels, return_inverse=True)  # (K,), (n,)
        class_max = features.new_full((len(classes),), float("-inf")).scatter_reduce(
            0, slot, features.amax(dim=1), reduce="amax", include_self=False)  # (K,) m_c
        normalised = features / (class_max[slot, None] + self.epsilon_max)  # (n, C) f̄
        ratios = normalised.exp().sum(dim=1) / (normalised.sum(dim=1) + self.epsilon_ratio)  # (n,)
        return ratios.mean()

