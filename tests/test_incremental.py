"""The step dataset: cached label sets, selection and remapped targets on a tiny fake raw dataset."""
from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from cslearn.data.incremental import IncrementalSegmentation, label_sets
from cslearn.protocol import Conventions, get_task


def identity(image, mask):
    return torch.as_tensor(np.asarray(image)), torch.as_tensor(mask)


# 2x3 masks of a VOC-like raw dataset (0 background, 255 void).
MASKS = [
    [[0, 1, 5], [0, 0, 255]],  # 0: base classes
    [[15, 16, 0], [0, 16, 255]],  # 1
    [[0, 16, 16], [0, 0, 0]],  # 2
    [[3, 17, 0], [0, 0, 0]],  # 3
    [[16, 18, 0], [0, 255, 0]],  # 4
    [[0, 0, 0], [0, 255, 0]],  # 5: background and void only
]
EXPECTED_PRESENCE = {0: [1, 5], 1: [15, 16], 2: [16], 3: [3, 17], 4: [16, 18], 5: []}


class FakeRaw:
    """The raw-reader interface with a counter of mask reads."""

    name = "fake"
    num_classes = 21
    class0_is_other = False

    def __init__(self, masks=MASKS, split: str = "train", prefix: str = "img") -> None:
        self.masks = [np.array(mask, dtype=np.uint8) for mask in masks]
        self.images = [np.full((2, 3, 3), index, dtype=np.uint8) for index in range(len(masks))]
        self.split = split
        self.ids = [f"{prefix}_{index}" for index in range(len(masks))]
        self.reads = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int):
        return self.images[index], self.masks[index]

    def read_mask(self, index: int) -> np.ndarray:
        with self._lock:
            self.reads += 1
        return self.masks[index]


def expected_matrix() -> np.ndarray:
    matrix = np.zeros((len(MASKS), 21), dtype=bool)
    for row, classes in EXPECTED_PRESENCE.items():
        matrix[row, classes] = True
    return matrix


def test_label_sets_without_cache():
    raw = FakeRaw()
    np.testing.assert_array_equal(label_sets(raw), expected_matrix())
    assert raw.reads == len(MASKS)


def test_label_sets_cache_is_written_once_and_reused(tmp_path):
    raw = FakeRaw()
    first = label_sets(raw, tmp_path)
    assert raw.reads == len(MASKS)
    files = sorted(tmp_path.iterdir())
    assert len(files) == 1 and files[0].suffix == ".npy"
    assert "fake" in files[0].name and "train" in files[0].name
    written = files[0].stat().st_mtime_ns

    again = FakeRaw()  # a fresh reader of the same images: reads nothing
    second = label_sets(again, tmp_path)
    assert again.reads == 0
    np.testing.assert_array_equal(first, expected_matrix())
    np.testing.assert_array_equal(second, expected_matrix())
    assert sorted(tmp_path.iterdir()) == files and files[0].stat().st_mtime_ns == written
    assert not list(tmp_path.glob("*.tmp"))  # the atomic write left no temporary file


def test_label_sets_recomputed_when_ids_change(tmp_path):
    label_sets(FakeRaw(), tmp_path)
    renamed = FakeRaw(prefix="other")
    label_sets(renamed, tmp_path)
    assert renamed.reads == len(MASKS)
    assert len(list(tmp_path.glob("*.npy"))) == 2

    fewer = FakeRaw(masks=MASKS[:4])
    result = label_sets(fewer, tmp_path)
    assert fewer.reads == 4
    np.testing.assert_array_equal(result, expected_matrix()[:4])


def test_label_sets_cache_separates_splits(tmp_path):
    label_sets(FakeRaw(split="train"), tmp_path)
    val = FakeRaw(split="val")
    label_sets(val, tmp_path)
    assert val.reads == len(MASKS)


def test_train_step_remaps_targets_and_selects_images():
    raw = FakeRaw()
    dataset = IncrementalSegmentation(raw, get_task("voc", "15-1"), 1, "train", identity, setting="overlapped")
    assert dataset.indices.tolist() == [1, 2, 4]
    assert len(dataset) == 3
    image, target = dataset[0]
    assert torch.equal(image, torch.full((2, 3, 3), 1, dtype=torch.uint8))  # the image of raw index 1
    assert target.tolist() == [[0, 16, 0], [0, 16, 255]]
    _, target = dataset[2]  # raw index 4: the future class 18 becomes background
    assert target.tolist() == [[16, 0, 0], [0, 255, 0]]


def test_disjoint_train_step_and_void_as_background():
    dataset = IncrementalSegmentation(FakeRaw(), get_task("voc", "15-1"), 1, "train", identity,
                                      setting="disjoint", conventions=Conventions(train_void="background"))
    assert dataset.indices.tolist() == [1, 2]
    _, target = dataset[0]
    assert target.tolist() == [[0, 16, 0], [0, 16, 0]]


def test_val_and_test_steps():
    task = get_task("voc", "15-1")
    val = IncrementalSegmentation(FakeRaw(split="val"), task, 2, "val", identity)
    assert val.indices.tolist() == [3]
    assert val[0][1].tolist() == [[255, 17, 0], [0, 0, 0]]

    test = IncrementalSegmentation(FakeRaw(split="val"), task, 1, "test", identity)
    assert test.indices.tolist() == [0, 1, 2, 3, 4]
    targets = [test[position][1].tolist() for position in range(len(test))]
    assert targets[0] == [[0, 1, 5], [0, 0, 255]]
    assert targets[3] == [[3, 255, 0], [0, 0, 0]]  # future class 17 ignored at test (MiB)
    assert targets[4] == [[16, 255, 0], [0, 255, 0]]

    plop = IncrementalSegmentation(FakeRaw(split="val"), task, 1, "test", identity,
                                   conventions=Conventions(test_future="background"))
    assert plop[3][1].tolist() == [[3, 0, 0], [0, 0, 0]]


def test_given_presence_and_indices_are_used():
    raw = FakeRaw()
    task = get_task("voc", "15-5")
    presence = np.zeros((len(MASKS), 21), dtype=bool)
    presence[5, 16] = True  # a (deliberately wrong) presence table decides the selection
    dataset = IncrementalSegmentation(raw, task, 1, "train", identity, presence=presence)
    assert dataset.indices.tolist() == [5]
    assert raw.reads == 0
    fixed = IncrementalSegmentation(raw, task, 1, "train", identity, indices=[4, 0])
    assert fixed.indices.tolist() == [4, 0]
    assert fixed[1][1].tolist() == [[0, 0, 0], [0, 0, 255]]
    assert raw.reads == 0


def test_custom_order_targets_use_channels():
    order = list(range(20, 0, -1))  # channel of class c is 21 - c
    task = get_task("voc", "15-1", order=order)
    raw = FakeRaw([[[0, 5, 20], [4, 6, 255]]])
    test = IncrementalSegmentation(raw, task, 1, "test", identity)
    assert test[0][1].tolist() == [[0, 16, 1], [255, 15, 255]]
    train = IncrementalSegmentation(raw, task, 1, "train", identity)
    assert train.indices.tolist() == [0]
    assert train[0][1].tolist() == [[0, 16, 0], [0, 0, 255]]


def test_ade_like_class0_is_ignored_at_test():
    raw = FakeRaw([[[0, 1, 101], [150, 0, 0]]])
    raw.num_classes, raw.class0_is_other = 151, True
    task = get_task("ade", "100-50")
    test = IncrementalSegmentation(raw, task, 0, "test", identity)
    assert test[0][1].tolist() == [[255, 1, 255], [255, 255, 255]]
    train = IncrementalSegmentation(raw, task, 1, "train", identity)
    assert train[0][1].tolist() == [[0, 0, 101], [150, 0, 0]]


def test_unknown_split_raises():
    with pytest.raises(ValueError, match="split"):
        IncrementalSegmentation(FakeRaw(), get_task("voc", "15-1"), 0, "validation", identity)


def random_draw(image, mask):
    """A transform whose output is one draw of the global CPU generator."""
    return torch.rand(()), torch.as_tensor(mask)


def test_augmentation_seed_fixes_each_images_draws_and_leaves_the_global_generator_alone():
    dataset = IncrementalSegmentation(FakeRaw(), get_task("voc", "15-1"), 1, "train", random_draw)
    dataset.augmentation_seed = 7
    torch.manual_seed(0)
    before = torch.get_rng_state()
    first = [float(dataset[position][0]) for position in range(len(dataset))]
    assert torch.equal(torch.get_rng_state(), before)  # the training loop's own draws are not shifted
    torch.manual_seed(123)  # another global state: the same draws
    assert [float(dataset[position][0]) for position in range(len(dataset))] == first
    # Seeded by (epoch seed, image index) exactly as torch.manual_seed would seed the CPU generator.
    index = int(dataset.indices[0])
    assert first[0] == float(torch.rand((), generator=torch.Generator().manual_seed(7 * 1_000_003 + index)))
    assert len(set(first)) == len(first)  # different images draw differently
    dataset.augmentation_seed = 8
    assert [float(dataset[position][0]) for position in range(len(dataset))] != first
