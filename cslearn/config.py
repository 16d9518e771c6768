"""Typed run settings and the named presets `fast`, `paper` and `colab`.

A run is described entirely by one `RunConfig` (saved as `config.json` in the run directory).
Presets give every field its value; command-line `--set section.key=value` overrides are
applied afterwards and always win (unlike the MiB lineage, where presets silently overwrote
command-line flags). Unknown keys raise.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, Optional


@dataclass
class DataConfig:
    dataset: str = "toy"  # "toy", "voc" or "ade"
    root: Optional[str] = None  # dataset folder (voc / ade); the toy dataset is generated
    task: str = "15-1"
    setting: str = "overlapped"  # or "disjoint"
    order: Optional[list[int]] = None  # custom class order (foreground ids in order of arrival)
    index_dir: Optional[str] = None  # MiB's published per-step index files, used when given
    crop_size: int = 64
    eval_mode: str = "center_crop"  # or "whole"
    train_void: str = "ignore"  # see cslearn.protocol.Conventions
    test_future: str = "ignore"
    ade_class0: str = "ignore"
    background_in_mean: bool = False
    toy_train_images: int = 2000
    toy_val_images: int = 400
    num_workers: int = 0


@dataclass
class ModelConfig:
    name: str = "tiny"  # "tiny", "deeplabv3_resnet50", "deeplabv3_resnet101"
    output_stride: int = 16
    weights: Optional[str] = None  # "imagenet" downloads torchvision's ImageNet weights
    width: int = 32  # tiny model only


@dataclass
class TrainConfig:
    epochs: int = 12  # per step, step 0
    epochs_incremental: int = 12  # per step, steps >= 1
    batch_size: int = 16
    grad_accum: int = 1  # optimiser step every grad_accum batches (effective batch = product)
    lr: float = 0.01  # step 0
    lr_incremental: float = 0.001  # steps >= 1
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 1e-4
    poly_power: float = 0.9
    amp: bool = False  # float16 on CUDA, bfloat16 on CPU
    channels_last: bool = False
    freeze_bn: bool = False  # BatchNorm in eval mode while training (the reference's --fix_bn)
    device: str = "auto"  # "auto" = cuda if available, else cpu
    seed: int = 42


@dataclass
class RunConfig:
    method: str = "mib"
    preset: str = "fast"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "RunConfig":
        config = cls()
        for key, value in values.items():
            if key in ("data", "model", "train"):
                for inner_key, inner_value in value.items():
                    config.set(f"{key}.{inner_key}", inner_value)
            else:
                config.set(key, value)
        return config

    def set(self, dotted_key: str, value: Any) -> None:
        """Set `section.key` (or a top-level key); unknown keys raise with the valid ones."""
        *sections, key = dotted_key.split(".")
        target: Any = self
        for section in sections:
            if section not in ("data", "model", "train") or not hasattr(target, section):
                raise KeyError(f"unknown config section '{section}' in '{dotted_key}'; sections: data, model, train")
            target = getattr(target, section)
        names = [f.name for f in dataclasses.fields(target)]
        if key not in names or (not sections and key in ("data", "model", "train")):
            raise KeyError(f"unknown config key '{dotted_key}'; valid keys here: {', '.join(names)}")
        setattr(target, key, value)

    def dumps(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)


# Fields that may differ when a run is resumed: where and how fast it runs, not what it computes.
RESUME_MAY_DIFFER = ("train.device", "data.num_workers", "data.root", "data.index_dir")


def _paper(dataset: str) -> dict[str, Any]:
    """The reference recipe (MiB paper / PLOP scripts): DeepLab-V3, ResNet-101, OS16, ImageNet
    weights, batch 24, crop 512, 30 (VOC) or 60 (ADE) epochs per step, lr 0.01 / 0.001, poly 0.9,
    Nesterov SGD, weight decay 1e-4, last-epoch model, 512 centre-crop evaluation."""
    epochs = 60 if dataset == "ade" else 30
    return {"data.dataset": dataset, "data.crop_size": 512, "data.eval_mode": "center_crop",
            "data.num_workers": 4, "model.name": "deeplabv3_resnet101", "model.output_stride": 16,
            "model.weights": "imagenet", "train.epochs": epochs, "train.epochs_incremental": epochs,
            "train.batch_size": 24, "train.grad_accum": 1, "train.lr": 0.01, "train.lr_incremental": 0.001,
            "train.amp": False, "train.channels_last": False}


def _colab(dataset: str) -> dict[str, Any]:
    """The paper recipe fitted to one 16 GB T4: batch 12 x 2 accumulation steps keeps the
    effective batch of 24 (BatchNorm statistics then see 12 images, not 24: the trade-off),
    mixed precision and channels-last for speed; crop, epochs and lr unchanged."""
    return {**_paper(dataset), "data.num_workers": 2, "train.batch_size": 12, "train.grad_accum": 2,
            "train.amp": True, "train.channels_last": True}


def _fast(dataset: str) -> dict[str, Any]:
    """Minutes on a CPU: the toy dataset at 64x64 with the tiny model."""
    return {"data.dataset": dataset, "data.crop_size": 64, "model.name": "tiny",
            "train.epochs": 12, "train.epochs_incremental": 12, "train.batch_size": 16,
            "train.lr": 0.01, "train.lr_incremental": 0.001}


PRESETS = {"fast": _fast, "paper": _paper, "colab": _colab}


def make_config(preset: str = "fast", dataset: str = "toy", overrides: Optional[dict[str, Any]] = None,
                **top_level: Any) -> RunConfig:
    """A RunConfig from a preset, then `overrides` ({"train.epochs": 3, ...}) and top-level keys
    (method=..., or data fields such as task=..., setting=... for convenience)."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset '{preset}'; presets: {', '.join(PRESETS)}")
    config = RunConfig(preset=preset)
    for key, value in PRESETS[preset](dataset).items():
        config.set(key, value)
    for key, value in top_level.items():
        config.set(key if key in ("method",) else f"data.{key}", value)
    for key, value in (overrides or {}).items():
        config.set(key, value)
    return config


def differences(saved: dict[str, Any], current: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two config dicts (for refusing a bad resume)."""
    keys = sorted(set(saved) | set(current))
    found = []
    for key in keys:
        dotted = f"{prefix}{key}"
        left, right = saved.get(key), current.get(key)
        if isinstance(left, dict) and isinstance(right, dict):
            found += differences(left, right, prefix=f"{dotted}.")
        elif left != right and dotted not in RESUME_MAY_DIFFER:
            found.append(f"{dotted}: saved {left!r}, now {right!r}")
    return found
