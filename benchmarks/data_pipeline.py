"""Benchmark of the data pipeline: VOC reader + label remap + train_transform through a DataLoader.

Generates a VOC-format folder (MiB layout) of 375x500 images in a temporary directory, then measures
- images/second of decoding alone, and of reader + lookup-table remap + 512 train_transform through a
  DataLoader with 0 and 2 workers (a second pass with warm workers, and the first pass);
- the cost per mask of the vectorised remap ``lut[mask]`` against a naive per-pixel Python function.

Run: ``python benchmarks/data_pipeline.py [--images 64] [--batch-size 8]``. The last line printed is one
JSON object with the figures. Takes well under 2 minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from cslearn.data.synthetic import make_voc_folder
from cslearn.data.transforms import train_transform
from cslearn.data.voc import VOCSegmentation


def step_lookup_table() -> np.ndarray:
    """A training-step lookup table like VOC 15-5 step 1: old classes -> 0, new 16-20 kept, void kept."""
    table = np.zeros(256, dtype=np.uint8)
    table[16:21] = np.arange(16, 21)
    table[255] = 255
    return table


def naive_remap(mask: np.ndarray, mapping: dict[int, int]) -> np.ndarray:
    """The per-pixel Python loop that the lookup table replaces (for comparison only)."""
    height, width = mask.shape
    out = np.empty_like(mask)
    for row in range(height):
        for column in range(width):
            out[row, column] = mapping.get(int(mask[row, column]), 0)
    return out


class RemappedVOC:
    """Reader + lookup-table remap + paired transform: what a training step's dataset does per item."""

    def __init__(self, reader: VOCSegmentation, table: np.ndarray, crop_size: int) -> None:
        self.reader, self.table = reader, table
        self.transform = train_transform(crop_size=crop_size)

    def __len__(self) -> int:
        return len(self.reader)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, mask = self.reader[index]
        target = self.table[np.asarray(mask)]  # (H, W) uint8
        return self.transform(image, target)


def images_per_second(dataset: RemappedVOC, num_workers: int, batch_size: int) -> tuple[float, float]:
    """(first pass with worker start-up, second pass with warm persistent workers), in images/s."""
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=num_workers,
                        persistent_workers=num_workers > 0)
    rates = []
    for _ in range(2):
        start = time.perf_counter()
        count = sum(images.shape[0] for images, _ in loader)
        rates.append(count / (time.perf_counter() - start))
    return rates[0], rates[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--crop-size", type=int, default=512)
    args = parser.parse_args()
    torch.manual_seed(0)
    # DataLoader workers run torch single-threaded; do the same in the main process so the two loader
    # figures compare like with like (small per-image ops only lose to thread hand-offs on 2 cores).
    torch.set_num_threads(1)
    results: dict[str, float | int] = {"images": args.images, "image_size": "375x500",
                                       "crop_size": args.crop_size, "batch_size": args.batch_size}
    with tempfile.TemporaryDirectory() as directory:
        start = time.perf_counter()
        root = make_voc_folder(Path(directory), num_train=args.images, num_val=1, size=(375, 500))
        results["generate_seconds"] = round(time.perf_counter() - start, 3)
        reader = VOCSegmentation(root, "train")
        print(f"generated {args.images} images of 375x500 in {results['generate_seconds']} s")

        start = time.perf_counter()
        for index in range(len(reader)):
            reader[index]
        results["decode_images_per_second"] = round(len(reader) / (time.perf_counter() - start), 1)
        print(f"decode image + mask: {results['decode_images_per_second']} images/s")

        table = step_lookup_table()
        dataset = RemappedVOC(reader, table, args.crop_size)
        for workers in (0, 2):
            first, steady = images_per_second(dataset, workers, args.batch_size)
            results[f"pipeline_images_per_second_workers_{workers}"] = round(steady, 1)
            results[f"pipeline_first_pass_images_per_second_workers_{workers}"] = round(first, 1)
            print(f"reader + remap + train_transform, num_workers={workers}: {steady:.1f} images/s "
                  f"({first:.1f} on the first pass, worker start-up included)")

        mask = reader.read_mask(0)
        repeats = 200
        start = time.perf_counter()
        for _ in range(repeats):
            vectorised = table[mask]
        vectorised_seconds = (time.perf_counter() - start) / repeats
        mapping = {value: int(table[value]) for value in range(256)}
        start = time.perf_counter()
        naive = naive_remap(mask, mapping)
        naive_seconds = time.perf_counter() - start
        assert np.array_equal(naive, vectorised)
        results["remap_vectorised_ms_per_mask"] = round(vectorised_seconds * 1e3, 4)
        results["remap_naive_ms_per_mask"] = round(naive_seconds * 1e3, 1)
        results["remap_speedup"] = round(naive_seconds / vectorised_seconds)
        print(f"remap one 375x500 mask: lookup table {vectorised_seconds * 1e3:.3f} ms, per-pixel Python "
              f"{naive_seconds * 1e3:.0f} ms ({results['remap_speedup']}x faster)")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
