"""Pictures of masks, predictions and results: palettes, overlays, prediction grids, history,
per-class IoU, per-term loss and confusion-matrix plots.

Every plotting function returns a matplotlib `Figure` and never calls `plt.show()`. Without an
`ax` argument the figure is created by pyplot and closed at once: a notebook shows it exactly
once when it is the value of the cell (or through `display(fig)`), a script saves it with
`fig.savefig(...)`, and nothing accumulates in pyplot's list of open figures. With `ax=...`
the function draws into that axes and returns its figure, left open. Depends only on
`cslearn.metrics` and `cslearn.palettes` (DESIGN.md). Used from `01_segmentation_refresher` on.

One module per topic, every name re-exported here (`from cslearn import viz; viz.plot_history`):

| module   | draws                                                                  | notebooks                 |
|----------|------------------------------------------------------------------------|---------------------------|
| `images` | colourised masks, overlays, prediction grids, pixel maps, legend room  | 00-04, 08, 09, 12, 13     |
| `curves` | mIoU per step, per-class IoU, forgetting, losses, confusion, full runs | 01, 03, 04, 06-10, 12, 13 |
| `latent` | features per class, PCA scatter plots, prototype similarity and drift  | 06, 07                    |
| `ucd`    | UCD's per-pixel uncertainty weights and contrast matrix                | 08                        |
| `base`   | nothing: constants, type aliases and the helpers the others share      |                           |
"""
from __future__ import annotations

from cslearn.protocol import IGNORE_INDEX  # the one definition of the ignore label
from cslearn.viz.base import GROUP_TITLES, IMAGENET_MEAN, IMAGENET_STD, History, PaletteLike
from cslearn.viz.curves import (final_iou_table, iou_table, plot_class_iou_heatmap, plot_confusion,
                                plot_final_class_iou, plot_forgetting, plot_history, plot_losses)
from cslearn.viz.images import colorize, make_room_for_legend, overlay, show_pixel_maps, show_predictions, to_rgb
from cslearn.viz.latent import (collect_class_features, cosine_similarity_matrix, pca_basis, pca_project,
                                plot_latent_space, plot_prototype_drift, plot_prototype_similarity, prototype_drift)
from cslearn.viz.ucd import plot_contrast_matrix, ucd_pixel_weights

__all__ = [
    "GROUP_TITLES", "IGNORE_INDEX", "IMAGENET_MEAN", "IMAGENET_STD", "History", "PaletteLike",
    # images
    "colorize", "make_room_for_legend", "overlay", "show_pixel_maps", "show_predictions", "to_rgb",
    # curves
    "final_iou_table", "iou_table", "plot_class_iou_heatmap", "plot_confusion", "plot_final_class_iou",
    "plot_forgetting", "plot_history", "plot_losses",
    # latent
    "collect_class_features", "cosine_similarity_matrix", "pca_basis", "pca_project", "plot_latent_space",
    "plot_prototype_drift", "plot_prototype_similarity", "prototype_drift",
    # ucd
    "plot_contrast_matrix", "ucd_pixel_weights",
]
