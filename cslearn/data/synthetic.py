"""Generated VOC and ADE20K folders in the exact on-disk formats of the real datasets.

Neither dataset can be redistributed or downloaded in tests, so tests, notebooks and benchmarks write
small real datasets instead: JPEG images, PNG class-index masks and list files where the real ones
live (the MiB protocol, "Datasets on disk"). Nothing is mocked: the readers open them like the real
thing. Each object is an ellipse filled with its class colour plus noise, so a model can learn the
classes from the images.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from .voc import VOC_PALETTE

_VOC_SPLIT_PREFIX = {"train": "2011", "val": "2007"}


def _paint_objects(size: tuple[int, int], classes: Sequence[int], max_objects: int, void_border: bool,
                   rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Ellipses of random classes on background 0.

    Returns (mask, appearance): the mask may carry a 255 ring around each object (VOC's void borders);
    the appearance holds the class whose colour each pixel gets (the ring looks like its object).
    """
    height, width = size
    rows, cols = np.ogrid[:height, :width]  # (H, 1), (1, W)
    mask = np.zeros(size, dtype=np.uint8)  # (H, W)
    appearance = np.zeros(size, dtype=np.uint8)  # (H, W)
    for _ in range(int(rng.integers(1, max_objects + 1))):
        label = int(rng.choice(classes))
        center_row, center_col = rng.uniform(0.2, 0.8) * height, rng.uniform(0.2, 0.8) * width
        radius_row, radius_col = rng.uniform(0.12, 0.35) * height, rng.uniform(0.12, 0.35) * width
        distance = ((rows - center_row) / radius_row) ** 2 + ((cols - center_col) / radius_col) ** 2  # (H, W)
        inside = distance <= 1.0
        if void_border:
            ring = (distance <= 1.3) & ~inside
            mask[ring] = 255
            appearance[ring] = label
        mask[inside] = label
        appearance[inside] = label
    if not np.isin(mask, classes).any():  # later objects covered every earlier one's label: keep one
        label = int(classes[0])
        mask[height // 3: 2 * height // 3, width // 3: 2 * width // 3] = label
        appearance[height // 3: 2 * height // 3, width // 3: 2 * width // 3] = label
    return mask, appearance


def _render_image(appearance: np.ndarray, colors: np.ndarray, rng: np.random.Generator) -> Image.Image:
    """Class colour per pixel plus Gaussian noise, as an RGB image."""
    pixels = colors[appearance].astype(np.float32)  # (H, W, 3)
    pixels += rng.normal(0.0, 20.0, size=pixels.shape).astype(np.float32)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def _save_mask(mask: np.ndarray, path: Path, mask_mode: str) -> None:
    image = Image.fromarray(mask)  # mode "L"
    if mask_mode == "P":
        image.putpalette(VOC_PALETTE.tobytes())  # turns the "L" image into a palette image, same indices
    image.save(path)


def _voc_colors() -> np.ndarray:
    """Image colours per class: VOC colours, with background mid-grey so objects stand out."""
    colors = VOC_PALETTE.astype(np.float32).copy()
    colors[0] = (110, 110, 110)
    return colors


def make_voc_folder(root: str | Path, num_train: int = 16, num_val: int = 8,
                    size: tuple[int, int] = (96, 128), layout: str = "mib", mask_mode: str = "P",
                    final_newline: bool = True, seed: int = 0, void_border: bool = True,
                    classes: Sequence[int] = tuple(range(1, 21)), max_objects: int = 3) -> Path:
    """Write a VOC-aug folder in MiB's or PLOP's layout and return ``root`` (what readers take).

    ``size`` is (height, width). ``mask_mode`` "P" writes palette PNGs with the VOC colour map (like
    the VOC devkit), "L" greyscale PNGs (like the DeepLab zip); both hold the same indices.
    ``final_newline=False`` reproduces list copies without a newline after the last line.
    """
    if layout not in ("mib", "plop"):
        raise ValueError(f"layout must be 'mib' or 'plop', got {layout!r}")
    if mask_mode not in ("P", "L"):
        raise ValueError(f"mask_mode must be 'P' or 'L', got {mask_mode!r}")
    root = Path(root)
    if layout == "mib":
        image_dir = root / "PascalVOC12" / "JPEGImages"
        mask_dir = root / "PascalVOC12" / "SegmentationClassAug"
        list_dir = root / "PascalVOC12" / "splits"
    else:
        image_dir = root / "VOCdevkit" / "VOC2012" / "JPEGImages"
        mask_dir = root / "SegmentationClassAug"
        list_dir = root / "list"
    for folder in (image_dir, mask_dir, list_dir):
        folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    colors = _voc_colors()
    for split, count, list_name in (("train", num_train, "train_aug.txt"), ("val", num_val, "val.txt")):
        lines = []
        for index in range(count):
            image_id = f"{_VOC_SPLIT_PREFIX[split]}_{index:06d}"
            mask, appearance = _paint_objects(size, classes, max_objects, void_border, rng)
            _render_image(appearance, colors, rng).save(image_dir / f"{image_id}.jpg", quality=90)
            _save_mask(mask, mask_dir / f"{image_id}.png", mask_mode)
            lines.append(f"/JPEGImages/{image_id}.jpg /SegmentationClassAug/{image_id}.png")
        text = "\n".join(lines) + ("\n" if final_newline and lines else "")
        (list_dir / list_name).write_text(text, encoding="utf-8")
    return root


def make_ade_folder(root: str | Path, num_train: int = 16, num_val: int = 8,
                    size: tuple[int, int] = (96, 128), seed: int = 0, max_objects: int = 4) -> Path:
    """Write an ``ADEChallengeData2016`` folder under ``root`` and return ``root``.

    Masks are greyscale PNGs with 0 ("other") as the backdrop and objects of classes 1-150;
    names follow ``ADE_train_00000001.jpg`` / ``ADE_val_00000001.jpg``.
    """
    base = Path(root) / "ADEChallengeData2016"
    rng = np.random.default_rng(seed)
    colors = np.random.default_rng(12345).integers(0, 256, size=(256, 3)).astype(np.float32)  # fixed per class
    colors[0] = (110, 110, 110)
    classes = tuple(range(1, 151))
    for count, folder, prefix in ((num_train, "training", "ADE_train"), (num_val, "validation", "ADE_val")):
        image_dir, mask_dir = base / "images" / folder, base / "annotations" / folder
        image_dir.mkdir(parents=True, exist_ok=True)
        mask_dir.mkdir(parents=True, exist_ok=True)
        for index in range(1, count + 1):
            stem = f"{prefix}_{index:08d}"
            mask, appearance = _paint_objects(size, classes, max_objects, False, rng)
            _render_image(appearance, colors, rng).save(image_dir / f"{stem}.jpg", quality=90)
            _save_mask(mask, mask_dir / f"{stem}.png", "L")
    return Path(root)
