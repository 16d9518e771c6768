"""Images and label maps: colourised masks (`colorize`), images as RGB (`to_rgb`), masks tinted
over images (`overlay`), grids of image / ground truth / predictions (`show_predictions`, from
`00_welcome_and_setup` and `01_segmentation_refresher` on, and in 12 and 13), label maps beside
per-pixel scalar maps such as UCD's uncertainty weight or PLOP's entropy (`show_pixel_maps`,
notebooks 08 and 09), and room below the axes for a long class legend (`make_room_for_legend`,
ADE20K in notebooks 12 and 13).
"""
from __future__ import annotations

from typing import Mapping, Optional, Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from cslearn.protocol import IGNORE_INDEX  # the one definition of the ignore label
from cslearn.viz.base import IMAGENET_MEAN, IMAGENET_STD, PaletteLike, _numpy, _palette


def colorize(mask, palette: PaletteLike = "toy") -> np.ndarray:
    """(H, W) integer labels (array or tensor, 255 = ignore) -> (H, W, 3) uint8 colours."""
    labels = _numpy(mask).astype(np.int64)
    colours = _palette(palette)
    if labels.min(initial=0) < 0 or labels.max(initial=0) >= len(colours):
        raise ValueError(f"mask values must lie in 0..{len(colours) - 1}, got {labels.min()}..{labels.max()}")
    return colours[labels]


def to_rgb(image, normalized: Optional[bool] = None) -> np.ndarray:
    """An image as (H, W, 3) float in [0, 1] from a PIL image, an (H, W, 3) uint8 array or a
    (3, H, W) float tensor. `normalized` says whether the tensor carries ImageNet normalisation
    (the training transforms); None guesses it from values outside [0, 1]."""
    array = _numpy(image)
    if array.ndim == 3 and array.shape[0] == 3 and array.shape[-1] != 3:
        array = array.transpose(1, 2, 0)  # (3, H, W) -> (H, W, 3)
    if array.dtype == np.uint8:
        return array.astype(np.float32) / 255
    array = array.astype(np.float32)
    if normalized is None:
        normalized = bool(array.min() < 0 or array.max() > 1)
    if normalized:
        array = array * np.array(IMAGENET_STD, dtype=np.float32) + np.array(IMAGENET_MEAN, dtype=np.float32)
    return np.clip(array, 0, 1)


def overlay(image, mask, palette: PaletteLike = "toy", alpha: float = 0.6) -> np.ndarray:
    """The image with every labelled pixel (not background 0, not ignore 255) tinted by the
    colour of its class; (H, W, 3) float in [0, 1]."""
    rgb = to_rgb(image)
    labels = _numpy(mask)
    colours = colorize(labels, palette).astype(np.float32) / 255
    tinted = (labels != 0) & (labels != IGNORE_INDEX)
    blended = rgb.copy()
    blended[tinted] = (1 - alpha) * rgb[tinted] + alpha * colours[tinted]
    return blended


def show_predictions(images, targets, predictions, class_names: Sequence[str], palette: PaletteLike = "toy",
                     overlay_alpha: Optional[float] = None, size: float = 2.0,
                     target_title: str = "ground truth") -> Figure:
    """A grid: one row per image; columns image, ground truth, then each prediction.

    images: (B, 3, H, W) tensors (normalised or not), or a list of PIL images / arrays.
    targets, predictions: (B, H, W) labels; predictions may be {column title: (B, H, W)} to
    compare models side by side, or {} to show the label maps only. With `overlay_alpha`, masks
    are drawn over the image instead of on their own. The legend lists the classes present.
    """
    columns = dict(predictions) if isinstance(predictions, Mapping) else {"prediction": predictions}
    masks = {target_title: targets, **columns}
    count = len(images)
    figure, axes = plt.subplots(count, 1 + len(masks), figsize=(size * (1 + len(masks)), size * count + 0.6),
                                squeeze=False)
    present: set[int] = set()
    for row in range(count):
        axes[row, 0].imshow(to_rgb(images[row]))
        for column, (title, batch) in enumerate(masks.items(), start=1):
            mask = _numpy(batch[row])
            present.update(int(value) for value in np.unique(mask) if value != IGNORE_INDEX)
            picture = overlay(images[row], mask, palette, overlay_alpha) if overlay_alpha else colorize(mask, palette)
            axes[row, column].imshow(picture, interpolation="nearest")
        for column, title in enumerate(["image", *masks]):
            axes[row, column].set_xticks([])
            axes[row, column].set_yticks([])
            if row == 0:
                axes[row, column].set_title(title, fontsize=9)
    colours = _palette(palette)
    handles = [Patch(color=colours[label] / 255, label=class_names[label]) for label in sorted(present)]
    figure.legend(handles=handles, loc="lower center", ncol=min(len(handles), 5), fontsize=8, frameon=False)
    figure.tight_layout(rect=(0, 0.1 if count < 3 else 0.06, 1, 1))
    plt.close(figure)
    return figure


def show_pixel_maps(images=None, masks: Optional[Mapping[str, object]] = None,
                    scalars: Optional[Mapping[str, object]] = None, class_names: Optional[Sequence[str]] = None,
                    palette: PaletteLike = "toy", ranges: Optional[Mapping[str, tuple[float, float]]] = None,
                    cmap: str = "magma", size: float = 2.2) -> Figure:
    """One row per image: the image, then label maps, then scalar maps with a colour bar each.

    images:  (B, 3, H, W) or (3, H, W) tensor (normalised or not), a list of images, or None.
    masks:   {column title: (B, h, w) or (h, w) labels} (255 = ignore), any resolution, colourised.
    scalars: {column title: (B, h, w) or (h, w) float maps}; NaN marks pixels where the quantity is
             not defined (drawn light grey). `ranges` {title: (vmin, vmax)} fixes a colour scale,
             else each column uses its finite min and max over all rows.
    E.g. UCD's uncertainty weight beside the labels (08), PLOP's entropy beside its pseudo-labels
    (09). The legend lists the classes present in the masks when `class_names` is given.
    """
    masks, scalars, ranges = dict(masks or {}), dict(scalars or {}), dict(ranges or {})

    def batched(value, image_like: bool = False) -> list:
        array = value if isinstance(value, (list, tuple)) else _numpy(value)
        if isinstance(array, np.ndarray) and array.ndim == (3 if image_like else 2):
            return [array]  # a single map / image
        return list(array)

    image_rows = batched(images, image_like=True) if images is not None else None
    mask_rows = {title: batched(value) for title, value in masks.items()}
    scalar_rows = {title: [np.asarray(row, dtype=np.float64) for row in batched(value)]
                   for title, value in scalars.items()}
    counts = {len(rows) for rows in [*([image_rows] if image_rows is not None else []), *mask_rows.values(),
                                     *scalar_rows.values()]}
    if len(counts) != 1:
        raise ValueError(f"images, masks and scalar maps must have the same number of rows, got {sorted(counts)}")
    count = counts.pop()
    titles = (["image"] if image_rows is not None else []) + list(mask_rows) + list(scalar_rows)
    figure, axes = plt.subplots(count, len(titles), figsize=(size * len(titles) + 0.4 * len(scalar_rows),
                                                             size * count + 0.7), squeeze=False)
    colours = _palette(palette)
    present: set[int] = set()
    colour_map = plt.get_cmap(cmap).with_extremes(bad="lightgrey")
    limits = {}
    for title, rows in scalar_rows.items():
        finite = np.concatenate([row[np.isfinite(row)] for row in rows])
        limits[title] = ranges.get(title, (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0))
    for row in range(count):
        column = 0
        if image_rows is not None:
            axes[row, 0].imshow(to_rgb(image_rows[row]))
            column = 1
        for title, rows in mask_rows.items():
            mask = _numpy(rows[row]).astype(np.int64)
            present.update(int(value) for value in np.unique(mask) if value != IGNORE_INDEX)
            axes[row, column].imshow(colorize(mask, palette), interpolation="nearest")
            column += 1
        for title, rows in scalar_rows.items():
            vmin, vmax = limits[title]
            picture = axes[row, column].imshow(np.ma.masked_invalid(rows[row]), cmap=colour_map, vmin=vmin,
                                               vmax=vmax, interpolation="nearest")
            figure.colorbar(picture, ax=axes[row, column], fraction=0.046, pad=0.04)
            column += 1
        for column, title in enumerate(titles):
            axes[row, column].set_xticks([])
            axes[row, column].set_yticks([])
            if row == 0:
                axes[row, column].set_title(title, fontsize=9)
    bottom = 0.0
    if class_names is not None and present:
        handles = [Patch(color=colours[label] / 255, label=class_names[label]) for label in sorted(present)]
        figure.legend(handles=handles, loc="lower center", ncol=min(len(handles), 5), fontsize=8, frameon=False)
        bottom = 0.1 if count < 3 else 0.06
    figure.tight_layout(rect=(0, bottom, 1, 1))
    plt.close(figure)
    return figure


def make_room_for_legend(figure: Figure, pad: float = 0.15) -> Figure:
    """Grow `figure` downwards so that its figure legend (drawn at the bottom by `show_predictions`
    and `show_pixel_maps`) sits below the axes instead of over them: on ADE20K a few images hold
    dozens of classes, more legend rows than those functions leave room for. The axes keep their
    size; `pad` is the gap in inches. Returns the same figure (a figure without legend unchanged)."""
    if not figure.legends:
        return figure
    legend_height = figure.legends[0].get_window_extent().height / figure.dpi  # inches
    height = figure.get_figheight() + legend_height + pad
    figure.set_figheight(height)
    figure.tight_layout(rect=(0, (legend_height + pad) / height, 1, 1))
    return figure
