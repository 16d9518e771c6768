"""Math tests of the loss terms: hand-computed values and explicit-loop reference implementations."""
from __future__ import annotations

import math
from typing import Optional

import pytest
import torch
from torch import nn

from cslearn.losses import TERMS, Batch, init_new_from_background
from cslearn.models.output import SegOutput


def make_batch(logits: torch.Tensor, targets: Optional[torch.Tensor] = None, num_old: int = 0,
               old_logits: Optional[torch.Tensor] = None, features: Optional[dict] = None,
               old_features: Optional[dict] = None) -> Batch:
    batch_size, num_seen, height, width = logits.shape
    if targets is None:
        targets = torch.zeros(batch_size, height, width, dtype=torch.long)
    old = None if old_logits is None else SegOutput(old_logits, old_features or {})
    return Batch(images=torch.zeros(batch_size, 3, height, width), targets=targets,
                 out=SegOutput(logits, features or {}), old=old, num_old=num_old,
                 num_new=num_seen - num_old, step=int(num_old > 0))


def pixel_logits(*pixels: list[float]) -> torch.Tensor:
    """Logits of a (1, C, 1, P) image whose P pixels have the given C logits."""
    return torch.tensor(pixels, dtype=torch.float32).T.reshape(1, len(pixels[0]), 1, len(pixels))


def pixel_targets(*labels: int) -> torch.Tensor:
    return torch.tensor(labels, dtype=torch.long).reshape(1, 1, len(labels))


def softmax(values: list[float]) -> list[float]:
    largest = max(values)
    exps = [math.exp(v - largest) for v in values]
    return [e / sum(exps) for e in exps]


def pixel_values(tensor: torch.Tensor, b: int, i: int, j: int) -> list[float]:
    return [float(tensor[b, c, i, j]) for c in range(tensor.shape[1])]


def all_pixels(tensor: torch.Tensor):
    batch_size, _, height, width = tensor.shape
    return [(b, i, j) for b in range(batch_size) for i in range(height) for j in range(width)]


def random_inputs(num_old: int, num_new: int, seed: int = 0):
    """Logits (3, |S|, 5, 5), old logits (3, |O|, 5, 5), targets with background, new, 255."""
    generator = torch.Generator().manual_seed(seed)
    logits = 2 * torch.randn(3, num_old + num_new, 5, 5, generator=generator)
    old_logits = 2 * torch.randn(3, max(num_old, 1), 5, 5, generator=generator)
    labels = [0] + list(range(num_old, num_old + num_new)) + [255]
    choice = torch.randint(len(labels), (3, 5, 5), generator=generator)
    return logits, old_logits, torch.tensor(labels)[choice]


# --- references: explicit loops with python floats -------------------------------------------

def reference_unbiased_ce(logits, targets, num_old, reduction="all_pixels") -> float:
    absorbed, total, valid = max(num_old, 1), 0.0, 0
    for b, i, j in all_pixels(logits):
        label = int(targets[b, i, j])
        if label == 255:
            continue
        probs = softmax(pixel_values(logits, b, i, j))
        total -= math.log(sum(probs[:absorbed]) if label < absorbed else probs[label])
        valid += 1
    return total / (len(all_pixels(logits)) if reduction == "all_pixels" else valid)


def reference_kd(logits, old_logits, num_old, unbiased: bool) -> float:
    total = 0.0
    for b, i, j in all_pixels(logits):
        current = pixel_values(logits, b, i, j)
        q = softmax(pixel_values(old_logits, b, i, j))
        if unbiased:
            p = softmax(current)
            p_bar = [p[0] + sum(p[num_old:])] + p[1:num_old]
        else:
            p_bar = softmax(current[:num_old])
        total += -sum(q[c] * math.log(p_bar[c]) for c in range(num_old)) / num_old
    return total / len(all_pixels(logits))


def bce(x: float, u: float) -> float:
    sigma = 1 / (1 + math.exp(-x))
    return -u * math.log(sigma) - (1 - u) * math.log(1 - sigma)


def reference_bce(logits, targets) -> float:
    total, valid = 0.0, 0
    for b, i, j in all_pixels(logits):
        label = int(targets[b, i, j])
        if label != 255:
            z = pixel_values(logits, b, i, j)
            total += sum(bce(z[c], float(c == label)) for c in range(len(z)))
            valid += 1
    return total / valid


def reference_bce_distillation(logits, old_logits, num_old) -> float:
    total = 0.0
    for b, i, j in all_pixels(logits):
        z, z_old = pixel_values(logits, b, i, j), pixel_values(old_logits, b, i, j)
        total += sum(bce(z[c], 1 / (1 + math.exp(-z_old[c]))) for c in range(num_old))
    return total / len(all_pixels(logits))


# --- ce and unbiased_ce -----------------------------------------------------------------------

def test_ce_by_hand():
    # pixel 1: z = [0, 0], y = 0: p(0) = 1/2 -> log 2 = 0.693147
    # pixel 2: z = [log 3, 0], y = 1: p(1) = 1/4 -> log 4 = 1.386294;  mean = 1.5 log 2 = 1.039721
    batch = make_batch(pixel_logits([0, 0], [math.log(3), 0]), pixel_targets(0, 1))
    assert TERMS["ce"]()(batch).item() == pytest.approx(1.039721, abs=1e-6)


def test_ce_counts_ignored_pixels_in_the_denominator():
    # a third pixel labelled 255 adds 0 to the sum and 1 to |Ω|: (log 2 + log 4) / 3 = log 2
    batch = make_batch(pixel_logits([0, 0], [math.log(3), 0], [5, -5]), pixel_targets(0, 1, 255))
    assert TERMS["ce"]()(batch).item() == pytest.approx(math.log(2), abs=1e-6)
    valid = TERMS["ce"](reduction="valid_pixels")(batch).item()
    assert valid == pytest.approx(1.5 * math.log(2), abs=1e-6)


def test_ce_matches_the_loop_reference():
    logits, _, targets = random_inputs(num_old=0, num_new=4)
    batch = make_batch(logits, targets)
    for reduction in ("all_pixels", "valid_pixels"):
        expected = reference_unbiased_ce(logits, targets, num_old=0, reduction=reduction)
        assert TERMS["ce"](reduction=reduction)(batch).item() == pytest.approx(expected, rel=1e-5)


def test_unbiased_ce_by_hand():
    # 3 old + 2 new channels. pixel 1: uniform logits, y = 0: p̃(0) = 3/5 -> -log 0.6 = 0.510826
    # pixel 2: exp(z) = [1, 2, 1, 3, 1] (sum 8), y = 3: p(3) = 3/8 -> -log 0.375 = 0.980829
    logits = pixel_logits([0, 0, 0, 0, 0], [0, math.log(2), 0, math.log(3), 0])
    batch = make_batch(logits, pixel_targets(0, 3), num_old=3)
    assert TERMS["unbiased_ce"]()(batch).item() == pytest.approx((0.510826 + 0.980829) / 2,
                                                                 abs=1e-6)


def test_unbiased_ce_equals_ce_at_step_zero():
    logits, _, targets = random_inputs(num_old=0, num_new=4)
    batch = make_batch(logits, targets, num_old=0)
    assert torch.allclose(TERMS["unbiased_ce"]()(batch), TERMS["ce"]()(batch), atol=1e-6)


def test_unbiased_ce_equals_ce_when_no_pixel_is_background():
    logits, _, targets = random_inputs(num_old=3, num_new=2)
    targets = torch.where(targets == 0, torch.full_like(targets, 4), targets)  # only new and 255
    batch = make_batch(logits, targets, num_old=3)
    assert torch.allclose(TERMS["unbiased_ce"]()(batch), TERMS["ce"]()(batch), atol=1e-6)


@pytest.mark.parametrize("reduction", ["all_pixels", "valid_pixels"])
def test_unbiased_ce_matches_the_loop_reference(reduction):
    logits, _, targets = random_inputs(num_old=3, num_new=2)
    assert (targets == 255).any() and (targets == 0).any()
    loss = TERMS["unbiased_ce"](reduction=reduction)(make_batch(logits, targets, num_old=3))
    expected = reference_unbiased_ce(logits, targets, num_old=3, reduction=reduction)
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_unbiased_ce_treats_old_class_labels_as_background():
    # like MiB: a pseudo-label of an old class is matched by p̃(0) = Σ_{k ∈ O} p(k)
    logits, _, targets = random_inputs(num_old=3, num_new=2)
    relabelled = torch.where(targets == 0, torch.full_like(targets, 2), targets)
    term = TERMS["unbiased_ce"]()
    assert torch.allclose(term(make_batch(logits, relabelled, 3)),
                          term(make_batch(logits, targets, 3)), atol=1e-6)


@pytest.mark.parametrize("key", ["ce", "unbiased_ce", "bce"])
def test_unknown_reduction_is_refused(key):
    with pytest.raises(ValueError):
        TERMS[key](reduction="mean")


# --- kd and unbiased_kd -----------------------------------------------------------------------

def test_kd_by_hand():
    # old channels of z: [0, log 3] -> p̃ = [1/4, 3/4] (the new logit 5 is ignored); q = [1/2, 1/2]
    # L = -(1/2)(1/2 log 1/4 + 1/2 log 3/4) = (1/4) log(16/3) = 0.418494
    batch = make_batch(pixel_logits([0, math.log(3), 5]), num_old=2,
                       old_logits=pixel_logits([0, 0]))
    assert TERMS["kd"]()(batch).item() == pytest.approx(0.418494, abs=1e-6)


def test_unbiased_kd_by_hand():
    # exp(z) = [1, 2, 3, 1] (sum 7), 2 old + 2 new: p̄(0) = (1 + 3 + 1)/7 = 5/7, p̄(1) = 2/7
    # q = softmax([log 3, 0]) = [3/4, 1/4]; L = -(1/2)(3/4 log 5/7 + 1/4 log 2/7) = 0.282772
    batch = make_batch(pixel_logits([0, math.log(2), math.log(3), 0]), num_old=2,
                       old_logits=pixel_logits([math.log(3), 0]))
    assert TERMS["unbiased_kd"]()(batch).item() == pytest.approx(0.282772, abs=1e-6)


@pytest.mark.parametrize("key", ["kd", "unbiased_kd"])
@pytest.mark.parametrize("num_old,num_new", [(3, 2), (4, 1), (1, 3)])
def test_kd_terms_match_the_loop_reference(key, num_old, num_new):
    logits, old_logits, targets = random_inputs(num_old, num_new, seed=num_old)
    loss = TERMS[key]()(make_batch(logits, targets, num_old, old_logits))
    expected = reference_kd(logits, old_logits, num_old, unbiased=(key == "unbiased_kd"))
    # abs: with one old channel UNKD is 0 up to float32 rounding (log p̄(0) = L − L)
    assert loss.item() == pytest.approx(expected, rel=1e-5, abs=1e-6)


def old_entropy_per_class(old_logits: torch.Tensor) -> float:
    """mean over pixels of H(q) / |O|: the minimum of kd and unbiased_kd."""
    q = old_logits.softmax(dim=1)  # (B, |O|, H, W)
    return (-(q * q.log()).sum(dim=1) / old_logits.shape[1]).mean().item()


def stationary_check(key: str, logits: torch.Tensor, old_logits: torch.Tensor, num_old: int):
    logits = logits.clone().requires_grad_(True)
    loss = TERMS[key]()(make_batch(logits, num_old=num_old, old_logits=old_logits))
    loss.backward()
    assert logits.grad.abs().max().item() < 1e-6
    assert loss.item() == pytest.approx(old_entropy_per_class(old_logits), rel=1e-5)


def test_unbiased_kd_is_stationary_when_new_classes_are_never_predicted():
    old_logits = 2 * torch.randn(2, 3, 4, 4)
    logits = torch.cat([old_logits, torch.full((2, 2, 4, 4), -1e4)], dim=1)  # (2, 5, 4, 4)
    stationary_check("unbiased_kd", logits, old_logits, num_old=3)


def test_unbiased_kd_is_stationary_when_background_is_split_with_new_classes():
    # p̄ = q also when background and new classes share the old background mass (MiB's init)
    old_logits = 2 * torch.randn(2, 3, 4, 4)
    split = old_logits[:, :1] - math.log(3)  # (2, 1, 4, 4): background + 2 new share it
    logits = torch.cat([split, old_logits[:, 1:], split, split], dim=1)  # (2, 5, 4, 4)
    stationary_check("unbiased_kd", logits, old_logits, num_old=3)


def test_kd_is_stationary_when_old_channels_agree_up_to_a_constant():
    old_logits = 2 * torch.randn(2, 3, 4, 4)
    new_logits = 3 * torch.randn(2, 2, 4, 4)  # anything: kd never looks at new channels
    logits = torch.cat([old_logits + 1.5, new_logits], dim=1)  # (2, 5, 4, 4)
    stationary_check("kd", logits, old_logits, num_old=3)


# --- bce and bce_distillation -----------------------------------------------------------------

def test_bce_matches_the_loop_reference():
    logits, _, targets = random_inputs(num_old=3, num_new=2)
    loss = TERMS["bce"]()(make_batch(logits, targets, num_old=3))
    assert loss.item() == pytest.approx(reference_bce(logits, targets), rel=1e-5)
    all_pixels_loss = TERMS["bce"](reduction="all_pixels")(make_batch(logits, targets, 3))
    valid_fraction = (targets != 255).float().mean().item()
    assert all_pixels_loss.item() == pytest.approx(loss.item() * valid_fraction, rel=1e-5)


def test_bce_distillation_matches_the_loop_reference():
    logits, old_logits, targets = random_inputs(num_old=3, num_new=2)
    loss = TERMS["bce_distillation"]()(make_batch(logits, targets, 3, old_logits))
    expected = reference_bce_distillation(logits, old_logits, num_old=3)
    assert loss.item() == pytest.approx(expected, rel=1e-5)


# --- feature_distillation ---------------------------------------------------------------------

def test_feature_distillation_is_zero_for_identical_features():
    body = torch.randn(2, 8, 4, 4)
    batch = make_batch(torch.randn(2, 3, 16, 16), num_old=2, old_logits=torch.randn(2, 2, 16, 16),
                       features={"body": body}, old_features={"body": body.clone()})
    assert TERMS["feature_distillation"]()(batch).item() == 0.0


def test_feature_distillation_by_hand():
    # f = 0, f̂ = [1, 2, 3, 4] over (B, C, h, w) = (1, 2, 1, 2): (1 + 4 + 9 + 16) / 4 = 7.5
    body = torch.zeros(1, 2, 1, 2)
    old_body = torch.tensor([1.0, 2.0, 3.0, 4.0]).reshape(1, 2, 1, 2)
    batch = make_batch(torch.randn(1, 3, 1, 2), num_old=2, old_logits=torch.randn(1, 2, 1, 2),
                       features={"pre_logits": old_body, "body": body},
                       old_features={"pre_logits": old_body, "body": old_body})
    assert TERMS["feature_distillation"]()(batch).item() == pytest.approx(7.5)
    assert TERMS["feature_distillation"](feature="pre_logits")(batch).item() == 0.0


# --- MiB's background initialisation ----------------------------------------------------------

def test_init_new_from_background_splits_the_background_probability():
    torch.manual_seed(0)
    features = torch.randn(2, 8, 3, 3)  # (B, C, h, w)
    step0, step1 = nn.Conv2d(8, 3, 1), nn.Conv2d(8, 2, 1)  # old classifiers: 3 + 2 channels
    with torch.no_grad():
        old_probs = torch.cat([step0(features), step1(features)], dim=1).softmax(dim=1)
    new_classifier = nn.Conv2d(8, 3, 1)  # N = 3 new classes
    background_weight = step0.weight[0].detach().clone()
    init_new_from_background(new_classifier, step0)

    assert new_classifier.weight.is_leaf and new_classifier.weight.requires_grad
    assert torch.equal(new_classifier.weight, background_weight.expand(3, 8, 1, 1))
    with torch.no_grad():
        logits = torch.cat([step0(features), step1(features), new_classifier(features)], dim=1)
    probs = logits.softmax(dim=1)  # (2, 8, 3, 3)
    assert torch.allclose(probs[:, 1:5], old_probs[:, 1:5], atol=1e-6)  # old fg unchanged
    share = old_probs[:, :1] / 4  # old p(0) / (N + 1)
    assert torch.allclose(probs[:, :1], share, atol=1e-6)
    assert torch.allclose(probs[:, 5:], share.expand(2, 3, 3, 3), atol=1e-6)


def test_unbiased_kd_starts_at_its_minimum_after_background_init():
    torch.manual_seed(1)
    features = torch.randn(2, 8, 3, 3)
    step0, new_classifier = nn.Conv2d(8, 4, 1), nn.Conv2d(8, 2, 1)
    with torch.no_grad():
        old_logits = step0(features)  # (2, 4, 3, 3)
        init_new_from_background(new_classifier, step0)
        logits = torch.cat([step0(features), new_classifier(features)], dim=1)  # (2, 6, 3, 3)
    stationary_check("unbiased_kd", logits, old_logits, num_old=4)


def test_init_refuses_classifiers_without_bias():
    with pytest.raises(ValueError):
        init_new_from_background(nn.Conv2d(8, 2, 1, bias=False), nn.Conv2d(8, 3, 1))


@pytest.mark.parametrize("num_old,num_new", [(3, 2), (4, 1), (1, 3)])
def test_unbiased_terms_have_the_gradients_of_the_direct_formula(num_old, num_new):
    # UNCE and UNKD are computed without (B, C, H, W) log-probability tensors (a gather, and
    # Σ q log p̄ expanded); their gradients must still be those of the formula written plainly.
    logits, old_logits, targets = random_inputs(num_old, num_new, seed=11)
    targets[0, 0, 0] = num_old - 1  # an old-class label (pseudo-labels) is absorbed like background
    absorbed = max(num_old, 1)

    def direct_unbiased_ce(z):  # (B, C, H, W) -> ()
        p = z.softmax(1)
        valid = targets != 255
        label = torch.where(valid, targets, 0)
        p_tilde = torch.where(label < absorbed, p[:, :absorbed].sum(1), p.gather(1, label[:, None]).squeeze(1))
        return torch.where(valid, -p_tilde.log(), 0.0).mean()

    def direct_unbiased_kd(z):
        p, q = z.softmax(1), old_logits.softmax(1)
        p_bar = torch.cat([p[:, :1] + p[:, num_old:].sum(1, keepdim=True), p[:, 1:num_old]], dim=1)
        return (-(q * p_bar.log()).sum(1) / num_old).mean()

    for key, direct in (("unbiased_ce", direct_unbiased_ce), ("unbiased_kd", direct_unbiased_kd)):
        z = logits.clone().requires_grad_(True)
        (gradient,) = torch.autograd.grad(TERMS[key]()(make_batch(z, targets, num_old, old_logits)), z)
        z64 = logits.double().requires_grad_(True)
        (expected,) = torch.autograd.grad(direct(z64), z64)
        assert torch.allclose(gradient.double(), expected, atol=1e-7), key
