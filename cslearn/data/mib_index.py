"""Load the per-step image index files shipped by MiB, SDR and UCD.

Layout (the MiB protocol, "Shipped index files"): ``<index_dir>/<task>[-ov]/<split>-<step>.npy``, each a
1-D integer array (int64 in MiB, int32 in some SDR files) of 0-based positions: line positions in
``train_aug.txt`` / ``val.txt`` for VOC, positions in the sorted ``images/training`` listing for ADE.
``-ov`` marks the overlapped lists. MiB's ADE partition cannot be regenerated (its seed was lost),
so it must be loaded from these files rather than derived.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import DatasetError

# Our task names -> the folder names used by the MiB lineage (names not listed are the same).
MIB_TASK_NAMES: dict[str, str] = {
    "15-1": "15-5s",     # VOC 15-1 is "15-5s" in MiB, PLOP, SDR and UCD
    "10-1": "10-10s",    # VOC 10-1: files ship only with SDR and UCD, as "10-10s"
    "50-50": "50",       # ADE 50-50 is "50"
    "50-50b": "50b",
    "50-50c": "50c",
}

INDEX_SPLITS = ("train", "val", "test_on_val")


def mib_task_name(task_name: str) -> str:
    """The folder name MiB/SDR/UCD use for one of our task names (for example "15-1" -> "15-5s")."""
    return MIB_TASK_NAMES.get(task_name, task_name)


def mib_index_path(index_dir: str | Path, task_name: str, step: int, overlapped: bool,
                   split: str = "train") -> Path:
    """Path of the index file of ``step``: ``<index_dir>/<task>[-ov]/<split>-<step>.npy``.

    ``split`` is "train" (MiB), or "val" / "test_on_val" (SDR and UCD only).
    """
    if split not in INDEX_SPLITS:
        raise ValueError(f"split must be one of {INDEX_SPLITS}, got {split!r}")
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    folder = mib_task_name(task_name) + ("-ov" if overlapped else "")
    return Path(index_dir) / folder / f"{split}-{step}.npy"


def load_mib_index(path: str | Path, num_images: int) -> np.ndarray:
    """Load and validate one index file; return the positions as int64 in file order.

    ``num_images`` is the length of the split the positions refer to (10,582 for VOC train_aug,
    20,210 for ADE training). Values must be unique and in ``[0, num_images)``; a value out of range
    usually means the list file is not in the standard DeepLab order or the wrong split was given.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"index file {path} does not exist; MiB's files live in its data/<dataset>/"
                           "<task>[-ov]/train-<step>.npy (see data/README.md)")
    try:
        indices = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as error:
        raise DatasetError(f"cannot read index file {path} as a plain .npy array ({error}); "
                           "index files are 1-D integer arrays saved with numpy.save") from None
    if not isinstance(indices, np.ndarray):  # an .npz archive
        raise DatasetError(f"index file {path} is an .npz archive; expected a single .npy array")
    if indices.dtype.kind not in "iu":
        raise DatasetError(f"index file {path} has dtype {indices.dtype}; expected an integer array "
                           "(int64 in MiB, int32 in some SDR files)")
    if indices.ndim != 1:
        raise DatasetError(f"index file {path} has shape {indices.shape}; expected a 1-D array of positions")
    if indices.size == 0:
        raise DatasetError(f"index file {path} is empty; a step must select at least one image")
    indices = indices.astype(np.int64)
    low, high = int(indices.min()), int(indices.max())
    if low < 0 or high >= num_images:
        raise DatasetError(
            f"index file {path} holds positions {low}..{high} but the split has {num_images} images "
            "(valid 0..{}); check that the list file is the standard one in its original order and "
            "that the file belongs to this dataset and split".format(num_images - 1))
    unique = np.unique(indices)
    if unique.size != indices.size:
        raise DatasetError(f"index file {path} repeats {indices.size - unique.size} position(s); "
                           "each image may appear once per step")
    return indices
