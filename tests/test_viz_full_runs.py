"""The full-run pictures of `cslearn.viz` (notebooks 12 and 13): several runs' per-class IoU after
their last step, side by side (Agg backend, no display)."""
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
from cslearn.metrics import summarize  # noqa: E402

NAN = float("nan")
NAMES = ["background", "a", "b", "c", "d"]
CLASSES_PER_STEP = [3, 1, 1]  # a 3-1 task on 5 channels


def entry(step: int, iou: list[float], classes_per_step=CLASSES_PER_STEP, report_step: int | None = None) -> dict:
    return {"step": step, "iou": iou, "summary": summarize(iou, classes_per_step, step if report_step is None else report_step),
            "seen_classes": list(range(len(iou)))}


@pytest.fixture(autouse=True)
def no_figures_left_open():
    before = set(plt.get_fignums())
    yield
    assert set(plt.get_fignums()) == before, "a viz function left a pyplot figure open"


@pytest.fixture
def runs():
    incremental = [entry(0, [0.9, 0.8, 0.7]), entry(1, [0.8, 0.4, 0.5, 0.6]), entry(2, [0.7, 0.1, NAN, 0.2, 0.5])]
    joint = [entry(0, [0.95, 0.9, 0.85, 0.8, 0.75], [5], report_step=0)]
    return {"mib": incremental, "joint": joint}


def test_final_iou_table_takes_each_runs_last_step_in_percent(runs):
    table = viz.final_iou_table(runs)
    assert table.shape == (2, 5)
    assert np.allclose(table, [[70, 10, NAN, 20, 50], [95, 90, 85, 80, 75]], equal_nan=True)


def test_final_iou_table_pads_a_run_that_stopped_early(runs):
    table = viz.final_iou_table({"stopped": runs["mib"][:2], "joint": runs["joint"]})
    assert table.shape == (2, 5) and math.isnan(table[0, 4]) and table[0, 3] == pytest.approx(60)


def test_plot_final_class_iou_draws_one_row_per_run_and_the_step0_line(runs):
    figure = viz.plot_final_class_iou(runs, NAMES)
    assert isinstance(figure, Figure)
    ax = figure.axes[0]
    mesh = next(child for child in ax.get_children() if isinstance(child, QuadMesh))
    values = np.ma.filled(mesh.get_array(), np.nan).reshape(2, 5)
    assert np.allclose(values, viz.final_iou_table(runs), equal_nan=True)
    assert [label.get_text() for label in ax.get_yticklabels()] == ["mib", "joint"]
    assert [label.get_text() for label in ax.get_xticklabels()] == NAMES
    assert any(line.get_xdata()[0] == 3 for line in ax.get_lines())  # after the 3 step-0 channels
    assert len(ax.texts) == 9  # annotated: every finite cell


def test_plot_final_class_iou_thins_the_names_of_many_classes():
    width = 151
    iou = [0.5] * width
    history = [entry(0, iou[:101], [101, 50]), entry(1, iou, [101, 50])]
    figure = viz.plot_final_class_iou({"mib": history}, [f"class {c}" for c in range(width)], max_labels=40)
    ax = figure.axes[0]
    labels = [label.get_text() for label in ax.get_xticklabels()]
    assert labels == [f"class {c}" for c in range(0, width, 4)]  # ceil(151 / 40) = 4
    assert len(ax.texts) == 0  # not annotated beyond 30 channels
    assert figure.get_figwidth() <= 18


def test_plot_final_class_iou_draws_into_a_given_axes(runs):
    figure, ax = plt.subplots()
    assert viz.plot_final_class_iou(runs, NAMES, ax=ax) is figure
    plt.close(figure)


def test_make_room_for_legend_moves_a_long_legend_below_the_axes():
    names = [f"class {c}" for c in range(60)]
    images = torch.rand(3, 3, 16, 16)  # (B, 3, H, W)
    targets = torch.arange(3 * 16 * 16).reshape(3, 16, 16) % 60  # (B, H, W): 60 classes present
    figure = viz.show_predictions(images, targets, {"model": targets.flip(-1)}, names, palette="ade")
    legend_top = lambda: figure.legends[0].get_window_extent().y1  # noqa: E731 (pixels)
    axes_bottom = lambda: min(ax.get_window_extent().y0 for ax in figure.axes)  # noqa: E731
    assert legend_top() > axes_bottom()  # the legend of 60 classes covers the lowest row
    width, height = figure.get_size_inches()
    assert viz.make_room_for_legend(figure) is figure
    assert figure.get_figwidth() == width and figure.get_figheight() > height
    assert legend_top() <= axes_bottom()


def test_make_room_for_legend_leaves_a_figure_without_legend_alone():
    figure, _ = plt.subplots(figsize=(3, 2))
    assert viz.make_room_for_legend(figure).get_size_inches().tolist() == [3, 2]
    plt.close(figure)
