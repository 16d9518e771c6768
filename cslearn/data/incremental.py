"""From a raw dataset to the dataset of one step: image selection + label remapping + transform.

Per-image label sets are computed once per raw dataset (one pass over its masks) and cached
next to the data, not once per task and step. Selection and remapping are the pure functions
of `cslearn.protocol`. Taught in `02_the_continual_protocol`.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Optional, Protocol, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from cslearn.protocol import (Conventions, Task, label_set_matrix, remap_lookup, select_images,
                              select_test_images)

PairTransform = Callable[[object, np.ndarray], tuple[torch.Tensor, torch.Tensor]]


class RawDataset(Protocol):
    """What the readers (VOC, ADE20K, toy) provide."""

    name: str
    num_classes: int
    class0_is_other: bool
    ids: list[str]

    def __len__(self) -> int: ...
    def __getitem__(self, index: int) -> tuple[object, object]: ...
    def read_mask(self, index: int) -> np.ndarray: ...


def label_sets(raw: RawDataset, cache_dir: Optional[Path] = None) -> np.ndarray:
    """(num_images, num_classes) bool: the classes present in each image (0 and 255 excluded).

    With `cache_dir`, the matrix is stored there as `labelsets-<name>-<split>-<hash>.npy`
    (the hash covers the image ids, so a changed list is recomputed) and reused afterwards.
    """
    cache_file = None
    if cache_dir is not None:
        digest = hashlib.sha1("\n".join(raw.ids).encode()).hexdigest()[:12]
        split = getattr(raw, "split", "all")
        cache_file = Path(cache_dir) / f"labelsets-{raw.name}-{split}-{digest}.npy"
        if cache_file.exists():
            cached = np.load(cache_file, allow_pickle=False)
            if cached.shape == (len(raw), raw.num_classes) and cached.dtype == bool:
                return cached
    # Decoding PNGs releases the GIL, so threads give a real speed-up on the first pass.
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        uniques = list(pool.map(lambda index: np.unique(raw.read_mask(index)), range(len(raw))))
    matrix = label_set_matrix(uniques, raw.num_classes)
    if cache_file is not None:
        _save_atomically(cache_file, matrix)
    return matrix


def default_cache_dir(root: Optional[Path]) -> Optional[Path]:
    """`<root>/.cslearn-cache` when the dataset folder is writable, else ~/.cache/cslearn."""
    if root is None:
        return None
    candidate = Path(root) / ".cslearn-cache"
    try:
        candidate.mkdir(parents=True, exist_ok=True)
        return candidate
    except OSError:
        fallback = Path.home() / ".cache" / "cslearn" / hashlib.sha1(str(root).encode()).hexdigest()[:12]
        fallback.mkdir(parents=True, exist_ok=True)
        return fallback


class IncrementalSegmentation(Dataset):
    """The images and remapped targets of one step of a task.

    split "train": the step's training images (overlapped / disjoint selection, or the given
    `indices`, e.g. MiB's published index files), labels remapped with the background shift.
    split "val": val images containing a new class, old and future classes ignored.
    split "test": val images containing a seen class, labels of all seen classes.
    Items are `(image (3, H, W) float, target (H, W) int64)`.
    """

    def __init__(self, raw: RawDataset, task: Task, step: int, split: str, transform: PairTransform,
                 setting: str = "overlapped", conventions: Conventions = Conventions(),
                 presence: Optional[np.ndarray] = None, indices: Optional[Sequence[int]] = None) -> None:
        self.raw, self.task, self.step, self.split = raw, task, step, split
        self.transform = transform
        self.lookup = remap_lookup(task, step, split, conventions, raw.class0_is_other)  # (256,) uint8
        if indices is None:
            presence = label_sets(raw) if presence is None else presence
            if split == "train":
                indices = select_images(presence, task, step, setting)
            elif split == "val":
                indices = select_images(presence, task, step, "overlapped")
            else:
                indices = select_test_images(presence, task, step)
        self.indices = np.asarray(indices, dtype=np.int64)
        self.augmentation_seed: Optional[int] = None  # set per epoch for reproducible augmentations

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, position: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, mask = self.raw[int(self.indices[position])]
        target = self.lookup[np.asarray(mask)]  # (H, W) uint8, a vectorised lookup
        if self.augmentation_seed is None:
            return self.transform(image, target)
        # Random draws depend on (epoch seed, image) only: the same in any worker or process.
        # Only the CPU generator is seeded (the transforms draw from it): torch.manual_seed would
        # also seed every accelerator backend, which costs more than the transform itself.
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(self.augmentation_seed * 1_000_003 + int(self.indices[position]))
            return self.transform(image, target)


def _save_atomically(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, suffix=".npy.tmp")
    with os.fdopen(handle, "wb") as stream:
        np.save(stream, array, allow_pickle=False)
    os.replace(temporary, path)
