"""Latent-space helpers of `cslearn.viz` (notebooks 06 and 07): features per class, PCA, prototype
similarity and drift, and their plots (Agg backend, no display)."""
from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from cslearn import viz  # noqa: E402
from cslearn.losses import Batch  # noqa: E402
from cslearn.losses.latent import pixel_vectors  # noqa: E402
from cslearn.models.output import SegOutput  # noqa: E402

NAMES = ["background", "a", "b", "c"]


class PooledImage(torch.nn.Module):
    """A stand-in segmenter: "body" = the image average-pooled by 2, channels (R, G, B, R + G)."""

    num_classes = 4

    def __init__(self) -> None:
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(()))  # gives the module a device

    def forward(self, images: torch.Tensor) -> SegOutput:
        pooled = torch.nn.functional.avg_pool2d(images, 2) * self.scale  # (B, 3, H/2, W/2)
        body = torch.cat([pooled, pooled[:, :1] + pooled[:, 1:2]], dim=1)  # (B, 4, H/2, W/2)
        return SegOutput(torch.zeros(len(images), self.num_classes, *images.shape[-2:]), {"body": body})


@pytest.fixture(autouse=True)
def no_figures_left_open():
    before = set(plt.get_fignums())
    yield
    assert set(plt.get_fignums()) == before, "a viz function left a pyplot figure open"


def images_and_targets(seed: int = 0, count: int = 5, size: int = 8):
    generator = torch.Generator().manual_seed(seed)
    images = torch.rand(count, 3, size, size, generator=generator)  # (N, 3, H, W)
    targets = torch.tensor([0, 1, 2, 255])[torch.randint(4, (count, size, size), generator=generator)]  # (N, H, W)
    return images, targets


def reference_vectors(model, images, targets):
    """The SDR terms' own gather (pixel_vectors) on the whole set: (n, C) and (n,)."""
    out = model(images)
    batch = Batch(images=images, targets=targets, out=out, old=None, num_old=0, num_new=4, step=0)
    features, labels = pixel_vectors(batch)
    keep = labels != 255
    return features[keep].detach(), labels[keep]


@pytest.mark.parametrize("batch_size", [1, 2, 16])
def test_class_means_and_counts_match_the_sdr_gather(batch_size):
    model = PooledImage()
    images, targets = images_and_targets()
    collected = viz.collect_class_features(model, images, targets, max_per_class=1000, batch_size=batch_size)
    features, labels = reference_vectors(model, images, targets)
    for label in range(4):
        chosen = features[labels == label]
        assert collected["counts"][label] == len(chosen)
        if len(chosen):
            assert torch.allclose(collected["means"][label], chosen.mean(dim=0), atol=1e-6)
        else:
            assert torch.isnan(collected["means"][label]).all()  # class 3 never appears
    # Everything is kept when the cap is large: the sample is the whole set, grouped by class.
    assert collected["features"].shape == features.shape
    assert torch.equal(collected["labels"], labels.sort(stable=True).values)
    for label in range(3):
        mine = collected["features"][collected["labels"] == label]
        theirs = features[labels == label]
        assert torch.allclose(mine.sum(dim=0), theirs.sum(dim=0), atol=1e-5)


def test_the_sample_is_capped_per_class_reproducible_and_drawn_from_the_class():
    model = PooledImage()
    images, targets = images_and_targets(seed=1, count=12)
    features, labels = reference_vectors(model, images, targets)
    first = viz.collect_class_features(model, images, targets, max_per_class=7, batch_size=3, seed=4)
    again = viz.collect_class_features(model, images, targets, max_per_class=7, batch_size=5, seed=4)
    other = viz.collect_class_features(model, images, targets, max_per_class=7, batch_size=3, seed=5)
    assert torch.bincount(first["labels"]).tolist() == [7, 7, 7]
    assert torch.equal(first["labels"], again["labels"])
    assert not torch.equal(first["features"], other["features"])
    for vector, label in zip(first["features"], first["labels"]):
        same_class = features[labels == label]
        assert (same_class == vector).all(dim=1).any()  # a real position of that class
    assert torch.allclose(first["means"][:3], again["means"][:3], atol=1e-6)  # means use every position


def test_labels_are_taken_at_the_top_left_pixel_of_each_block():
    model = PooledImage()
    images = torch.zeros(1, 3, 4, 4)
    images[0, 0, :2, :2] = 1.0  # the top-left block is red
    targets = torch.full((1, 4, 4), 2)
    targets[0, 0, 0] = 1  # only the top-left pixel of the first block says class 1
    collected = viz.collect_class_features(model, images, targets, max_per_class=10)
    assert collected["counts"].tolist() == [0, 1, 3, 0]
    assert torch.allclose(collected["means"][1], torch.tensor([1.0, 0, 0, 1.0]))


def test_pca_basis_finds_the_direction_of_largest_variance_with_a_fixed_sign():
    generator = torch.Generator().manual_seed(0)
    direction = torch.tensor([3.0, -4.0, 0.0]) / 5
    along = torch.randn(500, 1, generator=generator) * 10
    features = along * direction + 0.1 * torch.randn(500, 3, generator=generator) + torch.tensor([5.0, 1.0, -2.0])
    mean, components = viz.pca_basis(features, num_components=2)
    assert components.shape == (3, 2)
    assert torch.allclose(mean, features.mean(dim=0))
    assert torch.allclose(components.T @ components, torch.eye(2), atol=1e-5)
    assert abs(float(components[:, 0] @ direction)) > 0.999
    assert components[components[:, 0].abs().argmax(), 0] > 0  # the sign convention
    projected = viz.pca_project(features, (mean, components))
    assert projected.shape == (500, 2)
    assert torch.allclose(projected.mean(dim=0), torch.zeros(2), atol=1e-4)
    assert projected[:, 0].var() > 100 * projected[:, 1].var()
    _, _, low_rank = torch.pca_lowrank(features, q=2, center=True)  # torch's own PCA agrees up to sign
    assert torch.allclose(low_rank[:, 0].abs(), components[:, 0].abs(), atol=1e-3)


def test_cosine_similarity_matrix_by_hand_and_blank_for_zero_prototypes():
    prototypes = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 0.0], [0.0, 2.0]])
    similarity = viz.cosine_similarity_matrix(prototypes)
    assert similarity.shape == (4, 4)
    assert np.allclose(similarity[[0, 1, 3], [0, 1, 3]], 1.0)
    assert math.isclose(similarity[0, 1], 1 / math.sqrt(2), rel_tol=1e-9)
    assert math.isclose(similarity[0, 3], 0.0, abs_tol=1e-12)
    assert np.isnan(similarity[2]).all() and np.isnan(similarity[:, 2]).all()


def test_prototype_drift_by_hand():
    step0 = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0]])
    step1 = torch.tensor([[3.0, 4.0], [1.0, 0.0], [0.0, 1.0], [9.0, 9.0]])  # a new class appended
    step2 = torch.tensor([[0.0, 0.0], [float("nan"), 0.0], [0.0, 2.0], [9.0, 9.0]])
    drift = viz.prototype_drift([step0, step1, step2])
    assert drift.shape == (3, 3)  # the classes of the reference step only
    np.testing.assert_allclose(drift[0], [0, 0, 0])
    np.testing.assert_allclose(drift[1], [5, 0, 1])
    assert np.isnan(drift[2, 1]) and drift[2, 0] == 0 and drift[2, 2] == 0
    relative = viz.prototype_drift([step0, step1], relative=True)
    np.testing.assert_allclose(relative[1, 1:], [0, 0.5])
    assert np.isnan(relative[1, 0])  # 5 / 0: a zero reference has no relative drift


def test_latent_space_plot_draws_one_panel_per_entry_on_shared_axes():
    model = PooledImage()
    images, targets = images_and_targets(count=6)
    collected = viz.collect_class_features(model, images, targets, max_per_class=20)
    shifted = collected["features"] + 0.5
    panels = {"before": (collected["features"], collected["labels"]), "after": (shifted, collected["labels"]),
              "after again": (shifted, collected["labels"])}
    figure = viz.plot_latent_space(panels, NAMES, palette="toy", columns=2)
    assert isinstance(figure, Figure)
    axes = [ax for ax in figure.axes if ax.get_title()]
    assert [ax.get_title() for ax in axes] == list(panels)
    assert axes[0].get_xlim() == axes[1].get_xlim() and axes[0].get_ylim() == axes[2].get_ylim()
    labels = [text.get_text() for text in figure.legends[0].get_texts()]
    assert labels == ["background", "a", "b"]
    basis = viz.pca_basis(collected["features"])
    with_basis = viz.plot_latent_space({"only": panels["before"]}, NAMES, palette="voc", class_ids=[0, 3, 2, 1],
                                       basis=basis)
    assert [text.get_text() for text in with_basis.legends[0].get_texts()] == ["background", "a", "b"]


def test_prototype_similarity_and_drift_plots_return_figures():
    prototypes = torch.rand(4, 6)
    prototypes[3] = 0  # never observed: blank row
    figure = viz.plot_prototype_similarity(prototypes, NAMES, split=3)
    assert isinstance(figure, Figure) and figure.axes[0].get_xticklabels()[0].get_text() == "background"
    drift = viz.prototype_drift([prototypes, prototypes + 0.1, prototypes + 0.3])
    figure = viz.plot_prototype_drift({"one": drift, "two": drift / 2}, NAMES, classes=[1, 2])
    assert isinstance(figure, Figure)
    assert [text.get_text() for text in figure.axes[0].get_legend().get_texts()] == [
        "one (mean over classes)", "two (mean over classes)"]
    _, ax = plt.subplots()
    try:
        assert viz.plot_prototype_drift(drift, NAMES, ax=ax) is ax.figure
        assert viz.plot_prototype_similarity(prototypes, NAMES, ax=ax) is ax.figure
    finally:
        plt.close(ax.figure)
