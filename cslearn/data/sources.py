"""Opening the data of a run: raw datasets, cached label sets, per-step loaders.

`open_step_data(config.data)` does the expensive parts once per run (rendering the toy set or
indexing the masks of VOC / ADE20K); `train_loader` and `test_loader` then build the dataset of
any step in milliseconds.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import torch
from torch.utils.data import DataLoader

from cslearn.config import DataConfig
from cslearn.data.errors import DatasetError
from cslearn.data.incremental import IncrementalSegmentation, default_cache_dir, label_sets
from cslearn.data.mib_index import load_mib_index, mib_index_path
from cslearn.data.toy import ToySegmentation
from cslearn.data.transforms import eval_transform, train_transform
from cslearn.protocol import Conventions, Task


def open_raw(data: DataConfig, split: str):
    """The raw reader of `data.dataset` for split "train" or "val"."""
    if data.dataset == "toy":
        count = data.toy_train_images if split == "train" else data.toy_val_images
        return ToySegmentation(split, num_images=count)
    if data.root is None:
        raise ValueError(f"dataset '{data.dataset}' needs a root folder: pass --root DIR "
                         f"(get the data with `python -m cslearn data download {data.dataset} --root DIR`)")
    if data.dataset == "voc":
        from cslearn.data.voc import VOCSegmentation
        return VOCSegmentation(data.root, split)
    if data.dataset == "ade":
        from cslearn.data.ade import ADE20KSegmentation
        return ADE20KSegmentation(data.root, split)
    raise ValueError(f"unknown dataset '{data.dataset}': choose toy, voc or ade")


class StepData:
    """Raw train/val datasets with their label sets, and the recipe to build step loaders."""

    def __init__(self, data: DataConfig) -> None:
        self.config = data
        self.raw_train, self.raw_val = open_raw(data, "train"), open_raw(data, "val")
        cache_dir = default_cache_dir(Path(data.root)) if data.root and data.dataset != "toy" else None
        self.presence_train = label_sets(self.raw_train, cache_dir)  # (N_train, num_classes) bool
        self.presence_val = label_sets(self.raw_val, cache_dir)  # (N_val, num_classes) bool
        self.conventions = Conventions(data.train_void, data.test_future, data.ade_class0, data.background_in_mean)
        self.train_transform = train_transform(data.crop_size)
        self.eval_transform = eval_transform(data.crop_size, data.eval_mode)

    def train_dataset(self, task: Task, step: int) -> IncrementalSegmentation:
        indices = self._published_indices(task, step)
        return IncrementalSegmentation(self.raw_train, task, step, "train", self.train_transform,
                                       self.config.setting, self.conventions, self.presence_train, indices)

    def test_dataset(self, task: Task, step: int) -> IncrementalSegmentation:
        return IncrementalSegmentation(self.raw_val, task, step, "test", self.eval_transform,
                                       conventions=self.conventions, presence=self.presence_val)

    def train_loader(self, task: Task, step: int, batch_size: int, seed: int = 0) -> DataLoader:
        dataset = self.train_dataset(task, step)
        if len(dataset) == 0:
            raise ValueError(f"step {step} of {task.dataset} {task.name} ({self.config.setting}) has no "
                             f"training images: check the dataset root and the class order")
        return DataLoader(dataset, batch_size=batch_size, shuffle=True,
                          generator=torch.Generator().manual_seed(seed),
                          drop_last=len(dataset) >= batch_size, num_workers=self.config.num_workers,
                          pin_memory=torch.cuda.is_available())

    def test_loader(self, task: Task, step: int, batch_size: int) -> DataLoader:
        batch_size = batch_size if self.config.eval_mode == "center_crop" else 1  # whole images differ in size
        return DataLoader(self.test_dataset(task, step), batch_size=batch_size, shuffle=False,
                          num_workers=self.config.num_workers, pin_memory=torch.cuda.is_available())

    def _published_indices(self, task: Task, step: int) -> Optional[np.ndarray]:
        """MiB's shipped per-step index files, when `index_dir` is set.

        VOC: `<task>[-ov]/train-<step>.npy` by the setting. ADE20K: MiB's fixed partition
        `<task>/train-<step>.npy` (no `-ov`), whatever the setting, since it cannot be regenerated.
        A missing file is an error, never a silent fallback to computed lists.
        """
        if self.config.index_dir is None or task.name in ("offline", "joint"):
            return None
        if getattr(self.raw_train, "layout", None) == "voc":
            raise DatasetError("MiB's index files are positions in train_aug.txt, but this VOC folder has only "
                               "ImageSets/Segmentation/train.txt; add the SBD train_aug list and masks")
        overlapped = self.config.setting == "overlapped" and task.dataset != "ade"
        path = mib_index_path(Path(self.config.index_dir), task.name, step, overlapped=overlapped)
        if not path.exists():
            raise DatasetError(f"--index-dir is set but {path} does not exist; MiB ships files for VOC 19-1, "
                               f"15-5, 15-1 and ADE 100-50, 100-10, 50-50: drop --index-dir for other tasks")
        return load_mib_index(path, len(self.raw_train))


def open_step_data(data: DataConfig) -> StepData:
    return StepData(data)
