"""PLOP (methods.md §4): Local POD, entropy pseudo-labels and the ν-weighted CE, against
hand-computed values and explicit-loop reference implementations."""
from __future__ import annotations

import copy
import io
import math
import statistics

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cslearn.losses import REWRITERS, TERMS, Batch, MissingOldModelError, StepContext
from cslearn.losses import pod
from cslearn.losses.pod import _pod_embedding_by_cells, collapse_new_logits, pod_distance, pod_embedding
from cslearn.losses.pseudo_labels import coded_histogram_median, entropy_thresholds, old_predictions
from cslearn.methods import Term
from cslearn.objective import Objective
from cslearn.models import build_model
from cslearn.models.output import SegOutput


# ---------------------------------------------------------------- Local POD
def loop_embedding(x: torch.Tensor, scales) -> list[float]:
    """Φ of one map (C, H, W) with explicit loops over scales, cells, rows and columns.
    Cells are ⌊H/s⌋ x ⌊W/s⌋ from the top-left corner, the remainder left out (the reference)."""
    a = (x.double() ** 2).tolist()
    channels, height, width = x.shape
    values = []
    for s in scales:
        cell_rows, cell_columns = height // s, width // s
        for u in range(s):
            rows = range(u * cell_rows, (u + 1) * cell_rows)
            for v in range(s):
                columns = range(v * cell_columns, (v + 1) * cell_columns)
                for c in range(channels):
                    for r in rows:  # width pooling: (s/W) Σ over the cell's columns
                        values.append(sum(a[c][r][col] for col in columns) / len(columns))
                    for col in columns:  # height pooling: (s/H) Σ over the cell's rows
                        values.append(sum(a[c][r][col] for r in rows) / len(rows))
    return values


def loop_distance(maps: torch.Tensor, old_maps: torch.Tensor, scales) -> float:
    norms = [math.sqrt(sum((p - q) ** 2 for p, q in zip(loop_embedding(h, scales), loop_embedding(g, scales))))
             for h, g in zip(maps, old_maps)]
    return sum(norms) / len(norms)


@pytest.mark.parametrize("height,width", [(8, 8), (7, 9), (6, 5), (4, 4)])
def test_pod_embedding_matches_loops(height, width):
    generator = torch.Generator().manual_seed(height * width)
    maps = torch.randn(2, 3, height, width, generator=generator)
    old_maps = torch.randn(2, 3, height, width, generator=generator)
    embedding = pod_embedding(maps, (1, 2, 4))  # (B, D)
    for b in range(2):
        expected = sorted(loop_embedding(maps[b], (1, 2, 4)))
        assert torch.allclose(embedding[b].sort().values.double(), torch.tensor(expected, dtype=torch.float64),
                              rtol=1e-5, atol=1e-6)
    assert pod_distance(maps, old_maps).item() == pytest.approx(loop_distance(maps, old_maps, (1, 2, 4)), rel=1e-5)


@pytest.mark.parametrize("shape,scales", [((2, 3, 8, 8), (1, 2, 4)), ((1, 2, 12, 4), (1, 2, 4)),
                                          ((2, 1, 6, 6), (3, 1)), ((1, 2, 16, 8), (2, 8))])
def test_pod_strip_pooling_equals_pooling_every_cell(shape, scales, monkeypatch):
    maps = torch.randn(*shape, generator=torch.Generator().manual_seed(5), requires_grad=True)
    direct = _pod_embedding_by_cells(maps.pow(2), scales)  # every scale pooled from the map
    monkeypatch.setattr(pod, "_pod_embedding_by_cells", None)  # the strip path must not fall back
    fast = pod_embedding(maps, scales)  # finest-scale strips, then means of strips
    assert fast.shape == direct.shape and torch.allclose(fast, direct, rtol=1e-6, atol=1e-6)  # same order
    weights = torch.randn(fast.shape, generator=torch.Generator().manual_seed(6))
    (fast_grad,) = torch.autograd.grad((fast * weights).sum(), maps)
    (direct_grad,) = torch.autograd.grad((direct * weights).sum(), maps)
    assert torch.allclose(fast_grad, direct_grad, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("strips", [1, 2, 4])
def test_squared_strip_means_backward_passes_gradcheck(strips):
    maps = torch.randn(2, 3, 8, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(strips))
    assert torch.autograd.gradcheck(lambda m: pod.SquaredStripMeans.apply(m, strips), (maps.requires_grad_(),))
    channels_last = maps.detach().contiguous(memory_format=torch.channels_last).requires_grad_()
    columns, rows = pod.SquaredStripMeans.apply(channels_last, strips)
    assert torch.allclose(columns, maps.detach().pow(2).reshape(2, 3, 8, strips, 4 // strips).mean(dim=4))
    assert torch.allclose(rows, maps.detach().pow(2).reshape(2, 3, strips, 8 // strips, 4).mean(dim=3))


def test_pod_hand_computed_2x2():
    # h = [[1, 2], [3, 4]] -> a = [[1, 4], [9, 16]].
    # s = 1: width pooling (1/2)·row sums = 2.5, 12.5; height pooling (1/2)·column sums = 5, 10.
    # s = 2: one pixel per cell, both poolings give a itself: 1, 4, 9, 16 twice.
    h = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])  # (1, 1, 2, 2)
    embedding = pod_embedding(h, (1, 2))[0]
    assert sorted(embedding.tolist()) == [1, 1, 2.5, 4, 4, 5, 9, 9, 10, 12.5, 16, 16]
    # distance to a zero map: sqrt(2.5² + 12.5² + 5² + 10² + 2·(1 + 16 + 81 + 256)) = sqrt(995.5)
    assert pod_distance(h, torch.zeros_like(h), (1, 2)).item() == pytest.approx(math.sqrt(995.5))


def test_pod_refuses_a_map_smaller_than_the_grid():
    with pytest.raises(ValueError):
        pod_embedding(torch.zeros(1, 1, 3, 8), (1, 2, 4))


def test_collapse_sums_background_and_new_channels():
    logits = torch.arange(5.0).view(1, 5, 1, 1).repeat(1, 1, 2, 2)  # channels 0..4, num_old = 3
    collapsed = collapse_new_logits(logits, num_old=3)
    assert collapsed[0, :, 0, 0].tolist() == [0 + 3 + 4, 1, 2]


def pod_batch(num_old: int, num_new: int, seed: int = 0, size: int = 6) -> Batch:
    generator = torch.Generator().manual_seed(seed)

    def random(*shape):
        return torch.randn(*shape, generator=generator)

    features = {"stage1_preact": random(2, 4, 2 * size, 2 * size), "stage2_preact": random(2, 5, size, size),
                "stage3_preact": random(2, 5, size, size), "body": random(2, 5, size, size),
                "pre_logits": random(2, 3, size, size), "logits_low": random(2, num_old + num_new, size, size)}
    old_features = {name: random(*t.shape) for name, t in features.items() if name != "stage3_preact"}
    old_features["logits_low"] = random(2, num_old, size, size)
    features = {name: t.requires_grad_() for name, t in features.items()}
    return Batch(images=random(2, 3, 4 * size, 4 * size), targets=torch.zeros(2, 4 * size, 4 * size, dtype=torch.long),
                 out=SegOutput(random(2, num_old + num_new, 4 * size, 4 * size), features),
                 old=SegOutput(random(2, num_old, 4 * size, 4 * size), old_features),
                 num_old=num_old, num_new=num_new, step=1)


@pytest.mark.parametrize("num_old,num_new", [(3, 2), (16, 1)])
def test_local_pod_equals_the_formula(num_old, num_new):
    """(1/L) Σ_l λ_l sqrt(|S|/|N|) mean_b ‖Φ − Φ̂‖ over stage1, stage2 (stage3 only in the new
    model is skipped), pre_logits and the collapsed logits: L = 4. "body" is not distilled."""
    batch = pod_batch(num_old, num_new)
    new, old = batch.out.features, batch.old.features
    scales = (1, 2, 4)
    distances = [0.01 * loop_distance(new[name].detach(), old[name], scales)
                 for name in ("stage1_preact", "stage2_preact", "pre_logits")]
    collapsed = collapse_new_logits(new["logits_low"].detach(), num_old)
    distances.append(5e-4 * loop_distance(collapsed, old["logits_low"], scales))
    expected = math.sqrt((num_old + num_new) / num_new) * sum(distances) / 4
    term = TERMS["local_pod"]()
    assert [name for name, *_ in term.maps(batch)] == ["stage1_preact", "stage2_preact", "pre_logits", "logits_low"]
    assert term(batch).item() == pytest.approx(expected, rel=1e-5)
    unscheduled = TERMS["local_pod"](pod_schedule=False)(batch).item()
    assert unscheduled * math.sqrt((num_old + num_new) / num_new) == pytest.approx(expected, rel=1e-5)
    ade = TERMS["local_pod"](feature_weight=1e-3, logits_weight=1e-5)(batch).item()
    assert ade == pytest.approx(math.sqrt((num_old + num_new) / num_new) / 4
                                * (sum(distances[:3]) / 10 + distances[3] / 50), rel=1e-5)


def test_local_pod_is_zero_with_zero_gradient_when_the_maps_agree():
    batch = pod_batch(3, 2)
    for name, old in batch.old.features.items():
        if name != "logits_low":
            batch.out.features[name].data.copy_(old)
    new_logits = batch.out.features["logits_low"].data  # new channels 0 and z_0 = ẑ_0: collapse = old
    new_logits[:, :3] = batch.old.features["logits_low"]
    new_logits[:, 3:] = 0
    loss = TERMS["local_pod"]()(batch)
    assert loss.item() == 0
    loss.backward()
    assert all(torch.equal(t.grad, torch.zeros_like(t)) for t in batch.out.features.values() if t.grad is not None)


# ---------------------------------------------------------------- pseudo-labels
class StubOldModel(nn.Module):
    """Logits = a fixed 1x1 convolution of the image; class 2 is never predicted (bias -100)."""

    def __init__(self, num_old: int = 3, seed: int = 0) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, num_old, 1)
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            self.conv.weight.copy_(torch.randn(num_old, 3, 1, 1, generator=generator))
            self.conv.bias.zero_()
            if num_old > 2:
                self.conv.bias[2] = -100.0

    def forward(self, images):
        return SegOutput(self.conv(images), {})


def fake_loader(num_batches: int = 3, size: int = 16, seed: int = 0) -> list:
    generator = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(num_batches):
        images = torch.randn(2, 3, size, size, generator=generator)
        targets = torch.tensor([0, 0, 0, 3, 4, 255])[torch.randint(6, (2, size, size), generator=generator)]
        batches.append((images, targets))
    return batches


def loop_uncertainty(logits: list[float], num_seen: int) -> tuple[int, float]:
    """ĉ and u = H(q)/(|O| ln|O| ln|S|) of one pixel, in double precision."""
    largest = max(logits)
    exps = [math.exp(z - largest) for z in logits]
    q = [e / sum(exps) for e in exps]
    entropy = -sum(p * math.log(p) for p in q if p > 0)
    num_old = len(logits)
    return max(range(num_old), key=lambda c: q[c]), entropy / (num_old * math.log(num_old) * math.log(num_seen))


def loop_thresholds(model, loader, num_old: int, num_seen: int) -> list[float]:
    values = {c: [] for c in range(num_old)}
    with torch.no_grad():
        for images, targets in loader:
            logits = model(images).logits  # (B, |O|, H, W)
            for b, row, col in (targets == 0).nonzero().tolist():
                c, u = loop_uncertainty(logits[b, :, row, col].tolist(), num_seen)
                values[c].append(u)
    return [max(statistics.median(v), 0.001) if v else 0.001 for c, v in sorted(values.items())]


def test_uncertainty_matches_loops():
    logits = torch.randn(2, 4, 3, 5, generator=torch.Generator().manual_seed(1)) * 3
    classes, uncertainty = old_predictions(logits, num_seen=6)
    for b, row, col in [(0, 0, 0), (1, 2, 4), (0, 1, 3)]:
        c, u = loop_uncertainty(logits[b, :, row, col].tolist(), 6)
        assert classes[b, row, col].item() == c
        assert uncertainty[b, row, col].item() == pytest.approx(u, rel=1e-5, abs=1e-7)
    assert uncertainty.max() <= 1 / (4 * math.log(6)) + 1e-7
    classes, uncertainty = old_predictions(torch.randn(2, 1, 3, 3), num_seen=3)  # |O| = 1: u = 0
    assert classes.eq(0).all() and uncertainty.eq(0).all()


@pytest.mark.parametrize("block_elements", [1, 4 * 9 * 2, 10**9])  # one row, two rows, one band per image
def test_uncertainty_in_bands_equals_whole_batch_formula(block_elements):
    logits = torch.randn(3, 4, 7, 9, generator=torch.Generator().manual_seed(2)) * 3  # (B, |O|, H, W)
    logits[0, :, 0, 0] = 1.5  # a four-way tie: class 0, u at its largest
    logits[1, 2, 3, 4] = 200.0  # q one-hot: u = 0, no NaN
    classes, uncertainty = old_predictions(logits, num_seen=6, block_elements=block_elements)
    log_probs = F.log_softmax(logits.double(), dim=1)  # (B, |O|, H, W)
    expected = -(log_probs.exp() * log_probs).sum(dim=1) / (4 * math.log(4) * math.log(6))  # (B, H, W)
    assert torch.equal(classes, logits.argmax(dim=1))
    assert torch.allclose(uncertainty.double(), expected, rtol=1e-5, atol=1e-8)
    assert uncertainty[0, 0, 0] == pytest.approx(1 / (4 * math.log(6)), rel=1e-6)
    assert uncertainty[1, 3, 4] == 0.0
    classes, uncertainty = old_predictions(logits[:, :1], num_seen=3, block_elements=block_elements)
    assert classes.eq(0).all() and uncertainty.eq(0).all()  # |O| = 1


def test_uncertainty_with_minus_infinity_logits_is_finite():
    """A class with logit -inf has q = 0 and adds 0·log 0 = 0 to the entropy (not 0·(-inf) = NaN)."""
    logits = torch.tensor([0.0, float("-inf"), 1.0]).view(1, 3, 1, 1)  # (B, |O|, H, W)
    classes, uncertainty = old_predictions(logits, num_seen=4)
    probs = torch.tensor([1.0, math.e]) / (1 + math.e)  # q over the two finite classes
    expected = -(probs * probs.log()).sum().item() / (3 * math.log(3) * math.log(4))
    assert classes.item() == 2
    assert uncertainty.item() == pytest.approx(expected, rel=1e-6)
    assert torch.equal(logits, torch.tensor([0.0, float("-inf"), 1.0]).view(1, 3, 1, 1))  # input untouched
    _, uncertainty = old_predictions(torch.tensor([0.0, float("nan"), 1.0]).view(1, 3, 1, 1), num_seen=4)
    assert uncertainty.isnan().all()  # a NaN logit is not hidden


@pytest.mark.parametrize("model_name", ["stub", "tiny"])
def test_exact_median_thresholds_match_loops(model_name):
    model = StubOldModel() if model_name == "stub" else build_model("tiny", [3], width=4).freeze()
    loader = fake_loader()
    expected = loop_thresholds(model, loader, num_old=3, num_seen=5)
    rewriter = REWRITERS["plop_pseudo_labels"]()
    rewriter.begin_step(StepContext(step=1, num_old=3, num_new=2, model=model, old_model=model,
                                    train_loader=loader, device=torch.device("cpu")))
    assert rewriter.thresholds.dtype == torch.float32
    assert torch.allclose(rewriter.thresholds.double(), torch.tensor(expected, dtype=torch.float64), rtol=0, atol=6e-7)
    if model_name == "stub":
        assert rewriter.thresholds[2].item() == pytest.approx(0.001)  # never predicted: the floor


def test_threshold_pass_under_bfloat16_autocast():
    model, loader, cpu = build_model("tiny", [3], width=4).freeze(), fake_loader(1), torch.device("cpu")
    exact = entropy_thresholds(model, loader, num_old=3, num_seen=5, device=cpu)
    mixed = entropy_thresholds(model, loader, num_old=3, num_seen=5, device=cpu, amp=True)
    assert mixed.dtype == torch.float32 and torch.allclose(mixed, exact, atol=1e-2)


def test_coded_histogram_walk():
    def walk(counts: dict[int, int]) -> float:
        row = torch.zeros(100, dtype=torch.int64)
        for index, count in counts.items():
            row[index] = count
        return coded_histogram_median(row)

    assert walk({0: 1000}) == pytest.approx(0.005)  # ADE: everything in bin 0 -> τ = 0.005
    assert walk({2: 10}) == pytest.approx(0.02 + (5 - 1) / 10 * 0.01)  # running sum 0 + 1 = 1 at bin 2
    assert walk({i: 100 for i in range(10)}) == -math.inf  # runs off with half < 4950: the floor
    assert walk({i: 2000 for i in range(10)}) == math.inf  # half > 4950: accept everything
    assert walk({}) == 0.0


def test_coded_walk_on_many_old_classes_gives_ade_thresholds():
    model = StubOldModel(num_old=51)  # u <= 1/(51 ln 52) < 0.01: every value in bin 0
    loader = fake_loader(num_batches=1)
    thresholds = entropy_thresholds(model, loader, num_old=51, num_seen=52, device=torch.device("cpu"),
                                    histogram_median=True)
    with torch.no_grad():
        predicted = set(model(loader[0][0]).logits.argmax(1)[loader[0][1] == 0].tolist())
    for c in range(51):
        assert thresholds[c].item() == pytest.approx(0.005 if c in predicted else 0.001)


def hand_batch() -> Batch:
    """Two 1x5 images, |O| = 3, |N| = 2. Old predictions per pixel: certain 0, certain 1, uniform
    (u = 1/(3 ln 5) = 0.207), certain 1, certain 0. Image 1 has no background pixel."""
    certain0, certain1, uniform = [10.0, 0.0, 0.0], [0.0, 10.0, 0.0], [0.0, 0.0, 0.0]
    pixels = [certain0, certain1, uniform, certain1, certain0]
    old_logits = torch.tensor([pixels, pixels]).permute(0, 2, 1).unsqueeze(2)  # (2, 3, 1, 5)
    targets = torch.tensor([[[0, 0, 0, 3, 255]], [[3, 4, 255, 4, 4]]])  # (2, 1, 5)
    return Batch(images=torch.zeros(2, 3, 1, 5), targets=targets, out=SegOutput(torch.randn(2, 5, 1, 5), {}),
                 old=SegOutput(old_logits, {}), num_old=3, num_new=2, step=1)


def test_rewriting_rules_and_adaptive_factor():
    _, certain_u = loop_uncertainty([10.0, 0.0, 0.0], 5)  # about 1.9e-4
    rewriter = REWRITERS["plop_pseudo_labels"]()
    rewriter.load_state_dict({"thresholds": torch.tensor([0.05, 0.05, 0.05])})
    batch = hand_batch()
    before = batch.targets.clone()
    rewritten = rewriter(batch)
    assert rewritten.targets.tolist() == [[[0, 1, 255, 3, 255]], [[3, 4, 255, 4, 4]]]
    assert torch.equal(rewritten.original_targets, before) and torch.equal(batch.targets, before)
    weights = rewritten.extras["image_weights"]
    assert weights.shape == (2,)
    assert weights[0].item() == pytest.approx(2 / (3 + 1e-6)) and weights[1].item() == 0.0  # no background: 0
    # a class-specific threshold below the certain pixel's u rejects class 1 only
    rewriter.load_state_dict({"thresholds": torch.tensor([0.05, certain_u / 2, 0.05])})
    strict = rewriter(hand_batch())
    assert strict.targets[0].tolist() == [[0, 255, 255, 3, 255]]
    assert strict.extras["image_weights"][0].item() == pytest.approx(1 / 3)
    option = REWRITERS["plop_pseudo_labels"](weight_without_background=1.0)
    option.load_state_dict({"thresholds": torch.tensor([0.05, 0.05, 0.05])})
    assert option(hand_batch()).extras["image_weights"][1].item() == 1.0
    plain = REWRITERS["plop_pseudo_labels"](adaptive_factor=False)
    plain.load_state_dict({"thresholds": torch.tensor([0.05, 0.05, 0.05])})
    assert "image_weights" not in plain(hand_batch()).extras


def test_rewriter_state_round_trip_and_errors():
    rewriter = REWRITERS["plop_pseudo_labels"]()
    assert rewriter.state_dict() == {}
    with pytest.raises(RuntimeError):
        rewriter(hand_batch())  # no thresholds yet
    with pytest.raises(MissingOldModelError):
        rewriter(Batch(**{**hand_batch().__dict__, "old": None}))
    with pytest.raises(MissingOldModelError):
        rewriter.begin_step(StepContext(1, 3, 2, nn.Identity(), None, [], torch.device("cpu")))
    rewriter.begin_step(StepContext(1, 3, 2, nn.Identity(), StubOldModel(), fake_loader(1), torch.device("cpu")))
    buffer = io.BytesIO()
    torch.save(rewriter.state_dict(), buffer)
    buffer.seek(0)
    restored = REWRITERS["plop_pseudo_labels"]()
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    assert torch.equal(restored.thresholds, rewriter.thresholds)
    assert torch.equal(restored(hand_batch()).targets, rewriter(hand_batch()).targets)
    with pytest.raises(ValueError):
        restored.load_state_dict({"medians": torch.zeros(3)})


# ---------------------------------------------------------------- ν-weighted CE
def test_pseudo_label_ce_equals_ce_without_weights_or_with_ones():
    batch = hand_batch()
    expected = TERMS["ce"]()(batch)
    term = TERMS["pseudo_label_ce"]()
    assert torch.equal(term(batch), expected)
    batch.extras["image_weights"] = torch.ones(2)
    assert torch.allclose(term(batch), expected)


def test_pseudo_label_ce_weighted_matches_loops():
    generator = torch.Generator().manual_seed(3)
    logits = torch.randn(3, 4, 2, 3, generator=generator, requires_grad=True)
    targets = torch.tensor([0, 1, 3, 255])[torch.randint(4, (3, 2, 3), generator=generator)]
    weights = torch.tensor([0.25, 1.0, 0.0])
    batch = Batch(torch.zeros(3, 3, 2, 3), targets, SegOutput(logits, {}), None, 2, 2, 1,
                  extras={"image_weights": weights})
    total = 0.0
    for b in range(3):
        for row in range(2):
            for col in range(3):
                label = targets[b, row, col].item()
                if label != 255:
                    z = logits[b, :, row, col].tolist()
                    total += weights[b].item() * (math.log(sum(math.exp(v) for v in z)) - z[label])
    loss = TERMS["pseudo_label_ce"]()(batch)
    assert loss.item() == pytest.approx(total / (3 * 2 * 3), rel=1e-5)
    loss.backward()
    assert logits.grad[2].abs().sum() == 0  # ν = 0 removes the image
    with pytest.raises(ValueError):
        TERMS["pseudo_label_ce"]()(Batch(batch.images, targets, SegOutput(logits, {}), None, 2, 2, 1,
                                          extras={"image_weights": torch.ones(3, 1)}))


def test_objective_with_tiny_models_runs_the_pass_rewrites_and_distils():
    old_model = build_model("tiny", [3], width=4).freeze()
    model = copy.deepcopy(old_model)
    model.add_classes(2)
    model.requires_grad_(True).train()
    objective = Objective((Term("pseudo_label_ce", 1.0), Term("local_pod", 1.0)), rewriter="plop_pseudo_labels")
    loader = fake_loader(num_batches=2)
    objective.begin_step(StepContext(1, 3, 2, model, old_model, loader, torch.device("cpu")))
    images, targets = loader[0]
    out = model(images)
    with torch.no_grad():
        old = old_model(images)
    batch = objective.prepare(Batch(images, targets, out, old, num_old=3, num_new=2, step=1))
    assert batch.extras["image_weights"].shape == (2,)
    kept = targets != 0  # new classes and 255 stay; background becomes an old class or 255
    assert torch.equal(batch.targets[kept], targets[kept])
    assert ((batch.targets[~kept] < 3) | (batch.targets[~kept] == 255)).all()
    total, values = objective(batch)
    assert torch.isfinite(total) and set(values) == {"pseudo_label_ce", "local_pod"}
    assert len(TERMS["local_pod"]().maps(batch)) == 5  # stage1..3_preact, pre_logits, logits
    total.backward()
    assert objective.state_dict()["rewriter"]["thresholds"].shape == (3,)
