"""Validate a VOC or ADE20K folder before training: ``python -m cslearn data check``.

A bad file otherwise surfaces hours into a run, inside a DataLoader worker. This check opens both
splits and reports, per split: list entries whose image or mask is missing, masks that fail to decode,
mask values outside ``[0, num_classes) ∪ {255}``, and image/mask size mismatches. Masks are checked
with one ``np.bincount`` each (vectorised); images only have their header read.

It raises `DatasetError` only when the layout itself is unusable (no split can be opened); every other
finding goes to ``report["problems"]`` so that one run lists them all.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from .ade import ADE20KSegmentation
from .errors import DatasetError
from .voc import SegmentationFolder, VOCSegmentation

READERS = {"voc": VOCSegmentation, "ade": ADE20KSegmentation}
STANDARD_SIZES = {"voc": {"train": 10582, "val": 1449}, "ade": {"train": 20210, "val": 2000}}
EXAMPLES_PER_KIND = 10  # problems listed per kind and split; the rest are counted


def _spread(indices: list[int], limit: int | None) -> list[int]:
    """At most ``limit`` indices, evenly spread over the list (the whole list when ``limit`` is None)."""
    if limit is None or limit >= len(indices):
        return indices
    positions = np.linspace(0, len(indices) - 1, num=max(limit, 0)).round().astype(int)
    return [indices[position] for position in np.unique(positions)]


def _check_split(reader: SegmentationFolder, max_masks: int | None) -> tuple[dict, list[str]]:
    """Statistics and problem messages for one split."""
    found: dict[str, list[str]] = {}

    def add(kind: str, message: str) -> None:
        found.setdefault(kind, []).append(message)

    images_present, masks_present = [], []
    for index in range(len(reader)):
        image_path, mask_path = reader.image_path(index), reader.mask_path(index)
        if image_path.is_file():
            images_present.append(index)
        else:
            add("missing images", f"entry {index + 1} ({reader.ids[index]}): missing image {image_path}")
        if mask_path.is_file():
            masks_present.append(index)
        else:
            add("missing masks", f"entry {index + 1} ({reader.ids[index]}): missing mask {mask_path}")
    has_image = set(images_present)

    images_per_class = np.zeros(reader.num_classes, dtype=np.int64)
    checked = without_classes = 0
    for index in _spread(masks_present, max_masks):
        checked += 1
        try:
            mask = reader.read_mask(index)
        except DatasetError as error:
            add("unreadable masks", str(error))
            continue
        present = np.flatnonzero(np.bincount(mask.ravel(), minlength=256))  # the values in the mask
        bad = present[(present >= reader.num_classes) & (present != 255)]
        if bad.size:
            add("masks with values out of range",
                f"mask {reader.mask_path(index)} holds values {bad.tolist()}; valid are "
                f"0..{reader.num_classes - 1} and 255")
        labels = present[present < reader.num_classes]
        images_per_class[labels] += 1
        if not (labels > 0).any():
            without_classes += 1
        if index in has_image:
            try:
                with Image.open(reader.image_path(index)) as image:
                    width, height = image.size  # header only, no decode
            except (OSError, SyntaxError, ValueError) as error:
                add("unreadable images", f"cannot open image {reader.image_path(index)} ({error})")
                continue
            if (height, width) != mask.shape:
                add("size mismatches", f"image {reader.image_path(index)} is {width}x{height} but mask "
                                       f"{reader.mask_path(index)} is {mask.shape[1]}x{mask.shape[0]}")

    duplicates = len(reader.ids) - len(set(reader.ids))
    if duplicates:
        add("duplicate entries", f"{duplicates} image id(s) appear more than once in the list")
    problems = []
    for kind, messages in found.items():
        problems += [f"{reader.split}: {message}" for message in messages[:EXAMPLES_PER_KIND]]
        if len(messages) > EXAMPLES_PER_KIND:
            problems.append(f"{reader.split}: ... and {len(messages) - EXAMPLES_PER_KIND} more {kind}")
    stats = {
        "layout": reader.layout,
        "images": len(reader),
        "masks_checked": checked,
        **{kind.replace(" ", "_"): len(found.get(kind, [])) for kind in (
            "missing images", "missing masks", "unreadable masks", "masks with values out of range",
            "unreadable images", "size mismatches")},
        "duplicate_entries": duplicates,
        "masks_without_classes": without_classes,
        "images_per_class": images_per_class.tolist(),
    }
    return stats, problems


def check_dataset(dataset: str, root: str | Path, max_masks: int | None = None) -> dict:
    """Check both splits of ``dataset`` ("voc" or "ade") under ``root`` and return a report dict.

    ``max_masks`` limits the masks decoded per split (evenly spread; existence is always checked for
    every entry). The report is ``{"dataset", "root", "layout", "splits": {split: stats}, "problems":
    [str], "notes": [str]}`` and JSON-serialisable.
    """
    if dataset not in READERS:
        raise ValueError(f"dataset must be one of {sorted(READERS)}, got {dataset!r}")
    readers: dict[str, SegmentationFolder] = {}
    errors: dict[str, DatasetError] = {}
    for split in ("train", "val"):
        try:
            readers[split] = READERS[dataset](root, split, check_files=False)
        except DatasetError as error:
            errors[split] = error
    if not readers:
        raise errors["train"]
    problems = [f"{split}: cannot open the split: {error}" for split, error in errors.items()]
    notes: list[str] = []
    splits: dict[str, dict] = {}
    for split, reader in readers.items():
        splits[split], split_problems = _check_split(reader, max_masks)
        problems += split_problems
        standard = STANDARD_SIZES[dataset][split]
        if len(reader) != standard:
            notes.append(f"{split} has {len(reader)} images; the standard split has {standard}, so "
                         "published index files and image counts do not apply")
    if len(readers) == 2:
        shared = set(readers["train"].ids) & set(readers["val"].ids)
        if shared:
            problems.append(f"train and val share {len(shared)} image(s) (for example "
                            f"{sorted(shared)[0]}); the standard splits are disjoint")
    layouts = sorted({reader.layout for reader in readers.values()})
    return {"dataset": dataset, "root": str(root), "layout": "+".join(layouts), "splits": splits,
            "problems": problems, "notes": notes}


def format_report(report: dict) -> str:
    """Human-readable text of a `check_dataset` report (what the command line prints)."""
    lines = [f"{report['dataset']} at {report['root']} (layout: {report['layout']})"]
    for split, stats in report["splits"].items():
        counts = ", ".join(f"{key.replace('_', ' ')} {value}" for key, value in stats.items()
                           if key not in ("layout", "images", "masks_checked", "images_per_class"))
        lines.append(f"  {split}: {stats['images']} images, {stats['masks_checked']} masks checked; {counts}")
    lines += [f"note: {note}" for note in report.get("notes", [])]
    if report["problems"]:
        lines.append(f"{len(report['problems'])} problem(s):")
        lines += [f"  - {problem}" for problem in report["problems"]]
    else:
        lines.append("no problems found")
    return "\n".join(lines)
