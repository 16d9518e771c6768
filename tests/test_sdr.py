"""SDR's latent terms (cslearn/losses/latent.py, methods.md §5): explicit-loop references on
multi-image batches, hand-computed values, the prototype bank's life cycle, gradients, edge cases."""
from __future__ import annotations

import io
import math
from typing import Optional

import pytest
import torch

from cslearn.losses import TERMS, Batch, StepContext
from cslearn.losses.latent import (Attraction, FeatureSparsity, PrototypeBank, PrototypeMatching, Repulsion,
                                   labels_at)
from cslearn.methods import STEP0_TERMS, Term
from cslearn.objective import Objective
from cslearn.models.output import SegOutput

BANK = "sdr_prototypes"


def make_batch(features: torch.Tensor, targets: torch.Tensor, num_old: int, num_new: int,
               old_logits: Optional[torch.Tensor] = None) -> Batch:
    """features (B, C, h, w) as out.features["body"]; targets (B, H, W); logits are unused zeros."""
    batch_size, height, width = targets.shape
    logits = torch.zeros(batch_size, num_old + num_new, height, width)  # (B, |S|, H, W)
    old = None if old_logits is None else SegOutput(old_logits, {})
    return Batch(images=torch.zeros(batch_size, 3, height, width), targets=targets,
                 out=SegOutput(logits, {"body": features}), old=old, num_old=num_old, num_new=num_new,
                 step=int(num_old > 0))


def random_case(seed: int, num_old: int = 3, num_new: int = 2, batch_size: int = 4, channels: int = 5,
                size: int = 4, scale: int = 2, ignore: bool = True):
    """A batch whose classes ALL appear in EVERY image (so class gathers span images), with 255
    positions, and garbage labels off the top-left pixel of each block (nearest resizing must
    pick the top-left one). Returns the batch and its labels at feature resolution (B, h, w)."""
    generator = torch.Generator().manual_seed(seed)
    classes = [0] + list(range(max(num_old, 1), num_old + num_new))
    choices = torch.tensor(classes + [255] * ignore)
    block = choices[torch.randint(len(choices), (batch_size, size, size), generator=generator)]  # (B, h, w)
    for k, c in enumerate(classes):
        block[:, k // size, k % size] = c
    targets = choices[torch.randint(len(choices), (batch_size, size * scale, size * scale),
                                    generator=generator)]  # (B, H, W) garbage
    targets[:, ::scale, ::scale] = block
    features = torch.rand(batch_size, channels, size, size, generator=generator).requires_grad_()  # (B, C, h, w)
    old_logits = (torch.randn(batch_size, num_old, size * scale, size * scale, generator=generator)
                  if num_old else None)  # (B, |O|, H, W)
    return make_batch(features, targets, num_old, num_new, old_logits), block


def bank_with(prototypes: torch.Tensor) -> PrototypeBank:
    bank = PrototypeBank()
    bank.load_state_dict({"prototypes": prototypes, "counts": torch.ones(len(prototypes), dtype=torch.long)})
    return bank


def with_bank(term, bank: PrototypeBank):
    term.shared = {BANK: bank}
    return term


# ----- slow, obviously-correct references: loops over images, pixels and classes, float64 -----

def class_vectors(features: torch.Tensor, labels: torch.Tensor) -> dict[int, list[torch.Tensor]]:
    groups: dict[int, list[torch.Tensor]] = {}
    batch_size, _, height, width = features.shape
    for b in range(batch_size):
        for i in range(height):
            for j in range(width):
                label = int(labels[b, i, j])
                if label != 255:
                    groups.setdefault(label, []).append(features[b, :, i, j].detach().double())
    return groups


def loop_update(prototypes: dict, counts: dict, features, labels, num_old: int) -> None:
    for c, vectors in class_vectors(features, labels).items():
        if c >= num_old:
            seen = counts.get(c, 0)
            old = prototypes.get(c, torch.zeros(features.shape[1], dtype=torch.float64))
            prototypes[c] = (sum(vectors) + seen * old) / (seen + len(vectors))
            counts[c] = seen + len(vectors)


def loop_prototype_matching(features, labels, old_logits, prototypes, scale: int) -> float:
    groups: dict[int, list[torch.Tensor]] = {}
    batch_size, _, height, width = features.shape
    for b in range(batch_size):
        for i in range(height):
            for j in range(width):
                if int(labels[b, i, j]) == 0:
                    pseudo = int(old_logits[b, :, i * scale, j * scale].argmax())
                    if pseudo > 0:
                        groups.setdefault(pseudo, []).append(features[b, :, i, j].detach().double())
    norms = [float((sum(v) / len(v) - prototypes[c].double()).norm()) for c, v in groups.items()]
    return sum(norms) / len(norms) if norms else 0.0


def loop_attraction(features, labels, prototypes, include_background=True) -> float:
    terms = [math.sqrt(sum(float(((v - prototypes[c].double()) ** 2).sum()) for v in vectors))
             for c, vectors in class_vectors(features, labels).items() if c != 0 or include_background]
    return sum(terms) / len(terms) if terms else 0.0


def loop_repulsion(features, labels) -> float:
    means = {c: sum(v) / len(v) for c, v in class_vectors(features, labels).items()}
    total = sum(1 / (float((means[c] - means[d]).norm()) + 1e-6) for c in means for d in means if c != d)
    return total / len(means) if len(means) >= 2 else 0.0


def loop_feature_sparsity(features, labels) -> float:
    groups = class_vectors(features, labels)
    maxima = {c: max(float(v.max()) for v in vectors) for c, vectors in groups.items()}
    ratios = [float(torch.exp(v / (maxima[c] + 1e-15)).sum()) / (float((v / (maxima[c] + 1e-15)).sum()) + 1e-6)
              for c, vectors in groups.items() for v in vectors]
    return sum(ratios) / len(ratios) if ratios else 0.0


# ----- against the loops -----

@pytest.mark.parametrize("seed", [0, 1, 2])
def test_prototype_update_matches_loop_over_several_batches(seed):
    bank, prototypes, counts = PrototypeBank(), {}, {}
    for index in range(3):
        batch, labels = random_case(10 * seed + index, num_old=0, num_new=3)
        bank.observe(batch)
        loop_update(prototypes, counts, batch.out.features["body"], labels, num_old=0)
    assert set(prototypes) == {0, 1, 2}  # step 0: background included
    for c in prototypes:
        assert torch.allclose(bank.prototypes[c].double(), prototypes[c], atol=1e-6)
        assert int(bank.counts[c]) == counts[c]


def test_view_gather_of_the_official_code_gives_a_different_prototype():
    """§5.8 item 1: masked select + .view(C, -1) is right for one image only; the test batch
    (every class in every image) exposes it, so the loop comparison above would catch it."""
    batch, labels = random_case(0, num_old=0, num_new=3)
    features = batch.out.features["body"].detach()  # (B, C, h, w)
    channels = features.shape[1]
    mask = (labels == 1)[:, None].expand_as(features)  # (B, C, h, w)
    scrambled = features[mask].view(channels, -1).mean(dim=1)  # the code's gather
    bank = PrototypeBank()
    bank.observe(batch)
    assert not torch.allclose(scrambled, bank.prototypes[1], atol=1e-3)
    assert torch.allclose(scrambled.mean(), bank.prototypes[1].mean(), atol=1e-6)  # grand mean kept
    single = features[:1][mask[:1]].view(channels, -1).mean(dim=1)  # one image: the code is right
    assert torch.allclose(single, features[0].permute(1, 2, 0)[labels[0] == 1].mean(dim=0), atol=1e-6)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_terms_match_loops_on_multi_image_batches(seed):
    batch, labels = random_case(seed, num_old=3, num_new=2)
    features = batch.out.features["body"]
    prototypes = torch.randn(5, features.shape[1], generator=torch.Generator().manual_seed(seed))
    bank = bank_with(prototypes)
    expected = {
        "prototype_matching": loop_prototype_matching(features, labels, batch.old.logits, prototypes, scale=2),
        "attraction": loop_attraction(features, labels, prototypes),
        "repulsion": loop_repulsion(features, labels),
        "feature_sparsity": loop_feature_sparsity(features, labels),
    }
    assert expected["prototype_matching"] > 0
    for name, value in expected.items():
        assert with_bank(TERMS[name](), bank)(batch).item() == pytest.approx(value, rel=1e-5)
    no_background = with_bank(Attraction(include_background=False), bank)(batch)
    assert no_background.item() == pytest.approx(loop_attraction(features, labels, prototypes, False), rel=1e-5)


def test_labels_at_feature_resolution_keep_the_top_left_pixel():
    targets = torch.tensor([[[1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11, 12], [13, 14, 15, 255]]])  # (1, 4, 4)
    assert labels_at(targets, (2, 2)).tolist() == [[[1, 3], [9, 11]]]


# ----- hand-computed examples: two pixels (1, C=2, 1, 2), labels at feature resolution -----

def two_pixels(first: list[float], second: list[float], labels: list[int], num_old: int = 1,
               num_new: int = 1, old_logits: Optional[torch.Tensor] = None) -> Batch:
    features = torch.tensor([first, second], dtype=torch.float32).T.reshape(1, 2, 1, 2).requires_grad_()  # (1, C, 1, 2)
    return make_batch(features, torch.tensor([[labels]]), num_old, num_new, old_logits)


def test_attraction_by_hand():
    bank = bank_with(torch.tensor([[0.0, 1.0], [0.0, 0.0]]))  # p_0 = (0, 1), p_1 = (0, 0)
    # f = (3, 4) of class 1: distance 5; f = (0, 1) of class 0 sits on p_0: 0.  (5 + 0) / 2
    batch = two_pixels([3, 4], [0, 1], [1, 0])
    loss = with_bank(Attraction(), bank)(batch)
    assert loss.item() == pytest.approx(2.5)
    loss.backward()  # the zero distance gives gradient 0, not NaN
    assert torch.isfinite(batch.out.features["body"].grad).all()
    assert with_bank(Attraction(include_background=False), bank)(batch).item() == pytest.approx(5.0)
    # both pixels of class 1: sqrt(1² + 2²) = sqrt(5) = 2.2360680 (not the mean of norms 1.5, not MSE 1.25)
    assert with_bank(Attraction(), bank)(two_pixels([1, 0], [0, 2], [1, 1])).item() == pytest.approx(2.2360680)


def test_repulsion_by_hand():
    # two classes 5 apart: (1/2) · (1/5 + 1/5) = 0.2
    assert Repulsion()(two_pixels([0, 0], [3, 4], [0, 1])).item() == pytest.approx(0.2, rel=1e-5)
    # three classes at (0,0), (3,4), (0,4): distances 5, 4, 3; (1/3) · 2 · (1/5 + 1/4 + 1/3) = 0.5222222
    # (the code's mean over 6 ordered pairs would give 0.2611111)
    features = torch.tensor([[0.0, 0.0], [3, 4], [0, 4]]).T.reshape(1, 2, 1, 3).requires_grad_()  # (1, 2, 1, 3)
    batch = make_batch(features, torch.tensor([[[0, 1, 2]]]), num_old=1, num_new=2)
    assert Repulsion()(batch).item() == pytest.approx(0.5222222, rel=1e-5)
    assert Repulsion()(two_pixels([0, 0], [3, 4], [1, 1])).item() == 0.0  # one class


def test_prototype_matching_by_hand():
    bank = bank_with(torch.tensor([[0.0, 0.0], [9.0, 9.0], [2.0, 4.0], [0.0, 0.0]]))  # p_2 = (2, 4)
    old_logits = torch.tensor([[0.0, 0.0, 5.0], [0.0, 0.0, 5.0]]).T.reshape(1, 3, 1, 2)  # argmax 2 at both
    # both pixels background now, old class 2: p̂_2 = ((1,1) + (3,1)) / 2 = (2, 1), ‖(0, −3)‖ = 3 (code: 9/2)
    both = two_pixels([1, 1], [3, 1], [0, 0], num_old=3, num_new=1, old_logits=old_logits)
    assert with_bank(PrototypeMatching(), bank)(both).item() == pytest.approx(3.0)
    # the second pixel is labelled new class 3: p̂_2 = (1, 1), ‖(−1, −3)‖ = sqrt(10) = 3.1622777
    one = two_pixels([1, 1], [3, 1], [0, 3], num_old=3, num_new=1, old_logits=old_logits)
    assert with_bank(PrototypeMatching(), bank)(one).item() == pytest.approx(3.1622777)
    # old model says background everywhere: nothing to match
    background = two_pixels([1, 1], [3, 1], [0, 0], num_old=3, num_new=1, old_logits=torch.zeros(1, 3, 1, 2))
    assert with_bank(PrototypeMatching(), bank)(background).item() == 0.0


def test_feature_sparsity_by_hand():
    e = math.e
    # one class each: f̄ = (1, 0) -> (e + 1) / 1;  f̄ = (2, 2) / 2 = (1, 1) -> 2e / 2 = e;  mean e + 0.5 = 3.2182818
    assert FeatureSparsity()(two_pixels([1, 0], [2, 2], [0, 1])).item() == pytest.approx(3.2182818, rel=1e-5)
    # one class, max 2: f̄ = (0.5, 0) -> (e^0.5 + 1) / 0.5 = 5.2974425;  (1, 1) -> e;  mean 4.0078622
    assert FeatureSparsity()(two_pixels([1, 0], [2, 2], [1, 1])).item() == pytest.approx(
        ((math.exp(0.5) + 1) / 0.5 + e) / 2, rel=1e-5)
    assert ((math.exp(0.5) + 1) / 0.5 + e) / 2 == pytest.approx(4.0078622)


# ----- the bank's life cycle -----

def context(step: int, num_old: int, num_new: int) -> StepContext:
    return StepContext(step=step, num_old=num_old, num_new=num_new, model=torch.nn.Identity(), old_model=None,
                       train_loader=[], device=torch.device("cpu"))


def true_means(batches: list[tuple[Batch, torch.Tensor]], classes: list[int]) -> torch.Tensor:
    """Per-channel class means over every position of every batch (loop gather), (K, C)."""
    groups: dict[int, list[torch.Tensor]] = {}
    for batch, labels in batches:
        for c, vectors in class_vectors(batch.out.features["body"], labels).items():
            groups.setdefault(c, []).extend(vectors)
    return torch.stack([sum(groups[c]) / len(groups[c]) for c in classes]).float()


def test_prototypes_after_epochs_are_class_means_and_old_rows_freeze_at_step_1():
    step0 = [random_case(seed, num_old=0, num_new=3) for seed in range(3)]
    objective = Objective(STEP0_TERMS, observers=(Term("attraction"), Term("prototype_matching")))
    bank = objective.shared[BANK]
    assert all(term.shared[BANK] is bank for term in objective.observers.values())  # one bank, shared
    objective.begin_step(context(0, 0, 3))
    for _ in range(2):  # two epochs over the same batches
        for batch, _ in step0:
            objective.prepare(batch)
    assert torch.allclose(bank.prototypes, true_means(step0, [0, 1, 2]), atol=1e-6)
    assert bank.counts.tolist() == [2 * sum(int((labels == c).sum()) for _, labels in step0) for c in range(3)]

    state = torch.load(_saved(objective.state_dict()), weights_only=True)  # tensors only
    objective = Objective((Term("attraction"), Term("prototype_matching")))
    objective.load_state_dict(state, carry_over=True)
    objective.begin_step(context(1, 3, 2))
    bank = objective.shared[BANK]
    assert bank.prototypes.shape == (5, 5) and bank.counts[3:].tolist() == [0, 0]
    assert torch.equal(bank.prototypes[:3], state["shared"][BANK]["prototypes"])
    step1 = [random_case(seed, num_old=3, num_new=2) for seed in range(3, 6)]
    for batch, _ in step1:
        objective.prepare(batch)
    assert torch.equal(bank.prototypes[:3], state["shared"][BANK]["prototypes"])  # old rows and p_0 frozen
    assert torch.allclose(bank.prototypes[3:], true_means(step1, [3, 4]), atol=1e-6)


def _saved(state: dict) -> io.BytesIO:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return buffer


def test_bank_state_round_trip_and_growth():
    bank = PrototypeBank()
    bank.begin_step(context(0, 0, 3))
    assert bank.prototypes.shape[0] == 3 and bank.counts.tolist() == [0, 0, 0]
    bank.observe(random_case(0, num_old=0, num_new=3)[0])
    copy = PrototypeBank()
    copy.load_state_dict(torch.load(_saved(bank.state_dict()), weights_only=True))
    assert torch.equal(copy.prototypes, bank.prototypes) and torch.equal(copy.counts, bank.counts)
    copy.begin_step(context(1, 3, 2))
    assert copy.prototypes.shape == (5, 5) and torch.equal(copy.prototypes[:3], bank.prototypes)
    assert not copy.prototypes[3:].any() and copy.counts[3:].tolist() == [0, 0]
    with pytest.raises(ValueError):
        copy.begin_step(context(1, 2, 1))  # fewer classes than the bank holds
    with pytest.raises(ValueError):
        copy.load_state_dict({"prototypes": torch.zeros(2, 5)})


# ----- gradients and edge cases -----

@pytest.mark.parametrize("name", ["prototype_matching", "attraction", "repulsion", "feature_sparsity"])
def test_gradient_reaches_body_only(name):
    batch, _ = random_case(0, num_old=3, num_new=2)
    term = with_bank(TERMS[name](), bank_with(torch.randn(5, 5))) if TERMS[name].shared_state else TERMS[name]()
    term(batch).backward()
    assert batch.out.features["body"].grad.abs().sum() > 0
    assert batch.old.logits.grad is None and not batch.old.logits.requires_grad


def edge_batch(labels: list[int]) -> Batch:
    """Two images of 2x2 positions, all labelled by `labels` cycled; old model predicts class 1."""
    generator = torch.Generator().manual_seed(0)
    features = torch.rand(2, 5, 2, 2, generator=generator).requires_grad_()  # (B, C, h, w)
    targets = torch.tensor(labels * (8 // len(labels))).reshape(2, 2, 2)  # (B, H, W)
    old_logits = torch.zeros(2, 3, 2, 2)  # (B, |O|, H, W)
    old_logits[:, 1] = 1.0
    return make_batch(features, targets, num_old=3, num_new=2, old_logits=old_logits)


EDGES = {  # labels -> which terms must be exactly 0
    "no_old_pixels": ([3, 4], {"prototype_matching"}),
    "one_class": ([3], {"prototype_matching", "repulsion"}),
    "background_only": ([0], {"repulsion"}),
    "all_ignored": ([255], {"prototype_matching", "attraction", "repulsion", "feature_sparsity"}),
}


@pytest.mark.parametrize("edge", EDGES)
@pytest.mark.parametrize("name", ["prototype_matching", "attraction", "repulsion", "feature_sparsity"])
def test_edge_cases_are_finite_and_zero_when_nothing_applies(edge, name):
    labels, zero = EDGES[edge]
    batch = edge_batch(labels)
    bank = PrototypeBank()
    bank.begin_step(context(1, 3, 2))
    bank.observe(batch)  # a new class of one batch: its prototype is that batch's mean
    term = with_bank(TERMS[name](), bank) if TERMS[name].shared_state else TERMS[name]()
    value = term(batch)
    assert torch.isfinite(value)
    assert (value.item() == 0.0) == (name in zero)
    value.backward()
    assert torch.isfinite(batch.out.features["body"].grad).all()


def test_single_pixel_class_on_its_own_prototype_has_finite_gradient():
    features = torch.rand(1, 5, 2, 2).requires_grad_()  # (1, C, h, w)
    batch = make_batch(features, torch.tensor([[[3, 0], [0, 0]]]), num_old=3, num_new=2)
    objective = Objective((Term("attraction"),))
    objective.begin_step(context(1, 3, 2))
    objective.prepare(batch)  # p_3 = f of its only pixel: distance exactly 0
    objective(batch)[0].backward()
    assert torch.isfinite(features.grad).all() and features.grad[0, :, 0, 0].abs().sum() == 0
