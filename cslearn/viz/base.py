"""Shared pieces of `cslearn.viz`, drawing nothing themselves: the ImageNet statistics and group
titles, the `History` and `PaletteLike` type aliases, and the small helpers that every drawing
module (`images`, `curves`, `latent`, `ucd`) imports: a palette from its name, any array or tensor
as numpy, and a figure that is either created and closed at once or drawn into a given axes.
"""
from __future__ import annotations

from typing import Sequence, Union

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure

from cslearn.palettes import get_palette

# ImageNet statistics, the normalisation of `cslearn.data.transforms` (a test checks they agree).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
GROUP_TITLES = {"old": "old classes", "new": "new classes", "all": "all classes",
                "old_bg": "old classes + background", "all_bg": "all classes + background"}

History = Sequence[dict]
PaletteLike = Union[str, np.ndarray]


def _palette(palette: PaletteLike) -> np.ndarray:
    return get_palette(palette) if isinstance(palette, str) else np.asarray(palette, dtype=np.uint8)


def _numpy(array) -> np.ndarray:
    return array.detach().cpu().numpy() if isinstance(array, torch.Tensor) else np.asarray(array)


def _new_figure(ax, figsize) -> tuple[Figure, "plt.Axes", bool]:
    if ax is not None:
        return ax.figure, ax, False
    figure, ax = plt.subplots(figsize=figsize)
    return figure, ax, True


def _finish(figure: Figure, created: bool) -> Figure:
    if created:
        figure.tight_layout()
        plt.close(figure)  # shown once as the cell's value, never again at the end of the cell
    return figure
