"""UCD's contrastive distillation (cslearn.losses.contrastive, methods.md §6) against a slow loop
reference written straight from the definitions, a hand-computed example, and edge cases."""
from __future__ import annotations

import math
from typing import Optional

import pytest
import torch
import torch.nn.functional as F

from cslearn.losses import TERMS, Batch
from cslearn.losses import contrastive
from cslearn.losses.contrastive import ContrastiveDistillation, build_contrast_set, cap_per_class, nearest_labels
from cslearn.models.output import SegOutput

SIZE, FEATURE_SIZE, CHANNELS = 8, 4, 5


def make_batch(seed: int = 0, batch_size: int = 3, num_old: int = 4, num_new: int = 2,
               labels: Optional[torch.Tensor] = None, old_scale: float = 2.0) -> Batch:
    """Random features; labels constant on 2x2 blocks (background, new classes, some 255) with
    255 also sprinkled per pixel; old logits_low random so their argmax covers old classes and 0."""
    generator = torch.Generator().manual_seed(seed)
    if labels is None:
        choices = torch.tensor([0, 0, 255] + list(range(num_old, num_old + num_new)))
        labels = choices[torch.randint(len(choices), (batch_size, FEATURE_SIZE, FEATURE_SIZE), generator=generator)]
        scale = SIZE // FEATURE_SIZE
        labels = labels.repeat_interleave(scale, 1).repeat_interleave(scale, 2)  # (B, H, W)
        sprinkled = torch.rand(labels.shape, generator=generator) < 0.1  # (B, H, W)
        labels = torch.where(sprinkled, torch.full_like(labels, 255), labels)
    batch_size = labels.shape[0]

    def random(*shape: int, scale: float = 1.0, grad: bool = False) -> torch.Tensor:
        return (scale * torch.randn(*shape, generator=generator)).requires_grad_(grad)

    out = SegOutput(random(batch_size, num_old + num_new, SIZE, SIZE, grad=True), {
        "body": random(batch_size, 7, FEATURE_SIZE, FEATURE_SIZE, grad=True),
        "pre_logits": random(batch_size, CHANNELS, FEATURE_SIZE, FEATURE_SIZE, grad=True),
        "logits_low": random(batch_size, num_old + num_new, FEATURE_SIZE, FEATURE_SIZE, grad=True)})
    old = SegOutput(random(batch_size, num_old, SIZE, SIZE), {
        "body": random(batch_size, 7, FEATURE_SIZE, FEATURE_SIZE),
        "pre_logits": random(batch_size, CHANNELS, FEATURE_SIZE, FEATURE_SIZE),
        "logits_low": random(batch_size, num_old, FEATURE_SIZE, FEATURE_SIZE, scale=old_scale)})
    return Batch(torch.zeros(batch_size, 3, SIZE, SIZE), labels, out, old, num_old, num_new, step=1)


def loop_reference(batch: Batch, temperature: float = 0.07, unshifted_negatives: bool = False,
                   uncertainty: bool = True) -> torch.Tensor:
    """methods.md §6.2-6.5 with python loops over pixels, anchors and contrast entries, in float64."""
    features, old_features = batch.out.features["pre_logits"], batch.old.features["pre_logits"]
    old_logits = batch.old.features["logits_low"]
    (num_images, _, h, w), (height, width) = features.shape, batch.original_targets.shape[1:]
    anchors, keys = [], []  # (feature, label ȳ, q, ground-truth new)
    for b in range(num_images):
        for y in range(h):
            for x in range(w):
                label = int(batch.original_targets[b, y * height // h, x * width // w])  # nearest
                if label == 255:
                    continue
                q = torch.softmax(old_logits[b, :, y, x].double(), dim=0)
                pseudo = label if label > 0 else int(q.argmax())
                if pseudo == 0:
                    continue
                z = features[b, :, y, x].double()
                anchors.append((z / z.norm(), pseudo, q, label > 0))
                if label == 0:
                    old_z = old_features[b, :, y, x].double()
                    keys.append((old_z / old_z.norm(), pseudo, q, False))
    contrast = [(z.detach(), label, q, truth) for z, label, q, truth in anchors] + keys
    losses = []
    for i, (z, label, q, truth) in enumerate(anchors):
        positives = [j for j, entry in enumerate(contrast) if entry[1] == label and j != i]
        negatives = [k for k, entry in enumerate(contrast) if entry[1] != label]
        if not positives:
            continue
        similarity = [torch.dot(z, entry[0]) / temperature for entry in contrast]
        negative_sum = sum((torch.exp(similarity[k]) for k in negatives), torch.zeros((), dtype=torch.float64))
        if unshifted_negatives:  # the official code: e^{M_i} on the negatives, M_i = max_j s_ij
            negative_sum = negative_sum * torch.exp(max(s.detach() for s in similarity))
        loss = 0.0
        for j in positives:
            weight = 1.0 if (truth and contrast[j][3]) or not uncertainty else torch.dot(q, contrast[j][2])
            positive = torch.exp(similarity[j])
            loss = loss - weight * torch.log(positive / (positive + negative_sum))
        losses.append(loss / len(positives))
    return torch.stack(losses).mean() if losses else features.sum() * 0.0


def value_and_gradient(loss_fn, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    features = batch.out.features["pre_logits"]
    features.grad = None
    loss = loss_fn(batch)
    loss.backward()
    return loss.detach().double(), features.grad.clone()


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("unshifted_negatives", [False, True])
def test_chunked_equals_loop_reference_and_dense(seed, unshifted_negatives):
    batch = make_batch(seed, batch_size=3 + seed % 2)
    labels = nearest_labels(batch.original_targets, (FEATURE_SIZE, FEATURE_SIZE))
    assert (labels == 255).any() and (labels >= batch.num_old).any()  # void and new classes present
    assert len(labels[labels >= batch.num_old].unique()) > 1  # several new classes
    expected, expected_grad = value_and_gradient(
        lambda b: loop_reference(b, unshifted_negatives=unshifted_negatives), batch)
    for chunk_size in (1, 5, 16, 10**9):  # 10**9: one dense chunk
        term = ContrastiveDistillation(chunk_size=chunk_size, unshifted_negatives=unshifted_negatives)
        value, grad = value_and_gradient(term, batch)
        assert torch.allclose(value, expected, rtol=1e-5, atol=1e-5), (chunk_size, value, expected)
        assert torch.allclose(grad, expected_grad.float(), rtol=1e-4, atol=1e-5), chunk_size
    assert expected_grad.abs().sum() > 0


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("unshifted_negatives", [False, True])
def test_small_temperature_subtracts_the_row_maximum(seed, unshifted_negatives):
    """τ = 0.01: |s_ij| reaches 100, beyond UNSHIFTED_EXP_BOUND, so the negatives' exponentials are
    taken after subtracting each row's largest negative (at τ = 0.07, above, they are not)."""
    assert 1 / 0.07 <= contrastive.UNSHIFTED_EXP_BOUND < 1 / 0.01
    batch = make_batch(seed + 10)
    expected, expected_grad = value_and_gradient(
        lambda b: loop_reference(b, temperature=0.01, unshifted_negatives=unshifted_negatives), batch)
    for chunk_size in (3, 10**9):
        term = ContrastiveDistillation(temperature=0.01, chunk_size=chunk_size, unshifted_negatives=unshifted_negatives)
        value, grad = value_and_gradient(term, batch)
        assert torch.isfinite(value) and torch.isfinite(grad).all()
        assert torch.allclose(value, expected, rtol=1e-5, atol=1e-5), (chunk_size, value, expected)
        assert torch.allclose(grad, expected_grad.float(), rtol=1e-4, atol=1e-4), chunk_size
    assert expected_grad.abs().sum() > 0


def test_float16_chunks_subtract_the_row_maximum():
    """float16 cannot hold e^{1/0.07} ≈ 1.6e6: the unshifted path is for float32's range only."""
    anchors = F.normalize(torch.randn(4, 8, generator=torch.Generator().manual_seed(3)), dim=1)  # (R, C)
    contrast = torch.cat([anchors, anchors[:1], -anchors[1:2]])  # (6, C): block [0, 4), negatives 4-5
    probs = torch.full((6, 2), 0.5)
    arguments = (probs[:4], probs, torch.zeros(4, dtype=torch.bool), torch.zeros(6, dtype=torch.bool),
                 torch.full((4,), 3), torch.arange(4), (0, 4), 0.07)
    value, grad = contrastive.chunk_loss_sum(anchors, contrast, *arguments, max_similarity=1 / 0.07)
    half_value, half_grad = contrastive.chunk_loss_sum(
        anchors.half(), contrast.half(), *[a.half() if torch.is_tensor(a) and a.is_floating_point() else a
                                           for a in arguments], max_similarity=1 / 0.07)
    assert torch.isfinite(half_value) and torch.isfinite(half_grad).all()
    assert torch.allclose(half_value.float(), value, rtol=1e-2)
    assert torch.allclose(half_grad.float(), grad, rtol=5e-2, atol=5e-2)


@pytest.mark.parametrize("seed", [0, 1])
def test_without_uncertainty_weight_equals_loop_reference_with_unit_weights(seed):
    batch = make_batch(seed)
    expected, expected_grad = value_and_gradient(lambda b: loop_reference(b, uncertainty=False), batch)
    weighted, _ = value_and_gradient(ContrastiveDistillation(), batch)
    value, grad = value_and_gradient(ContrastiveDistillation(chunk_size=7, uncertainty=False), batch)
    assert torch.allclose(value, expected, rtol=1e-5, atol=1e-5)
    assert torch.allclose(grad, expected_grad.float(), rtol=1e-4, atol=1e-5)
    assert not torch.allclose(value, weighted)  # the weight matters on these inputs


def test_hand_computed_example():
    """Five pixels in one row (features 1x5, input 2x10, so nearest keeps columns 0, 2, 4, 6, 8):
    p0, p1 labelled new class 2; p2 background, old argmax 1; p3 background, old argmax 0
    (dropped); p4 void (dropped). Old classes {0, 1}, τ = 1.
        z0 = (1, 0), z1 = (0.6, 0.8), z2 = (0, 1), ẑ2 = (0.8, 0.6);  C = [z0, z1, z2, ẑ2]
        q0 = (0.5, 0.5), q1 = (0.9, 0.1), q2 = (0.2, 0.8)
        s0 = [1, 0.6, 0, 0.8], s1 = [0.6, 1, 0.8, 0.96], s2 = [0, 0.8, 1, 0.6]
        ℓ0: P = {z1}, W = 1 (both ground-truth new; q0·q1 = 0.5 without the override), N = {z2, ẑ2}
            = −log(e^0.6 / (e^0.6 + e^0 + e^0.8)) = 1.0189247
        ℓ1: P = {z0}, W = 1, N = {z2, ẑ2}: −log(e^0.6 / (e^0.6 + e^0.8 + e^0.96)) = 1.2960228
        ℓ2: P = {ẑ2} (pseudo-labelled: W = q2·q2 = 0.04 + 0.64 = 0.68), N = {z0, z1}
            = −0.68·log(e^0.6 / (e^0.6 + e^0 + e^0.8)) = 0.6928688
        L = (ℓ0 + ℓ1 + ℓ2)/3 = 1.0026054   (0.6167809 if the override did not fire)
    """
    targets = torch.tensor([[[2, 7, 2, 7, 0, 7, 0, 7, 255, 7], [9] * 10]])  # (1, 2, 10); 7, 9 never sampled
    features = torch.tensor([[1.0, 0.0], [3.0, 4.0], [0.0, 2.0], [1.0, 1.0], [5.0, 5.0]]).T  # (2, 5) g (z1 = g1/5)
    old_features = torch.tensor([[9.0, 9.0], [9.0, 9.0], [4.0, 3.0], [1.0, 0.0], [0.0, 1.0]]).T  # (2, 5)
    old_logits = torch.tensor([[0.0, 0.0], [math.log(9), 0.0], [0.0, math.log(4)], [1.0, 0.0],
                               [0.0, 5.0]]).T  # (2, 5): q0, q1, q2 as above; p3 argmax 0
    out = SegOutput(torch.zeros(1, 3, 2, 10, requires_grad=True),
                    {"pre_logits": features.reshape(1, 2, 1, 5).requires_grad_()})
    old = SegOutput(torch.zeros(1, 2, 2, 10), {"pre_logits": old_features.reshape(1, 2, 1, 5),
                                               "logits_low": old_logits.reshape(1, 2, 1, 5)})
    batch = Batch(torch.zeros(1, 3, 2, 10), targets, out, old, num_old=2, num_new=1, step=1)
    e = math.exp
    loss_0 = -math.log(e(0.6) / (e(0.6) + e(0) + e(0.8)))
    loss_1 = -math.log(e(0.6) / (e(0.6) + e(0.8) + e(0.96)))
    loss_2 = -0.68 * math.log(e(0.6) / (e(0.6) + e(0) + e(0.8)))
    assert (loss_0, loss_1, loss_2) == pytest.approx((1.0189247, 1.2960228, 0.6928688), abs=1e-7)
    value = ContrastiveDistillation(temperature=1.0)(batch).detach()
    assert float(value) == pytest.approx((loss_0 + loss_1 + loss_2) / 3, abs=1e-6)
    assert float(value) == pytest.approx(1.0026054, abs=1e-6)
    assert float(loop_reference(batch, temperature=1.0).detach()) == pytest.approx(1.0026054, abs=1e-6)


def test_reads_labels_before_the_target_rewriter():
    batch = make_batch(3)
    expected = ContrastiveDistillation()(batch)
    rewritten = torch.where(batch.targets == 0, torch.ones_like(batch.targets), batch.targets)  # PLOP-like
    rewritten_batch = Batch(batch.images, rewritten, batch.out, batch.old, batch.num_old, batch.num_new,
                            batch.step, original_targets=batch.targets)
    assert torch.equal(ContrastiveDistillation()(rewritten_batch), expected)


def assert_zero_and_connected(batch: Batch) -> None:
    loss = ContrastiveDistillation()(batch)
    assert loss.dtype == torch.float32 and float(loss.detach()) == 0.0
    loss.backward()  # connected to the graph
    assert torch.equal(batch.out.features["pre_logits"].grad,
                       torch.zeros_like(batch.out.features["pre_logits"]))


def test_no_anchors():  # background everywhere and the old model predicts background everywhere
    batch = make_batch(labels=torch.zeros(2, SIZE, SIZE, dtype=torch.long))
    batch.old.features["logits_low"][:, 0] += 100.0
    assert_zero_and_connected(batch)


def test_all_void():
    assert_zero_and_connected(make_batch(labels=torch.full((2, SIZE, SIZE), 255)))


def test_no_positives():  # a single new-class pixel and nothing else: its only entry is its own copy
    labels = torch.zeros(2, SIZE, SIZE, dtype=torch.long)
    labels[1, 4, 2] = 5
    batch = make_batch(labels=labels, num_old=5)
    batch.old.features["logits_low"][:, 0] += 100.0
    assert_zero_and_connected(batch)


def test_no_new_class_pixels():  # only pseudo-labelled anchors: every weight is q_i·q_j
    batch = make_batch(4, labels=torch.zeros(3, SIZE, SIZE, dtype=torch.long))
    loss = ContrastiveDistillation(chunk_size=7)(batch)
    assert torch.isfinite(loss) and loss > 0
    assert torch.allclose(loss.double(), loop_reference(batch), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("num_old,num_new", [(1, 1), (1, 3), (150, 2)])
def test_any_number_of_classes(num_old, num_new):
    """One old class (background only: no pseudo-labels, no negatives with one new class) and ADE's
    150 (labels above 127 and 20 kept: no int8 overflow, no > 20 clip)."""
    batch = make_batch(5, batch_size=3, num_old=num_old, num_new=num_new)
    loss = ContrastiveDistillation(chunk_size=4)(batch)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(batch.out.features["pre_logits"].grad).all()
    assert torch.allclose(loss.double(), loop_reference(batch), rtol=1e-5, atol=1e-5)


def test_gradient_reaches_pre_logits_only():
    batch = make_batch(6)
    ContrastiveDistillation()(batch).backward()
    assert batch.out.features["pre_logits"].grad.abs().sum() > 0
    assert batch.out.logits.grad is None
    assert all(batch.out.features[name].grad is None for name in ("body", "logits_low"))
    assert not any(t.requires_grad for t in [batch.old.logits, *batch.old.features.values()])


def test_bfloat16_autocast_runs_in_float32():
    batch = make_batch(7)
    rounded = {name: t.detach().bfloat16() for name, t in batch.out.features.items()}
    bf16_out = SegOutput(batch.out.logits.detach().bfloat16(), {**rounded, "pre_logits": rounded[
        "pre_logits"].requires_grad_()})
    bf16_old = SegOutput(batch.old.logits.bfloat16(), {n: t.bfloat16() for n, t in batch.old.features.items()})
    bf16_batch = Batch(batch.images, batch.targets, bf16_out, bf16_old, batch.num_old, batch.num_new, 1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = ContrastiveDistillation(chunk_size=5)(bf16_batch)
    assert loss.dtype == torch.float32
    loss.backward()
    assert bf16_out.features["pre_logits"].grad.dtype == torch.bfloat16
    as_float = SegOutput(bf16_out.logits.float(), {n: t.detach().float() for n, t in bf16_out.features.items()})
    old_float = SegOutput(bf16_old.logits.float(), {n: t.float() for n, t in bf16_old.features.items()})
    reference = ContrastiveDistillation()(Batch(batch.images, batch.targets, as_float, old_float,
                                                batch.num_old, batch.num_new, 1))
    assert torch.allclose(loss, reference, rtol=1e-5, atol=1e-6)


def test_nearest_labels_match_torch_nearest_and_keep_int64():
    labels = torch.randint(0, 256, (2, 10, 13))  # (B, H, W), ids up to 255
    for size in [(5, 13), (4, 4), (3, 7), (10, 13)]:
        expected = F.interpolate(labels[:, None].float(), size=size, mode="nearest")[:, 0].long()
        resized = nearest_labels(labels, size)
        assert resized.dtype == torch.int64 and torch.equal(resized, expected)


def test_cap_per_class():
    labels = torch.tensor([3, 3, 3, 1, 7, 7, 3, 1, 7, 7, 7])
    kept = cap_per_class(labels, 2)
    assert torch.equal(kept, kept.sort().values)
    assert torch.bincount(labels[kept]).tolist() == [0, 2, 0, 2, 0, 0, 0, 2]
    assert torch.equal(cap_per_class(labels, 5), torch.arange(len(labels)))


def test_max_anchors_per_class():
    batch = make_batch(8)
    exact = ContrastiveDistillation()(batch)
    assert torch.equal(ContrastiveDistillation(max_anchors_per_class=1000)(batch), exact)
    capped = ContrastiveDistillation(max_anchors_per_class=2)(batch)
    capped.backward()
    assert torch.isfinite(capped)


def test_backward_keeps_no_similarity_buffer():
    """Autograd keeps O(N·C) tensors (the precomputed gradient), never a (chunk, N_c) or (N_a, N_c)
    matrix, and backward recomputes nothing."""
    batch = make_batch(9, batch_size=12)
    pixels = build_contrast_set(batch)
    chunk_size = 12
    chunk_matrix = chunk_size * len(pixels.contrast)  # elements of one (chunk, N_c) buffer
    assert torch.bincount(pixels.anchor_labels).max() > chunk_size and chunk_matrix > 2 * pixels.contrast.numel()
    saved: list[int] = []

    def pack(tensor: torch.Tensor) -> torch.Tensor:  # a view keeps its whole storage alive
        saved.append(tensor.untyped_storage().nbytes() // tensor.element_size())
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        loss = ContrastiveDistillation(chunk_size=chunk_size)(batch)
    assert pixels.anchors.numel() <= max(saved) < chunk_matrix  # O(N·C) tensors (features, gradient) only
    (gradient,) = torch.autograd.grad(loss, batch.out.features["pre_logits"])
    assert gradient.abs().sum() > 0


def test_chunks_hold_one_label_and_at_most_chunk_size_rows(monkeypatch):
    batch = make_batch(9, batch_size=4)
    pixels = build_contrast_set(batch)
    calls = []
    original = contrastive.chunk_loss_sum

    def recording(anchors, contrast, *rest, **options):
        calls.append((len(anchors), rest[-4]))  # rows, block of columns
        return original(anchors, contrast, *rest, **options)

    monkeypatch.setattr(contrastive, "chunk_loss_sum", recording)
    ContrastiveDistillation(chunk_size=3)(batch)
    counts = torch.bincount(pixels.contrast_labels)
    positives = counts[pixels.anchor_labels] - 1
    expected = {label: int(((pixels.anchor_labels == label) & (positives > 0)).sum())
                for label in pixels.anchor_labels.unique().tolist()}
    rows_per_block: dict = {}
    for rows, block in calls:
        assert 1 <= rows <= 3
        rows_per_block[block] = rows_per_block.get(block, 0) + rows
    first = torch.cumsum(counts, 0) - counts
    assert rows_per_block == {(int(first[label]), int(first[label] + counts[label])): rows
                              for label, rows in expected.items() if rows > 0}


@pytest.mark.parametrize("options", [{"temperature": 0.0}, {"chunk_size": 0}, {"max_anchors_per_class": 0}])
def test_invalid_options(options):
    with pytest.raises(ValueError):
        ContrastiveDistillation(**options)


def test_registered():
    assert TERMS["contrastive_distillation"] is ContrastiveDistillation
    assert ContrastiveDistillation.needs_old
