"""The UCD / PLOP pictures of `cslearn.viz` (notebooks 08 and 09): the per-pixel uncertainty-weight
maps against `build_contrast_set`, the contrast-matrix plot and the pixel-map grid (Agg backend)."""
from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

from cslearn import viz  # noqa: E402
from cslearn.losses import Batch  # noqa: E402
from cslearn.losses.contrastive import build_contrast_set, nearest_labels  # noqa: E402
from cslearn.models.output import SegOutput  # noqa: E402

NAMES = ["background", "a", "b", "c", "d", "e"]


@pytest.fixture(autouse=True)
def no_figures_left_open():
    before = set(plt.get_fignums())
    yield
    assert set(plt.get_fignums()) == before, "a viz function left a pyplot figure open"


def random_batch(seed: int, num_old: int = 4, num_new: int = 2, size: int = 8, feature_size: int = 4,
                 batch_size: int = 3) -> Batch:
    """Labels 0 / new / 255 at input resolution, random features and old logits (argmax covers 0..|O|-1)."""
    generator = torch.Generator().manual_seed(seed)
    choices = torch.tensor([0, 0, 0, 255] + list(range(num_old, num_old + num_new)))
    targets = choices[torch.randint(len(choices), (batch_size, size, size), generator=generator)]
    pre_logits = torch.randn(batch_size, 5, feature_size, feature_size, generator=generator)
    out = SegOutput(torch.zeros(batch_size, num_old + num_new, size, size), {"pre_logits": pre_logits})
    old = SegOutput(torch.zeros(batch_size, num_old, size, size), {
        "pre_logits": torch.randn(batch_size, 5, feature_size, feature_size, generator=generator),
        "logits_low": 2 * torch.randn(batch_size, num_old, feature_size, feature_size, generator=generator)})
    return Batch(torch.zeros(batch_size, 3, size, size), targets, out, old, num_old, num_new, step=1)


def dense_mean_weight(batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    """(anchor labels, mean of W_ij over P_i) from the package's contrast set, with the dense matrix."""
    pixels = build_contrast_set(batch)
    weights = pixels.anchor_probs.double() @ pixels.contrast_probs.double().T  # (N_a, N_c)
    weights[pixels.anchor_ground_truth[:, None] & pixels.contrast_ground_truth[None, :]] = 1.0
    positives = pixels.anchor_labels[:, None] == pixels.contrast_labels[None, :]
    rows = torch.arange(len(pixels.anchor_labels))
    positives[rows, rows] = False  # not the own copy
    counts = positives.sum(dim=1)
    mean = (weights * positives).sum(dim=1) / counts.clamp(min=1)
    return pixels.anchor_labels, torch.where(counts > 0, mean, torch.full_like(mean, math.nan))


@pytest.mark.parametrize("seed", range(4))
def test_ucd_pixel_weights_match_the_contrast_set(seed):
    batch = random_batch(seed)
    features = batch.out.features["pre_logits"]
    labels = nearest_labels(batch.original_targets, features.shape[2:])  # (B, h, w)
    maps = viz.ucd_pixel_weights(batch.old.features["logits_low"], labels)
    assert all(value.shape == labels.shape for value in maps.values())
    anchor_labels, mean = dense_mean_weight(batch)
    pseudo = maps["pseudo_labels"].reshape(-1)
    anchors = (pseudo != 255) & (pseudo > 0)
    assert torch.equal(pseudo[anchors], anchor_labels)  # same anchors, same order, same labels
    assert torch.allclose(maps["mean_weight"].reshape(-1)[anchors].double(), mean, atol=1e-6, equal_nan=True)
    assert maps["mean_weight"].reshape(-1)[~anchors].isnan().all()
    assert torch.equal(pseudo == 255, labels.reshape(-1) == 255)
    probs = torch.softmax(batch.old.features["logits_low"], dim=1)
    assert torch.allclose(maps["confidence"], probs.max(dim=1).values)


def test_ucd_pixel_weights_by_hand():
    # Four pixels, |O| = 2: two pseudo-labelled class-1 pixels with q = (0, 1) and (1/4, 3/4),
    # one ground-truth new pixel (label 2) alone, one void pixel.
    logits = torch.tensor([[-30.0, 30.0], [0.0, math.log(3)], [5.0, 0.0], [0.0, 5.0]]).T.reshape(1, 2, 2, 2)
    labels = torch.tensor([[[0, 0], [2, 255]]])
    maps = viz.ucd_pixel_weights(logits, labels)
    # pixel 0: positives = own old key (q·q = 1), copy and key of pixel 1 (3/4 each) -> 5/6
    # pixel 1: own old key (1/16 + 9/16), copy and key of pixel 0 (3/4 each) -> (5/8 + 3/2) / 3
    assert maps["mean_weight"][0, 0].tolist() == pytest.approx([5 / 6, (5 / 8 + 3 / 2) / 3])
    assert math.isnan(maps["mean_weight"][0, 1, 0]) and math.isnan(maps["mean_weight"][0, 1, 1])  # no positive; void
    assert maps["pseudo_labels"].tolist() == [[[1, 1], [2, 255]]]


def test_ucd_pixel_weights_without_anchors():
    logits = torch.zeros(1, 3, 2, 2)
    logits[:, 0] = 5.0  # the old model sees background everywhere
    maps = viz.ucd_pixel_weights(logits, torch.zeros(1, 2, 2, dtype=torch.long))
    assert maps["mean_weight"].isnan().all() and (maps["pseudo_labels"] == 0).all()


def test_plot_contrast_matrix_frames_the_positives():
    anchor_labels = torch.tensor([1, 1, 2, 3])
    contrast_labels = torch.tensor([1, 1, 2, 3, 1, 2, 2])
    figure = viz.plot_contrast_matrix(torch.randn(4, 7), anchor_labels, contrast_labels, names=NAMES)
    assert isinstance(figure, Figure)
    ax = figure.axes[0]
    framed = [patch for patch in ax.patches if isinstance(patch, Rectangle) and not patch.get_hatch()]
    hatched = [patch for patch in ax.patches if isinstance(patch, Rectangle) and patch.get_hatch()]
    positives = int((anchor_labels[:, None] == contrast_labels[None, :]).sum()) - len(anchor_labels)
    assert len(framed) == positives == 6 and len(hatched) == 4
    assert [label.get_text() for label in ax.get_yticklabels()] == ["0: a", "1: a", "2: b", "3: c"]


def test_plot_contrast_matrix_draws_into_an_axes_and_checks_shapes():
    figure, ax = plt.subplots()
    try:
        assert viz.plot_contrast_matrix(torch.rand(2, 3), [1, 2], [1, 2, 1], ax=ax, title="W", center=None) is figure
        with pytest.raises(ValueError, match="N_a, N_c"):
            viz.plot_contrast_matrix(torch.rand(2, 3), [1, 2], [1, 2])
    finally:
        plt.close(figure)


def test_show_pixel_maps_rows_columns_and_nan():
    images = torch.rand(2, 3, 16, 16)
    masks = {"ground truth": torch.randint(0, 4, (2, 16, 16)), "low resolution": torch.randint(0, 4, (2, 4, 4))}
    weight = torch.rand(2, 4, 4)
    weight[0, 0, 0] = math.nan
    figure = viz.show_pixel_maps(images, masks, {"weight": weight}, class_names=NAMES, ranges={"weight": (0, 1)})
    assert len([ax for ax in figure.axes if ax.images]) == 2 * 4  # 2 rows x 4 columns (+ 2 colour bars)
    assert [ax.get_title() for ax in figure.axes[:4]] == ["image", "ground truth", "low resolution", "weight"]
    assert figure.legends  # the classes present


def test_show_pixel_maps_without_image_and_single_maps():
    figure = viz.show_pixel_maps(None, scalars={"a": torch.rand(8, 8), "b": torch.ones(8, 8)})
    assert [ax.get_title() for ax in figure.axes[:2]] == ["a", "b"]
    assert not figure.legends
    with pytest.raises(ValueError, match="same number of rows"):
        viz.show_pixel_maps(torch.rand(2, 3, 8, 8), {"mask": torch.zeros(3, 8, 8, dtype=torch.long)})
