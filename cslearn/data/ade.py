"""ADE20K (ADEChallengeData2016, SceneParsing-150): the raw reader.

Masks are mode-"L" PNGs with 0 = "other/unlabelled" and 1-150 = the SceneParsing classes; 255 does
not occur. Class 0 is trained as background but handled differently at test time by MiB (ignored)
and PLOP (scored), hence ``class0_is_other = True`` (the MiB protocol, "ADE20K").

An index is a position in the *sorted* listing of ``images/<split>``, the order MiB's shipped ADE
partition refers to (``ADE_train_00000001.jpg`` is index 0).
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import DOWNLOAD_HINT, DatasetError
from .voc import IMAGE_SUFFIXES, SegmentationFolder

ADE_CLASSES: tuple[str, ...] = (
    "other", "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane", "grass",
    "cabinet", "sidewalk", "person", "earth", "door", "table", "mountain", "plant", "curtain", "chair",
    "car", "water", "painting", "sofa", "shelf", "house", "sea", "mirror", "rug", "field", "armchair",
    "seat", "fence", "desk", "rock", "wardrobe", "lamp", "bathtub", "railing", "cushion", "base", "box",
    "column", "signboard", "chest of drawers", "counter", "sand", "sink", "skyscraper", "fireplace",
    "refrigerator", "grandstand", "path", "stairs", "runway", "case", "pool table", "pillow",
    "screen door", "stairway", "river", "bridge", "bookcase", "blind", "coffee table", "toilet", "flower",
    "book", "hill", "bench", "countertop", "stove", "palm", "kitchen island", "computer", "swivel chair",
    "boat", "bar", "arcade machine", "hovel", "bus", "towel", "light", "truck", "tower", "chandelier",
    "awning", "streetlight", "booth", "television receiver", "airplane", "dirt track", "apparel", "pole",
    "land", "bannister", "escalator", "ottoman", "bottle", "buffet", "poster", "stage", "van", "ship",
    "fountain", "conveyer belt", "canopy", "washer", "plaything", "swimming pool", "stool", "barrel",
    "basket", "waterfall", "tent", "bag", "minibike", "cradle", "oven", "ball", "food", "step", "tank",
    "trade name", "microwave", "pot", "animal", "bicycle", "lake", "dishwasher", "screen", "blanket",
    "sculpture", "hood", "sconce", "vase", "traffic light", "tray", "ashcan", "fan", "pier", "crt screen",
    "plate", "monitor", "bulletin board", "shower", "radiator", "glass", "clock", "flag",
)
assert len(ADE_CLASSES) == 151, "ADE_CLASSES must hold 'other' plus the 150 SceneParsing classes"

_SPLIT_FOLDERS = {"train": "training", "val": "validation"}


def _find_base(root: Path) -> Path:
    """``<root>/ADEChallengeData2016``, or ``root`` itself when it is that folder."""
    for base in (root / "ADEChallengeData2016", root):
        if (base / "images").is_dir() and (base / "annotations").is_dir():
            return base
    hint = DOWNLOAD_HINT.format(dataset="ade")
    if not root.is_dir():
        raise DatasetError(f"ADE20K root {root} does not exist or is not a folder; {hint}")
    raise DatasetError(f"no ADE20K data under {root}: expected {root}/ADEChallengeData2016/images/ and "
                       f"{root}/ADEChallengeData2016/annotations/ (or root pointing at the "
                       f"ADEChallengeData2016 folder itself); {hint}")


def _list_files(folder: Path, suffixes: tuple[str, ...]) -> list[str]:
    """Sorted file names with one of ``suffixes`` (hidden files such as .DS_Store are skipped)."""
    with os.scandir(folder) as entries:
        return sorted(entry.name for entry in entries if entry.is_file()
                      and not entry.name.startswith(".") and entry.name.lower().endswith(suffixes))


class ADE20KSegmentation(SegmentationFolder):
    """ADE20K split "train" (``training``, 20,210 images) or "val" (``validation``, 2,000, the test set).

    ``check_files`` requires a mask for every image (one directory listing, no per-file stat);
    `check_dataset` turns it off to report missing masks instead of raising.
    """

    name = "ade"
    num_classes = 151
    class_names = ADE_CLASSES
    class0_is_other = True

    def __init__(self, root: str | Path, split: str, check_files: bool = True) -> None:
        if split not in _SPLIT_FOLDERS:
            raise ValueError(f"split must be 'train' or 'val', got {split!r}")
        root = Path(root).expanduser()
        base = _find_base(root)
        folder = _SPLIT_FOLDERS[split]
        image_dir, mask_dir = base / "images" / folder, base / "annotations" / folder
        for path in (image_dir, mask_dir):
            if not path.is_dir():
                raise DatasetError(f"missing folder {path}; the ADE20K archive is incomplete: "
                                   f"{DOWNLOAD_HINT.format(dataset='ade')}")
        image_names = _list_files(image_dir, IMAGE_SUFFIXES)
        if not image_names:
            raise DatasetError(f"no images in {image_dir}; {DOWNLOAD_HINT.format(dataset='ade')}")
        ids = [Path(name).stem for name in image_names]
        super().__init__(root, split, "ade", ids, [image_dir / name for name in image_names],
                         [mask_dir / f"{image_id}.png" for image_id in ids])
        if check_files:
            available = set(_list_files(mask_dir, (".png",)))
            missing = [f"{image_id}.png" for image_id in ids if f"{image_id}.png" not in available]
            if missing:
                shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
                raise DatasetError(
                    f"{len(missing)} image(s) in {image_dir} have no mask in {mask_dir}: {shown}; every "
                    f"image needs <stem>.png next to it in annotations/: "
                    f"{DOWNLOAD_HINT.format(dataset='ade')}")
