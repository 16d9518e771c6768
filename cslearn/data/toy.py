"""A procedural toy segmentation dataset that makes continual-learning effects visible on a CPU.

Twenty object classes plus background, like Pascal VOC, so every VOC task name (15-5, 15-1,
10-1, 19-1...) works unchanged. Class c in 1..10 is a solid blob of colour c; class c + 10 is a
*striped* blob of the same colour. Telling the two apart needs spatial context (a receptive
field wider than a stripe), and new classes of the standard tasks (16-20, striped) look like
old ones (6-10, solid): as on VOC, where a cow resembles a sheep, the background shift and
forgetting have something to act on.

Images hold one to three objects of different classes on a cluttered background, so images
share classes across steps and the overlapped and disjoint settings select different images.
Object borders are void (255), as on VOC. Everything is a deterministic function of the seed.
Taught in `01_segmentation_refresher` and `02_the_continual_protocol`.
"""
from __future__ import annotations

import functools

import numpy as np
import torch
from PIL import Image

COLOURS = {  # name -> RGB in [0, 1]; chosen to be far apart in hue
    "red": (0.9, 0.1, 0.1), "orange": (1.0, 0.55, 0.0), "yellow": (0.95, 0.9, 0.1),
    "lime": (0.55, 0.95, 0.2), "green": (0.05, 0.55, 0.15), "teal": (0.0, 0.6, 0.6),
    "cyan": (0.3, 0.85, 1.0), "blue": (0.1, 0.2, 0.9), "purple": (0.55, 0.15, 0.75),
    "pink": (1.0, 0.45, 0.75),
}
TOY_CLASSES = ["background"] + [f"{name} disc" for name in COLOURS] + [f"{name} stripes" for name in COLOURS]
NUM_OBJECTS_PROBABILITIES = (0.45, 0.35, 0.20)  # one, two or three objects per image
SPLIT_SEEDS = {"train": 0, "val": 1}
DEFAULT_SIZES = {"train": 2000, "val": 400}


class ToySegmentation:
    """The toy dataset with the raw-reader interface of VOCSegmentation / ADE20KSegmentation.

    `dataset[i]` is `(PIL RGB image, PIL "L" mask)`; `read_mask(i)` the uint8 mask as an array.
    All images are rendered at the first construction (a second for 2,000 images at 64x64) and
    shared, read-only, by later instances with the same split, size, count and seed.
    """

    name = "toy"
    num_classes = 21
    class_names = TOY_CLASSES
    class0_is_other = False

    def __init__(self, split: str = "train", num_images: int | None = None, image_size: int = 64,
                 seed: int = 0) -> None:
        if split not in SPLIT_SEEDS:
            raise ValueError(f"toy split must be 'train' or 'val', got {split!r}")
        self.split = split
        self.image_size = image_size
        count = DEFAULT_SIZES[split] if num_images is None else num_images
        self.images, self.masks = _render_split(split, count, image_size, seed)  # (N, S, S, 3), (N, S, S) uint8
        self.ids = [f"toy_{split}_{index:05d}" for index in range(count)]

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> tuple[Image.Image, Image.Image]:
        return Image.fromarray(self.images[index]), Image.fromarray(self.masks[index], mode="L")

    def read_mask(self, index: int) -> np.ndarray:
        return self.masks[index]


@functools.lru_cache(maxsize=4)
def _render_split(split: str, count: int, image_size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """All images and masks of a split, rendered once per process: a notebook that trains ten runs
    would otherwise render the same 1,200 images ten times (0.7 s each). Read-only, as they are shared."""
    rng = np.random.default_rng([seed, SPLIT_SEEDS[split]])
    rendered = [render_image(rng, image_size) for _ in range(count)]
    images = np.stack([image for image, _ in rendered])  # (N, S, S, 3) uint8
    masks = np.stack([mask for _, mask in rendered])  # (N, S, S) uint8
    images.flags.writeable = masks.flags.writeable = False
    return images, masks


def render_image(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """One image (size, size, 3) uint8 and its mask (size, size) uint8."""
    image = _clutter(rng, size)  # (S, S, 3) float in [0, 1]
    mask = np.zeros((size, size), dtype=np.uint8)
    num_objects = rng.choice(len(NUM_OBJECTS_PROBABILITIES), p=NUM_OBJECTS_PROBABILITIES) + 1
    classes = rng.choice(np.arange(1, 21), size=num_objects, replace=False)
    rows, cols = np.mgrid[0:size, 0:size].astype(np.float32)  # (S, S) pixel coordinates
    for class_id in classes:
        inside = _random_shape(rng, rows, cols, size)
        image[inside] = _appearance(rng, int(class_id), rows, cols)[inside]
        mask[inside] = class_id  # later objects occlude earlier ones
    _void_borders(mask)
    noisy = image + 0.04 * rng.standard_normal(image.shape, dtype=np.float32)
    return (np.clip(noisy, 0, 1) * 255).astype(np.uint8), mask


def _clutter(rng: np.random.Generator, size: int) -> np.ndarray:
    """Background: smooth, desaturated colour noise (upsampled 8x8 random field)."""
    coarse = rng.uniform(0.15, 0.75, (8, 8, 1)) + rng.uniform(-0.08, 0.08, (8, 8, 3))
    field = torch.from_numpy(coarse.transpose(2, 0, 1)[None]).float()  # (1, 3, 8, 8)
    smooth = torch.nn.functional.interpolate(field, size=(size, size), mode="bilinear", align_corners=False)
    return smooth[0].permute(1, 2, 0).numpy()  # (S, S, 3) float32


def _random_shape(rng: np.random.Generator, rows: np.ndarray, cols: np.ndarray, size: int) -> np.ndarray:
    """A random ellipse or rectangle, rotated, 15-40% of the image side across."""
    centre_row, centre_col = rng.uniform(0.15, 0.85, 2) * size
    half_height, half_width = rng.uniform(0.08, 0.22, 2) * size
    angle = rng.uniform(0, np.pi)
    u = (rows - centre_row) * np.cos(angle) + (cols - centre_col) * np.sin(angle)
    v = -(rows - centre_row) * np.sin(angle) + (cols - centre_col) * np.cos(angle)
    if rng.random() < 0.5:
        return (u / half_height) ** 2 + (v / half_width) ** 2 <= 1.0
    return (np.abs(u) <= half_height) & (np.abs(v) <= half_width)


def _appearance(rng: np.random.Generator, class_id: int, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """The class's colour, brightness-jittered; classes 11-20 carry stripes of random angle."""
    colour = np.array(list(COLOURS.values())[(class_id - 1) % 10], dtype=np.float32) * rng.uniform(0.8, 1.1)
    shading = np.ones_like(rows)
    if class_id > 10:
        angle, period = rng.uniform(0, np.pi), rng.uniform(4.0, 6.0)
        phase = (rows * np.cos(angle) + cols * np.sin(angle)) * (2 * np.pi / period)
        shading = 0.55 + 0.45 * np.sign(np.sin(phase)).astype(np.float32)  # dark and bright bands
    return np.clip(colour[None, None, :] * shading[..., None], 0, 1)  # (S, S, 3)


def _void_borders(mask: np.ndarray) -> None:
    """Mark object boundary pixels 255 in place, like VOC's void outlines."""
    padded = np.pad(mask, 1, mode="edge")
    differs = np.zeros(mask.shape, dtype=bool)
    for d_row, d_col in ((0, 1), (2, 1), (1, 0), (1, 2)):
        neighbour = padded[d_row:d_row + mask.shape[0], d_col:d_col + mask.shape[1]]
        differs |= neighbour != mask
    mask[differs & (mask > 0)] = 255
