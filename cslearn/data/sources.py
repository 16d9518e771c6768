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
from torch.utils.data import DataLoader, Sampler, Subset

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

    def train_loader(self, task: Task, step: int, batch_size: int, seed: int = 0, rank: int = 0,
                     world_size: int = 1) -> DataLoader:
        """Loader of the step's training images; `batch_size` is the global batch (all processes).

        Call `loader.batch_sampler.set_epoch(e)` and set `loader.dataset.augmentation_seed` before
        each epoch: order and augmentations are then functions of (seed, epoch, image) only, the
        same for any number of processes or workers, and after a resume.
        """
        dataset = self.train_dataset(task, step)
        if len(dataset) == 0:
            raise ValueError(f"step {step} of {task.dataset} {task.name} ({self.config.setting}) has no "
                             f"training images: check the dataset root and the class order")
        sampler = GlobalBatchSampler(len(dataset), batch_size, rank, world_size, seed)
        return DataLoader(dataset, batch_sampler=sampler, num_workers=self.config.num_workers,
                          pin_memory=torch.cuda.is_available())

    def test_loader(self, task: Task, step: int, batch_size: int, rank: int = 0, world_size: int = 1) -> DataLoader:
        """Loader of the step's test images; process `rank` reads every `world_size`-th image."""
        batch_size = batch_size if self.config.eval_mode == "center_crop" else 1  # whole images differ in size
        dataset = self.test_dataset(task, step)
        shard = Subset(dataset, range(rank, len(dataset), world_size)) if world_size > 1 else dataset
        return DataLoader(shard, batch_size=batch_size, shuffle=False, num_workers=self.config.num_workers,
                          pin_memory=torch.cuda.is_available())

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


class GlobalBatchSampler(Sampler[list[int]]):
    """The batches of one epoch, identical whatever the number of processes.

    A permutation seeded by (seed, epoch) is cut into global batches of `global_batch` images
    (the last incomplete batch is dropped, as with the reference's drop_last, unless the whole
    step has fewer images than one batch); process `rank` of `world_size` reads its contiguous
    share of each global batch, so N processes together see exactly one process's batches.
    """

    def __init__(self, num_items: int, global_batch: int, rank: int = 0, world_size: int = 1, seed: int = 0) -> None:
        self.batch = min(global_batch, num_items)
        if global_batch % world_size or self.batch < world_size:
            raise ValueError(f"the batch size {global_batch} must be a multiple of the number of processes "
                             f"{world_size}, and the step needs at least one image per process")
        self.num_items, self.rank, self.world_size, self.seed = num_items, rank, world_size, seed
        self.local = self.batch // world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(self.num_items, generator=generator)  # (N,)
        for start in range(0, len(self) * self.batch, self.batch):
            share = order[start + self.rank * self.local: start + (self.rank + 1) * self.local]
            yield share.tolist()

    def __len__(self) -> int:
        return self.num_items // self.batch


def open_step_data(data: DataConfig) -> StepData:
    return StepData(data)
