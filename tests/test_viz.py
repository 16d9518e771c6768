"""Palettes, colourised masks and the plots of `cslearn.viz` (Agg backend, no display)."""
from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.collections import QuadMesh  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from cslearn import viz  # noqa: E402
from cslearn.data import transforms  # noqa: E402
from cslearn.data.toy import COLOURS, TOY_CLASSES  # noqa: E402
from cslearn.metrics import ConfusionMatrix, summarize  # noqa: E402
from cslearn.palettes import IGNORE_COLOUR, ade_palette, get_palette, toy_palette, voc_palette  # noqa: E402

NAN = float("nan")
NAMES = ["background", "a", "b", "c", "d"]
CLASSES_PER_STEP = [3, 1, 1]  # a 3-1 task on 5 channels


def entry(step: int, iou: list[float], losses: list[dict], report_step: int | None = None) -> dict:
    summary = summarize(iou, CLASSES_PER_STEP, step if report_step is None else report_step)
    return {"step": step, "iou": iou, "summary": summary, "losses": losses,
            "seen_classes": list(range(len(iou)))}


@pytest.fixture
def history():
    return [entry(0, [0.9, 0.8, 0.7], [{"total": 1.0, "ce": 1.0}, {"total": 0.5, "ce": 0.5}]),
            entry(1, [0.8, 0.4, 0.5, 0.6], [{"total": 0.9, "unbiased_ce": 0.7, "unbiased_kd": 0.02}]),
            entry(2, [0.7, 0.1, 0.3, 0.2, 0.5], [{"total": 0.8, "unbiased_ce": 0.6, "unbiased_kd": 0.03}])]


@pytest.fixture
def joint():
    return [entry(0, [0.95, 0.9, 0.85, 0.8, 0.75], [{"total": 1.0, "ce": 1.0}], report_step=2)]  # one step, all classes


@pytest.fixture(autouse=True)
def no_figures_left_open():
    before = set(plt.get_fignums())
    yield
    assert set(plt.get_fignums()) == before, "a viz function left a pyplot figure open"


def test_voc_palette_matches_the_voc_label_pngs():
    palette = voc_palette()
    assert palette.shape == (256, 3) and palette.dtype == np.uint8
    assert tuple(palette[0]) == (0, 0, 0)
    assert tuple(palette[1]) == (128, 0, 0)  # aeroplane
    assert tuple(palette[15]) == (192, 128, 128)  # person
    assert tuple(palette[20]) == (0, 64, 128)  # tvmonitor
    assert tuple(palette[255]) == IGNORE_COLOUR == (224, 224, 192)


def test_toy_palette_uses_the_toy_object_colours():
    palette = toy_palette()
    expected = np.round(np.array(list(COLOURS.values())) * 255)
    np.testing.assert_array_equal(palette[1:11], expected)  # discs in their own colour
    assert (palette[11:21].astype(int).sum(axis=1) < palette[1:11].astype(int).sum(axis=1)).all()  # stripes darker
    assert len({tuple(colour) for colour in palette[:21]}) == 21
    assert tuple(palette[255]) == IGNORE_COLOUR


def test_ade_palette_has_151_distinct_colours():
    palette = ade_palette()
    assert len({tuple(colour) for colour in palette[:151]}) == 151
    with pytest.raises(ValueError, match="palettes"):
        get_palette("cityscapes")


@pytest.mark.parametrize("name", ["voc", "toy", "ade"])
def test_colorize_maps_every_label_to_its_palette_colour(name):
    mask = torch.tensor([[0, 1, 2], [20, 255, 1]])
    colours = viz.colorize(mask, name)
    assert colours.shape == (2, 3, 3) and colours.dtype == np.uint8
    palette = get_palette(name)
    for (row, column), label in np.ndenumerate(mask.numpy()):
        np.testing.assert_array_equal(colours[row, column], palette[label])
    np.testing.assert_array_equal(viz.colorize(mask.numpy(), name), colours)  # arrays and tensors alike


def test_colorize_refuses_labels_outside_the_palette():
    with pytest.raises(ValueError, match="mask values"):
        viz.colorize(np.array([[0, 256]]))
    with pytest.raises(ValueError, match="mask values"):
        viz.colorize(np.array([[3]]), palette=np.zeros((3, 3), dtype=np.uint8))


def test_to_rgb_undoes_the_training_normalisation():
    assert viz.IMAGENET_MEAN == transforms.IMAGENET_MEAN and viz.IMAGENET_STD == transforms.IMAGENET_STD
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    from PIL import Image
    tensor, _ = transforms.eval_transform(8)(Image.fromarray(image), np.zeros((8, 8), dtype=np.uint8))
    np.testing.assert_allclose(viz.to_rgb(tensor), image / 255, atol=1e-5)
    np.testing.assert_allclose(viz.to_rgb(image), image / 255)


def test_overlay_tints_labelled_pixels_only():
    image = np.full((2, 2, 3), 100, dtype=np.uint8)
    mask = np.array([[0, 1], [255, 11]])
    blended = viz.overlay(image, mask, "toy", alpha=1.0)
    np.testing.assert_allclose(blended[0, 0], 100 / 255)  # background untouched
    np.testing.assert_allclose(blended[1, 0], 100 / 255)  # ignore untouched
    np.testing.assert_allclose(blended[0, 1], toy_palette()[1] / 255)
    np.testing.assert_allclose(blended[1, 1], toy_palette()[11] / 255)


def test_show_predictions_grid_has_a_column_per_mask_and_a_legend_of_present_classes():
    images = torch.rand(2, 3, 8, 8)
    targets = torch.zeros(2, 8, 8, dtype=torch.long)
    targets[0, :4] = 3
    targets[1, 0, 0] = 255
    predictions = {"step 0": torch.ones(2, 8, 8, dtype=torch.long), "final": torch.zeros(2, 8, 8, dtype=torch.long)}
    figure = viz.show_predictions(images, targets, predictions, TOY_CLASSES)
    assert isinstance(figure, Figure)
    assert len(figure.axes) == 2 * (2 + 2)
    assert [ax.get_title() for ax in figure.axes[:4]] == ["image", "ground truth", "step 0", "final"]
    (legend,) = figure.legends
    assert [text.get_text() for text in legend.get_texts()] == [TOY_CLASSES[0], TOY_CLASSES[1], TOY_CLASSES[3]]
    single = viz.show_predictions(images, targets, targets, TOY_CLASSES, overlay_alpha=0.5)
    assert len(single.axes) == 2 * 3


def test_plot_history_draws_one_line_per_method_and_joint_as_a_level(history, joint):
    figure = viz.plot_history({"ft": history, "joint": joint}, group="old")
    (ax,) = figure.axes
    lines = ax.get_lines()
    assert len(lines) == 2
    assert list(lines[0].get_xdata()) == [0, 1, 2]
    assert lines[0].get_ydata() == pytest.approx([100 * e["summary"]["old"] for e in history])
    assert list(lines[1].get_ydata()) == pytest.approx([100 * joint[0]["summary"]["old"]] * 2)  # a level
    both = viz.plot_history({"ft": history, "joint": joint}, group=["old", "new"])
    assert len(both.axes[0].get_lines()) == 4
    assert len(viz.plot_history(history).axes[0].get_lines()) == 1  # a bare history: one line


def test_plot_class_iou_heatmap_has_a_cell_per_step_and_class(history):
    figure = viz.plot_class_iou_heatmap(history, NAMES)
    ax = figure.axes[0]
    (mesh,) = [c for c in ax.collections if isinstance(c, QuadMesh)]
    values = mesh.get_array()
    assert values.size == 3 * 5
    assert np.ma.getmaskarray(values).reshape(3, 5)[0, 3:].all()  # channels unseen at step 0: blank
    assert [label.get_text() for label in ax.get_xticklabels()] == NAMES
    assert [label.get_text() for label in ax.get_yticklabels()] == ["step 0", "step 1", "step 2"]
    table = viz.iou_table(history)
    assert table.shape == (3, 5) and math.isnan(table[0, 4]) and table[2, 1] == pytest.approx(10)


def test_plot_losses_draws_one_line_per_term(history):
    figure = viz.plot_losses(history)
    lines = figure.axes[0].get_lines()
    assert [line.get_label() for line in lines] == ["total", "ce", "unbiased_ce", "unbiased_kd"]
    assert all(len(line.get_xdata()) == 4 for line in lines)  # 2 + 1 + 1 epochs in a row
    ce = lines[1].get_ydata()
    assert list(ce[:2]) == [1.0, 0.5] and all(math.isnan(value) for value in ce[2:])


def test_plot_confusion_has_a_cell_per_pair_and_normalises_rows():
    matrix = ConfusionMatrix(3)
    matrix.update(torch.tensor([[0, 1, 1, 2, 0]]), torch.tensor([[0, 1, 2, 2, 255]]))
    figure = viz.plot_confusion(matrix, NAMES)
    (mesh,) = [c for c in figure.axes[0].collections if isinstance(c, QuadMesh)]
    values = np.asarray(mesh.get_array()).reshape(3, 3)
    assert values.sum(axis=1) == pytest.approx([100, 100, 100])
    assert values[2].tolist() == pytest.approx([0, 50, 50])
    counts = viz.plot_confusion(matrix.matrix, NAMES, normalize=False)
    assert np.asarray(counts.axes[0].collections[0].get_array()).sum() == 4
    log = viz.plot_confusion(matrix, NAMES, log_scale=True)
    cells = log.axes[0].collections[0].get_array()
    assert cells.size == 9 and np.ma.getmaskarray(cells).reshape(3, 3).tolist() == (values == 0).tolist()


def test_plot_forgetting_has_a_bar_per_method_and_forgotten_class(history):
    figure = viz.plot_forgetting({"ft": history, "other": history}, NAMES)
    ax = figure.axes[0]
    assert len(ax.patches) == 2 * 4  # channels 0-3 were seen before the last step
    heights = [patch.get_height() for patch in ax.patches[:4]]
    assert heights == pytest.approx([20, 70, 40, 40])  # best earlier IoU - final IoU, in points


def test_plots_draw_into_a_given_axes_and_leave_it_open(history):
    figure, ax = plt.subplots()
    try:
        assert viz.plot_history(history, ax=ax) is figure
        assert plt.fignum_exists(figure.number)
    finally:
        plt.close(figure)
