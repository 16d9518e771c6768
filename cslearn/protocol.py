"""The class-incremental protocol: tasks, image selection and label remapping.

Pure functions and small immutable objects, no I/O. Taught in `02_the_continual_protocol`.

Vocabulary (the MiB / PLOP protocol):
- a *task* such as VOC "15-1" splits the classes into *steps*: 0-15 at step 0, then 16, 17, ...
  Background (class 0) always belongs to step 0.
- at step t the *new* classes are those of step t, the *old* ones those of earlier steps
  (background included), the *future* ones those of later steps, the *seen* ones old + new.
- output channel of a class = its position in [0] + classes in task order. For the default
  numeric order this is the identity; a custom `order` renumbers channels so that old channels
  always precede new ones.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

IGNORE_INDEX = 255
SETTINGS = ("overlapped", "disjoint")
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Task:
    """One incremental task: which original class ids are learned at which step."""

    dataset: str
    name: str
    steps: tuple[tuple[int, ...], ...]  # original class ids per step; steps[0] contains 0
    num_classes: int  # classes of the dataset, channel 0 included (VOC 21, ADE 151)

    @property
    def num_steps(self) -> int:
        return len(self.steps)

    @property
    def classes_per_step(self) -> list[int]:
        return [len(step_classes) for step_classes in self.steps]

    def new_classes(self, step: int) -> tuple[int, ...]:
        self._check_step(step)
        return self.steps[step]

    def old_classes(self, step: int) -> tuple[int, ...]:
        """Classes of steps before `step`, background included (empty at step 0)."""
        self._check_step(step)
        return tuple(c for s in self.steps[:step] for c in s)

    def seen_classes(self, step: int) -> tuple[int, ...]:
        return self.old_classes(step) + self.new_classes(step)

    def future_classes(self, step: int) -> tuple[int, ...]:
        self._check_step(step)
        return tuple(c for s in self.steps[step + 1:] for c in s)

    def num_old(self, step: int) -> int:
        return len(self.old_classes(step))

    def num_seen(self, step: int) -> int:
        return len(self.seen_classes(step))

    def channel_of(self) -> dict[int, int]:
        """Original class id -> output channel (position in task order)."""
        order = [c for s in self.steps for c in s]
        return {c: channel for channel, c in enumerate(order)}

    def class_of_channel(self) -> list[int]:
        return [c for s in self.steps for c in s]

    def _check_step(self, step: int) -> None:
        if not 0 <= step < self.num_steps:
            raise ValueError(f"task {self.dataset} {self.name} has steps 0..{self.num_steps - 1}, got {step}")


# Known task names per dataset: name -> canonical name understood by `parse_task`, plus the
# aliases used by the published code bases (MiB's "15-5s" is 15-1, SDR's "10-10s" is 10-1,
# MiB's ADE "50" is 50-50).
NAMED_TASKS: dict[str, dict[str, str]] = {
    "voc": {"offline": "offline", "joint": "offline", "19-1": "19-1", "15-5": "15-5",
            "15-1": "15-1", "15-5s": "15-1", "10-1": "10-1", "10-10s": "10-1",
            "10-10": "10-10", "10-5-5": "10-5-5", "19-1b": "19-1b"},
    "ade": {"offline": "offline", "joint": "offline", "100-50": "100-50", "100-10": "100-10",
            "50-50": "50-50", "50": "50-50", "100-5": "100-5"},
}
NAMED_TASKS["toy"] = dict(NAMED_TASKS["voc"])  # the toy dataset mirrors VOC: 20 classes
DATASET_NUM_CLASSES = {"voc": 21, "ade": 151, "toy": 21}

# VOC 19-1b (MiB): class 5 (bottle) is the one added last.
VOC_ORDERS = {"19-1b": [c for c in range(1, 21) if c != 5] + [5]}


def parse_task(name: str, num_classes: int, order: Optional[Sequence[int]] = None) -> tuple[tuple[int, ...], ...]:
    """Steps of a task written "B-I" (B classes, then steps of I until all are used),
    "A-B-C..." (explicit step sizes summing to num_classes - 1) or "offline" (one step).

    `order` is the order in which the foreground classes 1..num_classes-1 are introduced
    (default: numeric). Background 0 is always first.
    """
    foreground = list(range(1, num_classes)) if order is None else [int(c) for c in order]
    if sorted(foreground) != list(range(1, num_classes)):
        raise ValueError(f"a class order must be a permutation of 1..{num_classes - 1}, got {foreground}")
    if name in ("offline", "joint"):
        return (tuple([0] + foreground),)
    try:
        sizes = [int(part) for part in name.split("-")]
    except ValueError:
        raise ValueError(
            f"unknown task '{name}': write 'B-I' (B classes at step 0, then steps of I), "
            f"'A-B-C' (explicit step sizes) or 'offline'") from None
    total = num_classes - 1
    if len(sizes) < 2 or any(size <= 0 for size in sizes):
        raise ValueError(f"task '{name}' needs at least two positive step sizes")
    if len(sizes) == 2 and sizes[0] + sizes[1] != total:
        base, increment = sizes
        if (total - base) % increment != 0 or base >= total:
            raise ValueError(f"task '{name}': {total - base} classes after step 0 cannot be split "
                             f"into steps of {increment} ({total} foreground classes in all)")
        sizes = [base] + [increment] * ((total - base) // increment)
    if sum(sizes) != total:
        raise ValueError(f"task '{name}': step sizes {sizes} sum to {sum(sizes)}, but the dataset "
                         f"has {total} foreground classes")
    steps, start = [], 0
    for size in sizes:
        steps.append(tuple(foreground[start:start + size]))
        start += size
    return (tuple([0] + list(steps[0])),) + tuple(steps[1:])


def get_task(dataset: str, name: str, order: Optional[Sequence[int]] = None) -> Task:
    """The task `name` of `dataset` ("voc", "ade", "toy"), optionally over a custom class order.

    Names in NAMED_TASKS (and their aliases) are the published ones; any other "B-I" or
    "A-B-C" name is parsed generically.
    """
    if dataset not in DATASET_NUM_CLASSES:
        raise ValueError(f"unknown dataset '{dataset}': choose one of {sorted(DATASET_NUM_CLASSES)}")
    num_classes = DATASET_NUM_CLASSES[dataset]
    canonical = NAMED_TASKS[dataset].get(name, name)
    if order is None and dataset in ("voc", "toy") and name in VOC_ORDERS:
        order, canonical = VOC_ORDERS[name], "19-1"
    try:
        steps = parse_task(canonical, num_classes, order)
    except ValueError as error:
        known = ", ".join(sorted(NAMED_TASKS[dataset]))
        raise ValueError(f"{error}. Known {dataset} tasks: {known}") from None
    return Task(dataset=dataset, name=name, steps=steps, num_classes=num_classes)


@dataclass(frozen=True)
class Conventions:
    """The label conventions on which published code bases disagree, made explicit.

    train_void:  VOC void pixels (255) in training: "ignore" (PLOP; default) or "background"
                 (MiB, SDR and UCD map them to 0, a quirk).
    test_future: future-class pixels at test time: "ignore" (MiB; default) or "background" (PLOP).
    ade_class0:  ADE20K class 0 ("other") at test time: "ignore" (MiB; default, 150 classes in
                 the mean) or "score" (PLOP, 151 classes).
    background_in_mean: whether the headline "old" and "all" numbers count background (PLOP,
                 SDR) or not (MiB, UCD). Reports always compute both.
    """

    train_void: str = "ignore"
    test_future: str = "ignore"
    ade_class0: str = "ignore"
    background_in_mean: bool = False

    def __post_init__(self) -> None:
        for field_name, allowed in (("train_void", ("ignore", "background")),
                                    ("test_future", ("ignore", "background")),
                                    ("ade_class0", ("ignore", "score"))):
            if getattr(self, field_name) not in allowed:
                raise ValueError(f"Conventions.{field_name} must be one of {allowed}, got {getattr(self, field_name)!r}")

    def describe(self) -> str:
        return (f"training void -> {'ignored' if self.train_void == 'ignore' else 'background (MiB)'}; "
                f"future classes at test -> {'ignored (MiB)' if self.test_future == 'ignore' else 'background (PLOP)'}; "
                f"ADE class 0 at test -> {'ignored (MiB)' if self.ade_class0 == 'ignore' else 'scored (PLOP)'}; "
                f"headline mean {'with' if self.background_in_mean else 'without'} background")


def remap_lookup(task: Task, step: int, split: str, conventions: Conventions = Conventions(),
                 class0_is_other: bool = False) -> np.ndarray:
    """A 256-entry uint8 lookup table: original mask value -> target channel (255 = ignore).

    Apply it as `lookup[mask]` (vectorised; never a per-pixel Python function).
    split "train": new classes -> their channel; old, future and background -> 0 (the background
    shift); void -> 255 or 0 (conventions.train_void).
    split "val" (validation during training, MiB): new -> channel, background 0, old and future 255.
    split "test": seen classes -> channel; future -> 255 or 0 (conventions.test_future).
    `class0_is_other` (ADE): class 0 is "other", not background: trained as channel 0, at test
    ignored or scored (conventions.ade_class0); in "val" always ignored.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    channel = task.channel_of()
    lookup = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    if split == "train":
        lookup[: task.num_classes] = 0  # old and future classes become background
        lookup[IGNORE_INDEX] = IGNORE_INDEX if conventions.train_void == "ignore" else 0
        for c in task.new_classes(step):
            lookup[c] = channel[c]
        lookup[0] = 0
    elif split == "val":
        for c in task.new_classes(step):
            lookup[c] = channel[c]
        lookup[0] = IGNORE_INDEX if class0_is_other else 0
    else:
        if conventions.test_future == "background":
            lookup[: task.num_classes] = 0
        for c in task.seen_classes(step):
            lookup[c] = channel[c]
        if class0_is_other:
            lookup[0] = 0 if conventions.ade_class0 == "score" else IGNORE_INDEX
    return lookup


def label_set_matrix(masks_unique: Sequence[np.ndarray], num_classes: int) -> np.ndarray:
    """(num_images, num_classes) bool: which classes appear in each image (class 0 and 255 excluded)."""
    presence = np.zeros((len(masks_unique), num_classes), dtype=bool)
    for row, values in enumerate(masks_unique):
        values = np.asarray(values, dtype=np.int64)
        values = values[(values > 0) & (values < num_classes)]
        presence[row, values] = True
    return presence


def select_images(label_sets: np.ndarray, task: Task, step: int, setting: str) -> np.ndarray:
    """Indices of the training images of `step` (the MiB protocol's `filter_images`).

    label_sets: (num_images, num_classes) bool from `label_set_matrix`.
    overlapped: images containing at least one new class (old and future classes may appear).
    disjoint:   additionally no future class: every class of the image is old or new.
    """
    if setting not in SETTINGS:
        raise ValueError(f"setting must be one of {SETTINGS}, got {setting!r}")
    new = _columns(task.new_classes(step), task.num_classes)
    has_new = label_sets[:, new].any(axis=1)
    if setting == "overlapped":
        return np.flatnonzero(has_new)
    future = _columns(task.future_classes(step), task.num_classes)
    return np.flatnonzero(has_new & ~label_sets[:, future].any(axis=1))


def select_test_images(label_sets: np.ndarray, task: Task, step: int) -> np.ndarray:
    """Test images of `step`: those containing at least one seen foreground class."""
    seen = _columns(task.seen_classes(step), task.num_classes)
    return np.flatnonzero(label_sets[:, seen].any(axis=1))


def _columns(classes: Sequence[int], num_classes: int) -> np.ndarray:
    columns = np.zeros(num_classes, dtype=bool)
    columns[[c for c in classes if c != 0]] = True  # class 0 never selects an image
    return columns
